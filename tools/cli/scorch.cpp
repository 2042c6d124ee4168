// The scorch command line: `scorch generate` and `scorch samplers`.
// Exit status: 0 success, 2 bad input (one line on stderr), 1 internal error.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/version.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <dlfcn.h>
#include <malloc.h>
#endif

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>
#include <algorithm>

#include "scorch/config.h"
#include "scorch/discrete_sampler.h"
#include "scorch/distributed.h"
#include "scorch/distributed_pipeline.h"
#include "scorch/sampler.h"
#include "scorch/server.h"
#include "scorch/token_pipeline.h"
#include "scorch/error.h"
#include "scorch/eval.h"
#include "scorch/io.h"
#include "scorch/fit.h"
#include "scorch/gaussian.h"
#include "scorch/mixture_model.h"
#include "scorch/pipeline.h"
#include "scorch/provenance.h"

namespace {

// glibc returns large freed blocks to the kernel (munmap above the mmap threshold, and
// madvise when it trims an arena's top), so every model call faults its activation memory
// in again, zeroed page by page. With LibTorch's CPU tensors of a few MiB this cost a third
// of a 1000-sample DDIM run's CPU time in the kernel and made it 2.8x slower here
// (docs/benchmarks.md, "Allocator"). The CLI is one process per run, so it keeps freed
// memory for reuse: mmap only above 32 MiB (glibc's largest threshold on 64-bit), trim
// only above 1 GiB. SCORCH_SYSTEM_MALLOC=1 keeps glibc's defaults (for the side-by-side benchmark).
// The C API leaves the allocator to its host process (docs/c_api.md).
void keep_freed_memory() {
#if defined(__GLIBC__)
  const char* system = std::getenv("SCORCH_SYSTEM_MALLOC");
  if (system && std::string(system) == "1") return;
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

// OpenBLAS runs its own threads inside each GEMM, and their number changes the round-off of
// the analytic models' products (float32, ~1e-6): one BLAS thread per process keeps every
// sample independent of thread counts and of how a batch is split across torchrun's ranks
// (docs/distributed.md); the parallelism is ATen's (chunks and intra-op threads). Looked up
// at run time, as the BLAS behind LibTorch may be another one.
void single_threaded_blas() {
  using SetThreads = void (*)(int);
  if (auto set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
}

// LibTorch's own warnings (TORCH_WARN, a network's warnings.warn) are collected instead of
// printed before scorch's lines: a successful run shows each once as a note, a failed one
// its one error line alone. The handler is per thread; the chunked network evaluation
// hands the caller's to its workers (engine/torchscript_denoiser.cpp).
class CollectTorchWarnings : public c10::WarningHandler {
 public:
#if TORCH_VERSION_MAJOR >= 2
  void process(const c10::Warning& w) override { add(w.msg()); }
#else
  void process(const c10::SourceLocation&, const std::string& msg, const bool) override { add(msg); }
#endif
  std::vector<std::string> lines() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return lines_;
  }

 private:
  void add(const std::string& msg) {
    const std::string line = msg.substr(0, msg.find('\n'));
    const std::lock_guard<std::mutex> lock(mutex_);  // workers warn too
    if (std::find(lines_.begin(), lines_.end(), line) == lines_.end()) lines_.push_back(line);
  }
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

CollectTorchWarnings& torch_warnings() {
  static CollectTorchWarnings handler;
  return handler;
}

// A token model: samples go to stdout as text, one per line.
int run_generate_tokens(const YAML::Node& config, bool quiet) {
  const auto pipeline = scorch::TokenPipeline::from_config(config);
  for (const auto& note : pipeline->notes()) std::fprintf(stderr, "note: %s\n", note.c_str());
  const scorch::TokenResult r = pipeline->generate();
  const auto written = pipeline->write_outputs(r);
  for (const auto& line : pipeline->decode(r.tokens)) std::printf("%s\n", line.c_str());
  if (!quiet) {
    std::fprintf(stderr, "%s: %d steps, %.1f model calls per sequence, sampling %.1f ms", pipeline->sampler_name().c_str(),
                 pipeline->steps(), r.calls, 1e3 * r.seconds);
    if (r.positions < r.calls * double(r.tokens.size(1)) - 1e-9)  // a prefix cache ran the network on blocks
      std::fprintf(stderr, ", %.1f positions evaluated per sequence (prefix cache)", r.positions);
    for (const auto& f : written) std::fprintf(stderr, ", wrote %s", f.c_str());
    std::fputc('\n', stderr);
  }
  return 0;
}

// TorchScript's profiling executor spends the first calls of a freshly loaded network
// profiling and optimising it, and a CLI run is always a first run: with the plain executor
// sampling takes 0.55x the time at batch 1, 0.96x at 64 (tools/bench/bench_small_batch.sh), with
// bit-identical samples (tested), so the CLI runs CPU networks with it. SCORCH_PROFILING_EXECUTOR=1
// keeps LibTorch's default; GPU runs keep it too (its fusers may pay off there).
void plain_executor_on_cpu(const YAML::Node& config) {
  const char* keep = std::getenv("SCORCH_PROFILING_EXECUTOR");
  if (keep && std::string(keep) == "1") return;
  const YAML::Node device = config["device"];
  if (device && device.IsScalar() && device.Scalar() == "cuda") return;
  torch::jit::getProfilingMode() = false;
}

int run_generate(const std::string& config_path, const std::vector<std::string>& sets, bool quiet,
                 scorch::ProcessGroup* group) {
  const YAML::Node config = scorch::load_config(config_path, sets);
  plain_executor_on_cpu(config);
  if (!group && scorch::is_token_config(config)) return run_generate_tokens(config, quiet);
  const auto load_start = std::chrono::steady_clock::now();
  // Under torchrun every rank loads and validates, then generates its share; rank 0 reports
  // and writes (docs/distributed.md).
  const auto pipeline = group ? scorch::distributed_pipeline(*group, config) : scorch::Pipeline::from_config(config);
  if (group && group->rank() != 0) quiet = true;
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start).count();
  const bool tty = isatty(STDERR_FILENO);
  scorch::ProgressFn progress;
  if (!quiet) {
    progress = [tty](const scorch::StepInfo& s) {
      // One updating line on a terminal; otherwise a line at every 10% of the run.
      // total is 0 when the step count is not known in advance (adaptive step size).
      char acc[32] = "";
      if (!std::isnan(s.acceptance)) std::snprintf(acc, sizeof acc, "  accept %.2f", s.acceptance);
      if (tty) {
        std::fprintf(stderr, "\rstep %d/%d  NFE %lld  %.2fs%s", s.step, s.total, (long long)s.nfe, s.elapsed_s, acc);
        if (s.step == s.total) std::fputc('\n', stderr);
      } else if (s.total <= 0 || s.step == s.total || (s.step * 10) / s.total != ((s.step - 1) * 10) / s.total) {
        std::fprintf(stderr, "step %d/%d  NFE %lld  %.2fs%s\n", s.step, s.total, (long long)s.nfe, s.elapsed_s, acc);
      }
      return true;
    };
  }
  const scorch::GenerateResult result =
      group ? scorch::distributed_generate(*group, *pipeline, progress) : pipeline->generate(progress);
  if (group && group->rank() != 0) return 0;
  const auto written = pipeline->write_outputs(result);
  for (const auto& line : result.notes)
    if (!quiet || line.rfind("warning:", 0) == 0) std::fprintf(stderr, "%s\n", line.c_str());
  if (!quiet)
    for (const auto& line : torch_warnings().lines()) std::fprintf(stderr, "note: LibTorch warned: %s\n", line.c_str());
  if (!quiet) {
    std::fprintf(stderr, "%s: %d steps, %lld NFE, start-up %.1f ms, sampling %.1f ms", pipeline->sampler_name().c_str(),
                 result.steps, (long long)result.nfe, load_ms, 1e3 * result.seconds);
    // The TorchScript network's share (analytic models have none to report).
    if (result.network_seconds > 0.0) std::fprintf(stderr, " (network %.1f ms)", 1e3 * result.network_seconds);
    if (result.latents.defined()) std::fprintf(stderr, ", decoding %.1f ms", 1e3 * result.decode_seconds);
    for (const auto& f : written) std::fprintf(stderr, ", wrote %s", f.c_str());
    std::fputc('\n', stderr);
  }
  return 0;
}

// [N, H, W] uint8 -> [N, 1, H, W] float in [-1, 1].
at::Tensor to_unit_range(const at::Tensor& u8) { return u8.to(at::kFloat).div(127.5).sub(1.0).unsqueeze(1); }

// Rows of an n-row set this rank evaluates: whole blocks of kFeatureBlock, so that each
// row meets the classifier in the same batch as in one process.
std::pair<int64_t, int64_t> block_share(int64_t n, const scorch::ProcessGroup& group) {
  const int64_t blocks = (n + scorch::kFeatureBlock - 1) / scorch::kFeatureBlock;
  const auto [first_block, count_blocks] = group.share(blocks);
  const int64_t first = std::min(n, first_block * scorch::kFeatureBlock);
  return {first, std::min(n, (first_block + count_blocks) * scorch::kFeatureBlock) - first};
}

int run_eval(const std::string& samples_path, const std::string& labels_path, const std::string& classifier_path,
             const std::string& reference, int k, bool json, scorch::ProcessGroup* group) {
  // Every file is checked by kind first, then the data (cheap) before the classifier loads;
  // what is wrong with the data names the option and the file. Under torchrun each rank
  // reads its blocks of rows of each set (agreed: a bad file fails every rank at once).
  const std::string ref_file = reference == "test"    ? scorch::fashion_mnist_file("t10k-images-idx3-ubyte.gz")
                               : reference == "train" ? scorch::fashion_mnist_file("train-images-idx3-ubyte.gz")
                                                      : reference;
  const bool ref_npy = ref_file.size() > 4 && ref_file.substr(ref_file.size() - 4) == ".npy";
  std::string classifier_file;
  at::Tensor samples, labels, ref;
  scorch::DataShards shards;
  const auto load = [&] {
    scorch::check_input_file(samples_path, "--samples");
    if (!labels_path.empty()) scorch::check_input_file(labels_path, "--labels");
    scorch::check_input_file(ref_file, "--reference");
    classifier_file = scorch::find_input_file(classifier_path);
    scorch::check_input_file(classifier_file, "--classifier");
    const std::string s_what = "--samples '" + samples_path + "'";
    const std::vector<int64_t> s_shape = scorch::npy_shape(samples_path, "--samples");
    const int64_t n = s_shape.empty() ? 0 : s_shape[0];
    if (!labels_path.empty()) {
      const std::vector<int64_t> l_shape = scorch::npy_shape(labels_path, "--labels");
      if (l_shape.size() != 1 || l_shape[0] != n)
        scorch::bad_input("--labels '" + labels_path + "': shape " + scorch::shape_string(l_shape) +
                          " is not one label per sample of " + s_what + " (" + std::to_string(n) + ")");
    }
    const auto [s_first, s_count] = group && n > 0 ? block_share(n, *group) : std::pair<int64_t, int64_t>{0, n};
    samples = group && n > 0 ? scorch::read_npy_rows(samples_path, s_first, s_count, "--samples")
                             : scorch::read_npy(samples_path, "--samples");
    if (!at::isFloatingType(samples.scalar_type())) scorch::bad_input(s_what + ": expected float32 or float64 data");
    if (!at::isfinite(samples).all().item<bool>()) scorch::bad_input(s_what + ": has non-finite values");
    if (!labels_path.empty()) {
      labels = group && n > 0 ? scorch::read_npy_rows(labels_path, s_first, s_count, "--labels")
                              : scorch::read_npy(labels_path, "--labels");
      if (at::isFloatingType(labels.scalar_type())) scorch::bad_input("--labels: expected integer labels");
    }
    if (group) {
      const std::vector<int64_t> r_shape = ref_npy ? scorch::npy_shape(ref_file, "--reference") : scorch::idx_shape(ref_file);
      const auto [r_first, r_count] = block_share(r_shape.empty() ? 0 : r_shape[0], *group);
      ref = ref_npy ? scorch::read_npy_rows(ref_file, r_first, r_count, "--reference")
                    : to_unit_range(scorch::read_idx_rows(ref_file, r_first, r_count));
    } else {
      ref = ref_npy ? scorch::read_npy(ref_file, "--reference") : to_unit_range(scorch::read_idx(ref_file));
    }
    // Grey images come as [N, H, W] or [N, 1, H, W]: give both sets the same form.
    if (samples.dim() == 3 && ref.dim() == 4 && ref.size(1) == 1) samples = samples.unsqueeze(1);
    if (ref.dim() == 3 && samples.dim() == 4 && samples.size(1) == 1) ref = ref.unsqueeze(1);
    if (samples.dim() >= 2 && ref.dim() >= 2 && samples.sizes().slice(1) != ref.sizes().slice(1))
      scorch::bad_input("--reference '" + ref_file + "': samples of shape " + scorch::shape_string(ref.sizes().slice(1)) +
                        ", " + s_what + " has " + scorch::shape_string(samples.sizes().slice(1)));
  };
  if (group) {
    group->agree("eval: read the data", load);
    shards.sum = [group](at::Tensor& t) { group->all_reduce_sum(t, "eval: sum"); };
    shards.gather = [group](const at::Tensor& t) { return group->gather_rows(t, "eval: gather the features"); };
  } else {
    load();
  }
  const scorch::FeatureClassifier classifier(classifier_file);
  const scorch::EvalReport r = scorch::evaluate(classifier, samples, labels, ref, k, shards);
  if (group && group->rank() != 0) return 0;
  if (json) {
    std::printf("{\"samples\": %lld, \"reference\": %lld, \"fd\": %.6g, \"accuracy\": %.6g, \"precision\": %.6g, "
                "\"recall\": %.6g}\n",
                (long long)r.samples, (long long)r.reference, r.fd, r.accuracy, r.pr.precision, r.pr.recall);
  } else {
    std::printf("FD %.4g  label consistency %s  precision %.3f  recall %.3f  (%lld samples vs %lld reference)\n", r.fd,
                r.accuracy < 0 ? "-" : std::to_string(r.accuracy).substr(0, 5).c_str(), r.pr.precision, r.pr.recall,
                (long long)r.samples, (long long)r.reference);
  }
  return 0;
}

// Data for `scorch fit`: IDX (.gz) images or .npy; uint8 pixels map to [-1, 1].
bool is_npy_path(const std::string& path) { return path.size() > 4 && path.substr(path.size() - 4) == ".npy"; }

// Rows of the data set (the first axis), from the file's header alone.
int64_t data_rows(const std::string& path) {
  scorch::check_input_file(path, "--data");
  const std::vector<int64_t> shape = is_npy_path(path) ? scorch::npy_shape(path, "--data") : scorch::idx_shape(path);
  if (shape.size() < 2) scorch::bad_input("--data '" + path + "': expected samples [N, ...], got a vector");
  return shape[0];
}

// Rows first .. first + count - 1 (count < 0: all) as [n, *shape] float32.
at::Tensor read_data(const std::string& path, int64_t first = 0, int64_t count = -1) {
  const bool npy = is_npy_path(path);
  scorch::check_input_file(path, "--data");
  at::Tensor x = count < 0 ? (npy ? scorch::read_npy(path, "--data") : scorch::read_idx(path))
                           : (npy ? scorch::read_npy_rows(path, first, count, "--data") : scorch::read_idx_rows(path, first, count));
  if (x.dim() < 2) scorch::bad_input("--data '" + path + "': expected samples [N, ...], got a vector");
  if (x.size(0) == 0) scorch::bad_input("--data '" + path + "': no samples");
  if (count < 0 && x.size(0) == 1) scorch::bad_input("--data '" + path + "': one sample; a fit needs at least 2");
  if (x.scalar_type() == at::kByte) x = x.to(at::kFloat).div_(127.5).sub_(1.0);
  if (!npy && x.dim() == 3) x = x.unsqueeze(1);  // IDX images [N, H, W] -> [N, 1, H, W]
  if (!at::isFloatingType(x.scalar_type())) scorch::bad_input("--data '" + path + "': expected float or uint8 data");
  if (!at::isfinite(x).all().item<bool>()) scorch::bad_input("--data '" + path + "': has non-finite values");
  return x.to(at::kFloat);
}

struct EmsArgs {
  std::string config, out, data;
  std::vector<std::string> sets;
  int64_t samples = 1024, grid = 64, probes = 1, batch = 256;
  double lambda_min = 0.0, lambda_max = 0.0;
  uint64_t seed = 0;
};

// scorch ems: DPM-Solver-v3's statistics of a config's model (docs/dpm_solver_v3.md).
int run_ems(const EmsArgs& a, bool quiet) {
  scorch::check_writable(a.out, "--out");
  if ((a.lambda_min == 0.0) != (a.lambda_max == 0.0) || (a.lambda_min != 0.0 && !(a.lambda_max > a.lambda_min)))
    scorch::bad_input("--lambda-min / --lambda-max: give both, min below max (default: the config's sampler range)");
  at::Tensor data;
  // float64 by default: the estimator differentiates model outputs by central differences,
  // which float32 round-off, divided by alpha at the noisy end, turns into noise
  // (docs/dpm_solver_v3.md); --set dtype=float32 overrides it.
  std::vector<std::string> sets = {"dtype=float64"};
  sets.insert(sets.end(), a.sets.begin(), a.sets.end());
  int64_t n = a.samples;
  if (!a.data.empty()) {
    data = read_data(a.data);
    n = std::min(n, data.size(0));
    data = data.narrow(0, 0, n);
  }
  sets.push_back("batch=" + std::to_string(n));
  sets.push_back("output.png=");
  sets.push_back("output.npy=");
  const YAML::Node config = scorch::load_config(a.config, sets);
  if (scorch::is_token_config(config)) scorch::bad_input("ems: DPM-Solver-v3's statistics are for continuous models");
  const auto pipeline = scorch::Pipeline::from_config(config);
  scorch::EmsEstimate o;
  o.grid = a.grid;
  o.probes = a.probes;
  o.batch = a.batch;
  o.seed = a.seed;
  o.lambda_min = a.lambda_min;
  o.lambda_max = a.lambda_max;
  const bool tty = isatty(STDERR_FILENO);
  const auto start = std::chrono::steady_clock::now();
  if (!quiet && !data.defined()) std::fprintf(stderr, "ems: generating %lld samples with the config\n", static_cast<long long>(n));
  const scorch::Ems e = pipeline->estimate_ems(data, o, [&](int64_t done, int64_t total) {
    if (quiet) return;
    std::fprintf(stderr, tty ? "\rems: grid point %lld/%lld" : "ems: grid point %lld/%lld\n", static_cast<long long>(done),
                 static_cast<long long>(total));
  });
  scorch::write_ems(a.out, e);
  if (!quiet) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "%sems: %lld samples, %lld grid points over lambda [%.3f, %.3f], %.1f s; wrote %s\n", tty ? "\n" : "",
                 static_cast<long long>(n), static_cast<long long>(e.points()), e.lambda[0].item<double>(),
                 e.lambda[-1].item<double>(), seconds, a.out.c_str());
  }
  return 0;
}

struct FitArgs {
  std::string kind, data, out, labels, cov = "lowrank";
  double smoothing = 0.0, reg = 1e-4;
  int64_t limit = 0, k = 10, rank = -1;
  int iters = 20, em_iters = 5;
  uint64_t seed = 0;
};

int run_fit(const FitArgs& a, bool quiet, scorch::ProcessGroup* group) {
  at::Tensor x, labels;
  scorch::DataShards shards;
  // Under torchrun each rank reads its rows alone and the fit sums their statistics
  // (scorch/fit.h); rank 0 writes the model. Reading is agreed: a bad file on any rank
  // fails every rank with one message.
  const auto load = [&] {
    if (a.kind != "empirical" && a.kind != "gaussian" && a.kind != "gmm")
      scorch::bad_input("fit: '" + a.kind + "' is not one of gaussian, gmm, empirical");
    if (!group || group->rank() == 0) scorch::check_writable(a.out, "--out");
    if (!a.labels.empty() && a.kind != "gaussian") scorch::bad_input("--labels: only fit gaussian takes labels (one Gaussian per class)");
    if (!a.labels.empty() && group) scorch::bad_input("--labels: fit gaussian --labels runs in one process, not under torchrun");
    if (!group) {
      x = read_data(a.data);
      if (a.limit > 0 && a.limit < x.size(0)) x = x.narrow(0, 0, a.limit);
      if (!a.labels.empty()) {
        scorch::check_input_file(a.labels, "--labels");
        labels = is_npy_path(a.labels) ? scorch::read_npy(a.labels, "--labels") : scorch::read_idx(a.labels);
        if (a.limit > 0 && labels.dim() == 1 && a.limit < labels.size(0)) labels = labels.narrow(0, 0, a.limit);
      }
      return;
    }
    int64_t total = data_rows(a.data);
    if (a.limit > 0) total = std::min(total, a.limit);
    if (total < 2) scorch::bad_input("--data '" + a.data + "': " + std::to_string(total) + " sample(s); a fit needs at least 2");
    if (total < group->size())
      scorch::bad_input("--data '" + a.data + "': " + std::to_string(total) + " samples for " + std::to_string(group->size()) +
                        " ranks; each rank needs one");
    const auto [first, count] = group->share(total);
    x = read_data(a.data, first, count);
    shards.first = first;
    shards.total = total;
    shards.sum = [group](at::Tensor& t) { group->all_reduce_sum(t, "fit: sum the statistics"); };
    shards.gather = [group](const at::Tensor& t) { return group->gather_rows(t, "fit: gather"); };
  };
  if (group) {
    group->agree("fit: read the data", load);
    if (group->rank() != 0) quiet = true;
  } else {
    load();
  }
  const std::vector<int64_t> shape(x.sizes().begin() + 1, x.sizes().end());
  const at::Tensor flat = x.reshape({x.size(0), -1});
  const bool writes = !group || group->rank() == 0;
  const auto start = std::chrono::steady_clock::now();
  if (a.kind == "empirical") {
    if (!(a.smoothing >= 0.0)) scorch::bad_input("--smoothing: expected a number >= 0");
    // the model is the data set itself: every rank's rows, in order
    std::vector<int64_t> sizes = x.sizes().vec();
    sizes[0] = -1;
    const at::Tensor all = shards.gather(flat).reshape(sizes);
    if (writes) scorch::save_empirical(a.out, all, shape, a.smoothing);
  } else if (a.kind == "gaussian") {
    // stored as float32: the fit is float64, the files are read as float32 anyway
    const scorch::GaussianModel g = scorch::fit_gaussian(flat, a.rank < 0 ? 0 : a.rank, shape, shards);
    if (!a.labels.empty()) {
      std::vector<scorch::GaussianModel> classes;
      for (const auto& c : scorch::fit_class_gaussians(flat, labels, a.rank < 0 ? 0 : a.rank, shape))
        classes.push_back(c.to(at::kFloat));
      if (writes) scorch::save_class_gaussians(a.out, g.to(at::kFloat), classes);
    } else if (writes) {
      scorch::save_gaussian(a.out, g.to(at::kFloat));
    }
  } else {
    scorch::GmmFitOptions o;
    o.k = a.k;
    o.cov = scorch::parse_covariance(a.cov, "--cov");
    o.rank = a.rank < 0 ? 32 : a.rank;
    o.kmeans_iters = a.iters;
    o.em_iters = a.em_iters;
    o.seed = a.seed;
    o.reg = a.reg;
    if (!quiet)
      o.progress = [&](const char* phase, int it, int total, double ll) {
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (std::isnan(ll))
          std::fprintf(stderr, "fit gmm: %s done (%.1f s)\n", phase, s);
        else
          std::fprintf(stderr, "fit gmm: %s %d/%d  mean log-likelihood %.2f  (%.1f s)\n", phase, it, total, ll, s);
      };
    const scorch::GmmFit fit = scorch::fit_gmm(flat, o, shards);
    if (writes) scorch::save_gmm(a.out, fit.mixture, shape);
  }
  if (!writes) return 0;
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!quiet)
    std::fprintf(stderr, "fit %s: %lld samples of shape %s in %.1f s, wrote %s\n", a.kind.c_str(),
                 (long long)x.size(0), scorch::shape_string(shape).c_str(), s, a.out.c_str());
  return 0;
}

void print_samplers() {
  std::printf("Continuous samplers. Options every one takes (the time grid):\n%s",
              scorch::describe(scorch::grid_options()).c_str());
  for (const auto& s : scorch::samplers().entries()) {
    std::printf("\n%s\n  %s\n", s.name.c_str(), s.summary.c_str());
    scorch::Schema own;
    for (const auto& o : s.options)
      if (!s.fixed.count(o.name)) own.push_back(o);
    std::printf("%s", scorch::describe(own).c_str());
    for (const auto& [key, value] : s.fixed) std::printf("  (fixes %s = %s)\n", key.c_str(), value.c_str());
  }
  std::printf("\nDiscrete samplers (model.type: tokens). Options every one takes:\n%s",
              scorch::describe(scorch::discrete_common_options()).c_str());
  for (const auto& s : scorch::discrete_samplers().entries()) {
    std::printf("\n%s%s\n  %s\n", s.name.c_str(), s.uniform_ok ? " (absorbing and uniform)" : "", s.summary.c_str());
    std::printf("%s", scorch::describe(s.options).c_str());
  }
}

// Every section's keys; with markdown, the tables of docs/configuration.md ("Every key"),
// which a test keeps equal to this output.
void print_config(bool markdown) {
  const auto cell = [](std::string text) {
    for (size_t i = 0; (i = text.find('|', i)) != std::string::npos; i += 2) text.insert(i, "\\");
    return text;
  };
  for (const auto& section : scorch::config_schemas()) {
    const std::string title = section.path.empty() ? section.help : "`" + section.path + "`: " + section.help;
    if (!markdown) {
      std::printf("%s\n%s\n", section.path.empty() ? section.help.c_str() : (section.path + ": " + section.help).c_str(),
                  scorch::describe(section.keys).c_str());
      continue;
    }
    std::printf("### %s\n\n| key | type | default | meaning |\n|---|---|---|---|\n", title.c_str());
    for (const auto& k : section.keys) {
      std::string meaning = k.help;
      if (!k.choices.empty()) meaning += ": `" + scorch::join(k.choices, "` | `") + "`";
      if (!scorch::range_words(k).empty()) meaning += " (" + scorch::range_words(k) + ")";
      std::printf("| `%s` | %s | %s | %s |\n", k.name.c_str(), scorch::to_string(k.type).c_str(),
                  k.default_value.empty() ? "" : ("`" + k.default_value + "`").c_str(), cell(meaning).c_str());
    }
    std::printf("\n");
  }
}

// An integer option's range, said in plain words ("--threads: expected an integer from 1 to 1024").
CLI::Validator int_range(long long lo, long long hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) -> std::string {
        const std::string range = "expected an integer from " + std::to_string(lo) + " to " + std::to_string(hi);
        size_t used = 0;
        long long x = 0;
        try {
          x = std::stoll(v, &used);
        } catch (const std::exception&) {
          return range + ", got '" + v + "'";
        }
        if (used != v.size() || x < lo || x > hi) return range + ", got '" + v + "'";
        return "";
      },
      "", "int_range");
}

// The same for a number option (finite, within [lo, hi]).
CLI::Validator number_range(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) -> std::string {
        std::ostringstream range;
        range << "expected a number from " << lo << " to " << hi;
        size_t used = 0;
        double x = 0;
        try {
          x = std::stod(v, &used);
        } catch (const std::exception&) {
          return range.str() + ", got '" + v + "'";
        }
        if (used != v.size() || !(x >= lo && x <= hi)) return range.str() + ", got '" + v + "'";
        return "";
      },
      "", "number_range");
}

// Bytes a terminal would act on (escape sequences, carriage returns), shown as \xNN.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  keep_freed_memory();
  single_threaded_blas();
#if TORCH_VERSION_MAJOR >= 2
  c10::WarningUtils::set_warning_handler(&torch_warnings());
#else
  c10::Warning::set_warning_handler(&torch_warnings());
#endif
  scorch::install_temp_file_cleanup();  // SIGINT / SIGTERM leave no temporary output behind
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
  gen->add_option("--threads", threads, "CPU threads (default: all cores)")->check(int_range(1, 1024));
  app.add_subcommand("samplers", "list every registered sampler (continuous and discrete) with its options");
  bool markdown = false;
  scorch::ServerOptions so;
  CLI::App* srv = app.add_subcommand("serve", "an HTTP server that keeps running and generates per request (docs/server.md)");
  srv->add_option("--host", so.host, "address to listen on (other than localhost: reachable from other machines)")->capture_default_str();
  srv->add_option("--port", so.port, "port (0: any free one)")->capture_default_str()->check(int_range(0, 65535));
  srv->add_option("--config", so.config, "the base config requests override (default: the built-in one)");
  srv->add_option("--models", so.models, "the folder request paths resolve in (default: requests name no files)");
  srv->add_option("--max-queue", so.max_queue, "requests waiting behind the running one; more get 503")->capture_default_str()->check(int_range(0, 100000));
  srv->add_option("--max-batch", so.max_batch, "samples per request, and per merged run")->capture_default_str()->check(int_range(1, 16777216));
  srv->add_option("--batch-window-ms", so.batch_window_ms,
                  "requests differing only in seeds, labels or prompts that arrive within this window share one run (0: each runs alone)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 60000.0));
  srv->add_option("--timeout", so.timeout_s, "seconds a request may take, queued and running; later ones are cancelled with 504 (0: no limit)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  size_t cache_mb = so.model_cache_bytes >> 20;
  srv->add_option("--model-cache-mb", cache_mb, "memory for loaded models; the least recently used are evicted past it (0: load per request)")
      ->capture_default_str()
      ->check(CLI::Range(size_t(0), size_t(1) << 24));
  srv->add_option("--keep-jobs", so.keep_jobs, "finished jobs kept for GET /v1/jobs/{id}")->capture_default_str()->check(int_range(1, 1000000));
  std::string info_path;
  app.add_subcommand("info", "print how an output was made: a PNG's scorch metadata or an .npy's .json")
      ->add_option("file", info_path, "a PNG or .json written by scorch generate")
      ->required();
  app.add_subcommand("config", "print every config section's keys: type, default, meaning")
      ->add_flag("--markdown", markdown, "as the Markdown tables of docs/configuration.md");
  std::string samples_path, labels_path, classifier_path = "models/fmnist_classifier.pt", reference = "test";
  int k = 3;
  bool json = false;
  CLI::App* ev = app.add_subcommand("eval", "sample quality: FD, label consistency, k-NN precision and recall");
  ev->add_option("--samples", samples_path, ".npy samples [N, *shape] the classifier accepts (images in [-1, 1])")->required();
  ev->add_option("--labels", labels_path, ".npy int labels of the samples (for label consistency)");
  ev->add_option("--classifier", classifier_path, "TorchScript classifier with features(x)")->capture_default_str();
  ev->add_option("--reference", reference, "test | train (Fashion-MNIST) | a .npy or IDX file")->capture_default_str();
  ev->add_option("--k", k, "k of the k-NN precision and recall")->capture_default_str()->check(int_range(1, 1000));
  ev->add_flag("--json", json, "one JSON line instead of text");
  std::string lsd_config, lsd_out;
  scorch::LsdDistillOptions lo;
  CLI::App* lsd = app.add_subcommand("distill-lsd", "learn the lsd sampler's coefficients for a token model");
  lsd->add_option("--config", lsd_config, "the token model's config (model, schedule)")->required();
  lsd->add_option("--steps", lo.steps, "student steps")->capture_default_str()->check(int_range(1, 10000));
  lsd->add_option("--teacher-steps", lo.teacher_steps, "steps of the euler teacher")->capture_default_str()->check(int_range(1, 100000));
  lsd->add_option("--batch", lo.batch, "teacher sequences")->capture_default_str()->check(int_range(1, 1000000));
  lsd->add_option("--iters", lo.iters, "Adam iterations per step")->capture_default_str()->check(int_range(1, 1000000));
  lsd->add_flag("--learn-step-sizes", lo.learn_step_sizes, "LSD+: also learn a per-step scale of the step size");
  lsd->add_option("--target", lo.target,
                  "final: match the distribution the teacher draws each token from; step: the teacher's at the end "
                  "of the student's step; joint: the teacher's joint law of the tokens it unmasks in the student's step")->capture_default_str();
  lsd->add_option("--seed", lo.seed, "seed of the teacher")->capture_default_str()->check(int_range(0, INT64_MAX));
  lsd->add_option("--out", lsd_out, "YAML for sampler.coefficients")->required();
  FitArgs fa;
  CLI::App* fit = app.add_subcommand("fit", "write an analytic model file from data (IDX .gz or .npy)");
  fit->add_option("kind", fa.kind, "gaussian | gmm | empirical")->required();
  fit->add_option("--data", fa.data, "IDX (.gz) or .npy samples")->required();
  fit->add_option("--out", fa.out, "output .safetensors")->required();
  fit->add_option("--labels", fa.labels, "gaussian: class labels of the data (IDX .gz or .npy): one Gaussian per class as well (teleport)");
  fit->add_option("--k", fa.k, "gmm: number of components")->capture_default_str()->check(int_range(1, 100000));
  fit->add_option("--cov", fa.cov, "gmm: isotropic | diagonal | lowrank | full")->capture_default_str();
  fit->add_option("--rank", fa.rank, "gaussian: eigenvalues kept (default all); gmm lowrank: rank per component (default 32)")
      ->check(int_range(0, 1000000));
  fit->add_option("--iters", fa.iters, "gmm: k-means (Lloyd) iterations")->capture_default_str()->check(int_range(0, 1000000));
  fit->add_option("--em-iters", fa.em_iters, "gmm: EM iterations after k-means")->capture_default_str()->check(int_range(0, 1000000));
  fit->add_option("--reg", fa.reg, "gmm: added to every variance and eigenvalue")->capture_default_str()->check(number_range(0, 1e6));
  fit->add_option("--seed", fa.seed, "gmm: seed of the k-means++ initialisation")->capture_default_str()->check(int_range(0, INT64_MAX));
  fit->add_option("--smoothing", fa.smoothing, "empirical: smoothing sigma of each data point")->capture_default_str()->check(number_range(0, 1e6));
  fit->add_option("--limit", fa.limit, "use the first N samples (0: all)")->capture_default_str()->check(int_range(0, INT64_MAX));
  fit->add_flag("-q,--quiet", quiet, "no progress output");
  EmsArgs ea;
  CLI::App* ems = app.add_subcommand("ems", "DPM-Solver-v3's empirical model statistics of a config's model (docs/dpm_solver_v3.md)");
  ems->add_option("--config", ea.config, "YAML config: model, schedule, guidance and the sampler range (default: the built-in one)");
  ems->add_option("--set", ea.sets, "override a config key: key.path=value (repeatable)");
  ems->add_option("--out", ea.out, "output .safetensors (dpm_solver_v3's sampler.stats)")->required();
  ems->add_option("--data", ea.data, "data samples (IDX .gz or .npy); default: samples the config generates");
  ems->add_option("--samples", ea.samples, "number of samples N")->capture_default_str()->check(int_range(3, 16777216));
  ems->add_option("--grid", ea.grid, "grid intervals M (M + 1 points, uniform in lambda)")->capture_default_str()->check(int_range(2, 100000));
  ems->add_option("--probes", ea.probes, "Rademacher probes per sample for l")->capture_default_str()->check(int_range(1, 1000));
  ems->add_option("--batch", ea.batch, "samples per model call")->capture_default_str()->check(int_range(1, 16777216));
  ems->add_option("--lambda-min", ea.lambda_min, "grid start (half-logSNR; default: the sampler's noisiest point)")->check(number_range(-1000, 1000));
  ems->add_option("--lambda-max", ea.lambda_max, "grid end (default: the sampler's last point)")->check(number_range(-1000, 1000));
  ems->add_option("--seed", ea.seed, "seed of the noise and probes")->capture_default_str()->check(int_range(0, INT64_MAX));
  ems->add_flag("-q,--quiet", quiet, "no progress output");

  if (argc > 1 && argv[1][0] != '-') {
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) names.push_back(sub->get_name());
    if (std::find(names.begin(), names.end(), argv[1]) == names.end()) {
      std::fprintf(stderr, "scorch: error: unknown subcommand '%s'; expected %s\n", printable(argv[1]).c_str(),
                   scorch::join(names, " | ").c_str());
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "scorch: error: %s (see scorch --help)\n", printable(e.what()).c_str());
    return 2;
  }
  if (gen->get_option("--config")->count() > 0 && config_path.empty()) {
    std::fprintf(stderr, "scorch: error: --config: empty path (leave --config out for the built-in default)\n");
    return 2;
  }
  std::unique_ptr<scorch::ProcessGroup> group;
  try {
    // Debian's OpenMP build of LibTorch starts with one thread; use every core by default,
    // or OMP_NUM_THREADS when it is set (torchrun sets 1 per rank).
    int default_threads = int(std::max(1u, std::thread::hardware_concurrency()));
    if (const char* omp = std::getenv("OMP_NUM_THREADS"); omp && std::atoi(omp) > 0) default_threads = std::atoi(omp);
    at::set_num_threads(threads > 0 ? threads : default_threads);
    if (app.got_subcommand("samplers")) {
      print_samplers();
      return 0;
    }
    if (app.got_subcommand("info")) {
      scorch::check_input_file(info_path, "info");
      if (scorch::is_png_file(info_path)) {
        const auto chunks = scorch::png_text_chunks(info_path, "info");
        if (!chunks.count("scorch"))
          scorch::bad_input("info: '" + info_path + "' is a PNG without scorch metadata (not written by scorch generate)");
        if (chunks.count("parameters")) std::printf("# %s\n", chunks.at("parameters").c_str());
        std::printf("%s", chunks.at("scorch").c_str());
      } else if (info_path.size() > 5 && info_path.compare(info_path.size() - 5, 5, ".json") == 0) {
        std::printf("%s", scorch::provenance_json_config(info_path, "info").c_str());
      } else {
        scorch::bad_input("info: expected a PNG or an .npy's .json written by scorch generate, got '" + info_path + "'");
      }
      return 0;
    }
    if (app.got_subcommand("config")) {
      print_config(markdown);
      return 0;
    }
    if (app.got_subcommand("eval")) {
      group = scorch::ProcessGroup::from_environment();
      return run_eval(samples_path, labels_path, classifier_path, reference, k, json, group.get());
    }
    if (app.got_subcommand("serve")) {
#ifdef SCORCH_WITH_SERVER
      so.model_cache_bytes = cache_mb << 20;
      return scorch::serve(so);
#else
      scorch::bad_input("serve: this build has no server (cpp-httplib was not found: apt-get install libcpp-httplib-dev)");
#endif
    }
    if (app.got_subcommand("ems")) return run_ems(ea, quiet);
    if (app.got_subcommand("fit")) {
      group = scorch::ProcessGroup::from_environment();
      return run_fit(fa, quiet, group.get());
    }
    if (app.got_subcommand("distill-lsd")) {
      const auto start = std::chrono::steady_clock::now();
      const YAML::Node config = scorch::load_config(lsd_config, {});
      if (!scorch::is_token_config(config))
        scorch::bad_input("--config: '" + lsd_config + "' is not a token model (model.type: tokens); distill-lsd learns "
                          "the lsd sampler's coefficients for token models");
      scorch::check_writable(lsd_out, "--out");  // before the distillation, not after it
      const scorch::LsdDistillResult r = scorch::distill_lsd(config, lo);
      scorch::write_lsd_yaml(lsd_out, r, lo);
      for (size_t i = 0; i < r.loss_after.size(); ++i)
        std::fprintf(stderr, "step %zu: c = %.4f  d = %.4f  reverse KL %.4f -> %.4f nats per position\n", i + 1, r.coefficients[i],
                     r.step_scales[i], r.loss_before[i], r.loss_after[i]);
      std::fprintf(stderr, "distill-lsd: %d steps in %.1f s, wrote %s\n", lo.steps,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), lsd_out.c_str());
      return 0;
    }
    // torchrun's environment (WORLD_SIZE ...) makes this process a rank of a group.
    group = scorch::ProcessGroup::from_environment();
    return run_generate(config_path, sets, quiet, group.get());
  } catch (const scorch::Error& e) {
    // A bad input is agreed by every rank, so rank 0 alone says it; a lost rank is said by
    // each rank that saw it.
    if (group && group->rank() != 0 && e.status() == scorch::Status::BadInput) return 2;
    std::fprintf(stderr, "scorch: error: %s\n", printable(e.what()).c_str());
    return e.status() == scorch::Status::BadInput ? 2 : 1;
  } catch (const c10::Error& e) {
    if (scorch::is_allocation_failure(e)) {
      std::fprintf(stderr, "scorch: error: %s\n", printable(scorch::allocation_failure_message(e)).c_str());
      return 2;
    }
    std::fprintf(stderr, "scorch: internal error: %s\n", printable(e.what_without_backtrace()).c_str());
    return 1;
  } catch (const std::exception& e) {
    if (scorch::is_allocation_failure(e)) {
      std::fprintf(stderr, "scorch: error: %s\n", printable(scorch::allocation_failure_message(e)).c_str());
      return 2;
    }
    std::fprintf(stderr, "scorch: internal error: %s\n", printable(e.what()).c_str());
    return 1;
  }
}
