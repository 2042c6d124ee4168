#include "scorch/time_grid.h"

#include <algorithm>
#include <cmath>

#include "scorch/error.h"

namespace scorch {

const std::vector<std::string>& skip_types() {
  static const std::vector<std::string> names = {"logSNR", "time_uniform", "time_quadratic", "karras",
                                                 "exponential"};
  return names;
}

std::vector<double> make_time_grid(const Schedule& sched, const GridSpec& spec) {
  const int n = spec.steps;
  if (n <= 0) bad_input("sampler.steps: expected a positive integer, got " + std::to_string(n));
  const double t_start = spec.t_start < 0 ? sched.t_max() : spec.t_start;
  const double t_end = spec.t_end < 0 ? sched.t_min() : spec.t_end;
  if (!(t_end > 0.0) || !(t_start > t_end))
    bad_input("sampler.t_start/t_end: expected t_start > t_end > 0, got t_start=" + std::to_string(t_start) +
              ", t_end=" + std::to_string(t_end));
  if (t_start > sched.t_max() * (1.0 + 1e-12))
    bad_input("sampler.t_start: " + std::to_string(t_start) + " is beyond the schedule's t_max " +
              std::to_string(sched.t_max()));

  std::vector<double> t(n + 1);
  const auto lerp = [n](double a, double b, int i) { return a + (b - a) * double(i) / double(n); };
  const std::string& kind = spec.skip_type;
  if (kind == "logSNR" || kind == "exponential") {
    // Uniform in lambda = -log(sigma/alpha); exponential is k-diffusion's name for it.
    const double l0 = sched.lambda(t_start), l1 = sched.lambda(t_end);
    for (int i = 0; i <= n; ++i) t[i] = sched.inverse_lambda(lerp(l0, l1, i));
  } else if (kind == "time_uniform") {
    for (int i = 0; i <= n; ++i) t[i] = lerp(t_start, t_end, i);
  } else if (kind == "time_quadratic") {
    for (int i = 0; i <= n; ++i) {
      const double r = lerp(std::sqrt(t_start), std::sqrt(t_end), i);
      t[i] = r * r;
    }
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
  return TimeGrid{spec, make_time_grid(schedule, spec)};
}

}  // namespace scorch
