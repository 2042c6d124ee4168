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
    // fixed positions (infill) are not the sampler's to remask
    const at::Tensor fixed = ctx.fixed();
    const at::Tensor masked = (xk == mask) & allowed,
                     decoded = (xk != mask) & allowed & (fixed.defined() ? ~fixed : at::ones_like(allowed));
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

}  // namespace

std::vector<DiscreteSamplerEntry> remdm_rows() {
  return {{"remdm", "ReMDM remasking (Wang et al. 2025): cap | rescale | conf",
           {{"strategy", OptionType::String, "cap", "how sigma_t is set", {"cap", "rescale", "conf"}},
            {"eta", OptionType::Number, "0.02", "remasking strength", {}, 0, 100}},
           sample_remdm}};
}

}  // namespace scorch
