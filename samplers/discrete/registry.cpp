// The discrete-sampler context (model calls, the sampling distribution, float64 draws), the
// prior, the options every discrete sampler takes, and the discrete registry table.
#include "scorch/discrete_sampler.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "scorch/error.h"
#include "scorch/io.h"

namespace scorch {

DiscreteContext::DiscreteContext(TokenDenoiser& model, const DiscreteSchedule& schedule, Rng rng, const Options& o)
    : model_(model),
      schedule_(schedule),
      rng_(std::move(rng)),
      temperature_(o.number("temperature")),
      top_p_(o.number("top_p")),
      top_k_(o.integer("top_k")),
      t_end_(o.number("t_end")),
      final_argmax_(o.str("final") == "argmax"),
      kv_cache_(o.flag("kv_cache")) {
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

bool DiscreteContext::begin_block(const at::Tensor& x, int64_t lo, int64_t hi) {
  cache_ = at::Tensor();
  const int64_t bs = model_.cache_block_size(), length = spec().length;
  if (!kv_cache_ || bs == 0 || labels_.defined() || lo % bs != 0 || (hi % bs != 0 && hi != length)) return false;
  cache_ = model_.prefix_cache(x.narrow(1, 0, lo));
  if (cache_.dim() < 1 || cache_.size(0) != x.size(0))
    bad_input("token model: prefix_cache must return a tensor with the batch first");
  token_evals_ += double(x.size(0) * lo);
  block_lo_ = lo;
  block_hi_ = hi;
  return true;
}

at::Tensor DiscreteContext::probs(const at::Tensor& x, const at::Tensor& t, const at::Tensor& rows) {
  const at::Tensor xs = rows.defined() ? x.index_select(0, rows) : x;
  const at::Tensor ts = rows.defined() ? t.index_select(0, rows) : t;
  row_calls_ += xs.size(0);
  at::Tensor logp;
  if (cache_.defined()) {
    // the block from the prefix cache; the prefix one-hot, the later positions uniform
    const int64_t n = block_hi_ - block_lo_, V = spec().vocab;
    token_evals_ += double(xs.size(0) * n);
    const at::Tensor block = model_.log_probs_block(xs.narrow(1, block_lo_, n), ts,
                                                    rows.defined() ? cache_.index_select(0, rows) : cache_, block_lo_);
    logp = at::full({xs.size(0), xs.size(1), V}, -std::log(double(V)), at::kDouble);
    logp.narrow(1, block_lo_, n).copy_(block.to(at::kDouble));
    const at::Tensor prefix = xs.narrow(1, 0, block_lo_).clamp_max(V - 1);
    logp.narrow(1, 0, block_lo_).copy_(at::log(at::one_hot(prefix, V).to(at::kDouble)));
  } else if (!labels_.defined()) {
    token_evals_ += double(xs.numel());
    logp = model_.log_probs(xs, ts).to(at::kDouble);
  } else {
    token_evals_ += double(xs.numel());
    const at::Tensor ls = rows.defined() ? labels_.index_select(0, rows) : labels_;
    if (scale_ == 1.0) {
      logp = model_.log_probs_given(xs, ts, ls).to(at::kDouble);
    } else {
      const int64_t b = xs.size(0);
      const at::Tensor both =
          at::log_softmax(model_.log_probs_given(at::cat({xs, xs}), at::cat({ts, ts}),
                                                 at::cat({ls, indexed_ ? -(ls + 1) : at::full({b}, null_label_, ls.options())}))
                              .to(at::kDouble),
                          -1);
      const at::Tensor lc = both.narrow(0, 0, b), lu = both.narrow(0, b, b);
      logp = at::log_softmax(lu + scale_ * (lc - lu), -1);
    }
  }
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
  p = p / p.sum(-1, true);
  if (fixed_mask_.defined()) {
    const at::Tensor fm = fixed(rows), ft = rows.defined() ? fixed_tokens_.index_select(0, rows) : fixed_tokens_;
    p = at::where(fm.unsqueeze(-1), at::one_hot(ft, p.size(-1)).to(at::kDouble), p);
  }
  return p;
}

void DiscreteContext::set_labels(const at::Tensor& labels, int64_t null_label, double scale, bool indexed) {
  if (labels.defined() && (labels.dim() != 1 || labels.scalar_type() != at::kLong))
    bad_input("cond: expected one int64 label per sequence");
  if (!std::isfinite(scale)) bad_input("guidance.scale: expected a finite number");
  labels_ = labels;
  null_label_ = null_label;
  scale_ = scale;
  indexed_ = indexed;
}

void DiscreteContext::set_fixed(const at::Tensor& tokens) {
  const TokenSpec& s = spec();
  if (!tokens.defined()) {
    fixed_mask_ = fixed_tokens_ = at::Tensor();
    return;
  }
  check_fixed_tokens(tokens, s);
  const at::Tensor t = tokens.to(at::kLong);
  fixed_mask_ = t >= 0;
  fixed_tokens_ = t.clamp_min(0);
}

void check_fixed_tokens(const at::Tensor& tokens, const TokenSpec& spec, int64_t batch) {
  if (tokens.dim() != 2 || (batch >= 0 && tokens.size(0) != batch) || tokens.size(1) != spec.length)
    bad_input("fixed tokens: expected [batch, L] = [" + (batch >= 0 ? std::to_string(batch) : std::string("batch")) +
              ", " + std::to_string(spec.length) + "]");
  const at::Tensor t = tokens.to(at::kLong);
  if (((t < -1) | (t >= spec.vocab)).any().item<bool>())
    bad_input("fixed tokens: expected -1 (free) or a token 0.." + std::to_string(spec.vocab - 1));
}

at::Tensor DiscreteContext::fixed(const at::Tensor& rows) const {
  if (!fixed_mask_.defined()) return {};
  return rows.defined() ? fixed_mask_.index_select(0, rows) : fixed_mask_;
}

at::Tensor DiscreteContext::clamp(const at::Tensor& x, const at::Tensor& rows) const {
  if (!fixed_mask_.defined()) return x;
  const at::Tensor tok = rows.defined() ? fixed_tokens_.index_select(0, rows) : fixed_tokens_;
  return at::where(fixed(rows), tok, x);
}

at::Tensor DiscreteContext::sample(const at::Tensor& probs, const at::Tensor& rows) {
  std::vector<int64_t> shape = probs.sizes().vec();
  shape.back() = 1;
  return sample_categorical(probs, rng_.uniform(shape, rows));
}

at::Tensor discrete_prior(DiscreteContext& ctx, int64_t batch) {
  const TokenSpec& s = ctx.spec();
  ctx.set_batch(batch);
  if (s.transition == Transition::Absorbing)
    return ctx.clamp(at::full({batch, s.length}, s.mask_id, at::TensorOptions().dtype(at::kLong)));
  return ctx.clamp(at::floor(ctx.uniform({batch, s.length}) * double(s.vocab)).to(at::kLong).clamp_max_(s.vocab - 1));
}

const Schema& discrete_common_options() {
  static const Schema specs = {
      {"steps", OptionType::Int, "64", "number of steps (first_hitting: one model call per token instead)", {}, 1, 1000000},
      {"t_end", OptionType::Number, "0.00001", "last time of the uniform grid from 1", {}, 0, 1},
      {"temperature", OptionType::Number, "1", "p^(1/T), renormalised", {}, 0, 1000},
      {"top_k", OptionType::Int, "0", "keep the k most likely tokens (0: all)", {}, 0, 2147483647},
      {"top_p", OptionType::Number, "1", "nucleus: the most likely tokens up to this mass", {}, 0, 1},
      {"final", OptionType::String, "sample", "the last step draws (sample) or takes the most likely token (argmax)",
       {"sample", "argmax"}},
      {"blocks", OptionType::Int, "1", "semi-autoregressive: unmask the sequence in this many blocks, left to right", {}, 1, 16777216},
      {"kv_cache", OptionType::Bool, "true",
       "blocks > 1 on a block-causal network with a prefix cache (prefix_cache, forward_block): encode each finished prefix once and run the network on the current block alone", {}},
  };
  return specs;
}

std::vector<DiscreteSamplerEntry> leaping_rows();        // euler, tweedie, cached
std::vector<DiscreteSamplerEntry> first_hitting_rows();  // first_hitting
std::vector<DiscreteSamplerEntry> maskgit_rows();        // maskgit
std::vector<DiscreteSamplerEntry> remdm_rows();          // remdm
std::vector<DiscreteSamplerEntry> lsd_rows();            // lsd

const Registry<DiscreteSamplerEntry>& discrete_samplers() {
  static const Registry<DiscreteSamplerEntry> table("discrete sampler", {
      leaping_rows,
      first_hitting_rows,
      maskgit_rows,
      remdm_rows,
      lsd_rows,
  });
  return table;
}

Options read_discrete_options(const DiscreteSamplerEntry& sampler, const YAML::Node& section, const std::string& path) {
  Schema specs = discrete_common_options();
  specs.insert(specs.end(), sampler.options.begin(), sampler.options.end());
  const Options o = Options::read(section, specs, path, {"name"});
  if (o.integer("steps") < 1) bad_input(path + ".steps: expected a positive integer");
  return o;
}

}  // namespace scorch
