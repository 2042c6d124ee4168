// CFG++ (Chung et al. 2024): classifier-free guidance whose re-noising uses the
// unconditional prediction, as ComfyUI's euler_cfg_pp and dpmpp_2m_cfg_pp. The guided data
// prediction is D = x0_u + s (x0_c - x0_u) (guidance.scale s; the paper's lambda, in [0, 1]),
// and eps_u = (x - alpha x0_u) / sigma the unconditional noise. Without classifier-free
// guidance (x0_u = D) they are DDIM and DPM-Solver++(2M).
//
// euler_cfg_pp (in x; k-diffusion's x' = D + sigma' d(x, x0_u) in VE variables):
//   x' = alpha' D + sigma' eps_u
// dpmpp_2m_cfg_pp (VE variables y = x / alpha, h = lambda' - lambda, r = h_last / h):
//   y' = D + e^{-h} (y - x0_u) - expm1(-h) / (2r) (D - x0_u,prev),
// first order (without the last term) at the first step and into sigma' = 0; in x:
//   x' = alpha' D + sigma' eps_u - alpha' expm1(-h) / (2r) (D - x0_u,prev).
// Both step at flow's endpoints themselves (eps_u is finite at alpha = 0).
#include <ATen/ATen.h>

#include <cmath>

#include "scorch/sampler.h"

namespace scorch {

namespace {

at::Tensor uncond_x0(const Prediction& p) { return p.x0_uncond.defined() ? p.x0_uncond : p.x0; }

// The step as one pass on x: eps_u = (x - alpha x0_u) / sigma is folded into the terms, and
// x0_u's coefficient joins D's when they are one tensor (no guidance).
at::Tensor step(const at::Tensor& x, double x_coef, const at::Tensor& d, double d_coef, const at::Tensor& x0_u,
                double u_coef, const at::Tensor& old_u = {}, double old_coef = 0.0) {
  std::vector<std::pair<double, at::Tensor>> terms = {{x_coef, x}};
  if (x0_u.is_same(d)) {
    terms.emplace_back(d_coef + u_coef, d);
  } else {
    terms.emplace_back(d_coef, d);
    terms.emplace_back(u_coef, x0_u);
  }
  if (old_u.defined()) terms.emplace_back(old_coef, old_u);
  return lincomb(terms);
}

}  // namespace

at::Tensor sample_euler_cfg_pp(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options&) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const int n = int(t.size()) - 1;
  for (int i = 0; i < n; ++i) {
    const Prediction p = ctx.denoise(x, t[i]);
    // x' = alpha' D + sigma' (x - alpha x0_u) / sigma
    const double k = ns.sigma(t[i + 1]) / ns.sigma(t[i]);
    x = ctx.end_step(i + 1, n, t[i + 1], step(x, k, p.x0, ns.alpha(t[i + 1]), uncond_x0(p), -k * ns.alpha(t[i])));
  }
  return x;
}

at::Tensor sample_dpmpp_2m_cfg_pp(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options&) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const int n = int(t.size()) - 1;
  at::Tensor old_u;
  for (int i = 0; i < n; ++i) {
    const Prediction p = ctx.denoise(x, t[i]);
    const at::Tensor x0_u = uncond_x0(p);
    const double a_next = ns.alpha(t[i + 1]), s_next = ns.sigma(t[i + 1]), k = s_next / ns.sigma(t[i]);
    at::Tensor x_next;
    if (old_u.defined() && s_next > 0.0) {
      const double h = ns.lambda(t[i + 1]) - ns.lambda(t[i]), h_last = ns.lambda(t[i]) - ns.lambda(t[i - 1]);
      const double c = a_next * std::expm1(-h) / (2.0 * (h_last / h));
      x_next = step(x, k, p.x0, a_next - c, x0_u, -k * ns.alpha(t[i]), old_u, c);
    } else {
      x_next = step(x, k, p.x0, a_next, x0_u, -k * ns.alpha(t[i]));
    }
    old_u = x0_u;
    x = ctx.end_step(i + 1, n, t[i + 1], x_next);
  }
  return x;
}

std::vector<SamplerEntry> cfg_pp_rows() {
  return {
      {"euler_cfg_pp", "CFG++ Euler (Chung et al. 2024): the guided x0, re-noised with the unconditional eps. 1 NFE/step",
       {}, function_sampler(sample_euler_cfg_pp, Endpoints::Own), {}, {}, "flow_match"},
      {"dpmpp_2m_cfg_pp", "CFG++ DPM-Solver++(2M): the multistep correction against the previous unconditional x0. "
                          "1 NFE/step",
       {}, function_sampler(sample_dpmpp_2m_cfg_pp, Endpoints::Own)},
  };
}

}  // namespace scorch
