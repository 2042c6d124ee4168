#include "scorch/time_grid.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "scorch/error.h"
#include "scorch/schedule.h"

namespace scorch {
namespace {

TEST(TimeGrid, EndpointsAndMonotone) {
  const auto s = make_vp_linear();
  for (const auto& kind : skip_types()) {
    // flow_match: flow schedules only (test_flow.cpp); the timestep spacings: vp_discrete only (test_schedule.cpp)
    // simple, sgm_uniform: training timesteps (vp_discrete or flow, below); custom: a list (below);
    // ays: its tables' own start (below); gits: searched with a model (test_gits.cpp)
    if (kind == "flow_match" || kind == "linspace" || kind == "leading" || kind == "trailing" || kind == "simple" ||
        kind == "sgm_uniform" || kind == "custom" || kind == "ddim_uniform" || kind == "ays" || kind == "gits")
      continue;
    const auto t = make_time_grid(*s, {kind, 17, -1, -1, 7.0});
    ASSERT_EQ(t.size(), 18u);
    EXPECT_DOUBLE_EQ(t.front(), 1.0);
    EXPECT_DOUBLE_EQ(t.back(), 1e-3);
    for (size_t i = 1; i < t.size(); ++i) EXPECT_LT(t[i], t[i - 1]) << kind;
  }
}

TEST(TimeGrid, LogSnrIsUniformInLambda) {
  const auto s = make_vp_linear();
  const auto t = make_time_grid(*s, {"logSNR", 10, 0.9, 1e-3, 7});
  const double h = s->lambda(t[1]) - s->lambda(t[0]);
  for (size_t i = 1; i < t.size(); ++i) EXPECT_NEAR(s->lambda(t[i]) - s->lambda(t[i - 1]), h, 1e-9);
}

TEST(TimeGrid, UniformAndQuadratic) {
  const auto s = make_vp_linear();
  const auto u = make_time_grid(*s, {"time_uniform", 4, 1.0, 0.2, 7});
  EXPECT_NEAR(u[1], 0.8, 1e-15);
  const auto q = make_time_grid(*s, {"time_quadratic", 2, 1.0, 0.25, 7});
  EXPECT_NEAR(q[1], 0.75 * 0.75, 1e-15);
}

// Karras et al. (2022) eq. 5 on the EDM schedule, where t = sigma.
TEST(TimeGrid, KarrasMatchesFormula) {
  const auto s = make_edm(0.002, 80.0);
  const int n = 18;
  const auto t = make_time_grid(*s, {"karras", n, -1, -1, 7.0});
  for (int i = 0; i <= n; ++i) {
    const double ref = std::pow(std::pow(80.0, 1 / 7.0) + i / double(n) * (std::pow(0.002, 1 / 7.0) - std::pow(80.0, 1 / 7.0)), 7.0);
    EXPECT_NEAR(t[i], ref, 1e-9 * ref);
  }
}

TEST(TimeGrid, BadInput) {
  const auto s = make_vp_linear();
  EXPECT_THROW(make_time_grid(*s, {"logSNR", 0, -1, -1, 7}), Error);
  EXPECT_THROW(make_time_grid(*s, {"logSNR", -3, -1, -1, 7}), Error);
  EXPECT_THROW(make_time_grid(*s, {"cosine", 10, -1, -1, 7}), Error);
  EXPECT_THROW(make_time_grid(*s, {"logSNR", 10, 0.1, 0.5, 7}), Error);  // t_start < t_end
  EXPECT_THROW(make_time_grid(*s, {"logSNR", 10, 2.0, 0.5, 7}), Error);  // beyond t_max
  EXPECT_THROW(make_time_grid(*s, {"karras", 10, -1, -1, 0.0}), Error);
}


// ComfyUI's schedulers (comfy/samplers.py), in the schedule's sigma: VE sigma/alpha, t on flow.
GridSpec comfy(const std::string& kind, int steps) {
  GridSpec g;
  g.skip_type = kind;
  g.steps = steps;
  return g;
}

// Align Your Steps on SD 1.5's schedule (scaled_linear 0.00085-0.012, sigma_max 14.6146): 10
// steps are the published table (the last point t_end); 4 and 20 steps its log-linear
// interpolation, computed here independently (np.interp of log sigma at uniform positions).
TEST(TimeGrid, AlignYourStepsTables) {
  const auto s = make_vp_discrete(alphas_cumprod_from_betas(make_betas("scaled_linear", 0.00085, 0.012, 1000)));
  const std::vector<double> sd1 = {14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092,
                                   0.9642583904, 0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582};
  const std::vector<double> sdxl = {14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141,
                                    0.5550693289, 0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582};
  for (const auto& [model, table] : {std::pair{std::string("SD1"), sd1}, std::pair{std::string("SDXL"), sdxl}})
    for (int n : {4, 10, 20}) {
      GridSpec g = comfy("ays", n);
      g.ays_model = model;
      const auto t = make_time_grid(*s, g);
      ASSERT_EQ(t.size(), size_t(n) + 1);
      EXPECT_EQ(t.back(), s->t_min());
      for (int i = 0; i < n; ++i) {
        // position i / n on the table's 10 intervals
        const double x = 10.0 * i / n;
        const int lo = std::min(int(std::floor(x)), 9);
        const double w = x - lo;
        const double want = std::exp(std::log(table[size_t(lo)]) * (1 - w) + std::log(table[size_t(lo) + 1]) * w);
        EXPECT_NEAR(s->ve_sigma(t[size_t(i)]) / want, 1.0, 1e-12) << model << " " << n << " " << i;
      }
    }
  // Bad input: the flow's sigma is t (14.6 is outside), a t_start, an unknown table.
  try {
    make_time_grid(*make_flow(1.0), comfy("ays", 10));
    ADD_FAILURE() << "ays on flow accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is outside this flow schedule"), std::string::npos) << e.what();
  }
  GridSpec bad = comfy("ays", 10);
  bad.t_start = 0.5;
  EXPECT_THROW(make_time_grid(*s, bad), Error);
  bad = comfy("ays", 10);
  bad.ays_model = "SD3";
  EXPECT_THROW(make_time_grid(*s, bad), Error);
  EXPECT_THROW(make_time_grid(*s, comfy("gits", 10)), Error);  // needs the search's times
}

TEST(TimeGrid, KlOptimalIsUniformInArctanSigma) {
  const auto s = make_vp_discrete(alphas_cumprod_from_betas(make_betas("scaled_linear", 0.00085, 0.012, 1000)));
  const auto t = make_time_grid(*s, comfy("kl_optimal", 12));
  const double a0 = std::atan(s->ve_sigma(t.front())), a1 = std::atan(s->ve_sigma(t.back()));
  for (size_t i = 0; i < t.size(); ++i)
    EXPECT_NEAR(std::atan(s->ve_sigma(t[i])), a0 + (a1 - a0) * double(i) / 12.0, 1e-9) << i;
}

// Movie Gen's linear-quadratic schedule on flow (sigma = t), 10 steps, threshold 0.025, 5
// linear steps: the values ComfyUI's linear_quadratic_schedule gives (computed from its
// formula in Python).
TEST(TimeGrid, LinearQuadraticOnFlow) {
  const auto s = make_flow(1.0);
  const auto t = make_time_grid(*s, comfy("linear_quadratic", 10));
  const std::vector<double> want = {1.0, 0.995, 0.99, 0.985, 0.98, 0.975, 0.932, 0.813, 0.618, 0.347, 0.0};
  ASSERT_EQ(t.size(), want.size());
  for (size_t i = 0; i < t.size(); ++i) EXPECT_NEAR(t[i], want[i], 1e-12) << i;
  GridSpec bad = comfy("linear_quadratic", 10);
  bad.linear_steps = 10;
  EXPECT_THROW(make_time_grid(*s, bad), Error);
}

// simple: every (N / steps)-th training timestep from the top; sgm_uniform on vp_discrete is
// uniform in t from 1 to the smallest timestep 1/N; both end at t_end.
TEST(TimeGrid, SimpleAndSgmUniformUseTheTrainingTimesteps) {
  const auto s = make_vp_discrete(alphas_cumprod_from_betas(make_betas("linear", 1e-4, 0.02, 1000)));
  const auto t = make_time_grid(*s, comfy("simple", 8));
  ASSERT_EQ(t.size(), 9u);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(t[size_t(i)], 1.0 - std::floor(i * 1000.0 / 8.0) / 1000.0, 1e-12) << i;
  EXPECT_DOUBLE_EQ(t.back(), s->t_min());
  const auto u = make_time_grid(*s, comfy("sgm_uniform", 8));
  const auto v = make_time_grid(*s, comfy("time_uniform", 8));
  for (size_t i = 0; i < u.size(); ++i) EXPECT_NEAR(u[i], v[i], 1e-12);
  EXPECT_THROW(make_time_grid(*make_vp_linear(), comfy("simple", 8)), Error);
}

// ddim_uniform: timesteps 1, 1 + c, ... below N (c = N / steps), from the top, then t_end;
// its own step count (ComfyUI's: 1000 and 30 give 31 steps).
TEST(TimeGrid, DdimUniformKeepsComfyUisCount) {
  const auto s = make_vp_discrete(alphas_cumprod_from_betas(make_betas("linear", 1e-4, 0.02, 1000)));
  const auto t = make_time_grid(*s, comfy("ddim_uniform", 20));
  ASSERT_EQ(t.size(), 21u);
  for (int i = 0; i < 20; ++i) EXPECT_NEAR(t[size_t(i)], (951.0 - 50.0 * i + 1.0) / 1000.0, 1e-12) << i;
  EXPECT_DOUBLE_EQ(t.back(), s->t_min());
  EXPECT_EQ(make_time_grid(*s, comfy("ddim_uniform", 30)).size(), 32u);
  EXPECT_EQ(build_time_grid(*s, comfy("ddim_uniform", 30)).steps(), 31);
  EXPECT_THROW(make_time_grid(*make_vp_linear(), comfy("ddim_uniform", 8)), Error);
}

TEST(TimeGrid, BetaQuantilesAndGrid) {
  EXPECT_NEAR(beta_distribution_quantile(0.5, 0.6, 0.6), 0.5, 1e-12);         // symmetric
  EXPECT_NEAR(beta_distribution_quantile(0.3, 1.0, 1.0), 0.3, 1e-12);         // uniform
  EXPECT_NEAR(beta_distribution_quantile(0.104, 2.0, 2.0), 0.2, 1e-12);       // CDF 3x^2 - 2x^3
  EXPECT_NEAR(beta_distribution_quantile(1.0 - 0.64, 1.0, 2.0), 0.2, 1e-12);  // CDF 1 - (1 - x)^2
  const auto s = make_flow(1.0);
  const auto t = make_time_grid(*s, comfy("beta", 10));
  for (int i = 1; i < 10; ++i)
    EXPECT_NEAR(t[size_t(i)], beta_distribution_quantile(1.0 - i / 10.0, 0.6, 0.6), 1e-12) << i;
  for (size_t i = 1; i < t.size(); ++i) EXPECT_LT(t[i], t[i - 1]);
}

TEST(TimeGrid, CustomSigmasTimestepsAndSplit) {
  const auto s = make_vp_discrete(alphas_cumprod_from_betas(make_betas("linear", 1e-4, 0.02, 1000)));
  GridSpec g;
  g.sigmas = {14.0, 5.0, 1.0, 0.1, 0.0};
  const auto t = make_time_grid(*s, g);
  ASSERT_EQ(t.size(), 5u);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(s->ve_sigma(t[i]), g.sigmas[i], 1e-9 * g.sigmas[i]);
  EXPECT_DOUBLE_EQ(t.back(), s->t_min());
  GridSpec k;
  k.timesteps = {999, 500, 100, 0};
  const auto tk = make_time_grid(*s, k);
  const std::vector<double> want = {1.0, 0.501, 0.101, 0.001};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(tk[i], want[i], 1e-12);
  GridSpec up;
  up.sigmas = {1.0, 5.0};
  EXPECT_THROW(make_time_grid(*s, up), Error);
  GridSpec both = g;
  both.timesteps = k.timesteps;
  EXPECT_THROW(make_time_grid(*s, both), Error);
  // Split: the high part's last point is the low part's first; together the whole grid.
  GridSpec whole = comfy("karras", 10);
  const auto all = make_time_grid(*s, whole);
  GridSpec hi = whole, lo = whole;
  hi.split = lo.split = 4;
  hi.part = "high";
  lo.part = "low";
  const auto th = make_time_grid(*s, hi), tl = make_time_grid(*s, lo);
  ASSERT_EQ(th.size(), 5u);
  ASSERT_EQ(tl.size(), 7u);
  for (size_t i = 0; i < th.size(); ++i) EXPECT_EQ(th[i], all[i]);
  for (size_t i = 0; i < tl.size(); ++i) EXPECT_EQ(tl[i], all[i + 4]);
  hi.split = 10;
  EXPECT_THROW(make_time_grid(*s, hi), Error);
}

}  // namespace
}  // namespace scorch
