#include "scorch/rng.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <mutex>

#include "scorch/error.h"

namespace scorch {

NoiseGenerator parse_noise_generator(const std::string& name) {
  if (name == "scorch") return NoiseGenerator::Scorch;
  if (name == "torch") return NoiseGenerator::Torch;
  bad_input("noise_generator: expected scorch | torch, got '" + name + "'");
}

Rng::Rng(uint64_t seed, NoiseGenerator kind) : gens_{at::make_generator<at::CPUGeneratorImpl>(seed)}, kind_(kind) {}

Rng Rng::per_sample(const std::vector<uint64_t>& seeds, NoiseGenerator kind) {
  Rng r;
  r.per_sample_ = true;
  r.kind_ = kind;
  for (uint64_t s : seeds) r.gens_.push_back(at::make_generator<at::CPUGeneratorImpl>(s));
  return r;
}

template <typename Draw>
at::Tensor Rng::draw(at::IntArrayRef sizes, at::ScalarType dtype, const at::Tensor& rows, Draw fill) {
  at::Tensor z = at::empty(sizes, at::TensorOptions().dtype(dtype));
  if (!per_sample_) {
    fill(z, gens_[0]);  // the generator's draws take its lock themselves
    return z;
  }
  const int64_t n = sizes.empty() ? 0 : sizes[0];
  if (rows.defined() && rows.numel() != n) throw Error(Status::Internal, "Rng: rows do not match the draw's rows");
  if (!rows.defined() && n > streams())
    throw Error(Status::Internal, "Rng: " + std::to_string(n) + " rows from " + std::to_string(streams()) + " streams");
  const at::Tensor idx = rows.defined() ? rows.to(at::kCPU, at::kLong).contiguous() : at::Tensor();
  for (int64_t k = 0; k < n; ++k) {
    const int64_t stream = idx.defined() ? idx.data_ptr<int64_t>()[k] : k;
    if (stream < 0 || stream >= streams()) throw Error(Status::Internal, "Rng: no stream " + std::to_string(stream));
    at::Tensor row = z[k];
    fill(row, gens_[size_t(stream)]);
  }
  return z;
}

at::Tensor Rng::normal(at::IntArrayRef sizes, const at::TensorOptions& options, const at::Tensor& rows) {
  const bool torch = kind_ == NoiseGenerator::Torch;
  const at::Tensor z = draw(sizes, torch ? at::kFloat : at::kDouble, rows,
                            [](at::Tensor& t, at::Generator& g) { t.normal_(0.0, 1.0, g); });
  return z.to(at::TensorOptions().device(options.device()).dtype(options.dtype()));
}

at::Tensor Rng::normal_like(const at::Tensor& like, const at::Tensor& rows) {
  return normal(like.sizes(), like.options(), rows);
}

at::Tensor Rng::uniform(at::IntArrayRef sizes, const at::Tensor& rows) {
  if (!per_sample_)
    return draw(sizes, at::kDouble, rows, [](at::Tensor& t, at::Generator& g) { t.uniform_(0.0, 1.0, g); });
  // Per-sample rows are often short (a sequence's tokens): the 53 high bits of the stream's
  // next 64-bit words, without a tensor op per row.
  return draw(sizes, at::kDouble, rows, [](at::Tensor& t, at::Generator& g) {
    auto* gen = at::check_generator<at::CPUGeneratorImpl>(g);
    std::lock_guard<std::mutex> lock(gen->mutex_);
    double* p = t.data_ptr<double>();
    for (int64_t j = 0; j < t.numel(); ++j) p[j] = double(gen->random64() >> 11) * (1.0 / 9007199254740992.0);
  });
}

uint64_t noise_stream_seed(uint64_t sample_seed) {
  // splitmix64 (Steele, Lea & Flood 2014): a bijective mix, so distinct seeds keep distinct streams.
  uint64_t z = sample_seed ^ 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace scorch
