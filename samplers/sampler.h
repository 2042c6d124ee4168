// The continuous-sampler interface. A sampler is a plain function of
// (context, x_T, time grid, options): it owns no model and does no I/O. The
// context evaluates the denoiser (counting NFE, rejecting non-finite output),
// draws seeded noise, and reports progress (which may cancel the run).
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <string>
#include <vector>

#include "scorch/denoiser.h"
#include "scorch/options.h"
#include "scorch/progress.h"
#include "scorch/rng.h"
#include "scorch/schedule.h"
#include "scorch/time_grid.h"

namespace scorch {

class SamplerContext {
 public:
  SamplerContext(Denoiser& model, const Schedule& schedule, Rng& rng, at::Tensor cond = {},
                 ProgressFn progress = {});

  // One model evaluation: counts it and fails with the step number on non-finite output.
  Prediction denoise(const at::Tensor& x, double t);
  at::Tensor noise_like(const at::Tensor& x) { return rng_.normal_like(x); }
  // Marks step `step` of `total` (1-based) done at time t; may throw a cancelled Error.
  void end_step(int step, int total, double t);

  const Schedule& schedule() const { return schedule_; }
  int64_t nfe() const { return nfe_; }

 private:
  Denoiser& model_;
  const Schedule& schedule_;
  Rng& rng_;
  at::Tensor cond_;
  ProgressFn progress_;
  int64_t nfe_ = 0;
  int step_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// t: the time grid t_0 = t_start > ... > t_N = t_end from make_time_grid.
using SamplerFn = at::Tensor (*)(SamplerContext& ctx, at::Tensor x, const std::vector<double>& t,
                                 const Options& options);

struct SamplerInfo {
  std::string name;
  std::string summary;
  std::vector<OptionSpec> options;  // the sampler's own options (the grid options come on top)
  SamplerFn run;
};

// The explicit registry table (samplers/registry.cpp).
const std::vector<SamplerInfo>& samplers();
// Throws a bad-input Error listing the registered names when `name` is unknown.
const SamplerInfo& find_sampler(const std::string& name);

// Options every continuous sampler takes: steps and the time grid.
const std::vector<OptionSpec>& grid_options();
// grid_options() followed by the sampler's own.
std::vector<OptionSpec> all_options(const SamplerInfo& sampler);
GridSpec grid_spec(const Options& options);

// The sampler families (one file each).
at::Tensor sample_ddim(SamplerContext&, at::Tensor, const std::vector<double>&, const Options&);
at::Tensor sample_euler(SamplerContext&, at::Tensor, const std::vector<double>&, const Options&);
at::Tensor sample_euler_ancestral(SamplerContext&, at::Tensor, const std::vector<double>&, const Options&);
at::Tensor sample_heun(SamplerContext&, at::Tensor, const std::vector<double>&, const Options&);

}  // namespace scorch
