// Test helpers for samplers: running a registered sampler on a denoiser, exact
// references (Gaussian flow map, constant-prediction models) and a float64 RK4
// reference solve of the probability-flow ODE for targets without a closed form.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>

#include <yaml-cpp/yaml.h>

#include "scorch/sampler.h"
#include "scorch/gaussian.h"
#include "support/gaussian_mixture.h"
#include "support/random_gaussian.h"

namespace scorch::testing {

struct Run {
  at::Tensor x;
  int64_t nfe;
};

// A sampler section from "key" -> YAML text; dotted keys ("inner.name") nest.
inline YAML::Node sampler_section(const std::map<std::string, std::string>& opts) { return yaml_mapping(opts); }

// Runs a registered sampler as the pipeline does: options read once, the grid built once.
inline Run run_sampler(const std::string& name, Denoiser& model, const Schedule& sched, const at::Tensor& x_T,
                       const std::map<std::string, std::string>& opts, uint64_t seed = 0, bool reverse = false) {
  const SamplerEntry& entry = samplers().find(name);
  const Options o = read_sampler_options(entry, sampler_section(opts), "sampler");
  GridSpec grid = grid_spec(o);
  grid.reverse = reverse;
  grid.flow_auto = entry.flow_grid;  // as read_sampler does
  Rng rng(seed);
  SamplerContext ctx(model, sched, rng);
  at::Tensor x = entry.make(o)->run(ctx, x_T, build_time_grid(sched, grid));
  return {x, ctx.nfe()};
}

inline double rel_error(const at::Tensor& x, const at::Tensor& ref) {
  return ((x - ref).norm() / ref.norm()).item<double>();
}

// A model whose data prediction is the constant c (a one-point data set), or whose
// noise prediction is the constant c: the first-order solvers are then exact.
class ConstantModel final : public Denoiser {
 public:
  ConstantModel(at::Tensor c, bool is_x0, std::shared_ptr<const Schedule> s)
      : c_(std::move(c)), is_x0_(is_x0), s_(std::move(s)) {}
  Prediction predict(const at::Tensor& x, double t, const at::Tensor&) override {
    return from_model_output(is_x0_ ? PredictionType::X0 : PredictionType::Eps, c_.expand_as(x), x, s_->alpha(t),
                             s_->sigma(t));
  }
  std::vector<int64_t> sample_shape() const override { return {c_.size(-1)}; }

 private:
  at::Tensor c_;
  bool is_x0_;
  std::shared_ptr<const Schedule> s_;
};

// Exact PF-ODE solutions for the constant models:
//   x0 = c:  x_t = alpha_t c + (sigma_t / sigma_s)(x_s - alpha_s c)
//   eps = c: x_t = (alpha_t / alpha_s) x_s - (alpha_t sigma_s / alpha_s - sigma_t) c
inline at::Tensor constant_model_exact(const Schedule& ns, const at::Tensor& x, const at::Tensor& c, bool is_x0,
                                       double s, double t) {
  if (is_x0) return ns.alpha(t) * c + (ns.sigma(t) / ns.sigma(s)) * (x - ns.alpha(s) * c);
  return (ns.alpha(t) / ns.alpha(s)) * x - (ns.alpha(t) * ns.sigma(s) / ns.alpha(s) - ns.sigma(t)) * c;
}

// The setup of the constant-prediction exactness tests: a schedule, the constant c and x_T.
struct ConstantCase {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  at::Tensor c = at::tensor({0.3, -1.2, 2.0}, at::TensorOptions().dtype(at::kDouble));
  at::Tensor x_T = Rng(3).normal({4, 3}, at::TensorOptions().dtype(at::kDouble));
  at::Tensor exact(bool is_x0, double t_end = 1e-3) const {
    return constant_model_exact(*sched, x_T, c, is_x0, 1.0, t_end);
  }
};

// Classical RK4 on the PF-ODE in VE variables, y = x / alpha and sigma~ = e^{-lambda}:
// dy/dlambda = -sigma~ eps(alpha y, t(lambda)), with uniform steps in lambda: the float64
// reference for targets without a closed-form flow.
inline at::Tensor reference_solve(Denoiser& model, const Schedule& ns, const at::Tensor& x, double t_start,
                                  double t_end, int steps) {
  const double l0 = ns.lambda(t_start), l1 = ns.lambda(t_end), h = (l1 - l0) / steps;
  auto f = [&](const at::Tensor& y, double lambda) {
    const double t = ns.inverse_lambda(lambda);
    return -std::exp(-lambda) * model.predict(ns.alpha(t) * y, t, {}).eps;
  };
  at::Tensor y = x / ns.alpha(t_start);
  for (int i = 0; i < steps; ++i) {
    const double l = l0 + h * i;
    const at::Tensor k1 = f(y, l);
    const at::Tensor k2 = f(y + 0.5 * h * k1, l + 0.5 * h);
    const at::Tensor k3 = f(y + 0.5 * h * k2, l + 0.5 * h);
    const at::Tensor k4 = f(y + h * k3, l + h);
    y = y + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4);
  }
  return ns.alpha(t_end) * y;
}

// The two targets of the convergence tests: a Gaussian (exact flow map) and a
// diagonal Gaussian mixture (RK4 reference), in float64 under vp_linear.
struct Target {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  std::unique_ptr<Denoiser> model;
  at::Tensor x_T;
  at::Tensor reference;  // the exact solution at t_end
  double t_end = 1e-3;
};

inline Target gaussian_target(double t_end = 1e-3) {
  Target c;
  c.t_end = t_end;
  const GaussianModel g = random_gaussian(8, 8, 11);
  c.model = make_gaussian_denoiser(g, c.sched);
  c.x_T = at::randn({16, 8}, at::detail::createCPUGenerator(12), at::TensorOptions().dtype(at::kDouble));
  c.reference = gaussian_flow(g, c.x_T, c.sched->alpha(1.0), c.sched->sigma(1.0), c.sched->alpha(t_end),
                              c.sched->sigma(t_end));
  return c;
}

inline Target mixture_target(double t_end = 1e-2) {
  Target c;
  c.t_end = t_end;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  DiagonalMixture mix{at::tensor({0.3, 0.7}, f64), at::tensor({-1.0, 0.5, 1.5, -0.5}, f64).view({2, 2}),
                      at::tensor({0.2, 0.4, 0.3, 0.1}, f64).view({2, 2})};
  c.model = make_mixture_denoiser(mix, c.sched);
  c.x_T = Rng(1).normal({64, 2}, f64);
  c.reference = reference_solve(*c.model, *c.sched, c.x_T, 1.0, t_end, 4000);
  return c;
}

}  // namespace scorch::testing
