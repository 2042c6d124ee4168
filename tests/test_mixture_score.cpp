// The blocked CPU mixture kernel against the plain formulation, an independent
// per-component reference, and autograd.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <functional>
#include <tuple>
#include <vector>
#include <torch/csrc/autograd/autograd.h>

#include "scorch/mixture_score.h"
#include "support/gaussian_mixture.h"

namespace scorch {
namespace {

IsotropicMixture random_mixture(int64_t k, int64_t d, at::ScalarType type, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto o = at::TensorOptions().dtype(at::kDouble);
  IsotropicMixture m;
  m.means = at::randn({k, d}, gen, o).to(type);
  m.log_weights = at::log_softmax(at::randn({k}, gen, o), 0).to(type);
  m.variances = (at::rand({k}, gen, o) * 0.3).to(type);
  return m;
}

TEST(MixtureScore, BlockedMatchesReferenceAndPerComponentFormula) {
  const IsotropicMixture m = random_mixture(1000, 20, at::kDouble, 1);
  const at::Tensor x = at::randn({50, 20}, at::detail::createCPUGenerator(2), at::kDouble) * 2.0;
  for (auto [alpha, sigma] : {std::pair{0.99, 0.1}, {0.5, 0.87}, {1.0, 3.0}}) {
    const MixturePosterior a = mixture_posterior(m, x, alpha, sigma, 128);
    const MixturePosterior r = mixture_posterior_reference(m, x, alpha, sigma);
    EXPECT_LT((a.x0 - r.x0).abs().max().item<double>(), 1e-10);
    EXPECT_LT((a.log_density - r.log_density).abs().max().item<double>(), 1e-10);
    // independent: the diagonal-mixture helper with equal variances per coordinate
    testing::DiagonalMixture diag{m.log_weights.exp(), m.means, m.variances.unsqueeze(1).expand({1000, 20}).clone()};
    EXPECT_LT((a.x0 - testing::mixture_x0(diag, x, alpha, sigma)).abs().max().item<double>(), 1e-10);
  }
}

// The score (alpha x0 - x) / sigma^2 is the gradient of the log-density.
TEST(MixtureScore, ScoreIsGradientOfLogDensity) {
  const IsotropicMixture m = random_mixture(300, 6, at::kDouble, 3);
  const double alpha = 0.8, sigma = 0.6;
  const at::Tensor x = at::randn({10, 6}, at::detail::createCPUGenerator(4), at::kDouble).requires_grad_(true);
  const at::Tensor logp = mixture_posterior_reference(m, x, alpha, sigma).log_density;
  const at::Tensor grad = torch::autograd::grad({logp.sum()}, {x})[0];
  const at::Tensor x0 = mixture_posterior(m, x.detach(), alpha, sigma, 64).x0;
  const at::Tensor score = (alpha * x0 - x.detach()) / (sigma * sigma);
  EXPECT_LT((grad - score).abs().max().item<double>(), 1e-8 * (1 + score.abs().max().item<double>()));
}

// float32 with float64 running sums: no NaN far from every component, and close to float64.
TEST(MixtureScore, Float32IsStableAndAccurate) {
  const IsotropicMixture m64 = random_mixture(5000, 32, at::kDouble, 5);
  const IsotropicMixture m32{m64.means.to(at::kFloat), m64.log_weights.to(at::kFloat), m64.variances.to(at::kFloat)};
  const at::Tensor x64 = at::randn({64, 32}, at::detail::createCPUGenerator(6), at::kDouble);
  const MixturePosterior a = mixture_posterior(m32, x64.to(at::kFloat), 0.9, 0.4, 1024);
  const MixturePosterior r = mixture_posterior(m64, x64, 0.9, 0.4, 1024);
  EXPECT_LT((a.x0.to(at::kDouble) - r.x0).abs().max().item<double>(), 1e-4);
  const at::Tensor far = at::full({4, 32}, 1e3, at::kFloat);
  const MixturePosterior f = mixture_posterior(m32, far, 0.9, 0.01, 1024);
  EXPECT_TRUE(at::isfinite(f.x0).all().item<bool>());
  EXPECT_TRUE(at::isfinite(f.log_density).all().item<bool>());
}

// A float32 posterior on the GPU against the float64 CPU reference on fresh random inputs
// of several shapes (any D, partial tiles, small and large K), relative error below 1e-5,
// and no NaN for points far from every component. The tests using it skip without a GPU
// (tools/gpu_check.sh runs them).
void expect_cuda_matches_float64_reference(
    const std::function<MixturePosterior(const IsotropicMixture&, const at::Tensor&, double, double)>& posterior) {
  const auto cuda = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  for (const auto& [n, k, d] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {37, 1000, 20}, {256, 3000, 784}, {5, 10, 12288}, {1, 1, 1}, {300, 65, 33}}) {
    const IsotropicMixture m64 = random_mixture(k, d, at::kDouble, uint64_t(n + k + d));
    const IsotropicMixture m32{m64.means.to(cuda), m64.log_weights.to(cuda), m64.variances.to(cuda)};
    at::Tensor x = at::randn({n, d}, at::detail::createCPUGenerator(7), at::TensorOptions().dtype(at::kDouble)) * 2.0;
    x[0] = x[0] + 1e3;  // far from every component: the log-sum-exp must not overflow
    for (double t_alpha : {0.9, 0.3}) {
      const double alpha = t_alpha, sigma = std::sqrt(1 - alpha * alpha);
      const MixturePosterior ref = mixture_posterior_reference(m64, x, alpha, sigma);
      const MixturePosterior got = posterior(m32, x.to(cuda), alpha, sigma);
      const at::Tensor x0 = got.x0.to(at::kCPU).to(at::kDouble), lp = got.log_density.to(at::kCPU).to(at::kDouble);
      EXPECT_TRUE(at::isfinite(x0).all().item<bool>() && at::isfinite(lp).all().item<bool>()) << n << "x" << k << "x" << d;
      if (n == 1) continue;  // the far point: finite is what float32 can promise
      const at::Tensor e = x0.narrow(0, 1, n - 1), r = ref.x0.narrow(0, 1, n - 1);
      EXPECT_LT(((e - r).abs().max() / r.abs().max()).item<double>(), 1e-5) << n << "x" << k << "x" << d;
      const at::Tensor le = lp.narrow(0, 1, n - 1), lr = ref.log_density.narrow(0, 1, n - 1);
      EXPECT_LT(((le - lr).abs() / lr.abs().clamp_min(1.0)).max().item<double>(), 1e-5) << n << "x" << k << "x" << d;
    }
  }
}

TEST(MixtureScore, CudaKernelMatchesFloat64Reference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device (this LibTorch or machine has none)";
  expect_cuda_matches_float64_reference(
      [](const IsotropicMixture& m, const at::Tensor& x, double a, double s) { return mixture_posterior(m, x, a, s); });
}

// The blocked ATen formulation on a GPU (cuBLAS products, TF32 off as LibTorch's default).
TEST(MixtureScore, BlockedOnCudaMatchesFloat64Reference) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device (this LibTorch or machine has none)";
  expect_cuda_matches_float64_reference([](const IsotropicMixture& m, const at::Tensor& x, double a, double s) {
    return mixture_posterior_blocked(m, x, a, s, 256);
  });
}

}  // namespace
}  // namespace scorch
