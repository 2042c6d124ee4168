// Empirical model statistics (EMS) of DPM-Solver-v3 (Zheng et al. 2023, arXiv 2310.13268):
// per-dimension coefficients l, s, b on a grid of half-logSNR values lambda, which choose
// the solver's parameterisation of the model (docs/dpm_solver_v3.md).
//
// With N(x, lambda) = sigma eps(x, lambda) - l x and f = N / alpha (the prediction the
// solver integrates), the probability-flow ODE in y = x / alpha reads
//   dy/dlambda = -l y - f,
// and the statistics are the minimisers (per dimension d, over x ~ p_lambda)
//   l_d = argmin E ||d N / d x||_F^2 = E[sigma d eps_d / d x_d]             (paper eq. 9)
//   (s_d, b_d) = argmin E (f'_d - s_d f_d - b_d)^2                          (paper eq. 10)
// where f' is the total derivative of f along the ODE trajectory (l's own change
// included). With them, g = e^{-int s} f - int e^{-int s} b is as flat in lambda as a
// line fit makes it, and the solver's Taylor expansion of g is the accurate one.
// l = 1, s = b = 0 ("trivial" statistics) give g = -x0: DPM-Solver++.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace scorch {

class Denoiser;
class Schedule;
struct GaussianModel;

struct Ems {
  at::Tensor lambda;            // [M + 1] float64, increasing (the noisy end first)
  at::Tensor l, s, b;           // [M + 1, *shape] float64
  at::Tensor l_se, s_se, b_se;  // their standard errors (estimates only; else undefined)
  std::map<std::string, std::string> metadata;  // scorch.type = ems, model, schedule, settings

  int64_t points() const { return lambda.size(0); }
};

// l = 1, s = b = 0 on `lambda`.
Ems trivial_ems(const at::Tensor& lambda, const std::vector<int64_t>& shape);

// The exact statistics of a Gaussian data set under its own exact denoiser (the model's
// eps is affine in x, so every expectation is a closed-form moment of x ~ N(alpha mu,
// alpha^2 Sigma + sigma^2 I)); lambda's derivatives of the affine maps by central
// differences in float64. Dense D x D algebra: meant for D up to a few hundred.
Ems gaussian_ems(const GaussianModel& model, const Schedule& schedule, const at::Tensor& lambda);

struct EmsEstimate {
  int64_t grid = 64;           // M: the grid has M + 1 points, uniform in lambda
  double lambda_min = 0.0, lambda_max = 0.0;
  int64_t batch = 256;         // samples per model call
  int64_t probes = 1;          // Rademacher probes per sample for l
  // Central-difference steps of the Jacobian-vector products (x units) and of the total
  // lambda-derivative; 0: 1e-3 for float64 samples, 1e-2 for float32 (round-off against
  // truncation).
  double jacobian_step = 0.0;
  double lambda_step = 0.0;
  uint64_t seed = 0;
};

// Estimates the statistics from data samples x0 [N, *shape] (noised at each grid point with
// fresh Gaussian noise): l by Hutchinson's estimator of the Jacobian's diagonal (Rademacher
// probes, Jacobian-vector products by central differences) and its lambda-derivative with
// common random numbers, then s and b by a least-squares line per dimension of f' on f, f'
// by central differences along the ODE trajectory. Costs 6 probes + 3 model calls per
// sample and grid point. `cond` [N] labels or undefined; `progress` (grid points done, of
// total) may be empty.
Ems estimate_ems(Denoiser& model, const Schedule& schedule, const at::Tensor& x0, const at::Tensor& cond,
                 const EmsEstimate& options, const std::function<void(int64_t, int64_t)>& progress = {});

void write_ems(const std::string& path, const Ems& ems);
// Every problem (not an EMS file, missing or mis-shaped tensors, a grid that is not
// increasing, non-finite values) is a bad-input Error naming `what`.
Ems read_ems(const std::string& path, const std::string& what);

// The integrals of the DPM-Solver-v3 update (the official implementation's L, S, I, B, C),
// evaluated at the sampler's own lambda points: l, s, b are linear between grid points, so
// L = int l and S = int s are exact, and I = int e^{L+S}, B = int e^{-S} b,
// C = int e^{L+S} B and the Taylor coefficients are Gauss-Legendre quadratures on every
// piece between grid and sampler points (exact to float64 round-off for smooth l, s, b).
class EmsIntegrals {
 public:
  // `points`: the lambdas the solver steps through; each must lie in the grid's range.
  EmsIntegrals(const Ems& ems, std::vector<double> points);
  struct At {
    at::Tensor l, L, S, I, B, C;  // [*shape] float64
  };
  // At one of the points given (exactly).
  const At& at(double lambda) const;
  // K_n(s, t) = int_s^t e^{L_r + S_r - L_s - S_s} (r - s)^n / n! dr, n >= 1.
  at::Tensor taylor(double s, double t, int n) const;

 private:
  std::vector<double> nodes_;        // sorted grid and solver points
  std::vector<At> values_;           // at each node
  at::Tensor lambda_, l_, s_, b_;    // the grid
  at::Tensor interpolate(const at::Tensor& v, double lambda) const;
  size_t node(double lambda) const;
};

}  // namespace scorch
