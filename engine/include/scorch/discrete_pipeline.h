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

struct TokenResult {
  at::Tensor tokens;       // [batch, L] int64
  double calls = 0.0;      // model calls per sequence
  double seconds = 0.0;
};

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
  const std::string& sampler_name() const;
  int steps() const;

 private:
  TokenPipeline();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Whether a config describes a token model (model.type: tokens).
bool is_token_config(const YAML::Node& config);

}  // namespace scorch
