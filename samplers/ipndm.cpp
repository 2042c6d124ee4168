// iPNDM (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator",
// the improved pseudo numerical method of their Sec. 5; ComfyUI's `ipndm`): a linear
// multistep (Adams-Bashforth) method on the PF-ODE in the OdeFrame's coordinates: VE
// variables x~ = x / alpha, sigma~ = sigma / alpha, where dx~/dsigma~ = eps(x, t) (on flow:
// x and t, with the velocity). With d_i = eps(x_i, t_i) and
// k = min(max_order, i + 1) (lower orders while the history fills):
//   x~_{i+1} = x~_i + (sigma~_{i+1} - sigma~_i) sum_j b^k_j d_{i-j},
//   b^1 = (1), b^2 = (3, -1)/2, b^3 = (23, -16, 5)/12, b^4 = (55, -59, 37, -9)/24,
// the coefficients of equal steps, used on any grid as the method does. One NFE per step.
#include <ATen/ATen.h>

#include <deque>

#include "scorch/error.h"
#include "scorch/sampler.h"

namespace scorch {

namespace {

at::Tensor sample_ipndm(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  static const std::vector<std::vector<double>> b = {
      {1.0}, {1.5, -0.5}, {23.0 / 12, -16.0 / 12, 5.0 / 12}, {55.0 / 24, -59.0 / 24, 37.0 / 24, -9.0 / 24}};
  const int max_order = int(o.integer("max_order"));
  if (max_order < 1 || max_order > 4) bad_input("sampler.max_order: expected 1 to 4, got " + o.text("max_order"));
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const int n = grid.steps();
  const OdeFrame f{ns};
  std::deque<at::Tensor> d;  // d_i, d_{i-1}, ...
  for (int i = 0; i < n; ++i) {
    d.push_front(f.dy(ctx.denoise(x, t[i]), t[i]));
    if (int(d.size()) > max_order) d.pop_back();
    const std::vector<double>& bk = b[d.size() - 1];
    const double h = f.s(t[i + 1]) - f.s(t[i]);
    const double to = f.scale(t[i + 1]);
    std::vector<std::pair<double, at::Tensor>> terms = {{to / f.scale(t[i]), x}};
    for (size_t j = 0; j < d.size(); ++j) terms.emplace_back(to * h * bk[j], d[j]);
    x = ctx.end_step(i + 1, n, t[i + 1], lincomb(terms));
  }
  return x;
}

}  // namespace

std::vector<SamplerEntry> ipndm_rows() {
  return {{"ipndm", "iPNDM (Zhang & Chen 2023): Adams-Bashforth up to order 4 on eps in VE variables. 1 NFE/step",
           {{"max_order", OptionType::Int, "4", "highest Adams-Bashforth order (1: euler)", {}, 1, 4}},
           function_sampler(sample_ipndm, Endpoints::InTime), {}, {}, "flow_match"}};
}

}  // namespace scorch
