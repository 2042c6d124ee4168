// Time grids t_0 = t_start > t_1 > ... > t_N = t_end for continuous samplers.
#pragma once

#include <string>
#include <vector>

#include "scorch/schedule.h"

namespace scorch {

struct GridSpec {
  // logSNR | time_uniform | time_quadratic (official DPM-Solver, get_time_steps)
  // karras | exponential (k-diffusion, in VE sigma = sigma/alpha)
  // flow_match (diffusers' FlowMatchEulerDiscreteScheduler)
  // linspace | leading | trailing (diffusers' timestep_spacing, vp_discrete; spaced_timesteps)
  // simple | sgm_uniform | kl_optimal | linear_quadratic | beta | ays (ComfyUI's schedulers; below)
  // gits: searched with the model (samplers/gits.h), then a custom list
  // auto: the schedule's default (flow_match on flow, schedule.timestep_spacing on
  // vp_discrete when set, logSNR otherwise)
  std::string skip_type = "auto";
  int steps = 20;
  double t_start = -1.0;  // < 0: the schedule's t_max
  double t_end = -1.0;    // < 0: the schedule's t_min
  double rho = 7.0;       // karras only
  bool reverse = false;   // inversion: the same grid from t_end up to t_start
  // what `auto` is on a flow schedule (the sampler's SamplerEntry::flow_grid); empty: flow_match
  std::string flow_auto;
  // ComfyUI's schedulers, in the schedule's sigma (VE sigma/alpha; flow: t):
  //   simple | sgm_uniform (the training timesteps), kl_optimal, linear_quadratic, beta.
  double threshold_noise = 0.025;  // linear_quadratic
  int linear_steps = -1;           // linear_quadratic; < 0: steps / 2
  double beta_alpha = 0.6, beta_beta = 0.6;  // beta
  std::string ays_model = "SD1";              // ays: SD1 | SDXL | SVD (Align Your Steps' tables)
  // gits (gits.h): the search's settings, and the searched times once the pipeline ran it.
  double gits_coeff = 1.2;
  int gits_teacher_steps = 100, gits_warmup = 32;
  std::vector<double> gits_times;
  // A given list instead of a formula (steps = its length - 1): `sigmas` in the schedule's
  // sigma (VE sigma/alpha; flow: t), decreasing, a final 0 meaning t_end; `timesteps` as
  // training timesteps k (t = (k + 1) / N; flow: t = k / N), decreasing.
  std::vector<double> sigmas, timesteps;
  // ComfyUI's SplitSigmas for two-stage sampling: the first `split` steps (part: high) or the
  // rest (part: low) of the grid; 0 and part all: the whole grid.
  int split = 0;
  std::string part = "all";
};

// The valid skip_type names, for error messages and `scorch samplers`.
const std::vector<std::string>& skip_types();

// spec.skip_type with `auto` resolved for this schedule.
std::string resolve_skip_type(const Schedule& schedule, const GridSpec& spec);

// The Beta(a, b) distribution's quantile of p (the beta grid's; exposed for its test).
double beta_distribution_quantile(double p, double a, double b);

// steps + 1 decreasing times (increasing with spec.reverse). Throws a bad-input Error on an invalid spec.
std::vector<double> make_time_grid(const Schedule& schedule, const GridSpec& spec);

// A built grid: what a sampler runs on (skip_type `auto` resolved). The pipeline builds it once from the sampler's
// grid keys; `spec` stays with it for the samplers whose update needs points of the same
// kind between grid points (singlestep DPM-Solver's intermediate fractions).
struct TimeGrid {
  GridSpec spec;
  std::vector<double> t;  // t[0] first (t_start, or t_end for an inversion) ... t[steps]
  int steps() const { return int(t.size()) - 1; }
  bool reverse() const { return spec.reverse; }
};
TimeGrid build_time_grid(const Schedule& schedule, const GridSpec& spec);

}  // namespace scorch
