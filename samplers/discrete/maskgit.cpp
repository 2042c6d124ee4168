// MaskGIT confidence-based parallel decoding (Chang et al. 2022).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "common.h"
#include "scorch/error.h"

namespace scorch {

using namespace discrete;

namespace {

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
  }, /*prefix_cache=*/true);
}

}  // namespace

std::vector<DiscreteSamplerEntry> maskgit_rows() {
  return {{"maskgit", "confidence-based parallel decoding, cosine schedule (Chang et al. 2022)",
           {{"choice_temperature", OptionType::Number, "4.5", "Gumbel temperature of the confidence, annealed to 0", {}, 0, 1e9}},
           sample_maskgit}};
}

}  // namespace scorch
