// Tau-leaping and analytic steps for masked and uniform-state diffusion, and the cached form.
// Notation: alpha_t the keep probability, a step goes from t to s < t on the grid; p = p(x0 | x_t)
// from the token denoiser (RADD, SEDD, MDLM, Duo; the formulas are in docs/discrete.md).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "common.h"
#include "scorch/error.h"

namespace scorch {

using namespace discrete;

namespace {

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
      for (size_t k = 0; k + 1 < t.size(); ++k) {
        // Duo's greedy tail (noise_removal: greedy): `final: argmax` ends on the most likely
        // clean token of the last prediction instead of a posterior draw
        const bool tail = k + 2 == t.size() && ctx.final_argmax();
        x = ctx.clamp(tail ? ctx.probs(x, times(t[k], x.size(0))).argmax(-1) : uniform_step(ctx, x, t[k], t[k + 1]));
      }
    }
    return x;
  }
  return blockwise(ctx, x, o, [&](const at::Tensor& xk, double t, double s, const at::Tensor& allowed, bool last) {
    const double r = tweedie ? std::min((ns.alpha(s) - ns.alpha(t)) / (1.0 - ns.alpha(t)), 1.0)
                             : euler_unmask_probability(ns, t, s);
    const at::Tensor p = ctx.probs(xk, times(t, xk.size(0)));
    return unmask_step(ctx, xk, p, allowed, times(r, xk.size(0)), last);
  }, /*prefix_cache=*/true);
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

}  // namespace

std::vector<DiscreteSamplerEntry> leaping_rows() {
  return {
      {"euler", "tau-leaping (RADD / SEDD euler): unmask with probability alpha_rate dt / (1 - alpha_t)", {}, sample_euler},
      {"tweedie", "analytic step: unmask with probability (alpha_s - alpha_t) / (1 - alpha_t); uniform-state: Duo's posterior",
       {}, sample_tweedie, true},
      {"cached", "tweedie, re-running the model only for sequences that changed (RADD caching)", {}, sample_cached},
  };
}

double euler_unmask_probability(const DiscreteSchedule& ns, double t, double s) {
  return std::min(ns.alpha_rate(t) * (t - s) / (1.0 - ns.alpha(t)), 1.0);
}

}  // namespace scorch
