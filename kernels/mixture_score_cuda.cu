// Isotropic mixture posterior on the GPU (the `gmm` isotropic and `empirical` models), the
// formulas of include/scorch/mixture_score.h. FlashAttention's recurrence (Dao et al. 2022;
// online softmax, Milakov & Gimelshein 2018): a block owns BN rows of x and streams the
// components in tiles of BK; for each tile it computes the BN x BK logits from dot
// products tiled over the feature dimension in chunks of DT (any D), updates the running
// max m, sum s and the coefficient b of x, and accumulates sum_k p_k (sigma^2 / v_k) mu_k
// into the output rows, rescaled by e^(m_old - m_new). Memory: O(N D), never O(N K).
// This is the correctness-first FP32 version (no matrix units, the accumulator in global
// memory); tuning (tensor cores, register accumulators for small D, a split over
// components for small N) is measured on the GPU machine (tools/gpu_check.sh).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "mixture_score_cuda.h"

namespace scorch {
namespace {

constexpr int BN = 16, BK = 32, DT = 32, THREADS = 256;

__global__ void mixture_kernel(const float* __restrict__ x, const float* __restrict__ mu,
                               const float* __restrict__ log_w, const float* __restrict__ var, int64_t n, int64_t k,
                               int64_t d, float alpha, float sigma2, float* __restrict__ out, float* __restrict__ logp) {
  __shared__ float xs[BN][DT + 1], ms[BK][DT + 1];
  __shared__ float logit[BN][BK];
  __shared__ float x_sq[BN], m_run[BN], s_run[BN], b_run[BN], scale[BN];
  const int tid = threadIdx.x;
  const int64_t row0 = int64_t(blockIdx.x) * BN;
  const float log2pi = 1.8378770664093453f;

  // |x_n|^2, running statistics, zeroed accumulators
  if (tid < BN) {
    float acc = 0.f;
    const int64_t r = row0 + tid;
    if (r < n)
      for (int64_t j = 0; j < d; ++j) acc += x[r * d + j] * x[r * d + j];
    x_sq[tid] = acc;
    m_run[tid] = -INFINITY;
    s_run[tid] = 0.f;
    b_run[tid] = 0.f;
  }
  for (int64_t i = tid; i < int64_t(BN) * d; i += THREADS) {
    const int64_t r = row0 + i / d;
    if (r < n) out[r * d + i % d] = 0.f;
  }
  __syncthreads();

  for (int64_t k0 = 0; k0 < k; k0 += BK) {
    // logits of the tile: each thread owns BN * BK / THREADS = 2 (row, component) pairs
    float dot[BN * BK / THREADS] = {0.f, 0.f};
    for (int64_t d0 = 0; d0 < d; d0 += DT) {
      for (int i = tid; i < BN * DT; i += THREADS) {
        const int r = i / DT, c = i % DT;
        xs[r][c] = (row0 + r < n && d0 + c < d) ? x[(row0 + r) * d + d0 + c] : 0.f;
      }
      for (int i = tid; i < BK * DT; i += THREADS) {
        const int r = i / DT, c = i % DT;
        ms[r][c] = (k0 + r < k && d0 + c < d) ? mu[(k0 + r) * d + d0 + c] : 0.f;
      }
      __syncthreads();
      for (int q = 0; q < BN * BK / THREADS; ++q) {
        const int pair = tid + q * THREADS, r = pair / BK, c = pair % BK;
        float acc = 0.f;
        for (int j = 0; j < DT; ++j) acc += xs[r][j] * ms[c][j];
        dot[q] += acc;
      }
      __syncthreads();
    }
    for (int q = 0; q < BN * BK / THREADS; ++q) {
      const int pair = tid + q * THREADS, r = pair / BK, c = pair % BK;
      const int64_t comp = k0 + c;
      float l = -INFINITY;
      if (comp < k) {
        float mu_sq = 0.f;
        for (int64_t j = 0; j < d; ++j) mu_sq += mu[comp * d + j] * mu[comp * d + j];
        const float v = alpha * alpha * var[comp] + sigma2;
        l = (alpha * dot[q] - 0.5f * x_sq[r] - 0.5f * alpha * alpha * mu_sq) / v + log_w[comp] -
            0.5f * float(d) * (log2pi + logf(v));
      }
      logit[r][c] = l;
    }
    __syncthreads();
    // online log-sum-exp per row: new max, rescale factor, probabilities, s and b
    if (tid < BN) {
      float m_new = m_run[tid];
      for (int c = 0; c < BK; ++c) m_new = fmaxf(m_new, logit[tid][c]);
      const float sc = m_run[tid] == -INFINITY ? 0.f : expf(m_run[tid] - m_new);
      float s = s_run[tid] * sc, b = b_run[tid] * sc;
      for (int c = 0; c < BK; ++c) {
        const int64_t comp = k0 + c;
        const float p = comp < k ? expf(logit[tid][c] - m_new) : 0.f;
        logit[tid][c] = p;
        if (comp < k) {
          const float v = alpha * alpha * var[comp] + sigma2;
          s += p;
          b += p * alpha * var[comp] / v;
        }
      }
      m_run[tid] = m_new;
      s_run[tid] = s;
      b_run[tid] = b;
      scale[tid] = sc;
    }
    __syncthreads();
    // out_n = out_n * scale_n + sum_k p_nk (sigma^2 / v_k) mu_k
    for (int64_t i = tid; i < int64_t(BN) * d; i += THREADS) {
      const int r = int(i / d);
      const int64_t row = row0 + r, j = i % d;
      if (row >= n) continue;
      float acc = out[row * d + j] * scale[r];
      for (int c = 0; c < BK && k0 + c < k; ++c) {
        const int64_t comp = k0 + c;
        const float v = alpha * alpha * var[comp] + sigma2;
        acc += logit[r][c] * (sigma2 / v) * mu[comp * d + j];
      }
      out[row * d + j] = acc;
    }
    __syncthreads();
  }
  // x0 = (acc + b x) / s, log p = m + log s
  for (int64_t i = tid; i < int64_t(BN) * d; i += THREADS) {
    const int r = int(i / d);
    const int64_t row = row0 + r, j = i % d;
    if (row < n) out[row * d + j] = (out[row * d + j] + b_run[r] * x[row * d + j]) / s_run[r];
  }
  if (tid < BN && row0 + tid < n) logp[row0 + tid] = m_run[tid] + logf(s_run[tid]);
}

}  // namespace

int mixture_posterior_cuda(const float* x, const float* means, const float* log_weights, const float* variances,
                           int64_t n, int64_t k, int64_t d, double alpha, double sigma, float* x0,
                           float* log_density, void* stream) {
  static_assert(BN * BK == 2 * THREADS, "each thread owns two logits of a tile");
  const dim3 grid(unsigned((n + BN - 1) / BN));
  mixture_kernel<<<grid, THREADS, 0, static_cast<cudaStream_t>(stream)>>>(
      x, means, log_weights, variances, n, k, d, float(alpha), float(sigma * sigma), x0, log_density);
  return int(cudaGetLastError());
}

}  // namespace scorch
