// LCM's multistep sampling (Luo et al. 2023, Alg. 1; k-diffusion / ComfyUI `sample_lcm`) for
// consistency-distilled models, whose data prediction is the end of the whole trajectory:
//   x0 = f(x_{t_i}, t_i),   x_{t_{i+1}} = alpha_{t_{i+1}} x0 + sigma_{t_{i+1}} z,
// fresh noise z per step (each sample's own stream), the last step x0 itself. 1 NFE/step.
//
// TCD (Zheng et al. 2024, "Trajectory Consistency Distillation"; diffusers' TCDScheduler):
// from t_i a deterministic DDIM step down to s = (1 - gamma) t_{i+1}, then the forward
// process back up to t_{i+1}:
//   x_s = alpha_s x0 + sigma_s eps,
//   x_{t_{i+1}} = (alpha' / alpha_s) x_s + sqrt(sigma'^2 - (alpha' sigma_s / alpha_s)^2) z,
// the last step ending at s. gamma = 0 is DDIM, gamma = 1 is LCM.
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "scorch/error.h"
#include "scorch/sampler.h"

namespace scorch {

at::Tensor sample_lcm(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options&) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const int n = int(t.size()) - 1;
  for (int i = 0; i < n; ++i) {
    const Prediction p = ctx.denoise(x, t[i]);
    const double sigma_next = ns.sigma(t[i + 1]);
    x = sigma_next > 0.0 && i + 1 < n
            ? ns.alpha(t[i + 1]) * p.x0 + sigma_next * ctx.noise_between(x, t[i], t[i + 1])
            : p.x0;
    x = ctx.end_step(i + 1, n, t[i + 1], x);
  }
  return x;
}

at::Tensor sample_tcd(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const double gamma = o.number("gamma");
  if (!(gamma >= 0.0 && gamma <= 1.0)) bad_input("sampler.gamma: expected a number in [0, 1]");
  const int n = int(t.size()) - 1;
  for (int i = 0; i < n; ++i) {
    const Prediction p = ctx.denoise(x, t[i]);
    const double t_s = (1.0 - gamma) * t[i + 1];
    const double a_s = ns.alpha(t_s), s_s = ns.sigma(t_s);
    x = lincomb({{a_s, p.x0}, {s_s, p.eps}});
    const double a_next = ns.alpha(t[i + 1]), s_next = ns.sigma(t[i + 1]);
    if (i + 1 < n && t_s < t[i + 1]) {
      const double r = a_next / a_s, var = s_next * s_next - r * r * s_s * s_s;
      x = lincomb({{r, x}, {std::sqrt(std::max(var, 0.0)), ctx.noise_between(x, t[i], t[i + 1])}});
    }
    x = ctx.end_step(i + 1, n, t[i + 1], x);
  }
  return x;
}

std::vector<SamplerEntry> lcm_rows() {
  return {
      {"lcm", "LCM multistep sampling for consistency-distilled models: x0, then re-noised to the next time. 1 NFE/step",
       {}, function_sampler(sample_lcm, Endpoints::Own), {}, {}, "flow_match"},
      {"tcd", "TCD (Zheng et al. 2024): DDIM down to (1 - gamma) t', then the forward process up to t'. 1 NFE/step",
       {{"gamma", OptionType::Number, "0.3", "stochasticity: 0 is DDIM, 1 is LCM", {}, 0, 1}},
       function_sampler(sample_tcd, Endpoints::Own), {}, {"gamma"}, "flow_match"},
  };
}

}  // namespace scorch
