#include "scorch/guidance_reader.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/mixture_model.h"
#include "scorch/input_files.h"
#include "scorch/options.h"
#include "scorch/schedule.h"

namespace scorch {

const Schema& guidance_schema() {
  static const Schema s = {
      {"scale", OptionType::Number, "1", "classifier-free guidance scale (1: none)", {}, -1000, 1000},
      {"null_label", OptionType::Int, "-1", "the unconditional label (default: model.null_label)", {}, -1, 16777216},
      {"rescale", OptionType::Number, "0", "guidance rescale phi (Lin et al. 2024; diffusers' guidance_rescale), 0: off", {}, 0, 1},
      {"interval", OptionType::Yaml, "", "[sigma_lo, sigma_hi]: guide only where the VE sigma is in (sigma_lo, sigma_hi]", {}},
      {"apg", OptionType::Section, "", "adaptive projected guidance (guidance.apg)", {}},
      {"cfg_zero_star", OptionType::Section, "", "CFG-Zero*: optimised scale and zero-init (guidance.cfg_zero_star)", {}},
      {"terms", OptionType::Yaml, "[]", "mixture-of-score-guidance terms (guidance.terms[])", {}},
      {"classifier", OptionType::Section, "", "classifier guidance (guidance.classifier)", {}},
      {"compose", OptionType::Section, "", "composition with other models (guidance.compose)", {}},
      {"corrector", OptionType::Section, "", "MCMC corrector after sampler steps (guidance.corrector)", {}},
  };
  return s;
}

const Schema& guidance_term_schema() {
  static const Schema s = {
      {"cond", OptionType::Yaml, "same", "c_i: same (the sample's label) | null | a class label", {}},
      {"ref_cond", OptionType::Yaml, "null", "cref_i: same | null | a class label", {}},
      {"weight", OptionType::Yaml, "", "w_i: a number or [[t, w], ...] points, linear in t (required)", {}},
      {"window", OptionType::Yaml, "", "[t_min, t_max]: the term acts only there", {}},
      {"mask", OptionType::String, "", "image or .npy mask M_i (1: guided, 0: not)", {}},
      {"reference", OptionType::String, "", "a reference sample (.npy or image) whose inverted trajectory is the term", {}},
      {"reference_cond", OptionType::Yaml, "", "the reference's label for its inversion", {}},
      {"reference_steps", OptionType::Int, "50", "DDIM steps of the reference's inversion", {}, 1, 100000},
  };
  return s;
}

const Schema& corrector_schema() {
  static const Schema s = {
      {"type", OptionType::String, "", "MCMC kernel (required)", {"ula", "mala", "hmc", "uhmc"}},
      {"step_size", OptionType::Number, "0.1", "step size, times sigma_t^2 (Langevin) or sigma_t (HMC)", {}, 0, 1000},
      {"steps", OptionType::Int, "1", "corrector iterations per sampler step", {}, 1, 10000},
      {"leapfrog", OptionType::Int, "3", "hmc, uhmc: leapfrog steps", {}, 1, 10000},
      {"damping", OptionType::Number, "0.7", "uhmc: momentum persistence", {}, 0, 1},
      {"adapt", OptionType::Bool, "true", "mala, hmc: adapt the step size towards the target acceptance", {}},
      {"window", OptionType::Yaml, "", "[t_min, t_max]: correct only after steps ending there", {}},
  };
  return s;
}

const Schema& classifier_schema() {
  static const Schema s = {
      {"path", OptionType::String, "", "TorchScript classifier forward(x, t), or a labelled gmm .safetensors", {}},
      {"scale", OptionType::Number, "1", "classifier guidance scale", {}, -1000, 1000},
      {"time_input", OptionType::String, "", "the classifier's time input: t | index | sigma (default: model.time_input)", {}},
  };
  return s;
}

const Schema& apg_schema() {
  static const Schema s = {
      {"eta", OptionType::Number, "1", "weight of the guidance's part parallel to D_c (1 and the rest off: CFG)", {}, 0, 100},
      {"norm_threshold", OptionType::Number, "0", "cap on the guidance's norm per sample, 0: none", {}, 0, 1e9},
      {"momentum", OptionType::Number, "0", "running sum Delta_bar <- Delta + momentum Delta_bar (the paper uses -0.5), 0: none", {}, -1, 1},
  };
  return s;
}

const Schema& cfg_zero_star_schema() {
  static const Schema s = {
      {"use_zero_init", OptionType::Bool, "true", "the velocity is 0 at the first zero_steps + 1 steps (flow schedules only)", {}},
      {"zero_steps", OptionType::Int, "0", "the last zero-init step index", {}, 0, 100000},
  };
  return s;
}

const Schema& compose_schema() {
  static const Schema s = {
      {"mode", OptionType::String, "product", "product (and negation) or mixture of densities", {"product", "mixture"}},
      {"weight", OptionType::Number, "1", "the configured model's weight", {}, -1000, 1000},
      {"models", OptionType::Yaml, "[]", "model sections (type, path, ..., weight)", {}},
  };
  return s;
}

namespace {

double number(const YAML::Node& n, const std::string& where) {
  try {
    if (n.IsScalar()) {
      const double v = n.as<double>();
      if (std::isfinite(v)) return v;
    }
  } catch (const YAML::Exception&) {
  }
  bad_input(where + ": expected a number");
}

int64_t integer(const YAML::Node& n, const std::string& where) {
  const double v = number(n, where);
  if (v != std::floor(v)) bad_input(where + ": expected an integer");
  return int64_t(v);
}

// [a, b] with a <= b (lo, hi: the bounds' names in messages)
std::pair<double, double> interval(const YAML::Node& n, const std::string& where, const std::string& lo = "t_min",
                                   const std::string& hi = "t_max") {
  const std::string form = "[" + lo + ", " + hi + "]";
  if (!n.IsSequence() || n.size() != 2) bad_input(where + ": expected " + form);
  const double a = number(n[0], where), b = number(n[1], where);
  if (!(a <= b)) bad_input(where + ": expected " + form + " with " + lo + " <= " + hi);
  return {a, b};
}

CondSpec cond_spec(const YAML::Node& n, const std::string& where, const GuidanceContext& ctx) {
  if (!ctx.conditional) bad_input(where + ": the model takes no condition");
  if (!n.IsScalar() && !n.IsNull()) bad_input(where + ": expected same, null or a class label");
  const std::string v = n.IsNull() ? "null" : n.as<std::string>();
  if (v == "same") return {CondSpec::Same, 0};
  if (v == "null" || v == "~") {
    if (ctx.null_label < 0 && !ctx.indexed) bad_input(where + ": null needs guidance.null_label or model.null_label");
    return {CondSpec::Null, 0};
  }
  if (ctx.indexed)
    bad_input(where + ": a fixed label needs a label-conditioned model; with model.inputs use same (the sample's "
              "inputs) or null (its negative inputs)");
  const int64_t label = integer(n, where);
  if (label < 0) bad_input(where + ": expected a label >= 0");
  return {CondSpec::Label, label};
}

WeightSchedule weight_schedule(const YAML::Node& n, const std::string& where) {
  WeightSchedule w;
  if (n.IsScalar()) {
    w.points = {{0.0, number(n, where)}};
    return w;
  }
  if (!n.IsSequence() || n.size() == 0) bad_input(where + ": expected a number or a list of [t, w] points");
  for (const auto& p : n) {
    if (!p.IsSequence() || p.size() != 2) bad_input(where + ": expected a list of [t, w] points");
    w.points.push_back({number(p[0], where), number(p[1], where)});
  }
  std::sort(w.points.begin(), w.points.end());
  return w;
}

// Scalars come from the typed reader; cond, weight and window take more than one YAML form
// (a weight is a number or a list of [t, w] points), so they are Yaml keys converted here.
GuidanceTerm parse_term(const YAML::Node& n, const std::string& where, const GuidanceContext& ctx) {
  const Options o = Options::read(n, guidance_term_schema(), where);
  GuidanceTerm term;
  if (n["cond"]) term.cond = cond_spec(n["cond"], where + ".cond", ctx);
  if (n["ref_cond"]) {
    term.ref_cond = cond_spec(n["ref_cond"], where + ".ref_cond", ctx);
  } else if (ctx.conditional) {
    if (ctx.null_label < 0 && !ctx.indexed) bad_input(where + ".ref_cond: the default (null) needs guidance.null_label or model.null_label");
  } else {
    term.ref_cond = {CondSpec::Same, 0};  // unconditional model: the reference is the model itself
  }
  if (!n["weight"]) bad_input(where + ".weight: missing");
  term.weight = weight_schedule(n["weight"], where + ".weight");
  if (n["window"]) std::tie(term.t_min, term.t_max) = interval(n["window"], where + ".window");
  if (!o.str("mask").empty()) term.mask = read_mask(o.str("mask"), where + ".mask", ctx.shape);
  if (!o.str("reference").empty()) {
    if (!ctx.invert) bad_input(where + ".reference: give reference terms under guidance.terms (the pipeline inverts them)");
    const at::Tensor ref = read_samples(o.str("reference"), where + ".reference", ctx.shape).to(at::kFloat);
    const int steps = int(o.integer("reference_steps"));
    if (steps < 1) bad_input(where + ".reference_steps: expected an integer >= 1");
    at::Tensor label;
    if (ctx.conditional) {
      CondSpec c = n["reference_cond"] ? cond_spec(n["reference_cond"], where + ".reference_cond", ctx) : term.cond;
      if (c.kind == CondSpec::Same) {
        if (ctx.null_label < 0 && !ctx.indexed) bad_input(where + ".reference_cond: give the reference's label");
        c = {CondSpec::Null, 0};
      }
      label = at::full({1}, c.kind == CondSpec::Null ? ctx.null_label : c.label, at::TensorOptions().dtype(at::kLong));
    }
    ctx.invert(ref.to(ctx.options), label, steps, &term.ref_t, &term.ref_x);
  } else if (n["reference_cond"] || n["reference_steps"]) {
    bad_input(where + ": reference_cond and reference_steps need a reference");
  }
  return term;
}

CorrectorSpec parse_corrector(const YAML::Node& n, const std::string& where) {
  const Options o = Options::read(n, corrector_schema(), where);
  CorrectorSpec c;
  c.type = o.str("type");
  if (c.type.empty()) bad_input(where + ".type: missing; expected ula | mala | hmc | uhmc");
  c.step_size = o.number("step_size");
  c.steps = int(o.integer("steps"));
  c.leapfrog = int(o.integer("leapfrog"));
  c.damping = o.number("damping");
  c.adapt = o.flag("adapt");
  if (n["window"]) std::tie(c.t_min, c.t_max) = interval(n["window"], where + ".window");
  check_corrector(c, where);
  return c;
}

}  // namespace

std::vector<GuidanceTerm> parse_guidance_terms(const YAML::Node& node, const std::string& where,
                                               const GuidanceContext& ctx) {
  if (!node.IsSequence()) bad_input(where + ": expected a list of terms");
  std::vector<GuidanceTerm> terms;
  for (size_t i = 0; i < node.size(); ++i)
    terms.push_back(parse_term(node[i], where + "[" + std::to_string(i) + "]", ctx));
  return terms;
}

GuidanceConfig parse_guidance(const YAML::Node& node, const GuidanceContext& ctx_in) {
  GuidanceConfig out;
  if (!node || node.IsNull()) return out;
  const Options o = Options::read(node, guidance_schema(), "guidance");
  GuidanceContext ctx = ctx_in;
  GuidanceSpec& g = out.spec;
  if (o.given("null_label")) {
    if (!ctx.conditional) bad_input("guidance.null_label: the model takes no condition");
    if (ctx.indexed)
      bad_input("guidance.null_label: with model.inputs the unconditional rows are the inputs' negatives");
    ctx.null_label = o.integer("null_label");
    if (ctx.null_label < 0) bad_input("guidance.null_label: expected a label >= 0");
  }
  g.null_label = ctx.null_label;
  g.indexed = ctx.indexed;
  g.cfg_scale = o.number("scale");
  if (g.cfg_scale != 1.0) {
    if (!ctx.conditional) bad_input("guidance.scale: classifier-free guidance needs a conditional model");
    if (ctx.null_label < 0 && !ctx.indexed) bad_input("guidance.scale: classifier-free guidance needs guidance.null_label or model.null_label");
  }
  const bool variant = o.given("rescale") || o.given("interval") || o.given("apg") || o.given("cfg_zero_star");
  if (variant && !ctx.conditional) bad_input("guidance: rescale, interval, apg and cfg_zero_star vary classifier-free guidance, which needs a conditional model");
  g.rescale = o.number("rescale");
  int64_t entries = 1;
  for (int64_t d : ctx.shape) entries *= d;
  if (g.rescale != 0.0 && entries < 2) bad_input("guidance.rescale: needs samples of more than one entry (a standard deviation)");
  if (o.given("interval")) {
    std::tie(g.interval_lo, g.interval_hi) = interval(o.node("interval"), "guidance.interval", "sigma_lo", "sigma_hi");
    if (!(g.interval_lo >= 0.0)) bad_input("guidance.interval: expected sigma_lo >= 0");
  }
  if (o.given("apg")) {
    const Options a = Options::read(o.node("apg"), apg_schema(), "guidance.apg");
    g.apg = {true, a.number("eta"), a.number("norm_threshold"), a.number("momentum")};
    if (g.apg.norm_threshold < 0.0) bad_input("guidance.apg.norm_threshold: expected a number >= 0");
  }
  if (o.given("cfg_zero_star")) {
    if (g.apg.on) bad_input("guidance: apg and cfg_zero_star each replace the classifier-free combination; give one");
    const Options z = Options::read(o.node("cfg_zero_star"), cfg_zero_star_schema(), "guidance.cfg_zero_star");
    // Zero-init sets a flow's velocity to 0 (x0 = x, a finite prediction). On a diffusion
    // schedule eps = 0 means x0 = x / alpha, far out at high noise and kept in multistep
    // histories: it is a flow-only option, off by default there.
    const bool flow = ctx.schedule && ctx.schedule->integrates_in_time();
    if (!flow && z.given("use_zero_init") && z.flag("use_zero_init"))
      bad_input("guidance.cfg_zero_star.use_zero_init: zero-init is for flow schedules (velocity 0 in the first steps); "
                "this schedule is " + ctx.schedule->name());
    g.cfg_zero_star = {true, flow && z.flag("use_zero_init"), int(z.integer("zero_steps"))};
    if (g.cfg_zero_star.zero_steps < 0) bad_input("guidance.cfg_zero_star.zero_steps: expected an integer >= 0");
  }
  if (o.given("terms")) g.terms = parse_guidance_terms(o.node("terms"), "guidance.terms", ctx);
  if (o.given("classifier")) {
    const Options c = Options::read(o.node("classifier"), classifier_schema(), "guidance.classifier");
    if (!ctx.conditional || ctx.indexed)
      bad_input("guidance.classifier: needs a label-conditioned model (class labels from cond)");
    if (c.str("path").empty()) bad_input("guidance.classifier.path: missing");
    const std::string path = find_input_file(c.str("path"));
    g.classifier_scale = c.number("scale");
    if (path.size() > 12 && path.substr(path.size() - 12) == ".safetensors") {
      MixtureModel mm = load_mixture_model(path, "gmm");
      if (!mm.labels.defined()) bad_input("guidance.classifier.path: '" + path + "' is a gmm without component labels");
      g.classifier = make_gmm_classifier(std::move(mm), ctx.schedule);
    } else {
      g.classifier = ctx.load_classifier(path, c.str("time_input").empty() ? ctx.time_input : c.str("time_input"));
    }
  }
  if (o.given("compose")) {
    const Options c = Options::read(o.node("compose"), compose_schema(), "guidance.compose");
    g.compose = c.str("mode") == "product" ? GuidanceSpec::Compose::Product : GuidanceSpec::Compose::Mixture;
    g.base_weight = c.number("weight");
    const YAML::Node& models = c.node("models");
    if (!models.IsSequence() || models.size() == 0) bad_input("guidance.compose.models: expected a list of model sections");
    const bool mix = g.compose == GuidanceSpec::Compose::Mixture;
    if (mix && !(g.base_weight > 0.0)) bad_input("guidance.compose.weight: a mixture weight must be > 0");
    for (size_t i = 0; i < models.size(); ++i) {
      const std::string where = "guidance.compose.models[" + std::to_string(i) + "]";
      const YAML::Node mn = models[i];
      if (!mn.IsMap()) bad_input(where + ": expected a model section (type, path, ...)");
      const Options w = Options::read(mn, {{"weight", OptionType::Number, "1", "", {}, -1000, 1000}}, where,
                                      [&] {
                                        std::set<std::string> other;
                                        for (const auto& kv : mn) other.insert(kv.first.as<std::string>());
                                        other.erase("weight");
                                        return other;
                                      }());
      ComposeTerm term;
      term.weight = w.number("weight");
      if (mix && !(term.weight > 0.0)) bad_input(where + ".weight: a mixture weight must be > 0");
      term.model = ctx.load_model(mn, where, {"weight"});
      if (term.model->sample_shape() != ctx.shape)
        bad_input(where + ": samples of shape " + shape_string(term.model->sample_shape()) + ", the model's are " +
                  shape_string(ctx.shape));
      if (mix && !term.model->has_log_density())
        bad_input(where + ": a mixture needs log-densities; this model has none (a TorchScript model needs energy(x, t, cond))");
      g.models.push_back(std::move(term));
    }
  }
  if (o.given("corrector")) out.corrector = parse_corrector(o.node("corrector"), "guidance.corrector");
  return out;
}

}  // namespace scorch
