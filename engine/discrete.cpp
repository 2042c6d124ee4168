#include "scorch/discrete.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include <cmath>
#include <filesystem>

#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/model_inputs.h"

namespace scorch {

double DiscreteSchedule::inverse_alpha(double a) const {
  // alpha is decreasing on [0, 1]: bisection to double precision
  double lo = 0.0, hi = 1.0;
  for (int i = 0; i < 100; ++i) {
    const double mid = 0.5 * (lo + hi);
    (alpha(mid) > a ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

namespace {

class LogLinear final : public DiscreteSchedule {
 public:
  explicit LogLinear(double eps) : eps_(eps) {}
  double alpha(double t) const override { return 1.0 - (1.0 - eps_) * t; }
  double alpha_rate(double) const override { return 1.0 - eps_; }
  std::string name() const override { return "loglinear"; }

 private:
  double eps_;
};

class Cosine final : public DiscreteSchedule {
 public:
  explicit Cosine(double eps) : eps_(eps) {}
  double alpha(double t) const override { return eps_ + (1.0 - eps_) * std::cos(M_PI * t / 2.0); }
  double alpha_rate(double t) const override { return (1.0 - eps_) * (M_PI / 2.0) * std::sin(M_PI * t / 2.0); }
  std::string name() const override { return "cosine"; }

 private:
  double eps_;
};

// alpha = exp(-sigma_bar(t)) for a total-noise function sigma_bar.
class TotalNoise final : public DiscreteSchedule {
 public:
  TotalNoise(bool geometric, double lo, double hi) : geometric_(geometric), lo_(lo), hi_(hi) {}
  double sigma_bar(double t) const {
    return geometric_ ? std::pow(lo_, 1.0 - t) * std::pow(hi_, t) : lo_ + t * (hi_ - lo_);
  }
  double alpha(double t) const override { return std::exp(-sigma_bar(t)); }
  double alpha_rate(double t) const override {
    const double rate = geometric_ ? sigma_bar(t) * (std::log(hi_) - std::log(lo_)) : hi_ - lo_;
    return alpha(t) * rate;
  }
  std::string name() const override { return geometric_ ? "geometric" : "linear"; }

 private:
  bool geometric_;
  double lo_, hi_;
};

}  // namespace

std::unique_ptr<DiscreteSchedule> make_discrete_schedule(const std::string& type, double eps, double sigma_min,
                                                         double sigma_max) {
  if (type == "loglinear" || type == "cosine") {
    if (!(eps >= 0.0 && eps < 1.0)) bad_input("schedule.eps: expected a number in [0, 1)");
    if (type == "loglinear") return std::make_unique<LogLinear>(eps);
    return std::make_unique<Cosine>(eps);
  }
  if (type == "linear" || type == "geometric") {
    if (!(sigma_min > 0.0 && sigma_max > sigma_min))
      bad_input("schedule.sigma_min / sigma_max: expected 0 < sigma_min < sigma_max");
    return std::make_unique<TotalNoise>(type == "geometric", sigma_min, sigma_max);
  }
  bad_input("schedule.type: expected loglinear | cosine | linear | geometric for a token model, got '" + type + "'");
}

at::Tensor uniform64(at::IntArrayRef sizes, at::Generator& gen) {
  return at::rand(sizes, gen, at::TensorOptions().dtype(at::kDouble));
}

at::Tensor sample_categorical(const at::Tensor& probs, const at::Tensor& u) {
  // Inverse CDF in float64: the same law as the float64 Gumbel race, with one uniform per
  // draw. A float64 cumulative sum keeps weights of 1e-8 next to a weight near 1 (float32
  // would round them away, which is the temperature-lowering bug of float32 samplers).
  const at::Tensor w = probs.to(at::kDouble).clamp_min(0.0);
  const at::Tensor c = w.cumsum(-1);
  return at::searchsorted(c.contiguous(), (u * c.narrow(-1, w.size(-1) - 1, 1)).contiguous(), /*out_int32=*/false,
                          /*right=*/true)
      .clamp_max_(w.size(-1) - 1)
      .squeeze(-1);
}

at::Tensor sample_categorical(const at::Tensor& probs, at::Generator& gen) {
  std::vector<int64_t> shape = probs.sizes().vec();
  shape.back() = 1;
  return sample_categorical(probs, uniform64(shape, gen));
}

at::Tensor sample_categorical(const at::Tensor& probs, at::Generator& gen, int64_t draws) {
  const at::Tensor c = probs.to(at::kDouble).clamp_min(0.0).cumsum(0);
  const at::Tensor u = uniform64({draws}, gen) * c[-1];
  return at::searchsorted(c, u, false, true).clamp_max_(probs.size(0) - 1);
}

at::Tensor TokenDenoiser::prefix_cache(const at::Tensor&) {
  bad_input("the token network has no prefix cache (prefix_cache, forward_block)");
}

at::Tensor TokenDenoiser::log_probs_block(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t) {
  bad_input("the token network has no prefix cache (prefix_cache, forward_block)");
}

at::Tensor TokenDenoiser::log_probs_given(const at::Tensor& tokens, const at::Tensor& t, const at::Tensor& labels) {
  if (labels.defined()) bad_input("cond: this token model takes no class labels (model.num_classes is 0)");
  return log_probs(tokens, t);
}

namespace {

class TorchScriptTokens final : public TokenDenoiser {
 public:
  TorchScriptTokens(torch::jit::Module m, TokenSpec spec, std::string path, std::shared_ptr<const ModelInputs> inputs)
      : module_(std::move(m)), spec_(spec), path_(std::move(path)), inputs_(std::move(inputs)) {}
  // An unconditioned call of a conditional network is its null label's; of a network with
  // declared inputs, sample 0's inputs (the load-time dry run).
  at::Tensor log_probs(const at::Tensor& tokens, const at::Tensor& t) override {
    if (inputs_) return log_probs_given(tokens, t, at::zeros({tokens.size(0)}, at::kLong));
    return log_probs_given(tokens, t,
                           spec_.num_classes > 0 ? at::full({tokens.size(0)}, spec_.num_classes, at::kLong) : at::Tensor());
  }
  at::Tensor log_probs_given(const at::Tensor& tokens, const at::Tensor& t, const at::Tensor& labels) override {
    c10::InferenceMode guard;
    if (labels.defined() && spec_.num_classes == 0 && !inputs_)
      bad_input("cond: this token model takes no class labels (model.num_classes is 0)");
    at::Tensor out;
    try {
      if (inputs_) {
        // labels are row indices here (model_inputs.h): i selects sample i's inputs, -(i + 1) its negative ones
        std::vector<c10::IValue> args = {tokens, t.to(at::kFloat)};
        for (auto& a : inputs_->arguments(labels, at::kCPU)) args.push_back(std::move(a));
        out = module_.forward(args).toTensor();
      } else if (spec_.num_classes > 0)
        out = module_.forward({tokens, t.to(at::kFloat), labels.to(at::kLong)}).toTensor();
      else
        out = module_.forward({tokens, t.to(at::kFloat)}).toTensor();
    } catch (const std::exception& e) {
      std::string msg = e.what();
      bad_input("model '" + path_ + "': forward(tokens, t" + std::string(spec_.num_classes > 0 ? ", labels" : "") +
                ") failed for tokens [" + std::to_string(tokens.size(0)) + ", " + std::to_string(tokens.size(1)) +
                "] (model.length?): " + msg.substr(0, msg.find('\n')));
    }
    if (out.dim() != 3 || out.size(0) != tokens.size(0) || out.size(1) != spec_.length || out.size(2) != spec_.vocab)
      bad_input("model '" + path_ + "': forward returned " + shape_string(out.sizes()) +
                "; expected log-probabilities [B, L, V] = [" + std::to_string(tokens.size(0)) + ", " +
                std::to_string(spec_.length) + ", " + std::to_string(spec_.vocab) + "] (model.length, model.vocab)");
    return out;
  }
  const TokenSpec& spec() const override { return spec_; }

  // A module with prefix_cache and forward_block methods and an int block_size attribute.
  int64_t cache_block_size() const override { return block_size_; }
  void detect_cache() {
    if (!module_.find_method("prefix_cache") || !module_.find_method("forward_block") || !module_.hasattr("block_size"))
      return;
    const c10::IValue b = module_.attr("block_size");
    if (!b.isInt() || b.toInt() < 1) bad_input("model '" + path_ + "': block_size must be a positive int");
    block_size_ = b.toInt();
  }
  at::Tensor prefix_cache(const at::Tensor& prefix) override {
    c10::InferenceMode guard;
    return call("prefix_cache", {prefix}, "prefix_cache(prefix [" + std::to_string(prefix.size(0)) + ", " +
                                               std::to_string(prefix.size(1)) + "])");
  }
  at::Tensor log_probs_block(const at::Tensor& block, const at::Tensor& t, const at::Tensor& cache, int64_t start) override {
    c10::InferenceMode guard;
    const at::Tensor out = call("forward_block", {block, t.to(at::kFloat), cache, start}, "forward_block");
    if (out.dim() != 3 || out.size(0) != block.size(0) || out.size(1) != block.size(1) || out.size(2) != spec_.vocab)
      bad_input("model '" + path_ + "': forward_block returned " + shape_string(out.sizes()) + "; expected [" +
                std::to_string(block.size(0)) + ", " + std::to_string(block.size(1)) + ", " + std::to_string(spec_.vocab) + "]");
    return out;
  }

 private:
  at::Tensor call(const char* method, std::vector<c10::IValue> args, const std::string& what) {
    try {
      return module_.get_method(method)(std::move(args)).toTensor();
    } catch (const std::exception& e) {
      std::string msg = e.what();
      bad_input("model '" + path_ + "': " + what + " failed: " + msg.substr(0, msg.find('\n')));
    }
  }

  torch::jit::Module module_;
  int64_t block_size_ = 0;
  TokenSpec spec_;
  std::string path_;
  std::shared_ptr<const ModelInputs> inputs_;
};

}  // namespace

std::unique_ptr<TokenDenoiser> load_token_denoiser(const std::string& path, const TokenSpec& spec,
                                                   std::shared_ptr<const ModelInputs> inputs) {
  const std::string what = "model.path '" + path + "'";
  check_input_file(path, what);
  if (spec.vocab < 2) bad_input("model.vocab: expected at least 2 tokens");
  if (spec.length < 1) bad_input("model.length: expected a positive sequence length");
  if (inputs && !inputs->empty() && spec.num_classes > 0)
    bad_input("model.num_classes: a network with declared inputs (model.inputs) takes its labels as an input with "
              "source: label");
  if (spec.transition == Transition::Absorbing && spec.mask_id < spec.vocab)
    bad_input("model.mask_id: the mask token must be outside the vocabulary 0.." + std::to_string(spec.vocab - 1));
  torch::jit::Module module;
  try {
    module = torch::jit::load(path);
  } catch (const std::exception& e) {
    std::string msg = e.what();
    bad_input(what + ": not a loadable TorchScript file (" + msg.substr(0, msg.find('\n')) + ")");
  }
  const auto method = module.find_method("forward");
  if (inputs && !inputs->empty()) {
    // self, tokens, t, then the declared inputs by the module's names, in its order
    const auto& decl = inputs->inputs();
    std::string names = "tokens, t";
    for (const auto& in : decl) names += ", " + in.name;
    if (!method || method->function().getSchema().arguments().size() != 3 + decl.size())
      bad_input(what + ": expected forward(" + names + ") -> log-probabilities [B, L, V] (model.inputs)");
    const auto& schema_args = method->function().getSchema().arguments();
    for (size_t k = 0; k < decl.size(); ++k)
      if (schema_args[3 + k].name() != decl[k].name)
        bad_input(what + ": argument " + std::to_string(k + 3) + " of forward is '" + schema_args[3 + k].name() +
                  "', but model.inputs[" + std::to_string(k) + "] is '" + decl[k].name +
                  "' (declare the inputs by the module's names, in its order)");
  } else if (const size_t args = spec.num_classes > 0 ? 4 : 3;  // self, tokens, t (, labels)
             !method || method->function().getSchema().arguments().size() != args) {
    bad_input(spec.num_classes > 0
                  ? what + ": expected forward(tokens, t, labels) -> log-probabilities [B, L, V] (model.num_classes is set)"
                  : what + ": expected forward(tokens, t) -> log-probabilities [B, L, V] (a class-conditional network "
                           "needs model.num_classes)");
  }
  module.eval();
  auto model = std::make_unique<TorchScriptTokens>(module, spec, path, inputs && !inputs->empty() ? inputs : nullptr);
  model->detect_cache();
  // Dry runs: an all-zero sequence (a vocabulary token) checks the length and the output's
  // shape; then, for masked diffusion, an all-mask one checks that the network takes
  // mask_id, so a mask token it has no embedding for is named as such, not as a length.
  const auto dry_run = [&](int64_t token) {
    const at::Tensor x = at::full({1, spec.length}, token, at::TensorOptions().dtype(at::kLong));
    const at::Tensor out = model->log_probs(x, at::ones({1}, at::kDouble));
    if (!at::isfinite(out).all().item<bool>()) bad_input(what + ": forward returned non-finite values on a dry run");
  };
  dry_run(0);
  if (spec.transition == Transition::Absorbing) {
    try {
      dry_run(spec.mask_id);
    } catch (const Error&) {
      bad_input("model.mask_id: the network does not take token " + std::to_string(spec.mask_id) + " (" + what +
                " fails on an all-mask sequence; a network with vocabulary V usually masks with V)");
    }
  }
  return model;
}

}  // namespace scorch
