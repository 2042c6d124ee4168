// DDIM, Euler, Euler ancestral and Heun.
//
// Notation (DPM-Solver): a step goes from s = t_i to t = t_{i+1}, h = lambda_t - lambda_s > 0.
// The k-diffusion samplers work in VE variables x~ = x / alpha and sigma~ = sigma / alpha,
// where the PF-ODE is dx~/dsigma~ = (x~ - D(x~, sigma~)) / sigma~ = eps.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "scorch/sampler.h"

namespace scorch {

// DDIM (Song et al. 2021, eq. 12):
//   x_t = alpha_t x0_s + sqrt(sigma_t^2 - c^2) eps_s + c z,   c = eta sigma_t sqrt(1 - e^{-2h}).
// With eta = 0 this is DPM-Solver-1: x_t = (alpha_t/alpha_s) x_s - sigma_t (e^h - 1) eps_s.
at::Tensor sample_ddim(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const double eta = o.number("eta");
  const int n = int(t.size()) - 1;
  for (int i = 0; i < n; ++i) {
    const double s = t[i], tt = t[i + 1];
    const double h = ns.lambda(tt) - ns.lambda(s);
    const Prediction p = ctx.denoise(x, s);
    const double sigma_t = ns.sigma(tt), alpha_t = ns.alpha(tt);
    if (eta == 0.0) {
      x = lincomb({{std::exp(ns.log_alpha(tt) - ns.log_alpha(s)), x}, {-sigma_t * std::expm1(h), p.eps}});
    } else {
      const double c = eta * sigma_t * std::sqrt(-std::expm1(-2.0 * h));
      x = alpha_t * p.x0 + std::sqrt(std::max(0.0, sigma_t * sigma_t - c * c)) * p.eps + c * ctx.noise_between(x, s, tt);
    }
    x = ctx.end_step(i + 1, n, tt, x);
  }
  return x;
}

namespace {

// Karras et al. (2022) Alg. 2, lines 4-6: raise the noise level from sigma~ to
// sigma_hat = sigma~ (1 + gamma) by adding fresh noise. Returns the time of sigma_hat.
double churn(SamplerContext& ctx, at::Tensor& xv, double t, double sigma, int n, const Options& o,
             double* sigma_hat) {
  const double gamma = (o.number("s_tmin") <= sigma && sigma <= o.number("s_tmax"))
                           ? std::min(o.number("s_churn") / n, std::sqrt(2.0) - 1.0)
                           : 0.0;
  *sigma_hat = sigma * (1.0 + gamma);
  if (gamma <= 0.0) return t;
  xv = xv + std::sqrt(*sigma_hat * *sigma_hat - sigma * sigma) * o.number("s_noise") * ctx.noise_like(xv);
  return ctx.schedule().t_of_ve_sigma(*sigma_hat);
}

}  // namespace

namespace {

// Karras et al. (2022), Alg. 2 in VE variables: after the churn,
//   Euler: x~_{i+1} = x~_hat + (sigma~_{i+1} - sigma_hat) eps(x~_hat, sigma_hat)
//   Heun:  the same predictor x~', then the trapezoidal corrector
//          x~_{i+1} = x~_hat + (sigma~_{i+1} - sigma_hat) (eps(x~_hat, sigma_hat) + eps(x~', sigma~_{i+1})) / 2.
at::Tensor karras_alg2(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o, bool heun) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const int n = int(t.size()) - 1;
  at::Tensor xv = x / ns.alpha(t[0]);
  for (int i = 0; i < n; ++i) {
    double sigma_hat;
    const double t_hat = churn(ctx, xv, t[i], ns.ve_sigma(t[i]), n, o, &sigma_hat);
    const double dt = ns.ve_sigma(t[i + 1]) - sigma_hat;
    const at::Tensor d = ctx.denoise(ns.alpha(t_hat) * xv, t_hat).eps;
    if (heun) {
      const at::Tensor d2 = ctx.denoise(ns.alpha(t[i + 1]) * lincomb({{1.0, xv}, {dt, d}}), t[i + 1]).eps;
      xv = lincomb({{1.0, xv}, {0.5 * dt, d}, {0.5 * dt, d2}});
    } else {
      xv = lincomb({{1.0, xv}, {dt, d}});
    }
    xv = ctx.end_step(i + 1, n, t[i + 1], ns.alpha(t[i + 1]) * xv) / ns.alpha(t[i + 1]);
  }
  return ns.alpha(t[n]) * xv;
}

}  // namespace

at::Tensor sample_euler(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  return karras_alg2(ctx, x, grid, o, /*heun=*/false);
}

at::Tensor sample_heun(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  return karras_alg2(ctx, x, grid, o, /*heun=*/true);
}

// Euler ancestral (k-diffusion): an Euler step down to sigma_down, then fresh
// noise of size sigma_up, with sigma_up = min(sigma', eta sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2))
// and sigma_down = sqrt(sigma'^2 - sigma_up^2).
at::Tensor sample_euler_ancestral(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const double eta = o.number("eta"), s_noise = o.number("s_noise");
  const int n = int(t.size()) - 1;
  at::Tensor xv = x / ns.alpha(t[0]);
  for (int i = 0; i < n; ++i) {
    const double sigma = ns.ve_sigma(t[i]), sigma_next = ns.ve_sigma(t[i + 1]);
    const double sigma_up = std::min(
        sigma_next, eta * std::sqrt(sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) / (sigma * sigma)));
    const double sigma_down = std::sqrt(sigma_next * sigma_next - sigma_up * sigma_up);
    const Prediction p = ctx.denoise(x, t[i]);
    xv = xv + (sigma_down - sigma) * p.eps;
    if (sigma_up > 0.0) xv = xv + sigma_up * s_noise * ctx.noise_between(xv, t[i], t[i + 1]);
    x = ctx.end_step(i + 1, n, t[i + 1], ns.alpha(t[i + 1]) * xv);
    xv = x / ns.alpha(t[i + 1]);
  }
  return x;
}

namespace {

const Schema kChurn = {
    {"s_churn", OptionType::Number, "0", "stochasticity (Karras et al. 2022, Alg. 2)", {}},
    {"s_tmin", OptionType::Number, "0", "churn only where s_tmin <= sigma/alpha", {}},
    {"s_tmax", OptionType::Number, "inf", "churn only where sigma/alpha <= s_tmax", {}},
    {"s_noise", OptionType::Number, "1", "scale of the added noise", {}},
};

}  // namespace

std::vector<SamplerEntry> ddim_euler_rows() {
  return {
      {"ddim", "DDIM (Song et al. 2021); eta = 0 is DPM-Solver-1. 1 NFE/step",
       {{"eta", OptionType::Number, "0", "stochasticity: 0 deterministic, 1 DDPM-like", {}}},
       function_sampler(sample_ddim), {}, {"eta"}},
      {"euler", "Euler on the PF-ODE in sigma = sigma/alpha (k-diffusion). 1 NFE/step", kChurn,
       function_sampler(sample_euler), {}, {"s_churn"}},
      {"euler_ancestral", "Euler with ancestral noise (k-diffusion). 1 NFE/step",
       {{"eta", OptionType::Number, "1", "ancestral noise fraction", {}},
        {"s_noise", OptionType::Number, "1", "scale of the added noise", {}}},
       function_sampler(sample_euler_ancestral), {}, {"eta"}},
      {"heun", "Heun's 2nd order method (Karras et al. 2022, Alg. 2). 2 NFE/step", kChurn,
       function_sampler(sample_heun), {}, {"s_churn"}},
  };
}

}  // namespace scorch
