// A TorchScript network as a Denoiser: forward(x[B, *shape], t[B]) or
// forward(x, t, cond) per the model-file contract (docs/file_formats.md).
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>
#include <vector>

#include "scorch/denoiser.h"

namespace scorch {

class Schedule;

// What the network receives as its time argument (model.time_input).
enum class TimeInput {
  T,      // continuous t in (0, 1]
  Index,  // DDPM label (t - 1/N) N, N = the schedule's number of training steps
  Sigma,  // VE noise level sigma(t) / alpha(t)
};
TimeInput parse_time_input(const std::string& name);
double model_time(TimeInput input, const Schedule& schedule, double t);

struct TorchScriptSpec {
  std::string path;
  std::vector<int64_t> shape;
  PredictionType prediction = PredictionType::Eps;
  TimeInput time_input = TimeInput::T;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
  int64_t max_batch = 0;  // > 0: evaluate the network in chunks of at most this many samples
};

// Loads, moves and freezes the module, then validates it with a one-sample
// dry run (arity, output shape, finite output): any problem is a bad-input Error.
std::unique_ptr<Denoiser> load_torchscript_denoiser(const TorchScriptSpec& spec,
                                                    std::shared_ptr<const Schedule> schedule);

class Classifier;
// A noise-conditional classifier forward(x, t) -> logits [B, classes] for classifier
// guidance; t follows `time_input` like a denoiser's.
std::shared_ptr<Classifier> load_torchscript_classifier(const std::string& path, TimeInput time_input,
                                                        std::shared_ptr<const Schedule> schedule, at::ScalarType dtype,
                                                        c10::Device device);

}  // namespace scorch
