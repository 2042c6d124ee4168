// LCM multistep sampling against an exact consistency model: for a Gaussian target the
// consistency function f(x_t, t) (the PF-ODE's end point from x_t) is known in closed form,
// so LCM's samples follow the target exactly at any step count.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "scorch/error.h"
#include "scorch/gaussian.h"
#include "scorch/rng.h"
#include "scorch/sampler.h"
#include "support/random_gaussian.h"
#include "support/sampler_harness.h"

namespace scorch {
namespace {

// x0 = the Gaussian PF-ODE flow map from (alpha_t, sigma_t) to the data (1, 0).
class GaussianConsistency final : public Denoiser {
 public:
  GaussianConsistency(GaussianModel g, std::shared_ptr<const Schedule> s) : g_(std::move(g)), s_(std::move(s)) {}
  Prediction predict(const at::Tensor& x, double t, const at::Tensor&) override {
    const double a = s_->alpha(t), sg = s_->sigma(t);
    const at::Tensor x0 = gaussian_flow(g_, x, a, sg, 1.0, 0.0);
    return {x0, (x - a * x0) / sg};
  }
  std::vector<int64_t> sample_shape() const override { return {g_.mean.size(0)}; }

 private:
  GaussianModel g_;
  std::shared_ptr<const Schedule> s_;
};

void expect_moments(const at::Tensor& x, const GaussianModel& g, const std::string& what) {
  const int64_t n = x.size(0);
  const at::Tensor mean = x.mean(0);
  const at::Tensor cov = (x - mean).t().mm(x - mean) / double(n - 1);
  const at::Tensor ref_cov = g.eigenvectors.mm(at::diag(g.eigenvalues)).mm(g.eigenvectors.t());
  const double lmax = g.eigenvalues.max().item<double>();
  EXPECT_LT((mean - g.mean).abs().max().item<double>(), 5.0 * std::sqrt(lmax / n) + 0.01) << what;
  EXPECT_LT((cov - ref_cov).abs().max().item<double>(), 5.0 * lmax * std::sqrt(2.0 / n) + 0.01) << what;
}

TEST(Lcm, ExactConsistencyModelSamplesTheTargetAtAnyStepCount) {
  const GaussianModel g = testing::random_gaussian(3, 3, 21);
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  GaussianConsistency model(g, sched);
  const at::Tensor x_T = Rng(5).normal({20000, 3}, at::TensorOptions().dtype(at::kDouble));
  for (int steps : {1, 2, 4}) {
    const auto r = testing::run_sampler("lcm", model, *sched, x_T, {{"steps", std::to_string(steps)}}, 9);
    EXPECT_EQ(r.nfe, steps);
    expect_moments(r.x, g, "lcm " + std::to_string(steps) + " steps");
  }
}

// One step of two is x0 re-noised to the next time with the sample's noise: the second
// step's input is alpha x0 + sigma z, checked through the second call's output.
TEST(Lcm, StepIsX0ReNoised) {
  const GaussianModel g = testing::random_gaussian(3, 3, 21);
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  GaussianConsistency model(g, sched);
  const at::Tensor x_T = Rng(5).normal({4, 3}, at::TensorOptions().dtype(at::kDouble));
  const auto one = testing::run_sampler("lcm", model, *sched, x_T, {{"steps", "1"}}, 9);
  const auto two = testing::run_sampler("lcm", model, *sched, x_T, {{"steps", "2"}}, 9);
  // The consistency function of a re-noised exact x0 is not x0 itself (fresh noise moves
  // it), so two steps differ from one, but both are exact samples (above).
  EXPECT_LT((one.x - gaussian_flow(g, x_T, sched->alpha(1.0), sched->sigma(1.0), 1.0, 0.0)).abs().max().item<double>(),
            1e-12);
  EXPECT_GT((one.x - two.x).abs().max().item<double>(), 1e-3);
}

// TCD: gamma = 0 is DDIM, gamma = 1 is LCM (the same draws). In between it needs a
// trajectory consistency function f(x_t, t, s) to any s; a consistency function to 0 (as
// here) makes the DDIM step to s leave the trajectory, so no moment test at gamma 0.3.
TEST(Tcd, GammaZeroIsDdimAndOneIsLcm) {
  const GaussianModel g = testing::random_gaussian(3, 3, 21);
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  GaussianConsistency model(g, sched);
  auto plain = make_gaussian_denoiser(g, sched);
  const at::Tensor x_T = Rng(5).normal({64, 3}, at::TensorOptions().dtype(at::kDouble));
  const auto ddim = testing::run_sampler("ddim", *plain, *sched, x_T, {{"steps", "6"}}, 9).x;
  const auto tcd0 = testing::run_sampler("tcd", *plain, *sched, x_T, {{"steps", "6"}, {"gamma", "0"}}, 9).x;
  EXPECT_LT((ddim - tcd0).abs().max().item<double>(), 1e-12);
  const auto lcm = testing::run_sampler("lcm", model, *sched, x_T, {{"steps", "4"}}, 9).x;
  const auto tcd1 = testing::run_sampler("tcd", model, *sched, x_T, {{"steps", "4"}, {"gamma", "1"}}, 9).x;
  EXPECT_LT((lcm - tcd1).abs().max().item<double>(), 1e-12);
  EXPECT_THROW(testing::run_sampler("tcd", model, *sched, x_T, {{"steps", "4"}, {"gamma", "1.5"}}, 9), Error);
}

}  // namespace
}  // namespace scorch
