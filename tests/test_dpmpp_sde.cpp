// SDE-DPM-Solver++ 2M / 3M: eta = 0 reduces to the multistep ODE solvers exactly;
// eta = 1 samples the target.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "scorch/brownian.h"
#include "support/sampler_harness.h"

namespace scorch {
namespace {

using testing::run_sampler;

TEST(DpmppSde, Eta0IsDpmSolverPlusPlusMultistep) {
  testing::Target c = testing::gaussian_target();
  for (const char* solver_type : {"midpoint", "heun"}) {
    const at::Tensor sde = run_sampler("dpmpp_2m_sde", *c.model, *c.sched, c.x_T,
                                       {{"steps", "12"}, {"eta", "0"}, {"solver_type", solver_type}})
                               .x;
    const at::Tensor ode =
        run_sampler("dpm_solver", *c.model, *c.sched, c.x_T,
                    {{"steps", "12"}, {"order", "2"}, {"solver_type", std::string(solver_type) == "heun" ? "taylor" : "dpmsolver"}})
            .x;
    EXPECT_LT((sde - ode).abs().max().item<double>(), 1e-10) << solver_type;
  }
  // k-diffusion's 3M warms up with the taylor-form second-order step, without lower_order_final.
  const at::Tensor sde3 = run_sampler("dpmpp_3m_sde", *c.model, *c.sched, c.x_T, {{"steps", "8"}, {"eta", "0"}}).x;
  const at::Tensor ode3 = run_sampler("dpm_solver", *c.model, *c.sched, c.x_T,
                                      {{"steps", "8"}, {"order", "3"}, {"solver_type", "taylor"},
                                       {"lower_order_final", "false"}})
                              .x;
  EXPECT_LT((sde3 - ode3).abs().max().item<double>(), 1e-10);
}

// A 3-d Gaussian target and 20k starting points: the marginal tests' setup.
struct MarginalCase {
  GaussianModel g = testing::random_gaussian(3, 3, 21);
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  std::unique_ptr<Denoiser> model = make_gaussian_denoiser(g, sched);
  int64_t n = 20000;
  at::Tensor x_T = Rng(5).normal({n, 3}, at::TensorOptions().dtype(at::kDouble));
  // Mean and covariance of the samples against the target's, within `se` standard errors.
  void expect_moments(const at::Tensor& x, double se, const std::string& what) const {
    const at::Tensor ref_cov = g.eigenvectors.mm(at::diag(g.eigenvalues)).mm(g.eigenvectors.t());
    const at::Tensor mean = x.mean(0), cov = (x - mean).t().mm(x - mean) / double(n - 1);
    const double lmax = g.eigenvalues.max().item<double>();
    EXPECT_LT((mean - g.mean).abs().max().item<double>(), se * std::sqrt(lmax / n)) << what;
    EXPECT_LT((cov - ref_cov).abs().max().item<double>(), se * lmax * std::sqrt(2.0 / n) + 0.01) << what;
  }
};

TEST(DpmppSde, SamplesTargetAndIsSeeded) {
  const MarginalCase c;
  const auto& sched = c.sched;
  const auto& model = c.model;
  const at::Tensor& x_T = c.x_T;
  for (const char* name : {"dpmpp_2m_sde", "dpmpp_3m_sde"}) {
    const at::Tensor x = run_sampler(name, *model, *sched, x_T, {{"steps", "100"}}, 9).x;
    c.expect_moments(x, 5.0, name);
    const at::Tensor again = run_sampler(name, *model, *sched, x_T, {{"steps", "100"}}, 9).x;
    EXPECT_TRUE(at::equal(x, again)) << name;
  }
}

TEST(DpmppSde, NfeIsSteps) {
  testing::Target c = testing::gaussian_target();
  EXPECT_EQ(run_sampler("dpmpp_2m_sde", *c.model, *c.sched, c.x_T, {{"steps", "9"}}).nfe, 9);
  EXPECT_EQ(run_sampler("dpmpp_3m_sde", *c.model, *c.sched, c.x_T, {{"steps", "9"}}).nfe, 9);
}

// noise: brownian. One Brownian path per sample (seeds 0..n-1) over the run's noise levels.
at::Tensor run_brownian(const std::string& name, Denoiser& model, const Schedule& sched, const at::Tensor& x_T,
                        int steps, uint64_t first_seed = 0) {
  const SamplerEntry& entry = samplers().find(name);
  const Options o = parse_sampler_options(entry, {{"steps", std::to_string(steps)}, {"t_end", "0.001"}});
  const TimeGrid grid = build_time_grid(sched, grid_spec(o));
  std::vector<uint64_t> seeds;
  for (int64_t i = 0; i < x_T.size(0); ++i) seeds.push_back(first_seed + uint64_t(i));
  Rng rng = Rng::per_sample(seeds);
  SamplerContext ctx(model, sched, rng);
  ctx.set_brownian(std::make_shared<BrownianTree>(seeds, sched.ve_sigma(grid.t.back()), sched.ve_sigma(grid.t.front())));
  return entry.make(o)->run(ctx, x_T, grid);
}

// With the same Brownian path, more steps converge to one sample: on a Gaussian target the
// distance to the 400-step result halves as the steps double (strong order 1; with
// independent noise it does not shrink at all).
TEST(DpmppSde, BrownianNoiseConvergesAsStepsGrow) {
  const GaussianModel g = testing::random_gaussian(4, 4, 23);
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto model = make_gaussian_denoiser(g, sched);
  const at::Tensor x_T = Rng(6).normal({64, 4}, at::TensorOptions().dtype(at::kDouble));
  for (const char* name : {"dpmpp_2m_sde", "dpmpp_3m_sde", "euler_ancestral"}) {
    const at::Tensor fine = run_brownian(name, *model, *sched, x_T, 400);
    auto dist = [&](int steps) { return (run_brownian(name, *model, *sched, x_T, steps) - fine).norm().item<double>(); };
    const double d25 = dist(25), d50 = dist(50), d100 = dist(100);
    std::printf("%s: |x_25 - x_400| %.4g, |x_50 - x_400| %.4g, |x_100 - x_400| %.4g\n", name, d25, d50, d100);
    // first-order strong convergence: halving the step halves the distance (measured 2.0-2.3x)
    EXPECT_LT(d50, d25 / 1.6) << name;
    EXPECT_LT(d100, d50 / 1.6) << name;
    EXPECT_LT(d100, d25 / 4.0) << name;  // 4x the steps, 4x closer
    // independent noise: no convergence
    const at::Tensor a = testing::run_sampler(name, *model, *sched, x_T, {{"steps", "50"}, {"t_end", "0.001"}}, 3).x;
    const at::Tensor b = testing::run_sampler(name, *model, *sched, x_T, {{"steps", "400"}, {"t_end", "0.001"}}, 3).x;
    EXPECT_GT((a - b).norm().item<double>(), 3.0 * d50) << name;
  }
}

// The Brownian increments are standard normal: the sampled marginal stays the target's.
TEST(DpmppSde, BrownianNoiseKeepsTheMarginal) {
  const MarginalCase c;
  c.expect_moments(run_brownian("dpmpp_2m_sde", *c.model, *c.sched, c.x_T, 100, 1000), 3.0, "brownian");
  // the tree's own increments: mean 0, variance 1 over any interval
  const BrownianTree tree({1, 2, 3}, 0.01, 80.0);
  const at::Tensor z = tree.increment({3, 20000}, at::TensorOptions().dtype(at::kDouble), 0.5, 0.52);
  EXPECT_LT(z.mean().abs().item<double>(), 3.0 / std::sqrt(60000.0));
  EXPECT_NEAR(z.var().item<double>(), 1.0, 3.0 * std::sqrt(2.0 / 60000.0));
  // additivity: W(0.52) - W(0.5) + W(0.5) - W(0.3) = W(0.52) - W(0.3)
  const at::Tensor w3 = tree.value({3, 5}, 0.3), w5 = tree.value({3, 5}, 0.5), w52 = tree.value({3, 5}, 0.52);
  EXPECT_TRUE(at::allclose((w52 - w5) + (w5 - w3), w52 - w3, 0, 1e-12));
  EXPECT_TRUE(at::equal(tree.value({3, 5}, 0.5), w5));  // the same path every time
}

}  // namespace
}  // namespace scorch
