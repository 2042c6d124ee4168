// Brownian-tree noise (the semantics of k-diffusion's BrownianTreeNoiseSampler, after the
// virtual Brownian tree of Li et al. 2020): one Brownian path W per sample over [a, b] in
// the VE noise level sigma~ = sigma / alpha, fixed by the sample's seed, from which a step
// from s to t takes the standard normal (W(t) - W(s)) / sqrt(|t - s|). Steps of any grid
// over the same interval follow the same path, so SDE runs with more steps converge to
// one sample instead of drawing new noise.
//
// W(a) = 0 and W(b) ~ N(0, b - a); a point is found by bisection: the midpoint m of a node
// [l, r] is the Brownian bridge W(m) = (W(l) + W(r)) / 2 + sqrt((r - l) / 4) z, with z a
// counter-based normal of (the sample's seed, the node) (splitmix64 and Box-Muller, so any
// node is computed directly). Below a width of 1e-10 (b - a), W is linear between the
// node's ends.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace scorch {

class BrownianTree {
 public:
  // One path per seed (row i of every draw is seeds[i]'s), over [a, b] with a < b.
  BrownianTree(std::vector<uint64_t> seeds, double a, double b);
  // (W(t) - W(s)) / sqrt(|t - s|) for every row, shape `sizes` ([rows, ...]).
  at::Tensor increment(at::IntArrayRef sizes, const at::TensorOptions& options, double s, double t) const;
  // W(s) itself, float64 on the CPU.
  at::Tensor value(at::IntArrayRef sizes, double s) const;

 private:
  std::vector<uint64_t> seeds_;
  double a_, b_;
  int depth_;
  // The last point asked for: a step's start is the previous step's end.
  mutable double last_s_ = 0.0;
  mutable at::Tensor last_w_;
};

}  // namespace scorch
