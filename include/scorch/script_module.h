// A TorchScript module other than the denoiser (text encoder, latent encoder and decoder):
// loaded for inference, called with errors that name the module, its outputs as tensors.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include <memory>
#include <string>
#include <vector>

namespace c10 {
class Error;
}
namespace torch {
namespace jit {
struct Module;
}
}  // namespace torch

namespace scorch {

class ScriptModule {
 public:
  // Loads `path` onto `device` in `dtype` (eval, frozen where possible); `what` names it in
  // errors ("decoder.path 'vae.pt'"). A missing or unloadable file is a bad-input Error.
  static std::unique_ptr<ScriptModule> load(const std::string& path, const std::string& what, c10::Device device,
                                            at::ScalarType dtype);
  ~ScriptModule();
  // forward's number of arguments (without self).
  size_t arity() const;
  // forward(args): a Tensor, or a tuple / list of Tensors, in order.
  std::vector<at::Tensor> forward(std::vector<c10::IValue> args) const;
  const std::string& what() const { return what_; }

 private:
  ScriptModule() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string what_;
};

// `path` loaded onto `device` in `dtype`, in eval mode and frozen where possible (freezing
// keeps forward and the methods named in `keep` that exist), through the model cache
// (model_cache.h): a kept module is shared, not loaded again. Errors name it by `what`.
torch::jit::Module load_frozen_module(const std::string& path, const std::string& what, c10::Device device,
                                      at::ScalarType dtype, const std::vector<std::string>& keep = {});

// The line of a LibTorch error a user needs: a c10::Error's first line (no backtrace), the
// TorchScript interpreter's last line (the Python-level message) for other exceptions.
std::string script_error_line(const c10::Error& e);
std::string script_error_line(const std::exception& e);

}  // namespace scorch
