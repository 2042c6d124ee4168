// LMS: the linear multistep method of k-diffusion's `sample_lms` (ComfyUI's `lms`), on the
// PF-ODE in the OdeFrame's coordinates (VE: y = x / alpha, s = sigma / alpha, dy/ds = eps;
// flow: x and t with the velocity). With d_i = dy/ds at step i and k = min(order, i + 1):
//   y_{i+1} = y_i + sum_{j < k} c_{ij} d_{i-j},
//   c_{ij} = integral from s_i to s_{i+1} of prod_{m < k, m != j} (s - s_{i-m}) / (s_{i-j} - s_{i-m}) ds,
// the integral of the Lagrange polynomial through the last k points of the grid (Adams-
// Bashforth on the actual, unequal steps; k-diffusion integrates it with scipy's quad, here
// Gauss-Legendre with 4 nodes, exact for these polynomials of degree <= 3). One NFE per step.
#include <ATen/ATen.h>

#include <cmath>
#include <deque>

#include "scorch/error.h"
#include "scorch/sampler.h"

namespace scorch {

// c_{ij} above for the grid s (decreasing or not), step i, history j, k points.
double lms_coefficient(const std::vector<double>& s, int i, int j, int k) {
  // one panel of 4 nodes: exact for the polynomial of degree k - 1 <= 3
  return gauss_legendre(
      [&](double tau) {
        double p = 1.0;
        for (int m = 0; m < k; ++m)
          if (m != j) p *= (tau - s[size_t(i - m)]) / (s[size_t(i - j)] - s[size_t(i - m)]);
        return p;
      },
      s[size_t(i)], s[size_t(i) + 1], 1);
}

namespace {

at::Tensor sample_lms(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const int order = int(o.integer("order"));
  if (order < 1 || order > 4) bad_input("sampler.order: lms takes orders 1 to 4, got " + o.text("order"));
  const OdeFrame f{ctx.schedule()};
  const std::vector<double>& t = grid.t;
  const int n = grid.steps();
  std::vector<double> s(t.size());
  for (size_t i = 0; i < t.size(); ++i) s[i] = f.s(t[i]);
  std::deque<at::Tensor> d;  // d_i, d_{i-1}, ...
  for (int i = 0; i < n; ++i) {
    d.push_front(f.dy(ctx.denoise(x, t[size_t(i)]), t[size_t(i)]));
    if (int(d.size()) > order) d.pop_back();
    const int k = int(d.size());
    const double to = f.scale(t[size_t(i) + 1]);
    std::vector<std::pair<double, at::Tensor>> terms = {{to / f.scale(t[size_t(i)]), x}};
    for (int j = 0; j < k; ++j) terms.emplace_back(to * lms_coefficient(s, i, j, k), d[size_t(j)]);
    x = ctx.end_step(i + 1, n, t[size_t(i) + 1], lincomb(terms));
  }
  return x;
}

}  // namespace

std::vector<SamplerEntry> lms_rows() {
  return {{"lms", "Linear multistep (k-diffusion's sample_lms): Adams-Bashforth on the actual grid, up to order 4. 1 NFE/step",
           {{"order", OptionType::Int, "4", "highest order (1: euler)", {}, 1, 4}},
           function_sampler(sample_lms, Endpoints::InTime), {}, {}, "flow_match"}};
}

}  // namespace scorch
