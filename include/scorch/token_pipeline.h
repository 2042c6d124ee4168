// The token pipeline of `scorch generate` (model.type: tokens): a TorchScript token
// denoiser, a discrete schedule and a discrete sampler from the config; samples are
// token ids, printed as text through model.vocab.
#pragma once

#include <ATen/core/Tensor.h>
#include <yaml-cpp/yaml.h>

#include <memory>
#include <string>
#include <vector>

namespace scorch {

class TokenDenoiser;
class DiscreteSchedule;

struct TokenResult {
  at::Tensor tokens;       // [batch, L] int64
  double calls = 0.0;      // model calls per sequence
  double positions = 0.0;  // token positions the network evaluated per sequence (fewer than calls x L with a prefix cache)
  double seconds = 0.0;
};

// LSD distillation (Fu et al. 2025): learns the per-step log-score coefficients c_i of the
// `lsd` sampler for `steps` student steps (and, with learn_step_sizes, a per-step scale d_i
// of the step's rate, LSD+) from a `teacher_steps`-step euler teacher run on `batch`
// sequences. For each student step i (t_i -> t_{i+1}) and each position masked in the
// teacher's state at t_i, the student's token distribution q_c ∝ p_i^c (p_i: the model at
// that state) is matched to the teacher's later, better-informed distribution p*_i by the
// reverse KL, mean KL(q_c || p*_i). target "final": p*_i is the distribution the teacher drew
// that position's token from, whenever it unmasked it (mode-seeking: c stays above 1 as the
// student's steps shrink); target "step": the same for positions unmasked before t_{i+1},
// the teacher's distribution at t_{i+1} for the others (c -> 1 as the steps shrink); target
// "joint": the reverse KL of the student's independent draws on the positions the teacher
// unmasks within the student step to the teacher's joint law of those tokens (the model along
// the teacher's order), per position (c -> 1 as the steps shrink). Then d_i
// maximises the likelihood of the teacher's unmasking events under the student's kernel
//   P(unmask to v) = d_i (t_i - t_{i+1}) sigma(t_i) s_v^c_i,  s_v = p_v / (e^sigma_bar - 1).
// Only c and d are trained (LibTorch autograd, Adam); the model runs once per teacher step.
struct LsdDistillOptions {
  int steps = 8;
  int teacher_steps = 256;
  int64_t batch = 512;
  int iters = 300;
  bool learn_step_sizes = false;
  std::string target = "final";  // final | step | joint
  uint64_t seed = 0;
};
struct LsdDistillResult {
  std::vector<double> coefficients, step_scales;
  std::vector<double> loss_before, loss_after;  // per step: the reverse KL (nats per position) at c = 1 and at the fit
};
LsdDistillResult distill_lsd(const YAML::Node& config, const LsdDistillOptions& options);

class TokenPipeline {
 public:
  // Validates every key and loads the model; problems are bad-input Errors naming the key.
  static std::unique_ptr<TokenPipeline> from_config(const YAML::Node& config);
  ~TokenPipeline();
  TokenResult generate() const;
  // One line per sample: the vocabulary characters, cut at the first model.pad character.
  std::vector<std::string> decode(const at::Tensor& tokens) const;
  // output.npy (int64 tokens) and output.text (the decoded lines), all or nothing.
  std::vector<std::string> write_outputs(const TokenResult& r) const;
  // Fixed positions from memory (the C API): [batch, L] int64, -1 where free; undefined:
  // none. Replaces the config's template / fixed; checked against the model.
  void set_fixed(const at::Tensor& tokens);
  const std::string& sampler_name() const;
  // Warnings from loading (a prompt cut to the text encoder's context), one line each.
  const std::vector<std::string>& notes() const;
  int steps() const;
  // The loaded model and schedule (distill_lsd runs its teacher on them).
  TokenDenoiser& model() const;
  const DiscreteSchedule& schedule() const;

 private:
  TokenPipeline();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes the YAML the lsd sampler reads (coefficients, step_scales, and how they were made).
void write_lsd_yaml(const std::string& path, const LsdDistillResult& r, const LsdDistillOptions& o);

// Whether a config describes a token model (model.type: tokens).
bool is_token_config(const YAML::Node& config);

}  // namespace scorch
