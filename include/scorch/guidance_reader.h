// Reading the `guidance:` config section (docs/guidance.md) into a GuidanceSpec and a
// corrector: one reader for the pipeline's `guidance:` and the msg sampler's `terms`. The
// caller supplies how to load a model section and how to invert a reference sample (the
// pipeline does; msg has no inversion, so its terms take no `reference`).
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "scorch/corrector.h"
#include "scorch/guidance.h"
#include "scorch/options.h"

namespace scorch {

struct GuidanceContext {
  std::vector<int64_t> shape;  // one sample
  bool conditional = false;    // the configured model takes labels
  bool indexed = false;        // its cond is a row index into declared inputs (model.inputs)
  int64_t null_label = -1;     // model.null_label
  at::TensorOptions options;
  std::shared_ptr<const Schedule> schedule;
  // Loads a model section (type, path, ...), skipping the listed keys.
  std::function<std::shared_ptr<Denoiser>(const YAML::Node&, const std::string&, const std::vector<std::string>&)>
      load_model;
  // Inverts a reference sample [1, *shape] (labels [1] or undefined) with `steps` deterministic
  // steps from t_end to t_start: the states and their times, t decreasing (t_start first).
  std::function<void(const at::Tensor&, const at::Tensor&, int, std::vector<double>*, std::vector<at::Tensor>*)> invert;
  // TorchScript classifier forward(x, t) -> logits, with the model's time input convention.
  std::function<std::shared_ptr<Classifier>(const std::string& path, const std::string& time_input)> load_classifier;
  std::string time_input;  // model.time_input
};

struct GuidanceConfig {
  GuidanceSpec spec;
  CorrectorSpec corrector;
};

// The schemas of guidance:, a term, guidance.corrector, guidance.classifier, guidance.compose.
const Schema& guidance_schema();
const Schema& guidance_term_schema();
const Schema& corrector_schema();
const Schema& classifier_schema();
const Schema& compose_schema();
const Schema& apg_schema();
const Schema& cfg_zero_star_schema();

GuidanceConfig parse_guidance(const YAML::Node& node, const GuidanceContext& ctx);
// A list of score-mixture terms (guidance.terms, or the msg sampler's `terms`).
std::vector<GuidanceTerm> parse_guidance_terms(const YAML::Node& node, const std::string& where,
                                               const GuidanceContext& ctx);

}  // namespace scorch
