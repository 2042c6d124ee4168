// DEIS (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential Integrator"),
// its tAB form as ComfyUI's `deis` (deis_mode tab): the exponential integrator in VE variables
// y = x / alpha, s(t) = sigma(t) / alpha(t), where the PF-ODE is dy/dt = s'(t) eps, with eps
// extrapolated by the Lagrange polynomial in time t through the last k = min(max_order, i + 1)
// grid points:
//   y_{i+1} = y_i + sum_{j < k} C_{ij} eps_{i-j},
//   C_{ij} = integral from t_i to t_{i+1} of s'(tau) prod_{m < k, m != j} (tau - t_{i-m}) / (t_{i-j} - t_{i-m}) dtau,
// the "time-integrated exponential coefficients" (order 1 is DDIM). s'(tau) is not a
// polynomial: the integral is taken by 8 Gauss-Legendre panels of 4 nodes. The runner steps
// at alpha = 0 and sigma = 0 (flow's endpoints). One NFE per step.
#include <ATen/ATen.h>

#include <cmath>
#include <deque>

#include "scorch/error.h"
#include "scorch/sampler.h"

namespace scorch {

namespace {

// d(sigma / alpha) / dt from the schedule's derivatives.
double ds_dt(const Schedule& ns, double t) {
  const double a = ns.alpha(t);
  return (ns.d_sigma(t) * a - ns.sigma(t) * ns.d_alpha(t)) / (a * a);
}

double deis_coefficient(const Schedule& ns, const std::vector<double>& t, int i, int j, int k) {
  return gauss_legendre(
      [&](double tau) {
        double l = 1.0;
        for (int m = 0; m < k; ++m)
          if (m != j) l *= (tau - t[size_t(i - m)]) / (t[size_t(i - j)] - t[size_t(i - m)]);
        return ds_dt(ns, tau) * l;
      },
      t[size_t(i)], t[size_t(i) + 1]);
}

at::Tensor sample_deis(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const int order = int(o.integer("max_order"));
  if (order < 1 || order > 3) bad_input("sampler.max_order: deis takes orders 1 to 3, got " + o.text("max_order"));
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const int n = grid.steps();
  std::deque<at::Tensor> eps;  // eps_i, eps_{i-1}, ...
  for (int i = 0; i < n; ++i) {
    eps.push_front(ctx.denoise(x, t[size_t(i)]).eps);
    if (int(eps.size()) > order) eps.pop_back();
    const int k = int(eps.size());
    const double to = ns.alpha(t[size_t(i) + 1]);
    std::vector<std::pair<double, at::Tensor>> terms = {{to / ns.alpha(t[size_t(i)]), x}};
    for (int j = 0; j < k; ++j) terms.emplace_back(to * deis_coefficient(ns, t, i, j, k), eps[size_t(j)]);
    x = ctx.end_step(i + 1, n, t[size_t(i) + 1], lincomb(terms));
  }
  return x;
}

}  // namespace

std::vector<SamplerEntry> deis_rows() {
  return {{"deis", "DEIS tAB (Zhang & Chen 2023): eps extrapolated in time, time-integrated exponential "
                   "coefficients, orders 1-3. 1 NFE/step",
           {{"max_order", OptionType::Int, "3", "highest order (1: DDIM)", {}, 1, 4}},
           function_sampler(sample_deis, Endpoints::Runner)}};
}

}  // namespace scorch
