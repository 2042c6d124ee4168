// Seeded noise in per-sample streams. Sample i of a batch draws every random number that
// touches it (x_T, sampler noise, MCMC proposals and accept draws, inpainting re-noising,
// discrete draws) from its own stream, keyed by its seed alone, so it is the same whatever
// the batch size, the chunking or the thread count. Numbers are drawn on the CPU (float64
// unless a generator says otherwise) and then cast and moved, so one seed gives the same
// noise for any dtype or device.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace scorch {

// scorch: float64 normals from LibTorch's CPU generator (mt19937), cast to the dtype.
// torch: float32 normals exactly as Python's torch.randn(shape, generator=torch.Generator().manual_seed(seed))
// draws them (the same LibTorch CPU generator and kernel), then cast.
enum class NoiseGenerator { Scorch, Torch };
NoiseGenerator parse_noise_generator(const std::string& name);  // scorch | torch

class Rng {
 public:
  // One stream for every row (probes and tests that want one sequence of numbers).
  explicit Rng(uint64_t seed, NoiseGenerator kind = NoiseGenerator::Scorch);
  // One stream per sample: row i of every draw comes from the stream seeded with seeds[i].
  static Rng per_sample(const std::vector<uint64_t>& seeds, NoiseGenerator kind = NoiseGenerator::Scorch);

  // Standard normal noise of the given shape, dtype and device. Per-sample streams: sizes[0]
  // rows, row k from stream rows[k] (rows: int64 [sizes[0]]), or from stream k when rows is
  // undefined (then sizes[0] is at most the number of streams).
  at::Tensor normal(at::IntArrayRef sizes, const at::TensorOptions& options, const at::Tensor& rows = {});
  at::Tensor normal_like(const at::Tensor& like, const at::Tensor& rows = {});
  // Uniform numbers in [0, 1), float64 on the CPU, rows as for normal.
  at::Tensor uniform(at::IntArrayRef sizes, const at::Tensor& rows = {});

  bool per_sample() const { return per_sample_; }
  int64_t streams() const { return int64_t(gens_.size()); }

 private:
  Rng() = default;
  template <typename Draw>
  at::Tensor draw(at::IntArrayRef sizes, at::ScalarType dtype, const at::Tensor& rows, Draw fill);
  std::vector<at::Generator> gens_;
  bool per_sample_ = false;
  NoiseGenerator kind_ = NoiseGenerator::Scorch;
};

// The seed of sample i's sampler-noise stream, derived from its x_T seed (splitmix64 of
// seed ^ 0x9E3779B97F4A7C15): an independent stream that depends on that seed alone.
uint64_t noise_stream_seed(uint64_t sample_seed);

}  // namespace scorch
