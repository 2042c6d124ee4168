// Progress reporting shared by samplers, the pipeline, the CLI and the C API.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <limits>

namespace scorch {

struct StepInfo {
  int step = 0;   // steps done
  int total = 0;  // steps in the run
  int64_t nfe = 0;
  double t = 0.0;
  double elapsed_s = 0.0;
  double acceptance = std::numeric_limits<double>::quiet_NaN();  // MCMC corrector acceptance rate at this step (NaN: none)
  at::Tensor x0;  // the latest data prediction x0(x_t, t) (a preview of the result); may be undefined
};

// Called after every step; returning false cancels the run.
using ProgressFn = std::function<bool(const StepInfo&)>;

}  // namespace scorch
