// MCMC correctors run after sampler steps (predictor-corrector sampling; Song et al. 2021,
// and the annealed MCMC of Du et al. 2023, "Reduce, Reuse, Recycle"). At the time t of the
// step just taken they move x towards the current noised marginal p_t, whose score the
// denoiser gives (score = -eps / sigma_t):
//   ula    x' = x + e s(x) + sqrt(2 e) xi,                 e = step_size sigma_t^2
//   mala   the ula proposal, accepted with probability
//          min(1, p(x') q(x | x') / (p(x) q(x' | x))),  q(x' | x) = N(x'; x + e s(x), 2 e I)
//   hmc    momentum v ~ N(0, I), `leapfrog` leapfrog steps of size e = step_size sigma_t,
//          accepted with probability min(1, exp(H(x, v) - H(x', v'))), H = -log p + |v|^2 / 2
//   uhmc   unadjusted HMC: the momentum is kept and partially refreshed,
//          v = damping v + sqrt(1 - damping^2) xi, then leapfrog, no accept step
// The step sizes scale with sigma_t (sigma_t^2 for the Langevin ones), times a factor that
// mala and hmc adapt after every accept step towards the target acceptance rate (0.57 for
// mala, Roberts & Rosenthal 1998; 0.65 for hmc), each sample by its own acceptance
// probability a_i = min(1, e^{log ratio_i}): f_i <- f_i exp(a_i - target), so that no sample
// depends on the others. The
// factor carries over from step to step, so it grows where the marginal is much wider
// than sigma_t (at low noise, where sigma_t-sized steps would not mix). `adapt: false`
// keeps f = 1. mala and hmc need log p_t (Denoiser::log_density).
#pragma once

#include <ATen/core/Tensor.h>

#include <limits>
#include <string>

namespace scorch {

class SamplerContext;

struct CorrectorSpec {
  std::string type;  // "" (none) | ula | mala | hmc | uhmc
  double step_size = 0.1;
  int steps = 1;           // corrector iterations per sampler step
  int leapfrog = 3;        // hmc, uhmc
  double damping = 0.7;    // uhmc momentum persistence
  bool adapt = true;       // mala, hmc: adapt the step size towards the target acceptance
  double t_min = 0.0;      // window: correct after steps ending at t in [t_min, t_max]
  double t_max = std::numeric_limits<double>::infinity();
  bool active(double t) const { return !type.empty() && t >= t_min && t <= t_max; }
};

// Validates the spec (bad-input Errors name `where`).
void check_corrector(const CorrectorSpec& c, const std::string& where);

// Runs c.steps iterations at time t; returns the corrected x and sets *acceptance to the
// fraction of accepted proposals (NaN for ula and uhmc, which accept everything).
// *factor: each sample's adapted step-size factor f_i, float64 [batch], carried from call to
// call (undefined at the start: all 1).
at::Tensor run_corrector(SamplerContext& ctx, const CorrectorSpec& c, at::Tensor x, double t, double* acceptance,
                         at::Tensor* factor);

}  // namespace scorch
