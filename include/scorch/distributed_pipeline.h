// A pipeline run across the ranks of a process group (scorch/distributed.h): each rank
// builds the pipeline and they agree on the outcome, each generates its balanced share of
// the batch's sample indices, and every rank ends with the whole result, equal to a
// single-process run's (docs/distributed.md). The CLI writes the outputs on rank 0; an
// embedder that already runs under torchrun calls the same two functions.
#pragma once

#include <yaml-cpp/yaml.h>

#include <memory>

#include "scorch/distributed.h"
#include "scorch/pipeline.h"

namespace scorch {

// Pipeline::from_config on every rank, outputs declared on rank 0 only. A bad config on any
// rank is the same Error on every rank (another rank's message is prefixed "rank N: "),
// raised before any sampling; token models are refused (they are not split yet).
std::unique_ptr<Pipeline> distributed_pipeline(ProcessGroup& group, const YAML::Node& config);

// Every rank generates its share (ProcessGroup::share of the batch) and receives the others':
// samples, latents and trajectory of the whole batch in sample order, the NFE and the
// slowest rank's times. An error on any rank (a non-finite output at some step) is the same
// Error on every rank, after all of them finished their share.
GenerateResult distributed_generate(ProcessGroup& group, const Pipeline& pipeline, const ProgressFn& progress = {});

}  // namespace scorch
