#include "scorch/brownian.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "scorch/error.h"
#include "scorch/rng.h"

namespace scorch {

namespace {

// Counter-based normals: z(seed, depth, index, j) from splitmix64 of the counter and the
// Box-Muller transform of two 53-bit uniforms. Any node's numbers are computed directly,
// without a stored generator: a point of the path costs depth x D hashes per sample.
uint64_t mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double unit(uint64_t bits) { return (double(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0); }  // (0, 1)

// Fills z (float64, contiguous, n values) with the standard normals of one node of one path.
void node_normals(double* z, int64_t n, uint64_t seed, int depth, uint64_t index) {
  const uint64_t key = mix(mix(seed ^ (uint64_t(depth) << 56)) ^ index);
  constexpr double two_pi = 6.283185307179586;
  for (int64_t j = 0; j < n; j += 2) {
    const double u1 = unit(mix(key + 2 * uint64_t(j))), u2 = unit(mix(key + 2 * uint64_t(j) + 1));
    const double r = std::sqrt(-2.0 * std::log(u1));
    z[j] = r * std::cos(two_pi * u2);
    if (j + 1 < n) z[j + 1] = r * std::sin(two_pi * u2);
  }
}

}  // namespace

BrownianTree::BrownianTree(std::vector<uint64_t> seeds, double a, double b)
    : seeds_(std::move(seeds)), a_(a), b_(b) {
  if (!(a < b) || !std::isfinite(a) || !std::isfinite(b))
    throw Error(Status::Internal, "BrownianTree: expected a finite interval a < b");
  depth_ = int(std::ceil(std::log2(1e10)));
}

at::Tensor BrownianTree::value(at::IntArrayRef sizes, double s) const {
  const int64_t rows = sizes.empty() ? 0 : sizes[0];
  if (rows > int64_t(seeds_.size())) throw Error(Status::Internal, "BrownianTree: more rows than paths");
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const int64_t n = rows > 0 ? at::empty(sizes, f64).numel() / rows : 0;
  s = std::min(std::max(s, a_), b_);
  if (last_w_.defined() && last_s_ == s && last_w_.sizes() == sizes) return last_w_;
  // The bisection path to s is the same for every sample; only the normals differ.
  at::Tensor wl = at::zeros({rows, n}, f64), wr = at::empty({rows, n}, f64), z = at::empty({rows, n}, f64);
  for (int64_t i = 0; i < rows; ++i) node_normals(wr[i].data_ptr<double>(), n, seeds_[size_t(i)], 0, 0);
  wr.mul_(std::sqrt(b_ - a_));
  double l = a_, r = b_;
  uint64_t index = 0;
  for (int d = 1; d <= depth_ && s > l && s < r; ++d) {
    const double m = 0.5 * (l + r);
    for (int64_t i = 0; i < rows; ++i) node_normals(z[i].data_ptr<double>(), n, seeds_[size_t(i)], d, index);
    const at::Tensor wm = 0.5 * (wl + wr) + std::sqrt(0.25 * (r - l)) * z;
    if (s < m) {
      r = m, wr = wm, index = 2 * index;
    } else {
      l = m, wl = wm, index = 2 * index + 1;
    }
  }
  const at::Tensor w = s <= l ? wl : s >= r ? wr : wl + (s - l) / (r - l) * (wr - wl);
  last_s_ = s;
  last_w_ = w.reshape(sizes);
  return last_w_;
}

at::Tensor BrownianTree::increment(at::IntArrayRef sizes, const at::TensorOptions& options, double s, double t) const {
  const at::Tensor dw = (value(sizes, t) - value(sizes, s)) / std::sqrt(std::abs(t - s));
  return dw.to(at::TensorOptions().dtype(options.dtype()).device(options.device()));
}

}  // namespace scorch
