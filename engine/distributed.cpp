// The process group (include/scorch/distributed.h) on c10d: a TCPStore for meeting and for
// small messages, a ProcessGroupGloo for tensors. The same calls exist in LibTorch 1.13 and
// 2.x (where ProcessGroupGloo became a Backend with the same collectives).
#include "scorch/distributed.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#ifdef SCORCH_WITH_GLOO
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "scorch/error.h"

namespace scorch {

namespace {


int env_int(const char* name, int lo, int hi, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end || x < lo || x > hi)
    bad_input(std::string(name) + ": expected an integer from " + std::to_string(lo) + " to " + std::to_string(hi) +
              ", got '" + v + "'");
  return int(x);
}

#ifdef SCORCH_WITH_GLOO
// A failure of the group, not of the user's input: exit status 1 with this message.
[[noreturn]] void group_failed(const std::string& message) { throw Error(Status::Internal, "distributed: " + message); }

std::vector<uint8_t> bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }
std::string text(const std::vector<uint8_t>& b) { return std::string(b.begin(), b.end()); }
#endif

}  // namespace

bool distributed_supported() {
#ifdef SCORCH_WITH_GLOO
  return true;
#else
  return false;
#endif
}

struct ProcessGroup::Impl {
  ProcessGroupSpec spec;
#ifdef SCORCH_WITH_GLOO
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#endif
  int64_t sequence = 0;  // exchanges so far: every rank makes them in the same order
  std::chrono::milliseconds timeout{0};
};

ProcessGroup::ProcessGroup() : impl_(std::make_unique<Impl>()) {}
ProcessGroup::~ProcessGroup() = default;

ProcessGroupSpec ProcessGroup::spec_from_environment() {
  ProcessGroupSpec s;
  s.size = env_int("WORLD_SIZE", 1, 65536, 1);
  s.rank = env_int("RANK", 0, s.size - 1, 0);
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) s.master_addr = a;
  s.master_port = env_int("MASTER_PORT", 1, 65535, 29500);
  const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
  s.agent_store = agent && std::string(agent) == "True";
  if (const char* id = std::getenv("TORCHELASTIC_RUN_ID"); id && *id) s.run_id = id;
  if (const char* t = std::getenv("SCORCH_DIST_TIMEOUT"); t && *t) {
    char* end = nullptr;
    const double v = std::strtod(t, &end);
    if (*end || !(v > 0 && v <= 86400)) bad_input(std::string("SCORCH_DIST_TIMEOUT: expected seconds from 0 to 86400, got '") + t + "'");
    s.timeout_seconds = v;
  }
  return s;
}

std::unique_ptr<ProcessGroup> ProcessGroup::from_environment() {
  const char* world = std::getenv("WORLD_SIZE");
  if (!world || !*world) return nullptr;
  return connect(spec_from_environment());
}

#ifndef SCORCH_WITH_GLOO
std::unique_ptr<ProcessGroup> ProcessGroup::connect(const ProcessGroupSpec&) {
  bad_input("WORLD_SIZE: this build has no distributed runs (built without Gloo's headers; docs/distributed.md)");
}
void ProcessGroup::arrive(const std::string&) {}
std::vector<std::string> ProcessGroup::all_gather(const std::string& mine, const std::string&) { return {mine}; }
at::Tensor ProcessGroup::gather_rows(const at::Tensor& local, const std::string&) { return local; }
void ProcessGroup::all_reduce_sum(at::Tensor&, const std::string&) {}
#else
std::unique_ptr<ProcessGroup> ProcessGroup::connect(const ProcessGroupSpec& spec) {
  std::unique_ptr<ProcessGroup> pg(new ProcessGroup());
  Impl& m = *pg->impl_;
  m.spec = spec;
  m.timeout = std::chrono::milliseconds(int64_t(std::llround(spec.timeout_seconds * 1000)));
  const std::string where = spec.master_addr + ":" + std::to_string(spec.master_port);
  try {
    c10d::TCPStoreOptions o;
    o.port = uint16_t(spec.master_port);
    // Under torchrun the agent already serves the store; otherwise rank 0 does.
    o.isServer = !spec.agent_store && spec.rank == 0;
    o.numWorkers = c10::nullopt;
    o.waitWorkers = false;
    o.timeout = m.timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(spec.master_addr, o);
    m.store = c10::make_intrusive<c10d::PrefixStore>("scorch/" + spec.run_id, tcp);
  } catch (const std::exception& e) {
    group_failed("rank " + std::to_string(spec.rank) + " cannot reach the store at " + where + " (MASTER_ADDR, MASTER_PORT): " +
                 std::string(e.what()).substr(0, std::string(e.what()).find('\n')));
  }
  // Everyone joins before the Gloo group forms, so that a missing rank is named.
  pg->arrive("join");
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(m.timeout);
    const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
    options->devices.push_back(ifname && *ifname ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                                 : c10d::ProcessGroupGloo::createDefaultDevice());
    m.gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(c10::make_intrusive<c10d::PrefixStore>("gloo", m.store),
                                                         spec.rank, spec.size, options);
  } catch (const std::exception& e) {
    group_failed("rank " + std::to_string(spec.rank) + " cannot form the Gloo group: " +
                 std::string(e.what()).substr(0, std::string(e.what()).find('\n')));
  }
  return pg;
}

int ProcessGroup::rank() const { return impl_->spec.rank; }
int ProcessGroup::size() const { return impl_->spec.size; }

std::pair<int64_t, int64_t> ProcessGroup::share(int64_t n, int rank, int size) {
  const int64_t base = n / size, extra = n % size;
  const int64_t first = rank * base + std::min<int64_t>(rank, extra);
  return {first, base + (rank < extra ? 1 : 0)};
}

std::pair<int64_t, int64_t> ProcessGroup::share(int64_t n) const { return share(n, rank(), size()); }

void ProcessGroup::arrive(const std::string& phase) {
  Impl& m = *impl_;
  const std::string stage = "arrive/" + std::to_string(m.sequence++) + "/";
  std::vector<std::string> keys;
  for (int r = 0; r < size(); ++r) keys.push_back(stage + std::to_string(r));
  try {
    m.store->set(keys[size_t(rank())], bytes("1"));
  } catch (const std::exception&) {
    group_failed("lost the store at " + m.spec.master_addr + ":" + std::to_string(m.spec.master_port) + " before '" +
                 phase + "' (the rank or torchrun agent serving it ended)");
  }
  try {
    m.store->wait(keys, m.timeout);
    return;
  } catch (const std::exception&) {
  }
  // Which ranks are missing: each key checked alone (a check never blocks).
  std::vector<std::string> missing;
  try {
    for (int r = 0; r < size(); ++r)
      if (!m.store->check({keys[size_t(r)]})) missing.push_back(std::to_string(r));
  } catch (const std::exception&) {
    group_failed("lost the store during '" + phase + "' (the rank or torchrun agent serving it ended)");
  }
  std::ostringstream who;
  who << (missing.size() == 1 ? "rank " : "ranks ");
  for (size_t i = 0; i < missing.size(); ++i) who << (i ? ", " : "") << missing[i];
  who << " did not reach '" << phase << "' within " << m.spec.timeout_seconds
      << " s (SCORCH_DIST_TIMEOUT): it ended or hangs";
  group_failed(who.str());
}

std::vector<std::string> ProcessGroup::all_gather(const std::string& mine, const std::string& phase) {
  Impl& m = *impl_;
  const std::string stage = "gather/" + std::to_string(m.sequence) + "/";
  try {
    m.store->set(stage + std::to_string(rank()), bytes(mine));
  } catch (const std::exception&) {
    group_failed("lost the store before '" + phase + "'");
  }
  arrive(phase);
  std::vector<std::string> all;
  try {
    for (int r = 0; r < size(); ++r) all.push_back(text(m.store->get(stage + std::to_string(r))));
  } catch (const std::exception&) {
    group_failed("lost the store during '" + phase + "'");
  }
  return all;
}

at::Tensor ProcessGroup::gather_rows(const at::Tensor& local, const std::string& phase) {
  Impl& m = *impl_;
  // Row counts first (through the store), then one Gloo allgather of equal, padded blocks.
  const std::vector<std::string> counts = all_gather(std::to_string(local.size(0)), phase + " (sizes)");
  int64_t most = 0;
  std::vector<int64_t> rows;
  for (const auto& c : counts) {
    rows.push_back(std::stoll(c));
    most = std::max(most, rows.back());
  }
  std::vector<int64_t> block = local.sizes().vec();
  block[0] = most;
  at::Tensor padded = at::zeros(block, local.options().device(at::kCPU));
  if (local.size(0) > 0) padded.narrow(0, 0, local.size(0)).copy_(local);
  std::vector<at::Tensor> input = {padded};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < size(); ++r) output[0].push_back(at::empty_like(padded));
  arrive(phase);
  try {
    m.gloo->allgather(output, input)->wait();
  } catch (const std::exception& e) {
    group_failed("'" + phase + "' failed: " + std::string(e.what()).substr(0, std::string(e.what()).find('\n')));
  }
  std::vector<at::Tensor> parts;
  for (int r = 0; r < size(); ++r)
    if (rows[size_t(r)] > 0) parts.push_back(output[0][size_t(r)].narrow(0, 0, rows[size_t(r)]));
  return parts.empty() ? at::zeros(block, local.options()).narrow(0, 0, 0) : at::cat(parts).to(local.device());
}

void ProcessGroup::all_reduce_sum(at::Tensor& t, const std::string& phase) {
  Impl& m = *impl_;
  std::vector<at::Tensor> tensors = {t.device().is_cpu() ? t.contiguous() : t.cpu().contiguous()};
  arrive(phase);
  try {
    m.gloo->allreduce(tensors)->wait();
  } catch (const std::exception& e) {
    group_failed("'" + phase + "' failed: " + std::string(e.what()).substr(0, std::string(e.what()).find('\n')));
  }
  t.copy_(tensors[0]);
}
#endif

std::string ProcessGroup::outcome_of(const Error& e) { return std::to_string(int(e.status())) + e.what(); }

void ProcessGroup::raise_first(const std::vector<std::string>& outcomes) {
  for (size_t r = 0; r < outcomes.size(); ++r) {
    const std::string& o = outcomes[r];
    if (o.empty()) continue;
    const Status status = o[0] == '2' ? Status::BadInput : o[0] == '3' ? Status::Cancelled : Status::Internal;
    throw Error(status, (r == 0 ? std::string() : "rank " + std::to_string(r) + ": ") + o.substr(1));
  }
}

void ProcessGroup::agree(const std::string& phase, const std::function<void()>& work) {
  std::string mine;
  try {
    work();
  } catch (const Error& e) {
    mine = outcome_of(e);
  }
  raise_first(all_gather(mine, phase));
}

}  // namespace scorch
