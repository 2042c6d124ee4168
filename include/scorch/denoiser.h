// The denoiser interface: every model, analytic or learned, returns both the
// data prediction x0 and the noise prediction eps at (x_t, t), so samplers
// written in either parameterisation use it directly.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>

#include <cstdint>
#include <string>
#include <vector>

namespace scorch {

class Schedule;

// What a network's raw output means (config key model.prediction).
enum class PredictionType { Eps, X0, V, Score, Velocity };
PredictionType parse_prediction_type(const std::string& name);  // eps | x0 | v | score | velocity
std::string to_string(PredictionType type);

struct Prediction {
  at::Tensor x0;
  at::Tensor eps;
  // Classifier-free guidance only: the unconditional prediction's x0, for CFG++ samplers
  // (which re-noise with it); undefined otherwise.
  at::Tensor x0_uncond;
};

// The one place where model outputs are converted. With x = alpha x0 + sigma eps:
//   eps:   eps = out,                 x0 = (x - sigma eps) / alpha
//   x0:    x0 = out,                  eps = (x - alpha x0) / sigma
//   v:     v = alpha eps - sigma x0   (Salimans & Ho 2022), so with
//          r = alpha^2 + sigma^2:     x0 = (alpha x - sigma v)/r, eps = (sigma x + alpha v)/r
//   score: score = -eps / sigma,      eps = -sigma out
//   velocity: the time derivative of the interpolant, u = alpha' x0 + sigma' eps (flow:
//          z - x0, the SD3/Flux convention), so with d = alpha sigma' - sigma alpha':
//          x0 = (sigma' x - sigma u) / d, eps = (alpha u - alpha' x) / d
// (alpha' = d alpha / dt, sigma' = d sigma / dt; only velocity uses them).
Prediction from_model_output(PredictionType type, const at::Tensor& out, const at::Tensor& x, double alpha,
                             double sigma, double d_alpha = 0.0, double d_sigma = 0.0);
// The same with alpha, sigma and their derivatives taken from the schedule at t.
Prediction from_model_output(PredictionType type, const at::Tensor& out, const at::Tensor& x, const Schedule& schedule,
                             double t);
// The inverse: what a model of the given type would output for this prediction.
at::Tensor to_model_output(PredictionType type, const Prediction& p, double alpha, double sigma, double d_alpha = 0.0,
                           double d_sigma = 0.0);

// BLAS picks its kernels and splits rows between threads by the number of rows, and they
// round differently. Measured with Debian's OpenBLAS on an AVX-512 Xeon: a product with a
// row count that is not a multiple of 8 gives some rows other bits than a larger batch does;
// with a multiple of 8 rows every row's result is the same whatever the batch and the row's
// position, on 1 or 2 threads. Analytic models therefore evaluate a batch padded to the
// next multiple of 16 rows (copies of the first), so that sample i's numbers do not depend
// on the batch size (per-sample reproducibility, bit for bit on this CPU build):
// f(x, cond) on [rows, ...].
at::Tensor batch_invariant(const at::Tensor& x, const at::Tensor& cond,
                           const std::function<at::Tensor(const at::Tensor& x, const at::Tensor& cond)>& f);

class Denoiser {
 public:
  virtual ~Denoiser() = default;
  // x: [B, *shape]; t: the time of the schedule the denoiser was built with;
  // cond: optional conditioning ([B] int64 labels or a float tensor), undefined if none.
  virtual Prediction predict(const at::Tensor& x, double t, const at::Tensor& cond) = 0;
  // Shape of one sample, without the batch dimension.
  virtual std::vector<int64_t> sample_shape() const = 0;
  // Whether predict() needs cond.
  virtual bool conditional() const { return false; }
  // Batched network calls the last predict() made (NFE accounting: guidance evaluates
  // several conditions in one call, composition calls several models).
  virtual int64_t last_calls() const { return 1; }
  // log p_t(x) of the noised marginal, up to a constant that does not depend on x, per
  // sample [B]: analytic models have it exactly, a TorchScript model when it offers
  // energy(x, t, cond) (then log p = -energy). Needed by mixture composition, MALA and HMC.
  virtual bool has_log_density() const { return false; }
  virtual at::Tensor log_density(const at::Tensor& x, double t, const at::Tensor& cond);
};

}  // namespace scorch
