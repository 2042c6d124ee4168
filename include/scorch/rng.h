// Seeded noise. Numbers are drawn on the CPU in float64 and then cast and
// moved, so one seed gives the same x_T (and the same sampler noise) for any
// dtype, device or thread count.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace scorch {

class Rng {
 public:
  explicit Rng(uint64_t seed);
  // Standard normal noise of the given shape, dtype and device.
  at::Tensor normal(at::IntArrayRef sizes, const at::TensorOptions& options);
  at::Tensor normal_like(const at::Tensor& like);

 private:
  at::Generator gen_;
};

}  // namespace scorch
