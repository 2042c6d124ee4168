// The sampling loop against the bare network calls it makes, timed in one process: the
// shipped U-Net (configs/default.yaml), dpmpp_2m, 10 steps, one class label, at each batch.
//   bare:   the TorchScript module as a user loads it (torch::jit::load, eval), called
//           10 times on [batch, 1, 28, 28] with the DDPM index and the labels, warm;
//   scorch: Pipeline::generate (x_T, the 10 calls, the solver, the checks), warm, with the
//           default model.cpu_parallel (chunks) and with intra_op.
// Prints one line per batch: batch, bare ms, scorch ms, their ratio (median of `repeats`), the
// first (cold) run of the loop after loading the pipeline, then scorch ms and ratio with intra_op,
// and the start-up: Pipeline::from_config (load, freeze, validate by a dry run), median of `repeats`.
// Usage: scorch_bench_latency [threads] [repeats] [batches...]   (tools/bench/latency_table.py)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "scorch/config.h"
#include "scorch/io.h"
#include "scorch/pipeline.h"

namespace {

template <typename F>
double median_ms(int repeats, F f) {
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) {
    const auto start = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int repeats = argc > 2 ? std::atoi(argv[2]) : 5;
  std::vector<int64_t> batches;
  for (int i = 3; i < argc; ++i) batches.push_back(std::atoll(argv[i]));
  if (batches.empty()) batches = {1, 4, 16, 64, 256};
  at::set_num_threads(threads);
  const std::string model_path = scorch::find_input_file("models/fmnist_unet.pt");
  torch::jit::Module module = torch::jit::load(model_path);
  module.eval();
  std::printf("batch bare_ms scorch_ms ratio cold_ms intra_op_ms intra_op_ratio startup_ms\n");
  for (int64_t b : batches) {
    const std::vector<std::string> sets = {"batch=" + std::to_string(b), "cond=3", "output.png=",
                                           "sampler.name=dpmpp_2m", "sampler.steps=10"};
    std::vector<std::string> intra_sets = sets;
    intra_sets.push_back("model.cpu_parallel=intra_op");
    const auto p = scorch::Pipeline::from_config(scorch::load_config("", sets));
    const auto q = scorch::Pipeline::from_config(scorch::load_config("", intra_sets));
    c10::InferenceMode guard;
    const at::Tensor x = at::randn({b, 1, 28, 28}), label = at::full({b}, 3, at::kLong);
    auto bare = [&] {
      for (int k = 0; k < 10; ++k)
        module.forward({x, at::full({b}, 999.0 - 99.0 * k, at::kFloat), label}).toTensor();
    };
    auto loop = [&] { p->generate(); };
    auto intra = [&] { q->generate(); };
    // cold: the first run after loading (the profiling executor optimises during the first calls)
    const double cold_ms = median_ms(1, loop);
    for (int w = 0; w < 2; ++w) bare(), loop(), intra();
    const double bare_ms = median_ms(repeats, bare), scorch_ms = median_ms(repeats, loop);
    const double intra_ms = median_ms(repeats, intra);
    const double startup_ms = median_ms(repeats, [&] { scorch::Pipeline::from_config(scorch::load_config("", sets)); });
    std::printf("%lld %.2f %.2f %.3f %.2f %.2f %.3f %.2f\n", (long long)b, bare_ms, scorch_ms, scorch_ms / bare_ms,
                cold_ms, intra_ms, intra_ms / bare_ms, startup_ms);
    std::fflush(stdout);
  }
  return 0;
}
