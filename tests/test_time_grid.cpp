#include "scorch/time_grid.h"

#include <gtest/gtest.h>

#include <cmath>

#include "scorch/error.h"

namespace scorch {
namespace {

TEST(TimeGrid, EndpointsAndMonotone) {
  const auto s = make_vp_linear();
  for (const auto& kind : skip_types()) {
    // flow_match: flow schedules only (test_flow.cpp); the timestep spacings: vp_discrete only (test_schedule.cpp)
    if (kind == "flow_match" || kind == "linspace" || kind == "leading" || kind == "trailing") continue;
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

}  // namespace
}  // namespace scorch
