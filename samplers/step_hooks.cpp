#include "scorch/step_hooks.h"

#include <ATen/ATen.h>

namespace scorch {

namespace {

// Where sigma_t = 0 (flow's t = 0) the marginal is the data itself, the score is undefined and
// the Langevin and HMC step sizes (proportional to sigma_t^2 and sigma_t) are 0: no correction.
bool correctable(const SamplerContext& ctx, const CorrectorSpec& spec, double t) {
  return spec.active(t) && ctx.schedule().sigma(t) > 0.0;
}

}  // namespace

at::Tensor CorrectorHook::after_step(SamplerContext& ctx, at::Tensor x, StepEnd& step) {
  if (!correctable(ctx, spec_, step.t)) return x;
  step.changed = true;
  return run_corrector(ctx, spec_, x, step.t, &step.acceptance, &factor_);
}

at::Tensor InpaintHook::after_step(SamplerContext& ctx, at::Tensor x, StepEnd& step) {
  const Schedule& ns = ctx.schedule();
  const at::Tensor known_t = ns.alpha(step.t) * known_ + ns.sigma(step.t) * ctx.noise_like(x);
  x = at::lerp(known_t, x, mask_);
  if (!correctable(ctx, corrector_, step.t)) return x;
  CorrectorSpec one = corrector_;
  one.steps = 1;
  for (int k = 0; k < corrector_.steps; ++k)
    x = at::lerp(known_t, run_corrector(ctx, one, x, step.t, &step.acceptance, &factor_), mask_);
  step.changed = true;
  return x;
}

TrajectoryHook::TrajectoryHook(const at::Tensor& x_T) : states_{x_T.clone()} {}

at::Tensor TrajectoryHook::after_step(SamplerContext&, at::Tensor x, StepEnd&) {
  states_.push_back(x.clone());
  return x;
}

}  // namespace scorch
