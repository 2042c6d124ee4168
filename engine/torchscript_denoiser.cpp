#include "scorch/torchscript_denoiser.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <torch/script.h>
#include <torch/version.h>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "scorch/error.h"
#include "scorch/guidance.h"
#include "scorch/io.h"
#include "scorch/model_cache.h"
#include "scorch/rng.h"
#include "scorch/schedule.h"
#include "scorch/script_module.h"

namespace scorch {

namespace {

// LibTorch 1.13 and 2.x name the per-thread warning handler's accessors differently.
c10::WarningHandler* get_torch_warning_handler() {
#if TORCH_VERSION_MAJOR >= 2
  return c10::WarningUtils::get_warning_handler();
#else
  return c10::Warning::get_warning_handler();
#endif
}

void set_torch_warning_handler(c10::WarningHandler* handler) {
#if TORCH_VERSION_MAJOR >= 2
  c10::WarningUtils::set_warning_handler(handler);
#else
  c10::Warning::set_warning_handler(handler);
#endif
}

}  // namespace

TimeInput parse_time_input(const std::string& name) {
  if (name == "t") return TimeInput::T;
  if (name == "index") return TimeInput::Index;
  if (name == "sigma") return TimeInput::Sigma;
  bad_input("model.time_input: expected t | index | sigma, got '" + name + "'");
}

namespace {
thread_local int64_t network_ns = 0;
}

int64_t network_nanoseconds() { return network_ns; }

int64_t cpu_chunk_size(int64_t batch) {
  return std::clamp<int64_t>((batch + 1) / 2, 2, 16);
}

double model_time(TimeInput input, const Schedule& schedule, double t) {
  switch (input) {
    case TimeInput::T: return t;
    case TimeInput::Index: return schedule.timestep(t);
    case TimeInput::Sigma: return schedule.ve_sigma(t);
  }
  return t;
}

namespace {

// OpenBLAS, which serves LibTorch's matrix products on Debian (libopenblas0-pthread), keeps
// its own pthread pool sized to the cores and does not see OpenMP's per-thread settings: two
// one-thread chunks running side by side each started two BLAS threads, four busy threads on
// two cores yielding to each other, and a batch of 4 took 1.6x the time of the bare call
// (docs/benchmarks.md, "latency"). This sets the pool's size for one chunked call and puts
// the old size back; a BLAS without these symbols (MKL, the reference BLAS) is left alone.
// Chunks always call OpenBLAS on one thread, whatever --threads, so the result stays
// independent of it.
class BlasThreads {
 public:
  // threads 0: leave the pool as it is.
  explicit BlasThreads(int threads) {
    if (threads <= 0) return;
    static const auto get = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    static const auto set = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (!get || !set) return;
    const int current = get();
    if (current == threads) return;
    set_ = set;
    saved_ = current;
    set_(threads);
  }
  ~BlasThreads() {
    if (set_) set_(saved_);
  }
  BlasThreads(const BlasThreads&) = delete;
  BlasThreads& operator=(const BlasThreads&) = delete;

 private:
  void (*set_)(int) = nullptr;
  int saved_ = 0;
};

class TorchScriptDenoiser final : public Denoiser {
 public:
  TorchScriptDenoiser(torch::jit::Module module, TorchScriptSpec spec, std::shared_ptr<const Schedule> sched,
                      bool conditional)
      : module_(std::move(module)), spec_(std::move(spec)), sched_(std::move(sched)), conditional_(conditional) {}

  Prediction predict(const at::Tensor& x, double t, const at::Tensor& cond) override {
    c10::InferenceMode guard;
    const auto start = std::chrono::steady_clock::now();
    const at::Tensor out = chunked_forward(x, t, cond);
    network_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
    if (out.sizes() != x.sizes())
      bad_input("model '" + spec_.path + "': forward returned shape " + shape_string(out.sizes()) +
                " for input " + shape_string(x.sizes()));
    return from_model_output(spec_.prediction, out.to(x.scalar_type()), x, *sched_, t);
  }

  // On the CPU (cpu_parallel: chunks) the batch is cut into chunks whose size depends on
  // the batch alone (model.max_batch, else cpu_chunk_size) that run in parallel, each on one
  // thread: oneDNN's convolutions split their reductions by thread count, so a call on
  // several threads is not reproducible across --threads, while a chunk on one thread is.
  // With intra_op, and on other devices: sequential chunks when max_batch is set, else one
  // call, with LibTorch's own threads inside.
  at::Tensor chunked_forward(const at::Tensor& x, double t, const at::Tensor& cond) {
    const bool chunks = x.device().is_cpu() && !spec_.intra_op;
    const int64_t chunk = spec_.max_batch > 0 ? spec_.max_batch : (chunks ? cpu_chunk_size(x.size(0)) : x.size(0));
    const int64_t count = (x.size(0) + chunk - 1) / chunk;
    if (count <= 1 && !chunks) return forward(x, t, cond);
    std::vector<at::Tensor> parts(static_cast<size_t>(count));
    const auto run = [&](int64_t i) {
      const int64_t n = std::min(chunk, x.size(0) - i * chunk);
      parts[size_t(i)] = forward(x.narrow(0, i * chunk, n), t, cond.defined() ? cond.narrow(0, i * chunk, n) : cond);
    };
#ifdef _OPENMP
    if (chunks && at::get_num_threads() > 1) {
      // No more threads than chunks: with one chunk (a batch of 1 or 2) a team of idle
      // threads only waits at the barrier, which cost 1.5x at batch 1 (0.09 s against 0.06 s
      // for 10 U-Net steps). A team of one still sets its thread count to 1 below, so each
      // chunk runs single-threaded, as with --threads 1.
      const int threads = int(std::min<int64_t>(at::get_num_threads(), count));
      // One BLAS thread per chunk thread, also with one chunk: at a batch of 1, 10 U-Net
      // steps took 29 ms with two BLAS threads and 27.5 ms with one.
      const BlasThreads blas(1);
      // Inside an active OpenMP region ATen and oneDNN run nested work on the calling
      // thread; with this task's thread count set to 1 they also plan it as for one
      // thread, so every chunk is computed exactly as with --threads 1.
      std::exception_ptr error;
      // LibTorch's warning handler is per thread: the workers take the caller's, so that a
      // network's warnings go where the caller sends them (the CLI collects them).
      c10::WarningHandler* const warnings = get_torch_warning_handler();
#pragma omp parallel for num_threads(threads) schedule(static)
      for (int64_t i = 0; i < count; ++i) {
        // ATen sets a thread's OpenMP thread count to --threads on the thread's first ATen
        // call (lazy_init_num_threads): make that call first, or it would undo the 1 below on a
        // fresh worker, and ATen would then pick oneDNN over its own kernels for convolutions
        // of fewer than 16 samples, which round differently from the --threads 1 run.
        (void)at::get_num_threads();
        omp_set_num_threads(1);
        set_torch_warning_handler(warnings);
        try {
          c10::InferenceMode guard;
          run(i);
        } catch (...) {
#pragma omp critical
          if (!error) error = std::current_exception();
        }
      }
      if (error) std::rethrow_exception(error);
      return count == 1 ? parts[0] : at::cat(parts);
    }
#endif
    // --threads 1 means one BLAS thread too.
    const BlasThreads blas(chunks ? 1 : 0);
    for (int64_t i = 0; i < count; ++i) run(i);
    return count == 1 ? parts[0] : at::cat(parts);
  }

  // A network that fails only in a 16-bit dtype mixes float32 into its layers (a time
  // embedding not cast to x's dtype) or meets a kernel the device lacks (float16 on CPU).
  std::string reduced_precision_note() const {
    if (spec_.dtype != at::kBFloat16 && spec_.dtype != at::kHalf) return "";
    return std::string(" in ") + (spec_.dtype == at::kHalf ? "float16" : "bfloat16") + " (model.dtype)";
  }

  // The time argument stays in float32 when the network runs in a 16-bit dtype:
  // bfloat16 keeps 8 significant bits, so DDPM indices up to 999 would collide.
  at::Tensor time_argument(const at::Tensor& x, double t) const {
    const bool reduced = spec_.dtype == at::kBFloat16 || spec_.dtype == at::kHalf;
    return at::full({x.size(0)}, model_time(spec_.time_input, *sched_, t),
                    x.options().dtype(reduced ? at::kFloat : spec_.dtype));
  }

  at::Tensor forward(const at::Tensor& x, double t, const at::Tensor& cond) {
    std::vector<c10::IValue> args = {x.to(spec_.dtype), time_argument(x, t)};
    if (declared()) {
      if (!cond.defined()) bad_input("model '" + spec_.path + "': declared inputs need a row index per sample");
      for (auto& a : spec_.inputs->arguments(cond, x.device())) args.push_back(std::move(a));
    } else if (conditional_) {
      if (!cond.defined()) bad_input("model '" + spec_.path + "' is conditional: set `cond` (class labels)");
      args.emplace_back(cond.to(x.device()));
    }
    const std::string failed = "model '" + spec_.path + "': forward failed for input " + shape_string(x.sizes()) +
                               reduced_precision_note() + ": ";
    c10::IValue out;
    try {
      out = module_.forward(args);
    } catch (const c10::Error& e) {
      bad_input(failed + script_error_line(e));
    } catch (const std::exception& e) {
      bad_input(failed + script_error_line(e));
    }
    if (!out.isTensor()) bad_input("model '" + spec_.path + "': forward must return a Tensor");
    return out.toTensor();
  }

  std::vector<int64_t> sample_shape() const override { return spec_.shape; }
  bool conditional() const override { return conditional_ || declared(); }
  bool declared() const { return spec_.inputs && !spec_.inputs->empty(); }
  bool has_log_density() const override { return bool(module_.find_method("energy")); }

  // log p_t(x) = -energy(x, t, [cond]), one value per sample.
  at::Tensor log_density(const at::Tensor& x, double t, const at::Tensor& cond) override {
    const auto energy = module_.find_method("energy");
    if (!energy) return Denoiser::log_density(x, t, cond);
    std::vector<c10::IValue> args = {x.to(spec_.dtype), time_argument(x, t)};
    if (conditional_) args.emplace_back(cond.to(x.device()));
    at::Tensor e;
    try {
      e = (*energy)(args).toTensor();
    } catch (const std::exception& err) {
      bad_input("model '" + spec_.path + "': energy failed: " + script_error_line(err));
    }
    if (e.dim() != 1 || e.size(0) != x.size(0))
      bad_input("model '" + spec_.path + "': energy must return one value per sample [B]");
    return -e.to(x.scalar_type());
  }

 private:
  torch::jit::Module module_;
  TorchScriptSpec spec_;
  std::shared_ptr<const Schedule> sched_;
  bool conditional_;
};

}  // namespace

std::unique_ptr<Denoiser> load_torchscript_denoiser(const TorchScriptSpec& spec,
                                                    std::shared_ptr<const Schedule> schedule) {
  const std::string what = "model.path '" + spec.path + "'";
  check_input_file(spec.path, what);
  torch::jit::Module module = load_frozen_module(spec.path, what, spec.device, spec.dtype, {"energy"});
  const auto method = module.find_method("forward");
  if (!method) bad_input(what + ": the module has no forward method");
  // The schema's first argument is self.
  const auto& schema_args = method->function().getSchema().arguments();
  const size_t arity = schema_args.size() - 1;
  const bool declared = spec.inputs && !spec.inputs->empty();
  if (declared) {
    const auto& inputs = spec.inputs->inputs();
    std::string names = "x, t";
    for (const auto& in : inputs) names += ", " + in.name;
    if (arity != 2 + inputs.size())
      bad_input(what + ": forward takes " + std::to_string(arity) + " arguments; model.inputs declares forward(" + names +
                ")");
    // Declared in the module's own order: a swapped pair would be passed silently otherwise.
    for (size_t k = 0; k < inputs.size(); ++k)
      if (schema_args[3 + k].name() != inputs[k].name)
        bad_input(what + ": argument " + std::to_string(k + 3) + " of forward is '" + schema_args[3 + k].name() +
                  "', but model.inputs[" + std::to_string(k) + "] is '" + inputs[k].name +
                  "' (declare the inputs by the module's names, in its order)");
  } else if (arity != 2 && arity != 3) {
    bad_input(what + ": forward takes " + std::to_string(arity) +
              " arguments; expected forward(x, t) or forward(x, t, cond), or declare its extra inputs in model.inputs");
  }
  auto denoiser = std::make_unique<TorchScriptDenoiser>(module, spec, schedule, !declared && arity == 3);

  // One-sample dry run: catches a wrong signature, shape or non-finite output now, not mid-run.
  // Passed once, it is remembered with the kept module (model_cache.h) for the same file and
  // spec; not with declared inputs, whose values come with each pipeline.
  const double t_mid = 0.5 * (schedule->t_max() + schedule->t_min());
  const std::string file = declared ? "" : model_file_key(spec.path);
  const std::string checked = file.empty() ? "" : "checked|" + file + "|" + spec.device.str() + "|" +
                                                       c10::toString(spec.dtype) + "|" + shape_string(spec.shape) + "|" +
                                                       std::to_string(int(spec.time_input)) + "|" +
                                                       std::to_string(int(spec.prediction)) + "|" + std::to_string(t_mid);
  cached_model<bool>(checked, [&]() -> std::pair<bool, size_t> {
    std::vector<int64_t> sizes = {1};
    sizes.insert(sizes.end(), spec.shape.begin(), spec.shape.end());
    const at::Tensor x = Rng(0).normal(sizes, at::TensorOptions().dtype(spec.dtype).device(spec.device));
    const at::Tensor cond = at::zeros({1}, at::TensorOptions().dtype(at::kLong).device(spec.device));
    c10::InferenceMode guard;
    const at::Tensor out = denoiser->forward(x, t_mid, cond);
    if (out.sizes() != x.sizes())
      bad_input(what + ": forward returned shape " + shape_string(out.sizes()) + " for input " +
                shape_string(x.sizes()) + "; expected the input's shape (model.shape)");
    if (!at::isfinite(out).all().item<bool>()) bad_input(what + ": forward returned non-finite values on a dry run");
    return {true, 1};
  });
  return denoiser;
}

namespace {

class TorchScriptClassifier final : public Classifier {
 public:
  TorchScriptClassifier(torch::jit::Module m, std::string path, TimeInput ti, std::shared_ptr<const Schedule> s)
      : module_(std::move(m)), path_(std::move(path)), time_input_(ti), sched_(std::move(s)) {}
  at::Tensor log_prob(const at::Tensor& x, double t, const at::Tensor& labels) override {
    const at::Tensor t_in = at::full({x.size(0)}, model_time(time_input_, *sched_, t), x.options());
    at::Tensor logits;
    try {
      logits = module_.forward({x, t_in}).toTensor();
    } catch (const std::exception& e) {
      bad_input("guidance.classifier '" + path_ + "': forward(x, t) failed: " + script_error_line(e));
    }
    if (logits.dim() != 2 || logits.size(0) != x.size(0))
      bad_input("guidance.classifier '" + path_ + "': forward must return logits [B, classes]");
    if ((labels < 0).any().item<bool>() || (labels >= logits.size(1)).any().item<bool>())
      bad_input("guidance.classifier '" + path_ + "': a label is outside its " + std::to_string(logits.size(1)) +
                " classes");
    return at::log_softmax(logits.to(x.scalar_type()), 1).gather(1, labels.to(x.device()).unsqueeze(1)).squeeze(1);
  }

 private:
  torch::jit::Module module_;
  std::string path_;
  TimeInput time_input_;
  std::shared_ptr<const Schedule> sched_;
};

}  // namespace

std::shared_ptr<Classifier> load_torchscript_classifier(const std::string& path, TimeInput time_input,
                                                        std::shared_ptr<const Schedule> schedule, at::ScalarType dtype,
                                                        c10::Device device) {
  const std::string what = "guidance.classifier.path '" + path + "'";
  check_input_file(path, what);
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, device);
  } catch (const std::exception& e) {
    bad_input(what + ": not a loadable TorchScript file (" + script_error_line(e) + ")");
  }
  const auto method = module.find_method("forward");
  if (!method || method->function().getSchema().arguments().size() != 3)
    bad_input(what + ": expected forward(x, t) -> logits [B, classes] (a noise-conditional classifier)");
  module.eval();
  module.to(device, dtype);
  return std::make_shared<TorchScriptClassifier>(module, path, time_input, std::move(schedule));
}

}  // namespace scorch
