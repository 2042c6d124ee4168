// Test helper: a mixture of diagonal Gaussians sum_k pi_k N(m_k, diag(v_k)) as a
// Denoiser. Under x_t = alpha x0 + sigma eps each component's marginal is
// N(alpha m_k, diag(alpha^2 v_k + sigma^2)), so the posterior mean is
//   E[x0 | x_t] = sum_k r_k(x_t) (m_k + alpha v_k / (alpha^2 v_k + sigma^2) (x_t - alpha m_k)),
// with responsibilities r_k proportional to pi_k N(x_t; alpha m_k, alpha^2 v_k + sigma^2).
#pragma once

#include <memory>

#include "scorch/denoiser.h"
#include "scorch/schedule.h"

namespace scorch::testing {

struct DiagonalMixture {
  at::Tensor weights;    // [K]
  at::Tensor means;      // [K, D]
  at::Tensor variances;  // [K, D]
};

at::Tensor mixture_x0(const DiagonalMixture& m, const at::Tensor& x, double alpha, double sigma);

std::unique_ptr<Denoiser> make_mixture_denoiser(DiagonalMixture m, std::shared_ptr<const Schedule> schedule);

}  // namespace scorch::testing
