// One reader per config section (internal to pipeline/). Each declares its schema once
// (config_schemas() lists them for `scorch config` and the docs test) and returns a plain
// struct or the engine object the section describes. Errors name the key.
#pragma once

#include <ATen/core/Tensor.h>
#include <yaml-cpp/yaml.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "scorch/config.h"
#include "scorch/denoiser.h"
#include "scorch/discrete.h"
#include "scorch/discrete_sampler.h"
#include "scorch/model_inputs.h"
#include "scorch/stages.h"
#include "scorch/options.h"
#include "scorch/rng.h"
#include "scorch/sampler.h"
#include "scorch/schedule.h"

namespace scorch {

// The top level of a continuous config: seed, batch, device, dtype, noise and image inputs, cond.
struct TopSpec {
  Options o;
  std::vector<uint64_t> seeds;  // sample i's seed (read_seeds)
  NoiseGenerator noise = NoiseGenerator::Scorch;
  int64_t batch = 1;
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
};
TopSpec read_top(const YAML::Node& config);

// The largest batch read_top accepts before the sample shape is known.
constexpr int64_t kMaxBatch = int64_t(1) << 24;
// Throws a bad-input Error naming `batch` when `batch` samples of `shape` in `dtype` (four
// copies: the state, its noise, the prediction, the output) would exceed input_byte_limit().
void check_batch_memory(int64_t batch, const std::vector<int64_t>& shape, at::ScalarType dtype);

// `seed`: one integer s (sample i gets s + i) or a list of `batch` integers, all >= 0.
std::vector<uint64_t> read_seeds(const YAML::Node& seed, int64_t batch);

// resolved (optional): every schedule key with its value, for the provenance record.
// sample_shape: one sample's shape (model.shape), from which flow's dynamic shift counts the
// latent tokens when schedule.image_seq_len is 0.
std::shared_ptr<const Schedule> read_schedule(const YAML::Node& node, YAML::Node* resolved = nullptr,
                                              const std::vector<int64_t>& sample_shape = {});

// `provenance:` (written by scorch into every output's config): the scorch version and the
// model file's SHA-256. A config read back from an output checks the model against it.
struct Provenance {
  std::string scorch_version, model_sha256;
};
Provenance read_provenance(const YAML::Node& node);
// This build's version (CMake's project version).
const char* scorch_version();

// A model section (`model:` or an entry of guidance.compose.models); keys in `skip` belong
// to the caller. Errors name the section by `path`.
struct LoadedModel {
  std::unique_ptr<Denoiser> denoiser;
  Options options;
  std::shared_ptr<ModelInputs> inputs;  // torchscript with model.inputs; else null
};
// model.inputs: the declared inputs, their file and scalar values read and shape-checked
// (per-sample row counts are checked against the batch by the pipeline); null if none.
std::shared_ptr<ModelInputs> read_model_inputs(const YAML::Node& list, const std::string& path,
                                               at::ScalarType network_dtype);
LoadedModel read_model(const YAML::Node& node, const std::string& path, const std::shared_ptr<const Schedule>& schedule,
                       at::ScalarType dtype, at::Device device, const std::set<std::string>& skip = {});

struct SamplerSpec {
  const SamplerEntry* entry = nullptr;
  Options options;
  GridSpec grid;
};
SamplerSpec read_sampler(const YAML::Node& node);

// cond: one label, a list (one per sample), `rows` (one grid row per class) or `null_label`.
struct Labels {
  at::Tensor labels;           // [batch] int64 on the CPU; undefined: unconditional
  int64_t rows_per_class = 0;  // cond: rows
};
Labels read_cond(const YAML::Node& cond, const Options& model, bool conditional, int64_t batch);
// Declared inputs (model.inputs): `cond` fills the input with source: label (its negative rows
// model.null_label when set), read as read_cond; an error when cond is given and no input
// takes it. Returns the labels (undefined without a label input). Continuous and token
// pipelines alike.
Labels apply_cond_to_inputs(ModelInputs& inputs, const YAML::Node& cond, const Options& model, int64_t batch);
// The error for classifier-free guidance on declared inputs without negative rows.
extern const char* const kNeedsNegative;

struct OutputSpec {
  std::string png, npy, trajectory, labels, latents;
  int nrow = 0;
};
OutputSpec read_outputs(const YAML::Node& node);

// text_encoder.*: the module and its tokenizer; null when the section is absent.
std::unique_ptr<TextEncoder> read_text_encoder(const YAML::Node& node, at::Device device);
// prompt / negative_prompt (one string for the batch or one per sample) through the
// text_encoder section into the inputs declared with source: prompt (conditional and negative
// rows); the prompts, one per sample, or none when the model is not prompted. Continuous and
// token pipelines alike.
std::vector<std::string> apply_prompts(const YAML::Node& config, ModelInputs* inputs, int64_t batch, at::Device device,
                                       std::vector<std::string>* notes);
// decoder.* and encoder.* (encoder needs decoder); null when decoder is absent.
std::unique_ptr<LatentCodec> read_latent_codec(const YAML::Node& decoder, const YAML::Node& encoder,
                                               const std::vector<int64_t>& latent_shape, at::TensorOptions options);

// The token pipeline's sections.
struct TokenModelSpec {
  TokenSpec spec;
  std::string path, vocab_chars, pad;
  int64_t null_label = 0;  // class-conditional networks' unconditional label
  std::shared_ptr<ModelInputs> inputs;  // model.inputs (prompt tensors, labels, files); null: none
};
TokenModelSpec read_token_model(const YAML::Node& node, YAML::Node* resolved = nullptr);
std::unique_ptr<DiscreteSchedule> read_discrete_schedule(const YAML::Node& node, YAML::Node* resolved = nullptr);
const Schema& continuous_top_schema();
const Schema& token_top_schema();
const Schema& token_model_schema();
const Schema& token_output_schema();
// Whether a config key holds a value: present, not null and not an empty string (`--set key=`
// clears a key).
bool has_value(const YAML::Node& node);

// Token models' cond (as read_cond: a label, a list, null_label; none: the null label for a
// conditional network) and guidance.scale (1 without a guidance section).
Labels read_token_cond(const YAML::Node& cond, const YAML::Node& model, const TokenModelSpec& spec, int64_t batch);
double read_token_guidance(const YAML::Node& node);

}  // namespace scorch
