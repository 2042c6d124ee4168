// Analytic Gaussian teleportation (Wang & Vastola 2024, "The Unreasonable Effectiveness
// of Gaussian Score Approximation for Diffusion Models"): at high noise the learned
// score is nearly that of the data's Gaussian N(mu, Sigma), so the start of the
// trajectory is replaced by the exact Gaussian probability-flow map
//   x_skip = alpha_skip mu + U diag(sqrt((alpha_skip^2 lam + sigma_skip^2)/(alpha_T^2 lam + sigma_T^2))) U^T d
//            + (sigma_skip / sigma_T)(d - U U^T d),   d = x_T - alpha_T mu,
// and any registered sampler (`inner`) runs from t_skip to t_end.
#include <ATen/ATen.h>

#include <cmath>

#include "sampler.h"
#include "scorch/error.h"
#include "scorch/gaussian.h"
#include "scorch/io.h"

namespace scorch {

const std::vector<OptionSpec>& teleport_options() {
  static const std::vector<OptionSpec> specs = {
      {"gaussian", OptionType::String, "", "the data's Gaussian (a `gaussian` safetensors file)", {}},
      {"t_skip", OptionType::Number, "-1", "skip point as a time", {}},
      {"sigma_skip", OptionType::Number, "-1", "skip point as a VE noise level sigma/alpha", {}},
      {"skip_fraction", OptionType::Number, "-1", "skip point as a fraction of this entry's own grid (steps)", {}},
      {"auto", OptionType::Bool, "false", "choose the skip point from the denoiser (see docs/samplers.md)", {}},
      {"auto_tol", OptionType::Number, "0.02", "auto: relative eps departure from the Gaussian that ends the jump", {}},
      {"auto_probe", OptionType::Int, "64", "auto: samples of the batch probed", {}},
      {"inner", OptionType::Section, "", "the sampler run from the skip point: name and its options", {}},
  };
  return specs;
}

namespace {

// auto: walk the probe grid from t_start down; at each point teleport a probe batch
// there and compare the denoiser's eps with the Gaussian's. The skip point is the
// last point where the relative RMS departure is at most tol (the largest t where
// the prediction departs by more than tol ends the jump).
double auto_skip(SamplerContext& ctx, const GaussianModel& g, const at::Tensor& x, const std::vector<double>& t,
                 double tol, int64_t probe) {
  const Schedule& ns = ctx.schedule();
  const at::Tensor xp = x.narrow(0, 0, std::min<int64_t>(probe, x.size(0)));
  double t_skip = t.front();
  for (size_t k = 1; k + 1 < t.size(); ++k) {
    const double a = ns.alpha(t[k]), s = ns.sigma(t[k]);
    const at::Tensor xk = gaussian_flow(g, xp, ns.alpha(t[0]), ns.sigma(t[0]), a, s);
    const at::Tensor eps_model = ctx.denoise(xk, t[k]).eps;
    const at::Tensor eps_gauss = from_model_output(PredictionType::X0, gaussian_x0(g, xk, a, s), xk, a, s).eps;
    const double dev = ((eps_model - eps_gauss).norm() / eps_gauss.norm()).item<double>();
    if (!(dev <= tol)) break;
    t_skip = t[k];
  }
  return t_skip;
}

}  // namespace

at::Tensor sample_teleport(SamplerContext& ctx, at::Tensor x, const GridSpec& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  if (grid.reverse) bad_input("sampler: teleport cannot run an inversion");
  if (o.str("gaussian").empty()) bad_input("sampler.gaussian: teleport needs the data's Gaussian model file");
  GaussianModel g = load_gaussian(find_input_file(o.str("gaussian"))).to(x.options());
  if (g.dim() != x[0].numel())
    bad_input("sampler.gaussian: the Gaussian has D = " + std::to_string(g.dim()) + ", the samples " +
              std::to_string(x[0].numel()));

  // The skip point: exactly one of t_skip, sigma_skip, skip_fraction, auto.
  const std::vector<double> t = make_time_grid(ns, grid);
  const int given = (o.number("t_skip") >= 0) + (o.number("sigma_skip") >= 0) + (o.number("skip_fraction") >= 0) +
                    o.flag("auto");
  if (given != 1) bad_input("sampler: teleport needs exactly one of t_skip, sigma_skip, skip_fraction, auto");
  double t_skip;
  if (o.number("t_skip") >= 0) {
    t_skip = o.number("t_skip");
  } else if (o.number("sigma_skip") >= 0) {
    t_skip = ns.t_of_ve_sigma(o.number("sigma_skip"));
  } else if (o.number("skip_fraction") >= 0) {
    const double f = o.number("skip_fraction");
    if (f > 1.0) bad_input("sampler.skip_fraction: expected a number in [0, 1]");
    t_skip = t[size_t(std::lround(f * grid.steps))];
  } else {
    t_skip = auto_skip(ctx, g, x, t, o.number("auto_tol"), o.integer("auto_probe"));
  }
  if (!(t_skip <= t.front() && t_skip >= t.back()))
    bad_input("sampler.t_skip: " + std::to_string(t_skip) + " is outside [t_end, t_start] = [" +
              std::to_string(t.back()) + ", " + std::to_string(t.front()) + "]");
  ctx.note("teleport: skip point t = " + std::to_string(t_skip) + " (sigma/alpha = " +
           std::to_string(ns.sigma(t_skip) / ns.alpha(t_skip)) + ")");
  x = gaussian_flow(g, x, ns.alpha(t.front()), ns.sigma(t.front()), ns.alpha(t_skip), ns.sigma(t_skip));

  // The inner sampler, from the skip point to t_end.
  std::map<std::string, std::string> raw = o.section("inner");
  const std::string name = raw.count("name") ? raw["name"] : "dpmpp_2m";
  raw.erase("name");
  if (name == "teleport") bad_input("sampler.inner.name: teleport cannot wrap itself");
  const SamplerInfo& inner = find_sampler(name);
  if (raw.count("t_start")) bad_input("sampler.inner.t_start: the inner sampler starts at the skip point");
  const bool none = raw.count("steps") && raw["steps"] == "0";
  if (none || t_skip <= t.back()) return x;  // the jump reached t_end: no inner steps
  const Options io = parse_sampler_options(inner, raw);
  GridSpec ig = grid_spec(io);
  ig.t_start = t_skip;
  if (!raw.count("t_end")) ig.t_end = t.back();
  return inner.run(ctx, x, ig, io);
}

}  // namespace scorch
