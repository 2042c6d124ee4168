// A TorchScript network as a Denoiser: forward(x[B, *shape], t[B]) or
// forward(x, t, cond) per the model-file contract (docs/file_formats.md).
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <memory>
#include <string>
#include <vector>

#include "scorch/denoiser.h"
#include "scorch/model_inputs.h"

namespace scorch {

class Schedule;

// What the network receives as its time argument (model.time_input).
enum class TimeInput {
  T,      // continuous t in (0, 1]
  Index,  // the schedule's discrete timestep: DDPM label (t - 1/N) N; flow: N t (SD3)
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
  // CPU only. false (`model.cpu_parallel: chunks`, the default): the batch is cut into chunks
  // whose size depends on the batch alone, run in parallel with one thread each (OpenBLAS
  // included), so the output is bit-identical for any --threads. true (`intra_op`):
  // LibTorch's own threads inside each call, as a bare call makes it; no faster at any
  // batch here (docs/benchmarks.md, "latency"), and the output then varies with --threads
  // at float32 round-off.
  bool intra_op = false;
  // Declared extra inputs after (x, t) (model.inputs): the module's forward then takes
  // exactly these, by these names, and `cond` is a row index per sample (model_inputs.h).
  // Shared so that the pipeline and the C API can set values after loading. Null or empty:
  // forward(x, t) or forward(x, t, labels) as before.
  std::shared_ptr<ModelInputs> inputs;
};

// The CPU chunk size of `cpu_parallel: chunks` for a batch of `batch` samples (no
// max_batch): half the batch, so that two cores share a small batch, but at least 2 samples
// per call (a one-sample call costs nearly as much as a two-sample one) and at most 16 (larger
// calls are slower per sample on one thread; docs/benchmarks.md, "latency").
int64_t cpu_chunk_size(int64_t batch);

// Wall time this thread has spent in TorchScript denoiser calls (the network itself, chunks
// included, not the conversions around it), in nanoseconds: the difference over a run is
// the network's share, the rest is scorch's overhead.
int64_t network_nanoseconds();

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
