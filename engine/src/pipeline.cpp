#include "scorch/pipeline.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/ExpandUtils.h>
#include <c10/core/InferenceMode.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdio>
#include <set>
#include <sstream>

#include "../../samplers/sampler.h"
#include "guidance_config.h"
#include "input_files.h"
#include "scorch/config.h"
#include "yaml_util.h"
#include "scorch/error.h"
#include "scorch/gaussian.h"
#include "scorch/image.h"
#include "scorch/io.h"
#include "scorch/mixture_model.h"
#include "scorch/torchscript_denoiser.h"

namespace scorch {

namespace {

const std::vector<OptionSpec>& top_level_options() {
  static const std::vector<OptionSpec> specs = {
      {"seed", OptionType::Int, "0", "seed of x_T and of the sampler's noise", {}},
      {"batch", OptionType::Int, "1", "number of samples", {}},
      {"device", OptionType::String, "cpu", "where the model and solver run", {"cpu", "cuda"}},
      {"dtype", OptionType::String, "float32", "solver and model dtype", {"float32", "float64"}},
      {"init_noise", OptionType::String, "", ".npy file used as x_T instead of seeded noise", {}},
      {"invert", OptionType::String, "", ".npy samples to run back from t_end to t_start (deterministic samplers)", {}},
      {"init_image", OptionType::String, "",
       "SDEdit: data (.npy, or an image for one-channel models) noised to the start time", {}},
      {"strength", OptionType::Number, "0.8",
       "SDEdit: how far towards t_start the init_image is noised, in (0, 1] (1 with inpaint_mask)", {}},
      {"inpaint_mask", OptionType::String, "",
       "inpainting: 1 (white) where new content is generated, 0 where init_image is kept", {}},
      {"cond", OptionType::Int, "0", "class label for conditional models (or a list, one per sample)", {}},
  };
  return specs;
}

const std::set<std::string> kSections = {"model", "schedule", "sampler", "output", "guidance"};

std::shared_ptr<const Schedule> make_schedule(const YAML::Node& node) {
  std::map<std::string, std::string> raw = scalars(node, "schedule", {"betas", "alphas_cumprod"});
  const std::string type = raw.count("type") ? raw["type"] : "vp_linear";
  raw.erase("type");
  if (type == "vp_linear") {
    const Options o = Options::parse("schedule", {{"beta_0", OptionType::Number, "0.1", "", {}},
                                                  {"beta_1", OptionType::Number, "20", "", {}}},
                                     raw);
    return make_vp_linear(o.number("beta_0"), o.number("beta_1"));
  }
  if (type == "vp_discrete") {
    const Options o = Options::parse(
        "schedule",
        {{"beta_schedule", OptionType::String, "linear", "", {"linear", "scaled_linear"}},
         {"beta_start", OptionType::Number, "0.0001", "", {}},
         {"beta_end", OptionType::Number, "0.02", "", {}},
         {"num_train_steps", OptionType::Int, "1000", "", {}}},
        raw);
    if (node["betas"] && node["alphas_cumprod"]) bad_input("schedule: give betas or alphas_cumprod, not both");
    if (node["alphas_cumprod"])
      return make_vp_discrete(list_of<double>(node["alphas_cumprod"], "schedule.alphas_cumprod", "numbers"));
    const std::vector<double> betas =
        node["betas"] ? list_of<double>(node["betas"], "schedule.betas", "numbers")
                      : make_betas(o.str("beta_schedule"), o.number("beta_start"), o.number("beta_end"),
                                   int(o.integer("num_train_steps")));
    return make_vp_discrete(alphas_cumprod_from_betas(betas));
  }
  if (node["betas"] || node["alphas_cumprod"]) bad_input("schedule: betas / alphas_cumprod need type vp_discrete");
  if (type == "vp_cosine") {
    const Options o = Options::parse("schedule", {{"s", OptionType::Number, "0.008", "", {}}}, raw);
    return make_vp_cosine(o.number("s"));
  }
  if (type == "edm") {
    const Options o = Options::parse("schedule", {{"sigma_min", OptionType::Number, "0.002", "", {}},
                                                  {"sigma_max", OptionType::Number, "80", "", {}}},
                                     raw);
    return make_edm(o.number("sigma_min"), o.number("sigma_max"));
  }
  bad_input("schedule.type: expected vp_linear | vp_discrete | vp_cosine | edm, got '" + type + "'");
}

at::ScalarType network_dtype(const std::string& name) {
  if (name == "float64") return at::kDouble;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  return at::kFloat;
}

struct LoadedModel {
  std::unique_ptr<Denoiser> denoiser;
  Options options;
};

// A model section (`model:` or an entry of guidance.compose.models); keys in `skip` belong
// to the caller. Errors name the section by `prefix`.
LoadedModel load_model(const YAML::Node& model, const std::string& prefix, const std::shared_ptr<const Schedule>& schedule,
                       at::ScalarType dtype, at::Device device, std::set<std::string> skip = {}) {
  skip.insert("shape");
  LoadedModel out;
  const Options mo = Options::parse(
      prefix,
      {{"type", OptionType::String, "", "model kind", {"torchscript", "gaussian", "gmm", "empirical"}},
       {"path", OptionType::String, "", "model file", {}},
       {"prediction", OptionType::String, "eps", "what the network outputs", {"eps", "x0", "v", "score"}},
       {"time_input", OptionType::String, "t", "time argument of the network", {"t", "index", "sigma"}},
       {"rank", OptionType::Int, "0", "gaussian: keep the largest `rank` eigenvalues (0: all)", {}},
       {"max_batch", OptionType::Int, "0", "torchscript: evaluate in chunks of at most this many samples", {}},
       {"dtype", OptionType::String, "", "torchscript: the network's dtype (default: the top-level dtype)",
        {"float32", "float64", "bfloat16", "float16"}},
       {"num_classes", OptionType::Int, "0", "conditional models: number of class labels (for cond: rows)", {}},
       {"null_label", OptionType::Int, "-1", "conditional models: the unconditional label (for cond: null_label)", {}}},
      scalars(model, prefix, skip));
  out.options = mo;
  if (mo.str("type").empty()) bad_input(prefix + ".type: missing; expected torchscript | gaussian | gmm | empirical");
  if (mo.str("path").empty()) bad_input(prefix + ".path: missing");
  const std::string path = find_input_file(mo.str("path"));
  std::vector<int64_t> shape;
  if (model["shape"]) {
    shape = list_of<int64_t>(model["shape"], prefix + ".shape", "positive integers");
    if (shape.empty()) bad_input(prefix + ".shape: expected a non-empty list of positive integers");
    for (int64_t s : shape)
      if (s <= 0) bad_input(prefix + ".shape: expected positive integers, got " + shape_string(shape));
  }
  if (mo.str("type") == "torchscript") {
    if (shape.empty()) bad_input(prefix + ".shape: required for torchscript models, e.g. [1, 28, 28]");
    TorchScriptSpec spec;
    spec.path = path;
    spec.shape = shape;
    spec.prediction = parse_prediction_type(mo.str("prediction"));
    spec.time_input = parse_time_input(mo.str("time_input"));
    spec.dtype = mo.str("dtype").empty() ? dtype : network_dtype(mo.str("dtype"));
    spec.device = device;
    spec.max_batch = mo.integer("max_batch");
    if (spec.max_batch < 0) bad_input(prefix + ".max_batch: expected a non-negative integer");
    out.denoiser = load_torchscript_denoiser(spec, schedule);
  } else if (!mo.str("dtype").empty()) {
    bad_input(prefix + ".dtype: only torchscript models take a dtype of their own; analytic models run in `dtype`");
  } else if (mo.str("type") == "gmm" || mo.str("type") == "empirical") {
    MixtureModel mm = load_mixture_model(path, mo.str("type"));
    if (!shape.empty() && shape != mm.shape)
      bad_input(prefix + ".shape: " + shape_string(shape) + " does not match the model file's " + shape_string(mm.shape));
    out.denoiser = make_mixture_denoiser(std::move(mm), schedule);
  } else {
    GaussianModel g = load_gaussian(path, mo.integer("rank"));
    if (!shape.empty() && shape != g.shape)
      bad_input(prefix + ".shape: " + shape_string(shape) + " does not match the model file's " + shape_string(g.shape));
    out.denoiser = make_gaussian_denoiser(g.to(at::TensorOptions().dtype(dtype).device(device)), schedule);
  }
  return out;
}

}  // namespace

struct Pipeline::Impl {
  std::shared_ptr<const Schedule> schedule;
  std::shared_ptr<Denoiser> denoiser;  // the configured model, guided when guidance is set
  CorrectorSpec corrector;
  int64_t null_label = -1;
  const SamplerInfo* sampler = nullptr;
  Options sampler_options;
  GridSpec grid;
  GridSpec base_grid;  // the configured grid; SDEdit moves grid.t_start from it
  double t_start = 1.0;
  std::vector<int64_t> shape;
  at::TensorOptions options;
  uint64_t seed = 0;
  int64_t batch = 1;
  at::Tensor init_noise, init_image, inpaint_mask, cond, labels;
  bool invert = false;
  std::string png, npy, trajectory, labels_path;
  int nrow = 0;
};

Pipeline::Pipeline() : impl_(std::make_unique<Impl>()) {}
Pipeline::~Pipeline() = default;

std::unique_ptr<Pipeline> Pipeline::from_config(const YAML::Node& config) {
  std::unique_ptr<Pipeline> p(new Pipeline());
  Impl& m = *p->impl_;

  // Top level.
  for (const auto& kv : config) {
    const std::string key = kv.first.as<std::string>();
    if (kSections.count(key) || key == "cond") continue;
    bool known = false;
    for (const auto& s : top_level_options()) known = known || s.name == key;
    if (!known) {
      std::vector<std::string> valid(kSections.begin(), kSections.end());
      for (const auto& s : top_level_options()) valid.push_back(s.name);
      bad_input(key + ": unknown config key; valid keys are: " + join(valid, ", "));
    }
    if (!kv.second.IsScalar() && !kv.second.IsNull()) bad_input(key + ": expected a single value");
  }
  for (const auto& s : kSections)
    if (config[s] && !config[s].IsMap() && !config[s].IsNull()) bad_input(s + ": expected a mapping of keys to values");
  std::map<std::string, std::string> top = scalars(config, "");
  top.erase("cond");
  const Options o = Options::parse("", top_level_options(), top);
  const int64_t seed = o.integer("seed");
  if (seed < 0) bad_input("seed: expected a non-negative integer, got " + std::to_string(seed));
  m.seed = uint64_t(seed);
  m.batch = o.integer("batch");
  if (m.batch <= 0) bad_input("batch: expected a positive integer, got " + std::to_string(m.batch));
  if (o.str("device") == "cuda" && !at::hasCUDA()) bad_input("device: cuda requested but no CUDA device is available");
  const at::Device device(o.str("device") == "cuda" ? at::kCUDA : at::kCPU);
  const at::ScalarType dtype = o.str("dtype") == "float64" ? at::kDouble : at::kFloat;
  m.options = at::TensorOptions().dtype(dtype).device(device);

  m.schedule = make_schedule(config["schedule"]);

  // Model.
  const YAML::Node model = config["model"];
  if (!model || !model.IsMap()) bad_input("model: missing; expected model.type and model.path");
  LoadedModel loaded = load_model(model, "model", m.schedule, dtype, device);
  m.denoiser = std::move(loaded.denoiser);
  const Options& mo = loaded.options;
  m.null_label = mo.integer("null_label");
  m.shape = m.denoiser->sample_shape();

  // Sampler.
  const YAML::Node sampler = config["sampler"];
  std::map<std::string, std::string> sraw = scalars(sampler, "sampler");
  const std::string name = sraw.count("name") ? sraw["name"] : "ddim";
  sraw.erase("name");
  m.sampler = &find_sampler(name);
  m.sampler_options = parse_sampler_options(*m.sampler, sraw);
  m.grid = grid_spec(m.sampler_options);
  m.t_start = make_time_grid(*m.schedule, m.grid).front();  // also validates the grid

  // Conditioning.
  const YAML::Node cond = config["cond"];
  int64_t rows_per_class = 0;
  if (cond && !cond.IsNull()) {
    if (!m.denoiser->conditional()) bad_input("cond: the model takes no condition (forward(x, t))");
    std::vector<int64_t> labels;
    const std::string keyword = cond.IsScalar() ? cond.as<std::string>() : "";
    if (keyword == "rows") {
      // One grid row per class: batch = num_classes x n, label of sample i = i / n.
      const int64_t k = mo.integer("num_classes");
      if (k <= 0) bad_input("cond: rows needs model.num_classes");
      if (m.batch % k != 0)
        bad_input("cond: rows needs batch to be a multiple of model.num_classes = " + std::to_string(k));
      for (int64_t i = 0; i < m.batch; ++i) labels.push_back(i / (m.batch / k));
      rows_per_class = m.batch / k;
    } else if (keyword == "null_label") {
      if (mo.integer("null_label") < 0) bad_input("cond: null_label needs model.null_label");
      labels.assign(size_t(m.batch), mo.integer("null_label"));
    } else if (cond.IsSequence()) {
      labels = list_of<int64_t>(cond, "cond", "integer class labels");
      if (int64_t(labels.size()) != m.batch)
        bad_input("cond: " + std::to_string(labels.size()) + " labels for batch " + std::to_string(m.batch));
    } else {
      const Options co = Options::parse("", {top_level_options().back()}, {{"cond", cond.as<std::string>()}});
      labels.assign(size_t(m.batch), co.integer("cond"));
    }
    const int64_t k = mo.integer("num_classes");
    for (int64_t l : labels)
      if (l < 0 || (k > 0 && l >= k && l != mo.integer("null_label")))
        bad_input("cond: label " + std::to_string(l) + " is out of range for model.num_classes = " + std::to_string(k));
    m.labels = at::tensor(labels, at::TensorOptions().dtype(at::kLong));
    m.cond = at::tensor(labels, at::TensorOptions().dtype(at::kLong)).to(device);
  } else if (m.denoiser->conditional()) {
    bad_input("cond: the model is conditional (forward(x, t, cond)); set cond to a class label");
  }

  // Guidance: wraps the model; its reference samples are inverted with the plain model.
  if (config["guidance"] && !config["guidance"].IsNull()) {
    GuidanceContext gc;
    gc.shape = m.denoiser->sample_shape();
    gc.conditional = m.denoiser->conditional();
    gc.null_label = mo.integer("null_label");
    gc.options = m.options;
    gc.schedule = m.schedule;
    gc.time_input = mo.str("time_input");
    gc.load_model = [&](const YAML::Node& node, const std::string& prefix, const std::vector<std::string>& skip) {
      return std::shared_ptr<Denoiser>(
          load_model(node, prefix, m.schedule, dtype, device, std::set<std::string>(skip.begin(), skip.end())).denoiser);
    };
    gc.load_classifier = [&](const std::string& path, const std::string& time_input) {
      return load_torchscript_classifier(path, parse_time_input(time_input), m.schedule, dtype, device);
    };
    const double t_end = make_time_grid(*m.schedule, m.grid).back();
    gc.invert = [&](const at::Tensor& x0, const at::Tensor& label, int steps, std::vector<double>* ts,
                    std::vector<at::Tensor>* xs) {
      // DDIM from t_end up to t_start (deterministic, so x*_t is a function of the reference).
      c10::InferenceMode guard;
      GridSpec g;
      g.steps = steps;
      g.t_start = m.t_start;
      g.t_end = t_end;
      g.reverse = true;
      Rng rng(0);
      SamplerContext ctx(*m.denoiser, *m.schedule, rng, label.defined() ? label.to(device) : label);
      ctx.record_trajectory(x0);
      const SamplerInfo& ddim = find_sampler("ddim");
      ddim.run(ctx, x0, g, parse_sampler_options(ddim, {{"steps", std::to_string(steps)}}));
      std::vector<double> grid = make_time_grid(*m.schedule, g);  // increasing: t_end .. t_start
      *ts = std::vector<double>(grid.rbegin(), grid.rend());
      *xs = std::vector<at::Tensor>(ctx.trajectory().rbegin(), ctx.trajectory().rend());
    };
    GuidanceConfig gcfg = parse_guidance(config["guidance"], gc);
    if (gcfg.spec.compose == GuidanceSpec::Compose::Mixture && !m.denoiser->has_log_density())
      bad_input("guidance.compose: a mixture needs log-densities; the configured model has none");
    m.corrector = gcfg.corrector;
    if (!gcfg.spec.empty()) m.denoiser = make_guided_denoiser(m.denoiser, m.schedule, std::move(gcfg.spec));
    if ((m.corrector.type == "mala" || m.corrector.type == "hmc") && !m.denoiser->has_log_density())
      bad_input("guidance.corrector.type: " + m.corrector.type +
                " needs the log-density of the target (analytic models, products or mixtures of them, or a "
                "TorchScript energy); use ula or uhmc");
  }

  // Initial noise.
  std::vector<int64_t> full = {m.batch};
  full.insert(full.end(), m.shape.begin(), m.shape.end());
  m.invert = !o.str("invert").empty();
  if (!o.str("init_image").empty() && (m.invert || !o.str("init_noise").empty()))
    bad_input("init_image: give one of init_image, init_noise, invert");
  if (m.invert) {
    if (!o.str("init_noise").empty()) bad_input("invert: give either invert or init_noise, not both");
    for (const auto& name : m.sampler->noise_options)
      if (m.sampler_options.number(name) != 0.0)
        bad_input("invert: sampler '" + m.sampler->name + "' adds noise (" + name + " = " +
                  m.sampler_options.str(name) + "); inversion needs a deterministic sampler: set sampler." + name +
                  "=0");
    m.grid.reverse = true;
  }
  const std::string init_key = m.invert ? "invert" : "init_noise";
  if (!o.str(init_key).empty()) {
    const std::string file = find_input_file(o.str(init_key));
    at::Tensor x = read_npy(file);
    const std::string what = init_key + " '" + file + "'";
    if (!at::isFloatingType(x.scalar_type())) bad_input(what + ": expected float32 or float64 data");
    if (x.sizes() != at::IntArrayRef(full))
      bad_input(what + ": shape " + shape_string(x.sizes()) + " does not match [batch, *shape] = " + shape_string(full));
    if (!at::isfinite(x).all().item<bool>()) bad_input(what + ": has non-finite values");
    m.init_noise = x.to(m.options);
  }

  // SDEdit and inpainting (set_init_image).
  for (const char* key : {"strength", "inpaint_mask"})
    if (top.count(key) && o.str("init_image").empty()) bad_input(std::string(key) + ": needs init_image");
  m.base_grid = m.grid;
  if (!o.str("init_image").empty()) {
    const bool inpaint = !o.str("inpaint_mask").empty();
    const double strength = inpaint && !top.count("strength") ? 1.0 : o.number("strength");
    p->set_init_image(read_samples(o.str("init_image"), "init_image", m.shape, m.batch), strength,
                      inpaint ? read_mask(o.str("inpaint_mask"), "inpaint_mask", m.shape) : at::Tensor());
  }

  // Outputs: checked now so a long run never ends in an unwritable path.
  const Options oo = Options::parse("output",
                                    {{"png", OptionType::String, "", "PNG image grid", {}},
                                     {"npy", OptionType::String, "", "final samples, float32", {}},
                                     {"nrow", OptionType::Int, "0", "images per grid row (0: square)", {}},
                                     {"trajectory", OptionType::String, "", "states after every step, float32", {}},
                                     {"labels", OptionType::String, "", "class labels of the samples, int64", {}}},
                                    scalars(config["output"], "output"));
  m.png = oo.str("png");
  m.npy = oo.str("npy");
  m.nrow = int(oo.integer("nrow"));
  if (m.nrow == 0 && rows_per_class > 0) m.nrow = int(rows_per_class);
  m.labels_path = oo.str("labels");
  if (!m.labels_path.empty()) {
    if (!m.labels.defined()) bad_input("output.labels: the samples have no labels (set cond)");
    check_writable(m.labels_path, "output.labels");
  }
  if (m.nrow < 0) bad_input("output.nrow: expected a non-negative integer");
  if (!m.png.empty()) {
    if (!images_supported()) bad_input("output.png: this build has no image output (configured without OpenCV)");
    if (!is_image_shape(m.shape))
      bad_input("output.png: samples of shape " + shape_string(m.shape) + " are not images (need [C, H, W] or [H, W])");
    check_writable(m.png, "output.png");
  }
  m.trajectory = oo.str("trajectory");
  if (!m.npy.empty()) check_writable(m.npy, "output.npy");
  if (!m.trajectory.empty()) check_writable(m.trajectory, "output.trajectory");
  return p;
}

void Pipeline::set_init_image(const at::Tensor& x_init, double strength, const at::Tensor& mask) {
  Impl& m = *impl_;
  if (!x_init.defined()) {
    m.init_image = at::Tensor();
    m.inpaint_mask = at::Tensor();
    m.grid = m.base_grid;
    m.t_start = make_time_grid(*m.schedule, m.grid).front();
    return;
  }
  if (m.invert || m.init_noise.defined()) bad_input("init_image: give one of init_image, init_noise, invert");
  if (!(strength > 0.0 && strength <= 1.0)) {
    std::ostringstream got;
    got << strength;
    bad_input("strength: expected a number in (0, 1], got " + got.str());
  }
  std::vector<int64_t> one = {1}, full = {m.batch};
  one.insert(one.end(), m.shape.begin(), m.shape.end());
  full.insert(full.end(), m.shape.begin(), m.shape.end());
  at::Tensor x = x_init;
  if (x.sizes() == at::IntArrayRef(m.shape) || x.sizes() == at::IntArrayRef(one))
    x = x.reshape(one).expand(full);
  else if (x.sizes() != at::IntArrayRef(full))
    bad_input("init_image: shape " + shape_string(x.sizes()) + " is neither [batch, *shape] = " + shape_string(full) +
              " nor one sample " + shape_string(m.shape));
  if (!at::isfinite(x).all().item<bool>()) bad_input("init_image: has non-finite values");
  if (mask.defined()) {
    const at::Tensor probe = at::zeros(m.shape, mask.options());
    if (!at::isfinite(mask).all().item<bool>() || (mask < 0).any().item<bool>() || (mask > 1).any().item<bool>())
      bad_input("inpaint_mask: expected values in [0, 1] (1: generate, 0: keep init_image)");
    if (mask.dim() > probe.dim() || !at::is_expandable_to(mask.sizes(), probe.sizes()))
      bad_input("inpaint_mask: shape " + shape_string(mask.sizes()) + " does not broadcast to a sample " +
                shape_string(m.shape));
  }
  // SDEdit (Meng et al. 2022): start at t_s = t_end + strength (t_start - t_end) from
  // x_{t_s} = alpha(t_s) x_init + sigma(t_s) z; the sampler's steps span [t_end, t_s].
  m.grid = m.base_grid;
  const std::vector<double> grid = make_time_grid(*m.schedule, m.grid);
  m.grid.t_start = grid.back() + strength * (grid.front() - grid.back());
  m.t_start = make_time_grid(*m.schedule, m.grid).front();
  m.init_image = x.to(m.options).contiguous();
  m.inpaint_mask = mask.defined() ? mask.to(m.options) : at::Tensor();
}

at::Tensor Pipeline::initial_noise() const {
  const Impl& m = *impl_;
  if (m.init_noise.defined()) return m.init_noise.clone();
  std::vector<int64_t> full = {m.batch};
  full.insert(full.end(), m.shape.begin(), m.shape.end());
  if (m.init_image.defined()) {
    Rng rng(m.seed);
    return m.schedule->alpha(m.t_start) * m.init_image + m.schedule->sigma(m.t_start) * rng.normal(full, m.options);
  }
  // x_T ~ N(0, sigma(t_start)^2 I), the prior that neglects alpha(t_start) x0: the
  // k-diffusion convention (x~ = sigma~_max z in VE variables), N(0, I) at t = 1 for VP.
  Rng rng(m.seed);
  return rng.normal(full, m.options) * m.schedule->sigma(m.t_start);
}

GenerateResult Pipeline::generate(const ProgressFn& progress) const {
  const Impl& m = *impl_;
  c10::InferenceMode guard;
  const auto start = std::chrono::steady_clock::now();
  const at::Tensor x_T = initial_noise();
  // Sampler noise uses its own stream, derived from the seed, so that it never
  // depends on how x_T was obtained.
  Rng rng(m.seed ^ 0x9E3779B97F4A7C15ull);
  SamplerContext ctx(*m.denoiser, *m.schedule, rng, m.cond, progress);
  ctx.set_corrector(m.corrector);
  ctx.set_null_label(m.null_label);
  if (!m.trajectory.empty()) ctx.record_trajectory(x_T);
  if (m.inpaint_mask.defined()) ctx.set_inpainting(m.init_image, m.inpaint_mask);
  GenerateResult r;
  r.samples = m.sampler->run(ctx, x_T, m.grid, m.sampler_options);
  if (m.inpaint_mask.defined()) r.samples = at::lerp(m.init_image, r.samples, m.inpaint_mask);  // the kept part exactly
  if (!m.trajectory.empty()) r.trajectory = at::stack(ctx.trajectory());
  if (!at::isfinite(r.samples).all().item<bool>())
    bad_input("sampler '" + m.sampler->name + "' produced non-finite samples; try more steps or other options");
  r.nfe = ctx.nfe();
  r.notes = ctx.notes();
  r.steps = m.grid.steps;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

std::vector<std::string> Pipeline::write_outputs(const GenerateResult& r) const {
  const Impl& m = *impl_;
  std::vector<std::string> written;
  try {
    if (!m.npy.empty()) {
      write_npy(m.npy, r.samples.to(at::kFloat), "output.npy");
      written.push_back(m.npy);
    }
    if (!m.png.empty()) {
      write_png_grid(m.png, r.samples, m.nrow, "output.png");
      written.push_back(m.png);
    }
    if (!m.labels_path.empty()) {
      write_npy(m.labels_path, m.labels, "output.labels");
      written.push_back(m.labels_path);
    }
    if (!m.trajectory.empty() && r.trajectory.defined()) {
      write_npy(m.trajectory, r.trajectory.to(at::kFloat), "output.trajectory");
      written.push_back(m.trajectory);
    }
  } catch (...) {
    // All or nothing: a failed second write takes the first one back.
    for (const auto& f : written) std::remove(f.c_str());
    throw;
  }
  return written;
}

const std::vector<int64_t>& Pipeline::sample_shape() const { return impl_->shape; }
const std::string& Pipeline::sampler_name() const { return impl_->sampler->name; }

}  // namespace scorch
