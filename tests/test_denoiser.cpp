#include "scorch/denoiser.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "scorch/error.h"
#include "scorch/gaussian.h"
#include "scorch/schedule.h"
#include "support/random_gaussian.h"

namespace scorch {
namespace {

double max_abs(const at::Tensor& a) { return a.abs().max().item<double>(); }

// On the analytic Gaussian, in float64: whatever a model outputs (eps, x0, v or
// score), converting it back gives the same x0 and eps to 1e-10.
TEST(Denoiser, ConversionsAgreeOnAnalyticModel) {
  const GaussianModel g = testing::random_gaussian(12, 5, 1);
  std::shared_ptr<const Schedule> schedules[] = {make_vp_linear(), make_vp_cosine(), make_edm()};
  const auto x = at::randn({4, 12}, at::detail::createCPUGenerator(2), at::TensorOptions().dtype(at::kDouble));
  for (const auto& s : schedules) {
    for (double w : {0.05, 0.5, 0.95}) {
      const double t = s->t_min() + w * (s->t_max() - s->t_min());
      const double alpha = s->alpha(t), sigma = s->sigma(t);
      const at::Tensor xt = x * (alpha + sigma);
      const Prediction ref = make_gaussian_denoiser(g, s)->predict(xt, t, {});
      for (PredictionType type : {PredictionType::Eps, PredictionType::X0, PredictionType::V, PredictionType::Score}) {
        const at::Tensor out = to_model_output(type, ref, alpha, sigma);
        const Prediction p = from_model_output(type, out, xt, alpha, sigma);
        const double scale = 1.0 + max_abs(ref.x0) + max_abs(ref.eps);
        EXPECT_LT(max_abs(p.x0 - ref.x0), 1e-10 * scale) << s->name() << " " << to_string(type) << " t=" << t;
        EXPECT_LT(max_abs(p.eps - ref.eps), 1e-10 * scale) << s->name() << " " << to_string(type) << " t=" << t;
      }
      // The pair is consistent: x_t = alpha x0 + sigma eps.
      EXPECT_LT(max_abs(alpha * ref.x0 + sigma * ref.eps - xt), 1e-10 * (1 + max_abs(xt)));
    }
  }
}

// The definitions themselves, on numbers worked by hand.
TEST(Denoiser, ConversionFormulas) {
  const auto o = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor x = at::full({1}, 2.0, o), out = at::full({1}, 0.5, o);
  const double a = 0.6, s = 0.8;
  EXPECT_NEAR(from_model_output(PredictionType::Eps, out, x, a, s).x0.item<double>(), (2.0 - 0.8 * 0.5) / 0.6, 1e-15);
  EXPECT_NEAR(from_model_output(PredictionType::X0, out, x, a, s).eps.item<double>(), (2.0 - 0.6 * 0.5) / 0.8, 1e-15);
  EXPECT_NEAR(from_model_output(PredictionType::V, out, x, a, s).x0.item<double>(), 0.6 * 2.0 - 0.8 * 0.5, 1e-15);
  EXPECT_NEAR(from_model_output(PredictionType::Score, out, x, a, s).eps.item<double>(), -0.8 * 0.5, 1e-15);
}

TEST(Denoiser, ParsePredictionType) {
  EXPECT_EQ(parse_prediction_type("v"), PredictionType::V);
  EXPECT_THROW(parse_prediction_type("noise"), Error);
}

}  // namespace
}  // namespace scorch
