// Data split over processes (`scorch fit` and `scorch eval` under torchrun,
// docs/distributed.md): each process holds some rows of a data set; `sum` adds a tensor
// over the processes in place and `gather` concatenates a per-row tensor over them in row
// order (both the identity for one process). The fits and the evaluation compute their
// statistics on their rows (counts, float64 sums, scatter matrices, features) and combine
// them, so that every process ends with the result of the whole data set.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

namespace scorch {

struct DataShards {
  std::function<void(at::Tensor&)> sum = [](at::Tensor&) {};
  std::function<at::Tensor(const at::Tensor&)> gather = [](const at::Tensor& t) { return t; };
  int64_t first = 0;  // this process's first row in the whole data set
  int64_t total = 0;  // rows of the whole data set (0: this process's rows are all of it)
};

}  // namespace scorch
