// DDIM (and DDPM, its eta = 1), Euler, Euler ancestral, Heun, DPM-Solver-2 and its ancestral
// form (k-diffusion's dpm_2, dpm_2_ancestral).
//
// Notation (DPM-Solver): a step goes from s = t_i to t = t_{i+1}, h = lambda_t - lambda_s > 0.
// The k-diffusion samplers work in the coordinates of OdeFrame (sampler.h): VE variables
// x~ = x / alpha and sigma~ = sigma / alpha, where the PF-ODE is dx~/dsigma~ = eps, or on
// a flow schedule t and x, where dx/dt is the velocity. DDIM and Euler ancestral step from
// alpha = 0 and to sigma = 0 themselves; Euler and Heun on flow (sampler.h, Endpoints).
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
    // The noise-prediction form divides by alpha_s and multiplies sigma_t by e^h: at flow's
    // endpoints (alpha_s = 0 or sigma_t = 0) only the data form is finite.
    if (eta == 0.0 && ns.alpha(s) > 0.0 && sigma_t > 0.0) {
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
// sigma_hat = sigma~ (1 + gamma) (VE) by adding fresh noise. In x: x_hat = (alpha_hat / alpha) x
// + alpha_hat sqrt(sigma_hat^2 - sigma~^2) z. Returns the time of sigma_hat.
double churn(SamplerContext& ctx, at::Tensor& x, double t, int n, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const double sigma = ns.ve_sigma(t);
  const double gamma = (o.number("s_tmin") <= sigma && sigma <= o.number("s_tmax"))
                           ? std::min(o.number("s_churn") / n, std::sqrt(2.0) - 1.0)
                           : 0.0;
  if (gamma <= 0.0 || !std::isfinite(sigma)) return t;
  const double sigma_hat = sigma * (1.0 + gamma), t_hat = ns.t_of_ve_sigma(sigma_hat);
  const double a = ns.alpha(t_hat);
  x = lincomb({{a / ns.alpha(t), x},
               {a * std::sqrt(sigma_hat * sigma_hat - sigma * sigma) * o.number("s_noise"), ctx.noise_like(x)}});
  return t_hat;
}

}  // namespace

namespace {

// Karras et al. (2022), Alg. 2 in the OdeFrame's y and s (VE: x~ and sigma~; flow: x and t),
// after the churn, with d = dy/ds:
//   Euler: y_{i+1} = y_hat + (s_{i+1} - s_hat) d(y_hat, s_hat)
//   Heun:  the same predictor y', then the trapezoidal corrector
//          y_{i+1} = y_hat + (s_{i+1} - s_hat) (d(y_hat, s_hat) + d(y', s_{i+1})) / 2,
//          except into sigma = 0 (flow's t = 0), where Euler is taken (as k-diffusion does).
at::Tensor karras_alg2(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o, bool heun) {
  const OdeFrame f{ctx.schedule()};
  const std::vector<double>& t = grid.t;
  const int n = int(t.size()) - 1;
  for (int i = 0; i < n; ++i) {
    const double t_hat = churn(ctx, x, t[i], n, o);
    at::Tensor x_next;
    if (heun) {
      x_next = heun_step(ctx, x, t_hat, t[i + 1]);
    } else {
      const at::Tensor d = f.dy(ctx.denoise(x, t_hat), t_hat);
      x_next = f.x(lincomb({{1.0, f.y(x, t_hat)}, {f.s(t[i + 1]) - f.s(t_hat), d}}), t[i + 1]);
    }
    x = ctx.end_step(i + 1, n, t[i + 1], x_next);
  }
  return x;
}

}  // namespace

at::Tensor heun_step(SamplerContext& ctx, const at::Tensor& x, double t_a, double t_b) {
  const OdeFrame f{ctx.schedule()};
  const double ds = f.s(t_b) - f.s(t_a);
  const at::Tensor y = f.y(x, t_a);
  const at::Tensor d = f.dy(ctx.denoise(x, t_a), t_a);
  at::Tensor y_next = lincomb({{1.0, y}, {ds, d}});
  if (ctx.schedule().sigma(t_b) > 0.0) {
    const at::Tensor d2 = f.dy(ctx.denoise(f.x(y_next, t_b), t_b), t_b);
    y_next = lincomb({{1.0, y}, {0.5 * ds, d}, {0.5 * ds, d2}});
  }
  return f.x(y_next, t_b);
}

// DPM-Solver-2 as k-diffusion's `sample_dpm_2` writes it (Karras et al. 2022's churn, then a
// midpoint step): with s_mid = exp((log s_hat + log s_{i+1}) / 2), the geometric mean,
//   y' = y_hat + (s_mid - s_hat) d(y_hat, s_hat),   y_{i+1} = y_hat + (s_{i+1} - s_hat) d(y', s_mid),
// and Euler into s = 0 (flow's t = 0). In the OdeFrame's y and s. 2 NFE per step.
at::Tensor sample_dpm_2(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const OdeFrame f{ns};
  const std::vector<double>& t = grid.t;
  const int n = int(t.size()) - 1;
  for (int i = 0; i < n; ++i) {
    const double t_hat = churn(ctx, x, t[i], n, o);
    const double s_hat = f.s(t_hat), s_next = f.s(t[i + 1]);
    const at::Tensor y = f.y(x, t_hat);
    const at::Tensor d = f.dy(ctx.denoise(x, t_hat), t_hat);
    at::Tensor y_next;
    if (ns.sigma(t[i + 1]) > 0.0) {
      const double s_mid = std::exp(0.5 * (std::log(s_hat) + std::log(s_next)));
      const double t_mid = ns.integrates_in_time() ? s_mid : ns.t_of_ve_sigma(s_mid);
      const at::Tensor y_mid = lincomb({{1.0, y}, {s_mid - s_hat, d}});
      const at::Tensor d_mid = f.dy(ctx.denoise(f.x(y_mid, t_mid), t_mid), t_mid);
      y_next = lincomb({{1.0, y}, {s_next - s_hat, d_mid}});
    } else {
      y_next = lincomb({{1.0, y}, {s_next - s_hat, d}});
    }
    x = ctx.end_step(i + 1, n, t[i + 1], f.x(y_next, t[i + 1]));
  }
  return x;
}

at::Tensor sample_euler(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  return karras_alg2(ctx, x, grid, o, /*heun=*/false);
}

at::Tensor sample_heun(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  return karras_alg2(ctx, x, grid, o, /*heun=*/true);
}

// Euler ancestral (k-diffusion): an Euler step down to sigma_down, then fresh noise of size
// sigma_up, with sigma_up = min(sigma', eta sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)) and
// sigma_down = sqrt(sigma'^2 - sigma_up^2), in VE sigma. Since sigma'/sigma = e^{-h} there, the
// same step in x, finite at flow's endpoints, is
//   x_t = alpha_t x0 + sqrt(sigma_t^2 - c^2) eps + s_noise c z,  c = min(sigma_t, eta sigma_t sqrt(1 - e^{-2h})).
at::Tensor sample_euler_ancestral(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const double eta = o.number("eta"), s_noise = o.number("s_noise");
  const int n = int(t.size()) - 1;
  for (int i = 0; i < n; ++i) {
    const double h = ns.lambda(t[i + 1]) - ns.lambda(t[i]);
    const double alpha_t = ns.alpha(t[i + 1]), sigma_t = ns.sigma(t[i + 1]);
    const double c = std::min(sigma_t, eta * sigma_t * std::sqrt(-std::expm1(-2.0 * h)));
    const Prediction p = ctx.denoise(x, t[i]);
    x = lincomb({{alpha_t, p.x0}, {std::sqrt(sigma_t * sigma_t - c * c), p.eps}});
    if (c > 0.0) x = x + c * s_noise * ctx.noise_between(x, t[i], t[i + 1]);
    x = ctx.end_step(i + 1, n, t[i + 1], x);
  }
  return x;
}

// DPM-Solver-2 ancestral (k-diffusion's sample_dpm_2_ancestral), in VE variables y = x/alpha,
// s = sigma/alpha: with s_down, s_up the ancestral split of s -> s' (ancestral_step), the
// midpoint step of dpm_2 from s down to s_down (at the geometric mean s_mid = sqrt(s s_down)),
//   y' = y + (s_mid - s) d(y, s),   y_down = y + (s_down - s) d(y', s_mid),
// then fresh noise: y_{i+1} = y_down + s_noise s_up z. 2 NFE per step (1 into s' = 0). The
// runner steps at alpha = 0 and sigma = 0 (flow's endpoints).
at::Tensor sample_dpm_2_ancestral(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const double eta = o.number("eta"), s_noise = o.number("s_noise");
  const int n = int(t.size()) - 1;
  for (int i = 0; i < n; ++i) {
    const double s = ns.ve_sigma(t[i]), s_next = ns.ve_sigma(t[i + 1]);
    const auto [s_down, s_up] = ancestral_step(s, s_next, eta);
    const Prediction p = ctx.denoise(x, t[i]);
    const double a = ns.alpha(t[i]);
    const at::Tensor y = x / a;
    // d = dy/ds = (y - x0) / s = eps
    at::Tensor y_next;
    if (s_down > 0.0) {
      const double s_mid = std::sqrt(s * s_down), t_mid = ns.t_of_ve_sigma(s_mid);
      const at::Tensor y_mid = lincomb({{1.0, y}, {s_mid - s, p.eps}});
      const Prediction p_mid = ctx.denoise(ns.alpha(t_mid) * y_mid, t_mid);
      y_next = lincomb({{1.0, y}, {s_down - s, p_mid.eps}});
    } else {
      y_next = lincomb({{1.0, y}, {s_down - s, p.eps}});
    }
    if (s_up > 0.0) y_next = y_next + (s_noise * s_up) * ctx.noise_between(x, t[i], t[i + 1]);
    x = ctx.end_step(i + 1, n, t[i + 1], ns.alpha(t[i + 1]) * y_next);
  }
  return x;
}

namespace {

const Schema kChurn = {
    {"s_churn", OptionType::Number, "0", "stochasticity (Karras et al. 2022, Alg. 2)", {}, 0, 100},
    {"s_tmin", OptionType::Number, "0", "churn only where s_tmin <= sigma/alpha", {}, 0, 1e6},
    {"s_tmax", OptionType::Number, "inf", "churn only where sigma/alpha <= s_tmax", {}, 0, std::numeric_limits<double>::infinity()},
    {"s_noise", OptionType::Number, "1", "scale of the added noise", {}, 0, 100},
};

}  // namespace

std::vector<SamplerEntry> ddim_euler_rows() {
  return {
      {"ddim", "DDIM (Song et al. 2021); eta = 0 is DPM-Solver-1. 1 NFE/step",
       {{"eta", OptionType::Number, "0", "stochasticity: 0 deterministic, 1 DDPM-like", {}, 0, 100}},
       function_sampler(sample_ddim, Endpoints::Own), {}, {"eta"}, "flow_match"},
      {"euler", "Euler on the PF-ODE in sigma = sigma/alpha (k-diffusion; on flow: in t, FlowMatchEuler). 1 NFE/step", kChurn,
       function_sampler(sample_euler, Endpoints::InTime), {}, {"s_churn"}, "flow_match"},
      {"euler_ancestral", "Euler with ancestral noise (k-diffusion). 1 NFE/step",
       {{"eta", OptionType::Number, "1", "ancestral noise fraction", {}, 0, 100},
        {"s_noise", OptionType::Number, "1", "scale of the added noise", {}, 0, 100}},
       function_sampler(sample_euler_ancestral, Endpoints::Own), {}, {"eta"}, "flow_match"},
      {"heun", "Heun's 2nd order method (Karras et al. 2022, Alg. 2). 2 NFE/step", kChurn,
       function_sampler(sample_heun, Endpoints::InTime), {}, {"s_churn"}, "flow_match"},
      {"dpm_2", "DPM-Solver-2 as k-diffusion's sample_dpm_2: a midpoint step at the geometric mean sigma. 2 NFE/step",
       kChurn, function_sampler(sample_dpm_2, Endpoints::InTime), {}, {"s_churn"}, "flow_match"},
      {"dpm_2_ancestral", "DPM-Solver-2 to sigma_down, then ancestral noise (k-diffusion). 2 NFE/step",
       {{"eta", OptionType::Number, "1", "ancestral noise fraction", {}, 0, 100},
        {"s_noise", OptionType::Number, "1", "scale of the added noise", {}, 0, 100}},
       function_sampler(sample_dpm_2_ancestral, Endpoints::Runner), {}, {"eta"}},
      {"ddpm", "ancestral DDPM (Ho et al. 2020): the posterior q(x_t | x_s, x0) with the predicted x0, DDIM's eta = 1. "
               "1 NFE/step",
       {{"eta", OptionType::Number, "1", "stochasticity: 0 deterministic, 1 DDPM-like", {}, 0, 100}},
       function_sampler(sample_ddim, Endpoints::Own), {{"eta", "1"}}, {"eta"}, "flow_match"},
  };
}

}  // namespace scorch
