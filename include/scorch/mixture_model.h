// Closed-form mixture models as Denoisers (model.type gmm | empirical).
//   empirical: a data set x_1..x_K as the mixture (1/K) sum_k N(x_k, s^2 I), s the optional
//              smoothing (closed-form diffusion models, Scarvelis et al. 2023); with s = 0
//              its score is the exact score of the noised empirical distribution.
//   gmm:       sum_k pi_k N(mu_k, Sigma_k) with Sigma_k one of
//                isotropic  s_k^2 I
//                diagonal   diag(d_k)
//                lowrank    U_k diag(lam_k) U_k^T + s_k^2 I   (U_k: D x r orthonormal columns)
//                full       U_k diag(lam_k) U_k^T              (r = D, an eigendecomposition)
//
// Noised to x_t = alpha x0 + sigma eps, component k has marginal N(alpha mu_k, C_k),
// C_k = alpha^2 Sigma_k + sigma^2 I, and
//   log p_t(x)  = logsumexp_k l_k,  l_k = log pi_k - 1/2 [D log 2 pi + log det C_k + y_k^T C_k^-1 y_k],
//   E[x0 | x_t] = sum_k softmax(l)_k (mu_k + alpha Sigma_k C_k^-1 y_k),      y_k = x - alpha mu_k.
// Isotropic mixtures (and data sets) run on the blocked kernel (include/scorch/mixture_score.h);
// the other covariances use the same online log-sum-exp over blocks of components.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "scorch/mixture_score.h"
#include "scorch/denoiser.h"

namespace scorch {

class Schedule;

enum class Covariance { Isotropic, Diagonal, LowRank, Full };
Covariance parse_covariance(const std::string& name, const std::string& what);
const char* covariance_name(Covariance c);

struct GaussianMixture {
  Covariance cov = Covariance::Isotropic;
  at::Tensor log_weights;   // [K], normalised
  at::Tensor means;         // [K, D]
  at::Tensor variances;     // isotropic, lowrank: [K] (s_k^2); diagonal: [K, D]; full: undefined
  at::Tensor eigenvalues;   // lowrank, full: [K, r] (lam_k >= 0)
  at::Tensor eigenvectors;  // lowrank, full: [K, D, r]

  int64_t components() const { return means.size(0); }
  int64_t dim() const { return means.size(1); }
  GaussianMixture to(const at::TensorOptions& options) const;
};

// log p_t(x) and E[x0 | x_t] of the noised mixture for x: [N, D]. `block`: components per
// block (0: chosen from N and the rank so that a block's work arrays stay about 1M entries).
MixturePosterior gmm_posterior(const GaussianMixture& m, const at::Tensor& x, double alpha, double sigma,
                               int64_t block = 0);

// The N x K matrix of the logits l_k (for EM's responsibilities and for tests).
at::Tensor gmm_logits(const GaussianMixture& m, const at::Tensor& x, double alpha, double sigma);

struct MixtureModel {
  GaussianMixture mixture;
  std::vector<int64_t> shape;
  // Optional class of each component [K] (int64, classes 0..C-1 each with a component):
  // the model is then class-conditional, p(x | c) the mixture of class c's components
  // (weights renormalised) and the label C the whole mixture (the null label).
  at::Tensor labels;
};

// The components of class c (weights renormalised).
GaussianMixture select_components(const GaussianMixture& m, const at::Tensor& index);

// Reads a `gmm` or `empirical` safetensors file (tensor names in docs/file_formats.md);
// `type` is the expected kind. Every problem is a bad-input Error naming the file.
MixtureModel load_mixture_model(const std::string& path, const std::string& type);
void save_gmm(const std::string& path, const GaussianMixture& m, const std::vector<int64_t>& shape,
              const at::Tensor& labels = {});
void save_empirical(const std::string& path, const at::Tensor& data, const std::vector<int64_t>& shape,
                    double smoothing = 0.0);

class Classifier;
// The exact noisy classifier of a labelled mixture (classifier guidance):
//   log p(c | x_t) = logsumexp_{k in c} l_k - logsumexp_k l_k   (differentiable in x).
std::shared_ptr<Classifier> make_gmm_classifier(MixtureModel model, std::shared_ptr<const Schedule> schedule);

std::unique_ptr<Denoiser> make_mixture_denoiser(MixtureModel model, std::shared_ptr<const Schedule> schedule);

}  // namespace scorch
