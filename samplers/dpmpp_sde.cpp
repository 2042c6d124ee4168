// SDE-DPM-Solver++ 2M and 3M (Lu et al. 2022, arXiv 2211.01095, sec. 5; the 2M/3M SDE
// forms of k-diffusion's sample_dpmpp_2m_sde / sample_dpmpp_3m_sde), written for x_t
// in the VP form. With h = lambda_t - lambda_s, eta h the extra decay and D = x0:
//   x_t = (sigma_t/sigma_s) e^{-eta h} x_s + alpha_t (1 - e^{-(1+eta) h}) D_s + corrections
//         + sigma_t sqrt(1 - e^{-2 eta h}) s_noise z.
// eta = 0 is the deterministic DPM-Solver++(2M) / (3M).
#include <ATen/ATen.h>

#include <cmath>

#include "scorch/sampler.h"

namespace scorch {

namespace {

// The scalars of one SDE step from s to t: h, eta h, h_eta = (1 + eta) h, and the
// first-order part x_t = a x_s + b D_s with a = (sigma_t/sigma_s) e^{-eta h}, b = alpha_t (1 - e^{-h_eta}).
struct SdeStep {
  double h, eta_h, h_eta, alpha_t, sigma_t, a, b;
  SdeStep(const Schedule& ns, double s, double t, double eta)
      : h(ns.lambda(t) - ns.lambda(s)),
        eta_h(eta * h),
        h_eta(h + eta_h),
        alpha_t(ns.alpha(t)),
        sigma_t(ns.sigma(t)),
        a(sigma_t / ns.sigma(s) * std::exp(-eta_h)),
        b(-alpha_t * std::expm1(-h_eta)) {}
};

// Adds the noise term of the SDE step from s to t.
at::Tensor add_noise(SamplerContext& ctx, at::Tensor x, double s, double t, double sigma_t, double eta_h,
                     double s_noise) {
  if (eta_h == 0.0) return x;
  return x.add_(ctx.noise_between(x, s, t), sigma_t * std::sqrt(-std::expm1(-2.0 * eta_h)) * s_noise);
}

}  // namespace

// 2M: with r = h_last / h and the previous data prediction D_prev,
//   midpoint: + 1/2 alpha_t (1 - e^{-h_eta}) (1/r) (D - D_prev)
//   heun:     + alpha_t ((1 - e^{-h_eta}) / (-h_eta) + 1) (1/r) (D - D_prev),   h_eta = (1 + eta) h.
at::Tensor sample_dpmpp_2m_sde(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const double eta = o.number("eta"), s_noise = o.number("s_noise");
  const bool heun = o.str("solver_type") == "heun";
  const int n = grid.steps();
  at::Tensor d_prev;
  double h_last = 0.0;
  for (int i = 0; i < n; ++i) {
    const at::Tensor d = ctx.denoise(x, t[i]).x0;
    const SdeStep st(ns, t[i], t[i + 1], eta);
    const double h = st.h, h_eta = st.h_eta, a = st.a, b = st.b, alpha_t = st.alpha_t;
    if (!d_prev.defined()) {
      x = lincomb({{a, x}, {b, d}});
    } else {
      const double r = h_last / h;
      const double c = (heun ? alpha_t * (-std::expm1(-h_eta) / (-h_eta) + 1.0) : 0.5 * b) / r;
      x = lincomb({{a, x}, {b + c, d}, {-c, d_prev}});
    }
    x = add_noise(ctx, x, t[i], t[i + 1], st.sigma_t, st.eta_h, s_noise);
    d_prev = d;
    h_last = h;
    x = ctx.end_step(i + 1, n, t[i + 1], x);
  }
  return x;
}

// 3M: with r0 = h_1/h, r1 = h_2/h (the last two step sizes),
//   d1_0 = (D - D_1)/r0, d1_1 = (D_1 - D_2)/r1, d1 = d1_0 + (d1_0 - d1_1) r0/(r0 + r1),
//   d2 = (d1_0 - d1_1)/(r0 + r1), phi2 = (e^{-h_eta} - 1)/h_eta + 1, phi3 = phi2/h_eta - 1/2:
//   + alpha_t (phi2 d1 - phi3 d2); with one previous output, + alpha_t phi2 (D - D_1)/r0.
at::Tensor sample_dpmpp_3m_sde(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const double eta = o.number("eta"), s_noise = o.number("s_noise");
  const int n = grid.steps();
  at::Tensor d1, d2;  // the previous two data predictions
  double h1 = 0.0, h2 = 0.0;
  for (int i = 0; i < n; ++i) {
    const at::Tensor d = ctx.denoise(x, t[i]).x0;
    const SdeStep st(ns, t[i], t[i + 1], eta);
    const double h = st.h, h_eta = st.h_eta, a = st.a, b = st.b, alpha_t = st.alpha_t;
    const double phi2 = std::expm1(-h_eta) / h_eta + 1.0, phi3 = phi2 / h_eta - 0.5;
    if (d2.defined()) {
      const double r0 = h1 / h, r1 = h2 / h, k = r0 / (r0 + r1);
      // expand alpha_t (phi2 d1 - phi3 d2) over D, D_1, D_2
      const double p2 = alpha_t * phi2, p3 = -alpha_t * phi3;
      const double c0 = p2 * (1 + k) / r0 + p3 / r0 / (r0 + r1);
      const double c1 = p2 * (-(1 + k) / r0 - k / r1) + p3 * (-1 / r0 - 1 / r1) / (r0 + r1);
      const double c2 = p2 * k / r1 + p3 / r1 / (r0 + r1);
      x = lincomb({{a, x}, {b + c0, d}, {c1, d1}, {c2, d2}});
    } else if (d1.defined()) {
      const double c = alpha_t * phi2 / (h1 / h);
      x = lincomb({{a, x}, {b + c, d}, {-c, d1}});
    } else {
      x = lincomb({{a, x}, {b, d}});
    }
    x = add_noise(ctx, x, t[i], t[i + 1], st.sigma_t, st.eta_h, s_noise);
    d2 = d1;
    d1 = d;
    h2 = h1;
    h1 = h;
    x = ctx.end_step(i + 1, n, t[i + 1], x);
  }
  return x;
}

namespace {

const Schema kSde = {
    {"eta", OptionType::Number, "1", "SDE noise: 0 is the ODE solver", {}, 0, 100},
    {"s_noise", OptionType::Number, "1", "scale of the added noise", {}, 0, 100},
};

}  // namespace

std::vector<SamplerEntry> dpmpp_sde_rows() {
  Schema two_m = kSde;
  two_m.push_back({"solver_type", OptionType::String, "midpoint", "second-order term", {"midpoint", "heun"}});
  return {
      {"dpmpp_2m_sde", "SDE-DPM-Solver++(2M) (eta, solver_type midpoint | heun). 1 NFE/step", two_m,
       function_sampler(sample_dpmpp_2m_sde), {}, {"eta"}},
      {"dpmpp_3m_sde", "SDE-DPM-Solver++(3M) (eta). 1 NFE/step", kSde, function_sampler(sample_dpmpp_3m_sde), {},
       {"eta"}},
  };
}

}  // namespace scorch
