// The discrete-sampler interface and registry (the same Registry template and option
// reader as the continuous samplers). A sampler is a function of (context, x_1, options)
// returning clean tokens;
// the context calls the token denoiser (counting model calls per sequence), turns its
// log-probabilities into the sampling distribution (temperature, top-k, top-p) and draws
// every random number in float64.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "scorch/discrete.h"
#include "scorch/options.h"
#include "scorch/registry.h"
#include "scorch/rng.h"

namespace scorch {

class DiscreteContext {
 public:
  // rng: per-sample streams (Rng::per_sample: row i of every draw from sequence i's stream,
  // as the pipeline does) or one stream for the whole batch.
  DiscreteContext(TokenDenoiser& model, const DiscreteSchedule& schedule, Rng rng, const Options& options);
  DiscreteContext(TokenDenoiser& model, const DiscreteSchedule& schedule, uint64_t seed, const Options& options)
      : DiscreteContext(model, schedule, Rng(seed), options) {}

  // p(clean token) [b, L, V] in float64 for the rows `rows` of x (all rows if undefined), at
  // times t [B]; temperature, top_k and top_p applied. Counts one model call per row.
  at::Tensor probs(const at::Tensor& x, const at::Tensor& t, const at::Tensor& rows = {});
  // A token per row of probs [b, ..., V] (rows: which sequences the b rows are; all when
  // undefined), and uniforms in [0, 1) of `sizes` (first dimension: rows), in float64.
  at::Tensor sample(const at::Tensor& probs, const at::Tensor& rows = {});
  at::Tensor uniform(at::IntArrayRef sizes, const at::Tensor& rows = {}) { return rng_.uniform(sizes, rows); }

  const DiscreteSchedule& schedule() const { return schedule_; }
  const TokenSpec& spec() const { return model_.spec(); }
  // The time grid t_0 = 1 > ... > t_n = t_end, uniform in t (RADD, SEDD, MDLM).
  std::vector<double> grid(int steps) const;
  // Model calls per sequence so far (a batched call on b of B rows counts b / B).
  double calls() const { return row_calls_ / double(batch_); }
  void set_batch(int64_t b) { batch_ = b; }
  // The final step's choice (`final: argmax` or `sample`).
  bool final_argmax() const { return final_argmax_; }
  // Token positions the network evaluated per sequence so far: a whole-sequence call counts
  // L, a cached block call its block's length, a prefix encoding its prefix's.
  double token_evaluations() const { return token_evals_ / double(batch_); }

  // Semi-autoregressive blocks with a prefix cache (sampler option kv_cache; block-causal
  // networks, TokenDenoiser::cache_block_size). blockwise() calls begin_block for positions
  // [lo, hi). When the network caches, the option is on, nothing conditions the call (no
  // labels) and the block's ends fall on the network's attention blocks, the finished
  // prefix x[:, :lo] is encoded once and probs() runs the network on the block alone; the
  // prefix's positions are one-hot on their tokens and the later ones uniform (still
  // masked, outside the block: no sampler draws them). Returns whether the cache is used.
  bool begin_block(const at::Tensor& x, int64_t lo, int64_t hi);
  void end_blocks() { cache_ = at::Tensor(); }

  // Class conditioning with token-level classifier-free guidance on the logits:
  //   log p~ = log p(x0 | x_t, null) + scale (log p(x0 | x_t, c) - log p(x0 | x_t, null)),
  // renormalised (scale 1: the conditional model; the two predictions are one batched call,
  // counted as one call per sequence). labels [B] int64 (the null label for an unconditional row).
  // indexed: the network has declared inputs (prompts, tensors; model_inputs.h), labels are
  // the rows' sample indices i and the null of row i is its negative row -(i + 1).
  void set_labels(const at::Tensor& labels, int64_t null_label, double scale, bool indexed = false);

  // Fixed positions (infill: a template, or position-token pairs): tokens [B, L] int64 with
  // -1 where the position is free. A fixed position starts clean in the prior, the model
  // sees it at every call, probs() is one-hot on its token there, and every step's result is
  // clamped to it. For masked models this conditions the samplers' posteriors exactly (the
  // denoiser's p(x0 | x_t) already conditions on every unmasked token); for uniform-state
  // models it is replacement, an approximation (docs/discrete.md).
  void set_fixed(const at::Tensor& tokens);
  // Where positions are fixed, [B, L] bool (rows: those sequences); undefined when none.
  at::Tensor fixed(const at::Tensor& rows = {}) const;
  // x with its fixed positions set (rows: the sequences x's rows are).
  at::Tensor clamp(const at::Tensor& x, const at::Tensor& rows = {}) const;

 private:
  TokenDenoiser& model_;
  const DiscreteSchedule& schedule_;
  Rng rng_;
  double temperature_, top_p_;
  int64_t top_k_;
  double t_end_;
  bool final_argmax_;
  bool kv_cache_;
  int64_t row_calls_ = 0, batch_ = 1;
  double token_evals_ = 0.0;
  at::Tensor cache_;  // the prefix cache of the current block (undefined: whole-sequence calls)
  int64_t block_lo_ = 0, block_hi_ = 0;
  at::Tensor fixed_mask_, fixed_tokens_;
  at::Tensor labels_;
  int64_t null_label_ = -1;
  bool indexed_ = false;
  double scale_ = 1.0;
};

using DiscreteSamplerFn = at::Tensor (*)(DiscreteContext& ctx, at::Tensor x, const Options& options);

struct DiscreteSamplerEntry {
  std::string name;
  std::string summary;
  Schema options;  // the sampler's own (the common ones come on top)
  DiscreteSamplerFn run;
  bool uniform_ok = false;  // supports uniform transitions
};

// The explicit table (samplers/discrete/registry.cpp); each family file defines its rows.
const Registry<DiscreteSamplerEntry>& discrete_samplers();
// Options every discrete sampler takes: steps, t_end, temperature, top_k, top_p, final, blocks.
const Schema& discrete_common_options();
// Reads a discrete sampler's section (`name` skipped) against the common and its own options.
Options read_discrete_options(const DiscreteSamplerEntry& sampler, const YAML::Node& section, const std::string& path);

// The euler (tau-leaping) step's unmasking probability of a masked position from t to s < t,
// alpha_rate(t) (t - s) / (1 - alpha_t), at most 1 (samplers/discrete/leaping.cpp; also the
// teacher of distill_lsd).
double euler_unmask_probability(const DiscreteSchedule& schedule, double t, double s);

// Fixed tokens for infill: [batch, L] int64, -1 where free, else a token 0..V-1 (batch < 0:
// any); a bad-input Error naming what is wrong otherwise.
void check_fixed_tokens(const at::Tensor& tokens, const TokenSpec& spec, int64_t batch = -1);

// x_1: all mask tokens (absorbing) or uniform random tokens (uniform), [batch, L].
at::Tensor discrete_prior(DiscreteContext& ctx, int64_t batch);

}  // namespace scorch
