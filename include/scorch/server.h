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
  int max_queue = 16;              // requests waiting behind the running one; more get 503
  size_t max_body = size_t(1) << 20;
  int64_t max_batch = 256;
};

struct HttpReply {
  int status = 200;
  std::string type = "application/json";
  std::string body;
  std::map<std::string, std::string> headers;
};

class Service {
 public:
  // Checks the base config (a bad one is a bad-input Error, before the server listens).
  explicit Service(const ServerOptions& options);
  ~Service();
  HttpReply handle(const std::string& method, const std::string& path, const std::string& body);

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
  // Serves until stop(); requests already running finish first.
  void run();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// bind, print the address, run until SIGINT or SIGTERM.
int serve(const ServerOptions& options);

}  // namespace scorch
