#include "scorch/gaussian.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>
#include <filesystem>

#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/schedule.h"
#include "support/random_gaussian.h"

namespace scorch {
namespace {

double max_abs(const at::Tensor& a) { return a.abs().max().item<double>(); }

// E[x0 | x_t] against the textbook formula with the dense covariance:
// mu + alpha Sigma (alpha^2 Sigma + sigma^2 I)^{-1} (x_t - alpha mu).
TEST(Gaussian, PosteriorMeanMatchesDenseFormula) {
  const GaussianModel g = testing::random_gaussian(9, 4, 3);
  const at::Tensor cov = g.eigenvectors.mm(at::diag(g.eigenvalues)).mm(g.eigenvectors.t());
  const auto x = at::randn({5, 9}, at::detail::createCPUGenerator(4), at::TensorOptions().dtype(at::kDouble));
  for (auto [alpha, sigma] : {std::pair{0.99, 0.14}, {0.5, 0.866}, {1.0, 3.0}}) {
    const at::Tensor c = alpha * alpha * cov + sigma * sigma * at::eye(9, cov.options());
    const at::Tensor ref = g.mean + alpha * at::linalg_solve(c, (x - alpha * g.mean).t()).t().mm(cov);
    EXPECT_LT(max_abs(gaussian_x0(g, x, alpha, sigma) - ref), 1e-12);
  }
}

// The flow map solves the PF-ODE: composing s -> u -> t equals s -> t, and it
// agrees with a fine RK4 integration of dx/dlambda = sigma_t (x0 - ...) in the
// DPM-Solver form x_t = (sigma_t / sigma_s) x_s + ... (data-prediction ODE).
TEST(Gaussian, FlowMapComposesAndSolvesOde) {
  const GaussianModel g = testing::random_gaussian(7, 7, 5);
  const auto s = make_vp_linear();
  const auto x = at::randn({3, 7}, at::detail::createCPUGenerator(6), at::TensorOptions().dtype(at::kDouble));
  const double t0 = 1.0, t1 = 0.4, t2 = 0.01;
  auto flow = [&](const at::Tensor& xs, double a, double b) {
    return gaussian_flow(g, xs, s->alpha(a), s->sigma(a), s->alpha(b), s->sigma(b));
  };
  EXPECT_LT(max_abs(flow(flow(x, t0, t1), t1, t2) - flow(x, t0, t2)), 1e-12);
  // RK4 on dx/dlambda = alpha(lambda) x0(x, lambda) - x / (1 + e^{2 lambda}) ... in the
  // VE variable y = x / alpha with s~ = e^{-lambda}: dy/ds~ = (y - x0) / s~.
  const int n = 4000;
  at::Tensor y = x / s->alpha(t0);
  const double a = s->ve_sigma(t0), b = s->ve_sigma(t2);
  auto f = [&](const at::Tensor& yy, double sv) {
    const double t = s->t_of_ve_sigma(sv);
    return (yy - gaussian_x0(g, s->alpha(t) * yy, s->alpha(t), s->sigma(t))) / sv;
  };
  for (int i = 0; i < n; ++i) {
    // geometric steps in sigma~ resolve both ends
    const double s0 = a * std::pow(b / a, double(i) / n), s1 = a * std::pow(b / a, double(i + 1) / n), h = s1 - s0;
    const at::Tensor k1 = f(y, s0), k2 = f(y + 0.5 * h * k1, s0 + 0.5 * h), k3 = f(y + 0.5 * h * k2, s0 + 0.5 * h),
                     k4 = f(y + h * k3, s1);
    y = y + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4);
  }
  EXPECT_LT(max_abs(s->alpha(t2) * y - flow(x, t0, t2)), 1e-8);
}

TEST(Gaussian, SaveLoadRoundTripAndRank) {
  const GaussianModel g = testing::random_gaussian(12, 6, 7, {3, 4});
  const std::string path = (std::filesystem::temp_directory_path() / "scorch_test_gauss.safetensors").string();
  save_gaussian(path, g);
  const GaussianModel l = load_gaussian(path);
  EXPECT_EQ(l.shape, (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(max_abs(l.eigenvectors - g.eigenvectors), 0.0);
  const GaussianModel r = load_gaussian(path, 2);
  ASSERT_EQ(r.eigenvalues.size(0), 2);
  EXPECT_DOUBLE_EQ(r.eigenvalues[0].item<double>(), g.eigenvalues.max().item<double>());
  std::remove(path.c_str());
}

TEST(Gaussian, RejectsBadFiles) {
  const std::string path = (std::filesystem::temp_directory_path() / "scorch_test_bad.safetensors").string();
  GaussianModel g = testing::random_gaussian(6, 3, 8);
  g.eigenvectors = g.eigenvectors * 2.0;  // not orthonormal
  save_gaussian(path, g);
  EXPECT_THROW(load_gaussian(path), Error);
  g = testing::random_gaussian(6, 3, 8);
  g.eigenvalues[0] = std::nan("");
  save_gaussian(path, g);
  EXPECT_THROW(load_gaussian(path), Error);
  g = testing::random_gaussian(6, 3, 8, {2, 2});  // shape does not match D
  EXPECT_THROW(validate_gaussian(g, "test"), Error);
  EXPECT_THROW(load_gaussian("/nonexistent/model.safetensors"), Error);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace scorch

namespace scorch {
namespace {

// The closed-form score (alpha x0 - x) / sigma^2 = -eps / sigma equals the autograd
// gradient of the marginal log-density, under vp_linear, vp_discrete and edm; and
// the density matches the dense multivariate normal.
TEST(Gaussian, ScoreIsGradientOfLogDensity) {
  const GaussianModel g = testing::random_gaussian(7, 4, 61);  // rank 4 < D
  std::shared_ptr<const Schedule> schedules[] = {
      make_vp_linear(), make_vp_discrete(alphas_cumprod_from_betas(make_betas("linear", 1e-4, 0.02, 1000))),
      make_edm()};
  for (const auto& s : schedules) {
    for (double w : {0.1, 0.5, 0.9}) {
      const double t = s->t_min() + w * (s->t_max() - s->t_min());
      const double alpha = s->alpha(t), sigma = s->sigma(t);
      const at::Tensor x =
          (at::randn({5, 7}, at::detail::createCPUGenerator(62), at::TensorOptions().dtype(at::kDouble)) * (alpha + sigma))
              .requires_grad_(true);
      const at::Tensor logp = gaussian_log_density(g, x, alpha, sigma);
      const at::Tensor grad = torch::autograd::grad({logp.sum()}, {x})[0];
      const at::Tensor score = (alpha * gaussian_x0(g, x.detach(), alpha, sigma) - x.detach()) / (sigma * sigma);
      EXPECT_LT((grad - score).abs().max().item<double>(), 1e-8 * (1 + score.abs().max().item<double>()))
          << s->name() << " t=" << t;
      // dense reference: N(alpha mu, alpha^2 U diag(lam) U^T + sigma^2 I)
      const at::Tensor cov = alpha * alpha * g.eigenvectors.mm(at::diag(g.eigenvalues)).mm(g.eigenvectors.t()) +
                             sigma * sigma * at::eye(7, at::kDouble);
      const at::Tensor d = x.detach() - alpha * g.mean;
      const at::Tensor ref = -0.5 * (7 * std::log(2 * M_PI) + at::logdet(cov) +
                                     (d * at::linalg_solve(cov, d.t()).t()).sum(1));
      EXPECT_LT((logp.detach() - ref).abs().max().item<double>(), 1e-8) << s->name();
    }
  }
}

}  // namespace
}  // namespace scorch
