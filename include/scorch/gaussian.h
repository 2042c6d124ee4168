// The analytic Gaussian model N(mu, U diag(lam) U^T) (U: D x r orthonormal
// columns, r <= D): closed-form data prediction under any schedule and the
// exact probability-flow map, the reference every sampler is tested against.
//
// With x_t = alpha x0 + sigma eps, the marginal is N(alpha mu, alpha^2 Sigma + sigma^2 I), so
//   E[x0 | x_t] = mu + U diag(alpha lam / (alpha^2 lam + sigma^2)) U^T (x_t - alpha mu)
// and the PF-ODE solution from s to t (Wang & Vastola 2024, sec. 3) is
//   x_t = alpha_t mu + U diag(sqrt((alpha_t^2 lam + sigma_t^2)/(alpha_s^2 lam + sigma_s^2))) U^T d
//         + (sigma_t / sigma_s)(d - U U^T d),   d = x_s - alpha_s mu.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "scorch/denoiser.h"

namespace scorch {

class Schedule;

struct GaussianModel {
  at::Tensor mean;          // [D]
  at::Tensor eigenvalues;   // [r], >= 0
  at::Tensor eigenvectors;  // [D, r], orthonormal columns
  std::vector<int64_t> shape;  // sample shape, prod(shape) = D

  GaussianModel to(const at::TensorOptions& options) const;
  int64_t dim() const { return mean.size(0); }
};

// Reads a `gaussian` safetensors file (tensors mean, eigenvalues, eigenvectors;
// metadata scorch.type = gaussian, scorch.shape = "[1, 28, 28]"). rank > 0 keeps
// the `rank` largest eigenvalues. Every problem is a bad-input Error.
GaussianModel load_gaussian(const std::string& path, int64_t rank = 0);
void save_gaussian(const std::string& path, const GaussianModel& model);
// A class-conditional file (`scorch fit gaussian --labels`) holds the whole data's Gaussian
// (read by load_gaussian) and one per class c = 0..C-1: tensors class_mean [C, D],
// class_eigenvalues [C, r], class_eigenvectors [C, D, r], metadata scorch.classes = C.
// load_class_gaussians returns them in class order, empty for a file without classes.
void save_class_gaussians(const std::string& path, const GaussianModel& all, const std::vector<GaussianModel>& classes);
std::vector<GaussianModel> load_class_gaussians(const std::string& path);
// Checks shapes, finiteness and orthonormality; `what` names the source in errors.
void validate_gaussian(const GaussianModel& model, const std::string& what);

// x: [B, *shape] or [B, D].
at::Tensor gaussian_x0(const GaussianModel& m, const at::Tensor& x, double alpha, double sigma);
// log p_t(x) of the noised marginal N(alpha mu, alpha^2 Sigma + sigma^2 I), per sample [B]:
//   -1/2 [D log 2 pi + sum_k log c_k + (D - r) log sigma^2 + sum_k p_k^2 / c_k + |d_perp|^2 / sigma^2],
// with c_k = alpha^2 lam_k + sigma^2, p = U^T d, d = x - alpha mu, d_perp = d - U p.
at::Tensor gaussian_log_density(const GaussianModel& m, const at::Tensor& x, double alpha, double sigma);
at::Tensor gaussian_flow(const GaussianModel& m, const at::Tensor& x_s, double alpha_s, double sigma_s,
                         double alpha_t, double sigma_t);

std::unique_ptr<Denoiser> make_gaussian_denoiser(GaussianModel model, std::shared_ptr<const Schedule> schedule);

}  // namespace scorch
