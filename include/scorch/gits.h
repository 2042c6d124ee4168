// GITS (Chen et al. 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling"): a
// time grid fitted to the model. A teacher solves the PF-ODE from `warmup` probe samples on a
// fine grid (teacher_steps Heun steps on the schedule's default grid) in the frame the
// k-diffusion samplers integrate in (y, s) (sampler.h, OdeFrame). The cost of jumping from
// teacher point i to j with one Euler step is
//   C_ij = mean over probes of || y_i + (s_j - s_i) d_i - y_j ||_2,
// and dynamic programming picks the K-step path from the first point to the last with the
// least accumulated cost, each earlier jump weighted by coeff (the paper's Eq. 8):
//   V_j(1) = C_{j,last},  V_j(k) = min_{j < i < last} C_ji + coeff V_i(k - 1).
// The chosen points become a custom grid (sampler.sigmas), so the resolved config records them.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "scorch/time_grid.h"

namespace scorch {

class Denoiser;
class Schedule;

struct GitsSpec {
  int steps = 10;           // K
  int teacher_steps = 100;  // the teacher's grid has teacher_steps + 1 points
  double coeff = 1.2;       // ComfyUI's GITSScheduler default
};

// The K-step path through the cost matrix [n][n] (i < j used) from 0 to n - 1: K + 1 indices.
std::vector<int> gits_path(const std::vector<std::vector<double>>& cost, int steps, double coeff);

// The searched grid: steps + 1 times from the teacher grid `teacher` (its t_start and t_end,
// `teacher_steps` steps), probes x_T [warmup, ...] with conditions cond (undefined: none).
std::vector<double> gits_search(Denoiser& model, const Schedule& schedule, GridSpec teacher, const GitsSpec& spec,
                                const at::Tensor& x_T, const at::Tensor& cond);

}  // namespace scorch
