#include "sections.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <algorithm>
#include <cctype>
#include <fstream>

#include "scorch/error.h"
#include "scorch/gaussian.h"
#include "scorch/guidance_reader.h"
#include "scorch/image.h"
#include "scorch/io.h"
#include "scorch/mixture_model.h"
#include "scorch/torchscript_denoiser.h"

namespace scorch {

namespace {

const Schema& top_schema() {
  static const Schema s = {
      {"seed", OptionType::Yaml, "0",
       "sample i's seed: s + i for one integer s, or a list of batch seeds; it alone sets sample i's noise", {}},
      {"noise", OptionType::String, "independent",
       "SDE and ancestral steps: fresh noise per step (independent) or each sample's Brownian path (brownian)",
       {"independent", "brownian"}},
      {"noise_generator", OptionType::String, "scorch",
       "x_T's generator: scorch (float64 normals) or torch (as Python's torch.randn with manual_seed)",
       {"scorch", "torch"}},
      {"batch", OptionType::Int, "1", "number of samples", {}, 1, 16777216},
      {"device", OptionType::String, "cpu", "where the model and solver run", {"cpu", "cuda"}},
      {"dtype", OptionType::String, "float32", "solver and model dtype", {"float32", "float64"}},
      {"cond", OptionType::Yaml, "",
       "conditional models: a class label, a list (one per sample), rows (one grid row per class) or null_label", {}},
      {"prompt", OptionType::Yaml, "",
       "text: one prompt for the batch or a list with one per sample, through text_encoder (docs/conditioning.md)", {}},
      {"negative_prompt", OptionType::Yaml, "\"\"",
       "text: the prompt of classifier-free guidance's unconditional rows (one, or one per sample)", {}},
      {"init_noise", OptionType::String, "", ".npy file used as x_T instead of seeded noise", {}},
      {"invert", OptionType::String, "", ".npy samples to run back from t_end to t_start (deterministic samplers)", {}},
      {"init_image", OptionType::String, "",
       "SDEdit: data (.npy, or an image for one-channel models) noised to the start time", {}},
      {"strength", OptionType::Number, "0.8",
       "SDEdit: how far towards t_start the init_image is noised, in (0, 1] (1 with inpaint_mask)", {}, 0, 1},
      {"inpaint_mask", OptionType::String, "",
       "inpainting: 1 (white) where new content is generated, 0 where init_image is kept", {}},
      {"model", OptionType::Section, "", "the denoiser (model.*)", {}},
      {"text_encoder", OptionType::Section, "", "prompts to conditioning tensors (text_encoder.*)", {}},
      {"decoder", OptionType::Section, "", "latent models: latents to images (decoder.*)", {}},
      {"encoder", OptionType::Section, "", "latent models: images to latents, for init_image and invert (encoder.*)", {}},
      {"schedule", OptionType::Section, "", "the noise schedule (schedule.*)", {}},
      {"sampler", OptionType::Section, "", "the sampler and its options (sampler.*; scorch samplers)", {}},
      {"guidance", OptionType::Section, "", "guidance, composition, correctors (guidance.*)", {}},
      {"output", OptionType::Section, "", "what is written (output.*)", {}},
      {"provenance", OptionType::Section, "", "how an output was made (written by scorch; provenance.*)", {}},
  };
  return s;
}

const Schema& provenance_schema() {
  static const Schema s = {
      {"scorch_version", OptionType::String, "", "the scorch that wrote the output", {}},
      {"model_sha256", OptionType::String, "",
       "SHA-256 of model.path when the output was made; a different model file is an error", {}},
  };
  return s;
}

const std::vector<std::string> kScheduleTypes = {"vp_linear", "vp_discrete", "vp_cosine", "edm", "flow"};

// The keys of each schedule type; `type` comes first in every one.
const Schema& schedule_schema(const std::string& type) {
  static const OptionSpec kType = {"type", OptionType::String, "vp_linear", "the noise schedule", kScheduleTypes};
  static const Schema vp_linear = {kType,
                                   {"beta_0", OptionType::Number, "0.1", "vp_linear: beta(0)", {}, 0, 1000},
                                   {"beta_1", OptionType::Number, "20", "vp_linear: beta(1)", {}, 0, 1000}};
  static const Schema vp_discrete = {
      kType,
      {"beta_schedule", OptionType::String, "linear", "vp_discrete: the betas' spacing", {"linear", "scaled_linear"}},
      {"beta_start", OptionType::Number, "0.0001", "vp_discrete: first beta", {}, 0, 1},
      {"beta_end", OptionType::Number, "0.02", "vp_discrete: last beta", {}, 0, 1},
      {"num_train_steps", OptionType::Int, "1000", "vp_discrete: number of training steps N", {}, 1, 1000000},
      {"betas", OptionType::NumberList, "[]", "vp_discrete: the betas themselves (instead of beta_schedule)", {}},
      {"alphas_cumprod", OptionType::NumberList, "[]", "vp_discrete: the cumulative alphas themselves", {}},
      {"timestep_spacing", OptionType::String, "",
       "vp_discrete: diffusers' timestep spacing, the grid of skip_type auto (empty: logSNR)",
       {"linspace", "leading", "trailing"}},
      {"rescale_zero_terminal_snr", OptionType::Bool, "false",
       "vp_discrete: rescale the betas to zero terminal SNR (Lin et al. 2024; needs a v, x0 or velocity model)", {}}};
  static const Schema vp_cosine = {kType, {"s", OptionType::Number, "0.008", "vp_cosine: offset s (Nichol & Dhariwal)", {}, 0, 1}};
  static const Schema edm = {kType,
                             {"sigma_min", OptionType::Number, "0.002", "edm: smallest sigma", {}, 0, 1e6},
                             {"sigma_max", OptionType::Number, "80", "edm: largest sigma", {}, 0, 1e6}};
  static const Schema flow = {
      kType,
      {"shift", OptionType::Number, "1", "flow: SD3's time shift t = shift u / (1 + (shift - 1) u)", {}, 0, 1000},
      {"num_train_steps", OptionType::Int, "1000", "flow: N; the network's timestep is N t (time_input: index)", {}, 1, 1000000},
      {"use_dynamic_shifting", OptionType::Bool, "false",
       "flow: Flux's resolution-dependent shift t = e^mu / (e^mu + 1/u - 1) instead of `shift`", {}},
      {"base_shift", OptionType::Number, "0.5", "flow, dynamic: mu at base_image_seq_len tokens", {}, -100, 100},
      {"max_shift", OptionType::Number, "1.15", "flow, dynamic: mu at max_image_seq_len tokens", {}, -100, 100},
      {"base_image_seq_len", OptionType::Int, "256", "flow, dynamic: first point of mu's line", {}, 1, 1e9},
      {"max_image_seq_len", OptionType::Int, "4096", "flow, dynamic: second point of mu's line", {}, 1, 1e9},
      {"image_seq_len", OptionType::Int, "0",
       "flow, dynamic: latent tokens; 0: (H/2)(W/2) from model.shape's last two sizes (Flux's 2x2 patches)", {}, 0, 1e9}};
  if (type == "flow") return flow;
  if (type == "vp_discrete") return vp_discrete;
  if (type == "vp_cosine") return vp_cosine;
  if (type == "edm") return edm;
  return vp_linear;
}

const Schema& model_schema() {
  static const Schema s = {
      {"type", OptionType::String, "", "model kind (required)", {"torchscript", "gaussian", "gmm", "empirical"}},
      {"path", OptionType::String, "", "model file (required)", {}},
      {"shape", OptionType::IntList, "[]", "one sample's shape, e.g. [1, 28, 28] (required for torchscript)", {}},
      {"prediction", OptionType::String, "eps", "what the network outputs (velocity: d x_t / dt, flow models)",
       {"eps", "x0", "v", "score", "velocity"}},
      {"time_input", OptionType::String, "t", "time argument of the network", {"t", "index", "sigma"}},
      {"rank", OptionType::Int, "0", "gaussian: keep the largest `rank` eigenvalues (0: all)", {}, 0, 1e9},
      {"max_batch", OptionType::Int, "0", "torchscript: evaluate in chunks of at most this many samples", {}, 0, 16777216},
      {"cpu_parallel", OptionType::String, "chunks",
       "torchscript on CPU: chunks (parallel one-thread chunks, bit-identical for any --threads) or intra_op "
       "(LibTorch's threads and OpenBLAS's pool inside each call, as a bare call; round-off varies with --threads)",
       {"chunks", "intra_op"}},
      {"dtype", OptionType::String, "", "torchscript: the network's dtype (default: the top-level dtype)",
       {"float32", "float64", "bfloat16", "float16"}},
      {"inputs", OptionType::Yaml, "[]",
       "torchscript: the network's extra inputs after (x, t), in forward's order (model.inputs[])", {}},
      {"num_classes", OptionType::Int, "0", "conditional models: number of class labels (for cond: rows)", {}, 0, 16777216},
      {"null_label", OptionType::Int, "-1", "conditional models: the unconditional label (for cond: null_label)", {}, -1, 16777216},
  };
  return s;
}

const Schema& model_input_schema() {
  static const Schema s = {
      {"name", OptionType::String, "", "forward's argument name (required; checked against the module)", {}},
      {"source", OptionType::String, "file",
       "file (.npy / .safetensors), label (from cond), scalar (value), prompt (text_encoder's next output), host "
       "(set through the C API)",
       {"file", "label", "scalar", "prompt", "host"}},
      {"file", OptionType::String, "", "file: [*shape] for the whole batch or [batch, *shape]", {}},
      {"key", OptionType::String, "", "file: the tensor's name in a .safetensors file (default: name)", {}},
      {"negative_file", OptionType::String, "",
       "file: the unconditional / negative input for classifier-free guidance (default: the same as file)", {}},
      {"negative_key", OptionType::String, "", "negative_file: the tensor's name in a .safetensors file (default: key)",
       {}},
      {"shape", OptionType::IntList, "[]", "file, prompt, host: one sample's shape, e.g. [77, 768] (required)", {}},
      {"dtype", OptionType::String, "",
       "the argument's dtype (default: the network's dtype; int64 for labels)",
       {"float32", "float64", "float16", "bfloat16", "int64", "int32", "bool"}},
      {"value", OptionType::Number, "0", "scalar: the number, passed as a [B] tensor", {}, -1e9, 1e9},
      {"negative_value", OptionType::Number, "0", "scalar: its value in the negative rows (default: value)", {}, -1e9, 1e9},
  };
  return s;
}

const Schema& text_encoder_schema() {
  static const Schema s = {
      {"path", OptionType::String, "", "TorchScript forward(tokens [B, length] int64) -> a tensor or a tuple (required)",
       {}},
      {"tokenizer", OptionType::String, "chars", "chars (a character table) or vocab (a word list file)",
       {"chars", "vocab"}},
      {"chars", OptionType::String, "", "chars: the table; token i + 1 is its i-th character, 0 pads", {}},
      {"vocab", OptionType::String, "", "vocab: a file with one token per line; token id = line index, line 0 pads", {}},
      {"length", OptionType::Int, "0", "the encoder's context in tokens; longer prompts are truncated (required)", {}, 0, 16777216},
      {"lowercase", OptionType::Bool, "false", "lowercase prompts before tokenizing", {}},
  };
  return s;
}

const Schema& decoder_schema() {
  static const Schema s = {
      {"path", OptionType::String, "", "TorchScript forward(latents) -> images (required)", {}},
      {"scale_factor", OptionType::Number, "1", "the network's latents are (encoder(x) - shift_factor) scale_factor", {}, -1e6, 1e6},
      {"shift_factor", OptionType::Number, "0", "see scale_factor (Flux: 0.1159, SD: 0)", {}, -1e6, 1e6},
      {"tile", OptionType::Int, "0", "decode in tiles of tile x tile latent cells, bounding memory (0: whole)", {}, 0, 1e6},
      {"overlap", OptionType::Int, "0", "latent cells neighbouring tiles share, blended linearly", {}, 0, 1e6},
  };
  return s;
}

const Schema& encoder_schema() {
  static const Schema s = {
      {"path", OptionType::String, "", "TorchScript forward(images) -> latents (scale and shift from decoder.*)", {}},
  };
  return s;
}

const Schema& sampler_section_schema() {
  static const Schema s = [] {
    Schema out = {{"name", OptionType::String, "ddim", "registry name (scorch samplers lists each one's options)", {}}};
    out.insert(out.end(), grid_options().begin(), grid_options().end());
    return out;
  }();
  return s;
}

const Schema& output_schema() {
  static const Schema s = {
      {"png", OptionType::String, "", "PNG image grid", {}},
      {"npy", OptionType::String, "", "final samples, float32", {}},
      {"nrow", OptionType::Int, "0", "images per grid row (0: square)", {}, 0, 16777216},
      {"trajectory", OptionType::String, "", "states after every step, float32", {}},
      {"labels", OptionType::String, "", "class labels of the samples, int64", {}},
      {"latents", OptionType::String, "", "latent models: the latents before decoding, float32", {}},
  };
  return s;
}

}  // namespace

const Schema& token_model_schema() {
  static const Schema s = {
      {"type", OptionType::String, "", "tokens", {"tokens"}},
      {"path", OptionType::String, "", "TorchScript forward(tokens, t) -> log-probabilities [B, L, V]", {}},
      {"vocab", OptionType::String, "", "the characters of tokens 0..V-1, or V", {}},
      {"mask_id", OptionType::Int, "-1", "the mask token (default V)", {}, -1, 2147483647},
      {"length", OptionType::Int, "0", "sequence length L", {}, 0, 16777216},
      {"transition", OptionType::String, "absorbing", "masked (absorbing) or uniform-state diffusion",
       {"absorbing", "uniform"}},
      {"pad", OptionType::String, "", "printing: cut each sample at this character", {}},
      {"num_classes", OptionType::Int, "0", "class-conditional networks: forward(tokens, t, labels), labels 0..num_classes - 1", {}, 0, 16777216},
      {"null_label", OptionType::Int, "-1", "class-conditional networks: the unconditional label (default num_classes)", {}, -1, 16777216},
      {"inputs", OptionType::Yaml, "[]",
       "the network's extra inputs after (tokens, t), in its order, as for continuous models (model.inputs; a prompt's tensors: source prompt)", {}},
  };
  return s;
}

namespace {

const Schema& token_guidance_schema() {
  static const Schema s = {
      {"scale", OptionType::Number, "1", "token-level classifier-free guidance on the logits: log p_null + scale (log p_c - log p_null); 1: off", {}, -1000, 1000},
  };
  return s;
}

const Schema& token_schedule_schema() {
  static const Schema s = {
      {"type", OptionType::String, "loglinear", "alpha(t) of the token model", {"loglinear", "cosine", "linear", "geometric"}},
      {"eps", OptionType::Number, "0.001", "loglinear, cosine: alpha(1) = eps", {}, 0, 1},
      {"sigma_min", OptionType::Number, "0.0001", "linear, geometric: smallest total noise", {}, 0, 1e6},
      {"sigma_max", OptionType::Number, "20", "linear, geometric: largest total noise", {}, 0, 1e6},
  };
  return s;
}

const Schema& token_sampler_schema() {
  static const Schema s = [] {
    Schema out = {{"name", OptionType::String, "tweedie", "discrete registry name (scorch samplers)", {}}};
    out.insert(out.end(), discrete_common_options().begin(), discrete_common_options().end());
    return out;
  }();
  return s;
}

at::ScalarType network_dtype(const std::string& name) {
  if (name == "float64") return at::kDouble;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  return at::kFloat;
}

}  // namespace

const Schema& continuous_top_schema() { return top_schema(); }

const Schema& token_top_schema() {
  static const Schema s = {
      {"seed", OptionType::Yaml, "0", "sequence i's seed: s + i for one integer s, or a list of batch seeds", {}},
      {"batch", OptionType::Int, "16", "number of sequences", {}, 1, 16777216},
      {"template", OptionType::Yaml, "", "infill: fixed characters and '_' for free positions (\"ele_____\"; shorter than L: the rest is pad), one for every sequence or a list of batch templates", {}},
      {"fixed", OptionType::Yaml, "[]", "infill: [[position, token id], ...] fixed in every sequence", {}},
      {"cond", OptionType::Yaml, "", "class-conditional networks: a label, a list (one per sequence) or null_label", {}},
      {"prompt", OptionType::Yaml, "", "prompt-conditional networks: one prompt for the batch or one per sequence, through text_encoder", {}},
      {"negative_prompt", OptionType::Yaml, "\"\"", "prompt-conditional networks: the prompt of guidance's unconditional rows (one, or one per sequence)", {}},
      {"text_encoder", OptionType::Section, "", "prompts to the network's conditioning tensors (text_encoder.*)", {}},
      {"guidance", OptionType::Section, "", "token models: guidance.scale (classifier-free, on the logits)", {}},
      {"model", OptionType::Section, "", "the token denoiser (model.*, type: tokens)", {}},
      {"schedule", OptionType::Section, "", "the discrete schedule (schedule.*)", {}},
      {"sampler", OptionType::Section, "", "the discrete sampler and its options (sampler.*)", {}},
      {"output", OptionType::Section, "", "what is written (output.*)", {}},
      {"provenance", OptionType::Section, "", "how an output was made (written by scorch; provenance.*)", {}},
  };
  return s;
}

const Schema& token_output_schema() {
  static const Schema s = {
      {"npy", OptionType::String, "", "tokens [batch, L], int64", {}},
      {"text", OptionType::String, "", "the decoded samples, one per line", {}},
      {"png", OptionType::String, "", "(continuous models only: an error here)", {}},
  };
  return s;
}

std::vector<SectionSchema> config_schemas() {
  Schema schedule;
  for (const auto& type : kScheduleTypes)
    for (const auto& k : schedule_schema(type))
      if (std::none_of(schedule.begin(), schedule.end(), [&](const OptionSpec& s) { return s.name == k.name; }))
        schedule.push_back(k);
  return {
      {"", "Top level (continuous models)", top_schema()},
      {"model", "the denoiser", model_schema()},
      {"schedule", "the noise schedule; each type takes `type` and its own keys", schedule},
      {"sampler", "the sampler: name, the time grid, and the sampler's own options (scorch samplers)",
       sampler_section_schema()},
      {"model.inputs[]", "one declared network input (docs/conditioning.md)", model_input_schema()},
      {"text_encoder", "prompts to the network's conditioning tensors (docs/conditioning.md)", text_encoder_schema()},
      {"decoder", "latent models: the decoder from latents to images (docs/conditioning.md)", decoder_schema()},
      {"encoder", "latent models: the encoder from images to latents", encoder_schema()},
      {"guidance", "guidance (docs/guidance.md)", guidance_schema()},
      {"guidance.terms[]", "one mixture-of-score-guidance term (also the msg sampler's terms)", guidance_term_schema()},
      {"guidance.classifier", "classifier guidance", classifier_schema()},
      {"guidance.apg", "adaptive projected guidance (Sadat et al. 2024), on the data prediction", apg_schema()},
      {"guidance.cfg_zero_star", "CFG-Zero* (Fan et al. 2025), on the ODE direction", cfg_zero_star_schema()},
      {"guidance.compose", "composition; each entry of models is a model section plus weight", compose_schema()},
      {"guidance.corrector", "MCMC corrector after sampler steps", corrector_schema()},
      {"output", "outputs (continuous models)", output_schema()},
      {"provenance", "written into every output's config by scorch (docs/configuration.md, Provenance)",
       provenance_schema()},
      {"", "Top level (token models: model.type tokens)", token_top_schema()},
      {"model", "token models (model.type: tokens)", token_model_schema()},
      {"schedule", "token models: the discrete schedule", token_schedule_schema()},
      {"sampler", "token models: name and the options every discrete sampler takes", token_sampler_schema()},
      {"output", "token models: outputs", token_output_schema()},
      {"guidance", "token models: classifier-free guidance", token_guidance_schema()},
  };
}

TopSpec read_top(const YAML::Node& config) {
  TopSpec top;
  top.o = Options::read(config, top_schema(), "");
  const Options& o = top.o;
  top.batch = o.integer("batch");
  // Checked before anything of this size exists (the seeds are one integer per sample); the
  // pipeline then checks the batch's memory against the sample shape (check_batch_memory).
  if (top.batch <= 0 || top.batch > kMaxBatch)
    bad_input("batch: expected an integer from 1 to " + std::to_string(kMaxBatch) + ", got " + o.text("batch"));
  top.seeds = read_seeds(o.node("seed"), top.batch);
  top.noise = parse_noise_generator(o.str("noise_generator"));
  if (o.str("device") == "cuda" && !at::hasCUDA()) bad_input("device: cuda requested but no CUDA device is available");
  top.device = at::Device(o.str("device") == "cuda" ? at::kCUDA : at::kCPU);
  top.dtype = o.str("dtype") == "float64" ? at::kDouble : at::kFloat;
  return top;
}

void check_batch_memory(int64_t batch, const std::vector<int64_t>& shape, at::ScalarType dtype) {
  double bytes = 4.0 * double(batch) * double(c10::elementSize(dtype));  // a double: no overflow
  for (int64_t d : shape) bytes *= double(d);
  if (bytes > double(input_byte_limit())) {
    std::ostringstream msg;
    msg.precision(3);
    msg << "batch: " << batch << " samples of " << shape_string(shape) << " in " << c10::toString(dtype) << " need about "
        << bytes / double(1 << 30) << " GiB (state, noise, prediction, output), above the memory limit of "
        << double(input_byte_limit()) / double(1 << 30) << " GiB (SCORCH_MAX_INPUT_BYTES); lower batch";
    bad_input(msg.str());
  }
}

// `key`: one integer (returned alone) or a list of `batch` integers, one per sample.
static std::vector<int64_t> int_or_list(const YAML::Node& value, const std::string& key, int64_t batch) {
  const bool list = value.IsSequence();
  YAML::Node wrapped(YAML::NodeType::Map);
  wrapped[key] = value;
  const Options o = Options::read(wrapped, {{key, list ? OptionType::IntList : OptionType::Int, list ? "[]" : "0", "", {}}}, "");
  if (!list) return {o.integer(key)};
  if (int64_t(o.int_list(key).size()) != batch)
    bad_input(key + ": " + std::to_string(o.int_list(key).size()) + " values for batch " + std::to_string(batch) +
              "; give one integer or one per sample");
  return o.int_list(key);
}

std::vector<uint64_t> read_seeds(const YAML::Node& seed, int64_t batch) {
  std::vector<int64_t> given = int_or_list(seed, "seed", batch);
  if (!seed.IsSequence())
    for (int64_t i = 1; i < batch; ++i) given.push_back(given[0] + i);
  std::vector<uint64_t> seeds;
  for (int64_t s : given) {
    if (s < 0) bad_input("seed: expected non-negative integers, got " + std::to_string(s));
    seeds.push_back(uint64_t(s));
  }
  return seeds;
}

const char* scorch_version() { return SCORCH_VERSION; }

Provenance read_provenance(const YAML::Node& node) {
  const Options o = Options::read(node, provenance_schema(), "provenance");
  return {o.str("scorch_version"), o.str("model_sha256")};
}

std::shared_ptr<const Schedule> read_schedule(const YAML::Node& node, YAML::Node* resolved,
                                              const std::vector<int64_t>& sample_shape) {
  std::string type = "vp_linear";
  if (node && node.IsMap() && node["type"] && node["type"].IsScalar()) type = node["type"].Scalar();
  const Options o = Options::read(node, schedule_schema(type), "schedule");  // also checks `type`
  if (resolved) {
    std::set<std::string> skip;  // an explicit list is recorded only when it was given
    for (const char* list : {"betas", "alphas_cumprod"})
      if (type == "vp_discrete" && !o.given(list)) skip.insert(list);
    // With the dynamic shift a fixed `shift` is an error: the record must not hold its default.
    if (type == "flow" && o.flag("use_dynamic_shifting")) skip.insert("shift");
    *resolved = o.to_yaml(skip);
  }
  if (type != "vp_discrete" && node && node.IsMap() && (node["betas"] || node["alphas_cumprod"]))
    bad_input("schedule: betas / alphas_cumprod need type vp_discrete");
  if (type == "vp_linear") return make_vp_linear(o.number("beta_0"), o.number("beta_1"));
  if (type == "vp_cosine") return make_vp_cosine(o.number("s"));
  if (type == "edm") return make_edm(o.number("sigma_min"), o.number("sigma_max"));
  if (type == "flow") {
    const int n = int(o.integer("num_train_steps"));
    if (!o.flag("use_dynamic_shifting")) return make_flow(o.number("shift"), n);
    if (o.given("shift")) bad_input("schedule.shift: not used with use_dynamic_shifting (mu comes from the tokens)");
    int64_t tokens = o.integer("image_seq_len");
    if (tokens == 0) {
      if (sample_shape.size() < 2)
        bad_input("schedule.image_seq_len: set it, or model.shape with height and width, for the dynamic shift");
      tokens = (sample_shape[sample_shape.size() - 2] / 2) * (sample_shape.back() / 2);
    }
    if (tokens <= 0) bad_input("schedule.image_seq_len: expected a positive number of tokens");
    return make_flow_dynamic(flux_mu(double(tokens), double(o.integer("base_image_seq_len")),
                                     double(o.integer("max_image_seq_len")), o.number("base_shift"),
                                     o.number("max_shift")),
                             n);
  }
  if (o.given("betas") && o.given("alphas_cumprod")) bad_input("schedule: give betas or alphas_cumprod, not both");
  const std::string spacing = o.str("timestep_spacing");
  if (o.given("alphas_cumprod")) {
    if (o.flag("rescale_zero_terminal_snr"))
      bad_input("schedule.rescale_zero_terminal_snr: rescales betas; give alphas_cumprod already rescaled instead");
    return make_vp_discrete(o.number_list("alphas_cumprod"), spacing);
  }
  std::vector<double> betas = o.given("betas") ? o.number_list("betas")
                                               : make_betas(o.str("beta_schedule"), o.number("beta_start"),
                                                            o.number("beta_end"), int(o.integer("num_train_steps")));
  if (o.flag("rescale_zero_terminal_snr")) betas = rescale_zero_terminal_snr(betas);
  return make_vp_discrete(alphas_cumprod_from_betas(betas), spacing);
}

namespace {

// A tensor from a .npy file, or from a .safetensors file by name.
at::Tensor read_input_tensor(const std::string& file, const std::string& key, const std::string& where) {
  const std::string path = find_input_file(file);
  const bool st = path.size() > 12 && path.substr(path.size() - 12) == ".safetensors";
  if (!st) return read_npy(path, where);
  const SafeTensors t = read_safetensors(path, where);
  const auto it = t.tensors.find(key);
  if (it == t.tensors.end()) {
    std::string names;
    for (const auto& kv : t.tensors) names += (names.empty() ? "" : ", ") + kv.first;
    bad_input(where + ": '" + path + "' has no tensor '" + key + "' (it has: " + names + ")");
  }
  return it->second;
}

}  // namespace

std::shared_ptr<ModelInputs> read_model_inputs(const YAML::Node& list, const std::string& path,
                                               at::ScalarType network_dtype) {
  if (!list || list.IsNull()) return nullptr;
  if (!list.IsSequence()) bad_input(path + ": expected a list of inputs, each with name and source");
  if (list.size() == 0) return nullptr;
  std::vector<ModelInput> inputs;
  struct Pending {
    std::string name, file, key;
    bool negative;
  };
  std::vector<Pending> pending;
  std::vector<std::pair<std::string, double>> scalars, negative_scalars;
  for (size_t k = 0; k < list.size(); ++k) {
    const std::string where = path + "[" + std::to_string(k) + "]";
    const Options o = Options::read(list[k], model_input_schema(), where);
    ModelInput in;
    in.name = o.str("name");
    if (in.name.empty()) bad_input(where + ".name: missing (forward's argument name)");
    for (const auto& other : inputs)
      if (other.name == in.name) bad_input(where + ".name: '" + in.name + "' is declared twice");
    const std::string source = o.str("source");
    const auto only = [&](const char* key, const char* sources) {
      if (o.given(key)) bad_input(where + "." + key + ": only for source " + sources + " (this input is " + source + ")");
    };
    if (source != "file") {
      for (const char* key : {"file", "key", "negative_file", "negative_key"}) only(key, "file");
    }
    if (source != "scalar") {
      for (const char* key : {"value", "negative_value"}) only(key, "scalar");
    }
    if (source == "label" || source == "scalar") only("shape", "file, prompt or host");
    if (source == "label") {
      in.source = ModelInput::Source::Label;
      in.dtype = o.str("dtype").empty() ? at::kLong : parse_input_dtype(o.str("dtype"), where + ".dtype");
      if (at::isFloatingType(in.dtype)) bad_input(where + ".dtype: class labels need an integer dtype");
    } else {
      in.dtype = o.str("dtype").empty() ? network_dtype : parse_input_dtype(o.str("dtype"), where + ".dtype");
    }
    if (source == "scalar") {
      in.source = ModelInput::Source::Scalar;
      if (!o.given("value")) bad_input(where + ".value: missing (the scalar's value)");
      scalars.emplace_back(in.name, o.number("value"));
      if (o.given("negative_value")) negative_scalars.emplace_back(in.name, o.number("negative_value"));
    }
    in.host = source == "host";
    in.prompt = source == "prompt";
    if (source == "file" || source == "host" || source == "prompt") {
      in.source = ModelInput::Source::Tensor;
      in.shape = o.int_list("shape");
      if (!o.given("shape")) bad_input(where + ".shape: missing (one sample's shape, e.g. [77, 768])");
      for (int64_t d : in.shape)
        if (d <= 0) bad_input(where + ".shape: expected positive sizes, got " + shape_string(in.shape));
    }
    if (source == "file") {
      if (o.str("file").empty()) bad_input(where + ".file: missing (a .npy or .safetensors file)");
      const std::string key = o.str("key").empty() ? in.name : o.str("key");
      pending.push_back({in.name, o.str("file"), key, false});
      if (!o.str("negative_file").empty())
        pending.push_back({in.name, o.str("negative_file"), o.str("negative_key").empty() ? key : o.str("negative_key"),
                           true});
    }
    inputs.push_back(std::move(in));
  }
  auto table = std::make_shared<ModelInputs>(std::move(inputs));
  for (const auto& p : pending) {
    const std::string where = path + " '" + p.name + "'" + (p.negative ? " negative_file" : " file");
    table->set(p.name, read_input_tensor(p.file, p.key, where), p.negative, 0, "'" + p.file + "'");
  }
  for (const auto& v : scalars) table->set(v.first, at::scalar_tensor(v.second, at::kDouble), false, 0, "");
  for (const auto& v : negative_scalars) table->set(v.first, at::scalar_tensor(v.second, at::kDouble), true, 0, "");
  return table;
}

LoadedModel read_model(const YAML::Node& node, const std::string& path, const std::shared_ptr<const Schedule>& schedule,
                       at::ScalarType dtype, at::Device device, const std::set<std::string>& skip) {
  LoadedModel out;
  out.options = Options::read(node, model_schema(), path, skip);
  const Options& mo = out.options;
  if (mo.str("type").empty()) bad_input(path + ".type: missing; expected torchscript | gaussian | gmm | empirical");
  if (mo.str("path").empty()) bad_input(path + ".path: missing");
  const std::string file = find_input_file(mo.str("path"));
  const std::vector<int64_t>& shape = mo.int_list("shape");
  if (mo.given("shape")) {
    if (shape.empty()) bad_input(path + ".shape: expected a non-empty list of positive integers");
    // Sizes are bounded before any tensor of this shape exists: a sample of more elements
    // than the input limit allows bytes (an overflowing product included) is refused here.
    uint64_t elements = 1;
    for (int64_t s : shape) {
      if (s <= 0) bad_input(path + ".shape: expected positive integers, got " + shape_string(shape));
      elements = elements > input_byte_limit() / uint64_t(s) ? input_byte_limit() + 1 : elements * uint64_t(s);
    }
    if (elements > input_byte_limit() / 4)
      bad_input(path + ".shape: " + shape_string(shape) + " is more elements per sample than the memory limit of " +
                std::to_string(input_byte_limit()) + " bytes holds (SCORCH_MAX_INPUT_BYTES)");
  }
  if (mo.str("type") == "torchscript") {
    if (shape.empty()) bad_input(path + ".shape: required for torchscript models, e.g. [1, 28, 28]");
    TorchScriptSpec spec;
    spec.path = file;
    spec.shape = shape;
    spec.prediction = parse_prediction_type(mo.str("prediction"));
    spec.time_input = parse_time_input(mo.str("time_input"));
    spec.dtype = mo.str("dtype").empty() ? dtype : network_dtype(mo.str("dtype"));
    spec.device = device;
    spec.max_batch = mo.integer("max_batch");
    spec.intra_op = mo.str("cpu_parallel") == "intra_op";
    spec.inputs = read_model_inputs(mo.node("inputs"), path + ".inputs", spec.dtype);
    out.inputs = spec.inputs;
    out.denoiser = load_torchscript_denoiser(spec, schedule);
  } else if (mo.node("inputs").IsSequence() && mo.node("inputs").size() > 0) {
    bad_input(path + ".inputs: only torchscript models take declared inputs");
  } else if (!mo.str("dtype").empty()) {
    bad_input(path + ".dtype: only torchscript models take a dtype of their own; analytic models run in `dtype`");
  } else if (mo.str("type") == "gmm" || mo.str("type") == "empirical") {
    MixtureModel mm = load_mixture_model(file, mo.str("type"));
    if (!shape.empty() && shape != mm.shape)
      bad_input(path + ".shape: " + shape_string(shape) + " does not match the model file's " + shape_string(mm.shape));
    out.denoiser = make_mixture_denoiser(std::move(mm), schedule);
  } else {
    if (mo.integer("rank") < 0) bad_input(path + ".rank: expected an integer >= 0 (0: all eigenvalues)");
    GaussianModel g = load_gaussian(file, mo.integer("rank"));
    if (!shape.empty() && shape != g.shape)
      bad_input(path + ".shape: " + shape_string(shape) + " does not match the model file's " + shape_string(g.shape));
    out.denoiser = make_gaussian_denoiser(g.to(at::TensorOptions().dtype(dtype).device(device)), schedule);
  }
  return out;
}

namespace {

// prompt / negative_prompt: one string for the batch or a list of `batch` strings.
std::vector<std::string> read_prompts(const YAML::Node& node, const std::string& key, int64_t batch) {
  if (node.IsScalar()) return std::vector<std::string>(size_t(key == "prompt" ? batch : 1), node.Scalar());
  if (!node.IsSequence()) bad_input(key + ": expected a string or a list of strings");
  if (int64_t(node.size()) != batch)
    bad_input(key + ": " + std::to_string(node.size()) + " prompts for batch " + std::to_string(batch) +
              "; give one prompt or one per sample");
  std::vector<std::string> out;
  for (const auto& p : node) {
    if (!p.IsScalar()) bad_input(key + ": expected a list of strings");
    out.push_back(p.Scalar());
  }
  return out;
}

}  // namespace

const char* const kNeedsNegative =
    "guidance.scale: classifier-free guidance needs unconditional inputs: give a negative_prompt, "
    "model.inputs[].negative_file (or negative_value, a negative host value, or a label input with model.null_label)";

Labels apply_cond_to_inputs(ModelInputs& inputs, const YAML::Node& cond, const Options& model, int64_t batch) {
  const ModelInput* label_input = inputs.label_input();
  if (!label_input && has_value(cond))
    bad_input("cond: the model's declared inputs (model.inputs) take no class label (no input with source: label)");
  if (!label_input) return {};
  Labels labels = read_cond(cond, model, true, batch);
  inputs.set(label_input->name, labels.labels, false, batch, "cond");
  if (model.integer("null_label") >= 0)
    inputs.set(label_input->name, at::scalar_tensor(model.integer("null_label"), at::kLong), true, batch,
               "model.null_label");
  return labels;
}

std::vector<std::string> apply_prompts(const YAML::Node& config, ModelInputs* inputs, int64_t batch, at::Device device,
                                       std::vector<std::string>* notes) {
  std::unique_ptr<TextEncoder> text = read_text_encoder(config["text_encoder"], device);
  std::vector<const ModelInput*> prompt_inputs;
  if (inputs)
    for (const auto& in : inputs->inputs())
      if (in.prompt) prompt_inputs.push_back(&in);
  const bool prompted = config["prompt"] && !config["prompt"].IsNull();
  if (prompted && !text) bad_input("prompt: needs a text_encoder section");
  if (text && prompt_inputs.empty())
    bad_input("text_encoder: no model input takes its output (declare one with source: prompt in model.inputs)");
  if (!prompt_inputs.empty() && !text) bad_input("model.inputs: source prompt needs a text_encoder section");
  if (!text) return {};
  if (!prompted) bad_input("prompt: missing; the model is prompted (text_encoder)");
  std::vector<std::string> prompts = read_prompts(config["prompt"], "prompt", batch);
  const YAML::Node neg = config["negative_prompt"];
  const std::vector<std::string> negatives =
      neg && !neg.IsNull() ? read_prompts(neg, "negative_prompt", batch) : std::vector<std::string>{""};
  std::vector<std::string> all = prompts;
  all.insert(all.end(), negatives.begin(), negatives.end());
  const std::vector<at::Tensor> out = text->encode(all, notes);
  if (out.size() < prompt_inputs.size())
    bad_input("text_encoder: gives " + std::to_string(out.size()) + " outputs for " +
              std::to_string(prompt_inputs.size()) + " inputs with source: prompt");
  for (size_t k = 0; k < prompt_inputs.size(); ++k) {
    const std::string name = prompt_inputs[k]->name;
    const std::string what = "text_encoder output " + std::to_string(k);
    inputs->set(name, out[k].narrow(0, 0, batch), false, batch, what);
    inputs->set(name, negatives.size() == 1 ? out[k].narrow(0, batch, 1) : out[k].narrow(0, batch, batch), true, batch,
                what + " (negative_prompt)");
  }
  return prompts;
}

std::unique_ptr<TextEncoder> read_text_encoder(const YAML::Node& node, at::Device device) {
  if (!node || node.IsNull()) return nullptr;
  const Options o = Options::read(node, text_encoder_schema(), "text_encoder");
  if (o.str("path").empty()) bad_input("text_encoder.path: missing");
  TokenizerSpec t;
  t.length = o.integer("length");
  if (t.length <= 0) bad_input("text_encoder.length: expected the encoder's context in tokens (a positive integer)");
  t.lowercase = o.flag("lowercase");
  if (o.str("tokenizer") == "chars") {
    t.kind = TokenizerSpec::Kind::Chars;
    t.chars = o.str("chars");
    if (t.chars.empty()) bad_input("text_encoder.chars: missing (the tokenizer's characters, token i + 1 = the i-th)");
    if (!o.str("vocab").empty()) bad_input("text_encoder.vocab: only with tokenizer: vocab");
  } else {
    t.kind = TokenizerSpec::Kind::Vocab;
    if (o.str("vocab").empty()) bad_input("text_encoder.vocab: missing (a file with one token per line)");
    if (!o.str("chars").empty()) bad_input("text_encoder.chars: only with tokenizer: chars");
    const std::string file = find_input_file(o.str("vocab"));
    check_input_file(file, "text_encoder.vocab");
    std::ifstream in(file);
    if (!in) bad_input("text_encoder.vocab: cannot open '" + file + "'");
    for (std::string line; std::getline(in, line);) t.vocab.push_back(line);
    if (t.vocab.size() < 2) bad_input("text_encoder.vocab: '" + file + "' needs a padding line and at least one token");
  }
  const std::string path = find_input_file(o.str("path"));
  return std::make_unique<TextEncoder>(
      ScriptModule::load(path, "text_encoder.path '" + path + "'", device, at::kFloat), std::move(t));
}

std::unique_ptr<LatentCodec> read_latent_codec(const YAML::Node& decoder, const YAML::Node& encoder,
                                               const std::vector<int64_t>& latent_shape, at::TensorOptions options) {
  const bool has_encoder = encoder && !encoder.IsNull();
  if (!decoder || decoder.IsNull()) {
    if (has_encoder) bad_input("encoder: needs decoder (its scale_factor and shift_factor)");
    return nullptr;
  }
  const Options d = Options::read(decoder, decoder_schema(), "decoder");
  if (d.str("path").empty()) bad_input("decoder.path: missing");
  LatentSpec spec;
  spec.scale_factor = d.number("scale_factor");
  spec.shift_factor = d.number("shift_factor");
  spec.tile = d.integer("tile");
  spec.overlap = d.integer("overlap");
  const std::string dpath = find_input_file(d.str("path"));
  const at::ScalarType dtype = options.dtype().toScalarType();
  auto dec = ScriptModule::load(dpath, "decoder.path '" + dpath + "'", options.device(), dtype);
  std::unique_ptr<ScriptModule> enc;
  if (has_encoder) {
    const Options e = Options::read(encoder, encoder_schema(), "encoder");
    if (e.str("path").empty()) bad_input("encoder.path: missing");
    const std::string epath = find_input_file(e.str("path"));
    enc = ScriptModule::load(epath, "encoder.path '" + epath + "'", options.device(), dtype);
  }
  return std::make_unique<LatentCodec>(std::move(dec), std::move(enc), spec, latent_shape, options);
}

SamplerSpec read_sampler(const YAML::Node& node) {
  SamplerSpec s;
  std::string name = "ddim";
  if (node && node.IsMap() && node["name"]) {
    if (!node["name"].IsScalar()) bad_input("sampler.name: expected a sampler name");
    name = node["name"].Scalar();
  }
  s.entry = &samplers().find(name);
  s.options = read_sampler_options(*s.entry, node, "sampler");
  s.grid = grid_spec(s.options);
  s.grid.flow_auto = s.entry->flow_grid;
  return s;
}

Labels read_cond(const YAML::Node& cond, const Options& mo, bool conditional, int64_t batch) {
  Labels out;
  if (!cond || cond.IsNull()) {
    if (conditional) bad_input("cond: the model is conditional (forward(x, t, cond)); set cond to a class label");
    return out;
  }
  if (!conditional) bad_input("cond: the model takes no condition (forward(x, t))");
  std::vector<int64_t> labels;
  const std::string keyword = cond.IsScalar() ? cond.Scalar() : "";
  const int64_t k = mo.integer("num_classes"), null_label = mo.integer("null_label");
  if (keyword == "rows") {
    // One grid row per class: batch = num_classes x n, label of sample i = i / n.
    if (k <= 0) bad_input("cond: rows needs model.num_classes");
    if (batch % k != 0) bad_input("cond: rows needs batch to be a multiple of model.num_classes = " + std::to_string(k));
    for (int64_t i = 0; i < batch; ++i) labels.push_back(i / (batch / k));
    out.rows_per_class = batch / k;
  } else if (keyword == "null_label") {
    if (null_label < 0) bad_input("cond: null_label needs model.null_label");
    labels.assign(size_t(batch), null_label);
  } else {
    labels = int_or_list(cond, "cond", batch);
    if (!cond.IsSequence()) labels.assign(size_t(batch), labels[0]);
  }
  for (int64_t l : labels)
    if (l < 0 || (k > 0 && l >= k && l != null_label))
      bad_input("cond: label " + std::to_string(l) + " is out of range for model.num_classes = " + std::to_string(k));
  out.labels = at::tensor(labels, at::TensorOptions().dtype(at::kLong));
  return out;
}

OutputSpec read_outputs(const YAML::Node& node) {
  const Options o = Options::read(node, output_schema(), "output");
  OutputSpec out;
  out.png = o.str("png");
  out.npy = o.str("npy");
  out.nrow = int(o.integer("nrow"));
  out.trajectory = o.str("trajectory");
  out.labels = o.str("labels");
  out.latents = o.str("latents");
  // The grid is always PNG bytes: another extension (a .jpg the user expects to be a JPEG)
  // is refused here, before any work, rather than written under a misleading name.
  const auto lower_tail = [](const std::string& s, size_t n) {
    std::string t = s.size() >= n ? s.substr(s.size() - n) : s;
    for (auto& ch : t) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    return t;
  };
  if (!out.png.empty() && lower_tail(out.png, 4) != ".png")
    bad_input("output.png: '" + out.png + "' does not end in .png; scorch writes PNG grids only");
  return out;
}

TokenModelSpec read_token_model(const YAML::Node& node, YAML::Node* resolved) {
  const Options mo = Options::read(node, token_model_schema(), "model");
  if (resolved) *resolved = mo.to_yaml();
  TokenModelSpec out;
  TokenSpec& spec = out.spec;
  const std::string vocab = mo.str("vocab");
  if (vocab.empty()) bad_input("model.vocab: missing; give the characters of the tokens (or their number)");
  const bool numeric = vocab.find_first_not_of("0123456789") == std::string::npos;
  spec.vocab = numeric ? std::stoll(vocab) : int64_t(vocab.size());
  out.vocab_chars = numeric ? std::string() : vocab;
  spec.transition = mo.str("transition") == "uniform" ? Transition::Uniform : Transition::Absorbing;
  spec.mask_id = mo.integer("mask_id") >= 0 ? mo.integer("mask_id") : spec.vocab;
  spec.length = mo.integer("length");
  spec.num_classes = mo.integer("num_classes");
  out.null_label = mo.integer("null_label") >= 0 ? mo.integer("null_label") : spec.num_classes;
  out.pad = mo.str("pad");
  if (out.pad.size() > 1) bad_input("model.pad: expected one character");
  if (mo.str("path").empty()) bad_input("model.path: missing");
  out.path = find_input_file(mo.str("path"));
  out.inputs = read_model_inputs(mo.node("inputs"), "model.inputs", at::kFloat);
  return out;
}

bool has_value(const YAML::Node& node) { return node && !node.IsNull() && !(node.IsScalar() && node.Scalar().empty()); }

Labels read_token_cond(const YAML::Node& cond, const YAML::Node& model, const TokenModelSpec& spec, int64_t batch) {
  const bool conditional = spec.spec.num_classes > 0;
  if (!has_value(cond)) {
    Labels out;
    if (conditional) out.labels = at::full({batch}, spec.null_label, at::TensorOptions().dtype(at::kLong));
    return out;
  }
  YAML::Node mo = Options::read(model, token_model_schema(), "model").to_yaml();
  mo["null_label"] = spec.null_label;
  return read_cond(cond, Options::read(mo, token_model_schema(), "model"), conditional, batch);
}

double read_token_guidance(const YAML::Node& node) {
  return Options::read(node, token_guidance_schema(), "guidance").number("scale");
}

std::unique_ptr<DiscreteSchedule> read_discrete_schedule(const YAML::Node& node, YAML::Node* resolved) {
  const Options so = Options::read(node, token_schedule_schema(), "schedule");
  if (resolved) *resolved = so.to_yaml();
  return make_discrete_schedule(so.str("type"), so.number("eps"), so.number("sigma_min"), so.number("sigma_max"));
}

}  // namespace scorch
