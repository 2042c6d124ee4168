// DPM-Solver-v3 (Zheng et al. 2023, arXiv 2310.13268): a multistep predictor-corrector
// exponential integrator whose parameterisation is fitted to the model by its empirical
// model statistics l, s, b (include/scorch/ems.h, `scorch ems`). Written after the official
// dpm_solver_v3.py (thu-ml/DPM-Solver-v3), with its options.
//
// With f_i = (sigma_i eps_i - l_i x_i) / alpha_i at the history points and, relative to the
// step's start s,
//   g_i = e^{S_s - S_i} f_i - e^{S_s} (B_i - B_s)                    (paper eq. 7)
// a step from s to t (lambda increasing) is
//   x_t = alpha_t / alpha_s e^{L_s - L_t} x_s
//         - alpha_t e^{-L_t - S_s} (I_t - I_s) g_s
//         - alpha_t e^{-L_t} (C_t - C_s - B_s (I_t - I_s))
//         - alpha_t e^{L_s - L_t} sum_{k=1}^{n} K_k(s, t) g_s^(k)      (paper eq. 8)
// where L = int l, S = int s, I = int e^{L+S}, B = int e^{-S} b, C = int e^{L+S} B,
// K_k(s, t) = int_s^t e^{L_r + S_r - L_s - S_s} (r - s)^k / k! dr, and g^(k) are estimated
// from the history: a polynomial through the points (or, `pseudo`, divided differences, the
// paper's pseudo-order method for very few steps). The corrector repeats the step from s
// with the model's output at the new point as one more history point (no extra NFE), and
// rewrites that point's cached output so that sigma eps - l x keeps its value.
// l = 1, s = b = 0 (`degenerated`) make g = -x0: this is then DPM-Solver++ with Taylor
// high-order terms (dpm_solver's solver_type: taylor), corrector off.
#include <ATen/ATen.h>

#include <cmath>
#include <memory>

#include "scorch/ems.h"
#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/sampler.h"

namespace scorch {

const std::vector<OptionSpec>& dpm_solver_v3_options() {
  static const std::vector<OptionSpec> specs = {
      {"stats", OptionType::String, "", "the model's EMS file (scorch ems); required unless degenerated", {}},
      {"order", OptionType::Int, "2", "predictor order 1-3 (official advice: 3 unconditional, 2 guided)", {}, 1, 3},
      {"use_corrector", OptionType::Bool, "true", "correct each step with the next point's model output (free)", {}},
      {"p_pseudo", OptionType::Bool, "false", "pseudo-order predictor: divided-difference derivatives (few steps)", {}},
      {"c_pseudo", OptionType::Bool, "false", "pseudo (order + 1) corrector", {}},
      {"lower_order_final", OptionType::Bool, "true", "lower orders in the last steps (every step count)", {}},
      {"degenerated", OptionType::Bool, "false", "trivial statistics l = 1, s = b = 0: DPM-Solver++ (no stats file)", {}},
  };
  return specs;
}

namespace {

// g^(1) .. g^(n) at lam[0] from the values g[0..n] at lam[0..n].
std::vector<at::Tensor> derivatives(int n, const std::vector<double>& lam, const std::vector<at::Tensor>& g, bool pseudo) {
  std::vector<at::Tensor> out;
  if (pseudo) {
    // Divided differences: D_i[j] = (D_{i-1}[j] - D_{i-1}[j+1]) / (lam_j - lam_{i+j}), g^(i) ~ i! D_i[0].
    std::vector<at::Tensor> level = g;
    double fact = 1.0;
    for (int i = 1; i <= n; ++i) {
      std::vector<at::Tensor> next;
      for (int j = 0; j + i <= n; ++j) next.push_back((level[size_t(j)] - level[size_t(j + 1)]) / (lam[size_t(j)] - lam[size_t(i + j)]));
      level = next;
      fact *= i;
      out.push_back(fact * level[0]);
    }
    return out;
  }
  // The polynomial through the points: sum_i c_i (lam_k - lam_0)^i = g_k - g_0, g^(i) = i! c_i.
  at::Tensor R = at::empty({n, n}, at::TensorOptions().dtype(at::kDouble));
  for (int k = 0; k < n; ++k)
    for (int i = 0; i < n; ++i) R[k][i] = std::pow(lam[size_t(k + 1)] - lam[0], i + 1);
  const at::Tensor inv = at::inverse(R);
  double fact = 1.0;
  for (int i = 0; i < n; ++i) {
    fact *= (i + 1);
    at::Tensor c = at::zeros_like(g[0]);
    for (int k = 0; k < n; ++k) c = c + inv[i][k].item<double>() * (g[size_t(k + 1)] - g[0]);
    out.push_back(fact * c);
  }
  return out;
}

struct History {
  std::vector<at::Tensor> x, eps;
  std::vector<double> t;
};

}  // namespace

at::Tensor sample_dpm_solver_v3(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const int order = int(o.integer("order"));
  const int steps = grid.steps();
  if (grid.reverse()) bad_input("sampler.name: dpm_solver_v3 integrates from noise to data only (no inversion)");
  const std::vector<double>& t = grid.t;
  std::vector<double> lambdas;
  for (double tt : t) lambdas.push_back(ns.lambda(tt));
  std::vector<int64_t> shape(x.sizes().begin() + 1, x.sizes().end());
  Ems ems;
  if (o.flag("degenerated")) {
    ems = trivial_ems(at::tensor({lambdas.front(), lambdas.back()}, at::TensorOptions().dtype(at::kDouble)), shape);
  } else {
    if (o.str("stats").empty())
      bad_input("sampler.stats: dpm_solver_v3 needs the model's EMS file (make one with scorch ems), or degenerated: true");
    ems = read_ems(find_input_file(o.str("stats")), "sampler.stats '" + o.str("stats") + "'");
    if (ems.l.sizes().slice(1) != x.sizes().slice(1))
      bad_input("sampler.stats: the statistics are for samples of shape " + shape_string(ems.l.sizes().slice(1)) +
                ", the model's are " + shape_string(x.sizes().slice(1)));
    const double lo = ems.lambda[0].item<double>(), hi = ems.lambda[-1].item<double>();
    for (size_t i = 0; i < t.size(); ++i)
      if (lambdas[i] < lo - 1e-9 || lambdas[i] > hi + 1e-9)
        bad_input("sampler.stats: the statistics cover lambda in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                  "], but step " + std::to_string(i) + " is at t = " + std::to_string(t[i]) + " (lambda = " +
                  std::to_string(lambdas[i]) + "); compute them over the sampler's range (scorch ems --lambda-min/max) "
                  "or narrow sampler.t_start / t_end");
  }
  const EmsIntegrals in(ems, lambdas);
  const auto opts = x.options();
  const auto as_x = [&](const at::Tensor& v) { return v.to(opts); };
  const bool pseudo_p = o.flag("p_pseudo"), pseudo_c = o.flag("c_pseudo"), use_corrector = o.flag("use_corrector");

  History h;
  // One update from points[0] (= s) to t_to; the points are history indices, s first. The
  // predictor and the corrector differ only in their points and pseudo flags.
  const auto step_to = [&](const std::vector<size_t>& points, double t_to, bool pseudo) {
    const size_t is = points[0];
    const double ls = ns.lambda(h.t[is]), lt = ns.lambda(t_to);
    const EmsIntegrals::At& A = in.at(ls);
    const EmsIntegrals::At& Z = in.at(lt);
    std::vector<at::Tensor> g;
    std::vector<double> lam;
    for (size_t p : points) {
      const double tp = h.t[p], lp = ns.lambda(tp);
      const EmsIntegrals::At& P = in.at(lp);
      const at::Tensor f = (ns.sigma(tp) * h.eps[p].to(at::kDouble) - P.l * h.x[p].to(at::kDouble)) / ns.alpha(tp);
      g.push_back(at::exp(A.S - P.S) * f - at::exp(A.S) * (P.B - A.B));
      lam.push_back(lp);
    }
    const double a_s = ns.alpha(h.t[is]), a_t = ns.alpha(t_to);
    at::Tensor out = (a_t / a_s) * at::exp(A.L - Z.L) * h.x[is].to(at::kDouble) -
                     a_t * at::exp(-Z.L - A.S) * (Z.I - A.I) * g[0] -
                     a_t * at::exp(-Z.L) * (Z.C - A.C - A.B * (Z.I - A.I));
    const int n = int(points.size()) - 1;
    if (n > 0) {
      const std::vector<at::Tensor> dg = derivatives(n, lam, g, pseudo);
      for (int k = 1; k <= n; ++k) out = out - a_t * at::exp(A.L - Z.L) * in.taylor(ls, lt, k) * dg[size_t(k - 1)];
    }
    return as_x(out);
  };

  int p_order = 0;
  for (int step = 1; step <= steps; ++step) {
    h.x.push_back(x);
    h.eps.push_back(ctx.denoise(x, t[step - 1]).eps);
    h.t.push_back(t[step - 1]);
    const size_t last = h.x.size() - 1;
    // Corrector: the step into the newest point again, with its output as a history point.
    const int c_order = p_order + (pseudo_c ? 1 : 0);
    if (use_corrector && c_order > 1 && last >= 1) {
      std::vector<size_t> points = {last - 1, last};
      for (int k = 2; k < c_order && last >= size_t(k); ++k) points.push_back(last - size_t(k));
      if (int(points.size()) == c_order) {
        const at::Tensor l_t = as_x(in.at(ns.lambda(t[step - 1])).l);
        const double s_t = ns.sigma(t[step - 1]);
        const at::Tensor n_old = s_t * h.eps[last] - l_t * h.x[last];
        h.x[last] = step_to(points, t[step - 1], pseudo_c);
        h.eps[last] = (n_old + l_t * h.x[last]) / s_t;
      }
    }
    p_order = std::min(step, order);
    if (o.flag("lower_order_final")) p_order = std::min(p_order, steps + 1 - step);
    std::vector<size_t> points;
    for (int k = 0; k < p_order; ++k) points.push_back(last - size_t(k));
    x = step_to(points, t[step], pseudo_p);
    x = ctx.end_step(step, steps, t[step], x);
    // keep what the highest order needs
    if (int(h.x.size()) > order + 1) {
      h.x.erase(h.x.begin());
      h.eps.erase(h.eps.begin());
      h.t.erase(h.t.begin());
    }
  }
  return x;
}

std::vector<SamplerEntry> dpm_solver_v3_rows() {
  return {{"dpm_solver_v3", "DPM-Solver-v3: multistep predictor-corrector on the model's EMS (scorch ems). NFE = steps",
           dpm_solver_v3_options(), function_sampler(sample_dpm_solver_v3)}};
}

}  // namespace scorch
