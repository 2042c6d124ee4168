// k-diffusion's singlestep DPM-Solver++ samplers with noise: dpmpp_2s_ancestral and
// dpmpp_sde.
//
// Notation (k-diffusion): in VE variables y = x / alpha and sigma = sigma_t / alpha_t, with
// t_fn(sigma) = -log sigma (the logSNR / 2) and D the data prediction. The ancestral split of
// a step from sigma to sigma' (get_ancestral_step):
//   sigma_up = min(sigma', eta sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)),
//   sigma_down = sqrt(sigma'^2 - sigma_up^2).
// The first-order DPM-Solver++ step in these variables from sigma_a to sigma_b is
//   y_b = (sigma_b / sigma_a) y_a - expm1(-(t_b - t_a)) D.
// The runner steps at alpha = 0 and sigma = 0 (flow's endpoints).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "scorch/sampler.h"

namespace scorch {

namespace {

// y_b = (sigma_b / sigma_a) y_a - expm1(-(t_b - t_a)) D, t = -log sigma; the coefficient of D
// is 1 - sigma_b / sigma_a, written with expm1 for steps where the two are close.
at::Tensor dpmpp_1(const at::Tensor& y, double sigma_a, double sigma_b, const at::Tensor& d) {
  return lincomb({{sigma_b / sigma_a, y}, {-std::expm1(std::log(sigma_b) - std::log(sigma_a)), d}});
}

}  // namespace

// DPM-Solver++(2S) ancestral (k-diffusion's sample_dpmpp_2s_ancestral): from sigma to
// sigma_down with the midpoint s of t and t_down (r = 1/2),
//   y_2 = (sigma_s / sigma) y - expm1(-h/2) D(y, sigma),
//   y_down = (sigma_down / sigma) y - expm1(-h) D(y_2, sigma_s),   h = t_down - t,
// then y_{i+1} = y_down + s_noise sigma_up z; Euler to sigma_down = 0. 2 NFE per step.
at::Tensor sample_dpmpp_2s_ancestral(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const double eta = o.number("eta"), s_noise = o.number("s_noise");
  const int n = int(t.size()) - 1;
  for (int i = 0; i < n; ++i) {
    const double sigma = ns.ve_sigma(t[i]), sigma_next = ns.ve_sigma(t[i + 1]);
    const AncestralStep a = ancestral_step(sigma, sigma_next, eta);
    const Prediction p = ctx.denoise(x, t[i]);
    const at::Tensor y = x / ns.alpha(t[i]);
    at::Tensor y_next;
    if (a.down > 0.0) {
      const double sigma_s = std::sqrt(sigma * a.down);  // t_s = (t + t_down) / 2
      const double t_s = ns.t_of_ve_sigma(sigma_s);
      const at::Tensor y_2 = dpmpp_1(y, sigma, sigma_s, p.x0);
      const Prediction p_2 = ctx.denoise(ns.alpha(t_s) * y_2, t_s);
      y_next = dpmpp_1(y, sigma, a.down, p_2.x0);
    } else {
      y_next = lincomb({{1.0, y}, {a.down - sigma, p.eps}});  // Euler: dy/dsigma = eps
    }
    if (a.up > 0.0) y_next = y_next + (s_noise * a.up) * ctx.noise_between(x, t[i], t[i + 1]);
    x = ctx.end_step(i + 1, n, t[i + 1], ns.alpha(t[i + 1]) * y_next);
  }
  return x;
}

// DPM-Solver++ SDE (k-diffusion's sample_dpmpp_sde): two ancestral DPM-Solver++(1) steps per
// interval, through the point s = t + r h (h = t' - t, t = -log sigma):
//   y_2 = DPM++1 from sigma to down(sigma, sigma_s) of D(y, sigma), + s_noise up(sigma, sigma_s) z_1,
//   D_d = (1 - 1/(2r)) D(y, sigma) + 1/(2r) D(y_2, sigma_s),
//   y' = DPM++1 from sigma to down(sigma, sigma') of D_d, + s_noise up(sigma, sigma') z_2,
// where z_1 and z_2 are the noise of the intervals (sigma, sigma_s) and (sigma, sigma'):
// Brownian increments with noise: brownian (k-diffusion's BrownianTreeNoiseSampler), else
// independent. Euler into sigma' = 0. 2 NFE per step.
at::Tensor sample_dpmpp_sde(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const double eta = o.number("eta"), s_noise = o.number("s_noise"), r = o.number("r");
  const double fac = 1.0 / (2.0 * r);
  const int n = int(t.size()) - 1;
  for (int i = 0; i < n; ++i) {
    const double sigma = ns.ve_sigma(t[i]), sigma_next = ns.ve_sigma(t[i + 1]);
    const Prediction p = ctx.denoise(x, t[i]);
    const at::Tensor y = x / ns.alpha(t[i]);
    at::Tensor y_next;
    if (sigma_next > 0.0) {
      const double lt = -std::log(sigma), h = -std::log(sigma_next) - lt;
      const double sigma_s = std::exp(-(lt + r * h)), t_s = ns.t_of_ve_sigma(sigma_s);
      const AncestralStep a1 = ancestral_step(sigma, sigma_s, eta);
      at::Tensor y_2 = dpmpp_1(y, sigma, a1.down, p.x0);
      if (a1.up > 0.0) y_2 = y_2 + (s_noise * a1.up) * ctx.noise_between(x, t[i], t_s);
      const Prediction p_2 = ctx.denoise(ns.alpha(t_s) * y_2, t_s);
      const AncestralStep a2 = ancestral_step(sigma, sigma_next, eta);
      y_next = dpmpp_1(y, sigma, a2.down, lincomb({{1.0 - fac, p.x0}, {fac, p_2.x0}}));
      if (a2.up > 0.0) y_next = y_next + (s_noise * a2.up) * ctx.noise_between(x, t[i], t[i + 1]);
    } else {
      y_next = lincomb({{1.0, y}, {sigma_next - sigma, p.eps}});
    }
    x = ctx.end_step(i + 1, n, t[i + 1], ns.alpha(t[i + 1]) * y_next);
  }
  return x;
}

std::vector<SamplerEntry> dpmpp_singlestep_sde_rows() {
  const OptionSpec eta = {"eta", OptionType::Number, "1", "ancestral noise fraction", {}, 0, 100};
  const OptionSpec s_noise = {"s_noise", OptionType::Number, "1", "scale of the added noise", {}, 0, 100};
  return {
      {"dpmpp_2s_ancestral", "DPM-Solver++(2S) to sigma_down, then ancestral noise (k-diffusion). 2 NFE/step",
       {eta, s_noise}, function_sampler(sample_dpmpp_2s_ancestral, Endpoints::Runner), {}, {"eta"}},
      {"dpmpp_sde", "DPM-Solver++ SDE, two ancestral DPM-Solver++(1) steps per interval (k-diffusion). 2 NFE/step",
       {eta, s_noise, {"r", OptionType::Number, "0.5", "the intermediate point: t + r h in -log sigma", {}, 0, 1}},
       function_sampler(sample_dpmpp_sde, Endpoints::Runner), {}, {"eta"}},
  };
}

}  // namespace scorch
