// `scorch serve`: a long-running HTTP server for plug-ins and scripts (docs/server.md).
// Service answers requests without sockets (the JSON API, tested directly); HttpServer
// puts it on cpp-httplib; serve() runs that until SIGINT or SIGTERM.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace scorch {

struct ServerOptions {
  std::string host = "127.0.0.1";  // localhost unless the user says otherwise
  int port = 7860;                 // 0: any free port
  std::string config;              // the base config every request overrides ("": the built-in default)
  std::string models;              // the folder request paths resolve in ("": requests name no files)
  int max_queue = 64;              // requests waiting for a run; more get 503
  size_t max_body = size_t(1) << 20;
  int64_t max_batch = 256;         // samples per request, and per merged run
  // Requests that differ only in their samples (seeds, labels, prompts) and arrive within
  // this window of the first are run as one batch and split back; 0: each runs alone.
  double batch_window_ms = 10;
  double timeout_s = 0;                           // a request still unfinished after this is cancelled (504); 0: none
  size_t model_cache_bytes = size_t(4) << 30;     // loaded models kept (model_cache.h), least recently used evicted
  int keep_jobs = 64;                             // finished jobs kept for GET /v1/jobs/{id}
};

struct HttpReply {
  int status = 200;
  std::string type = "application/json";
  std::string body;
  std::map<std::string, std::string> headers;
  // A streamed reply (server-sent events) instead of `body`: called once with a writer,
  // which returns false when the client has gone; returns when the stream ends.
  std::function<void(const std::function<bool(const std::string&)>& write)> stream;
};

class Service {
 public:
  // Checks the base config (a bad one is a bad-input Error, before the server listens).
  explicit Service(const ServerOptions& options);
  ~Service();
  HttpReply handle(const std::string& method, const std::string& path, const std::string& body);
  // Stops taking work: queued requests fail with 503, event streams end; the running batch
  // finishes, or is cancelled with `cancel_running`. Returns at once; the destructor waits.
  void shutdown(bool cancel_running = false);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class HttpServer {
 public:
  explicit HttpServer(const ServerOptions& options);
  ~HttpServer();
  // Binds (port 0: any free one) and returns the port; a port in use is a bad-input Error.
  // Call run() after it: a bound server that never runs keeps its socket until the process
  // ends (cpp-httplib closes it only when stopping a running server).
  int bind();
  // Serves until stop(); requests already running finish first (queued ones get 503).
  void run();
  void stop();
  // As stop(), cancelling the running requests too.
  void stop_now();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// bind, print the address, run until SIGINT or SIGTERM (a second signal cancels the
// running requests).
int serve(const ServerOptions& options);

}  // namespace scorch
