// DPM-Solver (Lu et al. 2022, arXiv 2206.00927) and DPM-Solver++ (Lu et al. 2022,
// arXiv 2211.01095): singlestep, multistep, singlestep_fixed and adaptive methods
// of order 1-3, with the official implementation's options and order schedules.
//
// Notation: a step goes from s to t, h = lambda_t - lambda_s. Both algorithm types
// share one form (as in UniPC, Zhao et al. 2023): with the model output m,
//   dpmsolver++ (data prediction m = x0):  hh = -h, ratio = sigma_t / sigma_s, scale = alpha_t
//   dpmsolver   (noise prediction m = eps): hh = +h, ratio = alpha_t / alpha_s, scale = sigma_t
// the first-order step is x_t = ratio x_s - scale (e^hh - 1) m_s, and the higher-order
// corrections use psi2(hh) = (e^hh - 1)/hh - 1 and psi3(hh) = psi2/hh - 1/2 (the official
// code's phi_2, phi_3 up to sign, DPM-Solver++ App. B).
#include <ATen/ATen.h>

#include <cmath>
#include <numeric>

#include "dpm_solver.h"
#include "scorch/sampler.h"
#include "scorch/error.h"

namespace scorch {

const std::vector<OptionSpec>& dpm_solver_options() {
  static const std::vector<OptionSpec> specs = {
      {"algorithm_type", OptionType::String, "dpmsolver++", "dpmsolver: noise prediction; dpmsolver++: data prediction",
       {"dpmsolver", "dpmsolver++"}},
      {"method", OptionType::String, "multistep", "how orders are scheduled",
       {"singlestep", "multistep", "singlestep_fixed", "adaptive"}},
      {"order", OptionType::Int, "2", "solver order 1-3 (adaptive: 2 = DPM-Solver-12, 3 = DPM-Solver-23)", {}, 1, 3},
      {"solver_type", OptionType::String, "dpmsolver", "form of the high-order terms", {"dpmsolver", "taylor"}},
      {"lower_order_final", OptionType::Bool, "true", "multistep: lower orders in the last steps when steps < 10", {}},
      {"denoise_to_zero", OptionType::Bool, "false", "one more NFE: return x0(x, t_end)", {}},
      {"atol", OptionType::Number, "0.0078", "adaptive: absolute tolerance", {}, 0, 1000},
      {"rtol", OptionType::Number, "0.05", "adaptive: relative tolerance", {}, 0, 1000},
      {"h_init", OptionType::Number, "0.05", "adaptive: first step size in lambda", {}, 0, 1000},
      {"thresholding", OptionType::Bool, "false", "dynamic thresholding of x0 (Imagen); dpmsolver++ only", {}},
      {"dynamic_thresholding_ratio", OptionType::Number, "0.995", "quantile of |x0| per sample", {}, 0, 1},
      {"thresholding_max_val", OptionType::Number, "1", "lower bound of the threshold", {}, 0, 1e6},
  };
  return specs;
}

namespace {

double psi2(double hh) { return std::expm1(hh) / hh - 1.0; }
double psi3(double hh) { return psi2(hh) / hh - 0.5; }

class DpmSolver {
 public:
  DpmSolver(SamplerContext& ctx, const Options& o)
      : ctx_(ctx),
        ns_(ctx.schedule()),
        data_(o.str("algorithm_type") == "dpmsolver++"),
        taylor_(o.str("solver_type") == "taylor"),
        thresholding_(o.flag("thresholding")),
        ratio_(o.number("dynamic_thresholding_ratio")),
        max_val_(o.number("thresholding_max_val")) {
    if (thresholding_ && !data_) bad_input("sampler.thresholding: needs algorithm_type dpmsolver++");
    if (thresholding_ && !(ratio_ > 0.0 && ratio_ <= 1.0))
      bad_input("sampler.dynamic_thresholding_ratio: expected a number in (0, 1]");
  }

  // The model output the solver integrates: x0 (thresholded if asked) or eps.
  at::Tensor model_fn(const at::Tensor& x, double t) {
    const Prediction p = ctx_.denoise(x, t);
    return data_ ? threshold(p.x0) : p.eps;
  }
  at::Tensor data_prediction(const at::Tensor& x, double t) { return threshold(ctx_.denoise(x, t).x0); }

  // Dynamic thresholding (Saharia et al. 2022): s = max(quantile(|x0|, p), max_val) per
  // sample, x0 <- clamp(x0, -s, s) / s.
  at::Tensor threshold(const at::Tensor& x0) const {
    if (!thresholding_) return x0;
    const at::Tensor flat = x0.reshape({x0.size(0), -1});
    at::Tensor s = at::quantile(flat.abs(), ratio_, /*dim=*/1, /*keepdim=*/true).clamp_min(max_val_);
    std::vector<int64_t> shape(size_t(x0.dim()), 1);
    shape[0] = x0.size(0);
    s = s.reshape(shape);
    return at::max(at::min(x0, s), -s) / s;
  }

  double hh(double s, double t) const { return (data_ ? -1.0 : 1.0) * (ns_.lambda(t) - ns_.lambda(s)); }
  double ratio(double s, double t) const {
    return data_ ? ns_.sigma(t) / ns_.sigma(s) : std::exp(ns_.log_alpha(t) - ns_.log_alpha(s));
  }
  double scale(double t) const { return data_ ? ns_.alpha(t) : ns_.sigma(t); }

  // DPM-Solver-1 (= DDIM): x_t = ratio x_s - scale (e^hh - 1) m_s.
  at::Tensor first_update(const at::Tensor& x, double s, double t, const at::Tensor& m_s) const {
    return lincomb({{ratio(s, t), x}, {-scale(t) * std::expm1(hh(s, t)), m_s}});
  }

  // Singlestep DPM-Solver-2 with the intermediate point s1 = t_lambda(lambda_s + r1 h):
  //   u = ratio(s, s1) x - scale_s1 (e^{r1 hh} - 1) m_s
  //   dpmsolver: x_t = ratio x - scale (e^hh - 1) m_s - 1/(2 r1) scale (e^hh - 1) (m(u) - m_s)
  //   taylor:    x_t = ratio x - scale (e^hh - 1) m_s - 1/r1 scale psi2(hh) (m(u) - m_s)
  // m_s1, if given, receives m(u) (the adaptive solver reuses it).
  at::Tensor second_update(const at::Tensor& x, double s, double t, double r1, const at::Tensor& m_s,
                           at::Tensor* m_s1 = nullptr) {
    const double H = hh(s, t), s1 = at_fraction(s, t, r1);
    const at::Tensor u = lincomb({{ratio(s, s1), x}, {-scale(s1) * std::expm1(r1 * H), m_s}});
    const at::Tensor m1 = model_fn(u, s1);
    if (m_s1) *m_s1 = m1;
    const double c = taylor_ ? -scale(t) * psi2(H) / r1 : -0.5 / r1 * scale(t) * std::expm1(H);
    return lincomb({{ratio(s, t), x}, {-scale(t) * std::expm1(H) - c, m_s}, {c, m1}});
  }

  // Singlestep DPM-Solver-3 with s1, s2 at fractions r1 < r2 of h:
  //   u1 = ratio(s, s1) x - scale_s1 (e^{r1 hh} - 1) m_s
  //   u2 = ratio(s, s2) x - scale_s2 (e^{r2 hh} - 1) m_s - r2/r1 scale_s2 psi2(r2 hh) (m(u1) - m_s)
  //   dpmsolver: x_t = ratio x - scale (e^hh - 1) m_s - 1/r2 scale psi2(hh) (m(u2) - m_s)
  //   taylor:    x_t = ratio x - scale (e^hh - 1) m_s - scale psi2 D1 - scale psi3 D2, with
  //              D1_0 = (m1 - m_s)/r1, D1_1 = (m2 - m_s)/r2,
  //              D1 = (r2 D1_0 - r1 D1_1)/(r2 - r1), D2 = 2 (D1_1 - D1_0)/(r2 - r1).
  // m_s1, if defined, is m(u1) already computed at r1.
  at::Tensor third_update(const at::Tensor& x, double s, double t, double r1, double r2, const at::Tensor& m_s,
                          at::Tensor m_s1 = {}) {
    const double H = hh(s, t), s1 = at_fraction(s, t, r1), s2 = at_fraction(s, t, r2);
    if (!m_s1.defined()) m_s1 = model_fn(lincomb({{ratio(s, s1), x}, {-scale(s1) * std::expm1(r1 * H), m_s}}), s1);
    const double c1 = -r2 / r1 * scale(s2) * psi2(r2 * H);
    const at::Tensor u2 = lincomb({{ratio(s, s2), x}, {-scale(s2) * std::expm1(r2 * H) - c1, m_s}, {c1, m_s1}});
    const at::Tensor m_s2 = model_fn(u2, s2);
    const double a = ratio(s, t), b = -scale(t) * std::expm1(H);
    if (!taylor_) {
      const double c = -scale(t) * psi2(H) / r2;
      return lincomb({{a, x}, {b - c, m_s}, {c, m_s2}});
    }
    // D1 and D2 as combinations of (m1 - m_s) and (m2 - m_s).
    const double d1_a = r2 / r1 / (r2 - r1), d1_b = -r1 / r2 / (r2 - r1);
    const double d2_a = -2.0 / r1 / (r2 - r1), d2_b = 2.0 / r2 / (r2 - r1);
    const double p2 = -scale(t) * psi2(H), p3 = -scale(t) * psi3(H);
    const double c1t = p2 * d1_a + p3 * d2_a, c2t = p2 * d1_b + p3 * d2_b;
    return lincomb({{a, x}, {b - c1t - c2t, m_s}, {c1t, m_s1}, {c2t, m_s2}});
  }

  // Multistep updates from the history (newest last) of model outputs m and times.
  //   order 2: r0 = h_0/h, D1_0 = (m_0 - m_1)/r0;
  //            dpmsolver: - 1/2 scale (e^hh - 1) D1_0;  taylor: - scale psi2(hh) D1_0
  //   order 3: D1_1 = (m_1 - m_2)/r1, D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1),
  //            D2 = (D1_0 - D1_1)/(r0 + r1);  - scale psi2 D1 - scale psi3 D2
  at::Tensor multistep_update(const at::Tensor& x, const std::vector<at::Tensor>& m, const std::vector<double>& ts,
                              double t, int order) const {
    const size_t n = m.size();
    const double s = ts[n - 1];
    if (order == 1) return first_update(x, s, t, m[n - 1]);
    const double H = hh(s, t), a = ratio(s, t), b = -scale(t) * std::expm1(H);
    const double h = ns_.lambda(t) - ns_.lambda(s);
    const double r0 = (ns_.lambda(s) - ns_.lambda(ts[n - 2])) / h;
    if (order == 2) {
      const double c = (taylor_ ? -scale(t) * psi2(H) : 0.5 * b) / r0;  // coefficient of m_0 - m_1
      return lincomb({{a, x}, {b + c, m[n - 1]}, {-c, m[n - 2]}});
    }
    const double r1 = (ns_.lambda(ts[n - 2]) - ns_.lambda(ts[n - 3])) / h;
    const double p2 = -scale(t) * psi2(H), p3 = -scale(t) * psi3(H);
    // D1_0 = (m0 - m1)/r0, D1_1 = (m1 - m2)/r1; expand D1 and D2 over m0, m1, m2.
    const double k = r0 / (r0 + r1);
    const double d1_m0 = (1 + k) / r0, d1_m1 = -(1 + k) / r0 - k / r1, d1_m2 = k / r1;
    const double d2_m0 = 1 / r0 / (r0 + r1), d2_m1 = (-1 / r0 - 1 / r1) / (r0 + r1), d2_m2 = 1 / r1 / (r0 + r1);
    return lincomb({{a, x},
                    {b + p2 * d1_m0 + p3 * d2_m0, m[n - 1]},
                    {p2 * d1_m1 + p3 * d2_m1, m[n - 2]},
                    {p2 * d1_m2 + p3 * d2_m2, m[n - 3]}});
  }

  // The time at fraction r of the step in lambda: t_lambda(lambda_s + r h).
  double at_fraction(double s, double t, double r) const {
    return ns_.inverse_lambda(ns_.lambda(s) + r * (ns_.lambda(t) - ns_.lambda(s)));
  }

 private:
  SamplerContext& ctx_;
  const Schedule& ns_;
  bool data_, taylor_, thresholding_;
  double ratio_, max_val_;
};

// The intermediate fractions r1, r2 of a singlestep update: from the inner grid of
// `order` steps between s and t of the same skip_type (official get_time_steps), so
// they are 1/2 or 1/3, 2/3 exactly only for logSNR.
std::vector<double> inner_fractions(const Schedule& ns, const TimeGrid& grid, double s, double t, int order) {
  GridSpec inner = grid.spec;
  inner.steps = order;
  // flow_match and the timestep spacings are lists of points, not grids between any two
  // times; between two of their points they are uniform in (unshifted) time.
  for (const char* list : {"flow_match", "linspace", "leading", "trailing"})
    if (inner.skip_type == list) inner.skip_type = "time_uniform";
  inner.t_start = std::max(s, t);
  inner.t_end = std::min(s, t);
  inner.reverse = s < t;
  const std::vector<double> ti = make_time_grid(ns, inner);
  const double h = ns.lambda(ti.back()) - ns.lambda(ti.front());
  std::vector<double> r;
  for (int k = 1; k < order; ++k) r.push_back((ns.lambda(ti[k]) - ns.lambda(ti[0])) / h);
  return r;
}

at::Tensor run_singlestep(DpmSolver& solver, SamplerContext& ctx, at::Tensor x, const TimeGrid& grid,
                          const std::vector<int>& orders, bool uniform_outer) {
  const Schedule& ns = ctx.schedule();
  // Outer grid: K + 1 points of the skip_type when fixed or logSNR (to reproduce the
  // paper); otherwise every order-th point of the steps + 1 grid.
  std::vector<double> outer;
  if (uniform_outer) {
    GridSpec g = grid.spec;
    g.steps = int(orders.size());
    outer = make_time_grid(ns, g);
  } else {
    const std::vector<double>& full = grid.t;
    size_t idx = 0;
    outer.push_back(full[0]);
    for (int o : orders) outer.push_back(full[idx += size_t(o)]);
  }
  const int k = int(orders.size());
  for (int i = 0; i < k; ++i) {
    const double s = outer[i], t = outer[i + 1];
    const std::vector<double> r = inner_fractions(ns, grid, s, t, orders[i]);
    const at::Tensor m_s = solver.model_fn(x, s);
    if (orders[i] == 1) x = solver.first_update(x, s, t, m_s);
    if (orders[i] == 2) x = solver.second_update(x, s, t, r[0], m_s);
    if (orders[i] == 3) x = solver.third_update(x, s, t, r[0], r[1], m_s);
    x = ctx.end_step(i + 1, k, t, x);
  }
  return x;
}

at::Tensor run_multistep(DpmSolver& solver, SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, int order,
                         bool lower_order_final) {
  const std::vector<double>& t = grid.t;
  const int steps = grid.steps();
  std::vector<at::Tensor> m = {solver.model_fn(x, t[0])};
  std::vector<double> ts = {t[0]};
  for (int step = 1; step <= steps; ++step) {
    // Warm-up with lower orders, then `order`; lower orders again at the end when
    // steps < 10, as the official code does (its docstring says 15, diffusers uses 15).
    int step_order = std::min(order, step);
    if (lower_order_final && steps < 10) step_order = std::min(step_order, steps + 1 - step);
    x = solver.multistep_update(x, m, ts, t[step], step_order);
    x = ctx.end_step(step, steps, t[step], x);
    if (step == steps) break;  // the final model value is not needed
    m.push_back(solver.model_fn(x, t[step]));
    ts.push_back(t[step]);
    if (int(m.size()) > order) {
      m.erase(m.begin());
      ts.erase(ts.begin());
    }
  }
  return x;
}

// DPM-Solver-12 / -23 (DPM-Solver App. C, after Jolicoeur-Martineau et al. 2021): a
// lower- and a higher-order singlestep update share model values; the step in lambda is
// accepted when E = max_batch RMS((x_high - x_low) / delta) <= 1, with
// delta = max(atol, rtol max(|x_low|, |x_prev|)), and h <- min(theta h E^{-1/order}, lambda_0 - lambda_s).
at::Tensor run_adaptive(DpmSolver& solver, SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, int order,
                        const Options& o) {
  const Schedule& ns = ctx.schedule();
  if (grid.reverse()) bad_input("sampler.method: adaptive cannot run an inversion; use multistep");
  const double t_0 = grid.t.back(), lambda_0 = ns.lambda(t_0);
  const double atol = o.number("atol"), rtol = o.number("rtol"), theta = 0.9, t_err = 1e-5;
  if (!(atol > 0.0) || !(rtol >= 0.0)) bad_input("sampler.atol/rtol: expected atol > 0 and rtol >= 0");
  double h = o.number("h_init");
  if (!(h > 0.0)) bad_input("sampler.h_init: expected a positive number");
  double s = grid.t.front();
  at::Tensor x_prev = x, m_s;
  int accepted = 0;
  const int max_trials = 100000;
  for (int trial = 0; std::abs(s - t_0) > t_err; ++trial) {
    if (trial >= max_trials) bad_input("sampler: adaptive step size did not reach t_end; loosen atol/rtol");
    const double t = ns.inverse_lambda(ns.lambda(s) + h);
    if (!m_s.defined()) m_s = solver.model_fn(x, s);  // reused after a rejection: same point
    at::Tensor x_low, x_high, m_s1;
    if (order == 2) {
      x_low = solver.first_update(x, s, t, m_s);
      x_high = solver.second_update(x, s, t, 0.5, m_s);
    } else {
      x_low = solver.second_update(x, s, t, 1.0 / 3.0, m_s, &m_s1);
      x_high = solver.third_update(x, s, t, 1.0 / 3.0, 2.0 / 3.0, m_s, m_s1);
    }
    const at::Tensor delta = at::max(x_low.abs(), x_prev.abs()).mul_(rtol).clamp_min_(atol);
    const double e = ((x_high - x_low) / delta).reshape({x.size(0), -1}).pow(2).mean(1).sqrt().max().item<double>();
    if (e <= 1.0) {
      x = x_high;
      x_prev = x_low;
      s = t;
      m_s = at::Tensor();
      x = ctx.end_step(++accepted, 0, s, x);
    }
    h = std::min(theta * h * std::pow(e, -1.0 / order), lambda_0 - ns.lambda(s));
  }
  return x;
}

}  // namespace

// Orders of the singlestep method (official get_orders_and_timesteps_for_singlestep_solver).
std::vector<int> dpm_solver_singlestep_orders(int steps, int order) {
  std::vector<int> orders;
  if (order == 3) {
    const int k = steps / 3 + 1;
    if (steps % 3 == 0) {
      orders.assign(k - 2, 3);
      orders.insert(orders.end(), {2, 1});
    } else {
      orders.assign(k - 1, 3);
      orders.push_back(steps % 3);
    }
  } else if (order == 2) {
    orders.assign(steps / 2, 2);
    if (steps % 2) orders.push_back(1);
  } else {
    orders.assign(steps, 1);
  }
  return orders;
}

at::Tensor sample_dpm_solver(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  DpmSolver solver(ctx, o);
  const std::string method = o.str("method");
  const int order = int(o.integer("order"));
  if (order < 1 || order > 3) bad_input("sampler.order: expected 1, 2 or 3, got " + std::to_string(order));
  if (method == "multistep") {
    if (grid.spec.steps < order)  // the configured steps (the runner's endpoint steps may take some)
      bad_input("sampler.steps: multistep order " + std::to_string(order) + " needs steps >= order");
    x = run_multistep(solver, ctx, x, grid, order, o.flag("lower_order_final"));
  } else if (method == "singlestep") {
    x = run_singlestep(solver, ctx, x, grid, dpm_solver_singlestep_orders(grid.steps(), order), grid.spec.skip_type == "logSNR");
  } else if (method == "singlestep_fixed") {
    if (grid.steps() < order) bad_input("sampler.steps: singlestep_fixed needs steps >= order");
    x = run_singlestep(solver, ctx, x, grid, std::vector<int>(size_t(grid.steps() / order), order), true);
  } else {
    if (order < 2) bad_input("sampler.order: adaptive needs order 2 (DPM-Solver-12) or 3 (DPM-Solver-23)");
    x = run_adaptive(solver, ctx, x, grid, order, o);
  }
  if (o.flag("denoise_to_zero")) {
    if (grid.reverse()) bad_input("sampler.denoise_to_zero: not with an inversion");
    x = solver.data_prediction(x, grid.t.back());
  }
  return x;
}

namespace {

std::map<std::string, std::string> dpm(const char* algorithm, const char* method, const char* order) {
  return {{"algorithm_type", algorithm}, {"method", method}, {"order", order}};
}

}  // namespace

std::vector<SamplerEntry> dpm_solver_rows() {
  const auto run = function_sampler(sample_dpm_solver);
  Schema adaptive = dpm_solver_options();
  for (auto& s : adaptive)
    if (s.name == "order") s.default_value = "3";
  return {
      {"dpm_solver", "DPM-Solver / DPM-Solver++, every method and order (official options). NFE = steps",
       dpm_solver_options(), run},
      {"dpmpp_2m", "DPM-Solver++(2M): multistep, data prediction, order 2", dpm_solver_options(), run,
       dpm("dpmsolver++", "multistep", "2")},
      {"dpmpp_3m", "DPM-Solver++(3M): multistep, data prediction, order 3", dpm_solver_options(), run,
       dpm("dpmsolver++", "multistep", "3")},
      {"dpmpp_2s", "DPM-Solver++(2S): singlestep, data prediction, order 2", dpm_solver_options(), run,
       dpm("dpmsolver++", "singlestep", "2")},
      {"dpm_solver_3s", "DPM-Solver-3 singlestep (DPM-Solver-fast), noise prediction", dpm_solver_options(), run,
       dpm("dpmsolver", "singlestep", "3")},
      {"dpm_adaptive", "DPM-Solver-12 / -23 with adaptive step size (order 2 / 3); NFE from atol, rtol", adaptive,
       run, {{"method", "adaptive"}}},
  };
}

}  // namespace scorch
