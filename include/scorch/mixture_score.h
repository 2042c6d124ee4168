// Closed-form posterior means of Gaussian-mixture data, the kernel behind the `gmm`
// and `empirical` models. A mixture of isotropic components sum_k pi_k N(mu_k, s_k^2 I)
// (an empirical data set is pi_k = 1/K with one smoothing s) noised to
// x_t = alpha x0 + sigma eps has component marginals N(alpha mu_k, v_k I),
// v_k = alpha^2 s_k^2 + sigma^2, responsibilities w_k(x) = softmax_k(l_k) with
//   l_k = log pi_k - D/2 log(2 pi v_k) - |x - alpha mu_k|^2 / (2 v_k),
// and posterior mean E[x0 | x_t] = sum_k w_k ((sigma^2 / v_k) mu_k + (alpha s_k^2 / v_k) x).
#pragma once

#include <ATen/core/Tensor.h>

namespace scorch {

struct IsotropicMixture {
  at::Tensor means;        // [K, D]
  at::Tensor log_weights;  // [K], normalised
  at::Tensor variances;    // [K], s_k^2 >= 0
};

struct MixturePosterior {
  at::Tensor x0;           // [N, D]
  at::Tensor log_density;  // [N], log p_t(x)
};

// One entry point for every device: float32 tensors on a CUDA device go to the fused
// kernel (kernels/mixture_score_cuda.cu) when it is built; everything else to
// mixture_posterior_blocked.
MixturePosterior mixture_posterior(const IsotropicMixture& m, const at::Tensor& x, double alpha, double sigma,
                                   int64_t block = 0);

// Blocked over components with an online log-sum-exp (running max and sum in float64, the
// weighted means accumulated block by block), so memory stays O(N block + N D) and never
// O(N K); ATen operations on any device (multithreaded products on the CPU, cuBLAS on a
// GPU, with TF32 when LibTorch allows it). `block`: components per block (0: sized so the
// N x block logits hold about 1M entries on the CPU, 256-4096 components, and 64M on a GPU,
// 1024-65536 components).
MixturePosterior mixture_posterior_blocked(const IsotropicMixture& m, const at::Tensor& x, double alpha, double sigma,
                                           int64_t block = 0);

// The plain formulation that materialises the N x K logits (the reference for tests
// and benchmarks): logits from one matrix product plus the norm terms, softmax, matrix product.
MixturePosterior mixture_posterior_reference(const IsotropicMixture& m, const at::Tensor& x, double alpha,
                                             double sigma);

}  // namespace scorch
