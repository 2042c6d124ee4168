// DPM-Solver-v3 (samplers/dpm_solver_v3.cpp) in float64: with trivial statistics it is
// DPM-Solver++ with Taylor high-order terms (to 1e-10 at orders 1 and 2); with the exact statistics of a
// Gaussian target it beats dpmpp_2m at every step count tried; it converges at its order
// on the mixture target; bad statistics files are refused with the key named.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "scorch/ems.h"
#include "scorch/error.h"
#include "scorch/io.h"
#include "support/sampler_harness.h"

namespace scorch {
namespace {

using testing::rel_error;
using testing::run_sampler;
using Opts = std::map<std::string, std::string>;

// Trivial statistics (l = 1, s = b = 0) make g = -x0: v3's multistep predictor is then
// DPM-Solver++ of the same order with Taylor terms (solver_type: taylor), to 1e-10 at
// orders 1 and 2 (8 steps, where both lower the order in the last steps). At order 3 the
// official DPM-Solver++(3M) weights its second-derivative term by half (D2 = (D1_0 -
// D1_1)/(r0 + r1) against phi_3, i.e. h^2 m''/2 where the Taylor term needs h^2 m''), which
// makes it second order; v3 keeps the exact Taylor weight: third order here, second there.
TEST(DpmSolverV3, TrivialStatisticsAreDpmSolverPlusPlus) {
  testing::Target c = testing::gaussian_target();
  for (int order = 1; order <= 2; ++order) {
    const Opts v3 = {{"steps", "8"}, {"order", std::to_string(order)}, {"degenerated", "true"}, {"use_corrector", "false"}};
    const Opts pp = {{"steps", "8"}, {"order", std::to_string(order)}, {"algorithm_type", "dpmsolver++"},
                     {"method", "multistep"}, {"solver_type", "taylor"}};
    const at::Tensor a = run_sampler("dpm_solver_v3", *c.model, *c.sched, c.x_T, v3).x;
    const at::Tensor b = run_sampler("dpm_solver", *c.model, *c.sched, c.x_T, pp).x;
    EXPECT_LT((a - b).abs().max().item<double>(), 1e-10) << "order " << order;
  }
  testing::Target m = testing::mixture_target();
  const auto order_of = [&](const char* name, Opts o) {
    const auto err = [&](int n) {
      o["steps"] = std::to_string(n);
      return rel_error(run_sampler(name, *m.model, *m.sched, m.x_T, o).x, m.reference);
    };
    return std::log2(err(48) / err(192)) / 2.0;
  };
  const Opts common = {{"order", "3"}, {"t_end", std::to_string(m.t_end)}, {"lower_order_final", "false"}};
  Opts v3 = common, pp = common;
  v3.insert({{"degenerated", "true"}, {"use_corrector", "false"}});
  pp.insert({{"method", "multistep"}, {"solver_type", "taylor"}});
  const double v3_order = order_of("dpm_solver_v3", v3), pp_order = order_of("dpm_solver", pp);
  std::printf("order 3 on the mixture: v3 (trivial statistics) %.2f, DPM-Solver++(3M) %.2f\n", v3_order, pp_order);
  EXPECT_GT(v3_order, 2.7);
  EXPECT_LT(pp_order, 2.3);
}

// The exact statistics of the Gaussian target (gaussian_ems on a fine grid) against
// dpmpp_2m and v3 on trivial statistics, at 5, 6, 8 and 10 steps.
TEST(DpmSolverV3, ExactStatisticsBeatDpmSolverPlusPlusOnTheGaussian) {
  testing::Target c = testing::gaussian_target();
  const std::string path = ::testing::TempDir() + "v3_gauss_" + std::to_string(::getpid()) + ".safetensors";
  const GaussianModel g = testing::random_gaussian(8, 8, 11);  // gaussian_target's model
  const double lo = c.sched->lambda(1.0), hi = c.sched->lambda(c.t_end);
  write_ems(path, gaussian_ems(g, *c.sched, at::linspace(lo, hi, 401, testing::kF64)));
  for (int steps : {5, 6, 8, 10}) {
    const std::string n = std::to_string(steps);
    const double v3 = rel_error(run_sampler("dpm_solver_v3", *c.model, *c.sched, c.x_T, {{"steps", n}, {"stats", path}}).x,
                                c.reference);
    const double trivial =
        rel_error(run_sampler("dpm_solver_v3", *c.model, *c.sched, c.x_T, {{"steps", n}, {"degenerated", "true"}}).x,
                  c.reference);
    const double pp = rel_error(run_sampler("dpmpp_2m", *c.model, *c.sched, c.x_T, {{"steps", n}}).x, c.reference);
    std::printf("%d steps: v3 (exact EMS) %.3g, v3 (trivial) %.3g, dpmpp_2m %.3g\n", steps, v3, trivial, pp);
    EXPECT_LT(v3, pp) << steps << " steps";
    EXPECT_LT(v3, trivial) << steps << " steps";
  }
  std::filesystem::remove(path);
}

// Order 2 and 3, predictor alone and with the corrector, converge at least at order 1.5 on
// the mixture target (trivial statistics: its EMS have no closed form).
TEST(DpmSolverV3, ConvergesOnTheMixture) {
  testing::Target c = testing::mixture_target();
  for (int order : {2, 3})
    for (const char* corrector : {"false", "true"}) {
      auto err = [&](int n) {
        const Opts o = {{"steps", std::to_string(n)}, {"order", std::to_string(order)}, {"degenerated", "true"},
                        {"use_corrector", corrector}, {"t_end", std::to_string(c.t_end)}};
        return rel_error(run_sampler("dpm_solver_v3", *c.model, *c.sched, c.x_T, o).x, c.reference);
      };
      const double measured = std::log2(err(48) / err(192)) / 2.0;
      std::printf("order %d, corrector %s: measured order %.2f\n", order, corrector, measured);
      EXPECT_GE(measured, 1.5) << "order " << order << " corrector " << corrector;
    }
}

// NFE = steps (the corrector reuses the next point's output); bad statistics are refused.
TEST(DpmSolverV3, NfeAndBadStatistics) {
  testing::Target c = testing::gaussian_target();
  EXPECT_EQ(run_sampler("dpm_solver_v3", *c.model, *c.sched, c.x_T, {{"steps", "7"}, {"degenerated", "true"}}).nfe, 7);
  const auto message = [&](const Opts& o) {
    try {
      run_sampler("dpm_solver_v3", *c.model, *c.sched, c.x_T, o);
    } catch (const Error& e) {
      EXPECT_EQ(e.status(), Status::BadInput);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"steps", "5"}}).find("sampler.stats: dpm_solver_v3 needs the model's EMS file"), std::string::npos);
  const std::string dir = ::testing::TempDir() + "v3_bad_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  // statistics for another shape; a grid that does not reach the sampler's last step
  write_ems(dir + "/shape.safetensors", trivial_ems(at::linspace(-10.0, 10.0, 5, testing::kF64), {3}));
  EXPECT_NE(message({{"stats", dir + "/shape.safetensors"}}).find("statistics are for samples of shape [3]"), std::string::npos);
  write_ems(dir + "/short.safetensors", trivial_ems(at::linspace(-10.0, 1.0, 5, testing::kF64), {8}));
  EXPECT_NE(message({{"stats", dir + "/short.safetensors"}}).find("the statistics cover lambda in [-10"), std::string::npos);
  EXPECT_NE(message({{"stats", dir + "/missing.safetensors"}}).find("missing.safetensors"), std::string::npos);
  std::filesystem::remove_all(dir);
}

// The CLI: scorch ems for the Fashion-MNIST Gaussian config, then dpm_solver_v3 with them;
// statistics of another schedule or model file, and a sampler range beyond the grid, are
// one error line, exit 2, nothing written.
TEST(DpmSolverV3, CliRefusesStatisticsOfAnotherPipeline) {
  const std::string cli = SCORCH_CLI, src = SCORCH_SOURCE_DIR;
  const std::string dir = ::testing::TempDir() + "v3_cli_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const auto run = [&](const std::string& args) {
    const int raw = std::system(("cd '" + dir + "' && '" + cli + "' " + args + " 2> err.txt > /dev/null").c_str());
    std::ifstream in(dir + "/err.txt");
    std::stringstream err;
    err << in.rdbuf();
    return std::make_pair(WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, err.str());
  };
  const std::string config = " --config '" + src + "/configs/fmnist_gaussian.yaml' ";
  ASSERT_EQ(run("ems -q" + config + "--samples 64 --grid 4 --out g.safetensors").first, 0);
  const std::string v3 = "generate -q" + config + "--set sampler.name=dpm_solver_v3 --set sampler.stats=g.safetensors "
                         "--set batch=2 --set output.png= --set output.npy=";
  ASSERT_EQ(run(v3 + "ok.npy").first, 0);
  EXPECT_TRUE(std::filesystem::exists(dir + "/ok.npy"));
  scorch::write_npy(dir + "/data.npy", at::randn({50, 1, 28, 28}));
  ASSERT_EQ(run("fit gaussian -q --data data.npy --out other.safetensors").first, 0);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--set schedule.beta_1=19", "sampler.stats: 'g.safetensors' holds the statistics of another schedule"},
      {"--set model.path=other.safetensors", "holds the statistics of another model_sha256"},
      {"--set sampler.t_end=0.0001", "the statistics cover lambda in ["},
  };
  for (const auto& [set, fragment] : cases) {
    const auto [status, err] = run(v3 + "bad.npy " + set);
    EXPECT_EQ(status, 2) << set << ": " << err;
    EXPECT_NE(err.find(fragment), std::string::npos) << set << ": " << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_FALSE(std::filesystem::exists(dir + "/bad.npy"));
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace scorch
