#include "scorch/pipeline.h"

#include <ATen/ATen.h>
#include <ATen/ExpandUtils.h>
#include <c10/core/InferenceMode.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cmath>
#include <map>
#include <cstdio>
#include <sstream>

#include "scorch/error.h"
#include "scorch/gits.h"
#include "scorch/guidance_reader.h"
#include "scorch/image.h"
#include "scorch/input_files.h"
#include "scorch/io.h"
#include "scorch/provenance.h"
#include "scorch/step_hooks.h"
#include "scorch/torchscript_denoiser.h"
#include "sections.h"

namespace scorch {

struct Pipeline::Impl {
  std::shared_ptr<const Schedule> schedule;
  std::shared_ptr<Denoiser> denoiser;  // the configured model, guided when guidance is set
  CorrectorSpec corrector;
  int64_t null_label = -1;
  const SamplerEntry* entry = nullptr;
  std::unique_ptr<Sampler> sampler;
  TimeGrid grid;
  GridSpec base_grid;  // the configured grid; SDEdit moves grid.t_start from it
  std::vector<int64_t> shape;
  at::TensorOptions options;
  std::vector<uint64_t> seeds;  // sample i's seed
  NoiseGenerator noise = NoiseGenerator::Scorch;
  int64_t batch = 1;
  bool brownian = false;  // noise: brownian
  at::Tensor init_noise, init_image, inpaint_mask, cond, labels;
  // Declared network inputs (model.inputs); then cond is each sample's row index.
  std::shared_ptr<ModelInputs> inputs;
  bool cfg_with_inputs = false;  // classifier-free guidance on declared inputs: needs a negative
  // Latent models: the decoder (and encoder); image_shape is one decoded sample's shape
  // (the model's sample shape when there is no decoder).
  std::unique_ptr<LatentCodec> codec;
  std::vector<int64_t> image_shape;
  std::vector<std::string> prompts;            // one per sample, when prompted
  std::vector<std::string> load_notes;         // warnings from loading (a truncated prompt)
  bool invert = false;
  OutputSpec out;
  // Provenance: the resolved config (every key with its value, per-sample seeds, the model's
  // SHA-256), written into the PNG and beside the .npy.
  YAML::Node resolved;
  std::string model_sha256;
};

namespace {

// What makes statistics belong to a pipeline: the model file, how its output and time are
// read, the schedule, and guidance (each guided model has statistics of its own).
std::map<std::string, std::string> ems_identity(const YAML::Node& resolved, const std::string& sha256) {
  const auto flow = [](YAML::Node n) {
    if (!n || n.IsNull()) return std::string("none");
    YAML::Emitter e;
    e.SetMapFormat(YAML::Flow);
    e.SetSeqFormat(YAML::Flow);
    e << n;
    return std::string(e.c_str());
  };
  YAML::Node io(YAML::NodeType::Map);
  for (const char* k : {"type", "prediction", "time_input", "shape"})
    if (resolved["model"][k]) io[k] = resolved["model"][k];
  return {{"scorch.model_sha256", sha256},
          {"scorch.model", flow(io)},
          {"scorch.schedule", flow(resolved["schedule"])},
          {"scorch.guidance", flow(resolved["guidance"])}};
}


// An inpainting mask on the image grid [*image] as a mask on the latent grid [*latent]: the
// mean of each latent cell's pixels (area pooling), one channel broadcast over the latents'.
at::Tensor latent_grid_mask(const at::Tensor& mask, const std::vector<int64_t>& image, const std::vector<int64_t>& latent) {
  if (image.size() < 2 || latent.size() < 2) bad_input("inpaint_mask: a latent model's mask needs [C, H, W] images");
  at::Tensor m = mask.expand(image).to(at::kFloat);
  m = m.reshape({-1, image[image.size() - 2], image.back()}).mean(0, true).unsqueeze(0);  // [1, 1, H, W]
  m = at::adaptive_avg_pool2d(m, {latent[latent.size() - 2], latent.back()});
  return m.reshape({1, latent[latent.size() - 2], latent.back()});
}


// A guidance term's reference sample x*: its DDIM trajectory from t_end up to t_start
// (deterministic, so x*_t is a function of the reference), returned with t decreasing.
void invert_with_ddim(Denoiser& model, const Schedule& schedule, const GridSpec& configured, const at::Tensor& x0,
                      const at::Tensor& label, int steps, std::vector<double>* ts, std::vector<at::Tensor>* xs) {
  c10::InferenceMode guard;
  GridSpec g;
  g.steps = steps;
  const std::vector<double> span = make_time_grid(schedule, configured);
  g.t_start = span.front();
  g.t_end = span.back();
  g.reverse = true;
  const TimeGrid grid = build_time_grid(schedule, g);  // increasing: t_end .. t_start
  Rng rng(0);
  SamplerContext ctx(model, schedule, rng, label.defined() ? label.to(x0.device()) : label);
  auto trajectory = std::make_shared<TrajectoryHook>(x0);
  ctx.add_hook(trajectory);
  const SamplerEntry& ddim = samplers().find("ddim");
  ddim.make(parse_sampler_options(ddim, {{"steps", std::to_string(steps)}}))->run(ctx, x0, grid);
  *ts = std::vector<double>(grid.t.rbegin(), grid.t.rend());
  *xs = std::vector<at::Tensor>(trajectory->states().rbegin(), trajectory->states().rend());
}

}  // namespace

Pipeline::Pipeline() : impl_(std::make_unique<Impl>()) {}
Pipeline::~Pipeline() = default;

// output.png needs samples that are images.
static void check_png_shape(const std::vector<int64_t>& shape) {
  if (!images_supported()) bad_input("output.png: this build has no image output (configured without OpenCV)");
  if (!is_image_shape(shape))
    bad_input("output.png: samples of shape " + shape_string(shape) + " are not images (need [C, H, W] or [H, W])");
}

std::unique_ptr<Pipeline> Pipeline::from_config(const YAML::Node& config) {
  std::unique_ptr<Pipeline> p(new Pipeline());
  Impl& m = *p->impl_;

  const TopSpec top = read_top(config);
  const Options& o = top.o;
  // Input and output paths are checked before any model loads: a FIFO, a device or a missing
  // file is refused at once (their contents are read and checked later, with the shapes).
  for (const char* key : {"init_noise", "invert", "init_image", "inpaint_mask"})
    if (!o.str(key).empty()) check_input_file(find_input_file(o.str(key)), key);
  {
    const OutputSpec early = read_outputs(config["output"]);
    for (const auto& [path, key] : {std::pair{early.png, "output.png"}, std::pair{early.npy, "output.npy"},
                                    std::pair{early.labels, "output.labels"}, std::pair{early.latents, "output.latents"},
                                    std::pair{early.trajectory, "output.trajectory"}})
      if (!path.empty()) check_writable(path, key);
    if (!early.npy.empty()) check_writable(provenance_json_path(early.npy), "output.npy (its .json)");
    // Without a decoder the samples have model.shape: whether they can be drawn is known
    // now, before the model loads (with one, after it, from the decoded shape).
    const YAML::Node shape = config["model"] && config["model"].IsMap() ? config["model"]["shape"] : YAML::Node();
    if (!early.png.empty() && !config["decoder"] && shape && shape.IsSequence()) {
      std::vector<int64_t> sizes;
      for (const auto& s : shape)
        if (int64_t v = 0; s.IsScalar() && YAML::convert<int64_t>::decode(s, v)) sizes.push_back(v);
      if (sizes.size() == shape.size()) check_png_shape(sizes);
    }
  }
  m.seeds = top.seeds;
  m.noise = top.noise;
  m.brownian = o.str("noise") == "brownian";
  m.batch = top.batch;
  m.options = at::TensorOptions().dtype(top.dtype).device(top.device);
  YAML::Node schedule_resolved;
  const YAML::Node model = config["model"];
  if (!model || !model.IsMap()) bad_input("model: missing; expected model.type and model.path");
  std::vector<int64_t> shape;  // for flow's dynamic shift; model.shape is validated with the model
  if (model["shape"] && model["shape"].IsSequence())
    for (const auto& v : model["shape"]) shape.push_back(v.IsScalar() ? std::atoll(v.Scalar().c_str()) : 0);
  m.schedule = read_schedule(config["schedule"], &schedule_resolved, shape);

  LoadedModel loaded = read_model(model, "model", m.schedule, top.dtype, top.device);
  m.denoiser = std::move(loaded.denoiser);
  m.inputs = loaded.inputs;
  const Options& mo = loaded.options;
  YAML::Node loaded_resolved = mo.to_yaml();
  YAML::Node shape_node(YAML::NodeType::Sequence);  // the model's sample shape, as loaded
  for (int64_t d : m.denoiser->sample_shape()) shape_node.push_back(d);
  shape_node.SetStyle(YAML::EmitterStyle::Flow);
  loaded_resolved["shape"] = shape_node;
  m.null_label = mo.integer("null_label");
  m.shape = m.denoiser->sample_shape();
  check_batch_memory(m.batch, m.shape, top.dtype);

  const Provenance provenance = read_provenance(config["provenance"]);
  m.model_sha256 = sha256_file(find_input_file(mo.str("path")), "model.path");
  if (!provenance.model_sha256.empty() && provenance.model_sha256 != m.model_sha256)
    bad_input("model.path: '" + mo.str("path") + "' has SHA-256 " + m.model_sha256 + ", not the " +
              provenance.model_sha256 + " this config was made with (provenance.model_sha256); the model changed");

  SamplerSpec sampler = read_sampler(config["sampler"]);
  m.entry = sampler.entry;
  m.sampler = sampler.entry->make(sampler.options);
  const bool gits = resolve_skip_type(*m.schedule, sampler.grid) == "gits";
  if (!gits) m.grid = build_time_grid(*m.schedule, sampler.grid);  // also validates the grid

  Labels labels;
  if (m.inputs) {
    // Declared inputs: `cond` gives the labels of a label input; the network's rows are
    // selected by sample index (model_inputs.h).
    labels = apply_cond_to_inputs(*m.inputs, config["cond"], mo, m.batch);
    if (labels.labels.defined()) m.labels = labels.labels;
    m.inputs->check_ready(m.batch, /*allow_unset=*/true);
    m.cond = at::arange(m.batch, at::TensorOptions().dtype(at::kLong)).to(top.device);
    m.null_label = -1;
  } else {
    labels = read_cond(config["cond"], mo, m.denoiser->conditional(), m.batch);
    if (labels.labels.defined()) {
      m.labels = labels.labels;
      m.cond = labels.labels.to(top.device);
    }
  }

  // Prompts: the text encoder's outputs become the inputs declared with source: prompt.
  m.prompts = apply_prompts(config, m.inputs.get(), m.batch, top.device, &m.load_notes);

  // Latent models: the decoder gives the image shape every image input and output uses.
  m.codec = read_latent_codec(config["decoder"], config["encoder"], m.shape, m.options);
  m.image_shape = m.codec ? m.codec->image_shape() : m.shape;

  // Guidance: wraps the model; its reference samples are inverted with the plain model.
  if (config["guidance"] && !config["guidance"].IsNull()) {
    GuidanceContext gc;
    gc.shape = m.denoiser->sample_shape();
    gc.conditional = m.denoiser->conditional();
    gc.indexed = m.inputs != nullptr;
    gc.null_label = m.inputs ? -1 : mo.integer("null_label");
    gc.options = m.options;
    gc.schedule = m.schedule;
    gc.time_input = mo.str("time_input");
    gc.load_model = [&](const YAML::Node& node, const std::string& path, const std::vector<std::string>& skip) {
      return std::shared_ptr<Denoiser>(
          read_model(node, path, m.schedule, top.dtype, top.device, std::set<std::string>(skip.begin(), skip.end()))
              .denoiser);
    };
    gc.load_classifier = [&](const std::string& path, const std::string& time_input) {
      return load_torchscript_classifier(path, parse_time_input(time_input), m.schedule, top.dtype, top.device);
    };
    gc.invert = [&](const at::Tensor& x0, const at::Tensor& label, int steps, std::vector<double>* ts,
                    std::vector<at::Tensor>* xs) {
      invert_with_ddim(*m.denoiser, *m.schedule, sampler.grid, x0, label, steps, ts, xs);
    };
    GuidanceConfig gcfg = parse_guidance(config["guidance"], gc);
    m.cfg_with_inputs = m.inputs && gcfg.spec.cfg_scale != 1.0;
    if (m.cfg_with_inputs && !m.inputs->has_negative() && !m.inputs->has_host_input()) bad_input(kNeedsNegative);
    if (gcfg.spec.compose == GuidanceSpec::Compose::Mixture && !m.denoiser->has_log_density())
      bad_input("guidance.compose: a mixture needs log-densities; the configured model has none");
    m.corrector = gcfg.corrector;
    if (!gcfg.spec.empty()) m.denoiser = make_guided_denoiser(m.denoiser, m.schedule, std::move(gcfg.spec));
    if ((m.corrector.type == "mala" || m.corrector.type == "hmc") && !m.denoiser->has_log_density())
      bad_input("guidance.corrector.type: " + m.corrector.type +
                " needs the log-density of the target (analytic models, products or mixtures of them, or a "
                "TorchScript energy); use ula or uhmc");
  }

  // GITS: the grid is searched with the (guided) model on probe samples (gits.h); the same
  // seed gives the same grid.
  if (gits) {
    const GridSpec& g = sampler.grid;
    std::vector<int64_t> shape = {g.gits_warmup};
    shape.insert(shape.end(), m.shape.begin(), m.shape.end());
    const at::Tensor probes = Rng(m.seeds.empty() ? 0 : m.seeds[0] + 0x9e3779b97f4a7c15ULL).normal(shape, m.options);
    at::Tensor cond;
    if (m.cond.defined())
      cond = m.cond.index_select(0, (at::arange(g.gits_warmup, at::TensorOptions().dtype(at::kLong)) % m.batch).to(m.cond.device()));
    sampler.grid.gits_times = gits_search(*m.denoiser, *m.schedule, g, {g.steps, g.gits_teacher_steps, g.gits_coeff}, probes, cond);
    m.grid = build_time_grid(*m.schedule, sampler.grid);
    std::ostringstream note;
    note << "gits: " << g.steps << " steps chosen from a " << g.gits_teacher_steps << "-step Heun teacher on "
         << g.gits_warmup << " probe samples (" << 2 * g.gits_teacher_steps << " model calls before sampling)";
    m.load_notes.push_back(note.str());
  }

  // Initial noise.
  std::vector<int64_t> full = {m.batch};
  full.insert(full.end(), m.shape.begin(), m.shape.end());
  m.invert = !o.str("invert").empty();
  if (!o.str("init_image").empty() && (m.invert || !o.str("init_noise").empty()))
    bad_input("init_image: give one of init_image, init_noise, invert");
  if (m.invert) {
    if (!o.str("init_noise").empty()) bad_input("invert: give either invert or init_noise, not both");
    for (const auto& name : m.entry->noise_options)
      if (sampler.options.number(name) != 0.0)
        bad_input("invert: sampler '" + m.entry->name + "' adds noise (" + name + " = " + sampler.options.text(name) +
                  "); inversion needs a deterministic sampler: set sampler." + name + "=0");
    GridSpec reversed = sampler.grid;
    reversed.reverse = true;
    m.grid = build_time_grid(*m.schedule, reversed);
  }
  const std::string init_key = m.invert ? "invert" : "init_noise";
  if (!o.str(init_key).empty()) {
    const std::string file = find_input_file(o.str(init_key));
    at::Tensor x = read_npy(file, init_key);
    const std::string what = init_key + " '" + file + "'";
    // The samples to invert are images of a latent model (encoded here); x_T is latent.
    const bool images = m.invert && m.codec;
    std::vector<int64_t> want = {m.batch};
    want.insert(want.end(), (images ? m.image_shape : m.shape).begin(), (images ? m.image_shape : m.shape).end());
    if (!at::isFloatingType(x.scalar_type())) bad_input(what + ": expected float32 or float64 data");
    if (x.sizes() != at::IntArrayRef(want))
      bad_input(what + ": shape " + shape_string(x.sizes()) + " does not match [batch, *shape] = " + shape_string(want));
    if (!at::isfinite(x).all().item<bool>()) bad_input(what + ": has non-finite values");
    m.init_noise = images ? m.codec->encode(x.to(m.options)) : x.to(m.options);
  }

  // SDEdit and inpainting (set_init_image).
  for (const char* key : {"strength", "inpaint_mask"})
    if (o.given(key) && o.str("init_image").empty()) bad_input(std::string(key) + ": needs init_image");
  m.base_grid = m.grid.spec;
  if (!o.str("init_image").empty()) {
    const bool inpaint = !o.str("inpaint_mask").empty();
    const double strength = inpaint && !o.given("strength") ? 1.0 : o.number("strength");
    p->set_init_image(read_samples(o.str("init_image"), "init_image", m.image_shape, m.batch), strength,
                      inpaint ? read_mask(o.str("inpaint_mask"), "inpaint_mask", m.image_shape) : at::Tensor());
  }

  // Outputs: their paths were checked before the model loaded; now what they need of it.
  m.out = read_outputs(config["output"]);
  if (m.out.nrow == 0 && labels.rows_per_class > 0) m.out.nrow = int(labels.rows_per_class);
  if (!m.out.labels.empty()) {
    if (!m.labels.defined()) bad_input("output.labels: the samples have no labels (set cond)");
  }
  if (!m.out.latents.empty()) {
    if (!m.codec) bad_input("output.latents: the model has no decoder; output.npy holds its samples");
  }
  if (!m.out.png.empty()) check_png_shape(m.image_shape);

  // The resolved config: top-level keys with per-sample seeds, every model, schedule and
  // sampler key, guidance as given; no outputs (a re-run names its own).
  YAML::Node& r = m.resolved;
  // Input files only when given (each excludes others), strength only with init_image.
  std::set<std::string> skip = {"model",  "schedule", "sampler",      "guidance", "output",
                                "provenance", "seed", "text_encoder", "decoder",  "encoder"};
  if (!config["prompt"] || config["prompt"].IsNull()) skip.insert({"prompt", "negative_prompt"});
  for (const char* key : {"init_noise", "invert", "init_image", "inpaint_mask"})
    if (o.str(key).empty()) skip.insert(key);
  if (o.str("init_image").empty()) skip.insert("strength");
  r = o.to_yaml(skip);
  YAML::Node seeds(YAML::NodeType::Sequence);
  for (uint64_t s : m.seeds) seeds.push_back(s);
  seeds.SetStyle(YAML::EmitterStyle::Flow);
  r["seed"] = seeds;
  r["model"] = loaded_resolved;
  r["schedule"] = schedule_resolved;
  YAML::Node sampler_node(YAML::NodeType::Map);
  sampler_node["name"] = m.entry->name;
  std::set<std::string> fixed;
  for (const auto& kv : m.entry->fixed) fixed.insert(kv.first);
  for (const auto& kv : sampler.options.to_yaml(fixed)) sampler_node[kv.first] = kv.second;
  r["sampler"] = sampler_node;
  for (const char* section : {"guidance", "text_encoder", "decoder", "encoder"})
    if (config[section] && !config[section].IsNull()) r[section] = YAML::Clone(config[section]);
  r["provenance"]["scorch_version"] = scorch_version();
  r["provenance"]["model_sha256"] = m.model_sha256;
  // DPM-Solver-v3's statistics must be this model's, under this schedule and guidance.
  if (m.entry->name == "dpm_solver_v3" && !sampler.options.str("stats").empty() && !sampler.options.flag("degenerated")) {
    const std::string path = sampler.options.str("stats");
    const Ems ems = read_ems(find_input_file(path), "sampler.stats '" + path + "'");
    for (const auto& [key, value] : ems_identity(r, m.model_sha256)) {
      const auto it = ems.metadata.find(key);
      const std::string found = it == ems.metadata.end() ? "(not recorded)" : it->second;
      if (found != value)
        bad_input("sampler.stats: '" + path + "' holds the statistics of another " + key.substr(7) + " (" + found +
                  "; this pipeline's is " + value + "); compute them for this config with scorch ems");
    }
  }
  return p;
}

Ems Pipeline::estimate_ems(const at::Tensor& data, EmsEstimate o, const std::function<void(int64_t, int64_t)>& progress) const {
  const Impl& m = *impl_;
  at::Tensor x0 = data, cond;
  if (x0.defined()) {
    if (x0.dim() < 1 || x0.sizes().slice(1).vec() != m.shape)
      bad_input("ems: the data samples are " + shape_string(x0.sizes().slice(1)) + ", the model's " + shape_string(m.shape));
    if (m.cond.defined()) {
      if (m.cond.size(0) != x0.size(0))
        bad_input("ems: a conditional model needs a label per data sample; set batch to the number of samples and "
                  "cond to their class (or a list), or leave out --data to use the model's own samples");
      cond = m.cond;
    }
    x0 = x0.to(m.options);
  } else {
    const GenerateResult r = generate();
    x0 = r.latents.defined() ? r.latents : r.samples;
    cond = m.cond;
  }
  if (o.lambda_min == o.lambda_max) {
    double lo = INFINITY, hi = -INFINITY;
    for (double t : m.grid.t) {
      const double l = m.schedule->lambda(t);
      if (std::isfinite(l)) {
        lo = std::min(lo, l);
        hi = std::max(hi, l);
      }
    }
    o.lambda_min = lo;
    o.lambda_max = hi;
  }
  Ems e = scorch::estimate_ems(*m.denoiser, *m.schedule, x0, cond, o, progress);
  for (const auto& [key, value] : ems_identity(m.resolved, m.model_sha256)) e.metadata[key] = value;
  return e;
}

void Pipeline::set_input(const std::string& name, const at::Tensor& value, bool negative) {
  Impl& m = *impl_;
  if (!m.inputs) bad_input("model.inputs: the model declares no inputs; '" + name + "' cannot be set");
  m.inputs->set(name, value, negative, m.batch, "the caller");
}

void Pipeline::set_init_image(const at::Tensor& x_init, double strength, const at::Tensor& mask) {
  Impl& m = *impl_;
  if (!x_init.defined()) {
    m.init_image = at::Tensor();
    m.inpaint_mask = at::Tensor();
    m.grid = build_time_grid(*m.schedule, m.base_grid);
    return;
  }
  if (m.invert || m.init_noise.defined()) bad_input("init_image: give one of init_image, init_noise, invert");
  if (!(strength > 0.0 && strength <= 1.0)) {
    std::ostringstream got;
    got << strength;
    bad_input("strength: expected a number in (0, 1], got " + got.str());
  }
  // Images of a latent model are checked in image space, then encoded.
  const std::vector<int64_t>& shape = m.image_shape;
  std::vector<int64_t> one = {1}, full = {m.batch};
  one.insert(one.end(), shape.begin(), shape.end());
  full.insert(full.end(), shape.begin(), shape.end());
  at::Tensor x = x_init;
  if (x.sizes() == at::IntArrayRef(shape) || x.sizes() == at::IntArrayRef(one))
    x = x.reshape(one).expand(full);
  else if (x.sizes() != at::IntArrayRef(full))
    bad_input("init_image: shape " + shape_string(x.sizes()) + " is neither [batch, *shape] = " + shape_string(full) +
              " nor one sample " + shape_string(shape));
  if (!at::isfinite(x).all().item<bool>()) bad_input("init_image: has non-finite values");
  at::Tensor latent_mask = mask;
  if (mask.defined()) {
    const at::Tensor probe = at::zeros(shape, mask.options());
    if (!at::isfinite(mask).all().item<bool>() || (mask < 0).any().item<bool>() || (mask > 1).any().item<bool>())
      bad_input("inpaint_mask: expected values in [0, 1] (1: generate, 0: keep init_image)");
    if (mask.dim() > probe.dim() || !at::is_expandable_to(mask.sizes(), probe.sizes()))
      bad_input("inpaint_mask: shape " + shape_string(mask.sizes()) + " does not broadcast to a sample " +
                shape_string(shape));
    // On the latent grid: the share of each latent cell's pixels to generate.
    if (m.codec && m.codec->upscale() == 0)
      bad_input("inpaint_mask: needs latents on the image's grid; this decoder changes the rank (" +
                shape_string(m.shape) + " to " + shape_string(shape) + ")");
    if (m.codec) latent_mask = latent_grid_mask(mask, shape, m.shape);
  }
  if (m.codec) x = m.codec->encode(x.contiguous());
  // SDEdit (Meng et al. 2022): start at t_s = t_end + strength (t_start - t_end) from
  // x_{t_s} = alpha(t_s) x_init + sigma(t_s) z; the sampler's steps span [t_end, t_s].
  const std::vector<double> configured = make_time_grid(*m.schedule, m.base_grid);
  GridSpec g = m.base_grid;
  g.t_start = configured.back() + strength * (configured.front() - configured.back());
  m.grid = build_time_grid(*m.schedule, g);
  // Copies (copy = true): x may be a view of a caller's memory (the C API).
  m.init_image = x.to(m.options, false, true).contiguous();
  m.inpaint_mask = latent_mask.defined() ? latent_mask.to(m.options, false, true) : at::Tensor();
}

at::Tensor Pipeline::initial_noise() const { return initial_noise(0, impl_->batch); }

at::Tensor Pipeline::initial_noise(int64_t first, int64_t count) const {
  const Impl& m = *impl_;
  if (m.init_noise.defined()) return m.init_noise.narrow(0, first, count).clone();
  std::vector<int64_t> full = {count};
  full.insert(full.end(), m.shape.begin(), m.shape.end());
  const double t_start = m.grid.t.front();
  // Sample i's z from its own stream (seed i): the same whatever the batch.
  Rng rng = Rng::per_sample(std::vector<uint64_t>(m.seeds.begin() + first, m.seeds.begin() + first + count), m.noise);
  if (m.init_image.defined())
    return m.schedule->alpha(t_start) * m.init_image.narrow(0, first, count) +
           m.schedule->sigma(t_start) * rng.normal(full, m.options);
  // x_T ~ N(0, sigma(t_start)^2 I), the prior that neglects alpha(t_start) x0: the
  // k-diffusion convention (x~ = sigma~_max z in VE variables), N(0, I) at t = 1 for VP.
  return rng.normal(full, m.options) * m.schedule->sigma(t_start);
}

int64_t Pipeline::batch() const { return impl_->batch; }

GenerateResult Pipeline::generate(const ProgressFn& progress) const { return generate(progress, 0, impl_->batch); }

GenerateResult Pipeline::generate(const ProgressFn& progress, int64_t first, int64_t count) const {
  const Impl& m = *impl_;
  if (first < 0 || count < 1 || first + count > m.batch)
    bad_input("generate: samples " + std::to_string(first) + " to " + std::to_string(first + count - 1) +
              " are not in the batch of " + std::to_string(m.batch));
  c10::InferenceMode guard;
  const auto start = std::chrono::steady_clock::now();
  const int64_t network_start = network_nanoseconds();
  if (m.inputs) m.inputs->check_ready(m.batch);
  if (m.cfg_with_inputs && !m.inputs->has_negative()) bad_input(kNeedsNegative);
  const at::Tensor x_T = initial_noise(first, count);
  // Sampler noise: sample i's own stream, derived from its seed, so that it never depends on
  // how x_T was obtained nor on the other samples (nor on which of them run together).
  std::vector<uint64_t> noise_seeds;
  for (int64_t i = first; i < first + count; ++i) noise_seeds.push_back(noise_stream_seed(m.seeds[size_t(i)]));
  Rng rng = Rng::per_sample(noise_seeds);
  // Labels, or row indices into the declared inputs' full tables: this share's rows.
  const at::Tensor cond = m.cond.defined() ? m.cond.narrow(0, first, count) : at::Tensor();
  const at::Tensor init_image = m.init_image.defined() ? m.init_image.narrow(0, first, count) : at::Tensor();
  SamplerContext ctx(*m.denoiser, *m.schedule, rng, cond, progress);
  if (m.brownian) {
    // One path per sample over the run's noise levels, keyed by its noise seed.
    const double s0 = ode_time(*m.schedule, m.grid.t.front()), s1 = ode_time(*m.schedule, m.grid.t.back());
    ctx.set_brownian(std::make_shared<BrownianTree>(noise_seeds, std::min(s0, s1), std::max(s0, s1)));
  }
  ctx.set_null_label(m.null_label);
  ctx.set_indexed_cond(m.inputs != nullptr);
  // The pipeline's policies between steps, in this order: inpainting (with the corrector's
  // iterations alternating with it) or the corrector alone, then the trajectory.
  if (m.inpaint_mask.defined())
    ctx.add_hook(std::make_shared<InpaintHook>(init_image, m.inpaint_mask, m.corrector));
  else if (!m.corrector.type.empty())
    ctx.add_hook(std::make_shared<CorrectorHook>(m.corrector));
  std::shared_ptr<TrajectoryHook> trajectory;
  if (!m.out.trajectory.empty()) ctx.add_hook(trajectory = std::make_shared<TrajectoryHook>(x_T));
  GenerateResult r;
  r.samples = m.sampler->run(ctx, x_T, m.grid);
  if (m.inpaint_mask.defined()) r.samples = at::lerp(init_image, r.samples, m.inpaint_mask);  // the kept part exactly
  if (trajectory) r.trajectory = at::stack(trajectory->states());
  if (!at::isfinite(r.samples).all().item<bool>())
    bad_input("sampler '" + m.entry->name + "' produced non-finite samples; try more steps or other options");
  r.nfe = ctx.nfe();
  r.notes = m.load_notes;
  for (const auto& n : ctx.notes()) r.notes.push_back(n);
  r.steps = m.grid.steps();
  r.network_seconds = 1e-9 * double(network_nanoseconds() - network_start);
  const auto sampled = std::chrono::steady_clock::now();
  r.seconds = std::chrono::duration<double>(sampled - start).count();
  if (m.codec) {
    r.latents = r.samples;
    r.samples = m.codec->decode(r.latents);
    r.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - sampled).count();
  }
  return r;
}

std::vector<std::string> Pipeline::write_outputs(const GenerateResult& r) const {
  const Impl& m = *impl_;
  std::vector<std::string> written;
  // Outputs already renamed are taken back by a signal until the last one is written.
  std::vector<RemoveOnSignal> pending;
  const auto done = [&](const std::string& path) {
    written.push_back(path);
    pending.emplace_back(path);
  };
  try {
    const OutputSpec& out = m.out;
    const std::string config = provenance_yaml();
    if (!out.npy.empty()) {
      write_npy(out.npy, r.samples.to(at::kFloat), "output.npy");
      done(out.npy);
      const std::string json = provenance_json_path(out.npy);
      write_text_file(json, "output.npy (its .json)", provenance_json(config, summary(r)));
      done(json);
    }
    if (!out.png.empty()) {
      write_png_grid(out.png, r.samples, out.nrow, "output.png", {{"scorch", config}, {"parameters", summary(r)}});
      done(out.png);
    }
    if (!out.latents.empty() && r.latents.defined()) {
      write_npy(out.latents, r.latents.to(at::kFloat), "output.latents");
      done(out.latents);
    }
    if (!out.labels.empty()) {
      write_npy(out.labels, m.labels, "output.labels");
      done(out.labels);
    }
    if (!out.trajectory.empty() && r.trajectory.defined()) {
      write_npy(out.trajectory, r.trajectory.to(at::kFloat), "output.trajectory");
      done(out.trajectory);
    }
  } catch (...) {
    // All or nothing: a failed second write takes the first one back.
    for (const auto& f : written) std::remove(f.c_str());
    throw;
  }
  return written;
}

std::string Pipeline::provenance_yaml() const {
  YAML::Emitter e;
  e << impl_->resolved;
  return std::string(e.c_str()) + "\n";
}

std::string Pipeline::summary(const GenerateResult& r) const {
  const Impl& m = *impl_;
  const uint64_t first = m.seeds.front(), last = m.seeds.back();
  bool consecutive = true;
  for (size_t i = 0; i < m.seeds.size(); ++i) consecutive = consecutive && m.seeds[i] == first + i;
  std::string seeds = consecutive ? (m.seeds.size() == 1 ? std::to_string(first)
                                                         : std::to_string(first) + "-" + std::to_string(last))
                                  : "a list";
  std::string prompt;
  if (!m.prompts.empty()) {
    const bool same = std::all_of(m.prompts.begin(), m.prompts.end(), [&](const std::string& p) { return p == m.prompts[0]; });
    prompt = same ? "prompt \"" + m.prompts[0] + "\", " : "a prompt per sample, ";
  }
  return prompt + m.entry->name + ", " + std::to_string(r.steps) + " steps, " + std::to_string(r.nfe) + " NFE, seed " + seeds +
         ", batch " + std::to_string(m.batch) + ", model " + m.resolved["model"]["path"].as<std::string>() +
         " (SHA-256 " + m.model_sha256.substr(0, 12) + "), scorch " + scorch_version();
}

const std::vector<int64_t>& Pipeline::sample_shape() const { return impl_->image_shape; }
const std::string& Pipeline::sampler_name() const { return impl_->entry->name; }

}  // namespace scorch
