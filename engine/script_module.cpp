#include "scorch/script_module.h"
#include "scorch/io.h"

#include <c10/core/InferenceMode.h>
#include <torch/script.h>

#include <filesystem>

#include "scorch/error.h"

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
  torch::jit::Module& m = out->impl_->module;
  try {
    m = torch::jit::load(path, device);
  } catch (const std::exception& e) {
    bad_input(what + ": not a loadable TorchScript file (" + script_error_line(e) + ")");
  }
  if (!m.find_method("forward")) bad_input(what + ": the module has no forward method");
  m.eval();
  m.to(device, dtype);
  try {
    m = torch::jit::freeze(m);
  } catch (const std::exception&) {
    // Freezing is an optimisation; modules it cannot handle run unfrozen.
  }
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
