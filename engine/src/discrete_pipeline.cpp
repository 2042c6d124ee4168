#include "scorch/discrete_pipeline.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <fstream>
#include <functional>

#include "../../samplers/discrete/discrete_sampler.h"
#include "scorch/error.h"
#include "scorch/io.h"
#include "yaml_util.h"

namespace scorch {

bool is_token_config(const YAML::Node& config) {
  const YAML::Node m = config["model"];
  return m && m.IsMap() && m["type"] && m["type"].IsScalar() && m["type"].as<std::string>() == "tokens";
}

struct TokenPipeline::Impl {
  std::unique_ptr<TokenDenoiser> model;
  std::unique_ptr<DiscreteSchedule> schedule;
  const DiscreteSamplerInfo* sampler = nullptr;
  Options sampler_options;
  std::string vocab_chars, pad;
  uint64_t seed = 0;
  int64_t batch = 1;
  std::string npy, text;
};

TokenPipeline::TokenPipeline() : impl_(std::make_unique<Impl>()) {}
TokenPipeline::~TokenPipeline() = default;

std::unique_ptr<TokenPipeline> TokenPipeline::from_config(const YAML::Node& config) {
  std::unique_ptr<TokenPipeline> p(new TokenPipeline());
  Impl& m = *p->impl_;
  for (const auto& kv : config) {
    const std::string key = kv.first.as<std::string>();
    if (key != "model" && key != "schedule" && key != "sampler" && key != "output" && key != "seed" && key != "batch")
      bad_input(key + ": unknown config key for a token model; valid keys are: model, schedule, sampler, output, seed, batch");
  }
  const Options top = Options::parse("", {{"seed", OptionType::Int, "0", "", {}}, {"batch", OptionType::Int, "16", "", {}}},
                                     scalars(config, ""));
  if (top.integer("seed") < 0) bad_input("seed: expected a non-negative integer");
  m.seed = uint64_t(top.integer("seed"));
  m.batch = top.integer("batch");
  if (m.batch <= 0) bad_input("batch: expected a positive integer");

  const Options mo = Options::parse(
      "model",
      {{"type", OptionType::String, "", "", {"tokens"}},
       {"path", OptionType::String, "", "TorchScript forward(tokens, t) -> log-probabilities [B, L, V]", {}},
       {"vocab", OptionType::String, "", "the characters of tokens 0..V-1, or V", {}},
       {"mask_id", OptionType::Int, "-1", "the mask token (default V)", {}},
       {"length", OptionType::Int, "0", "sequence length L", {}},
       {"transition", OptionType::String, "absorbing", "", {"absorbing", "uniform"}},
       {"pad", OptionType::String, "", "printing: cut each sample at this character", {}}},
      scalars(config["model"], "model"));
  TokenSpec spec;
  const std::string vocab = mo.str("vocab");
  if (vocab.empty()) bad_input("model.vocab: missing; give the characters of the tokens (or their number)");
  const bool numeric = vocab.find_first_not_of("0123456789") == std::string::npos;
  spec.vocab = numeric ? std::stoll(vocab) : int64_t(vocab.size());
  m.vocab_chars = numeric ? std::string() : vocab;
  spec.transition = mo.str("transition") == "uniform" ? Transition::Uniform : Transition::Absorbing;
  spec.mask_id = mo.integer("mask_id") >= 0 ? mo.integer("mask_id") : spec.vocab;
  spec.length = mo.integer("length");
  m.pad = mo.str("pad");
  if (m.pad.size() > 1) bad_input("model.pad: expected one character");
  if (mo.str("path").empty()) bad_input("model.path: missing");
  m.model = load_token_denoiser(find_input_file(mo.str("path")), spec);

  std::map<std::string, std::string> sraw = scalars(config["schedule"], "schedule");
  const std::string stype = sraw.count("type") ? sraw["type"] : "loglinear";
  sraw.erase("type");
  const Options so = Options::parse("schedule",
                                    {{"eps", OptionType::Number, "0.001", "", {}},
                                     {"sigma_min", OptionType::Number, "0.0001", "", {}},
                                     {"sigma_max", OptionType::Number, "20", "", {}}},
                                    sraw);
  m.schedule = make_discrete_schedule(stype, so.number("eps"), so.number("sigma_min"), so.number("sigma_max"));

  std::map<std::string, std::string> raw = scalars(config["sampler"], "sampler");
  const std::string name = raw.count("name") ? raw["name"] : "tweedie";
  raw.erase("name");
  m.sampler = &find_discrete_sampler(name);
  if (spec.transition == Transition::Uniform && !m.sampler->uniform_ok)
    bad_input("sampler.name: " + name + " needs an absorbing model; uniform-state models use tweedie");
  m.sampler_options = parse_discrete_options(*m.sampler, raw);

  const Options oo = Options::parse("output",
                                    {{"npy", OptionType::String, "", "tokens [batch, L], int64", {}},
                                     {"text", OptionType::String, "", "the decoded samples, one per line", {}},
                                     {"png", OptionType::String, "", "(continuous models only)", {}}},
                                    scalars(config["output"], "output"));
  if (!oo.str("png").empty()) bad_input("output.png: a token model has no image output; use output.text or output.npy");
  m.npy = oo.str("npy");
  m.text = oo.str("text");
  if (!m.npy.empty()) check_writable(m.npy, "output.npy");
  if (!m.text.empty()) check_writable(m.text, "output.text");
  return p;
}

TokenResult TokenPipeline::generate() const {
  const Impl& m = *impl_;
  const auto start = std::chrono::steady_clock::now();
  DiscreteContext ctx(*m.model, *m.schedule, m.seed, m.sampler_options);
  TokenResult r;
  r.tokens = m.sampler->run(ctx, discrete_prior(ctx, m.batch), m.sampler_options);
  r.calls = ctx.calls();
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

const std::string& TokenPipeline::sampler_name() const { return impl_->sampler->name; }
int TokenPipeline::steps() const { return int(impl_->sampler_options.integer("steps")); }

LsdDistillResult distill_lsd(const YAML::Node& config, const LsdDistillOptions& o) {
  if (o.steps < 2) bad_input("--steps: expected at least 2 student steps");
  if (o.teacher_steps < o.steps || o.teacher_steps % o.steps != 0)
    bad_input("--teacher-steps: expected a multiple of --steps");
  if (o.batch < 1 || o.iters < 1) bad_input("--batch / --iters: expected positive integers");
  YAML::Node cfg = YAML::Clone(config);
  cfg["sampler"] = YAML::Node(YAML::NodeType::Map);
  cfg["sampler"]["name"] = "euler";
  cfg["output"] = YAML::Node(YAML::NodeType::Map);
  const auto p = TokenPipeline::from_config(cfg);
  const TokenPipeline::Impl& m = *p->impl_;
  if (m.model->spec().transition != Transition::Absorbing) bad_input("distill-lsd: needs an absorbing (mask) model");
  const DiscreteSchedule& ns = *m.schedule;
  const int64_t mask = m.model->spec().mask_id, vocab = m.model->spec().vocab;

  // Teacher: euler with teacher_steps steps. It keeps, for student step i (t_i -> t_{i+1}),
  //   p_i   the model at the teacher's state at t_i (what the student sees), x_i and x_{i+1},
  //   p*_i  per position, the target of the fit: with target "final" the distribution the
  //         teacher drew that position's token from (at the teacher step that unmasked it,
  //         whenever that was); with target "step" the same, but a position still masked at
  //         t_{i+1} takes the teacher's distribution at t_{i+1}.
  DiscreteContext ctx(*m.model, ns, o.seed, parse_discrete_options(find_discrete_sampler("euler"), {}));
  at::Tensor x = discrete_prior(ctx, o.batch);
  const std::vector<double> tt = ctx.grid(o.teacher_steps), ts = ctx.grid(o.steps);
  const int every = o.teacher_steps / o.steps;
  if (o.target != "final" && o.target != "step") bad_input("--target: expected final or step, got '" + o.target + "'");
  std::vector<at::Tensor> states, student_p, target;
  for (int k = 0; k < o.teacher_steps; ++k) {
    const double t = tt[size_t(k)], s = tt[size_t(k) + 1];
    const at::Tensor pk = ctx.probs(x, at::full({x.size(0)}, t, at::kDouble));
    const at::Tensor masked = (x == mask).unsqueeze(-1);
    if (k % every == 0) {
      // "step": positions still masked at t_i close student step i - 1 with the distribution at t_i
      if (o.target == "step" && !target.empty()) target.back() = at::where(masked, pk, target.back());
      states.push_back(x);
      student_p.push_back(pk);
      target.push_back(pk);
    }
    // every position masked now takes this step's distribution as the latest one: in the
    // current student step's target ("step"), in every earlier one too ("final")
    for (size_t j = o.target == "step" ? target.size() - 1 : 0; j < target.size(); ++j)
      target[j] = at::where(masked, pk, target[j]);
    const double r = k + 1 == o.teacher_steps ? 1.0 : std::min(1.0, ns.alpha_rate(t) * (t - s) / (1.0 - ns.alpha(t)));
    const at::Tensor go = masked.squeeze(-1) & (ctx.uniform({x.size(0), x.size(1)}) < r);
    x = at::where(go, ctx.sample(pk), x);
  }
  states.push_back(x);

  LsdDistillResult res;
  c10::InferenceMode off(false);
  at::AutoGradMode grad_on(true);
  // Adam on one scalar parameter (the model outputs are fixed tensors).
  auto minimise = [&](at::Tensor param, const std::function<at::Tensor(const at::Tensor&)>& loss_of) {
    double m1 = 0, m2 = 0;
    for (int it = 1; it <= o.iters; ++it) {
      const double g = torch::autograd::grad({loss_of(param)}, {param})[0].item<double>();
      m1 = 0.9 * m1 + 0.1 * g;
      m2 = 0.999 * m2 + 0.001 * g * g;
      at::NoGradGuard ng;
      param.sub_(0.02 * (m1 / (1 - std::pow(0.9, it))) / (std::sqrt(m2 / (1 - std::pow(0.999, it))) + 1e-12));
    }
  };
  for (int i = 0; i < o.steps; ++i) {
    const at::Tensor xi = states[size_t(i)], xn = states[size_t(i) + 1];
    const at::Tensor sel = at::nonzero((xi == mask).flatten()).squeeze(1);
    if (sel.numel() == 0) bad_input("distill-lsd: the teacher left no masked position at student step " + std::to_string(i + 1));
    const at::Tensor log_p = student_p[size_t(i)].reshape({-1, vocab}).index_select(0, sel).clamp_min(1e-300).log();
    const at::Tensor log_target = target[size_t(i)].reshape({-1, vocab}).index_select(0, sel).clamp_min(1e-30).log();
    // c_i: reverse KL of the student's token distribution q_c ∝ p_i^c to the teacher's p*_i,
    //   L(c) = mean over the positions masked at t_i of sum_v q_c(v) (log q_c(v) - log p*_i(v)).
    // Its minimiser over all q is the normalised geometric mean of the p*_i over the teacher's
    // continuations: a student that draws the tokens of one step independently cannot express
    // the correlation the teacher builds by revealing them one after another, and this fit
    // makes it commit to the tokens that stay likely whichever neighbours the teacher reveals
    // first. (A forward KL or likelihood fit gives c = 1 for any consistent model: E p*_i = p_i.)
    auto kl_of = [&](const at::Tensor& c) {
      const at::Tensor log_q = at::log_softmax(c * log_p, -1);
      return (log_q.exp() * (log_q - log_target)).sum(-1).mean();
    };
    at::Tensor c = at::ones({}, at::kDouble).requires_grad_(true);
    res.loss_before.push_back(kl_of(c).item<double>());
    minimise(c, kl_of);
    res.loss_after.push_back(kl_of(c).item<double>());
    res.coefficients.push_back(c.item<double>());
    // d_i (LSD+): with c_i fixed, the likelihood of the teacher's unmasking events under the
    // student's one-step kernel P(v) = d_i (t_i - t_{i+1}) sigma(t_i) s_v^c_i, P(stay) = 1 - sum_v P(v).
    // The last step unmasks everything, so it has no rate to learn.
    double d_fit = 1.0;
    if (o.learn_step_sizes && i + 1 < o.steps) {
      const double t = ts[size_t(i)], s = ts[size_t(i) + 1], a = ns.alpha(t);
      const double base = (t - s) * ns.alpha_rate(t) / a, shift = std::log(std::expm1(-std::log(a)));
      const at::Tensor w0 = base * at::exp(c.detach() * (log_p - shift));  // [n, V]
      const at::Tensor next = xn.flatten().index_select(0, sel);
      const at::Tensor opened = next != mask;
      const at::Tensor log_w_tok = at::log(w0.gather(1, next.clamp_max(vocab - 1).unsqueeze(1)).squeeze(1).clamp_min(1e-300));
      const at::Tensor w_sum = w0.sum(1);
      auto nll_of = [&](const at::Tensor& log_d) {
        const at::Tensor stay = (1.0 - log_d.exp() * w_sum).clamp_min(1e-12);
        return -at::where(opened, log_d + log_w_tok, at::log(stay)).mean();
      };
      at::Tensor log_d = at::zeros({}, at::kDouble).requires_grad_(true);
      minimise(log_d, nll_of);
      d_fit = std::exp(log_d.item<double>());
    }
    res.step_scales.push_back(d_fit);
  }
  return res;
}

void write_lsd_yaml(const std::string& path, const LsdDistillResult& r, const LsdDistillOptions& o) {
  check_writable(path, "--out");
  YAML::Emitter e;
  e << YAML::BeginMap;
  e << YAML::Key << "coefficients" << YAML::Value << YAML::Flow << r.coefficients;
  if (o.learn_step_sizes) e << YAML::Key << "step_scales" << YAML::Value << YAML::Flow << r.step_scales;
  e << YAML::Key << "made_by" << YAML::Value
    << ("scorch distill-lsd --steps " + std::to_string(o.steps) + " --teacher-steps " +
        std::to_string(o.teacher_steps) + " --batch " + std::to_string(o.batch) + " --iters " +
        std::to_string(o.iters) + (o.learn_step_sizes ? " --learn-step-sizes" : "") + " --target " + o.target +
        " --seed " + std::to_string(o.seed));
  e << YAML::Key << "loss_before" << YAML::Value << YAML::Flow << r.loss_before;
  e << YAML::Key << "loss_after" << YAML::Value << YAML::Flow << r.loss_after;
  e << YAML::EndMap;
  write_atomically(path, "--out", [&](const std::string& tmp) {
    std::ofstream f(tmp);
    f << e.c_str() << "\n";
    if (!f) throw std::runtime_error("write failed");
  });
}

}  // namespace scorch
