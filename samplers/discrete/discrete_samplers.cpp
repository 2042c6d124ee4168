// Discrete samplers for masked (absorbing) and uniform-state diffusion. Notation: alpha_t
// the keep probability, a step goes from t to s < t on the grid; p = p(x0 | x_t) from the
// token denoiser. Formulas: ../shared/research/discrete.md (RADD, SEDD, MDLM, FHS, ReMDM,
// MaskGIT, LSD, Duo).
#include "discrete_sampler.h"

#include <ATen/ATen.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>

#include "scorch/error.h"
#include "scorch/io.h"

namespace scorch {

DiscreteContext::DiscreteContext(TokenDenoiser& model, const DiscreteSchedule& schedule, uint64_t seed,
                                 const Options& o)
    : model_(model),
      schedule_(schedule),
      gen_(at::detail::createCPUGenerator(seed)),
      temperature_(o.number("temperature")),
      top_p_(o.number("top_p")),
      top_k_(o.integer("top_k")),
      t_end_(o.number("t_end")),
      final_argmax_(o.str("final") == "argmax") {
  if (!(temperature_ > 0.0)) bad_input("sampler.temperature: expected a number > 0");
  if (!(top_p_ > 0.0 && top_p_ <= 1.0)) bad_input("sampler.top_p: expected a number in (0, 1]");
  if (top_k_ < 0) bad_input("sampler.top_k: expected an integer >= 0 (0: off)");
  if (!(t_end_ > 0.0 && t_end_ < 1.0)) bad_input("sampler.t_end: expected a number in (0, 1)");
}

std::vector<double> DiscreteContext::grid(int steps) const {
  std::vector<double> t(size_t(steps) + 1);
  for (int k = 0; k <= steps; ++k) t[size_t(k)] = 1.0 - (1.0 - t_end_) * k / steps;
  return t;
}

at::Tensor DiscreteContext::probs(const at::Tensor& x, const at::Tensor& t, const at::Tensor& rows) {
  const at::Tensor xs = rows.defined() ? x.index_select(0, rows) : x;
  const at::Tensor ts = rows.defined() ? t.index_select(0, rows) : t;
  row_calls_ += xs.size(0);
  at::Tensor logp = model_.log_probs(xs, ts).to(at::kDouble);
  if (!at::isfinite(logp.exp().sum(-1)).all().item<bool>())
    bad_input("token model output is not finite (after " + std::to_string(row_calls_) + " sequence calls)");
  // temperature: p^(1/T); top-k and top-p (nucleus: the smallest set of most likely tokens
  // whose mass reaches p, the first always kept), renormalised
  if (temperature_ != 1.0) logp = logp / temperature_;
  at::Tensor p = at::softmax(logp, -1);
  if (top_k_ > 0 && top_k_ < p.size(-1)) {
    const at::Tensor kth = std::get<0>(p.topk(top_k_, -1)).narrow(-1, top_k_ - 1, 1);
    p = p * (p >= kth);
  }
  if (top_p_ < 1.0) {
    auto [sorted, idx] = p.sort(-1, /*descending=*/true);
    const at::Tensor before = sorted.cumsum(-1) - sorted;  // mass of the more likely tokens
    const at::Tensor keep = before < top_p_ * sorted.sum(-1, true);
    p = at::zeros_like(p).scatter_(-1, idx, sorted * keep);
  }
  return p / p.sum(-1, true);
}

at::Tensor discrete_prior(DiscreteContext& ctx, int64_t batch) {
  const TokenSpec& s = ctx.spec();
  ctx.set_batch(batch);
  if (s.transition == Transition::Absorbing)
    return at::full({batch, s.length}, s.mask_id, at::TensorOptions().dtype(at::kLong));
  return at::floor(ctx.uniform({batch, s.length}) * double(s.vocab)).to(at::kLong).clamp_max_(s.vocab - 1);
}

namespace {

at::Tensor times(double t, int64_t b) { return at::full({b}, t, at::TensorOptions().dtype(at::kDouble)); }

// The positions of block `blk` of `blocks` (semi-autoregressive sampling), [1, L] bool.
at::Tensor block_mask(int64_t length, int64_t blk, int64_t blocks) {
  const int64_t lo = blk * length / blocks, hi = (blk + 1) * length / blocks;
  const at::Tensor pos = at::arange(length).unsqueeze(0);
  return (pos >= lo) & (pos < hi);
}

// One masked step: each masked position of `allowed` unmasks with probability r (per row)
// to a token drawn from p; `force` unmasks them all (argmax when final is argmax).
at::Tensor unmask_step(DiscreteContext& ctx, const at::Tensor& x, const at::Tensor& p, const at::Tensor& allowed,
                       const at::Tensor& r, bool force) {
  const at::Tensor masked = (x == ctx.spec().mask_id) & allowed;
  const at::Tensor tok = force && ctx.final_argmax() ? p.argmax(-1) : ctx.sample(p);
  at::Tensor go = masked;
  if (!force) go = masked & (ctx.uniform({x.size(0), x.size(1)}) < r.view({-1, 1}));
  return at::where(go, tok, x);
}

// Runs `per_block` steps per block; step(ctx, x, t, s, allowed, last) does one step.
template <typename Step>
at::Tensor blockwise(DiscreteContext& ctx, at::Tensor x, const Options& o, Step step) {
  const int64_t blocks = o.integer("blocks"), length = ctx.spec().length;
  const int steps = int(o.integer("steps"));
  if (blocks < 1 || blocks > length) bad_input("sampler.blocks: expected 1 to L = " + std::to_string(length));
  if (steps < blocks) bad_input("sampler.steps: need at least one step per block");
  for (int64_t b = 0; b < blocks; ++b) {
    const int n = int(steps / blocks + (b < steps % blocks ? 1 : 0));
    const std::vector<double> t = ctx.grid(n);
    const at::Tensor allowed = block_mask(length, b, blocks);
    for (int k = 0; k < n; ++k) x = step(x, t[size_t(k)], t[size_t(k) + 1], allowed, k + 1 == n);
  }
  return x;
}

void absorbing_only(DiscreteContext& ctx, const char* name) {
  if (ctx.spec().transition != Transition::Absorbing)
    bad_input(std::string("sampler.name: ") + name + " needs an absorbing (mask) model; uniform-state models use tweedie");
}

// Uniform-state diffusion (Duo's posterior, Sahoo et al. 2025): for a clean token x0,
// with x_t one-hot and alpha_ts = alpha_t / alpha_s,
//   q(x_s | x_t, x0) = [alpha_t V x0 * x_t + (alpha_ts - alpha_t) x_t + (alpha_s - alpha_t) x0
//                       + (1 - alpha_ts)(1 - alpha_s) / V] / N(x0),  N(x0) = alpha_t V [x0 = x_t] + 1 - alpha_t.
// The step mixes it over x0 ~ p: the numerator is linear in x0, so it is evaluated at
// p' = p / N (each clean token's posterior normalised; Duo divides the p-average by one
// normaliser, which is not this mixture and misses the chain's law by TV 0.09 on the oracle).
at::Tensor uniform_step(DiscreteContext& ctx, const at::Tensor& x, double t, double s) {
  const DiscreteSchedule& ns = ctx.schedule();
  const double a_t = ns.alpha(t), a_s = ns.alpha(s), a_ts = a_t / a_s, v = double(ctx.spec().vocab);
  const at::Tensor p = ctx.probs(x, times(t, x.size(0)));
  const at::Tensor xt = at::one_hot(x, ctx.spec().vocab).to(at::kDouble);
  const at::Tensor pn = p / (a_t * v * xt + (1.0 - a_t));
  const at::Tensor mass = pn.sum(-1, true);
  const at::Tensor q = a_t * v * pn * xt + (a_ts - a_t) * xt * mass + (a_s - a_t) * pn +
                       (1.0 - a_ts) * (1.0 - a_s) / v * mass;
  return ctx.sample(q);  // normalisation is implicit in the sampler
}

// euler (tau-leaping; RADD / SEDD): r = alpha_rate(t) (t - s) / (1 - alpha_t).
// tweedie (analytic): r = (alpha_s - alpha_t) / (1 - alpha_t).
// On the loglinear schedule both are (t - s) / t.
at::Tensor leaping(DiscreteContext& ctx, at::Tensor x, const Options& o, bool tweedie) {
  const DiscreteSchedule& ns = ctx.schedule();
  if (ctx.spec().transition == Transition::Uniform) {
    if (!tweedie) bad_input("sampler.name: euler needs an absorbing model; uniform-state models use tweedie");
    for (int b = 0; b < 1; ++b) {
      const std::vector<double> t = ctx.grid(int(o.integer("steps")));
      for (size_t k = 0; k + 1 < t.size(); ++k) x = uniform_step(ctx, x, t[k], t[k + 1]);
    }
    return x;
  }
  return blockwise(ctx, x, o, [&](const at::Tensor& xk, double t, double s, const at::Tensor& allowed, bool last) {
    const double r = tweedie ? (ns.alpha(s) - ns.alpha(t)) / (1.0 - ns.alpha(t))
                             : ns.alpha_rate(t) * (t - s) / (1.0 - ns.alpha(t));
    const at::Tensor p = ctx.probs(xk, times(t, xk.size(0)));
    return unmask_step(ctx, xk, p, allowed, times(std::min(r, 1.0), xk.size(0)), last);
  });
}

at::Tensor sample_euler(DiscreteContext& ctx, at::Tensor x, const Options& o) { return leaping(ctx, x, o, false); }
at::Tensor sample_tweedie(DiscreteContext& ctx, at::Tensor x, const Options& o) { return leaping(ctx, x, o, true); }

// cached (RADD): for a time-independent model p depends on x only, so the model runs again
// only for the sequences that changed in the last step; the update is tweedie's.
at::Tensor sample_cached(DiscreteContext& ctx, at::Tensor x, const Options& o) {
  absorbing_only(ctx, "cached");
  const DiscreteSchedule& ns = ctx.schedule();
  at::Tensor cache;
  at::Tensor changed = at::ones({x.size(0)}, at::kBool);
  return blockwise(ctx, x, o, [&](const at::Tensor& xk, double t, double s, const at::Tensor& allowed, bool last) {
    const at::Tensor rows = at::nonzero(changed).squeeze(1);
    if (!cache.defined()) {
      cache = ctx.probs(xk, times(t, xk.size(0)));
    } else if (rows.numel() > 0) {
      cache.index_copy_(0, rows, ctx.probs(xk, times(t, xk.size(0)), rows));
    }
    const double r = (ns.alpha(s) - ns.alpha(t)) / (1.0 - ns.alpha(t));
    const at::Tensor next = unmask_step(ctx, xk, cache, allowed, times(r, xk.size(0)), last);
    changed = (next != xk).any(1);
    return next;
  });
}

// first_hitting (Zheng et al. 2024): with n masked tokens at time t the next unmasking
// happens at tau = alpha^-1(1 - (1 - alpha_t) u^(1/n)), at one masked position chosen
// uniformly, its token drawn from p. One model call per token.
at::Tensor sample_first_hitting(DiscreteContext& ctx, at::Tensor x, const Options& o) {
  absorbing_only(ctx, "first_hitting");
  if (o.integer("blocks") != 1) bad_input("sampler.blocks: first_hitting unmasks one token at a time; use blocks: 1");
  const DiscreteSchedule& ns = ctx.schedule();
  const int64_t mask = ctx.spec().mask_id;
  at::Tensor t = times(1.0, x.size(0));
  for (;;) {
    const at::Tensor masked = x == mask;
    const at::Tensor n = masked.sum(1);
    const at::Tensor rows = at::nonzero(n > 0).squeeze(1);
    if (rows.numel() == 0) break;
    const at::Tensor u = ctx.uniform({rows.size(0)});
    auto ta = t.accessor<double, 1>();
    auto ua = u.accessor<double, 1>();
    auto na = n.accessor<int64_t, 1>();
    auto ra = rows.accessor<int64_t, 1>();
    for (int64_t i = 0; i < rows.size(0); ++i) {
      const int64_t r = ra[i];
      ta[r] = ns.inverse_alpha(1.0 - (1.0 - ns.alpha(ta[r])) * std::pow(ua[i], 1.0 / double(na[r])));
    }
    const at::Tensor p = ctx.probs(x, t, rows);                              // [b, L, V]
    const at::Tensor pick = (ctx.uniform({rows.size(0), x.size(1)}) + 1.0) * masked.index_select(0, rows);
    const at::Tensor pos = pick.argmax(1);                                   // one masked position per row
    const at::Tensor pp = p.gather(1, pos.view({-1, 1, 1}).expand({-1, 1, p.size(2)})).squeeze(1);  // [b, V]
    x.index_put_({rows, pos}, ctx.sample(pp));
  }
  return x;
}

// maskgit (Chang et al. 2022): every iteration samples all masked tokens, then re-masks the
// n = floor(N cos(pi/2 (k+1)/T)) least confident ones; confidence = log p(sampled) +
// tau_k Gumbel, tau_k = choice_temperature (1 - (k+1)/T).
at::Tensor sample_maskgit(DiscreteContext& ctx, at::Tensor x, const Options& o) {
  absorbing_only(ctx, "maskgit");
  const int64_t mask = ctx.spec().mask_id;
  const double choice_t = o.number("choice_temperature");
  return blockwise(ctx, x, o, [&, n0 = int64_t(-1)](const at::Tensor& xk, double t, double, const at::Tensor& allowed,
                                                    bool last) mutable {
    const at::Tensor masked = (xk == mask) & allowed;
    if (n0 < 0 || t == 1.0) n0 = masked.sum(1).max().item<int64_t>();  // tokens of this block
    const at::Tensor p = ctx.probs(xk, times(t, xk.size(0)));
    const at::Tensor tok = last && ctx.final_argmax() ? p.argmax(-1) : ctx.sample(p);
    at::Tensor next = at::where(masked, tok, xk);
    if (last) return next;
    const double ratio = 1.0 - t;  // (k + 1) / T on the uniform grid
    const int64_t remask = int64_t(std::floor(double(n0) * std::cos(M_PI / 2.0 * ratio)));
    const at::Tensor gumbel = -at::log(-at::log(ctx.uniform({xk.size(0), xk.size(1)}).clamp_min(1e-300)));
    at::Tensor conf = at::log(p.gather(-1, tok.unsqueeze(-1)).squeeze(-1).clamp_min(1e-300)) +
                      choice_t * (1.0 - ratio) * gumbel;
    conf = conf.masked_fill(~masked, INFINITY);
    const int64_t k = std::min<int64_t>(remask, masked.sum(1).min().item<int64_t>() - 1);
    if (k <= 0) return next;
    const at::Tensor low = std::get<1>(conf.topk(k, 1, /*largest=*/false));
    return next.scatter(1, low, mask);
  });
}

// remdm (Wang et al. 2025): decoded tokens are re-masked with probability sigma_t,
//   sigma_max = min(1, (1 - alpha_s) / alpha_t),  cap: min(eta, sigma_max),  rescale: eta sigma_max,
//   conf: sigma_max softmax over decoded positions of -p(token when it was decoded);
// masked positions unmask with probability (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t).
at::Tensor sample_remdm(DiscreteContext& ctx, at::Tensor x, const Options& o) {
  absorbing_only(ctx, "remdm");
  const DiscreteSchedule& ns = ctx.schedule();
  const int64_t mask = ctx.spec().mask_id;
  const std::string strategy = o.str("strategy");
  const double eta = o.number("eta");
  if (!(eta >= 0.0 && eta <= 1.0)) bad_input("sampler.eta: expected a number in [0, 1]");
  at::Tensor conf = at::full(x.sizes(), -INFINITY, at::TensorOptions().dtype(at::kDouble));
  return blockwise(ctx, x, o, [&](const at::Tensor& xk, double t, double s, const at::Tensor& allowed, bool last) {
    const double a_t = ns.alpha(t), a_s = ns.alpha(s);
    const double sigma_max = std::min(1.0, (1.0 - a_s) / a_t);
    const at::Tensor masked = (xk == mask) & allowed, decoded = (xk != mask) & allowed;
    at::Tensor sigma;  // per position
    if (strategy == "cap") sigma = at::full(xk.sizes(), std::min(eta, sigma_max), at::kDouble);
    if (strategy == "rescale") sigma = at::full(xk.sizes(), eta * sigma_max, at::kDouble);
    if (strategy == "conf") sigma = sigma_max * at::softmax(conf.masked_fill(~decoded, -INFINITY), 1).nan_to_num(0.0);
    sigma = last ? at::zeros_like(sigma) : sigma.masked_fill(~decoded, 0.0);
    const at::Tensor p = ctx.probs(xk, times(t, xk.size(0)));
    const at::Tensor tok = last && ctx.final_argmax() ? p.argmax(-1) : ctx.sample(p);
    const at::Tensor u = ctx.uniform({xk.size(0), xk.size(1)});
    const double s_scalar = strategy == "conf" ? 0.0 : sigma.max().item<double>();
    const double r = last ? 1.0 : std::clamp((a_s - (1.0 - s_scalar) * a_t) / (1.0 - a_t), 0.0, 1.0);
    const at::Tensor unmask = masked & (u < r);
    const at::Tensor remask = decoded & (u < sigma);
    at::Tensor next = at::where(unmask, tok, xk).masked_fill(remask, mask);
    conf = at::where(unmask, -p.gather(-1, tok.unsqueeze(-1)).squeeze(-1), conf).masked_fill(remask, -INFINITY);
    return next;
  });
}

// lsd (Fu et al. 2025): tau-leaping with a learned coefficient c_i on the log-score of step i,
//   P(x_s = v) = (t - s) sigma(t) s_v^c_i,   s_v = p_v / (e^sigma_bar - 1),  sigma(t) = alpha_rate / alpha,
// and optionally learned step sizes (LSD+: a scale d_i of step i's rate, `step_scales`) or
// times; the last step unmasks every remaining position from p^c_n normalised (the reference
// drops the mask column of s^c). c_i = d_i = 1 is euler. From a YAML file (`coefficients: [...]`, optional
// `step_scales: [...]`, `times: [1, ..., t_end]`), written by `scorch distill-lsd`.
at::Tensor sample_lsd(DiscreteContext& ctx, at::Tensor x, const Options& o) {
  absorbing_only(ctx, "lsd");
  const DiscreteSchedule& ns = ctx.schedule();
  const int steps = int(o.integer("steps"));
  std::vector<double> coef(size_t(steps), 1.0), scale(size_t(steps), 1.0), t = ctx.grid(steps);
  if (!o.str("coefficients").empty()) {
    const std::string path = find_input_file(o.str("coefficients"));
    YAML::Node y;
    try {
      y = YAML::LoadFile(path);
    } catch (const std::exception& e) {
      bad_input("sampler.coefficients '" + path + "': not a readable YAML file");
    }
    try {
      coef = y["coefficients"].as<std::vector<double>>();
      if (y["times"]) t = y["times"].as<std::vector<double>>();
      if (y["step_scales"]) scale = y["step_scales"].as<std::vector<double>>();
    } catch (const std::exception&) {
      bad_input("sampler.coefficients '" + path + "': expected coefficients: [numbers] (and times: [numbers])");
    }
    if (int(coef.size()) != steps || int(t.size()) != steps + 1 || int(scale.size()) != steps)
      bad_input("sampler.coefficients '" + path + "': has " + std::to_string(coef.size()) +
                " coefficients for sampler.steps = " + std::to_string(steps));
  }
  if (o.integer("blocks") != 1) bad_input("sampler.blocks: lsd runs one block");
  const at::Tensor all = at::ones({1, ctx.spec().length}, at::kBool);
  for (int k = 0; k < steps; ++k) {
    const double tk = t[size_t(k)], sk = t[size_t(k) + 1];
    const at::Tensor p = ctx.probs(x, times(tk, x.size(0)));
    if (k + 1 == steps)
      return unmask_step(ctx, x, at::softmax(coef[size_t(k)] * at::log(p.clamp_min(1e-300)), -1), all, times(1.0, x.size(0)), true);
    const double a = ns.alpha(tk), rate = ns.alpha_rate(tk) / a, log_score_shift = std::log(std::expm1(-std::log(a)));
    const at::Tensor w = scale[size_t(k)] * (tk - sk) * rate * at::exp(coef[size_t(k)] * (at::log(p.clamp_min(1e-300)) - log_score_shift));
    const at::Tensor stay = (1.0 - w.sum(-1, true)).clamp_min(0.0);
    const at::Tensor choice = ctx.sample(at::cat({w, stay}, -1));  // V means: stay masked
    const at::Tensor masked = x == ctx.spec().mask_id;
    x = at::where(masked & (choice < ctx.spec().vocab), choice, x);
  }
  return x;
}

}  // namespace

const std::vector<OptionSpec>& discrete_common_options() {
  static const std::vector<OptionSpec> specs = {
      {"steps", OptionType::Int, "64", "number of steps (first_hitting: one model call per token instead)", {}},
      {"t_end", OptionType::Number, "0.00001", "last time of the uniform grid from 1", {}},
      {"temperature", OptionType::Number, "1", "p^(1/T), renormalised", {}},
      {"top_k", OptionType::Int, "0", "keep the k most likely tokens (0: all)", {}},
      {"top_p", OptionType::Number, "1", "nucleus: the most likely tokens up to this mass", {}},
      {"final", OptionType::String, "sample", "the last step draws (sample) or takes the most likely token (argmax)",
       {"sample", "argmax"}},
      {"blocks", OptionType::Int, "1", "semi-autoregressive: unmask the sequence in this many blocks, left to right", {}},
  };
  return specs;
}

const std::vector<DiscreteSamplerInfo>& discrete_samplers() {
  static const std::vector<DiscreteSamplerInfo> table = {
      {"euler", "tau-leaping (RADD / SEDD euler): unmask with probability alpha_rate dt / (1 - alpha_t)", {}, sample_euler},
      {"tweedie", "analytic step: unmask with probability (alpha_s - alpha_t) / (1 - alpha_t); uniform-state: Duo's posterior",
       {}, sample_tweedie, true},
      {"first_hitting", "first-hitting sampler (Zheng et al. 2024): one token per model call at the exact jump time",
       {}, sample_first_hitting},
      {"cached", "tweedie, re-running the model only for sequences that changed (RADD caching)", {}, sample_cached},
      {"maskgit", "confidence-based parallel decoding, cosine schedule (Chang et al. 2022)",
       {{"choice_temperature", OptionType::Number, "4.5", "Gumbel temperature of the confidence, annealed to 0", {}}},
       sample_maskgit},
      {"remdm", "ReMDM remasking (Wang et al. 2025): cap | rescale | conf",
       {{"strategy", OptionType::String, "cap", "how sigma_t is set", {"cap", "rescale", "conf"}},
        {"eta", OptionType::Number, "0.02", "remasking strength", {}}},
       sample_remdm},
      {"lsd", "tau-leaping with learned per-step log-score coefficients (Fu et al. 2025)",
       {{"coefficients", OptionType::String, "", "YAML file from scorch distill-lsd (empty: all 1, i.e. euler)", {}}},
       sample_lsd},
  };
  return table;
}

const DiscreteSamplerInfo& find_discrete_sampler(const std::string& name) {
  std::string valid;
  for (const auto& s : discrete_samplers()) {
    if (s.name == name) return s;
    valid += (valid.empty() ? "" : ", ") + s.name;
  }
  bad_input("sampler.name: unknown discrete sampler '" + name + "'; valid: " + valid);
}

Options parse_discrete_options(const DiscreteSamplerInfo& sampler, const std::map<std::string, std::string>& raw) {
  std::vector<OptionSpec> specs = discrete_common_options();
  specs.insert(specs.end(), sampler.options.begin(), sampler.options.end());
  const Options o = Options::parse("sampler", specs, raw);
  if (o.integer("steps") < 1) bad_input("sampler.steps: expected a positive integer");
  return o;
}

}  // namespace scorch
