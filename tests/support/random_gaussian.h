// Test helper: a random Gaussian model in float64 (orthonormal eigenvectors from a QR).
#pragma once

#include <ATen/ATen.h>

#include "scorch/gaussian.h"

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

}  // namespace scorch::testing
