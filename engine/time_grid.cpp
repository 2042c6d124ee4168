#include "scorch/time_grid.h"

#include <algorithm>
#include <cmath>

#include "scorch/error.h"

namespace scorch {

const std::vector<std::string>& skip_types() {
  static const std::vector<std::string> names = {"auto",        "logSNR",     "time_uniform", "time_quadratic", "karras",
                                                 "exponential", "flow_match", "linspace",     "leading",        "trailing"};
  return names;
}

std::string resolve_skip_type(const Schedule& sched, const GridSpec& spec) {
  if (spec.skip_type != "auto") return spec.skip_type;
  if (sched.name() == "flow" && !spec.flow_auto.empty()) return spec.flow_auto;
  return sched.default_skip_type();
}

std::vector<double> make_time_grid(const Schedule& sched, const GridSpec& spec) {
  const int n = spec.steps;
  if (n <= 0) bad_input("sampler.steps: expected a positive integer, got " + std::to_string(n));
  const double t_start = spec.t_start < 0 ? sched.t_max() : spec.t_start;
  const double t_end = spec.t_end < 0 ? sched.t_min() : spec.t_end;
  // t_end = 0 only where the schedule reaches the data (flow: sigma(0) = 0).
  if (!(t_end > 0.0 || (t_end == 0.0 && sched.t_min() == 0.0)) || !(t_start > t_end))
    bad_input("sampler.t_start/t_end: expected t_start > t_end > 0, got t_start=" + std::to_string(t_start) +
              ", t_end=" + std::to_string(t_end));
  if (t_start > sched.t_max() * (1.0 + 1e-12))
    bad_input("sampler.t_start: " + std::to_string(t_start) + " is beyond the schedule's t_max " +
              std::to_string(sched.t_max()));

  std::vector<double> t(size_t(n) + 1);
  const auto lerp = [n](double a, double b, int i) { return a + (b - a) * double(i) / double(n); };
  const std::string kind = resolve_skip_type(sched, spec);
  // Grids spaced in logSNR or VE sigma need both ends finite (flow: 0 < t < 1).
  if ((kind == "logSNR" || kind == "exponential" || kind == "karras") &&
      !(std::isfinite(sched.lambda(t_start)) && std::isfinite(sched.lambda(t_end))))
    bad_input("sampler.skip_type: " + kind + " needs a finite logSNR at t_start and t_end; on a " + sched.name() +
              " schedule set 0 < t_end < t_start < 1 or use flow_match / time_uniform");
  // Grids spaced in t are spaced in the unshifted time u, then shifted (flow's shift; identity elsewhere).
  const double u_start = sched.unshift_time(t_start), u_end = sched.unshift_time(t_end);
  if (kind == "logSNR" || kind == "exponential") {
    // Uniform in lambda = -log(sigma/alpha); exponential is k-diffusion's name for it.
    const double l0 = sched.lambda(t_start), l1 = sched.lambda(t_end);
    for (int i = 0; i <= n; ++i) t[i] = sched.inverse_lambda(lerp(l0, l1, i));
  } else if (kind == "time_uniform") {
    for (int i = 0; i <= n; ++i) t[i] = sched.shift_time(lerp(u_start, u_end, i));
  } else if (kind == "time_quadratic") {
    for (int i = 0; i <= n; ++i) {
      const double r = lerp(std::sqrt(u_start), std::sqrt(u_end), i);
      t[i] = sched.shift_time(r * r);
    }
  } else if (kind == "flow_match") {
    // diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps: `steps` points
    // linspace(u_start, u_min, steps), shifted, then t_end (0 by default). u_min is the
    // scheduler's sigma_min: the shifted 1/N for a fixed shift (diffusers shifts it twice),
    // 1/N with the dynamic shift.
    const double u_min = sched.flow_match_u_min();
    if (!(u_min > 0.0)) bad_input("sampler.skip_type: flow_match needs a flow schedule");
    if (!(u_min < u_start)) bad_input("sampler.t_start: flow_match needs t_start above the smallest timestep");
    for (int i = 0; i < n; ++i) {
      const double u = n == 1 ? u_start : u_start + (u_min - u_start) * double(i) / double(n - 1);
      t[i] = sched.shift_time(u);
    }
    if (!(t[n - 1] > t_end)) bad_input("sampler.t_end: flow_match's last timestep must lie above t_end");
  } else if (kind == "linspace" || kind == "leading" || kind == "trailing") {
    // diffusers' timestep_spacing on a discrete schedule: the timesteps k as t = (k + 1) / N, then t_end.
    if (sched.name() != "vp_discrete") bad_input("sampler.skip_type: " + kind + " needs a vp_discrete schedule");
    if (spec.t_start >= 0) bad_input("sampler.t_start: " + kind + " spacing starts at its own first timestep");
    const int n_train = sched.num_train_steps();
    const std::vector<double> k = spaced_timesteps(kind, n_train, n);
    for (int i = 0; i < n; ++i) t[size_t(i)] = (k[size_t(i)] + 1.0) / n_train;
    if (!(t[size_t(n) - 1] > t_end)) bad_input("sampler.t_end: must lie below the last spaced timestep");
    t[size_t(n)] = t_end;
    if (spec.reverse) std::reverse(t.begin(), t.end());
    return t;
  } else if (kind == "karras") {
    // Karras et al. (2022) eq. 5 in VE sigma: (smax^(1/rho) + i/N (smin^(1/rho) - smax^(1/rho)))^rho.
    if (!(spec.rho > 0.0)) bad_input("sampler.rho: expected a positive number");
    const double a = std::pow(sched.ve_sigma(t_start), 1.0 / spec.rho);
    const double b = std::pow(sched.ve_sigma(t_end), 1.0 / spec.rho);
    for (int i = 0; i <= n; ++i) t[i] = sched.t_of_ve_sigma(std::pow(lerp(a, b, i), spec.rho));
  } else {
    std::string valid;
    for (const auto& s : skip_types()) valid += (valid.empty() ? "" : " | ") + s;
    bad_input("sampler.skip_type: unknown '" + kind + "'; expected " + valid);
  }
  // The end points are exact whatever the round trip through lambda gives.
  t[0] = t_start;
  t[n] = t_end;
  if (spec.reverse) std::reverse(t.begin(), t.end());
  return t;
}

TimeGrid build_time_grid(const Schedule& schedule, const GridSpec& spec) {
  GridSpec resolved = spec;
  resolved.skip_type = resolve_skip_type(schedule, spec);
  return TimeGrid{resolved, make_time_grid(schedule, resolved)};
}

}  // namespace scorch
