// The fused linear combination behind every solver update (include/scorch/lincomb.h).
#include "scorch/lincomb.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

namespace scorch {

namespace {

// The fused CPU path: one pass over memory in cache-sized chunks, instead of one
// pass (and one temporary) per term. The two kernels are compiled for AVX2 and for
// the baseline, picked at load time (GCC function multiversioning), as ATen's own
// kernels are. Elementwise, so the result does not depend on the thread count. Clang
// (the fuzz build) does not multiversion templates: it compiles the baseline alone.
#if defined(__clang__)
#define SCORCH_AVX2_CLONES
#else
#define SCORCH_AVX2_CLONES __attribute__((target_clones("avx2", "default")))
#endif
template <typename T>
SCORCH_AVX2_CLONES void scale_into(T* out, const T* p, T c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = c * p[i];
}
template <typename T>
SCORCH_AVX2_CLONES void axpy_into(T* out, const T* p, T c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += c * p[i];
}

template <typename scalar_t>
void lincomb_cpu(const std::vector<std::pair<double, const scalar_t*>>& terms, scalar_t* out, int64_t n) {
  at::parallel_for(0, n, 1 << 15, [&](int64_t begin, int64_t end) {
    constexpr int64_t kChunk = 4096;
    for (int64_t b = begin; b < end; b += kChunk) {
      const int64_t len = std::min(end, b + kChunk) - b;
      scale_into<scalar_t>(out + b, terms[0].second + b, scalar_t(terms[0].first), len);
      for (size_t k = 1; k < terms.size(); ++k)
        axpy_into<scalar_t>(out + b, terms[k].second + b, scalar_t(terms[k].first), len);
    }
  });
}

}  // namespace

at::Tensor lincomb(std::initializer_list<std::pair<double, at::Tensor>> terms) {
  return lincomb(std::vector<std::pair<double, at::Tensor>>(terms));
}

at::Tensor lincomb(const std::vector<std::pair<double, at::Tensor>>& terms) {
  const at::Tensor& first = terms.front().second;
  bool fused = first.device().is_cpu() && (first.scalar_type() == at::kFloat || first.scalar_type() == at::kDouble);
  for (const auto& [c, t] : terms)
    fused = fused && t.device().is_cpu() && t.scalar_type() == first.scalar_type() && t.sizes() == first.sizes() &&
            t.is_contiguous();
  if (!fused) {
    at::Tensor out = first * terms.front().first;
    for (size_t k = 1; k < terms.size(); ++k)
      if (terms[k].first != 0.0) out.add_(terms[k].second, terms[k].first);
    return out;
  }
  at::Tensor out = at::empty_like(first, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(first.scalar_type(), "lincomb", [&] {
    std::vector<std::pair<double, const scalar_t*>> ptrs;
    for (const auto& [c, t] : terms)
      if (c != 0.0 || ptrs.empty()) ptrs.emplace_back(c, t.data_ptr<scalar_t>());
    lincomb_cpu<scalar_t>(ptrs, out.data_ptr<scalar_t>(), out.numel());
  });
  return out;
}

}  // namespace scorch
