#include "scorch/time_grid.h"

#include <algorithm>
#include <cmath>

#include "scorch/error.h"

namespace scorch {

const std::vector<std::string>& skip_types() {
  static const std::vector<std::string> names = {
      "auto",     "logSNR",   "time_uniform", "time_quadratic", "karras",      "exponential",      "flow_match",
      "linspace", "leading",  "trailing",     "simple",         "sgm_uniform", "kl_optimal",       "linear_quadratic",
      "beta",     "ddim_uniform", "ays",         "gits",           "custom"};
  return names;
}

std::string resolve_skip_type(const Schedule& sched, const GridSpec& spec) {
  if (spec.skip_type != "auto") return spec.skip_type;
  if (sched.name() == "flow" && !spec.flow_auto.empty()) return spec.flow_auto;
  return sched.default_skip_type();
}

namespace {

// The schedule's sigma of ComfyUI's schedulers: VE sigma/alpha, or t on flow (ModelSamplingDiscreteFlow).
double comfy_sigma(const Schedule& sched, double t) { return sched.integrates_in_time() ? t : sched.ve_sigma(t); }
double comfy_time(const Schedule& sched, double sigma) {
  return sched.integrates_in_time() ? sigma : sched.t_of_ve_sigma(sigma);
}

// The regularised incomplete beta function I_x(a, b) by its continued fraction (the modified
// Lentz method), using the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) where it converges slowly.
double incomplete_beta(double x, double a, double b) {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  if (x > (a + 1.0) / (a + b + 2.0)) return 1.0 - incomplete_beta(1.0 - x, b, a);
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) +
                                b * std::log1p(-x)) / a;
  const double tiny = 1e-300;
  double f = 1.0, c = 1.0, d = 0.0;
  for (int i = 0; i <= 400; ++i) {
    const int m = i / 2;
    double num;
    if (i == 0)
      num = 1.0;
    else if (i % 2 == 0)
      num = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
    else
      num = -((a + m) * (a + b + m) * x) / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
    d = 1.0 + num * d;
    d = 1.0 / (std::abs(d) < tiny ? tiny : d);
    c = 1.0 + num / c;
    if (std::abs(c) < tiny) c = tiny;
    f *= c * d;
    if (std::abs(1.0 - c * d) < 1e-15) break;
  }
  return front * (f - 1.0);
}

// Align Your Steps (Sabour et al. 2024): the published 10-step noise levels (11 VE sigmas,
// the last one then replaced by t_end), from NVIDIA's how-to page
// https://research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html (as ComfyUI's
// AlignYourStepsScheduler ships them): SD 1.5, SDXL and Stable Video Diffusion.
const std::vector<double>& ays_table(const std::string& model) {
  static const std::vector<double> sd1 = {14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520,
                                          1.8841921177,  1.3943805092, 0.9642583904, 0.6523686016,
                                          0.3977456272,  0.1515232662, 0.0291671582};
  static const std::vector<double> sdxl = {14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769,
                                           1.3405244945,  0.8620721141, 0.5550693289, 0.3798540708,
                                           0.2332364134,  0.1114188177, 0.0291671582};
  static const std::vector<double> svd = {700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002};
  if (model == "SD1") return sd1;
  if (model == "SDXL") return sdxl;
  if (model == "SVD") return svd;
  bad_input("sampler.ays_model: unknown '" + model + "'; expected SD1 | SDXL | SVD");
}

}  // namespace

// The Beta(a, b) quantile of p by bisection on I_x(a, b) (monotone in x), to 1e-15.
double beta_distribution_quantile(double p, double a, double b) {
  double lo = 0.0, hi = 1.0;
  for (int i = 0; i < 60; ++i) {
    const double mid = 0.5 * (lo + hi);
    (incomplete_beta(mid, a, b) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

std::vector<double> make_time_grid(const Schedule& sched, const GridSpec& spec_in) {
  GridSpec spec = spec_in;
  if (!spec.sigmas.empty() || !spec.timesteps.empty()) {
    if (!spec.sigmas.empty() && !spec.timesteps.empty()) bad_input("sampler.sigmas, sampler.timesteps: give one");
    const size_t len = std::max(spec.sigmas.size(), spec.timesteps.size());
    if (len < 2) bad_input("sampler.sigmas / timesteps: need at least two values (one step)");
    spec.steps = int(len) - 1;
    spec.skip_type = "custom";
  }
  if (spec.split != 0 || spec.part != "all") {
    if (spec.part != "high" && spec.part != "low") bad_input("sampler.part: expected all | high | low");
    if (!(spec.split > 0 && spec.split < spec.steps))
      bad_input("sampler.split: expected 0 < split < steps = " + std::to_string(spec.steps) + " with part " + spec.part);
    GridSpec whole = spec;
    whole.split = 0;
    whole.part = "all";
    whole.reverse = false;
    std::vector<double> t = make_time_grid(sched, whole);
    t = spec.part == "high" ? std::vector<double>(t.begin(), t.begin() + spec.split + 1)
                            : std::vector<double>(t.begin() + spec.split, t.end());
    if (spec.reverse) std::reverse(t.begin(), t.end());
    return t;
  }
  if (resolve_skip_type(sched, spec) == "gits") {
    // GITS: times searched with the model (gits.h) and kept in the spec.
    if (spec.gits_times.empty())
      bad_input("sampler.skip_type: gits is searched with the model (the pipeline does it; a library caller runs "
                "gits_search, include/scorch/gits.h, and sets GridSpec::gits_times)");
    if (spec.t_start >= 0 && spec.t_start != spec.gits_times.front())
      bad_input("sampler.t_start: a gits grid starts where its teacher started (init_image and t_start do not "
                "combine with gits)");
    std::vector<double> t = spec.gits_times;
    if (spec.reverse) std::reverse(t.begin(), t.end());
    return t;
  }
  if (resolve_skip_type(sched, spec) == "ddim_uniform") {
    // ComfyUI's ddim_uniform: training timesteps 1, 1 + c, 1 + 2c, ... below N (c = max(N / steps,
    // 1), integer division), from the top, then t_end. Its step count is their number, which
    // is `steps` only when N / steps divides evenly enough (1000 and 30 give 31 steps).
    if (sched.name() != "vp_discrete") bad_input("sampler.skip_type: ddim_uniform needs a vp_discrete schedule");
    if (spec.steps <= 0) bad_input("sampler.steps: expected a positive integer, got " + std::to_string(spec.steps));
    if (spec.t_start >= 0) bad_input("sampler.t_start: ddim_uniform starts at its own first timestep");
    const int n_train = sched.num_train_steps();
    const int c = std::max(n_train / spec.steps, 1);
    const double t_end = spec.t_end < 0 ? sched.t_min() : spec.t_end;
    std::vector<double> t;
    for (int k = 1; k < n_train; k += c) t.insert(t.begin(), (k + 1.0) / n_train);
    if (!(t.back() > t_end)) bad_input("sampler.t_end: must lie below ddim_uniform's last timestep");
    t.push_back(t_end);
    if (spec.reverse) std::reverse(t.begin(), t.end());
    return t;
  }
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
  } else if (kind == "custom") {
    // The given list, its end points exact; a final sigma 0 means t_end.
    if (spec.sigmas.empty() && spec.timesteps.empty())
      bad_input("sampler.skip_type: custom needs sampler.sigmas or sampler.timesteps");
    const bool sig = !spec.sigmas.empty();
    const std::vector<double>& v = sig ? spec.sigmas : spec.timesteps;
    const int n_train = sched.num_train_steps();
    for (int i = 0; i <= n; ++i) {
      const double e = v[size_t(i)];
      if (i > 0 && !(e < v[size_t(i) - 1]))
        bad_input(std::string("sampler.") + (sig ? "sigmas" : "timesteps") + ": expected decreasing values");
      if (sig)
        t[size_t(i)] = e == 0.0 ? t_end : comfy_time(sched, e);
      else
        t[size_t(i)] = sched.integrates_in_time() ? e / n_train : (e + 1.0) / n_train;
      if (i < n && !(t[size_t(i)] > t_end && t[size_t(i)] <= sched.t_max() * (1.0 + 1e-12)))
        bad_input(std::string("sampler.") + (sig ? "sigmas" : "timesteps") + ": " + std::to_string(e) +
                  " is outside the schedule (t = " + std::to_string(t[size_t(i)]) + ")");
    }
    if (!(t[size_t(n)] >= t_end)) bad_input("sampler.sigmas / timesteps: the last value lies below t_end");
    if (spec.reverse) std::reverse(t.begin(), t.end());
    return t;
  } else if (kind == "ays") {
    // The table's sigmas, log-linearly interpolated to steps + 1 points (the table's positions
    // and the new ones both uniform on [0, 1]), from the table's own start; the last point t_end.
    if (spec.t_start >= 0) bad_input("sampler.t_start: ays starts at its table's first sigma");
    const std::vector<double>& table = ays_table(spec.ays_model);
    const int m = int(table.size()) - 1;
    for (int i = 0; i < n; ++i) {
      const double pos = double(i) * m / n;
      const int j = std::min(int(pos), m - 1);
      const double f = pos - j;
      const double sigma = std::exp((1.0 - f) * std::log(table[size_t(j)]) + f * std::log(table[size_t(j) + 1]));
      t[size_t(i)] = comfy_time(sched, sigma);
      if (!(t[size_t(i)] > t_end && t[size_t(i)] <= sched.t_max() * (1.0 + 1e-12)))
        bad_input("sampler.skip_type: ays (" + spec.ays_model + ") sigma " + std::to_string(sigma) +
                  " is outside this " + sched.name() + " schedule (VE sigma " + std::to_string(sched.ve_sigma(t_end)) +
                  " to " + std::to_string(sched.ve_sigma(sched.t_max())) + ")");
    }
    t[size_t(n)] = t_end;
    if (spec.reverse) std::reverse(t.begin(), t.end());
    return t;
  } else if (kind == "simple" || kind == "sgm_uniform") {
    // ComfyUI's simple: every (N / steps)-th training timestep from the top, t = 1 - floor(i N / steps) / N
    // (unshifted), then t_end. sgm_uniform: `steps` points uniform in unshifted time from
    // t_start down to (not including) the smallest training timestep, then t_end.
    if (sched.name() != "vp_discrete" && sched.name() != "flow")
      bad_input("sampler.skip_type: " + kind + " needs the training timesteps of a vp_discrete or flow schedule");
    const int n_train = sched.num_train_steps();
    const double u_low = sched.integrates_in_time() ? sched.unshift_time(sched.flow_match_u_min()) : 1.0 / n_train;
    for (int i = 0; i < n; ++i) {
      const double u = kind == "simple" ? u_start - std::floor(double(i) * n_train / n) / n_train
                                        : u_start + (u_low - u_start) * double(i) / double(n);
      t[size_t(i)] = sched.shift_time(u);
    }
    if (!(t[size_t(n) - 1] > t_end)) bad_input("sampler.t_end: must lie below the grid's last timestep");
  } else if (kind == "kl_optimal") {
    // Sabour et al. (2024), as ComfyUI: sigma_i = tan((1 - i/n) atan(sigma_max) + (i/n) atan(sigma_min)).
    const double a = std::atan(comfy_sigma(sched, t_start)), b = std::atan(comfy_sigma(sched, t_end));
    for (int i = 0; i <= n; ++i) t[size_t(i)] = comfy_time(sched, std::tan(lerp(a, b, i)));
  } else if (kind == "linear_quadratic") {
    // Movie Gen's schedule, as ComfyUI: 1 - f_i, f linear from 0 to threshold_noise over the
    // first linear_steps points, then quadratic up to 1 at i = n; sigma_i = sigma_max (1 - f_i).
    const int ls = spec.linear_steps < 0 ? n / 2 : spec.linear_steps;
    if (ls < 1 || ls >= n) bad_input("sampler.linear_steps: expected 1 <= linear_steps < steps (default steps / 2)");
    const double thr = spec.threshold_noise;
    if (!(thr > 0.0 && thr < 1.0)) bad_input("sampler.threshold_noise: expected a number in (0, 1)");
    const double diff = ls - thr * n, qs = n - ls;
    const double qc = diff / (ls * qs * qs), lc = thr / ls - 2.0 * diff / (qs * qs), c = qc * ls * ls;
    const double smax = comfy_sigma(sched, t_start), smin = comfy_sigma(sched, t_end);
    for (int i = 1; i < n; ++i) {
      const double f = i < ls ? i * thr / ls : qc * i * i + lc * i + c;
      const double sigma = smax * (1.0 - f);
      if (!(sigma > smin)) bad_input("sampler.skip_type: linear_quadratic reaches t_end before its last step");
      t[size_t(i)] = comfy_time(sched, sigma);
    }
  } else if (kind == "beta") {
    // Lee et al. (2024), as ComfyUI's beta scheduler: the Beta(alpha, beta) quantiles of 1 - i/n
    // in unshifted time between t_end and t_start (without ComfyUI's rounding to training timesteps).
    if (!(spec.beta_alpha > 0.0 && spec.beta_beta > 0.0)) bad_input("sampler.beta_alpha, beta_beta: expected positive");
    for (int i = 1; i < n; ++i)
      t[size_t(i)] =
          sched.shift_time(u_end + (u_start - u_end) * beta_distribution_quantile(1.0 - double(i) / n, spec.beta_alpha, spec.beta_beta));
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
  if (!spec.sigmas.empty() || !spec.timesteps.empty()) {
    resolved.skip_type = "custom";
    resolved.steps = int(std::max(spec.sigmas.size(), spec.timesteps.size())) - 1;
  }
  std::vector<double> t = make_time_grid(schedule, resolved);
  if (resolved.split == 0 && resolved.part == "all") resolved.steps = int(t.size()) - 1;  // ddim_uniform's own count
  return TimeGrid{resolved, std::move(t)};
}

}  // namespace scorch
