// LCM's multistep sampling (Luo et al. 2023, Alg. 1; k-diffusion / ComfyUI `sample_lcm`) for
// consistency-distilled models, whose data prediction is the end of the whole trajectory:
//   x0 = f(x_{t_i}, t_i),   x_{t_{i+1}} = alpha_{t_{i+1}} x0 + sigma_{t_{i+1}} z,
// fresh noise z per step (each sample's own stream), the last step x0 itself. 1 NFE/step.
#include <ATen/ATen.h>

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

std::vector<SamplerEntry> lcm_rows() {
  return {
      {"lcm", "LCM multistep sampling for consistency-distilled models: x0, then re-noised to the next time. 1 NFE/step",
       {}, function_sampler(sample_lcm, Endpoints::Own), {}, {}, "flow_match"},
  };
}

}  // namespace scorch
