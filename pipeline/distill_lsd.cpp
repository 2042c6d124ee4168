// LSD distillation (`scorch distill-lsd`, include/scorch/token_pipeline.h): fits the lsd
// sampler's per-step coefficients to a many-step euler teacher.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/optim/adam.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <functional>

#include "scorch/discrete_sampler.h"
#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/token_pipeline.h"

namespace scorch {

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
  TokenDenoiser& model = p->model();
  if (model.spec().transition != Transition::Absorbing) bad_input("distill-lsd: needs an absorbing (mask) model");
  const DiscreteSchedule& ns = p->schedule();
  const int64_t mask = model.spec().mask_id, vocab = model.spec().vocab;

  // Teacher: euler with teacher_steps steps (the unmasking probability of the euler sampler,
  // euler_unmask_probability; the draws are kept here because the fit needs every step's p). It keeps, for student step i (t_i -> t_{i+1}),
  //   p_i   the model at the teacher's state at t_i (what the student sees), x_i and x_{i+1},
  //   p*_i  per position, the target of the fit: with target "final" the distribution the
  //         teacher drew that position's token from (at the teacher step that unmasked it,
  //         whenever that was); with target "step" the same, but a position still masked at
  //         t_{i+1} takes the teacher's distribution at t_{i+1}.
  const DiscreteSamplerEntry& euler = discrete_samplers().find("euler");
  std::vector<uint64_t> seeds;  // sequence i's stream: seed + i, as in generate
  for (int64_t i = 0; i < o.batch; ++i) seeds.push_back(o.seed + uint64_t(i));
  DiscreteContext ctx(model, ns, Rng::per_sample(seeds), read_discrete_options(euler, YAML::Node(), "sampler"));
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
    const double r = k + 1 == o.teacher_steps ? 1.0 : euler_unmask_probability(ns, t, s);
    const at::Tensor go = masked.squeeze(-1) & (ctx.uniform({x.size(0), x.size(1)}) < r);
    x = at::where(go, ctx.sample(pk), x);
  }
  states.push_back(x);

  LsdDistillResult res;
  c10::InferenceMode off(false);
  at::AutoGradMode grad_on(true);
  // LibTorch's Adam on one scalar parameter (the model outputs are fixed tensors).
  auto minimise = [&](at::Tensor param, const std::function<at::Tensor(const at::Tensor&)>& loss_of) {
    torch::optim::Adam adam({param}, torch::optim::AdamOptions(0.02).betas({0.9, 0.999}).eps(1e-12));
    for (int it = 1; it <= o.iters; ++it) {
      adam.zero_grad();
      loss_of(param).backward();
      adam.step();
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
