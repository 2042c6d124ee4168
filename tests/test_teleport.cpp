// Teleportation: the exact Gaussian flow map, then an inner sampler.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/teleport.h"
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

// auto_rule departure: on the Gaussian itself the model never departs, so the jump reaches
// the last probe point; on a mixture it stops earlier; probes count as model calls.
TEST(Teleport, AutoSkipPoint) {
  TeleportCase c;
  const Opts o = {{"gaussian", c.path}, {"auto", "true"}, {"auto_rule", "departure"}, {"auto_probe", "64"},
                  {"probe_steps", "20"}, {"inner.name", "none"}, {"t_end", "0.001"}};
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

// A bimodal 8-d target and its moment-matched Gaussian: the Gaussian's flow departs from the
// mixture's at moderate noise, more the further the jump goes.
struct BimodalCase {
  at::TensorOptions f64 = at::TensorOptions().dtype(at::kDouble);
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  testing::DiagonalMixture mix{at::tensor({0.5, 0.5}, f64), at::stack({at::full({8}, -1.5, f64), at::full({8}, 1.5, f64)}),
                               at::full({2, 8}, 0.05, f64)};
  std::unique_ptr<Denoiser> model = testing::make_mixture_denoiser(mix, sched);
  GaussianModel fit;
  at::Tensor x_T = Rng(5).normal({64, 8}, f64) * sched->sigma(1.0);
  BimodalCase() {
    fit.mean = at::zeros({8}, f64);
    fit.eigenvectors = at::eye(8, f64);
    fit.eigenvalues = at::full({8}, 1.5 * 1.5 + 0.05, f64);  // each coordinate: the mixture's variance
    fit.shape = {8};
  }
  at::Tensor jump(const at::Tensor& x, double t_k) const {
    return gaussian_flow(fit, x, sched->alpha(1.0), sched->sigma(1.0), sched->alpha(t_k), sched->sigma(t_k));
  }
  std::vector<SkipEstimate> estimate(Denoiser& m, int inner_steps, const SkipSearch& search) const;
};

std::vector<SkipEstimate> BimodalCase::estimate(Denoiser& m, int inner_steps, const SkipSearch& search) const {
  Rng rng(0);
  SamplerContext ctx(m, *sched, rng);
  const SamplerEntry& e = samplers().find("dpmpp_2m");
  const std::unique_ptr<Sampler> inner = e.make(parse_sampler_options(e, {{"steps", std::to_string(inner_steps)}}));
  return estimate_skip_errors(ctx, x_T, {"logSNR", 12, -1, 1e-3, 7}, *inner, {"logSNR", inner_steps, -1, 1e-3, 7},
                              [&](const at::Tensor& x, double t_k) { return jump(x, t_k); }, search);
}

double rms_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).pow(2).mean().sqrt().item<double>(); }

// The skip rule's estimate of the error a jump causes (teleport.h) on a target whose answer
// is known: the exact error is the distance, at t_end, between the mixture's exact flow (RK4,
// 400 steps in lambda) started from the jumped state and from the true state at t_k. With
// 40 inner steps the estimate is within 3% of it at every candidate, and both grow
// monotonically as the skip point moves down (float64).
TEST(Teleport, SkipErrorEstimateIsMonotoneAndMatchesTheExactError) {
  BimodalCase c;
  SkipSearch search;
  search.candidates = 12;
  search.ref_steps = 8;
  const std::vector<SkipEstimate> est = c.estimate(*c.model, 40, search);
  ASSERT_EQ(est.size(), 12u);
  EXPECT_EQ(est[0].t, 1.0);
  EXPECT_EQ(est[0].jump_error, 0.0);
  double last_exact = 0.0;
  for (size_t k = 1; k < est.size(); ++k) {
    const at::Tensor true_state = testing::reference_solve(*c.model, *c.sched, c.x_T, 1.0, est[k].t, 400);
    const double exact = rms_diff(testing::reference_solve(*c.model, *c.sched, c.jump(c.x_T, est[k].t), est[k].t, 1e-3, 400),
                                  testing::reference_solve(*c.model, *c.sched, true_state, est[k].t, 1e-3, 400));
    std::printf("skip sigma %8.4f: estimated jump error %.5f, exact %.5f\n", est[k].sigma, est[k].jump_error, exact);
    EXPECT_NEAR(est[k].jump_error, exact, 0.03 * exact) << "candidate " << k;
    EXPECT_GE(est[k].jump_error, est[k - 1].jump_error) << "candidate " << k;
    EXPECT_GE(exact, last_exact) << "candidate " << k;
    last_exact = exact;
    EXPECT_GT(est[k].sigma, 0.0);
    EXPECT_LT(est[k].sigma, est[k - 1].sigma);
  }
  EXPECT_GT(est.back().jump_error, 0.1);  // jumping to the last point misses the modes
}

// The rule's choice: with few inner steps on the bimodal target the least total error is at
// an interior skip point, below the error of no jump; on the Gaussian itself (no jump error)
// it is the furthest candidate; the stop rule only drops candidates past twice the best.
TEST(Teleport, SkipRuleChoosesTheLeastTotalError) {
  BimodalCase c;
  SkipSearch search;
  search.candidates = 12;
  const std::vector<SkipEstimate> est = c.estimate(*c.model, 4, search);
  size_t best = 0;
  for (size_t k = 1; k < est.size(); ++k)
    if (est[k].total_error < est[best].total_error) best = k;
  EXPECT_GT(best, 0u);
  EXPECT_LT(best, est.size() - 1);
  EXPECT_LT(est[best].total_error, 0.8 * est[0].total_error);
  search.stop_ratio = 2.0;
  const std::vector<SkipEstimate> stopped = c.estimate(*c.model, 4, search);
  ASSERT_GT(stopped.size(), best);
  for (size_t k = 0; k < stopped.size(); ++k) EXPECT_EQ(stopped[k].total_error, est[k].total_error);
  if (stopped.size() < est.size()) EXPECT_GT(stopped.back().total_error, 2.0 * est[best].total_error);

  // On the Gaussian the jump is exact: its estimated share is only the reference's own
  // discretisation error, and the furthest jump leaves the inner steps the least to do.
  std::unique_ptr<Denoiser> gauss = make_gaussian_denoiser(c.fit, c.sched);
  search.stop_ratio = 0.0;
  search.ref_steps = 8;
  const std::vector<SkipEstimate> g = c.estimate(*gauss, 4, search);
  size_t g_best = 0;
  for (size_t k = 1; k < g.size(); ++k) {
    std::printf("Gaussian target, skip sigma %8.4f: total %.5f, jump %.2e\n", g[k].sigma, g[k].total_error, g[k].jump_error);
    EXPECT_LT(g[k].jump_error, 5e-3 * g[0].total_error) << "candidate " << k;
    if (g[k].total_error < g[g_best].total_error) g_best = k;
  }
  EXPECT_EQ(g_best, g.size() - 1);
}

// Through the sampler: auto (auto_rule error, the default) prints its choice and estimates,
// needs an inner sampler, and its result is teleport at the chosen point (the probe batch is
// its own noise, so sample i does not depend on the others).
TEST(Teleport, AutoRuleErrorThroughTheSampler) {
  BimodalCase c;
  TeleportCase files;
  save_gaussian(files.path, c.fit);
  const Opts o = {{"gaussian", files.path}, {"auto", "true"}, {"probe_steps", "12"}, {"steps", "4"}, {"t_end", "0.001"}};
  const SamplerEntry& entry = samplers().find("teleport");
  Rng rng(0);
  SamplerContext ctx(*c.model, *c.sched, rng);
  const Options opts = read_sampler_options(entry, testing::sampler_section(o), "sampler");
  const at::Tensor x = entry.make(opts)->run(ctx, c.x_T, build_time_grid(*c.sched, grid_spec(opts)));
  EXPECT_EQ(ctx.nfe(), 4);  // the probe's calls are reported in the note, not as the samples' calls
  std::string line;
  for (const std::string& n : ctx.notes())
    if (n.rfind("teleport: auto:", 0) == 0) line = n;
  ASSERT_FALSE(line.empty());
  EXPECT_NE(line.find("estimated RMS error of the result"), std::string::npos) << line;
  EXPECT_NE(line.find("probe: "), std::string::npos) << line;
  const double t_skip = std::stod(line.substr(line.find("(t ") + 3));
  Opts fixed = o;
  fixed.erase("auto");
  char exact[32];
  std::snprintf(exact, sizeof exact, "%.17g", t_skip);
  fixed["t_skip"] = exact;
  const at::Tensor again = run_sampler("teleport", *c.model, *c.sched, c.x_T, fixed).x;
  EXPECT_LT((x - again).abs().max().item<double>(), 1e-4) << line;  // t printed to 6 digits
  const at::Tensor half = entry.make(opts)->run(ctx, c.x_T.narrow(0, 0, 32), build_time_grid(*c.sched, grid_spec(opts)));
  EXPECT_LT((half - x.narrow(0, 0, 32)).abs().max().item<double>(), 1e-12);
  Opts none = o;
  none["inner.name"] = "none";
  EXPECT_THROW(run_sampler("teleport", *c.model, *c.sched, c.x_T, none), Error);
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
