// ReMDM remasking (Wang et al. 2025).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "common.h"
#include "scorch/error.h"

namespace scorch {

using namespace discrete;

namespace {

// remdm (Wang et al. 2025): decoded tokens are re-masked with probability sigma_t,
//   sigma_max = min(1, (1 - alpha_s) / alpha_t),  cap: min(eta, sigma_max),  rescale: eta sigma_max,
//   conf: sigma_max softmax over decoded positions of -p(token when it was decoded);
// masked positions unmask with probability (alpha_s - (1 - sigma) alpha_t) / (1 - alpha_t).
// loop (the paper's best setting): the schedule is rescaled into three phases,
//   t > t_on:           alpha'(t) = alpha_on alpha((t - t_on) / (1 - t_on))   (MDLM up to alpha_on),
//   t_off <= t <= t_on: alpha' = alpha_on, decoded tokens remask with sigma = eta (at most
//                       sigma_max) and masked ones unmask with sigma alpha_on / (1 - alpha_on),
//   t < t_off:          alpha'(t) = 1 - (1 - alpha_on)(1 - alpha(t / t_off))  (MDLM from alpha_on to 1),
// so the middle phase revisits decoded tokens at a constant noise level (a corrector loop).
at::Tensor sample_remdm(DiscreteContext& ctx, at::Tensor x, const Options& o) {
  absorbing_only(ctx, "remdm");
  const DiscreteSchedule& ns = ctx.schedule();
  const int64_t mask = ctx.spec().mask_id;
  const std::string strategy = o.str("strategy");
  const double eta = o.number("eta");
  if (!(eta >= 0.0 && eta <= 1.0)) bad_input("sampler.eta: expected a number in [0, 1]");
  const double t_on = o.number("t_on"), t_off = o.number("t_off"), alpha_on = o.number("alpha_on");
  const bool loop = strategy == "loop";
  if (loop && !(t_off > 0.0 && t_off < t_on && t_on < 1.0))
    bad_input("sampler.t_off: expected 0 < t_off < t_on < 1, got t_off " + o.text("t_off") + ", t_on " + o.text("t_on"));
  if (loop && !(alpha_on > 0.0 && alpha_on < 1.0)) bad_input("sampler.alpha_on: expected a number in (0, 1)");
  // alpha'(t) of the loop's three phases (the schedule itself otherwise)
  const auto alpha = [&](double t) {
    if (!loop) return ns.alpha(t);
    if (t > t_on) return alpha_on * ns.alpha((t - t_on) / (1.0 - t_on));
    if (t >= t_off) return alpha_on;
    return 1.0 - (1.0 - alpha_on) * (1.0 - ns.alpha(t / t_off));
  };
  at::Tensor conf = at::full(x.sizes(), -INFINITY, at::TensorOptions().dtype(at::kDouble));
  return blockwise(ctx, x, o, [&](const at::Tensor& xk, double t, double s, const at::Tensor& allowed, bool last) {
    const double a_t = alpha(t), a_s = alpha(s);
    const double sigma_max = std::min(1.0, (1.0 - a_s) / a_t);
    // fixed positions (infill) are not the sampler's to remask
    const at::Tensor fixed = ctx.fixed();
    const at::Tensor masked = (xk == mask) & allowed,
                     decoded = (xk != mask) & allowed & (fixed.defined() ? ~fixed : at::ones_like(allowed));
    at::Tensor sigma;  // per position
    if (strategy == "cap") sigma = at::full(xk.sizes(), std::min(eta, sigma_max), at::kDouble);
    if (strategy == "rescale") sigma = at::full(xk.sizes(), eta * sigma_max, at::kDouble);
    if (strategy == "conf") sigma = sigma_max * at::softmax(conf.masked_fill(~decoded, -INFINITY), 1).nan_to_num(0.0);
    if (loop) sigma = at::full(xk.sizes(), t <= t_on && s >= t_off ? std::min(eta, sigma_max) : 0.0, at::kDouble);
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

}  // namespace

std::vector<DiscreteSamplerEntry> remdm_rows() {
  return {{"remdm", "ReMDM remasking (Wang et al. 2025): cap | rescale | conf | loop",
           {{"strategy", OptionType::String, "cap", "how sigma_t is set", {"cap", "rescale", "conf", "loop"}},
            {"eta", OptionType::Number, "0.02", "remasking strength (loop: sigma inside the window)", {}, 0, 100},
            {"t_on", OptionType::Number, "0.55", "loop: the window's start (remasking for t_off <= t <= t_on)", {}, 0, 1},
            {"t_off", OptionType::Number, "0.05", "loop: the window's end", {}, 0, 1},
            {"alpha_on", OptionType::Number, "0.9", "loop: the keep probability held inside the window", {}, 0, 1}},
           sample_remdm}};
}

}  // namespace scorch
