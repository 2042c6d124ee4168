// SA-Solver (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast Sampling of
// Diffusion Models"), the data-prediction predictor-corrector of its Alg. 1, as ComfyUI's
// sa_solver.
//
// Notation (DPM-Solver): lambda = log(alpha / sigma), h = lambda_{i+1} - lambda_i, D_j the data
// predictions at lambda_j, tau the stochasticity (tau = eta inside the SDE interval, 0 outside).
// Stochastic Adams predictor of order p through D_i ... D_{i-p+1} (Eq. 15):
//   x_{i+1} = (sigma_{i+1} / sigma_i) e^{-tau^2 h} x_i + sum_j b_j D_j + sigma_{i+1} sqrt(1 - e^{-2 tau^2 h}) xi,
//   b_j = alpha_{i+1} (1 + tau^2) int_{lambda_i}^{lambda_{i+1}} e^{(1 + tau^2)(lambda - lambda_{i+1})} l_j(lambda) dlambda,
// l_j the Lagrange basis through the used points. The corrector of order c (Eq. 18) redoes
// the step into lambda_{i+1} once D_{i+1} is known, with the points D_{i+1} ... D_{i-c+2} and
// the predictor's noise; use_pece evaluates the corrected state again (2 NFE per step), else
// the next step uses D at the predicted state (PEC, 1 NFE per step). The integrals are taken by
// Gauss-Legendre (smooth integrands). The last step is the predictor's (no evaluation after the
// grid's end). With eta = 0 it is a deterministic multistep solver (predictor order 1: DDIM).
// The runner steps at flow's endpoints.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <deque>

#include "scorch/error.h"
#include "scorch/sampler.h"

namespace scorch {

namespace {

// b_j for the points lambda_pts[j] (D_j), over [la, lb], alpha at lb.
std::vector<double> adams_coefficients(const std::vector<double>& pts, double la, double lb, double tau, double alpha_b) {
  const double k = 1.0 + tau * tau;
  std::vector<double> b(pts.size());
  for (size_t j = 0; j < pts.size(); ++j)
    b[j] = alpha_b * k * gauss_legendre(
                             [&](double l) {
                               double basis = 1.0;
                               for (size_t m = 0; m < pts.size(); ++m)
                                 if (m != j) basis *= (l - pts[m]) / (pts[j] - pts[m]);
                               return std::exp(k * (l - lb)) * basis;
                             },
                             la, lb);
  return b;
}

}  // namespace

at::Tensor sample_sa_solver(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const int p_order = int(o.integer("predictor_order")), c_order = int(o.integer("corrector_order"));
  // predictor_order 1..6, corrector_order 0..6, eta >= 0: the schema's ranges.
  const double eta = o.number("eta"), s_noise = o.number("s_noise");
  const double start = o.number("sde_start_percent"), end = o.number("sde_end_percent");
  if (!(0.0 <= start && start <= end && end <= 1.0))
    bad_input("sampler.sde_start_percent, sde_end_percent: expected 0 <= start <= end <= 1");
  const bool pece = o.flag("use_pece");
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const int n = grid.steps();
  // The share of the schedule's time already sampled at t (ComfyUI's percent).
  const auto tau_at = [&](double ti) {
    const double percent = (ns.t_max() - ti) / (ns.t_max() - ns.t_min());
    return percent >= start && percent <= end ? eta : 0.0;
  };
  std::vector<double> lam(t.size());
  for (size_t i = 0; i < t.size(); ++i) lam[i] = ns.lambda(t[i]);
  const auto pick = [&](int last, int count) {  // lambda_{last - count + 1} ... lambda_last
    return std::vector<double>(lam.begin() + (last - count + 1), lam.begin() + last + 1);
  };
  const auto combine = [](const std::deque<at::Tensor>& d, const std::vector<double>& b) {
    std::vector<std::pair<double, at::Tensor>> terms;
    for (size_t j = 0; j < b.size(); ++j) terms.emplace_back(b[j], d[d.size() - b.size() + j]);
    return terms;
  };
  std::deque<at::Tensor> d;  // oldest first
  at::Tensor x_prev = x, noise;
  double tau = 0.0;
  for (int i = 0; i < n; ++i) {
    d.push_back(ctx.denoise(x, t[size_t(i)]).x0);
    if (int(d.size()) > std::max(p_order, c_order)) d.pop_front();
    const int have = int(d.size());
    if (i > 0 && c_order > 0) {
      // Corrector into lambda_i, from x_{i-1} with the points up to D_i.
      const int c = std::min(c_order, have);
      const double h = lam[size_t(i)] - lam[size_t(i) - 1];
      auto terms = combine(d, adams_coefficients(pick(i, c), lam[size_t(i) - 1], lam[size_t(i)], tau, ns.alpha(t[size_t(i)])));
      terms.insert(terms.begin(), {ns.sigma(t[size_t(i)]) / ns.sigma(t[size_t(i) - 1]) * std::exp(-tau * tau * h), x_prev});
      x = lincomb(terms);
      if (noise.defined()) x = x + noise;
      if (pece) d.back() = ctx.denoise(x, t[size_t(i)]).x0;
    }
    // Predictor into lambda_{i+1}.
    tau = tau_at(t[size_t(i) + 1]);
    const int p = std::min(p_order, have);
    const double h = lam[size_t(i) + 1] - lam[size_t(i)];
    auto terms = combine(d, adams_coefficients(pick(i, p), lam[size_t(i)], lam[size_t(i) + 1], tau, ns.alpha(t[size_t(i) + 1])));
    terms.insert(terms.begin(), {ns.sigma(t[size_t(i) + 1]) / ns.sigma(t[size_t(i)]) * std::exp(-tau * tau * h), x});
    at::Tensor x_next = lincomb(terms);
    noise = at::Tensor();
    if (tau > 0.0 && s_noise > 0.0) {
      noise = (s_noise * ns.sigma(t[size_t(i) + 1]) * std::sqrt(-std::expm1(-2.0 * tau * tau * h))) *
              ctx.noise_between(x, t[size_t(i)], t[size_t(i) + 1]);
      x_next = x_next + noise;
    }
    x_prev = x;
    x = ctx.end_step(i + 1, n, t[size_t(i) + 1], x_next);
  }
  return x;
}

std::vector<SamplerEntry> sa_solver_rows() {
  return {
      {"sa_solver",
       "SA-Solver (Xue et al. 2023; ComfyUI's sa_solver): stochastic Adams predictor-corrector. 1 NFE/step (use_pece: 2)",
       {{"predictor_order", OptionType::Int, "3", "stochastic Adams-Bashforth order, 1-6", {}, 1, 6},
        {"corrector_order", OptionType::Int, "4", "stochastic Adams-Moulton order, 0 (none)-6", {}, 0, 6},
        {"use_pece", OptionType::Bool, "false", "evaluate the corrected state again (2 NFE per step)", {}},
        {"eta", OptionType::Number, "1", "tau inside the SDE interval (0: deterministic)", {}, 0, 100},
        {"sde_start_percent", OptionType::Number, "0.2", "the SDE interval starts at this share of the time", {}, 0, 1},
        {"sde_end_percent", OptionType::Number, "0.8", "and ends at this share", {}, 0, 1},
        {"s_noise", OptionType::Number, "1", "scale of the added noise", {}, 0, 100}},
       function_sampler(sample_sa_solver, Endpoints::Runner), {}, {"eta"}},
  };
}

}  // namespace scorch
