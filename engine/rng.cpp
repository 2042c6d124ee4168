#include "scorch/rng.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

namespace scorch {

Rng::Rng(uint64_t seed) : gen_(at::make_generator<at::CPUGeneratorImpl>(seed)) {}

at::Tensor Rng::normal(at::IntArrayRef sizes, const at::TensorOptions& options) {
  // normal_ takes the generator's lock itself.
  at::Tensor z = at::empty(sizes, at::TensorOptions().dtype(at::kDouble));
  z.normal_(0.0, 1.0, gen_);
  return z.to(at::TensorOptions().device(options.device()).dtype(options.dtype()));
}

at::Tensor Rng::normal_like(const at::Tensor& like) { return normal(like.sizes(), like.options()); }

}  // namespace scorch
