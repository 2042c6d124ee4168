// A network's extra inputs after (x, t), declared in the config (model.inputs): text-encoder
// tensors (SD's encoder_hidden_states, SDXL's text_embeds and time_ids, Flux's txt_ids and
// img_ids), scalars (Flux's guidance) and class labels, each with the value classifier-free
// guidance gives its unconditional (negative) rows.
//
// With declared inputs the sampler's `cond` is a row index per sample, not a label: index
// i >= 0 selects sample i's inputs, -(i + 1) sample i's negative inputs. Guidance builds
// those indices (its null of index i is -(i + 1)) and batches conditional and negative rows
// into one network call; the table turns the indices into the network's arguments.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>

#include <cstdint>
#include <string>
#include <vector>

namespace scorch {

struct ModelInput {
  enum class Source {
    Tensor,  // from a .npy / .safetensors file or host memory: [*shape] for the whole batch or [batch, *shape]
    Label,   // integer class labels from `cond` (the negative rows get model.null_label)
    Scalar,  // one number for every sample, passed as a [B] tensor (Flux's guidance)
  };
  std::string name;               // the forward argument's name, checked against the module's schema
  Source source = Source::Tensor;
  std::vector<int64_t> shape;     // one sample's shape (Tensor); [] for Label and Scalar
  at::ScalarType dtype = at::kFloat;
  // Tensor: [1, *shape] (broadcast) or [batch, *shape]; Label: [batch] int64; Scalar: [1].
  // Undefined until set (an input from host memory before scorch_pipeline_set_input).
  at::Tensor value;
  at::Tensor negative;            // the same forms; undefined: the negative rows use `value`
  bool host = false;              // set by the caller (source: host), not by the config
  bool prompt = false;            // set from the text encoder's outputs (source: prompt)
};

class ModelInputs {
 public:
  ModelInputs() = default;
  explicit ModelInputs(std::vector<ModelInput> inputs) : inputs_(std::move(inputs)) {}

  const std::vector<ModelInput>& inputs() const { return inputs_; }
  bool empty() const { return inputs_.empty(); }
  // Whether any input's negative rows differ from its conditional ones (what CFG needs).
  bool has_negative() const;
  // Whether a caller may still give one (an input with source: host).
  bool has_host_input() const;
  // Whether a Label input exists (its labels are the samples' labels).
  const ModelInput* label_input() const;

  // Sets input `name`'s value (negative: its negative value), checking its dtype and shape
  // against the declaration and the batch (0: any number of rows); errors name the input and `what`.
  void set(const std::string& name, at::Tensor value, bool negative, int64_t batch, const std::string& what);
  // Every declared input has a value (allow_unset: or none yet, to come from the caller),
  // and every per-sample one has `batch` rows.
  void check_ready(int64_t batch, bool allow_unset = false) const;

  // The network's arguments after (x, t) for row indices idx [B] (see the top of this file),
  // in declaration order, on `device`, each input in its declared dtype. An input not yet
  // set gives zeros (the load-time dry run).
  std::vector<c10::IValue> arguments(const at::Tensor& idx, c10::Device device) const;

 private:
  std::vector<ModelInput> inputs_;
};

// "float32" | "float64" | "float16" | "bfloat16" | "int64" | "int32" | "bool"
at::ScalarType parse_input_dtype(const std::string& name, const std::string& what);

}  // namespace scorch
