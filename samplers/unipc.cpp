// UniPC (Zhao et al. 2023, arXiv 2302.04867): a multistep predictor (UniP) and a
// corrector (UniC) that reuses the model output at the predicted point, so the
// corrector costs no extra NFE. Written after the official uni_pc.py (bh variants).
//
// With hh = -h (data prediction) or +h (noise prediction), B(h) = hh (bh1) or e^hh - 1
// (bh2), history ratios r_k = (lambda_{k} - lambda_0)/h and D_k = (m_k - m_0)/r_k:
//   x_t^pred = ratio x - scale (e^hh - 1) m_0 - scale B(h) sum_k rho^p_k D_k
//   x_t^corr = ratio x - scale (e^hh - 1) m_0 - scale B(h) (sum_k rho^c_k D_k + rho^c_K (m_t - m_0))
// where rho solves R rho = b, R_{ik} = r_k^{i-1}, b_i = i! psi_{i+1}(hh) / B(h), with
// psi_1 = (e^hh - 1)/hh and psi_{k+1} = psi_k / hh - 1/k!.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "scorch/sampler.h"
#include "scorch/error.h"

namespace scorch {

const std::vector<OptionSpec>& unipc_options() {
  static const std::vector<OptionSpec> specs = {
      {"order", OptionType::Int, "2", "predictor order 1-3 (the corrector adds one)", {}, 1, 3},
      {"variant", OptionType::String, "bh1", "B(h) = hh (bh1) or e^hh - 1 (bh2)", {"bh1", "bh2"}},
      {"algorithm_type", OptionType::String, "data_prediction", "integrate x0 or eps",
       {"data_prediction", "noise_prediction"}},
      {"lower_order_final", OptionType::Bool, "true", "lower orders in the last steps (every step count)", {}},
      {"disable_corrector", OptionType::IntList, "[]", "0-based steps whose result is not corrected", {}},
  };
  return specs;
}

namespace {

// Solves the n x n system A y = b (n <= 4) by Gaussian elimination with partial pivoting.
std::vector<double> solve(std::vector<std::vector<double>> a, std::vector<double> b) {
  const size_t n = b.size();
  for (size_t c = 0; c < n; ++c) {
    size_t p = c;
    for (size_t r = c + 1; r < n; ++r)
      if (std::abs(a[r][c]) > std::abs(a[p][c])) p = r;
    std::swap(a[c], a[p]);
    std::swap(b[c], b[p]);
    for (size_t r = c + 1; r < n; ++r) {
      const double f = a[r][c] / a[c][c];
      for (size_t k = c; k < n; ++k) a[r][k] -= f * a[c][k];
      b[r] -= f * b[c];
    }
  }
  std::vector<double> y(n);
  for (size_t i = n; i-- > 0;) {
    double v = b[i];
    for (size_t k = i + 1; k < n; ++k) v -= a[i][k] * y[k];
    y[i] = v / a[i][i];
  }
  return y;
}

}  // namespace

at::Tensor sample_unipc(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const int order = int(o.integer("order"));
  if (order < 1 || order > 3) bad_input("sampler.order: expected 1, 2 or 3, got " + std::to_string(order));
  if (grid.spec.steps < order) bad_input("sampler.steps: UniPC order " + std::to_string(order) + " needs steps >= order");
  const bool data = o.str("algorithm_type") == "data_prediction", bh1 = o.str("variant") == "bh1";
  const std::vector<int64_t> disabled = o.int_list("disable_corrector");
  const std::vector<double>& t = grid.t;
  const int steps = grid.steps();
  auto model_fn = [&](const at::Tensor& xx, double tt) {
    const Prediction p = ctx.denoise(xx, tt);
    return data ? p.x0 : p.eps;
  };

  std::vector<at::Tensor> m = {model_fn(x, t[0])};
  std::vector<double> ts = {t[0]};
  for (int step = 1; step <= steps; ++step) {
    int k_order = std::min(order, step);
    if (o.flag("lower_order_final")) k_order = std::min(k_order, steps + 1 - step);
    const bool corrector =
        step < steps && std::find(disabled.begin(), disabled.end(), int64_t(step - 1)) == disabled.end();
    const double s = ts.back(), tt = t[step];
    const double h = ns.lambda(tt) - ns.lambda(s), hh = data ? -h : h;
    const double ratio = data ? ns.sigma(tt) / ns.sigma(s) : std::exp(ns.log_alpha(tt) - ns.log_alpha(s));
    const double scale = data ? ns.alpha(tt) : ns.sigma(tt);
    const double b_h = bh1 ? hh : std::expm1(hh);
    const size_t n = m.size();
    // r_k for the k_order - 1 previous outputs, then r = 1 for the new point.
    std::vector<double> r;
    for (int k = 1; k < k_order; ++k) r.push_back((ns.lambda(ts[n - 1 - k]) - ns.lambda(s)) / h);
    r.push_back(1.0);
    std::vector<std::vector<double>> R(k_order, std::vector<double>(k_order));
    std::vector<double> b(k_order);
    double psi = std::expm1(hh) / hh - 1.0, factorial = 1.0;
    for (int i = 1; i <= k_order; ++i) {
      for (int k = 0; k < k_order; ++k) R[i - 1][k] = std::pow(r[k], i - 1);
      b[i - 1] = psi * factorial / b_h;
      factorial *= (i + 1);
      psi = psi / hh - 1.0 / factorial;
    }
    // Predictor: sum_k rho_k D_k over the history, D_k = (m_k - m_0)/r_k.
    std::vector<double> rho_p;
    if (k_order == 2) {
      rho_p = {0.5};
    } else if (k_order > 2) {
      std::vector<std::vector<double>> Rp(k_order - 1, std::vector<double>(k_order - 1));
      for (int i = 0; i < k_order - 1; ++i)
        for (int k = 0; k < k_order - 1; ++k) Rp[i][k] = R[i][k];
      rho_p = solve(Rp, std::vector<double>(b.begin(), b.end() - 1));
    }
    const double c0 = -scale * std::expm1(hh), cb = -scale * b_h;
    // ratio x + c0 m_0 + cb sum_k rho_k (m_k - m_0)/r_k, as one linear combination.
    auto combine = [&](const std::vector<double>& rho, const at::Tensor* m_t, double rho_t) {
      std::vector<std::pair<double, at::Tensor>> terms = {{ratio, x}};
      double coef0 = c0;
      for (size_t k = 0; k < rho.size() && k + 1 < r.size(); ++k) {
        const double c = cb * rho[k] / r[k];
        terms.emplace_back(c, m[n - 2 - k]);
        coef0 -= c;
      }
      if (m_t) {
        terms.emplace_back(cb * rho_t, *m_t);
        coef0 -= cb * rho_t;
      }
      terms.emplace_back(coef0, m[n - 1]);
      return lincomb(terms);
    };
    const at::Tensor x_pred = combine(rho_p, nullptr, 0.0);
    at::Tensor m_t;
    if (corrector) {
      const std::vector<double> rho_c = k_order == 1 ? std::vector<double>{0.5} : solve(R, b);
      m_t = model_fn(x_pred, tt);
      x = combine(std::vector<double>(rho_c.begin(), rho_c.end() - 1), &m_t, rho_c.back());
    } else {
      x = x_pred;
    }
    x = ctx.end_step(step, steps, tt, x);
    if (step == steps) break;
    // a corrector (MCMC) moved x away from x_pred: evaluate the model again
    m.push_back(m_t.defined() && !ctx.corrected() ? m_t : model_fn(x, tt));
    ts.push_back(tt);
    if (int(m.size()) > order) {
      m.erase(m.begin());
      ts.erase(ts.begin());
    }
  }
  return x;
}

std::vector<SamplerEntry> unipc_rows() {
  return {{"unipc", "UniPC (bh1 | bh2): predictor + free corrector. NFE = steps", unipc_options(),
           function_sampler(sample_unipc)}};
}

}  // namespace scorch
