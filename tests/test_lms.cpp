// lms (k-diffusion's linear multistep) against exact references: exact for a constant noise
// prediction, equal to iPNDM's equal-step Adams-Bashforth on an equally spaced grid (where
// the Lagrange integrals are those coefficients), order 1 is euler, convergence on the
// Gaussian's closed-form flow, the flow schedule from t = 1 to 0, bad options.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "scorch/error.h"
#include "support/sampler_harness.h"

namespace scorch {
namespace {

using testing::rel_error;
using testing::run_sampler;

TEST(Lms, ExactForConstantNoisePrediction) {
  const testing::ConstantCase c;
  testing::ConstantModel model(c.c, /*is_x0=*/false, c.sched);
  for (const char* order : {"1", "2", "3", "4"}) {
    const testing::Run r = run_sampler("lms", model, *c.sched, c.x_T, {{"steps", "7"}, {"order", order}});
    EXPECT_LT(rel_error(r.x, c.exact(false)), 1e-12) << "order " << order;
    EXPECT_EQ(r.nfe, 7);
  }
}

// On EDM with a time_uniform grid the VE sigma steps are equal: lms is then iPNDM exactly.
TEST(Lms, EqualStepsAreAdamsBashforth) {
  std::shared_ptr<const Schedule> edm = make_edm();
  const GaussianModel g = testing::random_gaussian(8, 8, 11);
  auto model = make_gaussian_denoiser(g, edm);
  const at::Tensor x = at::randn({16, 8}, at::detail::createCPUGenerator(12), at::TensorOptions().dtype(at::kDouble)) * 80.0;
  for (const char* order : {"1", "2", "3", "4"}) {
    const at::Tensor a = run_sampler("lms", *model, *edm, x, {{"steps", "12"}, {"order", order}, {"skip_type", "time_uniform"}}).x;
    const at::Tensor b =
        run_sampler("ipndm", *model, *edm, x, {{"steps", "12"}, {"max_order", order}, {"skip_type", "time_uniform"}}).x;
    EXPECT_LT((a - b).abs().max().item<double>(), 1e-10 * (1 + b.abs().max().item<double>())) << "order " << order;
  }
}

// vp_linear, logSNR grid, 8-d Gaussian: order 1 is euler, and order k converges at order k
// (the variable-step coefficients keep it on this geometric grid): measured 1.00, 1.97, 2.92,
// 3.85 from 160 to 320 steps. From 40 steps on, every order >= 2 is below euler's error.
TEST(Lms, ConvergesAtItsOrderOnTheGaussianFlow) {
  const testing::Target c = testing::gaussian_target();
  auto err = [&](const std::string& name, const char* key, const char* order, int steps) {
    return rel_error(run_sampler(name, *c.model, *c.sched, c.x_T,
                                 {{"steps", std::to_string(steps)}, {key, order}, {"t_end", "0.001"}})
                         .x,
                     c.reference);
  };
  for (int n : {20, 40, 80}) EXPECT_NEAR(err("lms", "order", "1", n), err("euler", "s_churn", "0", n), 1e-12);
  const char* orders[] = {"1", "2", "3", "4"};
  for (int k = 1; k <= 4; ++k) {
    const double p = std::log2(err("lms", "order", orders[k - 1], 160) / err("lms", "order", orders[k - 1], 320));
    EXPECT_NEAR(p, k, 0.3) << "order " << k;
    if (k > 1)
      for (int n : {40, 80}) EXPECT_LT(err("lms", "order", orders[k - 1], n), err("euler", "s_churn", "0", n)) << k;
  }
}

// On flow lms steps in t on x from t = 1 to t = 0 and approaches the exact map.
TEST(Lms, FlowFromNoiseToData) {
  std::shared_ptr<const Schedule> flow = make_flow(3.0);
  const GaussianModel g = testing::random_gaussian(8, 8, 11);
  auto model = make_gaussian_denoiser(g, flow);
  const at::Tensor x = at::randn({16, 8}, at::detail::createCPUGenerator(12), at::TensorOptions().dtype(at::kDouble));
  const at::Tensor exact = gaussian_flow(g, x, 0.0, 1.0, 1.0, 0.0);
  double prev = 1e9;
  for (int n : {16, 32, 64}) {
    const at::Tensor y = run_sampler("lms", *model, *flow, x, {{"steps", std::to_string(n)}, {"skip_type", "time_uniform"}}).x;
    ASSERT_TRUE(at::isfinite(y).all().item<bool>());
    const double e = rel_error(y, exact);
    EXPECT_LT(e, prev / 3.4) << n;
    prev = e;
  }
}

TEST(Lms, BadOptions) {
  const testing::Target c = testing::gaussian_target();
  for (const char* order : {"0", "5", "-1"})
    EXPECT_THROW(run_sampler("lms", *c.model, *c.sched, c.x_T, {{"order", order}}), Error) << order;
}

}  // namespace
}  // namespace scorch
