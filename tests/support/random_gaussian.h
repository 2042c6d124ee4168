// Test helpers: random Gaussian and Gaussian-mixture models in float64 (orthonormal
// eigenvectors from a QR), their dense covariances, and exact samples.
#pragma once

#include <ATen/ATen.h>

#include "scorch/gaussian.h"
#include "scorch/mixture_model.h"

namespace scorch::testing {

inline GaussianModel random_gaussian(int64_t d, int64_t r, uint64_t seed, std::vector<int64_t> shape = {}) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  GaussianModel m;
  m.mean = at::randn({d}, gen, f64);
  m.eigenvalues = at::rand({r}, gen, f64) * 2.0 + 0.05;
  m.eigenvectors = std::get<0>(at::linalg_qr(at::randn({d, r}, gen, f64)));
  m.shape = shape.empty() ? std::vector<int64_t>{d} : shape;
  return m;
}

inline const auto kF64 = at::TensorOptions().dtype(at::kDouble);

// The diagonal Gaussian (independent coordinates) of samples [2, 3] that the gaussian_eps /
// gaussian_energy TorchScript fixtures compute (tools/scripts/make_test_models.py).
inline GaussianModel diagonal_gaussian() {
  GaussianModel g;
  g.mean = at::tensor({0.5, -1.0, 0.25, 2.0, 0.0, -0.5}, kF64);
  g.eigenvalues = at::tensor({1.0, 0.25, 4.0, 0.5, 2.0, 0.1}, kF64);
  g.eigenvectors = at::eye(6, kF64);
  g.shape = {2, 3};
  return g;
}

// A random mixture of every covariance type in float64 (K = 5, D = 7, rank 3 for lowrank).
inline GaussianMixture random_gmm(Covariance cov, uint64_t seed, int64_t k = 5, int64_t d = 7, int64_t r = 3) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  GaussianMixture m;
  m.cov = cov;
  m.log_weights = at::log_softmax(at::randn({k}, gen, kF64), 0);
  m.means = at::randn({k, d}, gen, kF64) * 1.5;
  if (cov == Covariance::Isotropic || cov == Covariance::LowRank) m.variances = at::rand({k}, gen, kF64) * 0.3 + 0.02;
  if (cov == Covariance::Diagonal) m.variances = at::rand({k, d}, gen, kF64) * 0.5 + 0.02;
  if (cov == Covariance::Full) r = d;
  if (cov == Covariance::LowRank || cov == Covariance::Full) {
    m.eigenvalues = at::rand({k, r}, gen, kF64) * 2.0 + 0.05;
    m.eigenvectors = std::get<0>(at::linalg_qr(at::randn({k, d, r}, gen, kF64)));
  }
  return m;
}

// The dense covariance Sigma_k [K, D, D] of each component.
inline at::Tensor dense_covariances(const GaussianMixture& m) {
  const int64_t k = m.components(), d = m.dim();
  const at::Tensor eye = at::eye(d, kF64).expand({k, d, d});
  switch (m.cov) {
    case Covariance::Isotropic: return m.variances.view({k, 1, 1}) * eye;
    case Covariance::Diagonal: return at::diag_embed(m.variances);
    case Covariance::LowRank:
      return at::bmm(m.eigenvectors * m.eigenvalues.unsqueeze(1), m.eigenvectors.transpose(1, 2)) +
             m.variances.view({k, 1, 1}) * eye;
    case Covariance::Full:
      return at::bmm(m.eigenvectors * m.eigenvalues.unsqueeze(1), m.eigenvectors.transpose(1, 2));
  }
  return {};
}

// n exact samples [n, D] of the mixture (components drawn by weight, then mu_k + chol(Sigma_k) z).
inline at::Tensor sample_gmm(const GaussianMixture& m, int64_t n, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  const at::Tensor chol = at::linalg_cholesky(dense_covariances(m));
  const at::Tensor comp = at::multinomial(m.log_weights.exp(), n, true, g);
  const at::Tensor z = at::randn({n, m.dim(), 1}, g, kF64);
  return m.means.index_select(0, comp) + at::bmm(chol.index_select(0, comp), z).squeeze(2);
}

// Sliced Wasserstein-1 distance with `n` random directions (1-d W1 of sorted projections).
inline double sliced_wasserstein(const at::Tensor& a, const at::Tensor& b, int n, uint64_t seed) {
  const at::Tensor dirs = at::randn({a.size(1), n}, at::detail::createCPUGenerator(seed), kF64);
  const at::Tensor u = dirs / dirs.norm(2, 0, true);
  const at::Tensor pa = std::get<0>(a.to(at::kDouble).mm(u).sort(0)), pb = std::get<0>(b.to(at::kDouble).mm(u).sort(0));
  return (pa - pb).abs().mean().item<double>();
}

}  // namespace scorch::testing
