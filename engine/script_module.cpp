#include "scorch/script_module.h"
#include "scorch/io.h"

#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include <filesystem>

#include "scorch/error.h"
#include "scorch/model_cache.h"

namespace scorch {

std::string script_error_line(const c10::Error& e) {
  std::string msg = e.what_without_backtrace();
  const size_t nl = msg.find('\n');
  return nl == std::string::npos ? msg : msg.substr(0, nl);
}

std::string script_error_line(const std::exception& e) {
  if (const auto* c10e = dynamic_cast<const c10::Error*>(&e)) return script_error_line(*c10e);
  const std::string text = e.what();
  const size_t end = text.find_last_not_of("\n ");
  if (end == std::string::npos) return text;
  const size_t begin = text.rfind('\n', end);
  const size_t from = begin == std::string::npos ? 0 : begin + 1;
  return text.substr(from, end - from + 1);
}

torch::jit::Module load_frozen_module(const std::string& path, const std::string& what, c10::Device device,
                                      at::ScalarType dtype, const std::vector<std::string>& keep) {
  const std::string file = model_file_key(path);
  std::string key;
  if (!file.empty()) {
    key = "torchscript|" + file + "|" + device.str() + "|" + c10::toString(dtype);
    for (const auto& k : keep) key += "|" + k;
  }
  const auto load = [&]() -> std::pair<torch::jit::Module, size_t> {
    torch::jit::Module m;
    try {
      m = torch::jit::load(path, device);
    } catch (const c10::Error& e) {
      bad_input(what + ": not a loadable TorchScript file (" + script_error_line(e) + ")");
    } catch (const std::exception& e) {
      bad_input(what + ": not a loadable TorchScript file (" + e.what() + ")");
    }
    if (!m.find_method("forward")) bad_input(what + ": the module has no forward method");
    m.eval();
    m.to(device, dtype);
    // What the module holds: its parameters and buffers (frozen, they become constants),
    // at least the file's size.
    size_t bytes = size_t(std::filesystem::file_size(path));
    size_t held = 0;
    for (const at::Tensor& p : m.parameters()) held += p.nbytes();
    for (const at::Tensor& b : m.buffers()) held += b.nbytes();
    bytes = std::max(bytes, held);
    try {
      // freezing drops every method but forward unless named
      std::vector<std::string> present;
      for (const auto& k : keep)
        if (m.find_method(k)) present.push_back(k);
      m = torch::jit::freeze(m, present);
    } catch (const std::exception&) {
      // Freezing is an optimisation; modules it cannot handle run unfrozen.
    }
    return {m, bytes};
  };
  return *cached_model<torch::jit::Module>(key, load);
}

struct ScriptModule::Impl {
  torch::jit::Module module;
};

ScriptModule::~ScriptModule() = default;

std::unique_ptr<ScriptModule> ScriptModule::load(const std::string& path, const std::string& what, c10::Device device,
                                                 at::ScalarType dtype) {
  check_input_file(path, what);
  std::unique_ptr<ScriptModule> out(new ScriptModule());
  out->impl_ = std::make_unique<Impl>();
  out->what_ = what;
  out->impl_->module = load_frozen_module(path, what, device, dtype);
  return out;
}

size_t ScriptModule::arity() const {
  return impl_->module.get_method("forward").function().getSchema().arguments().size() - 1;
}

std::vector<at::Tensor> ScriptModule::forward(std::vector<c10::IValue> args) const {
  c10::InferenceMode guard;
  c10::IValue out;
  try {
    out = impl_->module.forward(std::move(args));
  } catch (const std::exception& e) {
    bad_input(what_ + ": forward failed: " + script_error_line(e));
  }
  std::vector<at::Tensor> tensors;
  if (out.isTensor()) {
    tensors.push_back(out.toTensor());
  } else if (out.isTuple()) {
    for (const auto& v : out.toTupleRef().elements()) {
      if (!v.isTensor()) bad_input(what_ + ": forward must return tensors");
      tensors.push_back(v.toTensor());
    }
  } else if (out.isTensorList()) {
    for (const at::Tensor& t : out.toTensorVector()) tensors.push_back(t);
  } else {
    bad_input(what_ + ": forward must return a Tensor or a tuple of Tensors");
  }
  return tensors;
}

}  // namespace scorch
