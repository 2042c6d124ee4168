// Guidance wraps denoisers into one denoiser, so every sampler runs guided unchanged.
// Combined in noise space (eps = -sigma_t score), per call at time t:
//
//   classifier-free (Ho & Salimans 2022):  eps = eps(x, null) + s (eps(x, c) - eps(x, null))
//     with, on the pair (c, null), one of the variants (docs/guidance.md):
//     rescale (Lin et al. 2024, diffusers' guidance_rescale phi), on eps:
//                                          eps <- phi eps std(eps_c) / std(eps) + (1 - phi) eps
//     interval (Kynkaanniemi et al. 2024): the guidance acts only where the VE sigma lies in
//                                          (sigma_lo, sigma_hi]; elsewhere eps = eps(x, c)
//     APG (Sadat et al. 2024, Alg. 1), on the data prediction D = x0:
//                                          Delta = D_c - D_u, plus momentum times its running
//                                          sum, scaled to norm <= norm_threshold, then
//                                          D = D_c + (s - 1)(Delta_perp + eta Delta_par), the
//                                          parts perpendicular / parallel to D_c
//     CFG-Zero* (Fan et al. 2025), on the ODE direction d (eps; a flow's velocity):
//                                          d = a d_u + s (d_c - a d_u), a = <d_c, d_u> / ||d_u||^2,
//                                          and d = 0 at the first zero_steps + 1 times
//   classifier (Dhariwal & Nichol 2021; DPM-Solver's model_wrapper):
//                                          eps -= s sigma_t grad_x log p(c | x_t, t)
//   mixture of score guidance (MotionShop, Yesiltepe et al. 2024), terms i:
//                                          eps += sum_i w_i(t) M_i (eps(x_i, c_i) - eps(x, cref_i))
//       w_i piecewise linear in t and 0 outside the term's window, M_i a spatial mask,
//       x_i = x or, for a term with a reference sample, the reference's own noised state
//       x*_t, whose prediction enters as the noise that gives x the same data prediction,
//       eps_i = (x - alpha_t x0(x*_t, c_i)) / sigma_t (the raw eps(x*_t) carries the
//       reference's own noise: at high noise it would replace the noise of x).
//   composition (Du et al. 2023) of the model with more models j (weights w_j, pi_j):
//       product / negation:  score = w_0 s_0 + sum_j w_j s_j   (a negative w_j is NOT)
//       mixture (OR):        score = sum_j r_j s_j,  r_j = softmax_j(log pi_j + log p_j,t(x))
//
// Every condition a step needs from one model (c, null, the terms' c_i and cref_i) is
// evaluated in one batched call; NFE counts batched calls (Denoiser::last_calls).
#pragma once

#include <ATen/core/Tensor.h>

#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "scorch/denoiser.h"

namespace scorch {

class Schedule;

// The condition a guidance term evaluates: the sample's own label, the null label, or a fixed one.
struct CondSpec {
  enum Kind { Same, Null, Label } kind = Same;
  int64_t label = 0;
};

// w(t) through the points (t_j, w_j), linear in between and constant beyond the ends.
struct WeightSchedule {
  std::vector<std::pair<double, double>> points;  // sorted by t
  double at(double t) const;
};

struct GuidanceTerm {
  CondSpec cond;                              // c_i (default: the sample's own label)
  CondSpec ref_cond{CondSpec::Null, 0};       // cref_i (default: the null label)
  WeightSchedule weight;
  double t_min = -std::numeric_limits<double>::infinity();  // the window [t_min, t_max]
  double t_max = std::numeric_limits<double>::infinity();
  at::Tensor mask;       // broadcastable to one sample [*shape]; undefined: everywhere
  // Reference trajectory (x*_t at the times `ref_t`, decreasing): the term then evaluates
  // eps(x*_t, c_i), x*_t interpolated between the stored states in lambda.
  std::vector<double> ref_t;
  std::vector<at::Tensor> ref_x;
};

// Classifier guidance: log p(c | x_t, t) for labels [B], per sample [B], differentiable in x.
class Classifier {
 public:
  virtual ~Classifier() = default;
  virtual at::Tensor log_prob(const at::Tensor& x, double t, const at::Tensor& labels) = 0;
};

struct ComposeTerm {
  std::shared_ptr<Denoiser> model;
  double weight = 1.0;  // product: w_j; mixture: pi_j
};

struct GuidanceSpec {
  double cfg_scale = 1.0;  // 1: no classifier-free guidance
  int64_t null_label = -1;
  // The model's cond is a row index into declared inputs (model_inputs.h): the null of
  // sample index i is then -(i + 1), sample i's negative inputs, not null_label.
  bool indexed = false;
  // Variants of the classifier-free combination (formulas above).
  double rescale = 0.0;  // phi; 0: off
  double interval_lo = 0.0, interval_hi = std::numeric_limits<double>::infinity();
  struct Apg {
    bool on = false;
    double eta = 1.0, norm_threshold = 0.0, momentum = 0.0;
  } apg;
  struct CfgZeroStar {
    bool on = false;
    bool use_zero_init = true;
    int zero_steps = 0;
  } cfg_zero_star;
  std::vector<GuidanceTerm> terms;
  std::shared_ptr<Classifier> classifier;
  double classifier_scale = 0.0;
  enum class Compose { None, Product, Mixture } compose = Compose::None;
  double base_weight = 1.0;  // w_0 (product) or pi_0 (mixture) of the configured model
  std::vector<ComposeTerm> models;

  bool empty() const {
    return cfg_scale == 1.0 && terms.empty() && !classifier && compose == Compose::None &&
           !(cfg_zero_star.on && cfg_zero_star.use_zero_init);
  }
};

std::unique_ptr<Denoiser> make_guided_denoiser(std::shared_ptr<Denoiser> base, std::shared_ptr<const Schedule> schedule,
                                               GuidanceSpec spec);

}  // namespace scorch
