#include "guidance_config.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "scorch/io.h"
#include "scorch/mixture_model.h"
#include "input_files.h"
#include "yaml_util.h"

namespace scorch {

namespace {

void check_keys(const YAML::Node& node, const std::string& where, const std::vector<std::string>& valid) {
  if (!node.IsMap()) bad_input(where + ": expected a mapping of keys to values");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (std::find(valid.begin(), valid.end(), key) == valid.end())
      bad_input(where + "." + key + ": unknown key; valid keys are: " + join(valid, ", "));
  }
}

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

// [a, b] with a <= b
std::pair<double, double> interval(const YAML::Node& n, const std::string& where) {
  if (!n.IsSequence() || n.size() != 2) bad_input(where + ": expected [t_min, t_max]");
  const double a = number(n[0], where), b = number(n[1], where);
  if (!(a <= b)) bad_input(where + ": expected [t_min, t_max] with t_min <= t_max");
  return {a, b};
}

CondSpec cond_spec(const YAML::Node& n, const std::string& where, const GuidanceContext& ctx) {
  if (!ctx.conditional) bad_input(where + ": the model takes no condition");
  if (!n.IsScalar() && !n.IsNull()) bad_input(where + ": expected same, null or a class label");
  const std::string v = n.IsNull() ? "null" : n.as<std::string>();
  if (v == "same") return {CondSpec::Same, 0};
  if (v == "null" || v == "~") {
    if (ctx.null_label < 0) bad_input(where + ": null needs guidance.null_label or model.null_label");
    return {CondSpec::Null, 0};
  }
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

GuidanceTerm parse_term(const YAML::Node& n, const std::string& where, const GuidanceContext& ctx) {
  check_keys(n, where, {"cond", "ref_cond", "weight", "window", "mask", "reference", "reference_cond", "reference_steps"});
  GuidanceTerm term;
  if (n["cond"]) term.cond = cond_spec(n["cond"], where + ".cond", ctx);
  if (n["ref_cond"]) {
    term.ref_cond = cond_spec(n["ref_cond"], where + ".ref_cond", ctx);
  } else if (ctx.conditional) {
    if (ctx.null_label < 0) bad_input(where + ".ref_cond: the default (null) needs guidance.null_label or model.null_label");
  } else {
    term.ref_cond = {CondSpec::Same, 0};  // unconditional model: the reference is the model itself
  }
  if (!n["weight"]) bad_input(where + ".weight: missing");
  term.weight = weight_schedule(n["weight"], where + ".weight");
  if (n["window"]) std::tie(term.t_min, term.t_max) = interval(n["window"], where + ".window");
  if (n["mask"]) term.mask = read_mask(n["mask"].as<std::string>(), where + ".mask", ctx.shape);
  if (n["reference"]) {
    if (!ctx.invert) bad_input(where + ".reference: give reference terms under guidance.terms (the pipeline inverts them)");
    const at::Tensor ref = read_samples(n["reference"].as<std::string>(), where + ".reference", ctx.shape).to(at::kFloat);
    const int steps = n["reference_steps"] ? int(integer(n["reference_steps"], where + ".reference_steps")) : 50;
    if (steps < 1) bad_input(where + ".reference_steps: expected an integer >= 1");
    at::Tensor label;
    if (ctx.conditional) {
      CondSpec c = n["reference_cond"] ? cond_spec(n["reference_cond"], where + ".reference_cond", ctx) : term.cond;
      if (c.kind == CondSpec::Same) {
        if (ctx.null_label < 0) bad_input(where + ".reference_cond: give the reference's label");
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
  check_keys(n, where, {"type", "step_size", "steps", "leapfrog", "damping", "adapt", "window"});
  CorrectorSpec c;
  c.type = n["type"] ? n["type"].as<std::string>() : "";
  if (c.type.empty()) bad_input(where + ".type: missing; expected ula | mala | hmc | uhmc");
  if (n["step_size"]) c.step_size = number(n["step_size"], where + ".step_size");
  if (n["steps"]) c.steps = int(integer(n["steps"], where + ".steps"));
  if (n["leapfrog"]) c.leapfrog = int(integer(n["leapfrog"], where + ".leapfrog"));
  if (n["damping"]) c.damping = number(n["damping"], where + ".damping");
  if (n["adapt"]) {
    const std::string v = n["adapt"].as<std::string>();
    if (v != "true" && v != "false") bad_input(where + ".adapt: expected true or false");
    c.adapt = v == "true";
  }
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
  check_keys(node, "guidance", {"scale", "null_label", "terms", "classifier", "compose", "corrector"});
  GuidanceContext ctx = ctx_in;
  GuidanceSpec& g = out.spec;
  if (node["null_label"]) {
    if (!ctx.conditional) bad_input("guidance.null_label: the model takes no condition");
    ctx.null_label = integer(node["null_label"], "guidance.null_label");
    if (ctx.null_label < 0) bad_input("guidance.null_label: expected a label >= 0");
  }
  g.null_label = ctx.null_label;
  if (node["scale"]) {
    g.cfg_scale = number(node["scale"], "guidance.scale");
    if (g.cfg_scale != 1.0) {
      if (!ctx.conditional) bad_input("guidance.scale: classifier-free guidance needs a conditional model");
      if (ctx.null_label < 0) bad_input("guidance.scale: classifier-free guidance needs guidance.null_label or model.null_label");
    }
  }
  if (node["terms"]) g.terms = parse_guidance_terms(node["terms"], "guidance.terms", ctx);
  if (const YAML::Node c = node["classifier"]) {
    check_keys(c, "guidance.classifier", {"path", "scale", "time_input"});
    if (!ctx.conditional) bad_input("guidance.classifier: needs a conditional model (class labels from cond)");
    if (!c["path"]) bad_input("guidance.classifier.path: missing");
    const std::string path = find_input_file(c["path"].as<std::string>());
    g.classifier_scale = c["scale"] ? number(c["scale"], "guidance.classifier.scale") : 1.0;
    if (path.size() > 12 && path.substr(path.size() - 12) == ".safetensors") {
      MixtureModel mm = load_mixture_model(path, "gmm");
      if (!mm.labels.defined()) bad_input("guidance.classifier.path: '" + path + "' is a gmm without component labels");
      g.classifier = make_gmm_classifier(std::move(mm), ctx.schedule);
    } else {
      g.classifier = ctx.load_classifier(path, c["time_input"] ? c["time_input"].as<std::string>() : ctx.time_input);
    }
  }
  if (const YAML::Node c = node["compose"]) {
    check_keys(c, "guidance.compose", {"mode", "weight", "models"});
    const std::string mode = c["mode"] ? c["mode"].as<std::string>() : "product";
    if (mode != "product" && mode != "mixture")
      bad_input("guidance.compose.mode: expected product or mixture, got '" + mode + "'");
    g.compose = mode == "product" ? GuidanceSpec::Compose::Product : GuidanceSpec::Compose::Mixture;
    g.base_weight = c["weight"] ? number(c["weight"], "guidance.compose.weight") : 1.0;
    if (!c["models"] || !c["models"].IsSequence() || c["models"].size() == 0)
      bad_input("guidance.compose.models: expected a list of model sections");
    const bool mix = g.compose == GuidanceSpec::Compose::Mixture;
    if (mix && !(g.base_weight > 0.0)) bad_input("guidance.compose.weight: a mixture weight must be > 0");
    for (size_t i = 0; i < c["models"].size(); ++i) {
      const std::string where = "guidance.compose.models[" + std::to_string(i) + "]";
      const YAML::Node mn = c["models"][i];
      if (!mn.IsMap()) bad_input(where + ": expected a model section (type, path, ...)");
      ComposeTerm term;
      term.weight = mn["weight"] ? number(mn["weight"], where + ".weight") : 1.0;
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
  if (node["corrector"]) out.corrector = parse_corrector(node["corrector"], "guidance.corrector");
  return out;
}

}  // namespace scorch
