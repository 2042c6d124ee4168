// Test oracle: the exact clean-token conditionals p(x0_i | x_t) of a first-order Markov
// chain (initial distribution pi, transitions P) given a partly masked (absorbing) or
// partly resampled (uniform) sequence, by forward-backward in float64. Observations:
// absorbing: a masked position says nothing, an unmasked one is the token; uniform: the
// token is kept with probability alpha_t, else uniform, so the emission is
// alpha_t [x0 = x_t] + (1 - alpha_t) / V.
#pragma once

#include <ATen/ATen.h>

#include "scorch/discrete.h"

namespace scorch::testing {

class MarkovOracle final : public TokenDenoiser {
 public:
  MarkovOracle(at::Tensor pi, at::Tensor P, int64_t length, Transition transition = Transition::Absorbing,
               const DiscreteSchedule* schedule = nullptr)
      : pi_(pi.to(at::kDouble)), P_(P.to(at::kDouble)), schedule_(schedule) {
    spec_.vocab = pi.size(0);
    spec_.mask_id = transition == Transition::Absorbing ? spec_.vocab : -1;
    spec_.length = length;
    spec_.transition = transition;
  }

  at::Tensor log_probs(const at::Tensor& tokens, const at::Tensor& t) override {
    const int64_t b = tokens.size(0), l = tokens.size(1), v = spec_.vocab;
    at::Tensor e;
    if (spec_.transition == Transition::Absorbing) {
      const at::Tensor masked = tokens == spec_.mask_id;
      e = at::one_hot(tokens.masked_fill(masked, 0), v).to(at::kDouble);
      e = at::where(masked.unsqueeze(-1), at::ones_like(e), e);
    } else {
      at::Tensor a = t.to(at::kDouble).clone();
      for (int64_t i = 0; i < b; ++i) a[i] = schedule_->alpha(t[i].item<double>());
      e = a.view({b, 1, 1}) * at::one_hot(tokens, v).to(at::kDouble) + (1.0 - a.view({b, 1, 1})) / double(v);
    }
    std::vector<at::Tensor> f(static_cast<size_t>(l)), bw(static_cast<size_t>(l));
    f[0] = pi_.unsqueeze(0) * e.select(1, 0);
    f[0] = f[0] / f[0].sum(1, true);
    for (int64_t i = 1; i < l; ++i) {
      f[size_t(i)] = f[size_t(i - 1)].mm(P_) * e.select(1, i);
      f[size_t(i)] = f[size_t(i)] / f[size_t(i)].sum(1, true);
    }
    bw[size_t(l - 1)] = at::ones({b, v}, at::kDouble);
    for (int64_t i = l - 2; i >= 0; --i) {
      bw[size_t(i)] = (e.select(1, i + 1) * bw[size_t(i + 1)]).mm(P_.t());
      bw[size_t(i)] = bw[size_t(i)] / bw[size_t(i)].sum(1, true);
    }
    std::vector<at::Tensor> post;
    for (int64_t i = 0; i < l; ++i) {
      const at::Tensor q = f[size_t(i)] * bw[size_t(i)];
      post.push_back((q / q.sum(1, true)).log());
    }
    return at::stack(post, 1);
  }
  const TokenSpec& spec() const override { return spec_; }

  // The exact marginal of position i, pi P^i, and the exact pair law of positions (i, i+1).
  at::Tensor marginal(int64_t i) const {
    at::Tensor m = pi_;
    for (int64_t k = 0; k < i; ++k) m = m.unsqueeze(0).mm(P_).squeeze(0);
    return m;
  }
  at::Tensor pair(int64_t i) const { return marginal(i).unsqueeze(1) * P_; }

 private:
  at::Tensor pi_, P_;
  const DiscreteSchedule* schedule_;
  TokenSpec spec_;
};

}  // namespace scorch::testing
