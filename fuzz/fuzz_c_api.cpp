// libFuzzer harness: the C API's entry points on a loaded pipeline. The first byte picks a
// pipeline (a closed-form Gaussian image model, or a TorchScript fixture with declared host
// inputs and classifier-free guidance); the rest is a list of calls with fuzzed arguments:
// scorch_pipeline_set_init_image and scorch_pipeline_set_input (rank, shape, dtype, values,
// strength, mask), scorch_generate, scorch_cancel. Every call must return a status, never
// crash; a generation that succeeds must give finite samples of the configured size.
//
// Host buffers are sized by the shape the call declares, when that shape is small; a larger
// declared shape gets a one-element buffer, so a library that read it without rejecting
// the shape first is caught by AddressSanitizer.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "scorch/scorch.h"

namespace {

struct Reader {
  const uint8_t* p;
  size_t n;
  bool empty() const { return n == 0; }
  template <typename T>
  T take() {
    T v{};
    const size_t k = n < sizeof(T) ? n : sizeof(T);
    std::memcpy(&v, p, k);
    p += k;
    n -= k;
    return v;
  }
};

scorch_pipeline* load(int which) {
  static scorch_pipeline* cache[2] = {nullptr, nullptr};
  if (cache[which]) return cache[which];
  const std::string src = SCORCH_SOURCE_DIR;
  const std::string yaml =
      which == 0 ? "model: {type: gaussian, path: '" + src + "/models/fmnist_gaussian.safetensors'}\n"
                   "sampler: {name: ddim, steps: 2}\nbatch: 2\nseed: 1\n"
                 : "model: {type: torchscript, path: '" + src + "/tests/fixtures/tensor_cond.pt', shape: [2, 3], "
                   "inputs: [{name: context, source: host, shape: [3, 4]}, {name: guidance, source: host, shape: []}]}\n"
                   "guidance: {scale: 2}\nsampler: {name: euler, steps: 2}\nbatch: 2\nseed: 1\n";
  scorch_pipeline_params params = scorch_pipeline_params_init();
  params.config_yaml = yaml.c_str();
  if (scorch_pipeline_create(&params, &cache[which]) != SCORCH_OK) std::abort();
  return cache[which];
}

// Element count of a declared shape, or -1 when it is negative, overflows or is large.
int64_t small_count(int rank, const int64_t* shape) {
  int64_t count = 1;
  for (int i = 0; i < rank; ++i) {
    if (shape[i] < 0 || (shape[i] > 0 && count > (int64_t(1) << 16) / shape[i])) return -1;
    count *= shape[i];
  }
  return count;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in{data, size};
  const int which = in.take<uint8_t>() % 2;
  scorch_pipeline* p = load(which);
  scorch_pipeline_set_init_image(p, nullptr, 0, nullptr, nullptr, 0.0);  // start from the configured noise
  int generations = 0;
  for (int call = 0; call < 6 && !in.empty(); ++call) {
    const uint8_t op = in.take<uint8_t>() % 4;
    if (op == 0 || op == 1) {
      const int rank = int(in.take<uint8_t>() % 10) - 1;  // -1 .. 8
      int64_t shape[8] = {0};
      for (int i = 0; i < rank; ++i) {
        const uint8_t kind = in.take<uint8_t>();
        // Mostly plausible sizes, sometimes anything (negative, huge).
        shape[i] = kind < 200 ? int64_t(kind % 32) : in.take<int64_t>();
      }
      const int64_t count = rank < 0 ? -1 : small_count(rank, shape);
      std::vector<double> buffer(size_t(count > 0 ? count : 1));
      for (auto& v : buffer) v = in.empty() ? 0.5 : double(in.take<int8_t>()) / 64.0;
      if (op == 0) {
        std::vector<float> x(buffer.begin(), buffer.end());
        const bool with_mask = in.take<uint8_t>() % 2;
        std::vector<float> mask(784 * 2, 0.5f);
        const double strength = double(in.take<int8_t>()) / 100.0;
        scorch_pipeline_set_init_image(p, x.data(), rank, shape, with_mask ? mask.data() : nullptr, strength);
      } else {
        const char* names[] = {"context", "guidance", "", "nope"};
        const char* name = names[in.take<uint8_t>() % 4];
        const auto dtype = scorch_dtype(in.take<uint8_t>() % 4);
        const bool negative = in.take<uint8_t>() % 2;
        std::vector<float> f(buffer.begin(), buffer.end());
        std::vector<int64_t> l(buffer.begin(), buffer.end());
        std::vector<int32_t> i32(buffer.begin(), buffer.end());
        const void* ptr = dtype == SCORCH_FLOAT64 ? static_cast<const void*>(buffer.data())
                          : dtype == SCORCH_INT64 ? static_cast<const void*>(l.data())
                          : dtype == SCORCH_INT32 ? static_cast<const void*>(i32.data())
                                                  : static_cast<const void*>(f.data());
        scorch_pipeline_set_input(p, name, ptr, dtype, rank, shape, negative);
      }
    } else if (op == 2 && generations++ < 1) {
      scorch_result* r = nullptr;
      if (scorch_generate(p, &r) == SCORCH_OK) {
        int64_t n = 1;
        for (int a = 0; a < scorch_result_rank(r); ++a) n *= scorch_result_dim(r, a);
        const float* x = scorch_result_data(r);
        for (int64_t i = 0; i < n; ++i)
          if (!std::isfinite(x[i])) std::abort();
        scorch_result_free(r);
      }
    } else {
      (void)scorch_last_error(p);
    }
  }
  return 0;
}
