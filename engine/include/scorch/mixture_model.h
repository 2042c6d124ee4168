// Closed-form mixture models as Denoisers (model.type gmm | empirical), computed by the
// mixture kernel (kernels/mixture_score.h).
//   empirical: a data set x_1..x_K as the mixture (1/K) sum_k N(x_k, s^2 I), s the optional
//              smoothing (closed-form diffusion models, Scarvelis et al. 2023); with s = 0
//              its score is the exact score of the noised empirical distribution.
//   gmm:       sum_k pi_k N(mu_k, s_k^2 I) (isotropic covariances).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kernels/mixture_score.h"
#include "scorch/denoiser.h"

namespace scorch {

class Schedule;

struct MixtureModel {
  IsotropicMixture mixture;
  std::vector<int64_t> shape;
};

// Reads a `gmm` (tensors weights [K], means [K, D], variances [K]; metadata
// scorch.cov = isotropic) or `empirical` (tensor data [K, D]; metadata scorch.smoothing)
// safetensors file; `type` is the expected kind. Every problem is a bad-input Error.
MixtureModel load_mixture_model(const std::string& path, const std::string& type);
void save_empirical(const std::string& path, const at::Tensor& data, const std::vector<int64_t>& shape,
                    double smoothing = 0.0);

std::unique_ptr<Denoiser> make_mixture_denoiser(MixtureModel model, std::shared_ptr<const Schedule> schedule);

}  // namespace scorch
