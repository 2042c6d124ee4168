// Scale-out on LibTorch's own distributed engine (c10d): a process group of ranks that
// share one job, as torchrun starts them (docs/distributed.md). The ranks meet at a TCP
// store (torchrun's agent store when torchrun hosts one, else rank 0's) and exchange
// tensors through a Gloo process group. Every exchange first waits, with the configured
// timeout, until every rank has arrived at it, so a rank that died or hangs is named in
// the error of the others instead of leaving them blocked.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "scorch/error.h"

namespace scorch {

struct ProcessGroupSpec {
  int rank = 0;
  int size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;       // torchrun's agent hosts the store: every rank is a client
  double timeout_seconds = 300;   // SCORCH_DIST_TIMEOUT
  std::string run_id = "none";    // keys of this run in a shared store
};

// Whether this build can run distributed jobs (c10d's Gloo headers were found).
bool distributed_supported();

class ProcessGroup {
 public:
  // torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and
  // TORCHELASTIC_USE_AGENT_STORE, TORCHELASTIC_RUN_ID); SCORCH_DIST_TIMEOUT in seconds.
  // nullptr without WORLD_SIZE (one process, as without torchrun). Malformed values are
  // bad input naming the variable.
  static std::unique_ptr<ProcessGroup> from_environment();
  static ProcessGroupSpec spec_from_environment();
  // Joins the group (blocks until every rank has joined, at most the timeout).
  static std::unique_ptr<ProcessGroup> connect(const ProcessGroupSpec& spec);
  ~ProcessGroup();

  int rank() const;
  int size() const;
  // This rank's share of n items: [first, first + count), balanced (counts differ by at
  // most one, lower ranks first). count may be 0 when n < size.
  std::pair<int64_t, int64_t> share(int64_t n) const;
  static std::pair<int64_t, int64_t> share(int64_t n, int rank, int size);

  // Every rank's string in rank order, on every rank (outcomes, messages). `phase` names the
  // exchange in a timeout's message.
  std::vector<std::string> all_gather(const std::string& mine, const std::string& phase);
  // The ranks' tensors concatenated along dim 0 in rank order, on every rank. Shapes may
  // differ in dim 0 only (a rank's share may be empty: [0, ...]); dtype float or double.
  at::Tensor gather_rows(const at::Tensor& local, const std::string& phase);
  // Elementwise sum over ranks, in place (double or float tensors, any shape).
  void all_reduce_sum(at::Tensor& t, const std::string& phase);

  // Runs `work` on every rank and agrees on how it went: when it raised an Error on some
  // ranks, every rank raises the first of them (another rank's message prefixed "rank N: "),
  // so a bad input seen by one rank fails the job everywhere with one message.
  void agree(const std::string& phase, const std::function<void()>& work);
  // The same from outcomes already exchanged: "" for success, else outcome_of(error).
  static std::string outcome_of(const Error& e);
  static void raise_first(const std::vector<std::string>& outcomes);

 private:
  ProcessGroup();
  // Waits until every rank has reached `phase`; names the ranks that did not.
  void arrive(const std::string& phase);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace scorch
