// The C++ API: a pipeline built from a validated config (model, schedule,
// sampler, noise, outputs). The CLI and the C API are built on it.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "scorch/ems.h"
#include "scorch/progress.h"

namespace YAML {
class Node;
}

namespace scorch {

struct GenerateResult {
  at::Tensor samples;     // [batch, *shape], in the configured dtype (latent models: decoded images)
  at::Tensor latents;     // latent models: the samples before decoding
  at::Tensor trajectory;  // [steps + 1, batch, *shape] when output.trajectory is set (first: x_T)
  int64_t nfe = 0;
  int steps = 0;
  double seconds = 0.0;          // the sampling loop (start noise to the last step), wall time
  double network_seconds = 0.0;  // of which inside the TorchScript network's calls (wall time)
  double decode_seconds = 0.0;   // latent models: decoding, after the loop
  std::vector<std::string> notes;  // choices the sampler made, one line each
};

class Pipeline {
 public:
  // Validates every key and loads the model; any problem is a bad-input Error naming the key.
  static std::unique_ptr<Pipeline> from_config(const YAML::Node& config);
  ~Pipeline();

  // SDEdit, as the init_image / strength / inpaint_mask config keys: x_init of shape
  // [batch, *shape] or one sample ([*shape] or [1, *shape]) for the whole batch, strength in
  // (0, 1]; with a mask (values in [0, 1], broadcastable to one sample; 1 where new content
  // is generated) it inpaints. An undefined x_init goes back to the configured start. Bad
  // input is an Error and changes nothing.
  void set_init_image(const at::Tensor& x_init, double strength, const at::Tensor& mask = {});
  // A declared network input's value (model.inputs; negative: its unconditional value for
  // classifier-free guidance): [*shape] for the whole batch or [batch, *shape], any
  // numeric dtype (converted to the declared one). Bad input is an Error naming the input.
  void set_input(const std::string& name, const at::Tensor& value, bool negative = false);
  // The starting state: the `invert` samples, init_noise if configured, the noised
  // init_image, else seeded noise.
  at::Tensor initial_noise() const;
  // Samples first .. first + count - 1 of it alone.
  at::Tensor initial_noise(int64_t first, int64_t count) const;
  GenerateResult generate(const ProgressFn& progress = {}) const;
  // Samples first .. first + count - 1 of the batch alone (a rank's share of a distributed
  // run, docs/distributed.md): those rows of generate(), since each sample's noise, seed,
  // label and inputs are its own (the samplers and correctors whose step control couples
  // the batch are listed there).
  GenerateResult generate(const ProgressFn& progress, int64_t first, int64_t count) const;
  int64_t batch() const;
  // Writes output.png / output.npy (atomically); returns the paths written.
  std::vector<std::string> write_outputs(const GenerateResult& result) const;

  // The resolved config as YAML (every key with its value, per-sample seeds, provenance:
  // the scorch version and the model's SHA-256), as written into the PNG's `scorch` chunk and
  // the .npy's .json; `scorch generate --config` of either runs it again.
  std::string provenance_yaml() const;
  // One line: sampler, steps, NFE, seeds, batch, model (the PNG's `parameters` chunk).
  std::string summary(const GenerateResult& result) const;
  // DPM-Solver-v3's empirical model statistics of this pipeline's model as the sampler sees
  // it (guidance included), `scorch ems`: from data samples [N, *model shape] (a conditional
  // model then needs one label per sample from the config: cond as a class or a list), or,
  // when `data` is undefined, from the batch this config generates (latents for latent
  // models, each with its own label). The lambda range defaults to the configured sampler's
  // (its finite points). The file records the model's SHA-256, schedule and guidance, which
  // dpm_solver_v3 checks against its own pipeline's.
  Ems estimate_ems(const at::Tensor& data, EmsEstimate options,
                   const std::function<void(int64_t, int64_t)>& progress = {}) const;
  // One output sample's shape (a latent model's decoded image).
  const std::vector<int64_t>& sample_shape() const;
  const std::string& sampler_name() const;

 private:
  Pipeline();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace scorch
