// Teleport's skip rule (samplers/teleport.cpp, docs/samplers.md "Choosing the skip point").
//
// A jump to t_k replaces the network's flow over [t_k, t_start] by a cheap model's. The error
// it causes is measured on a probe batch, not modelled: the network's own trajectory from the
// probe noise, solved finely through every candidate point, is the reference; each candidate
// then runs the run's own inner sampler (its steps and grid) from the jumped state, and
//   total_error(k) = RMS(inner(jump(x_T, t_k)) - x_ref(t_end))      the result's error,
//   jump_error(k)  = RMS(inner(jump(x_T, t_k)) - inner(x_ref(t_k)))  the jump's share of it
// (RMS over every element of the probe batch). The rule picks the candidate with the least
// total error for the requested number of network calls; candidate 0 (t_start) is no jump.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <vector>

#include "scorch/sampler.h"

namespace scorch {

struct SkipEstimate {
  double t = 0.0;                 // the candidate skip point
  double sigma = 0.0;             // its VE noise level sigma/alpha
  double total_error = 0.0;       // RMS error of the result against the reference
  double jump_error = -1.0;       // the jump's share; -1 where not computed
};

struct SkipSearch {
  int candidates = 20;      // probe-grid points tried (the grid's first `candidates` points)
  int ref_steps = 3;        // reference dpmpp_2m steps per probe-grid interval
  bool jump_errors = true;  // also run inner(x_ref(t_k)) for every candidate's jump_error
  double stop_ratio = 0.0;  // > 0: stop once a candidate's total error exceeds this times the best so far
};

// x_T: the probe batch's noise at t_start; `probe`: the grid whose points are the candidates
// (its first point t_start, its last t_end; the reference solves it refined ref_steps times);
// `inner`/`inner_spec`: the run's inner sampler and grid kind (its t_start is replaced by
// each candidate). `jump(x, t_k)` moves x from t_start to t_k
// with the cheap model. Every network call goes through ctx (its nfe() counts them).
std::vector<SkipEstimate> estimate_skip_errors(SamplerContext& ctx, const at::Tensor& x_T,
                                               const GridSpec& probe, Sampler& inner,
                                               const GridSpec& inner_spec,
                                               const std::function<at::Tensor(const at::Tensor&, double)>& jump,
                                               const SkipSearch& search);

}  // namespace scorch
