// Restart sampling (Xu et al. 2023, "Restart Sampling for Improving Generative Processes"), as
// k-diffusion's sample_restart: Heun steps on the grid, and when the grid reaches the restart
// point s_min (the grid point nearest restart_sigma_min, in VE sigma = sigma/alpha; flow: the
// same of t), `restart_times` times: add noise from s_min back up to s_max (the grid point
// nearest restart_sigma_max),
//   y <- y + s_noise sqrt(s_max^2 - s_min^2) z          (VE variables y = x / alpha),
// then `restart_steps` Heun steps down again on a Karras grid (rho 7) from s_max to s_min.
// The forward jump is the exact forward process, so a run that is exact between the jumps
// stays exact; the repeated contraction removes the error accumulated above s_min. Without
// restarts (restart_times 0) it is `heun`. 2 NFE per Heun step (1 into sigma = 0).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "scorch/sampler.h"

namespace scorch {

namespace {

size_t nearest(const std::vector<double>& sigma, double target) {
  size_t best = 0;
  for (size_t i = 1; i < sigma.size(); ++i)
    if (std::abs(sigma[i] - target) < std::abs(sigma[best] - target)) best = i;
  return best;
}

}  // namespace

at::Tensor sample_restart(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& o) {
  const Schedule& ns = ctx.schedule();
  const std::vector<double>& t = grid.t;
  const int n = int(t.size()) - 1;
  std::vector<double> sigma;
  for (double ti : t) sigma.push_back(ns.ve_sigma(ti));
  // k-diffusion's defaults by step count: {0.1: [10, 2, 2]} from 20 steps, [6, 2, 2] from 10, else [4, 1, 2].
  const int steps_default = n >= 20 ? 10 : n >= 10 ? 6 : 4, times_default = n >= 10 ? 2 : 1;
  const int r_steps = o.integer("restart_steps") > 0 ? int(o.integer("restart_steps")) : steps_default;
  const int r_times = o.integer("restart_times") >= 0 ? int(o.integer("restart_times")) : times_default;
  const size_t min_idx = nearest(sigma, o.number("restart_sigma_min"));
  const size_t max_idx = nearest(sigma, o.number("restart_sigma_max"));
  const double s_noise = o.number("s_noise");
  for (int i = 0; i < n; ++i) {
    x = heun_step(ctx, x, t[i], t[i + 1]);
    if (size_t(i) + 1 == min_idx && max_idx < min_idx && min_idx < size_t(n)) {
      // The restart grid: Karras from s_max down to s_min, r_steps intervals.
      const double a = std::pow(sigma[max_idx], 1.0 / 7.0), b = std::pow(sigma[min_idx], 1.0 / 7.0);
      std::vector<double> tr;
      for (int k = 0; k <= r_steps; ++k) tr.push_back(ns.t_of_ve_sigma(std::pow(a + (b - a) * k / r_steps, 7.0)));
      tr.front() = t[max_idx];
      tr.back() = t[min_idx];
      for (int r = 0; r < r_times; ++r) {
        // Forward jump in VE variables, exact: y_max = y_min + sqrt(s_max^2 - s_min^2) z.
        const double jump = std::sqrt(sigma[max_idx] * sigma[max_idx] - sigma[min_idx] * sigma[min_idx]);
        x = ns.alpha(t[max_idx]) * (x / ns.alpha(t[min_idx]) + (s_noise * jump) * ctx.noise_like(x));
        for (int k = 0; k < r_steps; ++k) x = heun_step(ctx, x, tr[size_t(k)], tr[size_t(k) + 1]);
      }
    }
    x = ctx.end_step(i + 1, n, t[i + 1], x);
  }
  return x;
}

std::vector<SamplerEntry> restart_rows() {
  return {
      {"restart", "Restart sampling (Xu et al. 2023): Heun, with jumps back up from restart_sigma_min to "
                  "restart_sigma_max and Heun down again. 2 NFE per Heun step",
       {{"restart_sigma_min", OptionType::Number, "0.1", "the restart point (VE sigma; the nearest grid point)", {}, 0, 1e6},
        {"restart_sigma_max", OptionType::Number, "2", "where a restart jumps back to (the nearest grid point)", {}, 0, 1e6},
        {"restart_steps", OptionType::Int, "0", "Heun steps of each restart (0: 10 from 20 steps, 6 from 10, else 4)", {}, 0, 1000},
        {"restart_times", OptionType::Int, "-1", "restarts (-1: 2 from 10 steps, else 1)", {}, -1, 1000},
        {"s_noise", OptionType::Number, "1", "scale of the added noise", {}, 0, 100}},
       function_sampler(sample_restart, Endpoints::Runner), {}, {"restart_times"}},
  };
}

}  // namespace scorch
