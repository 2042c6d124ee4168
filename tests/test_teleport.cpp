// Teleportation: the exact Gaussian flow map, then an inner sampler.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "scorch/error.h"
#include "scorch/io.h"
#include "support/sampler_harness.h"

namespace fs = std::filesystem;

namespace scorch {
namespace {

using testing::rel_error;
using testing::run_sampler;
using Opts = std::map<std::string, std::string>;

struct TeleportCase {
  GaussianModel g = testing::random_gaussian(8, 5, 51);  // rank 5 < D: a part outside the span
  std::string path = (fs::temp_directory_path() / "scorch_teleport_gauss.safetensors").string();
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  std::unique_ptr<Denoiser> model = make_gaussian_denoiser(g, sched);
  at::Tensor x_T = Rng(3).normal({16, 8}, at::TensorOptions().dtype(at::kDouble));
  TeleportCase() { save_gaussian(path, g); }
  ~TeleportCase() { fs::remove(path); }
  at::Tensor flow(double t0, double t1) const {
    return gaussian_flow(g, x_T, sched->alpha(t0), sched->sigma(t0), sched->alpha(t1), sched->sigma(t1));
  }
};

// With no inner sampler teleport is the exact flow map.
TEST(Teleport, ZeroInnerStepsIsTheFlowMap) {
  TeleportCase c;
  const testing::Run r =
      run_sampler("teleport", *c.model, *c.sched, c.x_T, {{"gaussian", c.path}, {"t_skip", "0.3"}, {"inner.name", "none"}});
  EXPECT_LT((r.x - c.flow(1.0, 0.3)).abs().max().item<double>(), 1e-12);
  EXPECT_EQ(r.nfe, 0);
}

// Class-conditional teleport (a file from fit gaussian --labels): with zero inner steps each
// labelled sample lands where its own class's exact Gaussian flow map takes it, and a sample
// with the null label (or no labels at all) where the whole data's map takes it (float64).
TEST(Teleport, EachClassJumpsWithItsOwnGaussian) {
  TeleportCase c;
  const std::vector<GaussianModel> classes = {testing::random_gaussian(8, 6, 61), testing::random_gaussian(8, 6, 62),
                                              testing::random_gaussian(8, 6, 63)};
  save_class_gaussians(c.path, c.g, classes);
  ASSERT_EQ(load_class_gaussians(c.path).size(), 3u);
  const at::Tensor labels = at::tensor({0, 1, 2, 3, 2, 1, 0, 0, 1, 2, 3, 3, 0, 1, 2, 0}, at::kLong);  // 3: the null label
  const SamplerEntry& entry = samplers().find("teleport");
  const Options o = read_sampler_options(entry, testing::sampler_section({{"gaussian", c.path}, {"t_skip", "0.3"},
                                                                          {"inner.name", "none"}}), "sampler");
  Rng rng(0);
  SamplerContext ctx(*c.model, *c.sched, rng, labels);
  const at::Tensor x = entry.make(o)->run(ctx, c.x_T, build_time_grid(*c.sched, grid_spec(o)));
  const double a0 = c.sched->alpha(1.0), s0 = c.sched->sigma(1.0), a1 = c.sched->alpha(0.3), s1 = c.sched->sigma(0.3);
  for (int64_t i = 0; i < labels.size(0); ++i) {
    const int64_t k = labels[i].item<int64_t>();
    const GaussianModel& g = k < 3 ? classes[size_t(k)] : c.g;
    const at::Tensor exact = gaussian_flow(g, c.x_T.narrow(0, i, 1), a0, s0, a1, s1);
    EXPECT_LT((x.narrow(0, i, 1) - exact).abs().max().item<double>(), 1e-12) << "sample " << i << ", label " << k;
  }
  // without labels: the whole data's Gaussian for every sample
  const at::Tensor plain =
      run_sampler("teleport", *c.model, *c.sched, c.x_T, {{"gaussian", c.path}, {"t_skip", "0.3"}, {"inner.name", "none"}}).x;
  EXPECT_LT((plain - c.flow(1.0, 0.3)).abs().max().item<double>(), 1e-12);
}

// The GMM warm start integrates the mixture's own probability-flow ODE to the skip point
// (no network call, NFE 0): against an RK4 reference of that ODE (float64) its error falls
// at third order in warm_steps (dpmpp_3m), measured from 24 to 96 steps.
TEST(Teleport, GmmWarmStartConvergesToTheMixturesFlow) {
  const GaussianMixture mix = testing::random_gmm(Covariance::LowRank, 71, 4, 8, 3);
  const std::string path = (fs::temp_directory_path() / ("scorch_warm_" + std::to_string(::getpid()) + ".safetensors")).string();
  save_gmm(path, mix, {8});
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  MixtureModel stored = load_mixture_model(path, "gmm");  // the file's float32 parameters, in float64
  stored.mixture = stored.mixture.to(at::TensorOptions().dtype(at::kDouble));
  std::unique_ptr<Denoiser> cheap = make_mixture_denoiser(stored, sched);
  const at::Tensor x_T = Rng(9).normal({32, 8}, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor ref = testing::reference_solve(*cheap, *sched, x_T, 1.0, 0.3, 4000);
  const auto run = [&](int steps) {
    return run_sampler("teleport", *cheap, *sched, x_T,
                       {{"warm_model", path}, {"warm_steps", std::to_string(steps)}, {"t_skip", "0.3"}, {"inner.name", "none"}});
  };
  EXPECT_EQ(run(24).nfe, 0);
  const double e24 = rel_error(run(24).x, ref), e96 = rel_error(run(96).x, ref);
  const double order = std::log2(e24 / e96) / 2.0;
  std::printf("warm start: error %.3g at 24 steps, %.3g at 96, order %.2f\n", e24, e96, order);
  EXPECT_GT(order, 1.8);  // dpmpp_3m's measured order on a mixture is 2-3 (docs/dpm_solver_v3.md)
  EXPECT_LT(e96, 1e-4);
  // a mixture of another dimension is refused
  save_gmm(path, testing::random_gmm(Covariance::Diagonal, 72, 3, 5), {5});
  EXPECT_THROW(run(10), Error);
  fs::remove(path);
}

// A 2000-step DPM-Solver++ order 3 run from t = 1 to t_skip agrees with the map to 1e-6.
TEST(Teleport, MatchesAFineSolverRun) {
  TeleportCase c;
  const at::Tensor jump =
      run_sampler("teleport", *c.model, *c.sched, c.x_T, {{"gaussian", c.path}, {"t_skip", "0.3"}, {"inner.name", "none"}}).x;
  const at::Tensor solved =
      run_sampler("dpm_solver", *c.model, *c.sched, c.x_T,
                  {{"order", "3"}, {"steps", "2000"}, {"t_end", "0.3"}, {"algorithm_type", "dpmsolver++"}})
          .x;
  EXPECT_LT(rel_error(solved, jump), 1e-6);
}

// Teleport then an inner sampler to t_end: on the Gaussian target the result is the
// exact solution up to the inner solver's error, with its NFE.
TEST(Teleport, InnerSamplerFinishesTheRun) {
  TeleportCase c;
  const testing::Run r = run_sampler(
      "teleport", *c.model, *c.sched, c.x_T,
      {{"gaussian", c.path}, {"sigma_skip", "1.0"}, {"inner.name", "dpmpp_2m"}, {"steps", "30"}, {"t_end", "0.001"}});
  EXPECT_EQ(r.nfe, 30);  // the wrapper's steps are the inner sampler's
  EXPECT_LT(rel_error(r.x, c.flow(1.0, 1e-3)), 2e-3);
  // skip_fraction = 1 jumps all the way.
  const at::Tensor all = run_sampler("teleport", *c.model, *c.sched, c.x_T,
                                     {{"gaussian", c.path}, {"skip_fraction", "1"}, {"t_end", "0.001"}})
                             .x;
  EXPECT_LT((all - c.flow(1.0, 1e-3)).abs().max().item<double>(), 1e-12);
}

// auto: on the Gaussian itself the model never departs, so the jump reaches the last
// probe point; on a mixture it stops earlier; probes count as model calls.
TEST(Teleport, AutoSkipPoint) {
  TeleportCase c;
  const Opts o = {{"gaussian", c.path}, {"auto", "true"}, {"probe_steps", "20"}, {"inner.name", "none"}, {"t_end", "0.001"}};
  const testing::Run gauss = run_sampler("teleport", *c.model, *c.sched, c.x_T, o);
  EXPECT_EQ(gauss.nfe, 19);
  const auto grid = make_time_grid(*c.sched, {"logSNR", 20, -1, 0.001, 7});
  EXPECT_LT((gauss.x - c.flow(1.0, grid[19])).abs().max().item<double>(), 1e-12);

  // A bimodal target whose Gaussian fit departs from it at moderate noise.
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  testing::DiagonalMixture mix{at::tensor({0.5, 0.5}, f64), at::stack({at::full({8}, -1.5, f64), at::full({8}, 1.5, f64)}),
                               at::full({2, 8}, 0.05, f64)};
  GaussianModel fit;
  fit.mean = at::zeros({8}, f64);
  fit.eigenvectors = at::eye(8, f64);
  fit.eigenvalues = at::full({8}, 1.5 * 1.5 + 0.05, f64);  // each coordinate: the mixture's variance
  fit.shape = {8};
  save_gaussian(c.path, fit);
  auto mixture = testing::make_mixture_denoiser(mix, c.sched);
  const testing::Run m = run_sampler("teleport", *mixture, *c.sched, c.x_T, o);
  EXPECT_GT(m.nfe, 1);
  EXPECT_LT(m.nfe, 19);
}

// One meaning of steps: `steps` inner steps from the skip point whatever the skip point,
// on the wrapper's skip_type; the same run as the inner sampler alone from the jumped state.
TEST(Teleport, StepsAreTheInnerSamplersSteps) {
  TeleportCase c;
  for (const char* steps : {"3", "5", "8"}) {
    const testing::Run r = run_sampler("teleport", *c.model, *c.sched, c.x_T,
                                       {{"gaussian", c.path}, {"sigma_skip", "2"}, {"steps", steps},
                                        {"skip_type", "time_uniform"}, {"inner.name", "dpmpp_2m"}});
    EXPECT_EQ(r.nfe, std::stoi(steps));
    const double t_skip = c.sched->t_of_ve_sigma(2.0);
    const at::Tensor jumped = gaussian_flow(c.g, c.x_T, c.sched->alpha(1.0), c.sched->sigma(1.0),
                                            c.sched->alpha(t_skip), c.sched->sigma(t_skip));
    char exact[32];
    std::snprintf(exact, sizeof exact, "%.17g", t_skip);
    const testing::Run inner = run_sampler("dpmpp_2m", *c.model, *c.sched, jumped,
                                           {{"steps", steps}, {"skip_type", "time_uniform"}, {"t_start", exact}});
    EXPECT_LT((r.x - inner.x).abs().max().item<double>(), 1e-12) << steps;
  }
}

TEST(Teleport, BadOptions) {
  TeleportCase c;
  auto bad = [&](const Opts& o) { EXPECT_THROW(run_sampler("teleport", *c.model, *c.sched, c.x_T, o), Error); };
  bad({{"t_skip", "0.3"}});                                         // no gaussian
  bad({{"gaussian", c.path}});                                      // no skip point
  bad({{"gaussian", c.path}, {"t_skip", "0.3"}, {"sigma_skip", "1"}});  // two skip points
  bad({{"gaussian", c.path}, {"t_skip", "2.0"}});                   // outside the grid
  bad({{"gaussian", c.path}, {"skip_fraction", "1.5"}});
  bad({{"gaussian", c.path}, {"t_skip", "0.3"}, {"inner.name", "teleport"}});
  bad({{"gaussian", c.path}, {"t_skip", "0.3"}, {"inner.name", "nope"}});
  bad({{"gaussian", c.path}, {"t_skip", "0.3"}, {"inner.etaa", "1"}});
  bad({{"gaussian", c.path}, {"t_skip", "0.3"}, {"inner.steps", "5"}});     // the grid is the wrapper's
  bad({{"gaussian", c.path}, {"t_skip", "0.3"}, {"inner.skip_type", "karras"}});
  bad({{"gaussian", c.path}, {"auto", "true"}, {"probe_steps", "0"}});
  bad({{"gaussian", c.path}, {"auto", "true"}, {"auto_probe", "0"}});
  bad({{"gaussian", "/nonexistent.safetensors"}, {"t_skip", "0.3"}});
  const GaussianModel small = testing::random_gaussian(4, 4, 1);
  save_gaussian(c.path, small);
  bad({{"gaussian", c.path}, {"t_skip", "0.3"}});                   // D mismatch
}

}  // namespace
}  // namespace scorch
