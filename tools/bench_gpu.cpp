// GPU benchmarks of issue #8, run by tools/gpu_check.sh on the GPU machine; Markdown
// tables to stdout. Without a CUDA device it says so and exits 0.
//
//   1. The closed-form mixture posterior E[x0 | x_t] at the four (N, K, D) shapes,
//      one mixture of K equal-variance isotropic components (the empirical data-set model):
//      the fused kernel (mixture_posterior on CUDA tensors) against
//      (a) the eager reference that materialises the N x K logits (mixture_posterior_reference),
//      (b) at::scaled_dot_product_attention with augmented keys (LibTorch >= 2.1), and
//      (c) the measured rate of a dense [N, D] x [D, K] float32 matrix product, the limit:
//          the fused kernel does 4 N K D flops (logits and weighted means), the product 2 N K D.
//      Each time is the median of event-timed runs after a warm-up; each result is checked
//      against the reference (max relative error of x0).
//   2. End to end: configs/default.yaml (the Fashion-MNIST U-Net, dpmpp_2m, 10 steps) at
//      batch 256 on the GPU and on the CPU, images/s, and the largest difference of samples.
#include <ATen/ATen.h>
#include <torch/version.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kernels/mixture_score.h"
#include "scorch/config.h"
#include "scorch/pipeline.h"

#ifdef SCORCH_WITH_CUDA_KERNELS
#include <cuda_runtime.h>
#endif

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
#define SCORCH_HAVE_SDPA_SCALE 1
#endif

using namespace scorch;

namespace {

#ifdef SCORCH_WITH_CUDA_KERNELS
// Median milliseconds of `reps` runs of f, each bracketed by CUDA events on the default
// stream (where LibTorch and the kernel run), after two warm-up runs.
double median_ms(const std::function<void()>& f, int reps) {
  f();
  f();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(start, nullptr);
    f();
    cudaEventRecord(stop, nullptr);
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}
#endif

double max_rel(const at::Tensor& a, const at::Tensor& ref) {
  return ((a.to(at::kDouble) - ref.to(at::kDouble)).abs().max() / ref.to(at::kDouble).abs().max()).item<double>();
}

// Posterior mean by attention: with one variance v = alpha^2 s^2 + sigma^2 the logits are
// l_k = <[x, 1], [alpha mu_k / v, log pi_k - alpha^2 |mu_k|^2 / (2 v)]> + c(x), so
// softmax(q k^T) [mu, 0] = sum_k w_k mu_k and x0 = (sigma^2 / v) E_w[mu] + (alpha s^2 / v) x.
// Keys are zero-padded to a multiple of 8 (the fused attention kernels' alignment).
struct AugmentedAttention {
  at::Tensor q, k, v;
  double c_mu = 0, c_x = 0;
  AugmentedAttention(const IsotropicMixture& m, const at::Tensor& x, double alpha, double sigma, double s2) {
    const double var = alpha * alpha * s2 + sigma * sigma;
    const int64_t n = x.size(0), kk = m.means.size(0), d = x.size(1), width = (d + 1 + 7) / 8 * 8;
    q = at::zeros({1, 1, n, width}, x.options());
    k = at::zeros({1, 1, kk, width}, x.options());
    v = at::zeros({1, 1, kk, width}, x.options());
    q.select(3, d).fill_(1.0);
    q.narrow(3, 0, d).copy_(x.view({1, 1, n, d}));
    k.narrow(3, 0, d).copy_((alpha / var) * m.means.view({1, 1, kk, d}));
    k.select(3, d).copy_(m.log_weights - alpha * alpha / (2 * var) * m.means.square().sum(1));
    v.narrow(3, 0, d).copy_(m.means.view({1, 1, kk, d}));
    c_mu = sigma * sigma / var;
    c_x = alpha * s2 / var;
  }
};

void mixture_table() {
#ifdef SCORCH_WITH_CUDA_KERNELS
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1024, 60000, 784}, {4096, 4096, 128}, {65536, 1024, 16}, {256, 10000, 12288}};
  const double alpha = 0.6, sigma = 0.8, s2 = 0.04;  // mid-trajectory, a smoothed data set
  std::printf("### Mixture posterior, float32 (median of 20 event-timed runs)\n\n");
  std::printf("Equal-variance isotropic mixture (the empirical model), alpha = %.1f, sigma = %.1f, s^2 = %.2f.\n"
              "GEMM: [N, D] x [D, K] float32 at::mm, the rate limit (c); kernel rate counts 4 N K D flops.\n\n",
              alpha, sigma, s2);
  std::printf("| N | K | D | fused ms | eager ms (a) | SDPA ms (b) | GEMM ms | fused TFLOP/s | GEMM TFLOP/s "
              "| vs (a) | vs (b) | of (c) | max rel err fused / SDPA |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& shape : shapes) {
    const int64_t n = shape[0], kk = shape[1], d = shape[2];
    const auto opt = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
    auto gen = at::detail::createCPUGenerator(uint64_t(n + kk + d));
    IsotropicMixture m;
    m.means = at::randn({kk, d}, gen, at::kFloat).to(opt);
    m.log_weights = at::full({kk}, -std::log(double(kk)), opt);
    m.variances = at::full({kk}, s2, opt);
    // x_t drawn from the mixture's marginal: component i mod K, noised.
    const at::Tensor near = m.means.index_select(0, (at::arange(n, at::kLong) % kk).to(opt.device()));
    const at::Tensor x = alpha * near + std::sqrt(alpha * alpha * s2 + sigma * sigma) *
                                            at::randn({n, d}, gen, at::kFloat).to(opt);
    const int reps = 20;
    const at::Tensor ref = mixture_posterior_reference(m, x, alpha, sigma).x0;
    const at::Tensor fused = mixture_posterior(m, x, alpha, sigma).x0;
    const double t_fused = median_ms([&] { mixture_posterior(m, x, alpha, sigma); }, reps);
    const double t_eager = median_ms([&] { mixture_posterior_reference(m, x, alpha, sigma); }, reps);
    const at::Tensor mt = m.means.t().contiguous();
    const double t_gemm = median_ms([&] { at::mm(x, mt); }, reps);
    std::string sdpa_ms = "-", vs_b = "-", sdpa_err = "-";
#ifdef SCORCH_HAVE_SDPA_SCALE
    try {
      const AugmentedAttention a(m, x, alpha, sigma, s2);
      const auto run = [&] {
        return at::scaled_dot_product_attention(a.q, a.k, a.v, {}, 0.0, false, 1.0);
      };
      const at::Tensor o = run().view({n, -1}).narrow(1, 0, d);
      sdpa_err = std::to_string(max_rel(a.c_mu * o + a.c_x * x, ref));
      const double t_sdpa = median_ms([&] { run(); }, reps);
      sdpa_ms = std::to_string(t_sdpa);
      vs_b = std::to_string(t_sdpa / t_fused);
    } catch (const std::exception&) {
      sdpa_ms = "fails";
    }
#endif
    const double work = 4.0 * double(n) * double(kk) * double(d);
    const double fused_rate = work / (t_fused * 1e9), gemm_rate = 0.5 * work / (t_gemm * 1e9);
    std::printf("| %ld | %ld | %ld | %.3f | %.3f | %s | %.3f | %.1f | %.1f | %.1fx | %s | %.0f%% | %.1e / %s |\n",
                long(n), long(kk), long(d), t_fused, t_eager, sdpa_ms.c_str(), t_gemm, fused_rate, gemm_rate,
                t_eager / t_fused, vs_b.c_str(), 100.0 * fused_rate / gemm_rate, max_rel(fused, ref),
                sdpa_err.c_str());
    std::fflush(stdout);
  }
  std::printf("\n");
#endif
}

void end_to_end_table() {
  std::printf("### End to end: configs/default.yaml at batch 256 (dpmpp_2m, 10 steps)\n\n");
  std::printf("| device | seconds | images/s |\n|---|---|---|\n");
  at::Tensor samples[2];
  const char* devices[2] = {"cuda", "cpu"};
  for (int i = 0; i < 2; ++i) {
    const auto p = Pipeline::from_config(
        load_config("", {"batch=256", "output.png=", std::string("device=") + devices[i]}));
    p->generate();  // warm-up: cuDNN / oneDNN plans, the TorchScript profiling runs
    const auto t0 = std::chrono::steady_clock::now();
    samples[i] = p->generate().samples.cpu();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("| %s | %.3f | %.1f |\n", devices[i], s, 256.0 / s);
  }
  std::printf("\nLargest |GPU - CPU| sample difference: %.2e (relative RMS %.2e).\n\n",
              (samples[0] - samples[1]).abs().max().item<double>(),
              ((samples[0] - samples[1]).norm() / samples[1].norm()).item<double>());
}

}  // namespace

int main() {
  if (!at::hasCUDA()) {
    std::printf("no CUDA device (this LibTorch or machine has none): nothing to measure\n");
    return 0;
  }
#ifndef SCORCH_WITH_CUDA_KERNELS
  std::printf("built without nvcc: the fused kernel is absent; end to end only\n\n");
#endif
#ifdef SCORCH_WITH_CUDA_KERNELS
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) std::printf("Device: %s.\n\n", prop.name);
#endif
  mixture_table();
  end_to_end_table();
  return 0;
}
