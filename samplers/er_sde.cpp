// ER-SDE-Solver (Cui et al. 2023, "Elucidating the Solution Space of Extended Reverse-Time
// SDEs for Diffusion Models"), the VP ER-SDE-Solver-3 as ComfyUI's er_sde.
//
// Notation: VE variables y = x / alpha and sigma = sigma_t / alpha_t, D the data prediction,
// phi the noise scale function of the extended reverse SDE. From sigma_s to sigma_t, with
// r = phi(sigma_t) / phi(sigma_s), Delta = sigma_t - sigma_s and divided differences of D
// over the previous grid points, D' = (D_s - D_{s-1}) / (sigma_s - sigma_{s-1}) and
// D'' = 2 (D'_s - D'_{s-1}) / (sigma_s - sigma_{s-2}) (Eq. 17 and its 3-stage form):
//   y_t = r y_s + (1 - r) D_s
//       + (Delta + phi(sigma_t) S_1) D'                           (stage 2)
//       + (Delta^2 / 2 + phi(sigma_t) S_2) D''                    (stage 3)
//       + s_noise sqrt(sigma_t^2 - r^2 sigma_s^2) z,
//   S_1 = int_{sigma_t}^{sigma_s} dsigma / phi,  S_2 = int_{sigma_t}^{sigma_s} (sigma - sigma_s) / phi dsigma,
// the integrals by Gauss-Legendre in log sigma (their integrands are smooth there).
// solver_type picks phi: er_sde phi(x) = x (e^{x^0.3} + 10) (the paper's choice), reverse_time_sde
// phi(x) = x^{eta + 1} (eta 1: the reverse-time SDE of Song et al.), ode phi(x) = x without noise
// (the PF-ODE; stage 1 is DDIM). The runner steps at flow's endpoints. One NFE per step.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <deque>

#include "scorch/error.h"
#include "scorch/sampler.h"

namespace scorch {

namespace {

struct NoiseScaler {
  enum Kind { ErSde, ReverseTimeSde, Ode } kind;
  double eta;
  double phi(double x) const {
    if (kind == ErSde) return x * (std::exp(std::pow(x, 0.3)) + 10.0);
    if (kind == ReverseTimeSde) return std::pow(x, eta + 1.0);
    return x;
  }
  // x / phi(x): the integrands' factor after the change of variable u = log x.
  double x_over_phi(double x) const {
    if (kind == ErSde) return 1.0 / (std::exp(std::pow(x, 0.3)) + 10.0);
    if (kind == ReverseTimeSde) return std::pow(x, -eta);
    return 1.0;
  }
};

}  // namespace

at::Tensor sample_er_sde(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const std::string type = o.str("solver_type");
  const NoiseScaler scaler{type == "er_sde" ? NoiseScaler::ErSde
                                            : type == "reverse_time_sde" ? NoiseScaler::ReverseTimeSde : NoiseScaler::Ode,
                           o.number("eta")};
  const int max_stage = int(o.integer("max_stage"));
  // 1..3: the schema's range.
  if (scaler.kind == NoiseScaler::ReverseTimeSde && !(scaler.eta >= 0.0))
    bad_input("sampler.eta: expected a number >= 0");
  const double s_noise = scaler.kind == NoiseScaler::Ode ? 0.0 : o.number("s_noise");
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const int n = grid.steps();
  std::vector<double> sig(t.size());
  for (size_t i = 0; i < t.size(); ++i) sig[i] = ns.ve_sigma(t[i]);
  // The divided differences are linear in the last three predictions D_0 (now), D_1, D_2:
  // with a = sigma_s - sigma_{s-1}, b = sigma_{s-1} - sigma_{s-2}, c = (sigma_s - sigma_{s-2}) / 2,
  //   D' = (D_0 - D_1) / a,  D'' = (D' - (D_1 - D_2) / b) / c,
  // so the step is one linear combination of x, D_0, D_1, D_2 and the noise (one pass).
  std::deque<at::Tensor> d;  // D_0, D_1, D_2
  for (int i = 0; i < n; ++i) {
    const double s = sig[size_t(i)], st = sig[size_t(i) + 1];
    d.push_front(ctx.denoise(x, t[size_t(i)]).x0);
    if (d.size() > 3) d.pop_back();
    const double r = scaler.phi(st) / scaler.phi(s), delta = st - s;
    double k[3] = {1.0 - r, 0.0, 0.0};  // coefficients of D_0, D_1, D_2 in y'
    const int stage = std::min(max_stage, i + 1);
    if (stage >= 2) {
      const double lo = std::log(st), hi = std::log(s);
      const double c2 = delta + scaler.phi(st) * gauss_legendre([&](double u) { return scaler.x_over_phi(std::exp(u)); }, lo, hi);
      const double a = s - sig[size_t(i) - 1];
      k[0] += c2 / a;
      k[1] -= c2 / a;
      if (stage >= 3) {
        // c3 D'' plus the second-order term of D' in the stage-2 term, c2 (a / 2) D''.
        const double c3 = delta * delta / 2.0 +
                          scaler.phi(st) * gauss_legendre([&](double u) { return (std::exp(u) - s) * scaler.x_over_phi(std::exp(u)); }, lo, hi);
        const double e = c3 + c2 * a / 2.0, b = sig[size_t(i) - 1] - sig[size_t(i) - 2],
                     c = (s - sig[size_t(i) - 2]) / 2.0;
        k[0] += e / (a * c);
        k[1] -= e / (a * c) + e / (b * c);
        k[2] += e / (b * c);
      }
    }
    const double alpha = ns.alpha(t[size_t(i)]), alpha_next = ns.alpha(t[size_t(i) + 1]);
    std::vector<std::pair<double, at::Tensor>> terms = {{alpha_next * r / alpha, x}};
    for (size_t j = 0; j < d.size(); ++j)
      if (k[j] != 0.0) terms.emplace_back(alpha_next * k[j], d[j]);
    const double var = st * st - r * r * s * s;
    if (s_noise > 0.0 && var > 0.0)
      terms.emplace_back(alpha_next * s_noise * std::sqrt(var), ctx.noise_between(x, t[size_t(i)], t[size_t(i) + 1]));
    x = ctx.end_step(i + 1, n, t[size_t(i) + 1], lincomb(terms));
  }
  return x;
}

std::vector<SamplerEntry> er_sde_rows() {
  return {
      {"er_sde", "ER-SDE-Solver-3 (Cui et al. 2023; ComfyUI's er_sde): extended reverse SDE, up to 3 stages. 1 NFE/step",
       {{"solver_type", OptionType::String, "er_sde", "noise scale function phi", {"er_sde", "reverse_time_sde", "ode"}},
        {"max_stage", OptionType::Int, "3", "stages (order of the data-prediction expansion), 1-3", {}, 1, 3},
        {"eta", OptionType::Number, "1", "reverse_time_sde: phi(x) = x^(eta + 1); 0 is the ODE", {}, 0, 100},
        {"s_noise", OptionType::Number, "1", "scale of the added noise", {}, 0, 100}},
       function_sampler(sample_er_sde, Endpoints::Runner), {}, {"s_noise"}},
  };
}

}  // namespace scorch
