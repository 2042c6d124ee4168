// The C API (include/scorch/scorch.h) over scorch::Pipeline. Every entry point
// catches everything: errors become a status and the handle's last-error message.
#include "scorch/scorch.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "scorch/config.h"
#include "scorch/error.h"
#include "scorch/pipeline.h"
#include "scorch/token_pipeline.h"

struct scorch_pipeline {
  std::unique_ptr<scorch::Pipeline> pipeline;
  std::unique_ptr<scorch::TokenPipeline> tokens;  // model.type: tokens (pipeline is then empty)
  scorch_pipeline_params params{};
  std::atomic<bool> cancel{false};
  std::atomic<bool> busy{false};
  std::mutex error_mutex;
  std::string last_error;
};

struct scorch_result {
  at::Tensor samples;  // float32, contiguous, on the CPU (continuous models)
  at::Tensor tokens;   // int64 [batch, L], contiguous (token models)
  int64_t nfe = 0;
  const at::Tensor& shaped() const { return tokens.defined() ? tokens : samples; }
};

namespace {

thread_local std::string create_error;

// Runs f, mapping every exception to a status and a message.
template <typename F>
scorch_status guarded(std::string* message, F f) {
  try {
    f();
    message->clear();
    return SCORCH_OK;
  } catch (const scorch::Error& e) {
    *message = e.what();
    switch (e.status()) {
      case scorch::Status::BadInput: return SCORCH_BAD_INPUT;
      case scorch::Status::Cancelled: return SCORCH_CANCELLED;
      default: return SCORCH_INTERNAL;
    }
  } catch (const c10::Error& e) {
    if (scorch::is_allocation_failure(e)) {
      *message = scorch::allocation_failure_message(e);
      return SCORCH_BAD_INPUT;
    }
    *message = std::string("internal error: ") + e.what_without_backtrace();
  } catch (const std::exception& e) {
    if (scorch::is_allocation_failure(e)) {
      *message = scorch::allocation_failure_message(e);
      return SCORCH_BAD_INPUT;
    }
    *message = std::string("internal error: ") + e.what();
  } catch (...) {
    *message = "internal error: unknown exception";
  }
  return SCORCH_INTERNAL;
}

}  // namespace

extern "C" {

int scorch_abi_version(void) { return SCORCH_ABI_VERSION; }

scorch_pipeline_params scorch_pipeline_params_init(void) {
  scorch_pipeline_params p{};
  return p;
}

scorch_status scorch_pipeline_create(const scorch_pipeline_params* params, scorch_pipeline** out) {
  if (!out) {
    create_error = "scorch_pipeline_create: out is NULL";
    return SCORCH_INVALID_ARGUMENT;
  }
  *out = nullptr;
  if (!params) {
    create_error = "scorch_pipeline_create: params is NULL (use scorch_pipeline_params_init())";
    return SCORCH_INVALID_ARGUMENT;
  }
  if (params->n_overrides < 0 || (params->n_overrides > 0 && !params->overrides)) {
    create_error = "scorch_pipeline_create: overrides is NULL or n_overrides < 0";
    return SCORCH_INVALID_ARGUMENT;
  }
  for (int i = 0; i < params->n_overrides; ++i)
    if (!params->overrides[i]) {
      create_error = "scorch_pipeline_create: overrides[" + std::to_string(i) + "] is NULL";
      return SCORCH_INVALID_ARGUMENT;
    }
  auto handle = std::make_unique<scorch_pipeline>();
  handle->params = *params;
  const scorch_status s = guarded(&create_error, [&] {
    std::vector<std::string> sets;
    for (int i = 0; i < params->n_overrides; ++i) sets.emplace_back(params->overrides[i]);
    // An empty path is a mistake (the built-in default is config_path = NULL), as with
    // the CLI's --config "".
    if (params->config_path && !*params->config_path) scorch::bad_input("config_path: empty path");
    const YAML::Node config = params->config_path ? scorch::load_config(params->config_path, sets)
                              : params->config_yaml ? scorch::load_config_text(params->config_yaml, sets)
                                                    : scorch::load_config("", sets);
    if (scorch::is_token_config(config))
      handle->tokens = scorch::TokenPipeline::from_config(config);
    else
      handle->pipeline = scorch::Pipeline::from_config(config);
  });
  if (s == SCORCH_OK) *out = handle.release();
  return s;
}

void scorch_pipeline_free(scorch_pipeline* pipeline) { delete pipeline; }

scorch_status scorch_generate(scorch_pipeline* p, scorch_result** out) {
  if (!p) return SCORCH_INVALID_ARGUMENT;
  if (!out) {
    std::lock_guard<std::mutex> lock(p->error_mutex);
    p->last_error = "scorch_generate: out is NULL";
    return SCORCH_INVALID_ARGUMENT;
  }
  *out = nullptr;
  if (p->busy.exchange(true)) {
    std::lock_guard<std::mutex> lock(p->error_mutex);
    p->last_error = "scorch_generate: this pipeline is already generating (use one pipeline per thread)";
    return SCORCH_BUSY;
  }
  std::string message;
  auto result = std::make_unique<scorch_result>();
  const scorch_status s = guarded(&message, [&] {
    const scorch_pipeline_params& params = p->params;
    const scorch::ProgressFn progress = [p, &params](const scorch::StepInfo& info) {
      if (p->cancel.exchange(false)) return false;
      if (params.preview && info.x0.defined()) {
        const at::Tensor x0 = info.x0.to(at::kCPU).to(at::kFloat).contiguous();
        const std::vector<int64_t> shape = x0.sizes().vec();
        params.preview(params.user, info.step, x0.data_ptr<float>(), int(shape.size()), shape.data());
      }
      return !params.progress || params.progress(params.user, info.step, info.total, info.nfe);
    };
    if (p->cancel.exchange(false)) scorch::cancelled("cancelled before the first step");
    if (p->tokens) {
      // Token samplers report no steps: progress and preview are not called.
      const scorch::TokenResult r = p->tokens->generate();
      p->tokens->write_outputs(r);
      result->tokens = r.tokens.to(at::kCPU).to(at::kLong).contiguous();
      result->nfe = std::llround(r.calls);
      return;
    }
    const scorch::GenerateResult r = p->pipeline->generate(progress);
    if (params.log)
      for (const auto& line : r.notes) params.log(params.user, line.c_str());
    // The config's output files, as scorch generate writes them (all or nothing).
    p->pipeline->write_outputs(r);
    result->samples = r.samples.to(at::kCPU).to(at::kFloat).contiguous();
    result->nfe = r.nfe;
  });
  {
    std::lock_guard<std::mutex> lock(p->error_mutex);
    p->last_error = message;
  }
  p->busy = false;
  if (s == SCORCH_OK) *out = result.release();
  return s;
}

namespace {

// Whether a host buffer of this shape could exist: its byte count fits in an int64 (a
// shape that overflows is refused before a tensor view is made of it).
bool fits_in_memory(const std::vector<int64_t>& sizes, int64_t element_bytes) {
  int64_t n = element_bytes;
  for (const int64_t s : sizes) {
    if (s > std::numeric_limits<int64_t>::max() / n) return false;
    n *= s;
  }
  return true;
}

std::string shape_words(const std::vector<int64_t>& sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

}  // namespace

scorch_status scorch_pipeline_set_fixed_tokens(scorch_pipeline* p, const int64_t* tokens, const int64_t* shape) {
  if (!p) return SCORCH_INVALID_ARGUMENT;
  const auto fail = [p](scorch_status status, const std::string& message) {
    std::lock_guard<std::mutex> lock(p->error_mutex);
    p->last_error = "scorch_pipeline_set_fixed_tokens: " + message;
    return status;
  };
  if (!p->tokens) return fail(SCORCH_BAD_INPUT, "this pipeline runs a continuous model (fixed tokens are for model.type: tokens)");
  if (tokens && !shape) return fail(SCORCH_INVALID_ARGUMENT, "shape must not be NULL with tokens");
  if (tokens && (shape[0] <= 0 || shape[1] <= 0)) return fail(SCORCH_INVALID_ARGUMENT, "shape entries must be positive");
  if (tokens && !fits_in_memory({shape[0], shape[1]}, sizeof(int64_t)))
    return fail(SCORCH_BAD_INPUT, "shape " + shape_words({shape[0], shape[1]}) + " is too large");
  if (p->busy.exchange(true)) return fail(SCORCH_BUSY, "this pipeline is generating");
  std::string message;
  const scorch_status s = guarded(&message, [&] {
    p->tokens->set_fixed(tokens ? at::from_blob(const_cast<int64_t*>(tokens), {shape[0], shape[1]}, at::kLong)
                                : at::Tensor());
  });
  {
    std::lock_guard<std::mutex> lock(p->error_mutex);
    p->last_error = message.empty() ? std::string() : "scorch_pipeline_set_fixed_tokens: " + message;
  }
  p->busy = false;
  return s;
}

scorch_status scorch_pipeline_set_init_image(scorch_pipeline* p, const float* data, int rank, const int64_t* shape,
                                             const float* mask, double strength) {
  if (!p) return SCORCH_INVALID_ARGUMENT;
  const auto fail = [p](scorch_status status, const std::string& message) {
    std::lock_guard<std::mutex> lock(p->error_mutex);
    p->last_error = "scorch_pipeline_set_init_image: " + message;
    return status;
  };
  if (p->tokens) return fail(SCORCH_BAD_INPUT, "a token model takes no image (use scorch_pipeline_set_fixed_tokens)");
  if (data && (rank < 1 || rank > 8 || !shape)) return fail(SCORCH_INVALID_ARGUMENT, "rank must be 1..8 with a shape");
  std::vector<int64_t> sizes;
  for (int i = 0; data && i < rank; ++i) {
    if (shape[i] <= 0) return fail(SCORCH_INVALID_ARGUMENT, "shape entries must be positive");
    sizes.push_back(shape[i]);
  }
  if (data && !fits_in_memory(sizes, sizeof(float))) return fail(SCORCH_BAD_INPUT, "shape " + shape_words(sizes) + " is too large");
  if (p->busy.exchange(true)) return fail(SCORCH_BUSY, "this pipeline is generating");
  std::string message;
  const scorch_status s = guarded(&message, [&] {
    // A view of the caller's memory: the pipeline checks its shape before reading a value,
    // and copies what it keeps.
    const at::Tensor x = data ? at::from_blob(const_cast<float*>(data), sizes, at::kFloat) : at::Tensor();
    const at::Tensor m =
        data && mask ? at::from_blob(const_cast<float*>(mask), p->pipeline->sample_shape(), at::kFloat).clone()
                     : at::Tensor();
    p->pipeline->set_init_image(x, strength, m);
  });
  {
    std::lock_guard<std::mutex> lock(p->error_mutex);
    p->last_error = message;
  }
  p->busy = false;
  return s;
}

scorch_status scorch_pipeline_set_input(scorch_pipeline* p, const char* name, const void* data, scorch_dtype dtype,
                                        int rank, const int64_t* shape, bool negative) {
  if (!p) return SCORCH_INVALID_ARGUMENT;
  const auto fail = [p](scorch_status status, const std::string& message) {
    std::lock_guard<std::mutex> lock(p->error_mutex);
    p->last_error = "scorch_pipeline_set_input: " + message;
    return status;
  };
  if (!name || !data) return fail(SCORCH_INVALID_ARGUMENT, "name and data must not be NULL");
  if (p->tokens) return fail(SCORCH_BAD_INPUT, "a token model declares no inputs (class labels: the config's cond)");
  if (rank < 0 || rank > 8 || (rank > 0 && !shape)) return fail(SCORCH_INVALID_ARGUMENT, "rank must be 0..8 with a shape");
  // A C caller may pass any int as the enum: it is read as an int, so a value outside the
  // enumerators is an error here, not undefined behaviour.
  int code = 0;
  static_assert(sizeof(code) == sizeof(dtype), "scorch_dtype is an int-sized enum");
  std::memcpy(&code, &dtype, sizeof code);
  at::ScalarType type;
  switch (code) {
    case SCORCH_FLOAT32: type = at::kFloat; break;
    case SCORCH_FLOAT64: type = at::kDouble; break;
    case SCORCH_INT64: type = at::kLong; break;
    case SCORCH_INT32: type = at::kInt; break;
    default: return fail(SCORCH_INVALID_ARGUMENT, "unknown dtype");
  }
  std::vector<int64_t> sizes;
  for (int i = 0; i < rank; ++i) {
    if (shape[i] <= 0) return fail(SCORCH_INVALID_ARGUMENT, "shape entries must be positive");
    sizes.push_back(shape[i]);
  }
  if (!fits_in_memory(sizes, 8)) return fail(SCORCH_BAD_INPUT, "shape " + shape_words(sizes) + " is too large");
  if (p->busy.exchange(true)) return fail(SCORCH_BUSY, "this pipeline is generating");
  std::string message;
  const scorch_status s = guarded(&message, [&] {
    // A view of the caller's memory: the shape is checked before a value is read, and the
    // pipeline keeps a converted copy.
    p->pipeline->set_input(name, at::from_blob(const_cast<void*>(data), sizes, type), negative);
  });
  {
    std::lock_guard<std::mutex> lock(p->error_mutex);
    p->last_error = message;
  }
  p->busy = false;
  return s;
}

void scorch_cancel(scorch_pipeline* p) {
  if (p) p->cancel = true;
}

const char* scorch_last_error(const scorch_pipeline* p) {
  if (!p) return create_error.c_str();
  return p->last_error.c_str();
}

const float* scorch_result_data(const scorch_result* r) {
  return r && r->samples.defined() ? r->samples.data_ptr<float>() : nullptr;
}
const int64_t* scorch_result_tokens(const scorch_result* r) {
  return r && r->tokens.defined() ? r->tokens.data_ptr<int64_t>() : nullptr;
}
int scorch_result_rank(const scorch_result* r) { return r ? int(r->shaped().dim()) : 0; }
int64_t scorch_result_dim(const scorch_result* r, int axis) {
  return r && axis >= 0 && axis < r->shaped().dim() ? r->shaped().size(axis) : 0;
}
int64_t scorch_result_nfe(const scorch_result* r) { return r ? r->nfe : 0; }
void scorch_result_free(scorch_result* r) { delete r; }

}  // extern "C"
