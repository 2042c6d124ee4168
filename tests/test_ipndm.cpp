// iPNDM against exact references: exact for a constant noise prediction (every
// Adams-Bashforth order integrates a constant slope exactly), convergence on the
// Gaussian's closed-form flow in float64, lower error than euler, bad options.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <string>

#include "scorch/error.h"
#include "support/sampler_harness.h"

namespace scorch {
namespace {

using testing::rel_error;
using testing::run_sampler;

TEST(Ipndm, ExactForConstantNoisePrediction) {
  const testing::ConstantCase c;
  testing::ConstantModel model(c.c, /*is_x0=*/false, c.sched);
  for (const char* order : {"1", "2", "3", "4"}) {
    const testing::Run r = run_sampler("ipndm", model, *c.sched, c.x_T, {{"steps", "7"}, {"max_order", order}});
    EXPECT_LT(rel_error(r.x, c.exact(false)), 1e-12) << "max_order " << order;
    EXPECT_EQ(r.nfe, 7);
  }
}

// On the Gaussian target (8-d, vp_linear, logSNR grid, t_end 1e-3): max_order 1 is euler
// (first order); max_order 4 converges at least at second order (its first, Euler, step
// bounds the global order) and is far more accurate than euler at every step count.
TEST(Ipndm, ConvergesOnTheGaussianFlow) {
  const testing::Target c = testing::gaussian_target();
  auto err = [&](const char* order, int steps) {
    return rel_error(run_sampler("ipndm", *c.model, *c.sched, c.x_T,
                                 {{"steps", std::to_string(steps)}, {"max_order", order}, {"t_end", "0.001"}})
                         .x,
                     c.reference);
  };
  for (int n : {20, 40, 80}) {
    const double e1 = err("1", n), e1_next = err("1", 2 * n), e4 = err("4", n), e4_next = err("4", 2 * n);
    EXPECT_NEAR(e1 / e1_next, 2.0, 0.4) << n;  // first order
    EXPECT_GT(e4 / e4_next, 3.5) << n;          // at least second order
    EXPECT_LT(e4, e1 / 5) << n;                 // measured: 10x at 20 steps, 49x at 80
    const double euler = rel_error(
        run_sampler("euler", *c.model, *c.sched, c.x_T, {{"steps", std::to_string(n)}, {"t_end", "0.001"}}).x,
        c.reference);
    EXPECT_NEAR(e1, euler, 1e-12 + 1e-9 * euler) << "max_order 1 is euler";
  }
}

TEST(Ipndm, BadOptions) {
  const testing::ConstantCase c;
  testing::ConstantModel model(c.c, false, c.sched);
  for (const char* order : {"0", "5", "x"})
    EXPECT_THROW(run_sampler("ipndm", model, *c.sched, c.x_T, {{"max_order", order}}), Error) << order;
  EXPECT_THROW(run_sampler("ipndm", model, *c.sched, c.x_T, {{"order", "2"}}), Error);
}

}  // namespace
}  // namespace scorch
