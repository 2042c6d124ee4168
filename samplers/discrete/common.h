// Helpers shared by the discrete sampler families (internal to samplers/discrete/).
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "scorch/discrete_sampler.h"
#include "scorch/error.h"

namespace scorch::discrete {

inline at::Tensor times(double t, int64_t b) { return at::full({b}, t, at::TensorOptions().dtype(at::kDouble)); }

// The positions of block `blk` of `blocks` (semi-autoregressive sampling), [1, L] bool.
inline at::Tensor block_mask(int64_t length, int64_t blk, int64_t blocks) {
  const int64_t lo = blk * length / blocks, hi = (blk + 1) * length / blocks;
  const at::Tensor pos = at::arange(length).unsqueeze(0);
  return (pos >= lo) & (pos < hi);
}

// One masked step: each masked position of `allowed` unmasks with probability r (per row)
// to a token drawn from p; `force` unmasks them all (argmax when final is argmax).
inline at::Tensor unmask_step(DiscreteContext& ctx, const at::Tensor& x, const at::Tensor& p, const at::Tensor& allowed,
                       const at::Tensor& r, bool force) {
  const at::Tensor masked = (x == ctx.spec().mask_id) & allowed;
  const at::Tensor tok = force && ctx.final_argmax() ? p.argmax(-1) : ctx.sample(p);
  at::Tensor go = masked;
  if (!force) go = masked & (ctx.uniform({x.size(0), x.size(1)}) < r.view({-1, 1}));
  return at::where(go, tok, x);
}

// Runs `per_block` steps per block; step(ctx, x, t, s, allowed, last) does one step.
// prefix_cache: the step reads the model only through ctx.probs at its current x and draws
// only inside `allowed`, so a block-causal network may run on the block alone from a cache
// of the finished prefix (DiscreteContext::begin_block).
template <typename Step>
at::Tensor blockwise(DiscreteContext& ctx, at::Tensor x, const Options& o, Step step, bool prefix_cache = false) {
  const int64_t blocks = o.integer("blocks"), length = ctx.spec().length;
  const int steps = int(o.integer("steps"));
  if (blocks < 1 || blocks > length) bad_input("sampler.blocks: expected 1 to L = " + std::to_string(length));
  if (steps < blocks) bad_input("sampler.steps: need at least one step per block");
  for (int64_t b = 0; b < blocks; ++b) {
    const int n = int(steps / blocks + (b < steps % blocks ? 1 : 0));
    const std::vector<double> t = ctx.grid(n);
    const at::Tensor allowed = block_mask(length, b, blocks);
    if (prefix_cache && blocks > 1) ctx.begin_block(x, b * length / blocks, (b + 1) * length / blocks);
    // clamped after every step: a step that may change any position (remasking, uniform
    // states) never shows the model a fixed position changed
    for (int k = 0; k < n; ++k) x = ctx.clamp(step(x, t[size_t(k)], t[size_t(k) + 1], allowed, k + 1 == n));
  }
  ctx.end_blocks();
  return x;
}

inline void absorbing_only(DiscreteContext& ctx, const char* name) {
  if (ctx.spec().transition != Transition::Absorbing)
    bad_input(std::string("sampler.name: ") + name + " needs an absorbing (mask) model; uniform-state models use tweedie");
}

}  // namespace scorch::discrete
