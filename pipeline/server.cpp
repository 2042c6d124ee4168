// `scorch serve` (include/scorch/server.h, docs/server.md).
#include "scorch/server.h"

#include <ATen/ATen.h>
#include <httplib.h>
#include <unistd.h>

#include <csignal>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <thread>

#include "openapi_json.h"
#include "sections.h"
#include "scorch/config.h"
#include "scorch/discrete_sampler.h"
#include "scorch/error.h"
#include "scorch/image.h"
#include "scorch/io.h"
#include "scorch/model_cache.h"
#include "scorch/pipeline.h"
#include "scorch/sampler.h"
#include "scorch/token_pipeline.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace scorch {

namespace {

std::string base64(const std::string& in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
    for (int s : {18, 12, 6, 0}) out += k[(v >> s) & 63];
  }
  if (i < in.size()) {
    const uint32_t v = uint32_t(uint8_t(in[i])) << 16 | (i + 1 < in.size() ? uint32_t(uint8_t(in[i + 1])) << 8 : 0);
    out += k[(v >> 18) & 63];
    out += k[(v >> 12) & 63];
    out += i + 1 < in.size() ? k[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

HttpReply reply(int status, const json& body) { return {status, "application/json", body.dump(), {}, {}}; }
HttpReply error(int status, const std::string& message) { return reply(status, json{{"error", message}}); }

// Keys whose values are files (by their last name): a request may name files only inside
// the --models folder, as relative paths without "..".
const std::set<std::string>& file_keys() {
  static const std::set<std::string> keys = {"path", "init_image", "init_noise", "inpaint_mask", "invert", "file", "stats", "warm_model",
                                             "negative_file", "mask", "vocab", "coefficients", "gaussian", "classifier",
                                             "reference", "config"};
  return keys;
}

// A file value given in a request: a path inside `models` (relative, without ".."), made
// absolute there; anything else is bad input naming the key.
std::string confine(const std::string& key, const std::string& p, const std::string& models) {
  if (models.empty()) bad_input(key + ": this server takes no file paths in requests (started without --models)");
  const fs::path rel(p);
  bool up = false;
  for (const auto& part : rel) up = up || part == "..";
  if (rel.is_absolute() || up) bad_input(key + ": '" + p + "' is outside the models folder; give a path relative to it, without '..'");
  const fs::path full = fs::path(models) / rel;
  if (!fs::exists(full)) bad_input(key + ": '" + p + "' does not exist in the models folder");
  return full.string();
}

bool is_file_key(const std::string& key) { return file_keys().count(key.substr(key.rfind('.') + 1)) > 0; }

// Every file value of the request's config that the base config does not hold at the same
// place, confined to `models` (made absolute there). Checked on the merged YAML tree, so no
// spelling of the request (nested objects, --set strings, YAML flow text) bypasses it.
void confine_paths(YAML::Node merged, const YAML::Node& base, const std::string& where, const std::string& models) {
  if (merged.IsMap()) {
    for (auto kv : merged) {
      if (!kv.first.IsScalar()) continue;
      const std::string key = where.empty() ? kv.first.Scalar() : where + "." + kv.first.Scalar();
      const YAML::Node before = base && base.IsMap() ? base[kv.first.Scalar()] : YAML::Node();
      if (is_file_key(key) && kv.second.IsScalar() && !kv.second.Scalar().empty()) {
        if (!(before && before.IsScalar() && before.Scalar() == kv.second.Scalar()))
          kv.second = confine(key, kv.second.Scalar(), models);
      } else {
        confine_paths(kv.second, before, key, models);
      }
    }
  } else if (merged.IsSequence()) {
    for (size_t i = 0; i < merged.size(); ++i)
      confine_paths(merged[i], base && base.IsSequence() && i < base.size() ? base[i] : YAML::Node(),
                    where + "[" + std::to_string(i) + "]", models);
  }
}

// "a.b=value" overrides from a nested object: objects become dotted keys, everything else
// its JSON text (valid YAML flow).
void flatten(const json& v, const std::string& prefix, std::vector<std::string>* out) {
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string key = prefix.empty() ? it.key() : prefix + "." + it.key();
    if (it.value().is_object() && !it.value().empty())
      flatten(it.value(), key, out);
    else
      out->push_back(key + "=" + (it.value().is_string() ? it.value().get<std::string>() : it.value().dump()));
  }
}

json option_json(const OptionSpec& o) {
  json j = {{"name", o.name}, {"type", to_string(o.type)}, {"default", o.default_value}, {"help", o.help}};
  if (!o.choices.empty()) j["choices"] = o.choices;
  if (std::isfinite(o.min)) j["min"] = o.min;
  if (std::isfinite(o.max)) j["max"] = o.max;
  return j;
}

}  // namespace

namespace {

// One request's run: a generation that the worker thread runs alone or merged with others
// (docs/server.md, "Batching"). The fields below `format` change under Service::Impl::mutex.
struct Job {
  enum class State { Queued, Running, Done, Failed, Cancelled };
  using Clock = std::chrono::steady_clock;

  std::string id;                      // "" for POST /v1/generate (not listed)
  std::unique_ptr<Pipeline> pipeline;  // the request validated alone: its reply's config and summary
  YAML::Node config;                   // the request's merged config (output cleared)
  std::string merge_key;               // requests with equal keys may share a run; "": runs alone
  std::map<std::string, std::vector<YAML::Node>> per_sample;  // seed, cond, prompt, negative_prompt
  int64_t batch = 0;
  std::string format;
  Clock::time_point created = Clock::now(), deadline = Clock::time_point::max();

  State state = State::Queued;
  int step = 0, total = 0;
  int64_t nfe = 0;
  double t = 0.0;
  at::Tensor preview;  // the latest x0 prediction, [batch, *shape]
  int preview_step = 0;
  json result;
  int status = 0;  // failed: the HTTP status
  std::string error;
  uint64_t version = 0;  // bumped on every change (event streams)

  bool final() const { return state == State::Done || state == State::Failed || state == State::Cancelled; }
};

const char* state_name(Job::State s) {
  switch (s) {
    case Job::State::Queued: return "queued";
    case Job::State::Running: return "running";
    case Job::State::Done: return "done";
    case Job::State::Failed: return "failed";
    case Job::State::Cancelled: return "cancelled";
  }
  return "?";
}

// The per-sample config values of a request (one entry per sample), or false when a
// request cannot share a run: its samples' values are not given one per sample (cond: rows),
// its data come from files with rows of their own, or its sampler couples the batch
// (docs/distributed.md lists those).
bool split_per_sample(const YAML::Node& resolved, int64_t batch, std::map<std::string, std::vector<YAML::Node>>* out) {
  const auto text = [&](const char* a, const char* b = nullptr) {
    YAML::Node n = resolved[a];
    if (b) n = n && n.IsMap() ? n[b] : YAML::Node();
    return n && n.IsScalar() ? n.Scalar() : std::string();
  };
  if (text("sampler", "name") == "dpm_adaptive") return false;
  if (resolved["guidance"] && resolved["guidance"]["corrector"] && resolved["guidance"]["corrector"]["type"]) {
    const std::string c = resolved["guidance"]["corrector"]["type"].Scalar();
    if (c == "mala" || c == "hmc") return false;
  }
  for (const char* k : {"init_noise", "invert", "init_image", "inpaint_mask"})
    if (!text(k).empty()) return false;
  if (resolved["model"] && resolved["model"]["inputs"] && resolved["model"]["inputs"].size() > 0) return false;
  if (resolved["guidance"] && YAML::Dump(resolved["guidance"]).find("reference") != std::string::npos) return false;
  for (const char* k : {"seed", "cond", "prompt", "negative_prompt"}) {
    const YAML::Node v = resolved[k];
    if (!v || v.IsNull()) continue;
    std::vector<YAML::Node> values;
    if (v.IsSequence() && int64_t(v.size()) == batch) {
      for (const auto& e : v) values.push_back(e);
    } else if (v.IsScalar()) {
      int64_t label = 0;
      if (std::string(k) == "cond" && !YAML::convert<int64_t>::decode(v, label)) return false;  // rows, null_label
      values.assign(size_t(batch), v);
    } else {
      return false;
    }
    (*out)[k] = values;
  }
  return true;
}

}  // namespace

struct Service::Impl {
  ServerOptions options;
  size_t cache_budget_before = 0;  // restored when the service ends
  std::mutex mutex;
  std::condition_variable changed;  // any job's state; the queue
  std::deque<std::shared_ptr<Job>> queue;
  std::vector<std::shared_ptr<Job>> running;
  std::map<std::string, std::shared_ptr<Job>> jobs;  // listed ones (POST /v1/jobs)
  std::deque<std::string> finished;                  // listed and final, oldest first
  bool stopping = false;
  int preparing = 0;  // requests being validated, which the batching window waits for
  Job::Clock::time_point last_run_end;
  int64_t last_run_requests = 0;
  std::thread worker;

  // --- job state (callers hold `mutex`) ---

  void touch(Job& j) {
    ++j.version;
    changed.notify_all();
  }
  void end(Job& j, Job::State state, int status = 0, const std::string& message = "") {
    if (j.final()) return;
    j.state = state;
    j.status = status;
    j.error = message;
    j.preview = at::Tensor();
    touch(j);
    if (!j.id.empty()) {
      finished.push_back(j.id);
      while (int(finished.size()) > options.keep_jobs) {
        jobs.erase(finished.front());
        finished.pop_front();
      }
    }
  }
  void expire(Job& j) {
    if (!j.final() && Job::Clock::now() >= j.deadline)
      end(j, Job::State::Failed, 504,
          "request: not finished within the server's time-out of " + std::to_string(options.timeout_s) + " s (--timeout)");
  }
  void drop_from_queue(const Job& j) {
    queue.erase(std::remove_if(queue.begin(), queue.end(), [&](const auto& q) { return q.get() == &j; }), queue.end());
  }

  // --- a request into a job (any thread) ---

  // Parses and validates a request body as `scorch generate` would its config; bad input is
  // an Error with the CLI's message.
  std::shared_ptr<Job> prepare(const std::string& body) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      ++preparing;
    }
    struct Done {
      Impl* impl;
      ~Done() {
        std::lock_guard<std::mutex> lock(impl->mutex);
        --impl->preparing;
        impl->changed.notify_all();
      }
    } done{this};
    json request;
    try {
      request = json::parse(body);
    } catch (const json::exception& e) {
      bad_input(std::string("request: not valid JSON (") + e.what() + ")");
    }
    if (!request.is_object()) bad_input("request: expected a JSON object {\"config\": {...}, \"set\": [...], \"format\": ...}");
    auto job = std::make_shared<Job>();
    job->format = "png";
    std::vector<std::string> sets;
    for (auto it = request.begin(); it != request.end(); ++it) {
      if (it.key() == "config") {
        if (!it.value().is_object()) bad_input("config: expected an object of config keys (as in YAML)");
        flatten(it.value(), "", &sets);
      } else if (it.key() == "set") {
        if (!it.value().is_array()) bad_input("set: expected a list of \"key=value\" strings, as --set");
        for (const auto& s : it.value()) {
          if (!s.is_string()) bad_input("set: expected a list of \"key=value\" strings, as --set");
          sets.push_back(s.get<std::string>());
        }
      } else if (it.key() == "format") {
        if (!it.value().is_string() || (it.value() != "png" && it.value() != "npy"))
          bad_input("format: expected \"png\" or \"npy\"");
        job->format = it.value().get<std::string>();
      } else {
        bad_input(it.key() + ": unknown field; a request has config, set and format");
      }
    }
    for (const auto& s : sets)
      if (s.rfind("output", 0) == 0 && (s.size() == 6 || s[6] == '.' || s[6] == '='))
        bad_input(s.substr(0, s.find('=')) + ": the server writes no files; the reply carries the samples");
    YAML::Node config = load_config(options.config, sets);
    confine_paths(config, load_config(options.config, {}), "", options.models);
    // The server's own limit speaks only inside the option's range: outside it the config's
    // check below gives the CLI's message.
    const auto& top = continuous_top_schema();
    const auto spec = std::find_if(top.begin(), top.end(), [](const OptionSpec& o) { return o.name == "batch"; });
    if (config["batch"] && config["batch"].IsScalar()) {
      int64_t b = 0;
      if (YAML::convert<int64_t>::decode(config["batch"], b) && b > options.max_batch && double(b) <= spec->max)
        bad_input("batch: " + std::to_string(b) + " samples, above this server's limit of " +
                  std::to_string(options.max_batch) + " per request");
    }
    if (is_token_config(config)) bad_input("model.type: tokens: the server runs continuous models only (for now)");
    config["output"] = YAML::Node(YAML::NodeType::Map);
    config["output"]["png"] = "";
    job->pipeline = Pipeline::from_config(config);
    job->config = config;
    job->batch = job->pipeline->batch();
    if (options.batch_window_ms > 0) {
      const YAML::Node resolved = YAML::Load(job->pipeline->provenance_yaml());
      if (split_per_sample(resolved, job->batch, &job->per_sample)) {
        YAML::Node key = YAML::Clone(resolved);
        for (const char* k : {"seed", "batch", "cond", "prompt", "negative_prompt"}) key.remove(k);
        job->merge_key = YAML::Dump(key);
      }
    }
    if (options.timeout_s > 0)
      job->deadline = job->created + std::chrono::duration_cast<Job::Clock::duration>(
                                         std::chrono::duration<double>(options.timeout_s));
    return job;
  }

  // Queues a prepared job; nullopt, or the refusal (503).
  std::optional<HttpReply> enqueue(const std::shared_ptr<Job>& job) {
    std::lock_guard<std::mutex> lock(mutex);
    if (stopping) return error(503, "the server is shutting down");
    if (int(queue.size()) >= options.max_queue) {
      HttpReply busy = error(503, "the queue is full (" + std::to_string(options.max_queue) + " requests waiting)");
      busy.headers["Retry-After"] = "1";
      return busy;
    }
    if (!job->id.empty()) jobs[job->id] = job;
    queue.push_back(job);
    changed.notify_all();
    return std::nullopt;
  }

  // --- the worker: takes the oldest job and those that may join it, runs them ---

  void work() {
    std::unique_lock<std::mutex> lock(mutex);
    for (;;) {
      changed.wait(lock, [&] { return stopping || !queue.empty(); });
      if (queue.empty()) return;  // stopping, and the queue was failed
      std::shared_ptr<Job> first = queue.front();
      expire(*first);
      if (first->final()) {
        queue.pop_front();
        continue;
      }
      // Batching: wait for companions until the window closes (later while requests that
      // arrived are still being validated, up to ten windows), a run is full, or as many
      // requests wait as the last run answered, if it ended within the last second. The
      // window opens with the first request, or when the last run ended if that is later:
      // the clients it answered are then coming back, and a run of the few requests that
      // came in meanwhile would split every later round in two. A lone client (the last run
      // answered one request) therefore never waits.
      const auto joinable = [&](const Job& j) { return j.merge_key == first->merge_key && !j.final(); };
      const auto queued = [&](bool samples) {
        int64_t n = 0;
        for (const auto& q : queue)
          if (joinable(*q)) n += samples ? q->batch : 1;
        return n;
      };
      if (!first->merge_key.empty()) {
        const auto window = std::chrono::duration_cast<Job::Clock::duration>(
            std::chrono::duration<double, std::milli>(options.batch_window_ms));
        const int64_t expected = Job::Clock::now() - last_run_end < std::chrono::seconds(1) ? last_run_requests : 0;
        const auto ready = [&] {
          return stopping || first->final() || queued(true) >= options.max_batch || (expected > 0 && queued(false) >= expected);
        };
        const auto open = std::max(first->created, last_run_end);
        changed.wait_until(lock, open + window, ready);
        while (!ready() && preparing > 0 && Job::Clock::now() < open + 10 * window)
          changed.wait_until(lock, open + 10 * window);
        if (first->final()) continue;
        if (stopping) return;
      }
      std::vector<std::shared_ptr<Job>> group;
      int64_t samples = 0;
      for (const auto& q : queue) {
        if (q != first && (first->merge_key.empty() || !joinable(*q))) continue;
        expire(*q);
        if (q->final() || samples + q->batch > std::max(options.max_batch, first->batch)) continue;
        group.push_back(q);
        samples += q->batch;
        if (first->merge_key.empty()) break;
      }
      if (group.empty()) continue;
      for (const auto& j : group) {
        drop_from_queue(*j);
        j->state = Job::State::Running;
        touch(*j);
      }
      running = group;
      lock.unlock();
      run(group, samples);
      lock.lock();
      last_run_end = Job::Clock::now();
      last_run_requests = int64_t(group.size());
      running.clear();
    }
  }

  // One pipeline for the group (the first job's, or one built for the merged batch), its
  // progress fanned out to the jobs, its samples split back in order.
  void run(const std::vector<std::shared_ptr<Job>>& group, int64_t samples) {
    std::unique_ptr<Pipeline> merged;
    const Pipeline* pipeline = group.front()->pipeline.get();
    try {
      if (group.size() > 1) {
        YAML::Node config = YAML::Clone(group.front()->config);
        config["batch"] = samples;
        for (const auto& [key, unused] : group.front()->per_sample) {
          YAML::Node all(YAML::NodeType::Sequence);
          for (const auto& j : group)
            for (const auto& v : j->per_sample.at(key)) all.push_back(v);
          config[key] = all;
        }
        merged = Pipeline::from_config(config);
        pipeline = merged.get();
      }
      const ProgressFn progress = [&](const StepInfo& s) {
        std::lock_guard<std::mutex> lock(mutex);
        bool alive = false;
        int64_t offset = 0;
        for (const auto& j : group) {
          expire(*j);
          if (j->state == Job::State::Running) {
            alive = true;
            j->step = s.step;
            j->total = s.total;
            j->nfe = s.nfe;
            j->t = s.t;
            if (s.x0.defined() && s.x0.dim() >= 1 && s.x0.size(0) == samples &&
                s.x0.sizes().slice(1).vec() == j->pipeline->sample_shape()) {
              j->preview = s.x0.narrow(0, offset, j->batch).to(at::kFloat).clone();
              j->preview_step = s.step;
            }
            touch(*j);
          }
          offset += j->batch;
        }
        return alive;
      };
      const GenerateResult r = pipeline->generate(progress);
      int64_t offset = 0;
      for (const auto& j : group) {
        GenerateResult own = r;
        own.samples = r.samples.narrow(0, offset, j->batch);
        if (r.latents.defined()) own.latents = r.latents.narrow(0, offset, j->batch);
        offset += j->batch;
        json out = reply_json(*j, own);
        out["run"] = {{"requests", group.size()}, {"samples", samples}, {"seconds", r.seconds}};
        std::lock_guard<std::mutex> lock(mutex);
        if (j->state != Job::State::Running) continue;
        j->result = std::move(out);
        end(*j, Job::State::Done);
      }
    } catch (const Error& e) {
      std::lock_guard<std::mutex> lock(mutex);
      for (const auto& j : group)
        if (e.status() == Status::Cancelled)
          end(*j, Job::State::Cancelled);
        else
          end(*j, Job::State::Failed, e.status() == Status::BadInput ? 400 : 500, e.what());
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lock(mutex);
      for (const auto& j : group) end(*j, Job::State::Failed, 500, std::string("internal error: ") + e.what());
    }
  }

  static json reply_json(const Job& j, const GenerateResult& r) {
    const std::string config = j.pipeline->provenance_yaml();
    const YAML::Node resolved = YAML::Load(config);
    json seeds = json::array();
    for (const auto& s : resolved["seed"]) seeds.push_back(s.as<uint64_t>());
    json out = {{"seeds", seeds},
                {"nfe", r.nfe},
                {"summary", j.pipeline->summary(r)},
                {"config", config},
                {"shape", r.samples.sizes().vec()}};
    if (j.format == "npy")
      out["npy"] = base64(encode_npy(r.samples.to(at::kFloat), "reply"));
    else
      out["png"] = base64(encode_png_grid(r.samples, 0, "reply", {{"scorch", config}, {"parameters", j.pipeline->summary(r)}}));
    return out;
  }

  // GET /v1/jobs/{id} (callers hold `mutex`).
  static json status_json(const Job& j) {
    json out = {{"id", j.id}, {"state", state_name(j.state)}, {"step", j.step}, {"total", j.total}, {"nfe", j.nfe},
                {"t", j.t}, {"batch", j.batch}};
    if (j.preview.defined()) out["preview_step"] = j.preview_step;
    if (j.state == Job::State::Failed) {
      out["status"] = j.status;
      out["error"] = j.error;
    }
    if (j.state == Job::State::Done) out["result"] = j.result;
    return out;
  }

  // --- endpoints ---

  HttpReply failed_reply(const Job& j) {
    if (j.state == Job::State::Cancelled) return error(409, "request: cancelled");
    HttpReply r = error(j.status, j.error);
    if (j.status == 503) r.headers["Retry-After"] = "1";
    return r;
  }

  // prepare() with its errors as replies: 400 for bad input, 500 for anything else.
  std::optional<HttpReply> prepare_reply(const std::string& body, std::shared_ptr<Job>* job) {
    try {
      *job = prepare(body);
    } catch (const Error& e) {
      return error(e.status() == Status::BadInput ? 400 : 500, e.what());
    } catch (const std::exception& e) {
      return error(500, std::string("internal error: ") + e.what());
    }
    return std::nullopt;
  }

  HttpReply generate(const std::string& body) {
    std::shared_ptr<Job> job;
    if (auto refused = prepare_reply(body, &job)) return *refused;
    if (auto refused = enqueue(job)) return *refused;
    std::unique_lock<std::mutex> lock(mutex);
    changed.wait_until(lock, job->deadline, [&] { return job->final(); });
    expire(*job);
    drop_from_queue(*job);
    if (job->state == Job::State::Done) return reply(200, job->result);
    return failed_reply(*job);
  }

  HttpReply submit(const std::string& body) {
    std::shared_ptr<Job> job;
    if (auto refused = prepare_reply(body, &job)) return *refused;
    static std::atomic<uint64_t> counter{0};
    std::random_device device;
    char id[40];
    std::snprintf(id, sizeof id, "%08x%08x-%llu", device(), device(), static_cast<unsigned long long>(++counter));
    job->id = id;
    if (auto refused = enqueue(job)) return *refused;
    HttpReply r = reply(202, json{{"id", job->id}, {"state", "queued"}});
    r.headers["Location"] = "/v1/jobs/" + job->id;
    return r;
  }

  HttpReply job_endpoint(const std::string& method, const std::string& id, const std::string& what) {
    std::unique_lock<std::mutex> lock(mutex);
    const auto it = jobs.find(id);
    if (it == jobs.end()) return error(404, "/v1/jobs/" + id + ": no such job (finished jobs are kept while " +
                                                std::to_string(options.keep_jobs) + " newer ones have not finished)");
    const std::shared_ptr<Job> job = it->second;
    if (what.empty() && method == "GET") return reply(200, status_json(*job));
    if (what.empty() && method == "DELETE") {
      if (job->final())
        return error(409, "/v1/jobs/" + id + ": the job has already ended (" + state_name(job->state) + "); nothing to cancel");
      if (job->state == Job::State::Queued) drop_from_queue(*job);
      end(*job, Job::State::Cancelled);
      return reply(200, status_json(*job));
    }
    if (what == "preview" && method == "GET") {
      if (!job->preview.defined()) return error(404, "/v1/jobs/" + id + "/preview: no preview (the job has not run a step, has ended, or its model is latent)");
      const at::Tensor preview = job->preview;
      lock.unlock();
      return {200, "image/png", encode_png_grid(preview, 0, "preview", {}), {}, {}};
    }
    if (what == "events" && method == "GET") {
      HttpReply r;
      r.type = "text/event-stream";
      r.headers["Cache-Control"] = "no-cache";
      r.stream = [this, job](const std::function<bool(const std::string&)>& write) { events(job, write); };
      return r;
    }
    if (what.empty() || what == "preview" || what == "events")
      return error(405, "/v1/jobs/" + id + (what.empty() ? "" : "/" + what) + ": use " + (what.empty() ? "GET or DELETE" : "GET"));
    return error(404, "/v1/jobs/" + id + "/" + what + ": no such endpoint (see /openapi.json)");
  }

  // Server-sent events: the job's state on every change, the last one final; a comment line
  // every 15 s keeps idle connections open and notices a client that left.
  void events(const std::shared_ptr<Job>& job, const std::function<bool(const std::string&)>& write) {
    std::unique_lock<std::mutex> lock(mutex);
    uint64_t seen = ~uint64_t(0);
    for (;;) {
      changed.wait_for(lock, std::chrono::seconds(15), [&] { return job->version != seen; });
      std::string text = ": keep-alive\n\n";
      const bool news = job->version != seen, last = job->final();
      if (news) {
        seen = job->version;
        json e = status_json(*job);
        e.erase("result");
        text = std::string("event: ") + (last ? state_name(job->state) : "progress") + "\ndata: " + e.dump() + "\n\n";
      }
      lock.unlock();
      const bool open = write(text);
      lock.lock();
      if (!open || (news && last)) return;
    }
  }

  void shutdown(bool cancel_running) {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
    for (const auto& j : queue) end(*j, Job::State::Failed, 503, "the server is shutting down");
    queue.clear();
    if (cancel_running)
      for (const auto& j : running) end(*j, Job::State::Failed, 503, "the server is shutting down; the run was cancelled");
    changed.notify_all();
  }
};

Service::Service(const ServerOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  if (!options.models.empty() && !fs::is_directory(options.models))
    bad_input("--models: '" + options.models + "' is not a folder");
  impl_->cache_budget_before = model_cache_stats().budget;
  set_model_cache_budget(options.model_cache_bytes);
  try {
    // the base config must load and validate before the server listens (its model is kept)
    Pipeline::from_config(load_config(options.config, {"output.png=", "output.npy="}));
  } catch (...) {
    set_model_cache_budget(impl_->cache_budget_before);
    throw;
  }
  impl_->worker = std::thread([this] { impl_->work(); });
}

Service::~Service() {
  impl_->shutdown(true);
  impl_->worker.join();
  set_model_cache_budget(impl_->cache_budget_before);
}

void Service::shutdown(bool cancel_running) { impl_->shutdown(cancel_running); }

HttpReply Service::handle(const std::string& method, const std::string& path, const std::string& body) {
  const auto only = [&](const char* m) { return method == m; };
  if (body.size() > impl_->options.max_body)
    return error(413, "request body of " + std::to_string(body.size()) + " bytes, above the server's limit of " +
                          std::to_string(impl_->options.max_body));
  if (path == "/health") {
    if (!only("GET")) return error(405, "/health: use GET");
    std::lock_guard<std::mutex> lock(impl_->mutex);
    int64_t running = 0;
    for (const auto& j : impl_->running) running += j->final() ? 0 : 1;
    const ModelCacheStats cache = model_cache_stats();
    return reply(200, json{{"status", impl_->stopping ? "stopping" : "ok"},
                           {"queued", impl_->queue.size()},
                           {"running", running},
                           {"model_cache", {{"bytes", cache.bytes}, {"budget", cache.budget}, {"entries", cache.entries.size()},
                                            {"hits", cache.hits}, {"misses", cache.misses}, {"evictions", cache.evictions}}}});
  }
  if (path == "/openapi.json") {
    if (!only("GET")) return error(405, "/openapi.json: use GET");
    return {200, "application/json", kOpenApiJson, {}, {}};
  }
  if (path == "/v1/samplers") {
    if (!only("GET")) return error(405, "/v1/samplers: use GET");
    json out = {{"continuous", json::array()}, {"discrete", json::array()}};
    for (const auto& e : samplers().entries()) {
      json options = json::array();
      for (const auto& o : e.options) options.push_back(option_json(o));
      out["continuous"].push_back({{"name", e.name}, {"summary", e.summary}, {"options", options}});
    }
    for (const auto& e : discrete_samplers().entries()) {
      json options = json::array();
      for (const auto& o : e.options) options.push_back(option_json(o));
      out["discrete"].push_back({{"name", e.name}, {"summary", e.summary}, {"options", options}});
    }
    return reply(200, out);
  }
  if (path == "/v1/models") {
    if (!only("GET")) return error(405, "/v1/models: use GET");
    json files = json::array();
    if (!impl_->options.models.empty())
      for (const auto& e : fs::recursive_directory_iterator(impl_->options.models)) {
        const std::string ext = e.path().extension().string();
        if (e.is_regular_file() && (ext == ".pt" || ext == ".safetensors"))
          files.push_back(fs::relative(e.path(), impl_->options.models).string());
      }
    std::sort(files.begin(), files.end());
    json loaded = json::array();
    for (const auto& e : model_cache_stats().entries)
      if (e.key.rfind("sha256|", 0) != 0) loaded.push_back({{"key", e.key}, {"bytes", e.bytes}});
    return reply(200, json{{"models", files}, {"loaded", loaded}});
  }
  if (path == "/v1/generate") {
    if (!only("POST")) return error(405, "/v1/generate: use POST");
    return impl_->generate(body);
  }
  if (path == "/v1/jobs") {
    if (!only("POST")) return error(405, "/v1/jobs: use POST (and GET /v1/jobs/{id})");
    return impl_->submit(body);
  }
  const std::string prefix = "/v1/jobs/";
  if (path.rfind(prefix, 0) == 0 && path.size() > prefix.size()) {
    const std::string rest = path.substr(prefix.size());
    const size_t slash = rest.find('/');
    return impl_->job_endpoint(method, rest.substr(0, slash), slash == std::string::npos ? "" : rest.substr(slash + 1));
  }
  return error(404, path + ": no such endpoint (see /openapi.json)");
}

struct HttpServer::Impl {
  ServerOptions options;
  Service service;
  httplib::Server http;
  explicit Impl(const ServerOptions& o) : options(o), service(o) {}
};

HttpServer::HttpServer(const ServerOptions& options) : impl_(std::make_unique<Impl>(options)) {
  httplib::Server& s = impl_->http;
  s.set_payload_max_length(options.max_body);
  // A thread per open connection (clients keep theirs open between requests): enough for
  // the queue's clients plus event streams.
  const size_t threads = size_t(std::max(options.max_queue, 16)) + 16;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.set_keep_alive_max_count(1000);
  // Replies go out in several writes (headers, body): without TCP_NODELAY, Nagle holds the
  // last one until the client's delayed ACK, 40 ms a reply on Linux.
  s.set_tcp_nodelay(true);
  const auto route = [this](const httplib::Request& req, httplib::Response& res) {
    const HttpReply r = impl_->service.handle(req.method, req.path, req.body);
    res.status = r.status;
    for (const auto& [k, v] : r.headers) res.set_header(k, v);
    if (r.stream) {
      const auto stream = r.stream;
      res.set_chunked_content_provider(r.type, [stream](size_t, httplib::DataSink& sink) {
        stream([&](const std::string& text) { return sink.is_writable() && sink.write(text.data(), text.size()); });
        sink.done();
        return true;
      });
    } else {
      res.set_content(r.body, r.type.c_str());
    }
  };
  s.Get(".*", route);
  s.Post(".*", route);
  s.Delete(".*", route);
  s.Put(".*", route);
  // httplib's own refusals (a body above the limit) as JSON errors too
  s.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty())
      res.set_content(json{{"error", "HTTP " + std::to_string(res.status)}}.dump(), "application/json");
  });
}

HttpServer::~HttpServer() { impl_->http.stop(); }

int HttpServer::bind() {
  const int port = impl_->options.port == 0 ? impl_->http.bind_to_any_port(impl_->options.host)
                                            : (impl_->http.bind_to_port(impl_->options.host, impl_->options.port)
                                                   ? impl_->options.port
                                                   : -1);
  if (port < 0)
    bad_input("--port: cannot listen on " + impl_->options.host + ":" + std::to_string(impl_->options.port) +
              " (in use, or not an address of this machine)");
  return port;
}

void HttpServer::run() { impl_->http.listen_after_bind(); }
void HttpServer::stop() {
  impl_->service.shutdown(false);
  impl_->http.stop();
}
void HttpServer::stop_now() {
  impl_->service.shutdown(true);
  impl_->http.stop();
}

namespace {

int stop_pipe[2] = {-1, -1};

// SIGINT / SIGTERM: one byte down a pipe (async-signal-safe); a thread reads it and stops
// the server.
void on_stop_signal(int sig) {
  const char c = char(sig);
  if (::write(stop_pipe[1], &c, 1) < 0) {
  }
}

}  // namespace

int serve(const ServerOptions& options) {
  HttpServer server(options);
  const int port = server.bind();
  if (options.host != "127.0.0.1" && options.host != "localhost" && options.host != "::1")
    std::fprintf(stderr, "scorch serve: warning: listening on %s, reachable from other machines; the API has no "
                         "authentication\n", options.host.c_str());
  std::fprintf(stderr, "scorch serve: listening on http://%s:%d (API: /openapi.json)\n", options.host.c_str(), port);
  if (::pipe(stop_pipe) != 0) throw Error(Status::Internal, "serve: cannot make a pipe");
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  // The first signal lets the running batch finish; a second one cancels it.
  std::thread waiter([&] {
    char c = 0;
    for (int signals = 0; ::read(stop_pipe[0], &c, 1) == 1 && c != 0; ++signals) {
      const char* name = c == SIGTERM ? "SIGTERM" : "SIGINT";
      if (signals == 0) {
        std::fprintf(stderr, "scorch serve: %s, stopping after the running requests (again: cancel them)\n", name);
        server.stop();
      } else {
        std::fprintf(stderr, "scorch serve: %s again, cancelling the running requests\n", name);
        server.stop_now();
      }
    }
  });
  server.run();
  const char wake = 0;  // run() ended otherwise: let the waiter go
  if (::write(stop_pipe[1], &wake, 1) < 0) {
  }
  waiter.join();
  return 0;
}

}  // namespace scorch
