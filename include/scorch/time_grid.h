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
};

// The valid skip_type names, for error messages and `scorch samplers`.
const std::vector<std::string>& skip_types();

// spec.skip_type with `auto` resolved for this schedule.
std::string resolve_skip_type(const Schedule& schedule, const GridSpec& spec);

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
