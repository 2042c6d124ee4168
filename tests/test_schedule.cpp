#include "scorch/schedule.h"

#include <gtest/gtest.h>

#include <cmath>

#include "scorch/time_grid.h"
#include <memory>

#include "scorch/error.h"

namespace scorch {
namespace {

std::vector<std::unique_ptr<Schedule>> all_schedules() {
  std::vector<std::unique_ptr<Schedule>> s;
  s.push_back(make_vp_linear(0.1, 20.0));
  s.push_back(make_vp_discrete(alphas_cumprod_from_betas(make_betas("linear", 1e-4, 0.02, 1000))));
  s.push_back(make_vp_discrete(alphas_cumprod_from_betas(make_betas("scaled_linear", 0.00085, 0.012, 1000))));
  s.push_back(make_vp_cosine());
  s.push_back(make_edm(0.002, 80.0));
  return s;
}

// t -> lambda -> t round trip to 1e-9 over the whole range, every schedule.
TEST(Schedule, LambdaRoundTrip) {
  for (const auto& s : all_schedules()) {
    for (int i = 0; i <= 200; ++i) {
      const double t = s->t_min() + (s->t_max() - s->t_min()) * i / 200.0;
      EXPECT_NEAR(s->inverse_lambda(s->lambda(t)), t, 1e-9 * std::max(1.0, t)) << s->name() << " t=" << t;
    }
  }
}

// lambda = log alpha - log sigma, and alpha^2 + sigma^2 = 1 for VP schedules.
TEST(Schedule, Consistency) {
  for (const auto& s : all_schedules()) {
    for (double w : {0.0, 0.3, 0.7, 1.0}) {
      const double t = s->t_min() + (s->t_max() - s->t_min()) * w;
      EXPECT_NEAR(s->lambda(t), s->log_alpha(t) - std::log(s->sigma(t)), 1e-12) << s->name();
      if (s->name() != "edm") EXPECT_NEAR(s->alpha(t) * s->alpha(t) + s->sigma(t) * s->sigma(t), 1.0, 1e-12);
      EXPECT_NEAR(s->t_of_ve_sigma(s->ve_sigma(t)), t, 1e-9 * std::max(1.0, t));
    }
  }
}

// The continuous VP schedule's closed form (Song et al. 2021, eq. 33).
TEST(Schedule, VpLinearClosedForm) {
  const auto s = make_vp_linear(0.1, 20.0);
  for (double t : {1e-3, 0.25, 0.5, 1.0}) {
    const double la = -0.25 * t * t * (20.0 - 0.1) - 0.5 * t * 0.1;
    EXPECT_DOUBLE_EQ(s->log_alpha(t), la);
    EXPECT_NEAR(s->sigma(t), std::sqrt(1.0 - std::exp(2 * la)), 1e-14);
  }
}

// The discrete schedule hits alphas_cumprod exactly at t_i = (i + 1) / N.
TEST(Schedule, VpDiscreteKeypoints) {
  const auto betas = make_betas("linear", 1e-4, 0.02, 1000);
  const auto acp = alphas_cumprod_from_betas(betas);
  const auto s = make_vp_discrete(acp);
  EXPECT_EQ(s->num_train_steps(), 1000);  // lambda(T) ~ -5.02 > -5.1: nothing clipped
  for (int i : {0, 1, 10, 500, 999}) EXPECT_NEAR(2.0 * s->log_alpha((i + 1) / 1000.0), std::log(acp[i]), 1e-12);
  EXPECT_NEAR(s->t_min(), 1e-3, 1e-15);
}

// numerical_clip_alpha: trailing entries with lambda < -5.1 are dropped.
TEST(Schedule, VpDiscreteClipsLowLambda) {
  std::vector<double> acp;
  for (int i = 0; i < 100; ++i) acp.push_back(std::exp(-0.2 * (i + 1)));  // lambda reaches -10
  const auto s = make_vp_discrete(acp);
  EXPECT_LT(s->num_train_steps(), 100);
  EXPECT_GE(s->lambda(s->t_max()), -5.1);
}

TEST(Schedule, CosineClippedAtLambdaMinus5_1) {
  const auto s = make_vp_cosine();
  EXPECT_NEAR(s->lambda(s->t_max()), -5.1, 1e-9);
  EXPECT_LT(s->t_max(), 1.0);
}

// diffusers' timestep_spacing on SD's schedule (1000 steps), written out from its formulas
// (DPMSolverMultistepScheduler.set_timesteps; trailing is Lin et al. 2024, Table 2).
TEST(Schedule, TimestepSpacingEqualsThePublishedFormulas) {
  EXPECT_EQ(spaced_timesteps("trailing", 1000, 10),
            (std::vector<double>{999, 899, 799, 699, 599, 499, 399, 299, 199, 99}));
  EXPECT_EQ(spaced_timesteps("linspace", 1000, 10),
            (std::vector<double>{999, 899, 799, 699, 599, 500, 400, 300, 200, 100}));
  EXPECT_EQ(spaced_timesteps("leading", 1000, 10),
            (std::vector<double>{900, 810, 720, 630, 540, 450, 360, 270, 180, 90}));
  for (int steps : {3, 7, 25, 50}) {
    const std::vector<double> tr = spaced_timesteps("trailing", 1000, steps);
    for (int i = 0; i < steps; ++i) EXPECT_EQ(tr[size_t(i)], std::round(1000.0 - i * 1000.0 / steps) - 1) << steps;
  }
  // On the grid: t = (k + 1) / N, then t_end (index 0 by default); skip_type auto follows the schedule.
  const auto sd = make_vp_discrete(alphas_cumprod_from_betas(make_betas("scaled_linear", 0.00085, 0.012, 1000)),
                                   "trailing");
  const std::vector<double> t = make_time_grid(*sd, {"auto", 10, -1, -1, 7.0});
  ASSERT_EQ(t.size(), 11u);
  EXPECT_DOUBLE_EQ(t[0], 1.0);
  EXPECT_DOUBLE_EQ(t[9], 100.0 / 1000);
  EXPECT_DOUBLE_EQ(t[10], 1.0 / 1000);
  EXPECT_THROW(make_time_grid(*make_vp_linear(), {"trailing", 10, -1, -1, 7.0}), Error);
  EXPECT_THROW(spaced_timesteps("middle", 1000, 10), Error);
  EXPECT_THROW(spaced_timesteps("trailing", 1000, 1000), Error);
  EXPECT_THROW(make_vp_discrete({0.9, 0.5}, "uniform"), Error);
}

// Zero terminal SNR (Lin et al. 2024, Alg. 1) on SD's scaled_linear betas, against the
// algorithm written out: sqrt(abar) shifted to end at 0 and scaled to keep its first value.
TEST(Schedule, ZeroTerminalSnrEqualsThePublishedAlgorithm) {
  const std::vector<double> betas = make_betas("scaled_linear", 0.00085, 0.012, 1000);
  std::vector<double> abar(betas.size());
  double prod = 1.0;
  for (size_t i = 0; i < betas.size(); ++i) abar[i] = prod *= 1.0 - betas[i];
  const double a0 = std::sqrt(abar.front()), aT = std::sqrt(abar.back());
  std::vector<double> ref(abar.size());
  for (size_t i = 0; i < abar.size(); ++i) {
    const double r = (std::sqrt(abar[i]) - aT) * a0 / (a0 - aT), r_prev = i ? ref[i - 1] : 1.0;
    ref[i] = r * r;
    const double beta_ref = 1.0 - ref[i] / (i ? r_prev : 1.0);
    EXPECT_NEAR(rescale_zero_terminal_snr(betas)[i], beta_ref, 1e-12) << i;
  }
  const std::vector<double> z = rescale_zero_terminal_snr(betas);
  EXPECT_EQ(z.back(), 1.0);
  EXPECT_NEAR(z.front(), betas.front(), 1e-15);
  const std::vector<double> acp = alphas_cumprod_from_betas(z);
  EXPECT_EQ(acp.back(), 0.0);
  for (size_t i = 0; i + 1 < acp.size(); ++i) EXPECT_NEAR(acp[i], ref[i], 1e-12) << i;
  // The schedule keeps every entry (no lambda clipping) and reaches alpha = 0 at t = 1.
  const auto s = make_vp_discrete(acp, "trailing");
  EXPECT_EQ(s->num_train_steps(), 1000);
  EXPECT_EQ(s->alpha(1.0), 0.0);
  EXPECT_EQ(s->sigma(1.0), 1.0);
  EXPECT_EQ(s->lambda(1.0), -INFINITY);
  EXPECT_NEAR(s->alpha(0.999), std::sqrt(acp[998]), 1e-15);
  for (double t : {0.9995, 0.5, 0.01}) EXPECT_NEAR(s->inverse_lambda(s->lambda(t)), t, 1e-9) << t;
}

TEST(Schedule, BadInput) {
  EXPECT_THROW(make_vp_linear(20.0, 0.1), Error);
  EXPECT_THROW(make_betas("quadratic", 1e-4, 0.02, 1000), Error);
  EXPECT_THROW(make_betas("linear", 1e-4, 0.02, 1), Error);
  EXPECT_THROW(alphas_cumprod_from_betas({0.1, 1.5}), Error);
  EXPECT_THROW(alphas_cumprod_from_betas({1.0, 0.5}), Error);  // only the last beta may be 1
  EXPECT_THROW(make_vp_discrete({0.9, 0.0, 0.0}), Error);      // only the last entry may be 0
  EXPECT_THROW(make_vp_discrete({0.9, 0.95}), Error);  // not decreasing
  EXPECT_THROW(make_edm(1.0, 0.5), Error);
  try {
    make_vp_linear(-1, 0);
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::BadInput);
  }
}

}  // namespace
}  // namespace scorch
