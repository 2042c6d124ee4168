#include "scorch/model_inputs.h"

#include <ATen/ATen.h>

#include "scorch/error.h"
#include "scorch/io.h"

namespace scorch {

at::ScalarType parse_input_dtype(const std::string& name, const std::string& what) {
  if (name == "float32") return at::kFloat;
  if (name == "float64") return at::kDouble;
  if (name == "float16") return at::kHalf;
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "int64") return at::kLong;
  if (name == "int32") return at::kInt;
  if (name == "bool") return at::kBool;
  bad_input(what + ": expected float32 | float64 | float16 | bfloat16 | int64 | int32 | bool, got '" + name + "'");
}

bool ModelInputs::has_negative() const {
  for (const auto& in : inputs_)
    if (in.negative.defined()) return true;
  return false;
}

bool ModelInputs::has_host_input() const {
  for (const auto& in : inputs_)
    if (in.host) return true;
  return false;
}

const ModelInput* ModelInputs::label_input() const {
  for (const auto& in : inputs_)
    if (in.source == ModelInput::Source::Label) return &in;
  return nullptr;
}

namespace {

std::string describe(const ModelInput& in) { return "model.inputs '" + in.name + "'"; }

// The value's shape with a leading row dimension: [rows, *shape] for a tensor, [rows] otherwise.
at::Tensor with_rows(const ModelInput& in, const at::Tensor& v, int64_t batch, const std::string& what) {
  const std::vector<int64_t> one = in.shape;
  std::vector<int64_t> per = {batch};
  per.insert(per.end(), one.begin(), one.end());
  std::vector<int64_t> single = {1};
  single.insert(single.end(), one.begin(), one.end());
  if (v.sizes() == at::IntArrayRef(one)) return v.reshape(single);
  if (v.sizes() == at::IntArrayRef(single)) return v;
  if (in.source == ModelInput::Source::Scalar)
    bad_input(what + ": expected one number, got shape " + shape_string(v.sizes()));
  if (v.dim() == int64_t(one.size()) + 1 && v.sizes().slice(1) == at::IntArrayRef(one) &&
      (batch == 0 || v.size(0) == batch))
    return v;
  bad_input(what + ": shape " + shape_string(v.sizes()) + " is neither " + shape_string(one) +
            " (one for the whole batch) nor " + (batch > 0 ? shape_string(per) : "[rows, " + shape_string(one).substr(1)) +
            " (one per sample)");
}

}  // namespace

void ModelInputs::set(const std::string& name, at::Tensor value, bool negative, int64_t batch, const std::string& what) {
  for (auto& in : inputs_) {
    if (in.name != name) continue;
    const std::string where = describe(in) + (negative ? " (negative)" : "") + (what.empty() ? "" : " from " + what);
    if (!value.defined()) bad_input(where + ": no data");
    const bool want_float = at::isFloatingType(in.dtype);
    if (in.source == ModelInput::Source::Label && at::isFloatingType(value.scalar_type()))
      bad_input(where + ": class labels must be integers");
    if (want_float && !at::isFloatingType(value.scalar_type()))
      bad_input(where + ": expected floating-point data for dtype " + std::string(c10::toString(in.dtype)) + ", got " +
                c10::toString(value.scalar_type()));
    // A copy (copy = true): value may be a view of a caller's memory (the C API).
    at::Tensor v = with_rows(in, value, batch, where).to(at::kCPU, in.dtype, false, true).contiguous();
    if (want_float && !at::isfinite(v).all().item<bool>()) bad_input(where + ": has non-finite values");
    (negative ? in.negative : in.value) = v;
    return;
  }
  std::string names;
  for (const auto& in : inputs_) names += (names.empty() ? "" : ", ") + in.name;
  bad_input("model.inputs: no input named '" + name + "' (declared: " + (names.empty() ? "none" : names) + ")");
}

void ModelInputs::check_ready(int64_t batch, bool allow_unset) const {
  for (const auto& in : inputs_) {
    if (!in.value.defined() && allow_unset) continue;
    if (!in.value.defined())
      bad_input(describe(in) + ": no value (give a file or value in the config, or set it through the C API)");
    for (const at::Tensor* v : {&in.value, &in.negative})
      if (v->defined() && v->size(0) != 1 && v->size(0) != batch)
        bad_input(describe(in) + ": " + std::to_string(v->size(0)) + " rows for a batch of " + std::to_string(batch) +
                  " (give one row for the whole batch or one per sample)");
    if (in.source == ModelInput::Source::Label && in.value.size(0) != batch && in.value.size(0) != 1)
      bad_input(describe(in) + ": expected one label or one per sample");
  }
}

std::vector<c10::IValue> ModelInputs::arguments(const at::Tensor& idx_in, c10::Device device) const {
  const at::Tensor idx = idx_in.to(at::kCPU, at::kLong);
  const int64_t b = idx.size(0);
  const at::Tensor neg_rows = idx < 0;
  const bool any_negative = neg_rows.any().item<bool>();
  const at::Tensor sample = at::where(neg_rows, -idx - 1, idx);
  std::vector<c10::IValue> args;
  args.reserve(inputs_.size());
  for (const auto& in : inputs_) {
    std::vector<int64_t> single = {1};
    single.insert(single.end(), in.shape.begin(), in.shape.end());
    const at::Tensor value = in.value.defined() ? in.value : at::zeros(single, at::TensorOptions().dtype(in.dtype));
    const auto rows = [&](const at::Tensor& v) {
      if (v.size(0) == 1) {
        std::vector<int64_t> full = v.sizes().vec();
        full[0] = b;
        return v.expand(full);
      }
      const int64_t hi = sample.max().item<int64_t>();
      if (hi >= v.size(0))
        bad_input(describe(in) + ": sample " + std::to_string(hi) + " asked for, but it has " +
                  std::to_string(v.size(0)) + " rows");
      return v.index_select(0, sample);
    };
    at::Tensor out = rows(value);
    if (any_negative && in.negative.defined()) {
      std::vector<int64_t> mask_shape(size_t(out.dim()), 1);
      mask_shape[0] = b;
      out = at::where(neg_rows.reshape(mask_shape), rows(in.negative), out);
    }
    args.emplace_back(out.to(device));
  }
  return args;
}

}  // namespace scorch
