// The scorch command line: `scorch generate` and `scorch samplers`.
// Exit status: 0 success, 2 bad input (one line on stderr), 1 internal error.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <thread>
#include <algorithm>

#include "../samplers/sampler.h"
#include "scorch/config.h"
#include "scorch/error.h"
#include "scorch/pipeline.h"

namespace {

int run_generate(const std::string& config_path, const std::vector<std::string>& sets, bool quiet) {
  const YAML::Node config = scorch::load_config(config_path, sets);
  const auto pipeline = scorch::Pipeline::from_config(config);
  const bool tty = isatty(STDERR_FILENO);
  scorch::ProgressFn progress;
  if (!quiet) {
    progress = [tty](const scorch::StepInfo& s) {
      // One updating line on a terminal; otherwise a line at every 10% of the run.
      // total is 0 when the step count is not known in advance (adaptive step size).
      if (tty) {
        std::fprintf(stderr, "\rstep %d/%d  NFE %lld  %.2fs", s.step, s.total, (long long)s.nfe, s.elapsed_s);
        if (s.step == s.total) std::fputc('\n', stderr);
      } else if (s.total <= 0 || s.step == s.total || (s.step * 10) / s.total != ((s.step - 1) * 10) / s.total) {
        std::fprintf(stderr, "step %d/%d  NFE %lld  %.2fs\n", s.step, s.total, (long long)s.nfe, s.elapsed_s);
      }
      return true;
    };
  }
  const scorch::GenerateResult result = pipeline->generate(progress);
  const auto written = pipeline->write_outputs(result);
  if (!quiet) {
    std::fprintf(stderr, "%s: %d steps, %lld NFE, %.2fs", pipeline->sampler_name().c_str(), result.steps,
                 (long long)result.nfe, result.seconds);
    for (const auto& f : written) std::fprintf(stderr, ", wrote %s", f.c_str());
    std::fputc('\n', stderr);
  }
  return 0;
}

void print_samplers() {
  std::printf("Options every sampler takes:\n");
  for (const auto& o : scorch::grid_options())
    std::printf("  %-18s %-7s default %-8s %s\n", o.name.c_str(), scorch::to_string(o.type).c_str(),
                o.default_value.c_str(), o.help.c_str());
  for (const auto& s : scorch::samplers()) {
    std::printf("\n%s\n  %s\n", s.name.c_str(), s.summary.c_str());
    for (const auto& o : s.options) {
      std::string choices;
      for (const auto& c : o.choices) choices += (choices.empty() ? " (" : " | ") + c;
      if (!choices.empty()) choices += ")";
      std::printf("  %-18s %-7s default %-8s %s%s\n", o.name.c_str(), scorch::to_string(o.type).c_str(),
                  o.default_value.c_str(), o.help.c_str(), choices.c_str());
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"scorch: diffusion and score-model sampling engine"};
  app.require_subcommand(1);
  std::string config_path;
  std::vector<std::string> sets;
  bool quiet = false;
  int threads = 0;
  CLI::App* gen = app.add_subcommand("generate", "generate samples from a YAML pipeline config");
  gen->add_option("--config", config_path, "YAML config (default: the built-in configs/default.yaml)");
  gen->add_option("--set", sets, "override a config key: key.path=value (repeatable)");
  gen->add_flag("-q,--quiet", quiet, "no progress output");
  gen->add_option("--threads", threads, "CPU threads (default: all cores)")->check(CLI::PositiveNumber);
  app.add_subcommand("samplers", "list every registered sampler with its options and defaults");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "scorch: error: %s (see scorch --help)\n", e.what());
    return 2;
  }
  try {
    // Debian's OpenMP build of LibTorch starts with one thread; use every core by default.
    at::set_num_threads(threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency())));
    if (app.got_subcommand("samplers")) {
      print_samplers();
      return 0;
    }
    return run_generate(config_path, sets, quiet);
  } catch (const scorch::Error& e) {
    std::fprintf(stderr, "scorch: error: %s\n", e.what());
    return e.status() == scorch::Status::BadInput ? 2 : 1;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "scorch: internal error: %s\n", e.what_without_backtrace());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "scorch: internal error: %s\n", e.what());
    return 1;
  }
}
