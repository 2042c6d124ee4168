// SDE-DPM-Solver++ 2M / 3M: eta = 0 reduces to the multistep ODE solvers exactly;
// eta = 1 samples the target.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

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

TEST(DpmppSde, SamplesTargetAndIsSeeded) {
  const GaussianModel g = testing::random_gaussian(3, 3, 21);
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto model = make_gaussian_denoiser(g, sched);
  const int64_t n = 20000;
  const at::Tensor x_T = Rng(5).normal({n, 3}, at::TensorOptions().dtype(at::kDouble));
  const at::Tensor ref_cov = g.eigenvectors.mm(at::diag(g.eigenvalues)).mm(g.eigenvectors.t());
  for (const char* name : {"dpmpp_2m_sde", "dpmpp_3m_sde"}) {
    const at::Tensor x = run_sampler(name, *model, *sched, x_T, {{"steps", "100"}}, 9).x;
    const at::Tensor mean = x.mean(0), cov = (x - mean).t().mm(x - mean) / double(n - 1);
    const double lmax = g.eigenvalues.max().item<double>();
    EXPECT_LT((mean - g.mean).abs().max().item<double>(), 5.0 * std::sqrt(lmax / n)) << name;
    EXPECT_LT((cov - ref_cov).abs().max().item<double>(), 5.0 * lmax * std::sqrt(2.0 / n) + 0.01) << name;
    const at::Tensor again = run_sampler(name, *model, *sched, x_T, {{"steps", "100"}}, 9).x;
    EXPECT_TRUE(at::equal(x, again)) << name;
  }
}

TEST(DpmppSde, NfeIsSteps) {
  testing::Target c = testing::gaussian_target();
  EXPECT_EQ(run_sampler("dpmpp_2m_sde", *c.model, *c.sched, c.x_T, {{"steps", "9"}}).nfe, 9);
  EXPECT_EQ(run_sampler("dpmpp_3m_sde", *c.model, *c.sched, c.x_T, {{"steps", "9"}}).nfe, 9);
}

}  // namespace
}  // namespace scorch
