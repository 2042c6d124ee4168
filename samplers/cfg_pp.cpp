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

}  // namespace

at::Tensor sample_euler_cfg_pp(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options&) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const int n = int(t.size()) - 1;
  for (int i = 0; i < n; ++i) {
    const Prediction p = ctx.denoise(x, t[i]);
    const at::Tensor eps_u = (x - ns.alpha(t[i]) * uncond_x0(p)) / ns.sigma(t[i]);
    x = ctx.end_step(i + 1, n, t[i + 1], lincomb({{ns.alpha(t[i + 1]), p.x0}, {ns.sigma(t[i + 1]), eps_u}}));
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
    const at::Tensor eps_u = (x - ns.alpha(t[i]) * x0_u) / ns.sigma(t[i]);
    const double a_next = ns.alpha(t[i + 1]), s_next = ns.sigma(t[i + 1]);
    at::Tensor x_next;
    if (old_u.defined() && s_next > 0.0) {
      const double h = ns.lambda(t[i + 1]) - ns.lambda(t[i]), h_last = ns.lambda(t[i]) - ns.lambda(t[i - 1]);
      const double r = h_last / h;
      x_next = lincomb({{a_next, p.x0}, {s_next, eps_u}, {-a_next * std::expm1(-h) / (2.0 * r), p.x0},
                        {a_next * std::expm1(-h) / (2.0 * r), old_u}});
    } else {
      x_next = lincomb({{a_next, p.x0}, {s_next, eps_u}});
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
