// LSD distillation (`scorch distill-lsd`, include/scorch/token_pipeline.h): fits the lsd
// sampler's per-step coefficients to a many-step euler teacher.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
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

namespace {

using Minimiser = std::function<void(at::Tensor, const std::function<at::Tensor(const at::Tensor&)>&)>;

struct JointFit {
  double c = 1.0, loss_before = 0.0, loss_after = 0.0;
};

// target "joint": the student's reverse KL to what the teacher does jointly in one student step.
// S: the positions masked at the teacher's x_i and unmasked by x_{i+1}. The student draws them
// independently, v_j ~ q_c,j ∝ p_i,j^c; the teacher draws them one after another, each from the
// model given x_i and the ones it revealed before (its own order), so its law on S is
//   P(v_S | x_i) = prod_k p(v_{sigma_k} | x_i, v_{sigma_1..k-1}).
// c minimises, per position of S,
//   L(c) = E_{v ~ prod_j q_c,j} [ sum_{j in S} log q_c,j(v_j) - log P(v_S | x_i) ].
// With |S| = 1 the minimiser is c = 1 (q_1 = p_i); with more, the product of marginals cannot
// hold the teacher's correlations, and the reverse KL (mode-seeking) sharpens it by exactly as
// much as the teacher's moves in one student step are correlated; so c -> 1 as the student's
// steps shrink. L is estimated by self-normalised importance sampling: `kDraws` draws per
// sequence from q_c0 and the model along the teacher's order for log P (one batched call per
// rank in S), weights q_c / q_c0 per sequence; three rounds, each from the previous fit.
JointFit fit_joint(TokenDenoiser& model, const at::Tensor& xi, const at::Tensor& xn, const at::Tensor& reveal,
                   const at::Tensor& p_i, const std::vector<double>& teacher_times, const LsdDistillOptions& o,
                   const Minimiser& minimise) {
  constexpr int64_t kDraws = 16;
  constexpr int kRounds = 3;
  const int64_t mask = model.spec().mask_id, n = xi.size(0), L = xi.size(1), V = p_i.size(-1);
  const at::Tensor in_s = (xi == mask) & (xn != mask);  // [n, L]
  const at::Tensor size = in_s.sum(1);                  // |S_b|
  const int64_t max_s = size.max().item<int64_t>();
  JointFit fit;
  if (max_s == 0) return fit;
  // The teacher's order within S: by the step that revealed the position, then by position.
  const at::Tensor key = at::where(in_s, reveal * L + at::arange(L, at::kLong), at::full({}, INT64_MAX, at::kLong));
  const at::Tensor order = key.argsort(int64_t(1));  // order[b, k]: S_b's k-th position (k < |S_b|)
  const at::Tensor rank = order.argsort(int64_t(1));  // rank[b, j]: j's place in that order
  const at::Tensor log_p = p_i.clamp_min(1e-300).log();                 // [n, L, V]
  const at::Tensor s_flat = at::nonzero(in_s.flatten()).squeeze(1);     // the positions of S, flat
  const at::Tensor log_p_s = log_p.reshape({n * L, V}).index_select(0, s_flat), s_seq = at::floor_divide(s_flat, L);
  const at::Tensor t_of_step = at::tensor(teacher_times, at::kDouble);  // the teacher's grid
  at::Generator gen = at::detail::createCPUGenerator(o.seed + 0x5eed);
  const double positions = double(size.sum().item<int64_t>());
  double c0 = 1.0;
  for (int round = 0; round < kRounds; ++round) {
    // Draws from q_c0 [M, n, L] and their teacher log-likelihood log P(v_S | x_i) [M, n].
    const at::Tensor q0 = at::softmax(c0 * log_p, -1);
    const at::Tensor v = sample_categorical(q0.unsqueeze(0).expand({kDraws, n, L, V}).contiguous(), gen);
    at::Tensor log_P = at::zeros({kDraws, n}, at::kDouble);
    for (int64_t k = 0; k < max_s; ++k) {
      at::NoGradGuard no_grad;  // the model's outputs are data here; only c is trained
      const at::Tensor rows = at::nonzero(size > k).squeeze(1);  // sequences with a k-th position in S
      const at::Tensor pos = order.index_select(0, rows).select(1, k);                       // [r]
      const at::Tensor known = in_s.index_select(0, rows) & (rank.index_select(0, rows) < k);  // [r, L]
      const at::Tensor vr = v.index_select(1, rows);                                          // [M, r, L]
      const at::Tensor state = at::where(known.unsqueeze(0), vr, xi.index_select(0, rows).unsqueeze(0));
      const int64_t r = rows.size(0);
      const at::Tensor t = t_of_step.index_select(0, reveal.index_select(0, rows).gather(1, pos.unsqueeze(1)).squeeze(1))
                               .repeat({kDraws});
      const at::Tensor lp = model.log_probs(state.reshape({kDraws * r, L}), t).to(at::kDouble).reshape({kDraws, r, L, -1});
      const at::Tensor idx = pos.view({1, r, 1, 1}).expand({kDraws, r, 1, lp.size(-1)});
      const at::Tensor at_pos = lp.gather(2, idx).squeeze(2);                                   // [M, r, V]
      const at::Tensor tok = vr.gather(2, pos.view({1, r, 1}).expand({kDraws, r, 1}));           // [M, r, 1]
      log_P.index_add_(1, rows, at_pos.gather(2, tok).squeeze(2));
    }
    // log q_c(v_S) = c A - B(c), A = sum_{j in S} log p_j(v_j), B(c) = sum_{j in S} logsumexp_u c log p_j(u)
    const at::Tensor A = (log_p.unsqueeze(0).expand({kDraws, n, L, V}).gather(3, v.unsqueeze(-1)).squeeze(-1) *
                          in_s.unsqueeze(0).to(at::kDouble)).sum(-1);  // [M, n]
    auto log_q = [&](const at::Tensor& c) {
      const at::Tensor B = at::zeros({n}, at::kDouble).index_add(0, s_seq, at::logsumexp(c * log_p_s, -1));
      return c * A - B.unsqueeze(0);  // [M, n]
    };
    const at::Tensor log_q0 = log_q(at::full({}, c0, at::kDouble));
    auto loss_of = [&](const at::Tensor& c) {
      const at::Tensor lq = log_q(c);
      const at::Tensor w = at::softmax(lq - log_q0, 0);  // self-normalised q_c / q_c0 per sequence
      return (w * (lq - log_P)).sum() / positions;
    };
    at::Tensor c = at::full({}, c0, at::kDouble).requires_grad_(true);
    if (round == 0) fit.loss_before = loss_of(c).item<double>();
    minimise(c, loss_of);
    c0 = c.item<double>();
    fit.loss_after = loss_of(c).item<double>();
  }
  fit.c = c0;
  return fit;
}

}  // namespace

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
  if (config["model"]["inputs"] && config["model"]["inputs"].IsSequence() && config["model"]["inputs"].size() > 0)
    bad_input("distill-lsd: the teacher runs unconditioned; a network with declared inputs (model.inputs) is not supported");
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
  if (o.target != "final" && o.target != "step" && o.target != "joint")
    bad_input("--target: expected final, step or joint, got '" + o.target + "'");
  std::vector<at::Tensor> states, student_p, target;
  at::Tensor reveal = at::full(x.sizes(), int64_t(o.teacher_steps), at::kLong);  // the teacher step that unmasked each position
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
    reveal.masked_fill_(go, int64_t(k));
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
    if (o.target == "joint") {
      const JointFit fit = fit_joint(model, xi, xn, reveal, student_p[size_t(i)], tt, o, minimise);
      c = at::full({}, fit.c, at::kDouble).requires_grad_(true);
      res.loss_before.push_back(fit.loss_before);
      res.loss_after.push_back(fit.loss_after);
    } else {
      res.loss_before.push_back(kl_of(c).item<double>());
      minimise(c, kl_of);
      res.loss_after.push_back(kl_of(c).item<double>());
    }
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
