// `scorch serve` (include/scorch/server.h, docs/server.md).
#include "scorch/server.h"

#include <ATen/ATen.h>
#include <httplib.h>
#include <unistd.h>

#include <csignal>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "openapi_json.h"
#include "scorch/config.h"
#include "scorch/discrete_sampler.h"
#include "scorch/error.h"
#include "scorch/image.h"
#include "scorch/io.h"
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

HttpReply reply(int status, const json& body) { return {status, "application/json", body.dump(), {}}; }
HttpReply error(int status, const std::string& message) { return reply(status, json{{"error", message}}); }

// Keys whose values are files (by their last name): a request may name files only inside
// the --models folder, as relative paths without "..".
const std::set<std::string>& file_keys() {
  static const std::set<std::string> keys = {"path", "init_image", "init_noise", "inpaint_mask", "invert", "file",
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

struct Service::Impl {
  ServerOptions options;
  std::mutex run;                 // one generation at a time: it uses every core
  std::atomic<int> waiting{0};

  HttpReply generate(const std::string& body) {
    if (body.size() > options.max_body)
      return error(413, "request body of " + std::to_string(body.size()) + " bytes, above the server's limit of " +
                            std::to_string(options.max_body));
    json request;
    try {
      request = json::parse(body);
    } catch (const json::exception& e) {
      return error(400, std::string("request: not valid JSON (") + e.what() + ")");
    }
    if (!request.is_object()) return error(400, "request: expected a JSON object {\"config\": {...}, \"set\": [...], \"format\": ...}");
    std::vector<std::string> sets;
    std::string format = "png";
    try {
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
          format = it.value().get<std::string>();
        } else {
          bad_input(it.key() + ": unknown field; a request has config, set and format");
        }
      }
      for (const auto& s : sets)
        if (s.rfind("output", 0) == 0 && (s.size() == 6 || s[6] == '.' || s[6] == '='))
          bad_input(s.substr(0, s.find('=')) + ": the server writes no files; the reply carries the samples");
      YAML::Node config = load_config(options.config, sets);
      confine_paths(config, load_config(options.config, {}), "", options.models);
      if (config["batch"] && config["batch"].IsScalar()) {
        int64_t b = 0;
        if (YAML::convert<int64_t>::decode(config["batch"], b) && b > options.max_batch)
          bad_input("batch: " + std::to_string(b) + " samples, above this server's limit of " +
                    std::to_string(options.max_batch) + " per request");
      }
      if (is_token_config(config)) bad_input("model.type: tokens: the server runs continuous models only (for now)");
      config["output"] = YAML::Node(YAML::NodeType::Map);
      config["output"]["png"] = "";
      if (options.max_queue >= 0 && waiting.load() > options.max_queue) {
        HttpReply busy = error(503, "the queue is full (" + std::to_string(options.max_queue) + " requests waiting)");
        busy.headers["Retry-After"] = "1";
        return busy;
      }
      ++waiting;
      std::lock_guard<std::mutex> lock(run);
      --waiting;
      const auto pipeline = Pipeline::from_config(config);
      const GenerateResult r = pipeline->generate();
      const YAML::Node resolved = YAML::Load(pipeline->provenance_yaml());
      json seeds = json::array();
      for (const auto& s : resolved["seed"]) seeds.push_back(s.as<uint64_t>());
      json out = {{"seeds", seeds},
                  {"nfe", r.nfe},
                  {"summary", pipeline->summary(r)},
                  {"config", pipeline->provenance_yaml()},
                  {"shape", r.samples.sizes().vec()}};
      if (format == "npy")
        out["npy"] = base64(encode_npy(r.samples.to(at::kFloat), "reply"));
      else
        out["png"] = base64(encode_png_grid(r.samples, 0, "reply",
                                            {{"scorch", pipeline->provenance_yaml()}, {"parameters", pipeline->summary(r)}}));
      return reply(200, out);
    } catch (const Error& e) {
      return error(e.status() == Status::BadInput ? 400 : 500, e.what());
    } catch (const std::exception& e) {
      return error(500, std::string("internal error: ") + e.what());
    }
  }
};

Service::Service(const ServerOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  if (!options.models.empty() && !fs::is_directory(options.models))
    bad_input("--models: '" + options.models + "' is not a folder");
  // the base config must load and validate before the server listens
  Pipeline::from_config(load_config(options.config, {"output.png=", "output.npy="}));
}

Service::~Service() = default;

HttpReply Service::handle(const std::string& method, const std::string& path, const std::string& body) {
  const auto only = [&](const char* m) { return method == m; };
  if (path == "/health") {
    if (!only("GET")) return error(405, "/health: use GET");
    return reply(200, json{{"status", "ok"}, {"waiting", impl_->waiting.load()}});
  }
  if (path == "/openapi.json") {
    if (!only("GET")) return error(405, "/openapi.json: use GET");
    return {200, "application/json", kOpenApiJson, {}};
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
    return reply(200, json{{"models", files}});
  }
  if (path == "/v1/generate") {
    if (!only("POST")) return error(405, "/v1/generate: use POST");
    return impl_->generate(body);
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
  const auto route = [this](const httplib::Request& req, httplib::Response& res) {
    const HttpReply r = impl_->service.handle(req.method, req.path, req.body);
    res.status = r.status;
    for (const auto& [k, v] : r.headers) res.set_header(k, v);
    res.set_content(r.body, r.type.c_str());
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
void HttpServer::stop() { impl_->http.stop(); }

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
  std::thread waiter([&] {
    char c = 0;
    if (::read(stop_pipe[0], &c, 1) == 1 && c != 0)
      std::fprintf(stderr, "scorch serve: %s, stopping after the running requests\n", c == SIGTERM ? "SIGTERM" : "SIGINT");
    server.stop();
  });
  server.run();
  const char wake = 0;  // run() ended otherwise: let the waiter go
  if (::write(stop_pipe[1], &wake, 1) < 0) {
  }
  waiter.join();
  return 0;
}

}  // namespace scorch
