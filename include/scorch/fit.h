// Fitting analytic models to data (`scorch fit`).
//   gaussian: the sample mean and the eigendecomposition of the sample covariance.
//   gmm:      k-means++ seeding (Arthur & Vassilvitskii 2007), Lloyd's k-means, then EM
//             (Dempster et al. 1977) for the chosen covariance; the low-rank M-step is the
//             probabilistic-PCA maximum-likelihood estimate of Tipping & Bishop (1999):
//             the top-r eigenvectors of the component's weighted covariance, the isotropic
//             part s^2 the mean of the remaining eigenvalues, lam_j = eig_j - s^2.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>

#include "scorch/data_shards.h"
#include "scorch/gaussian.h"
#include "scorch/mixture_model.h"

namespace scorch {

// rank 0 keeps every eigenvalue. x: [N, D] (this process's rows). Bad arguments are
// bad-input Errors.
GaussianModel fit_gaussian(const at::Tensor& x, int64_t rank, const std::vector<int64_t>& shape,
                           const DataShards& shards = {});

// One Gaussian per class c = 0..C-1 (C = the largest label + 1), each fitted to its rows;
// labels [N] integers. Every class needs at least 2 samples.
std::vector<GaussianModel> fit_class_gaussians(const at::Tensor& x, const at::Tensor& labels, int64_t rank,
                                               const std::vector<int64_t>& shape);

struct GmmFitOptions {
  int64_t k = 10;
  Covariance cov = Covariance::LowRank;
  int64_t rank = 32;          // lowrank only
  int kmeans_iters = 20;      // Lloyd iterations (stops early once no point changes cluster)
  int em_iters = 5;           // EM iterations after k-means (0: per-cluster moments of k-means)
  uint64_t seed = 0;
  double reg = 1e-4;          // added to every variance / eigenvalue, keeps the covariances invertible
  // Called once per k-means and EM iteration: phase ("k-means" | "EM"), iteration, total,
  // and the mean log-likelihood per sample (EM; NaN for k-means).
  std::function<void(const char*, int, int, double)> progress;
};

struct GmmFit {
  GaussianMixture mixture;
  std::vector<double> log_likelihood;  // per EM iteration: mean log-likelihood per sample of the parameters it started from
};

GmmFit fit_gmm(const at::Tensor& x, const GmmFitOptions& options, const DataShards& shards = {});

// k-means++ seeding and Lloyd iterations: the centres [K, D] and each point's cluster [N].
std::pair<at::Tensor, at::Tensor> kmeans(const at::Tensor& x, int64_t k, int iters, uint64_t seed,
                                         const DataShards& shards = {});

}  // namespace scorch
