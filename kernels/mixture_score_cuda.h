// The CUDA kernel behind mixture_posterior (include/scorch/mixture_score.h) for tensors on a CUDA
// device: raw float32 pointers, so this header and its .cu need no LibTorch CUDA headers.
#pragma once

#include <cstdint>

namespace scorch {

// x [n, d], means [k, d], log_weights [k], variances [k] (device pointers, row-major);
// writes x0 [n, d] and log_density [n]. stream: a cudaStream_t (nullptr: the default
// stream). Returns 0, or the CUDA error code of the launch.
int mixture_posterior_cuda(const float* x, const float* means, const float* log_weights, const float* variances,
                           int64_t n, int64_t k, int64_t d, double alpha, double sigma, float* x0,
                           float* log_density, void* stream);

}  // namespace scorch
