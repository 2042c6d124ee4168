// The step hooks the pipeline installs on a SamplerContext (include/scorch/sampler.h):
// policies that act between a sampler's steps, kept out of the samplers themselves.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "scorch/corrector.h"
#include "scorch/sampler.h"

namespace scorch {

// MCMC corrector iterations after every step whose time lies in the corrector's window
// (scorch/corrector.h); the adapted step-size factor carries over from step to step.
class CorrectorHook final : public StepHook {
 public:
  explicit CorrectorHook(CorrectorSpec spec) : spec_(std::move(spec)) {}
  at::Tensor after_step(SamplerContext& ctx, at::Tensor x, StepEnd& step) override;

 private:
  CorrectorSpec spec_;
  at::Tensor factor_;  // per-sample step-size factors (corrector.h)
};

// Inpainting by replacement (RePaint without its resampling, Lugmayr et al. 2022): after
// every step at time t, x = m x + (1 - m) (alpha(t) x_known + sigma(t) z) with fresh noise
// z, so the known part follows the forward process of x_known. A corrector's iterations
// alternate with the replacement (a Gibbs sweep: they sample the generated part from
// p_t(x_gen | x_kept) instead of moving both). m broadcasts to x: 1 where new content is
// generated, 0 where x_known is kept.
class InpaintHook final : public StepHook {
 public:
  InpaintHook(at::Tensor known, at::Tensor mask, CorrectorSpec corrector)
      : known_(std::move(known)), mask_(std::move(mask)), corrector_(std::move(corrector)) {}
  at::Tensor after_step(SamplerContext& ctx, at::Tensor x, StepEnd& step) override;

 private:
  at::Tensor known_, mask_;
  CorrectorSpec corrector_;
  at::Tensor factor_;  // per-sample step-size factors (corrector.h)
};

// Keeps the state after every step (output.trajectory); the first entry is x_T. Install it
// last, so that it sees what the other hooks made of each step.
class TrajectoryHook final : public StepHook {
 public:
  explicit TrajectoryHook(const at::Tensor& x_T);
  at::Tensor after_step(SamplerContext& ctx, at::Tensor x, StepEnd& step) override;
  const std::vector<at::Tensor>& states() const { return states_; }

 private:
  std::vector<at::Tensor> states_;
};

}  // namespace scorch
