// Discrete diffusion: schedules, transitions, token denoisers and exact categorical sampling.
//
// A token keeps its clean value with probability alpha(t) (t runs 1 -> 0, alpha(1) ~ 0,
// alpha(0) = 1); otherwise it is the mask token (absorbing) or a uniformly random token
// (uniform). Schedules (RADD / SEDD / MDLM), sigma_bar = -log alpha:
//   loglinear  alpha = 1 - (1 - eps) t
//   cosine     alpha = eps + (1 - eps) cos(pi t / 2)
//   linear     sigma_bar = sigma_min + t (sigma_max - sigma_min)
//   geometric  sigma_bar = sigma_min^(1-t) sigma_max^t
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace scorch {

class DiscreteSchedule {
 public:
  virtual ~DiscreteSchedule() = default;
  virtual double alpha(double t) const = 0;
  // -d alpha / dt >= 0 (tau-leaping's unmasking rate is alpha_rate dt / (1 - alpha))
  virtual double alpha_rate(double t) const = 0;
  // t with alpha(t) = a (alpha decreases in t); for first-hitting jumps.
  double inverse_alpha(double a) const;
  virtual std::string name() const = 0;
};

std::unique_ptr<DiscreteSchedule> make_discrete_schedule(const std::string& type, double eps = 1e-3,
                                                         double sigma_min = 1e-4, double sigma_max = 20.0);

enum class Transition { Absorbing, Uniform };

struct TokenSpec {
  int64_t vocab = 0;     // V real tokens 0..V-1
  int64_t mask_id = -1;  // absorbing: the mask token (usually V)
  int64_t length = 0;    // L
  Transition transition = Transition::Absorbing;
  // Class-conditional networks: forward(tokens, t, labels) with labels in 0..num_classes,
  // the null label (unconditional) included; 0: forward(tokens, t).
  int64_t num_classes = 0;
};

// log p(clean token | x_t) at every position: [B, L, V] (float64 or float32).
class TokenDenoiser {
 public:
  virtual ~TokenDenoiser() = default;
  // tokens: [B, L] int64; t: [B] float64 (one time per sequence; time-independent models ignore it).
  virtual at::Tensor log_probs(const at::Tensor& tokens, const at::Tensor& t) = 0;
  // The same given class labels [B] int64 (conditional models; undefined: log_probs).
  virtual at::Tensor log_probs_given(const at::Tensor& tokens, const at::Tensor& t, const at::Tensor& labels);
  virtual const TokenSpec& spec() const = 0;

  // Prefix caching (block-causal networks, BD3-LM style: a position sees its own block and
  // the blocks before it, so a finished prefix's keys and values never change). The block
  // size of the network's attention, 0 when it has no cache; prefix_cache(prefix [B, P])
  // -> an opaque cache with the batch first; log_probs_block(block [B, Lb], t, cache,
  // start) -> [B, Lb, V] for positions start..start+Lb-1, equal to log_probs' there.
  virtual int64_t cache_block_size() const { return 0; }
  virtual at::Tensor prefix_cache(const at::Tensor& prefix);
  virtual at::Tensor log_probs_block(const at::Tensor& block, const at::Tensor& t, const at::Tensor& cache, int64_t start);
};

class ModelInputs;

// TorchScript forward(tokens [B, L] int64, t [B] float) -> [B, L, V] (the contract in
// docs/file_formats.md); validated on load with a dry run. With declared inputs (prompt
// tensors, model_inputs.h) forward(tokens, t, <inputs>), and log_probs_given's labels are the
// row indices of model_inputs.h.
std::unique_ptr<TokenDenoiser> load_token_denoiser(const std::string& path, const TokenSpec& spec,
                                                   std::shared_ptr<const ModelInputs> inputs = nullptr);

// Exact categorical sampling in float64 by the inverse CDF: one float64 uniform per draw
// against the float64 cumulative sum. probs: [..., K] non-negative weights (need not be
// normalised); returns [...] int64. Negative weights never win.
at::Tensor sample_categorical(const at::Tensor& probs, at::Generator& gen);
// The same from given uniforms u in [0, 1), float64, shaped as probs with a last dimension of 1.
at::Tensor sample_categorical(const at::Tensor& probs, const at::Tensor& u);
// `draws` independent draws [draws] from one distribution probs [K].
at::Tensor sample_categorical(const at::Tensor& probs, at::Generator& gen, int64_t draws);
// Uniform(0, 1) float64 numbers.
at::Tensor uniform64(at::IntArrayRef sizes, at::Generator& gen);

}  // namespace scorch
