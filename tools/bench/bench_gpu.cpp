// GPU benchmarks of issue #8, run by tools/gpu_check.sh on the GPU machine; Markdown
// tables to stdout. Without a CUDA device it says so and exits 0.
//
//   1. The closed-form mixture posterior E[x0 | x_t] at the four (N, K, D) shapes,
//      one mixture of K equal-variance isotropic components (the empirical data-set model):
//      the fused kernel (mixture_posterior on CUDA tensors) and the blocked ATen formulation
//      (mixture_posterior_blocked: cuBLAS products, FP32 and with TF32 allowed) against
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

#include "scorch/mixture_score.h"
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

// Median milliseconds of `reps` runs of f after two warm-up runs; on a GPU each run is
// bracketed by CUDA events on the default stream (where LibTorch and the kernel run).
double median_ms(const std::function<void()>& f, int reps, bool cuda) {
  f();
  f();
  std::vector<double> ms;
  for (int i = 0; i < reps; ++i) {
    if (cuda) {
#ifdef SCORCH_WITH_CUDA_KERNELS
      cudaEvent_t start, stop;
      cudaEventCreate(&start);
      cudaEventCreate(&stop);
      cudaEventRecord(start, nullptr);
      f();
      cudaEventRecord(stop, nullptr);
      cudaEventSynchronize(stop);
      float t = 0;
      cudaEventElapsedTime(&t, start, stop);
      ms.push_back(t);
      cudaEventDestroy(start);
      cudaEventDestroy(stop);
#endif
    } else {
      const auto t0 = std::chrono::steady_clock::now();
      f();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

std::string fmt(const char* format, double value) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, value);
  return buf;
}

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

// (b): fused attention where LibTorch has it with a `scale` argument (>= 2.1), else the
// same product unfused.
#ifdef SCORCH_HAVE_SDPA_SCALE
const char* kAttention = "at::scaled_dot_product_attention";
at::Tensor attention(const AugmentedAttention& a) {
  return at::scaled_dot_product_attention(a.q, a.k, a.v, {}, 0.0, false, 1.0);
}
#else
const char* kAttention = "softmax(q k^T) v unfused (this LibTorch has no SDPA with a scale)";
at::Tensor attention(const AugmentedAttention& a) {
  return at::matmul(at::softmax(at::matmul(a.q, a.k.transpose(-2, -1)), -1), a.v);
}
#endif

// dry_run: the same code on the CPU at shapes 1/16 in N and K, to check it before a GPU run.
void mixture_table(bool dry_run) {
  std::vector<std::array<int64_t, 3>> shapes = {
      {1024, 60000, 784}, {4096, 4096, 128}, {65536, 1024, 16}, {256, 10000, 12288}};
  if (dry_run)
    for (auto& shape : shapes) shape = {std::max<int64_t>(shape[0] / 16, 1), shape[1] / 16, shape[2]};
  const bool cuda = !dry_run;
  const double alpha = 0.6, sigma = 0.8, s2 = 0.04;  // mid-trajectory, a smoothed data set
  const int reps = dry_run ? 3 : 20;
  std::printf("### Mixture posterior, float32 (median of %d %s runs)\n\n", reps,
              cuda ? "CUDA-event-timed" : "CPU dry");
  std::printf("(b): %s.\n", kAttention);
  std::printf("Equal-variance isotropic mixture (the empirical model), means N(0, 9/D I), alpha = %.1f, sigma = %.1f, s^2 = %.2f.\n"
              "GEMM: [N, D] x [D, K] float32 at::mm, the rate limit (c); kernel rate counts 4 N K D flops.\n\n",
              alpha, sigma, s2);
  std::printf("| N | K | D | fused ms | blocked ms | blocked TF32 ms | eager ms (a) | SDPA ms (b) | GEMM ms "
              "| GEMM TF32 ms | fused TFLOP/s | GEMM TFLOP/s | fused vs (a) | fused vs (b) | fused of (c) "
              "| max rel err fused / blocked / blocked TF32 / SDPA |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& shape : shapes) {
    const int64_t n = shape[0], kk = shape[1], d = shape[2];
    const auto opt = at::TensorOptions().dtype(at::kFloat).device(cuda ? at::kCUDA : at::kCPU);
    auto gen = at::detail::createCPUGenerator(uint64_t(n + kk + d));
    IsotropicMixture m;
    // Means at distance about 3 sqrt(2) from each other whatever D: responsibilities spread
    // over several components (random means in high D would make every posterior one-hot).
    m.means = (at::randn({kk, d}, gen, at::kFloat) * (3.0 / std::sqrt(double(d)))).to(opt);
    m.log_weights = at::full({kk}, -std::log(double(kk)), opt);
    m.variances = at::full({kk}, s2, opt);
    // x_t drawn from the mixture's marginal: component i mod K, noised.
    const at::Tensor near = m.means.index_select(0, (at::arange(n, at::kLong) % kk).to(opt.device()));
    const at::Tensor x = alpha * near + std::sqrt(alpha * alpha * s2 + sigma * sigma) *
                                            at::randn({n, d}, gen, at::kFloat).to(opt);
    const at::Tensor ref = mixture_posterior_reference(m, x, alpha, sigma).x0;
    const at::Tensor fused = mixture_posterior(m, x, alpha, sigma).x0;
    const double t_fused = median_ms([&] { mixture_posterior(m, x, alpha, sigma); }, reps, cuda);
    const double t_eager = median_ms([&] { mixture_posterior_reference(m, x, alpha, sigma); }, reps, cuda);
    const at::Tensor blocked = mixture_posterior_blocked(m, x, alpha, sigma).x0;
    const double t_blocked = median_ms([&] { mixture_posterior_blocked(m, x, alpha, sigma); }, reps, cuda);
    const at::Tensor mt = m.means.t().contiguous();
    const double t_gemm = median_ms([&] { at::mm(x, mt); }, reps, cuda);
    // TF32 for the blocked products and the GEMM: LibTorch's global switch, restored after.
    const bool tf32_before = at::globalContext().allowTF32CuBLAS();
    at::globalContext().setAllowTF32CuBLAS(true);
    const at::Tensor blocked_tf32 = mixture_posterior_blocked(m, x, alpha, sigma).x0;
    const double t_blocked_tf32 = median_ms([&] { mixture_posterior_blocked(m, x, alpha, sigma); }, reps, cuda);
    const double t_gemm_tf32 = median_ms([&] { at::mm(x, mt); }, reps, cuda);
    at::globalContext().setAllowTF32CuBLAS(tf32_before);
    std::string sdpa_ms = "fails", vs_b = "-", sdpa_err = "-";
    try {
      const AugmentedAttention a(m, x, alpha, sigma, s2);
      const at::Tensor o = attention(a).view({n, -1}).narrow(1, 0, d);
      sdpa_err = fmt("%.1e", max_rel(a.c_mu * o + a.c_x * x, ref));
      const double t_sdpa = median_ms([&] { attention(a); }, reps, cuda);
      sdpa_ms = fmt("%.3f", t_sdpa);
      vs_b = fmt("%.1fx", t_sdpa / t_fused);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "(b) at %ld x %ld x %ld: %s\n", long(n), long(kk), long(d), e.what());
    }
    const double work = 4.0 * double(n) * double(kk) * double(d);
    const double fused_rate = work / (t_fused * 1e9), gemm_rate = 0.5 * work / (t_gemm * 1e9);
    std::printf(
        "| %ld | %ld | %ld | %.3f | %.3f | %.3f | %.3f | %s | %.3f | %.3f | %.1f | %.1f | %.1fx | %s | %.0f%% "
        "| %.1e / %.1e / %.1e / %s |\n",
        long(n), long(kk), long(d), t_fused, t_blocked, t_blocked_tf32, t_eager, sdpa_ms.c_str(), t_gemm, t_gemm_tf32,
        fused_rate, gemm_rate, t_eager / t_fused, vs_b.c_str(), 100.0 * fused_rate / gemm_rate, max_rel(fused, ref),
        max_rel(blocked, ref), max_rel(blocked_tf32, ref), sdpa_err.c_str());
    std::fflush(stdout);
  }
  std::printf("\n");
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

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "--dry-run") {
    mixture_table(true);
    return 0;
  }
  if (!at::hasCUDA()) {
    std::printf("no CUDA device (this LibTorch or machine has none): nothing to measure "
                "(--dry-run runs the mixture table on the CPU at small shapes)\n");
    return 0;
  }
#ifdef SCORCH_WITH_CUDA_KERNELS
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) std::printf("Device: %s.\n\n", prop.name);
  mixture_table(false);
#else
  std::printf("built without nvcc: no fused kernel and no CUDA events; end to end only\n\n");
#endif
  end_to_end_table();
  return 0;
}
