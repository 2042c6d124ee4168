// RES multistep (Zhang et al. 2023, "Improving the Refined Exponential Solver", the second-order
// multistep method; ComfyUI's res_multistep and res_multistep_ancestral).
//
// Notation (k-diffusion): VE variables y = x / alpha and sigma = sigma_t / alpha_t,
// t = -log sigma, D the data prediction, phi_1(z) = (e^z - 1) / z, phi_2(z) = (phi_1(z) - 1) / z.
// Each step goes from sigma_i to sigma_down (the ancestral split of sigma_i -> sigma_{i+1};
// eta = 0: sigma_down = sigma_{i+1}), h = t_down - t_i, with the previous data prediction D'
// at the relative position c_2 = (t_{i-1} - t'_down) / h (t'_down: the previous step's end):
//   b_1 = phi_1(-h) - phi_2(-h) / c_2,   b_2 = phi_2(-h) / c_2,
//   y_down = e^{-h} y + h (b_1 D + b_2 D'),
// then y_{i+1} = y_down + s_noise sigma_up z. The first step (no D') and a step into
// sigma_down = 0 are Euler steps. The runner steps at alpha = 0 and sigma = 0 (flow).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "scorch/sampler.h"

namespace scorch {

namespace {

double phi1(double z) { return z == 0.0 ? 1.0 : std::expm1(z) / z; }
double phi2(double z) { return z == 0.0 ? 0.5 : (phi1(z) - 1.0) / z; }

}  // namespace

at::Tensor sample_res_multistep(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const double eta = o.number("eta"), s_noise = o.number("s_noise");
  const int n = int(t.size()) - 1;
  at::Tensor old_d;
  double old_sigma_down = 0.0;
  for (int i = 0; i < n; ++i) {
    const double sigma = ns.ve_sigma(t[i]), sigma_next = ns.ve_sigma(t[i + 1]);
    const auto [down, up] = ancestral_step(sigma, sigma_next, eta);
    const Prediction p = ctx.denoise(x, t[i]);
    // y = x / alpha; the step is one pass on x: every coefficient times alpha' (and 1/alpha on x).
    const double a = ns.alpha(t[i]), a_next = ns.alpha(t[i + 1]);
    std::vector<std::pair<double, at::Tensor>> terms;
    if (down == 0.0 || !old_d.defined()) {
      terms = {{a_next / a, x}, {a_next * (down - sigma), p.eps}};  // Euler: dy/dsigma = eps
    } else {
      const double lt = -std::log(sigma), h = -std::log(down) - lt;
      const double c2 = (-std::log(ns.ve_sigma(t[i - 1])) + std::log(old_sigma_down)) / h;
      const double b1 = phi1(-h) - phi2(-h) / c2, b2 = phi2(-h) / c2;
      terms = {{a_next * std::exp(-h) / a, x}, {a_next * h * b1, p.x0}, {a_next * h * b2, old_d}};
    }
    if (up > 0.0) terms.emplace_back(a_next * s_noise * up, ctx.noise_between(x, t[i], t[i + 1]));
    old_d = p.x0;
    old_sigma_down = down;
    x = ctx.end_step(i + 1, n, t[i + 1], lincomb(terms));
  }
  return x;
}

std::vector<SamplerEntry> res_multistep_rows() {
  const OptionSpec s_noise = {"s_noise", OptionType::Number, "1", "scale of the added noise", {}, 0, 100};
  return {
      {"res_multistep", "RES second-order multistep (ComfyUI's res_multistep). 1 NFE/step",
       {{"eta", OptionType::Number, "0", "ancestral noise fraction (res_multistep_ancestral: 1)", {}, 0, 100}, s_noise},
       function_sampler(sample_res_multistep, Endpoints::Runner), {}, {"eta"}},
      {"res_multistep_ancestral", "RES second-order multistep to sigma_down, then ancestral noise. 1 NFE/step",
       {{"eta", OptionType::Number, "1", "ancestral noise fraction", {}, 0, 100}, s_noise},
       function_sampler(sample_res_multistep, Endpoints::Runner), {}, {"eta"}},
  };
}

}  // namespace scorch
