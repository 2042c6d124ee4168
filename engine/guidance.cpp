#include "scorch/guidance.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/autograd.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "scorch/error.h"
#include "scorch/schedule.h"

namespace scorch {

double WeightSchedule::at(double t) const {
  if (points.empty()) return 0.0;
  if (t <= points.front().first) return points.front().second;
  if (t >= points.back().first) return points.back().second;
  for (size_t j = 1; j < points.size(); ++j)
    if (t <= points[j].first) {
      const auto [t0, w0] = points[j - 1];
      const auto [t1, w1] = points[j];
      return t1 > t0 ? w0 + (w1 - w0) * (t - t0) / (t1 - t0) : w1;
    }
  return points.back().second;
}

namespace {

class GuidedDenoiser final : public Denoiser {
 public:
  GuidedDenoiser(std::shared_ptr<Denoiser> base, std::shared_ptr<const Schedule> schedule, GuidanceSpec spec)
      : base_(std::move(base)), sched_(std::move(schedule)), g_(std::move(spec)) {}

  std::vector<int64_t> sample_shape() const override { return base_->sample_shape(); }
  bool conditional() const override { return base_->conditional(); }
  int64_t last_calls() const override { return calls_; }

  bool has_log_density() const override {
    if (g_.cfg_scale != 1.0 || !g_.terms.empty() || g_.classifier || !base_->has_log_density()) return false;
    for (const auto& m : g_.models)
      if (!m.model->has_log_density()) return false;
    return true;
  }

  // product: sum_j w_j log p_j; mixture: logsumexp_j (log pi_j + log p_j); up to constants.
  at::Tensor log_density(const at::Tensor& x, double t, const at::Tensor& cond) override {
    if (g_.cfg_scale != 1.0 || !g_.terms.empty() || g_.classifier)
      bad_input("guidance: classifier-free, classifier and score-mixture guidance have no log-density; "
                "the mala and hmc correctors need one (use ula or uhmc)");
    const at::Tensor l0 = base_->log_density(x, t, cond);
    if (g_.compose == GuidanceSpec::Compose::None) return l0;
    std::vector<at::Tensor> parts;
    const bool mix = g_.compose == GuidanceSpec::Compose::Mixture;
    parts.push_back(mix ? l0 + std::log(g_.base_weight) : g_.base_weight * l0);
    for (const auto& m : g_.models) {
      const at::Tensor l = m.model->log_density(x, t, m.model->conditional() ? cond : at::Tensor());
      parts.push_back(mix ? l + std::log(m.weight) : m.weight * l);
    }
    const at::Tensor all = at::stack(parts, 1);
    return mix ? at::logsumexp(all, 1) : all.sum(1);
  }

  Prediction predict(const at::Tensor& x, double t, const at::Tensor& cond) override {
    const double alpha = sched_->alpha(t), sigma = sched_->sigma(t);
    calls_ = 0;
    track_steps(t, x.size(0));
    if (g_.cfg_zero_star.on && g_.cfg_zero_star.use_zero_init && step_ <= g_.cfg_zero_star.zero_steps) {
      // CFG-Zero*'s zero-init: the direction is 0 (no network call); x0 and eps from x alone.
      Prediction p;
      std::tie(p.x0, p.eps) = from_direction(at::zeros_like(x), x, t);
      return p;
    }
    at::Tensor x0;
    at::Tensor eps = guided_eps(x, t, cond, &x0);
    if (alpha == 0.0 && g_.compose == GuidanceSpec::Compose::None) {
      // Pure noise (flow's t = 1, zero terminal SNR): x0 = (x - sigma eps) / alpha is 0/0 there,
      // so the guided x0 is the same combination of the predictions' x0 as eps is of their eps
      // (each prediction is affine in the network output). A classifier's log p(c | x_1) does
      // not depend on x: its gradient is 0.
      return {x0, eps, x0_uncond_};
    }
    if (g_.classifier && g_.classifier_scale != 0.0) {
      eps = eps - g_.classifier_scale * sigma * classifier_grad(x, t, cond);
      ++calls_;
    }
    if (g_.compose != GuidanceSpec::Compose::None) eps = compose(eps, x, t, cond);
    Prediction p = from_model_output(PredictionType::Eps, eps, x, alpha, sigma);
    p.x0_uncond = x0_uncond_;
    return p;
  }

 private:
  // The batch of (state, labels) pairs one step needs from the base model.
  struct Batch {
    std::vector<at::Tensor> xs, labels;
    // index of (x, labels), adding it unless an identical pair is already there
    size_t need(const at::Tensor& x, const at::Tensor& l) {
      for (size_t i = 0; i < xs.size(); ++i)
        if (xs[i].is_same(x) && (l.defined() == labels[i].defined()) && (!l.defined() || at::equal(l, labels[i])))
          return i;
      xs.push_back(x);
      labels.push_back(l);
      return xs.size() - 1;
    }
  };

  at::Tensor labels_for(const CondSpec& c, const at::Tensor& cond, int64_t b) const {
    if (c.kind == CondSpec::Same) return cond;
    if (g_.indexed && c.kind == CondSpec::Null) return -cond - 1;
    const int64_t label = c.kind == CondSpec::Null ? g_.null_label : c.label;
    return at::full({b}, label, cond.defined() ? cond.options() : at::TensorOptions().dtype(at::kLong));
  }

  // x*_t of a reference trajectory: the neighbouring stored states in VE variables
  // y_k = x*_k / alpha_k, interpolated linearly in lambda, times alpha_t.
  at::Tensor reference_state(const GuidanceTerm& term, double t) const {
    const auto& ts = term.ref_t;  // decreasing in t
    size_t j = 1;
    while (j + 1 < ts.size() && ts[j] > t) ++j;
    const double l0 = sched_->lambda(ts[j - 1]), l1 = sched_->lambda(ts[j]), l = sched_->lambda(t);
    const double u = std::clamp(l1 != l0 ? (l - l0) / (l1 - l0) : 1.0, 0.0, 1.0);
    return sched_->alpha(t) * ((1.0 - u) / sched_->alpha(ts[j - 1]) * term.ref_x[j - 1] +
                               u / sched_->alpha(ts[j]) * term.ref_x[j]);
  }

  // The guided eps; *x0_out gets the same combination of the predictions' x0.
  at::Tensor guided_eps(const at::Tensor& x, double t, const at::Tensor& cond, at::Tensor* x0_out) {
    const int64_t b = x.size(0);
    Batch batch;
    const size_t base = batch.need(x, cond);
    const double ve = sched_->ve_sigma(t);
    const bool cfg = g_.cfg_scale != 1.0 && ve > g_.interval_lo && ve <= g_.interval_hi;
    const size_t uncond = cfg ? batch.need(x, labels_for({CondSpec::Null, 0}, cond, b)) : 0;
    struct Active {
      const GuidanceTerm* term;
      double w;
      size_t i, r;
    };
    std::vector<Active> active;
    std::vector<at::Tensor> ref_states;  // keeps reference states alive for is_same
    for (const auto& term : g_.terms) {
      const double w = term.weight.at(t);
      if (w == 0.0 || t < term.t_min || t > term.t_max) continue;
      at::Tensor xi = x;
      if (!term.ref_x.empty()) {
        // one reference for the whole batch
        ref_states.push_back(reference_state(term, t).to(x.options()).expand_as(x));
        xi = ref_states.back();
      }
      active.push_back({&term, w, batch.need(xi, labels_for(term.cond, cond, b)),
                        batch.need(x, labels_for(term.ref_cond, cond, b))});
    }
    // One batched call for every pair.
    std::vector<at::Tensor> eps, x0;
    if (batch.xs.size() == 1) {
      const Prediction p = base_->predict(x, t, cond);
      eps = {p.eps};
      x0 = {p.x0};
    } else {
      const at::Tensor xs = at::cat(batch.xs, 0);
      const at::Tensor ls = cond.defined() || batch.labels[0].defined() ? at::cat(batch.labels, 0) : at::Tensor();
      const Prediction p = base_->predict(xs, t, ls);
      eps = p.eps.split(b, 0);
      x0 = p.x0.split(b, 0);
    }
    calls_ += base_->last_calls();
    at::Tensor out = eps[base], out_x0 = x0[base];
    if (cfg) std::tie(out, out_x0) = classifier_free(x, t, eps[base], x0[base], eps[uncond], x0[uncond]);
    x0_uncond_ = cfg ? x0[uncond] : at::Tensor();
    for (const auto& a : active) {
      // A reference term's prediction is carried to x: the noise that would give x the
      // reference's x0, eps_i = (x - alpha x0(x*_t, c_i)) / sigma. (The raw eps(x*_t) holds
      // the reference's own noise; at high noise it would replace that of x and the guided
      // flow diverges.) Then alpha Delta-x0 = -sigma Delta-eps pulls x0 towards the reference's.
      const at::Tensor eps_i = a.term->ref_x.empty()
                                   ? eps[a.i]
                                   : (x - sched_->alpha(t) * x0[a.i]) / sched_->sigma(t);
      at::Tensor d = a.w * (eps_i - eps[a.r]), d_x0 = a.w * (x0[a.i] - x0[a.r]);
      if (a.term->mask.defined()) {
        d = d * a.term->mask.to(x.options());
        d_x0 = d_x0 * a.term->mask.to(x.options());
      }
      out = out + d;
      out_x0 = out_x0 + d_x0;
    }
    *x0_out = out_x0;
    return out;
  }

  // Sampler steps seen since the run began: a later time than the last call starts a new
  // run (and a new batch size too); an earlier one is the next step. Multi-stage samplers
  // count each distinct evaluation time.
  void track_steps(double t, int64_t batch) {
    if (!(step_ >= 0) || t > last_t_ || batch != last_batch_) {
      step_ = 0;
      running_ = at::Tensor();
    } else if (t < last_t_) {
      ++step_;
    }
    last_t_ = t;
    last_batch_ = batch;
  }

  // The ODE direction d = a x0 + b eps the k-diffusion-style samplers follow: a flow's
  // velocity (a, b) = (alpha', sigma'); otherwise eps, d(x / alpha)/d(sigma / alpha).
  std::pair<double, double> direction_coefficients(double t) const {
    if (sched_->integrates_in_time()) return {sched_->d_alpha(t), sched_->d_sigma(t)};
    return {0.0, 1.0};
  }

  // (x0, eps) from x = alpha x0 + sigma eps and d = a x0 + b eps.
  std::pair<at::Tensor, at::Tensor> from_direction(const at::Tensor& d, const at::Tensor& x, double t) const {
    const auto [a, b] = direction_coefficients(t);
    const double alpha = sched_->alpha(t), sigma = sched_->sigma(t), det = alpha * b - sigma * a;
    return {(b * x - sigma * d) / det, (alpha * d - a * x) / det};
  }

  // Per-sample sum over all but the batch dimension, shaped to broadcast over a sample.
  static at::Tensor per_sample_sum(const at::Tensor& v) {
    std::vector<int64_t> shape(size_t(v.dim()), 1);
    shape[0] = v.size(0);
    return v.reshape({v.size(0), -1}).sum(1).view(shape);
  }

  // The classifier-free combination of (c, null) and its variants; returns (eps, x0).
  std::pair<at::Tensor, at::Tensor> classifier_free(const at::Tensor& x, double t, const at::Tensor& eps_c,
                                                    const at::Tensor& x0_c, const at::Tensor& eps_u,
                                                    const at::Tensor& x0_u) {
    const double s = g_.cfg_scale, alpha = sched_->alpha(t), sigma = sched_->sigma(t);
    at::Tensor eps, x0;
    if (g_.apg.on) {
      // APG on D = x0: momentum keeps a running sum Delta_bar <- Delta + momentum Delta_bar.
      at::Tensor delta = x0_c - x0_u;
      if (g_.apg.momentum != 0.0) {
        running_ = running_.defined() ? delta + g_.apg.momentum * running_ : delta;
        delta = running_;
      }
      if (g_.apg.norm_threshold > 0.0)
        delta = delta * at::clamp_max(g_.apg.norm_threshold / per_sample_sum(delta * delta).sqrt(), 1.0);
      const at::Tensor unit = x0_c / per_sample_sum(x0_c * x0_c).sqrt().clamp_min(1e-12);
      const at::Tensor par = per_sample_sum(delta * unit) * unit;
      x0 = x0_c + (s - 1.0) * (delta - par + g_.apg.eta * par);
      eps = sigma > 0.0 ? (x - alpha * x0) / sigma : eps_c;
    } else if (g_.cfg_zero_star.on) {
      // CFG-Zero*'s optimised scale a = <d_c, d_u> / (||d_u||^2 + 1e-8), as its reference code.
      const auto [a, b] = direction_coefficients(t);
      const at::Tensor d_c = a * x0_c + b * eps_c, d_u = a * x0_u + b * eps_u;
      const at::Tensor opt = per_sample_sum(d_c * d_u) / (per_sample_sum(d_u * d_u) + 1e-8);
      std::tie(x0, eps) = from_direction(opt * d_u + s * (d_c - opt * d_u), x, t);
    } else {
      eps = eps_u + s * (eps_c - eps_u);
      x0 = x0_u + s * (x0_c - x0_u);
    }
    if (g_.rescale != 0.0 && alpha > 0.0) {
      // std over each sample's entries (unbiased, as torch.std). At alpha = 0 every eps is x.
      const auto std_of = [](const at::Tensor& v) {
        const at::Tensor c = v - per_sample_sum(v) / double(v[0].numel());
        return (per_sample_sum(c * c) / double(v[0].numel() - 1)).sqrt();
      };
      const at::Tensor rescaled = eps * (std_of(eps_c) / std_of(eps));
      eps = g_.rescale * rescaled + (1.0 - g_.rescale) * eps;
      x0 = (x - sigma * eps) / alpha;
    }
    return {eps, x0};
  }

  // grad_x log p(c | x_t, t), with autograd switched back on inside the sampler's inference mode.
  at::Tensor classifier_grad(const at::Tensor& x, double t, const at::Tensor& cond) {
    if (!cond.defined()) bad_input("guidance.classifier: needs class labels (set cond)");
    c10::InferenceMode off(false);
    at::AutoGradMode grad_on(true);
    const at::Tensor xi = x.detach().clone().requires_grad_(true);
    const at::Tensor lp = g_.classifier->log_prob(xi, t, cond.clone());
    return torch::autograd::grad({lp.sum()}, {xi})[0].detach();
  }

  at::Tensor compose(const at::Tensor& eps0, const at::Tensor& x, double t, const at::Tensor& cond) {
    // eps = -sigma score, so sums of scores are sums of eps.
    std::vector<at::Tensor> eps = {eps0};
    for (const auto& m : g_.models) {
      eps.push_back(m.model->predict(x, t, m.model->conditional() ? cond : at::Tensor()).eps);
      calls_ += m.model->last_calls();
    }
    if (g_.compose == GuidanceSpec::Compose::Product) {
      at::Tensor out = g_.base_weight * eps[0];
      for (size_t j = 0; j < g_.models.size(); ++j) out = out + g_.models[j].weight * eps[j + 1];
      return out;
    }
    // mixture: responsibilities from the log-densities (base term first)
    std::vector<at::Tensor> logits = {base_->log_density(x, t, cond) + std::log(g_.base_weight)};
    for (const auto& m : g_.models)
      logits.push_back(m.model->log_density(x, t, m.model->conditional() ? cond : at::Tensor()) +
                       std::log(m.weight));
    const at::Tensor r = at::softmax(at::stack(logits, 1), 1);  // [B, J]
    std::vector<int64_t> shape(size_t(x.dim()), 1);
    shape[0] = x.size(0);
    at::Tensor out = at::zeros_like(eps0);
    for (size_t j = 0; j < eps.size(); ++j) out = out + r.select(1, int64_t(j)).view(shape) * eps[j];
    return out;
  }

  std::shared_ptr<Denoiser> base_;
  std::shared_ptr<const Schedule> sched_;
  GuidanceSpec g_;
  int64_t calls_ = 1;
  at::Tensor x0_uncond_;  // the last call's unconditional x0 (classifier-free guidance), for Prediction
  // Step tracking (CFG-Zero*'s zero-init) and APG's momentum buffer.
  int64_t step_ = -1, last_batch_ = 0;
  double last_t_ = 0.0;
  at::Tensor running_;
};

}  // namespace

std::unique_ptr<Denoiser> make_guided_denoiser(std::shared_ptr<Denoiser> base, std::shared_ptr<const Schedule> schedule,
                                               GuidanceSpec spec) {
  return std::make_unique<GuidedDenoiser>(std::move(base), std::move(schedule), std::move(spec));
}

}  // namespace scorch
