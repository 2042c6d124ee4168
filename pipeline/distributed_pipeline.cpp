// Distributed generation (include/scorch/distributed_pipeline.h). What crosses the network
// is each rank's outcome (a line of text) and its final samples: nothing per step.
#include "scorch/distributed_pipeline.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "scorch/error.h"
#include "scorch/token_pipeline.h"

namespace scorch {

namespace {

// "dtype dims..." of a tensor, so that a rank without a share can make an empty one.
std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "-";
  std::ostringstream o;
  o << int(t.scalar_type());
  for (int64_t s : t.sizes()) o << ' ' << s;
  return o.str();
}

at::Tensor empty_like_described(const std::string& d) {
  if (d == "-") return {};
  std::istringstream in(d);
  int type = 0;
  in >> type;
  std::vector<int64_t> sizes;
  for (int64_t s; in >> s;) sizes.push_back(s);
  sizes[0] = 0;
  return at::empty(sizes, at::TensorOptions().dtype(at::ScalarType(type)));
}

}  // namespace

std::unique_ptr<Pipeline> distributed_pipeline(ProcessGroup& group, const YAML::Node& config) {
  YAML::Node mine = YAML::Clone(config);
  // Rank 0 writes every output; the others check and write no path (on another machine it
  // may not even exist there).
  if (group.rank() != 0 && mine["output"] && mine["output"].IsMap())
    for (const char* key : {"png", "npy", "labels", "latents", "trajectory"})
      if (mine["output"][key]) mine["output"][key] = "";
  std::unique_ptr<Pipeline> pipeline;
  group.agree("validate the config", [&] {
    if (is_token_config(mine))
      bad_input("model.type: tokens: distributed runs take continuous models; run token models in one process");
    pipeline = Pipeline::from_config(mine);
  });
  return pipeline;
}

GenerateResult distributed_generate(ProcessGroup& group, const Pipeline& pipeline, const ProgressFn& progress) {
  const auto [first, count] = group.share(pipeline.batch());
  GenerateResult r;
  std::string result;
  try {
    if (count > 0) r = pipeline.generate(progress, first, count);
  } catch (const Error& e) {
    result = ProcessGroup::outcome_of(e);
  }
  // From here on: communication (and waiting for slower ranks).
  const auto exchange_start = std::chrono::steady_clock::now();
  // One exchange: every rank's outcome, with the shapes a rank without a share needs.
  const std::string meta = count > 0 ? describe(r.samples) + ";" + describe(r.latents) + ";" +
                                           describe(r.trajectory.defined() ? r.trajectory.transpose(0, 1) : r.trajectory) +
                                           ";" + std::to_string(r.nfe) + ";" + std::to_string(r.steps)
                                     : "";
  const auto all = group.all_gather(result + "\n" + meta, "finish the share");
  std::vector<std::string> outcomes;
  for (const auto& a : all) outcomes.push_back(a.substr(0, a.find('\n')));
  ProcessGroup::raise_first(outcomes);
  const std::string rank0 = all[0].substr(all[0].find('\n') + 1);
  std::vector<std::string> parts;
  for (std::stringstream in(rank0); parts.size() < 5;) {
    std::string p;
    if (!std::getline(in, p, ';')) break;
    parts.push_back(p);
  }
  if (count == 0) {
    r.samples = empty_like_described(parts[0]);
    r.latents = empty_like_described(parts[1]);
    r.trajectory = empty_like_described(parts[2]);
    r.nfe = std::stoll(parts[3]);
    r.steps = std::stoi(parts[4]);
    if (r.trajectory.defined()) r.trajectory = r.trajectory.transpose(0, 1);
  }
  const auto device = r.samples.device();
  r.samples = group.gather_rows(r.samples.cpu(), "gather the samples").to(device);
  if (r.latents.defined()) r.latents = group.gather_rows(r.latents.cpu(), "gather the latents").to(device);
  if (r.trajectory.defined())
    r.trajectory = group.gather_rows(r.trajectory.transpose(0, 1).contiguous().cpu(), "gather the trajectory")
                       .transpose(0, 1)
                       .contiguous();
  // Times: the slowest rank's, as the run takes that long. Communication: the exchange time
  // of the rank that finished its share last (it waited for nobody).
  const double exchange = std::chrono::duration<double>(std::chrono::steady_clock::now() - exchange_start).count();
  const auto slowest = group.all_gather(std::to_string(r.seconds) + " " + std::to_string(r.network_seconds) + " " +
                                            std::to_string(r.decode_seconds) + " " + std::to_string(exchange),
                                        "report the times");
  double communication = 1e300;
  for (const auto& s : slowest) {
    std::istringstream in(s);
    double a = 0, b = 0, c = 0, e = 0;
    in >> a >> b >> c >> e;
    r.seconds = std::max(r.seconds, a);
    r.network_seconds = std::max(r.network_seconds, b);
    r.decode_seconds = std::max(r.decode_seconds, c);
    communication = std::min(communication, e);
  }
  std::ostringstream note;
  note << "distributed: " << group.size() << " ranks of " << ProcessGroup::share(pipeline.batch(), 0, group.size()).second
       << " or fewer samples; communication " << 1e3 * communication << " ms (outcomes and the samples, "
       << r.samples.nbytes() << " bytes)";
  r.notes.push_back(note.str());
  return r;
}

}  // namespace scorch
