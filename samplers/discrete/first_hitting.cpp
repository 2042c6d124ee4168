// The first-hitting sampler for masked diffusion (Zheng et al. 2024).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "common.h"
#include "scorch/error.h"

namespace scorch {

using namespace discrete;

namespace {

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
    const at::Tensor u = ctx.uniform({rows.size(0)}, rows);
    auto ta = t.accessor<double, 1>();
    auto ua = u.accessor<double, 1>();
    auto na = n.accessor<int64_t, 1>();
    auto ra = rows.accessor<int64_t, 1>();
    for (int64_t i = 0; i < rows.size(0); ++i) {
      const int64_t r = ra[i];
      ta[r] = ns.inverse_alpha(1.0 - (1.0 - ns.alpha(ta[r])) * std::pow(ua[i], 1.0 / double(na[r])));
    }
    const at::Tensor p = ctx.probs(x, t, rows);                              // [b, L, V]
    const at::Tensor pick = (ctx.uniform({rows.size(0), x.size(1)}, rows) + 1.0) * masked.index_select(0, rows);
    const at::Tensor pos = pick.argmax(1);                                   // one masked position per row
    const at::Tensor pp = p.gather(1, pos.view({-1, 1, 1}).expand({-1, 1, p.size(2)})).squeeze(1);  // [b, V]
    x.index_put_({rows, pos}, ctx.sample(pp, rows));
  }
  return x;
}

}  // namespace

std::vector<DiscreteSamplerEntry> first_hitting_rows() {
  return {{"first_hitting", "first-hitting sampler (Zheng et al. 2024): one token per model call at the exact jump time",
           {}, sample_first_hitting}};
}

}  // namespace scorch
