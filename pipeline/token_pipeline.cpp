#include "scorch/token_pipeline.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <fstream>
#include <functional>

#include "scorch/discrete_sampler.h"
#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/provenance.h"
#include "sections.h"

namespace scorch {

bool is_token_config(const YAML::Node& config) {
  const YAML::Node m = config["model"];
  return m && m.IsMap() && m["type"] && m["type"].IsScalar() && m["type"].as<std::string>() == "tokens";
}

namespace {

// One template against the model: '_' is free, any other character must be in the
// vocabulary; shorter than L is completed with the pad character (the word has the
// template's length); -1 marks a free position.
std::vector<int64_t> read_template(const std::string& tpl, const std::string& key, const TokenModelSpec& model) {
  const int64_t length = model.spec.length;
  if (model.vocab_chars.empty())
    bad_input(key + ": a template needs a character vocabulary (model.vocab); use fixed: [[position, token], ...]");
  if (tpl.empty()) bad_input(key + ": empty; use '_' for each free position");
  if (int64_t(tpl.size()) > length)
    bad_input(key + ": '" + tpl + "' has " + std::to_string(tpl.size()) +
              " characters; the model's sequences have L = " + std::to_string(length));
  if (int64_t(tpl.size()) < length && (model.pad.empty() || model.vocab_chars.find(model.pad[0]) == std::string::npos))
    bad_input(key + ": '" + tpl + "' has " + std::to_string(tpl.size()) + " characters, not L = " +
              std::to_string(length) + ", and the model has no pad character in its vocabulary (model.pad) to complete it");
  std::vector<int64_t> out(size_t(length), -1);
  for (int64_t i = 0; i < length; ++i) {
    const char c = i < int64_t(tpl.size()) ? tpl[size_t(i)] : model.pad[0];
    if (c == '_') continue;
    const size_t v = model.vocab_chars.find(c);
    if (v == std::string::npos)
      bad_input(key + ": character '" + std::string(1, c) + "' at position " + std::to_string(i) +
                " is not in the vocabulary (model.vocab) nor '_'");
    out[size_t(i)] = int64_t(v);
  }
  return out;
}

// template (one or a list of batch) and fixed ([[position, token], ...]) as [batch, L]
// int64, -1 where free; undefined when neither is given.
at::Tensor read_fixed(const Options& top, const TokenModelSpec& model, int64_t batch) {
  const YAML::Node tpl = top.node("template"), pairs = top.node("fixed");
  const bool has_tpl = has_value(tpl);
  const bool has_pairs = pairs && pairs.IsSequence() && pairs.size() > 0;
  if (pairs && !pairs.IsNull() && !pairs.IsSequence())
    bad_input("fixed: expected a list of [position, token id] pairs");
  if (!has_tpl && !has_pairs) return {};
  const int64_t length = model.spec.length;
  at::Tensor out = at::full({batch, length}, -1, at::TensorOptions().dtype(at::kLong));
  if (has_tpl) {
    if (tpl.IsScalar()) {
      const std::vector<int64_t> row = read_template(tpl.Scalar(), "template", model);
      out.copy_(at::tensor(row, at::kLong).unsqueeze(0).expand({batch, length}));
    } else if (tpl.IsSequence()) {
      if (int64_t(tpl.size()) != batch)
        bad_input("template: a list of " + std::to_string(tpl.size()) + " templates for batch " + std::to_string(batch) +
                  " (one per sequence, or one string for all)");
      for (size_t i = 0; i < tpl.size(); ++i) {
        if (!tpl[i].IsScalar()) bad_input("template." + std::to_string(i) + ": expected a string");
        out[int64_t(i)].copy_(at::tensor(read_template(tpl[i].Scalar(), "template." + std::to_string(i), model), at::kLong));
      }
    } else {
      bad_input("template: expected a string or a list of strings");
    }
  }
  for (size_t k = 0; has_pairs && k < pairs.size(); ++k) {
    const std::string key = "fixed." + std::to_string(k);
    const YAML::Node pr = pairs[k];
    int64_t pos = -1, tok = -1;
    try {
      if (!pr.IsSequence() || pr.size() != 2) throw std::runtime_error("shape");
      pos = pr[0].as<int64_t>();
      tok = pr[1].as<int64_t>();
    } catch (const std::exception&) {
      bad_input(key + ": expected [position, token id], two integers");
    }
    if (pos < 0 || pos >= length)
      bad_input(key + ": position " + std::to_string(pos) + " is outside 0.." + std::to_string(length - 1));
    if (tok < 0 || tok >= model.spec.vocab)
      bad_input(key + ": token " + std::to_string(tok) + " is outside 0.." + std::to_string(model.spec.vocab - 1));
    out.select(1, pos).fill_(tok);
  }
  return out;
}

}  // namespace

struct TokenPipeline::Impl {
  std::unique_ptr<TokenDenoiser> model;
  std::unique_ptr<DiscreteSchedule> schedule;
  const DiscreteSamplerEntry* sampler = nullptr;
  Options sampler_options;
  std::string vocab_chars, pad;
  std::vector<uint64_t> seeds;  // sequence i's seed
  int64_t batch = 1;
  at::Tensor fixed;  // [batch, L], -1 where free (infill); undefined: none
  at::Tensor labels;  // [batch] class labels, or row indices with declared inputs; undefined: none
  int64_t null_label = 0;
  std::shared_ptr<ModelInputs> inputs;  // model.inputs (prompt tensors, ...); null: none
  std::vector<std::string> prompts;     // one per sequence (prompted networks)
  std::vector<std::string> notes;       // warnings from loading (a truncated prompt)
  double guidance = 1.0;
  std::string npy, text;
  YAML::Node resolved;  // the config as run (provenance): every key, per-sequence seeds
  std::string model_sha256;
};

TokenPipeline::TokenPipeline() : impl_(std::make_unique<Impl>()) {}
TokenPipeline::~TokenPipeline() = default;

std::unique_ptr<TokenPipeline> TokenPipeline::from_config(const YAML::Node& config) {
  std::unique_ptr<TokenPipeline> p(new TokenPipeline());
  Impl& m = *p->impl_;
  const Options top = Options::read(config, token_top_schema(), "");
  m.batch = top.integer("batch");
  m.seeds = read_seeds(top.node("seed"), m.batch);

  YAML::Node model_resolved;
  const TokenModelSpec model = read_token_model(config["model"], &model_resolved);
  m.model_sha256 = sha256_file(model.path, "model.path");
  const Provenance provenance = read_provenance(config["provenance"]);
  if (!provenance.model_sha256.empty() && provenance.model_sha256 != m.model_sha256)
    bad_input("model.path: '" + model.path + "' has SHA-256 " + m.model_sha256 + ", not the " +
              provenance.model_sha256 + " this config was made with (provenance.model_sha256); the model changed");
  m.vocab_chars = model.vocab_chars;
  m.pad = model.pad;
  m.fixed = read_fixed(top, model, m.batch);
  // Class conditioning: cond as for continuous models (a label, a list, null_label); a
  // conditional network without cond runs unconditionally (the null label).
  const bool conditional = model.spec.num_classes > 0;
  const YAML::Node cond = top.node("cond");
  m.guidance = read_token_guidance(config["guidance"]);
  m.inputs = model.inputs;
  if (m.inputs) {
    // Declared inputs (prompts, tensors, a label input): the network's rows are selected by
    // sequence index, the negative rows by -(i + 1) (model_inputs.h), as for continuous models.
    apply_cond_to_inputs(*m.inputs, cond, Options::read(config["model"], token_model_schema(), "model"), m.batch);
    m.prompts = apply_prompts(config, m.inputs.get(), m.batch, at::kCPU, &m.notes);
    m.inputs->check_ready(m.batch);
    if (m.guidance != 1.0 && !m.inputs->has_negative()) bad_input(kNeedsNegative);
    m.labels = at::arange(m.batch, at::TensorOptions().dtype(at::kLong));
  } else {
    m.prompts = apply_prompts(config, nullptr, m.batch, at::kCPU, &m.notes);  // names a prompt without inputs
    m.labels = read_token_cond(cond, config["model"], model, m.batch).labels;
    m.null_label = model.null_label;
    if (m.guidance != 1.0 && !conditional)
      bad_input("guidance.scale: classifier-free guidance needs a class-conditional token network (model.num_classes) "
                "or a prompted one (model.inputs)");
  }
  YAML::Node schedule_resolved;
  m.schedule = read_discrete_schedule(config["schedule"], &schedule_resolved);

  // Every key and every other file is checked before the network loads (the slow part), so
  // a bad option or an output path that cannot be written costs no model load.
  const YAML::Node sampler = config["sampler"];
  std::string name = "tweedie";
  if (sampler && sampler.IsMap() && sampler["name"]) {
    if (!sampler["name"].IsScalar()) bad_input("sampler.name: expected a sampler name");
    name = sampler["name"].Scalar();
  }
  m.sampler = &discrete_samplers().find(name);
  if (model.spec.transition == Transition::Uniform && !m.sampler->uniform_ok)
    bad_input("sampler.name: " + name + " needs an absorbing model; uniform-state models use tweedie");
  m.sampler_options = read_discrete_options(*m.sampler, sampler, "sampler");
  for (const auto& spec : m.sampler->options)
    if (spec.name == "coefficients" && !m.sampler_options.str("coefficients").empty())
      check_input_file(find_input_file(m.sampler_options.str("coefficients")), "sampler.coefficients");
  const Options oo = Options::read(config["output"], token_output_schema(), "output");
  if (!oo.str("png").empty()) bad_input("output.png: a token model has no image output; use output.text or output.npy");
  m.npy = oo.str("npy");
  m.text = oo.str("text");
  if (!m.npy.empty()) {
    check_writable(m.npy, "output.npy");
    check_writable(provenance_json_path(m.npy), "output.npy (its .json)");
  }
  if (!m.text.empty()) check_writable(m.text, "output.text");
  m.model = load_token_denoiser(model.path, model.spec, m.inputs);
  m.resolved = YAML::Node(YAML::NodeType::Map);
  YAML::Node seeds(YAML::NodeType::Sequence);
  for (uint64_t s : m.seeds) seeds.push_back(s);
  seeds.SetStyle(YAML::EmitterStyle::Flow);
  m.resolved["seed"] = seeds;
  m.resolved["batch"] = m.batch;
  if (has_value(cond)) m.resolved["cond"] = cond;
  if (!m.prompts.empty()) {
    m.resolved["prompt"] = config["prompt"];
    if (config["negative_prompt"]) m.resolved["negative_prompt"] = config["negative_prompt"];
    m.resolved["text_encoder"] = config["text_encoder"];
  }
  if (m.guidance != 1.0) m.resolved["guidance"]["scale"] = m.guidance;
  if (has_value(top.node("template"))) m.resolved["template"] = top.node("template");
  if (top.node("fixed") && top.node("fixed").IsSequence() && top.node("fixed").size() > 0) m.resolved["fixed"] = top.node("fixed");
  m.resolved["model"] = model_resolved;
  m.resolved["schedule"] = schedule_resolved;
  m.resolved["sampler"]["name"] = m.sampler->name;
  for (const auto& kv : m.sampler_options.to_yaml()) m.resolved["sampler"][kv.first] = kv.second;
  m.resolved["provenance"]["scorch_version"] = scorch_version();
  m.resolved["provenance"]["model_sha256"] = m.model_sha256;

  return p;
}

TokenResult TokenPipeline::generate() const {
  const Impl& m = *impl_;
  const auto start = std::chrono::steady_clock::now();
  DiscreteContext ctx(*m.model, *m.schedule, Rng::per_sample(m.seeds), m.sampler_options);
  if (m.fixed.defined()) ctx.set_fixed(m.fixed);
  if (m.labels.defined()) ctx.set_labels(m.labels, m.null_label, m.guidance, /*indexed=*/m.inputs != nullptr);
  TokenResult r;
  r.tokens = m.sampler->run(ctx, discrete_prior(ctx, m.batch), m.sampler_options);
  r.calls = ctx.calls();
  r.positions = ctx.token_evaluations();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

std::vector<std::string> TokenPipeline::decode(const at::Tensor& tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> lines;
  const at::Tensor t = tokens.to(at::kLong).contiguous();
  for (int64_t i = 0; i < t.size(0); ++i) {
    std::string s;
    for (int64_t j = 0; j < t.size(1); ++j) {
      const int64_t v = t[i][j].item<int64_t>();
      if (!m.vocab_chars.empty())
        s += v >= 0 && v < int64_t(m.vocab_chars.size()) ? m.vocab_chars[size_t(v)] : '?';
      else
        s += (j ? " " : "") + std::to_string(v);
    }
    if (!m.pad.empty() && s.find(m.pad[0]) != std::string::npos) s = s.substr(0, s.find(m.pad[0]));
    lines.push_back(s);
  }
  return lines;
}

std::vector<std::string> TokenPipeline::write_outputs(const TokenResult& r) const {
  const Impl& m = *impl_;
  std::vector<std::string> written;
  try {
    if (!m.npy.empty()) {
      write_npy(m.npy, r.tokens, "output.npy");
      written.push_back(m.npy);
      YAML::Emitter e;
      e << m.resolved;
      const std::string json = provenance_json_path(m.npy);
      write_text_file(json, "output.npy (its .json)",
                      provenance_json(std::string(e.c_str()) + "\n",
                                      m.sampler->name + ", " + std::to_string(steps()) + " steps, batch " +
                                          std::to_string(m.batch) + ", scorch " + scorch_version()));
      written.push_back(json);
    }
    if (!m.text.empty()) {
      const auto lines = decode(r.tokens);
      write_atomically(m.text, "output.text", [&](const std::string& tmp) {
        std::ofstream f(tmp);
        for (const auto& l : lines) f << l << "\n";
        if (!f) throw std::runtime_error("write failed");
      });
      written.push_back(m.text);
    }
  } catch (...) {
    for (const auto& f : written) std::remove(f.c_str());
    throw;
  }
  return written;
}

void TokenPipeline::set_fixed(const at::Tensor& tokens) {
  Impl& m = *impl_;
  if (!tokens.defined()) {
    m.fixed = at::Tensor();
    return;
  }
  check_fixed_tokens(tokens, m.model->spec(), m.batch);
  m.fixed = tokens.to(at::kLong).clone();
}

const std::vector<std::string>& TokenPipeline::notes() const { return impl_->notes; }

const std::string& TokenPipeline::sampler_name() const { return impl_->sampler->name; }
int TokenPipeline::steps() const { return int(impl_->sampler_options.integer("steps")); }

TokenDenoiser& TokenPipeline::model() const { return *impl_->model; }
const DiscreteSchedule& TokenPipeline::schedule() const { return *impl_->schedule; }

}  // namespace scorch
