// `scorch serve` (pipeline/server.cpp, docs/server.md): every endpoint through Service;
// a reply's samples equal the CLI's output for the same config, bit for bit; bad input is
// 400 with the CLI's message; malformed, oversized and hostile requests (paths outside the
// models folder, output keys, huge batches) are refused; over a socket on loopback; SIGTERM
// ends the server cleanly.
#ifdef SCORCH_WITH_SERVER
#include "scorch/server.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "scorch/io.h"
#include "support/bad_input_cases.h"
#include "support/free_port.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const std::string kCli = SCORCH_CLI;
const std::string kModels = std::string(SCORCH_SOURCE_DIR) + "/models";
const std::string kGaussian = std::string(SCORCH_SOURCE_DIR) + "/configs/fmnist_gaussian.yaml";

std::string unbase64(const std::string& in) {
  std::string out;
  int val = 0, bits = -8;
  for (unsigned char c : in) {
    const char* table = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char* p = std::strchr(table, c);
    if (!p || c == 0) break;
    val = (val << 6) + int(p - table);
    bits += 6;
    if (bits >= 0) {
      out.push_back(char((val >> bits) & 0xFF));
      bits -= 8;
    }
  }
  return out;
}

scorch::ServerOptions gaussian_server() {
  scorch::ServerOptions o;
  o.config = kGaussian;
  o.models = kModels;
  o.max_batch = 64;
  return o;
}

json body_of(const scorch::HttpReply& r) { return json::parse(r.body); }

TEST(Server, HealthSamplersModelsAndOpenApi) {
  scorch::Service s(gaussian_server());
  EXPECT_EQ(body_of(s.handle("GET", "/health", ""))["status"], "ok");
  const json samplers = body_of(s.handle("GET", "/v1/samplers", ""));
  bool found = false;
  for (const auto& e : samplers["continuous"]) found = found || e["name"] == "dpmpp_2m";
  EXPECT_TRUE(found);
  EXPECT_FALSE(samplers["discrete"].empty());
  const json models = body_of(s.handle("GET", "/v1/models", ""));
  EXPECT_NE(std::find(models["models"].begin(), models["models"].end(), "fmnist_gaussian.safetensors"),
            models["models"].end());
  // the served OpenAPI document is docs/openapi.json and names every endpoint
  const scorch::HttpReply api = s.handle("GET", "/openapi.json", "");
  std::ifstream in(std::string(SCORCH_SOURCE_DIR) + "/docs/openapi.json");
  std::stringstream doc;
  doc << in.rdbuf();
  EXPECT_EQ(api.body, doc.str());
  for (const char* p : {"/health", "/openapi.json", "/v1/samplers", "/v1/models", "/v1/generate"})
    EXPECT_TRUE(json::parse(api.body)["paths"].contains(p)) << p;
  EXPECT_EQ(s.handle("GET", "/nowhere", "").status, 404);
  EXPECT_EQ(s.handle("GET", "/v1/generate", "").status, 405);
  EXPECT_EQ(s.handle("POST", "/health", "").status, 405);
}

// The reply: seeds, shape, the samples as .npy (equal to the CLI's output.npy to round-off
// here, where this test process's OpenBLAS runs its own threads; `scorch serve` runs one
// BLAS thread as the CLI does, and its replies equal the CLI bit for bit:
// Server.CliStartsStopsAndRefusesABadBase), and a PNG grid with its metadata.
TEST(Server, GenerateRepliesSeedsShapeNpyAndPng) {
  scorch::Service s(gaussian_server());
  const scorch::HttpReply r = s.handle(
      "POST", "/v1/generate",
      R"({"config": {"batch": 3, "sampler": {"name": "dpmpp_2m_sde", "steps": 6}, "seed": [4, 5, 6]}, "format": "npy"})");
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = body_of(r);
  EXPECT_EQ(j["seeds"], json::array({4, 5, 6}));
  EXPECT_EQ(j["shape"], json::array({3, 1, 28, 28}));
  const fs::path dir = fs::temp_directory_path() / ("scorch_server_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string cmd = "cd '" + dir.string() + "' && '" + kCli + "' generate -q --config " + kGaussian +
                          " --set batch=3 --set sampler.name=dpmpp_2m_sde --set sampler.steps=6 --set 'seed=[4, 5, 6]' "
                          "--set output.png= --set output.npy=cli.npy";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const at::Tensor served = scorch::parse_npy(unbase64(j["npy"].get<std::string>()), "reply");
  const at::Tensor cli = scorch::read_npy((dir / "cli.npy").string());
  EXPECT_LT((served - cli).abs().max().item<double>(), 1e-5);
  EXPECT_EQ(unbase64(j["npy"].get<std::string>()).size(), fs::file_size(dir / "cli.npy"));
  fs::remove_all(dir);
  // format png: the grid with the resolved config in its scorch chunk
  const scorch::HttpReply png = s.handle("POST", "/v1/generate", R"({"config": {"batch": 2}})");
  ASSERT_EQ(png.status, 200) << png.body;
  const std::string bytes = unbase64(body_of(png)["png"].get<std::string>());
  EXPECT_EQ(bytes.substr(1, 3), "PNG");
  EXPECT_NE(bytes.find("seed: [0, 1]"), std::string::npos);
}

// Bad input: 400 with the CLI's message; hostile and malformed requests refused.
TEST(Server, BadRequestsAreFourHundredWithTheCliMessage) {
  scorch::Service s(gaussian_server());
  struct Case {
    std::string body;
    int status;
    std::string fragment;
  };
  const std::vector<Case> cases = {
      {R"({"set": ["sampler.name=nope"]})", 400, "sampler.name: unknown sampler 'nope'"},
      {R"({"config": {"sampler": {"steps": 0}}})", 400, "sampler.steps"},
      {R"({"config": {"guidance.scale": 1e300}})", 400, "guidance.scale: expected a number from -1000 to 1000"},
      {R"({"config": {"sampler.bogus": 1}})", 400, "sampler.bogus: unknown key"},
      {R"({"config": {"batch": 100000}})", 400, "batch: 100000 samples, above this server's limit of 64"},
      {R"({"config": {"batch": "many"}})", 400, "batch"},
      {R"({"config": {"output": {"npy": "/tmp/x.npy"}}})", 400, "output.npy: the server writes no files"},
      {R"({"set": ["output.png=/etc/passwd"]})", 400, "output.png: the server writes no files"},
      {R"({"config": {"model": {"path": "../configs/default.yaml"}}})", 400, "model.path: '../configs/default.yaml' is outside the models folder"},
      {R"({"config": {"model.path": "/etc/passwd"}})", 400, "model.path: '/etc/passwd' is outside the models folder"},
      {R"({"set": ["init_noise=/dev/zero"]})", 400, "init_noise: '/dev/zero' is outside the models folder"},
      {R"({"config": {"guidance": {"classifier": {"path": "/etc/passwd", "scale": 1}}}})", 400, "guidance.classifier.path: '/etc/passwd' is outside"},
      {R"({"set": ["sampler.name=teleport", "sampler.t_skip=0.5", "sampler.warm_model=/etc/passwd"]})", 400, "sampler.warm_model: '/etc/passwd' is outside"},
      {R"({"set": ["sampler.name=dpm_solver_v3", "sampler.stats=../configs/default.yaml"]})", 400, "sampler.stats: '../configs/default.yaml' is outside"},
      {R"({"config": {"model.path": "missing.safetensors"}})", 400, "model.path: 'missing.safetensors' does not exist in the models folder"},
      {R"({"config": [1, 2]})", 400, "config: expected an object"},
      {R"({"set": "sampler.steps=3"})", 400, "set: expected a list"},
      {R"({"format": "gif"})", 400, "format: expected"},
      {R"({"prompt": "a boot"})", 400, "prompt: unknown field"},
      {R"({"config": {"batch": 2})", 400, "request: not valid JSON"},
      {R"([1, 2, 3])", 400, "request: expected a JSON object"},
      {"", 400, "request: not valid JSON"},
      {std::string(2 << 20, ' '), 413, "above the server's limit"},
  };
  for (const auto& c : cases) {
    const scorch::HttpReply r = s.handle("POST", "/v1/generate", c.body);
    EXPECT_EQ(r.status, c.status) << c.body.substr(0, 200) << "\n" << r.body;
    EXPECT_NE(r.body.find(c.fragment), std::string::npos) << c.body.substr(0, 200) << "\n" << r.body;
    EXPECT_TRUE(json::accept(r.body)) << r.body;
  }
  // a model file inside the models folder, named relative to it, is fine
  EXPECT_EQ(s.handle("POST", "/v1/generate", R"({"config": {"model.path": "fmnist_gaussian.safetensors", "batch": 1}})").status,
            200);
}

// Over a socket on loopback: a server on a free port, a client, a body above the limit.
TEST(Server, OverTheLoopback) {
  scorch::ServerOptions o = gaussian_server();
  o.port = 0;
  o.max_body = 4096;
  scorch::HttpServer server(o);
  const int port = server.bind();
  std::thread t([&] { server.run(); });
  httplib::Client client("127.0.0.1", port);
  const auto health = client.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  const auto gen = client.Post("/v1/generate", R"({"config": {"batch": 2}, "format": "npy"})", "application/json");
  ASSERT_TRUE(gen);
  EXPECT_EQ(gen->status, 200);
  EXPECT_EQ(json::parse(gen->body)["shape"], json::array({2, 1, 28, 28}));
  const auto big = client.Post("/v1/generate", std::string(100000, ' '), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  // a job's server-sent events as a chunked text/event-stream
  const auto job = client.Post("/v1/jobs", R"({"config": {"batch": 2, "sampler.steps": 30}})", "application/json");
  ASSERT_TRUE(job);
  ASSERT_EQ(job->status, 202);
  std::string events;
  const auto stream = client.Get(("/v1/jobs/" + json::parse(job->body)["id"].get<std::string>() + "/events").c_str(),
                                 [&](const char* data, size_t n) {
                                   events.append(data, n);
                                   return true;
                                 });
  ASSERT_TRUE(stream);
  EXPECT_EQ(stream->get_header_value("Content-Type"), "text/event-stream");
  EXPECT_NE(events.find("event: progress\ndata: {"), std::string::npos) << events.substr(0, 300);
  EXPECT_NE(events.find("event: done\ndata: {"), std::string::npos) << events.substr(events.size() > 300 ? events.size() - 300 : 0);
  server.stop();
  t.join();
}

// The CLI: a base config that does not validate is refused before listening; replies equal
// the CLI's output; the example client; SIGTERM while a request runs lets it finish, fails
// the queued one with 503, and exits 0.
TEST(Server, CliStartsStopsAndRefusesABadBase) {
  const fs::path dir = fs::temp_directory_path() / ("scorch_serve_cli_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "bad.yaml") << "model: {type: gaussian, path: " << kModels
                                  << "/fmnist_gaussian.safetensors}\nsampler: {name: nope}\n";
  EXPECT_NE(std::system(("'" + kCli + "' serve --port 0 --config '" + (dir / "bad.yaml").string() + "' 2> '" +
                         (dir / "err.txt").string() + "'")
                            .c_str()),
            0);
  std::stringstream err;
  err << std::ifstream(dir / "err.txt").rdbuf();
  EXPECT_NE(err.str().find("sampler.name: unknown sampler 'nope'"), std::string::npos) << err.str();
  const int port = free_port();  // then the server on it
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string p = std::to_string(port);
    ::execl(kCli.c_str(), kCli.c_str(), "serve", "--port", p.c_str(), "--config", kGaussian.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  struct Reap {  // the server never outlives the test, whatever fails
    pid_t pid;
    ~Reap() {
      if (::kill(pid, SIGKILL) == 0) ::waitpid(pid, nullptr, 0);
    }
  } reap{pid};
  httplib::Client client("127.0.0.1", port);
  for (int i = 0; i < 100 && !client.Get("/health"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // a reply's samples are the CLI's, byte for byte
  client.set_read_timeout(120, 0);
  const auto served = client.Post("/v1/generate", R"({"config": {"batch": 3, "sampler.name": "dpmpp_2m_sde"}, "format": "npy"})",
                                  "application/json");
  ASSERT_TRUE(served) << "no reply: " << httplib::to_string(served.error());
  ASSERT_EQ(served->status, 200) << served->body;
  ASSERT_EQ(std::system(("cd '" + dir.string() + "' && '" + kCli + "' generate -q --config " + kGaussian +
                         " --set batch=3 --set sampler.name=dpmpp_2m_sde --set output.png= --set output.npy=cli.npy")
                            .c_str()),
            0);
  std::stringstream cli;
  cli << std::ifstream(dir / "cli.npy", std::ios::binary).rdbuf();
  EXPECT_EQ(unbase64(json::parse(served->body)["npy"].get<std::string>()), cli.str());
  // the example client (tools/examples/scorch_client.py, standard library only): samples
  // through /v1/generate and through a job's event stream, and the CLI's exit status 2 and
  // message for bad input
  const std::string client_cmd = "python3 '" SCORCH_SOURCE_DIR "/tools/examples/scorch_client.py' --url http://127.0.0.1:" +
                                 std::to_string(port) + " ";
  const auto client_run = [&](const std::string& args) {
    const int raw = std::system((client_cmd + args + " 2> '" + (dir / "client.txt").string() + "'").c_str());
    std::stringstream text;
    text << std::ifstream(dir / "client.txt").rdbuf();
    return std::make_pair(WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, text.str());
  };
  auto [status, text] = client_run("--out '" + (dir / "client.npy").string() + "' --set batch=3 --set sampler.name=dpmpp_2m_sde");
  EXPECT_EQ(status, 0) << text;
  std::stringstream client_npy;
  client_npy << std::ifstream(dir / "client.npy", std::ios::binary).rdbuf();
  EXPECT_EQ(client_npy.str(), cli.str());
  std::tie(status, text) = client_run("--job --out '" + (dir / "job.png").string() + "' --set batch=2 --set sampler.steps=20");
  EXPECT_EQ(status, 0) << text;
  EXPECT_NE(text.find("done: step 20/20"), std::string::npos) << text;
  EXPECT_TRUE(fs::file_size(dir / "job.png") > 100);
  std::tie(status, text) = client_run("--set sampler.name=nope");
  EXPECT_EQ(status, 2);
  EXPECT_EQ(text.rfind("scorch: error: sampler.name: unknown sampler 'nope'; registered samplers are: ddim, ", 0), 0u) << text;
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  std::tie(status, text) = client_run("--job --cancel-after 0 --set batch=64 --set sampler.steps=100000");
  EXPECT_EQ(status, 1);
  EXPECT_NE(text.find(": cancelled"), std::string::npos) << text;
  // a request that runs a while (about a second here); SIGTERM arrives while it runs
  std::atomic<bool> sent{false};
  std::thread request([&] {
    httplib::Client own("127.0.0.1", port);
    own.set_read_timeout(60, 0);
    sent = true;
    const auto r = own.Post("/v1/generate", R"({"config": {"batch": 64, "sampler.steps": 400}})", "application/json");
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no reply: " + httplib::to_string(r.error()));
  });
  while (!sent) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // a second request waits in the queue behind it
  std::thread queued([&] {
    httplib::Client own("127.0.0.1", port);
    own.set_read_timeout(60, 0);
    const auto r = own.Post("/v1/generate", R"({"config": {"batch": 64, "sampler.steps": 401}})", "application/json");
    ASSERT_TRUE(r) << "no reply: " << httplib::to_string(r.error());
    EXPECT_EQ(r->status, 503) << r->body;
    EXPECT_NE(r->body.find("the server is shutting down"), std::string::npos) << r->body;
  });
  for (int i = 0; i < 500; ++i) {
    const auto h = client.Get("/health");
    if (h && json::parse(h->body)["queued"] == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid, SIGTERM);
  int exit_status = 0;
  ::waitpid(pid, &exit_status, 0);
  request.join();
  queued.join();
  EXPECT_TRUE(WIFEXITED(exit_status) && WEXITSTATUS(exit_status) == 0) << exit_status;
  fs::remove_all(dir);
}


// Polls GET /v1/jobs/{id} until `until` holds (at most 60 s); the last status.
json poll(scorch::Service& s, const std::string& id, const std::function<bool(const json&)>& until) {
  json j;
  for (int i = 0; i < 6000; ++i) {
    j = body_of(s.handle("GET", "/v1/jobs/" + id, ""));
    if (until(j)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return j;
}

// Jobs: 202 with an id; progress and an x0 preview while it runs; its events as server-sent
// events in order, the last one final; the finished job's result equals /v1/generate's for
// the same request; cancel mid-run (the worker is free at once), cancel again is 409;
// unknown ids are 404 and wrong methods 405.
TEST(Server, JobsProgressEventsPreviewAndCancel) {
  scorch::Service s(gaussian_server());
  const std::string long_run = R"({"config": {"batch": 64, "sampler": {"name": "dpmpp_2m_sde", "steps": 300}}, "format": "npy"})";
  const scorch::HttpReply submitted = s.handle("POST", "/v1/jobs", long_run);
  ASSERT_EQ(submitted.status, 202) << submitted.body;
  const std::string id = body_of(submitted)["id"];
  EXPECT_EQ(submitted.headers.at("Location"), "/v1/jobs/" + id);
  // the event stream, read on its own thread as a client would
  const scorch::HttpReply events = s.handle("GET", "/v1/jobs/" + id + "/events", "");
  ASSERT_EQ(events.status, 200);
  ASSERT_TRUE(events.stream);
  EXPECT_EQ(events.type, "text/event-stream");
  std::string stream;
  std::thread reader([&] { events.stream([&](const std::string& text) { stream += text; return true; }); });
  const json running = poll(s, id, [](const json& j) { return j.contains("preview_step") || j["state"] != "running" && j["state"] != "queued"; });
  ASSERT_EQ(running["state"], "running") << running;
  EXPECT_EQ(running["total"], 300);
  const scorch::HttpReply preview = s.handle("GET", "/v1/jobs/" + id + "/preview", "");
  ASSERT_EQ(preview.status, 200) << preview.body;
  EXPECT_EQ(preview.type, "image/png");
  EXPECT_EQ(preview.body.substr(1, 3), "PNG");
  const json done = poll(s, id, [](const json& j) { return j["state"] != "running" && j["state"] != "queued"; });
  reader.join();
  ASSERT_EQ(done["state"], "done") << done;
  EXPECT_EQ(done["step"], 300);
  // the stream: progress events with non-decreasing steps, then one `done` event
  std::vector<int> steps;
  for (size_t at = stream.find("event: progress\ndata: "); at != std::string::npos;
       at = stream.find("event: progress\ndata: ", at + 1)) {
    const size_t from = at + 22;
    steps.push_back(json::parse(stream.substr(from, stream.find('\n', from) - from))["step"]);
  }
  ASSERT_GE(steps.size(), 2u) << stream.substr(0, 500);
  EXPECT_TRUE(std::is_sorted(steps.begin(), steps.end()));
  EXPECT_NE(stream.find("event: done\ndata: "), std::string::npos);
  EXPECT_EQ(stream.find("event: done"), stream.rfind("event: "));
  // the job's samples are the synchronous endpoint's
  const scorch::HttpReply direct = s.handle("POST", "/v1/generate", long_run);
  ASSERT_EQ(direct.status, 200);
  EXPECT_EQ(done["result"]["npy"], body_of(direct)["npy"]);
  EXPECT_EQ(done["result"]["seeds"].size(), 64u);
  // cancel mid-run
  const std::string endless = body_of(s.handle("POST", "/v1/jobs", R"({"config": {"batch": 64, "sampler.steps": 100000}})"))["id"];
  ASSERT_EQ(poll(s, endless, [](const json& j) { return j["step"] > 0; })["state"], "running");
  const auto cancel_at = std::chrono::steady_clock::now();
  const scorch::HttpReply cancelled = s.handle("DELETE", "/v1/jobs/" + endless, "");
  EXPECT_EQ(cancelled.status, 200) << cancelled.body;
  EXPECT_EQ(body_of(cancelled)["state"], "cancelled");
  EXPECT_EQ(body_of(s.handle("GET", "/v1/jobs/" + endless, ""))["state"], "cancelled");
  EXPECT_EQ(s.handle("DELETE", "/v1/jobs/" + endless, "").status, 409);
  EXPECT_EQ(s.handle("GET", "/v1/jobs/" + endless + "/preview", "").status, 404);
  // the worker left the cancelled run: a small request is answered at once
  EXPECT_EQ(s.handle("POST", "/v1/generate", R"({"config": {"batch": 1}})").status, 200);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - cancel_at).count(), 5.0);
  // unknown jobs, wrong methods, bad input at submission
  EXPECT_EQ(s.handle("GET", "/v1/jobs/nope", "").status, 404);
  EXPECT_EQ(s.handle("DELETE", "/v1/jobs/nope", "").status, 404);
  EXPECT_EQ(s.handle("GET", "/v1/jobs/" + id + "/other", "").status, 404);
  EXPECT_EQ(s.handle("PUT", "/v1/jobs/" + id, "").status, 405);
  EXPECT_EQ(s.handle("POST", "/v1/jobs/" + id + "/events", "").status, 405);
  EXPECT_EQ(s.handle("GET", "/v1/jobs", "").status, 405);
  const scorch::HttpReply bad = s.handle("POST", "/v1/jobs", R"({"set": ["sampler.name=nope"]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("sampler.name: unknown sampler 'nope'"), std::string::npos);
}

// Batching: concurrent requests that differ in seeds share one run (the reply says with how
// many) and each gets the samples it gets alone, bit for bit for the closed-form model (an
// SDE sampler: per-sample noise at every step); requests that cannot share (dpm_adaptive's
// step size couples the batch) run alone. The U-Net with per-request labels: to float32
// round-off of the network, which sees another batch size.
TEST(Server, BatchedRequestsEqualTheirRunsAlone) {
  scorch::ServerOptions alone_options = gaussian_server();
  alone_options.batch_window_ms = 0;
  scorch::ServerOptions batched_options = gaussian_server();
  batched_options.batch_window_ms = 500;
  scorch::Service alone(alone_options), batched(batched_options);
  const std::vector<std::string> bodies = {
      R"({"config": {"batch": 1, "seed": 11, "sampler.name": "dpmpp_2m_sde"}, "format": "npy"})",
      R"({"config": {"batch": 2, "seed": [5, 3], "sampler.name": "dpmpp_2m_sde"}, "format": "npy"})",
      R"({"config": {"batch": 3, "seed": 40, "sampler.name": "dpmpp_2m_sde"}, "format": "npy"})",
      R"({"config": {"batch": 1, "seed": 2, "sampler.name": "dpmpp_2m_sde"}, "format": "npy"})",
      R"({"config": {"batch": 2, "seed": 9, "sampler.name": "dpm_adaptive"}, "format": "npy"})",
  };
  std::vector<json> replies(bodies.size());
  std::vector<std::thread> clients;
  for (size_t i = 0; i < bodies.size(); ++i)
    clients.emplace_back([&, i] {
      const scorch::HttpReply r = batched.handle("POST", "/v1/generate", bodies[i]);
      replies[i] = r.status == 200 ? body_of(r) : json{{"status", r.status}, {"body", r.body}};
    });
  for (auto& c : clients) c.join();
  int shared = 0;
  for (size_t i = 0; i < bodies.size(); ++i) {
    ASSERT_TRUE(replies[i].contains("npy")) << replies[i];
    const json own = body_of(alone.handle("POST", "/v1/generate", bodies[i]));
    EXPECT_EQ(replies[i]["npy"], own["npy"]) << bodies[i];
    EXPECT_EQ(replies[i]["seeds"], own["seeds"]);
    EXPECT_EQ(replies[i]["config"], own["config"]);
    EXPECT_EQ(own["run"]["requests"], 1);
    shared += replies[i]["run"]["requests"].get<int>() > 1 ? 1 : 0;
  }
  EXPECT_EQ(shared, 4) << "the four dpmpp_2m_sde requests share one run";
  EXPECT_EQ(replies[0]["run"]["samples"], 7);
  EXPECT_EQ(replies[4]["run"]["requests"], 1) << "dpm_adaptive runs alone";
  // the U-Net (default config) with a label per request
  scorch::ServerOptions unet = batched_options;
  unet.config = "";
  scorch::ServerOptions unet_alone = unet;
  unet_alone.batch_window_ms = 0;
  scorch::Service net(unet), net_alone(unet_alone);
  std::vector<json> labelled(3);
  clients.clear();
  for (int i = 0; i < 3; ++i)
    clients.emplace_back([&, i] {
      labelled[size_t(i)] = body_of(net.handle(
          "POST", "/v1/generate",
          json{{"config", {{"batch", 1 + i}, {"cond", 3 * i}, {"seed", 100 + i}, {"sampler", {{"steps", 4}}}}}, {"format", "npy"}}.dump()));
    });
  for (auto& c : clients) c.join();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(labelled[size_t(i)]["run"]["samples"], 6) << labelled[size_t(i)];
    const json own = body_of(net_alone.handle(
        "POST", "/v1/generate",
        json{{"config", {{"batch", 1 + i}, {"cond", 3 * i}, {"seed", 100 + i}, {"sampler", {{"steps", 4}}}}}, {"format", "npy"}}.dump()));
    const at::Tensor a = scorch::parse_npy(unbase64(labelled[size_t(i)]["npy"].get<std::string>()), "batched");
    const at::Tensor b = scorch::parse_npy(unbase64(own["npy"].get<std::string>()), "alone");
    EXPECT_LT((a - b).abs().max().item<double>(), 1e-4) << "request " << i;
  }
}

// Time-out (504 with its message), a full queue (503 with Retry-After), and shutdown: the
// queued request fails with 503, the running one is cancelled when asked.
TEST(Server, TimeOutFullQueueAndShutdown) {
  scorch::ServerOptions o = gaussian_server();
  o.timeout_s = 0.3;
  {
    scorch::Service s(o);
    const auto start = std::chrono::steady_clock::now();
    const scorch::HttpReply r = s.handle("POST", "/v1/generate", R"({"config": {"batch": 64, "sampler.steps": 100000}})");
    EXPECT_EQ(r.status, 504) << r.body;
    EXPECT_NE(r.body.find("not finished within the server's time-out of 0.3"), std::string::npos) << r.body;
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
    // an async job past the time-out ends failed with the same status
    const std::string id = body_of(s.handle("POST", "/v1/jobs", R"({"config": {"batch": 64, "sampler.steps": 100000}})"))["id"];
    const json j = poll(s, id, [](const json& j) { return j["state"] == "failed"; });
    EXPECT_EQ(j["status"], 504) << j;
  }
  o.timeout_s = 0;
  o.max_queue = 1;
  scorch::Service s(o);
  const std::string endless = R"({"config": {"batch": 64, "sampler.steps": 100000}})";
  const std::string running = body_of(s.handle("POST", "/v1/jobs", endless))["id"];
  ASSERT_EQ(poll(s, running, [](const json& j) { return j["state"] != "queued"; })["state"], "running");
  const scorch::HttpReply queued = s.handle("POST", "/v1/jobs", endless);
  ASSERT_EQ(queued.status, 202);
  const scorch::HttpReply full = s.handle("POST", "/v1/jobs", endless);
  EXPECT_EQ(full.status, 503);
  EXPECT_EQ(full.headers.at("Retry-After"), "1");
  EXPECT_NE(full.body.find("the queue is full (1 requests waiting)"), std::string::npos) << full.body;
  EXPECT_EQ(body_of(s.handle("GET", "/health", ""))["queued"], 1);
  s.shutdown(true);
  const json q = body_of(s.handle("GET", "/v1/jobs/" + body_of(queued)["id"].get<std::string>(), ""));
  EXPECT_EQ(q["state"], "failed");
  EXPECT_EQ(q["status"], 503);
  EXPECT_EQ(poll(s, running, [](const json& j) { return j["state"] != "running"; })["status"], 503);
  EXPECT_EQ(s.handle("POST", "/v1/generate", R"({"config": {"batch": 1}})").status, 503);
}

// Shell words of a test case's arguments ('...' and "..." quoted).
std::vector<std::string> shell_words(const std::string& s) {
  std::vector<std::string> words;
  std::string w;
  bool in_word = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\'' || c == '"') {
      const size_t end = s.find(c, i + 1);
      w += s.substr(i + 1, end - i - 1);
      i = end;
      in_word = true;
    } else if (c == ' ') {
      if (in_word) words.push_back(w);
      w.clear();
      in_word = false;
    } else {
      w += c;
      in_word = true;
    }
  }
  if (in_word) words.push_back(w);
  return words;
}

// Every `generate` case of the CLI's bad-input suite that a request can express (config
// overrides on a repository config) gets 400 from the server and the CLI's own message,
// word for word; where the case names a file, the server refuses it first unless it lies in
// the models folder, and where it sets output.*, the server writes no files.
TEST(Server, EveryCliBadInputCaseIsFourHundredWithTheCliMessage) {
  std::map<std::string, std::unique_ptr<scorch::Service>> services;
  int compared = 0, confined = 0, outputs = 0;
  for (const auto& c : scorch_test::bad_input_cases()) {
    if (c.args.rfind("generate", 0) != 0 || !c.env.empty() || c.args.find("$(") != std::string::npos) continue;
    std::string base;
    std::vector<std::string> sets;
    bool expressible = true;
    const auto words = shell_words(c.args);
    for (size_t i = 1; i < words.size(); ++i) {
      if (words[i] == "-q") continue;
      if (words[i] == "--set" && i + 1 < words.size()) {
        sets.push_back(words[++i]);
      } else if (words[i] == "--config" && i + 1 < words.size() && words[i + 1].rfind("configs/", 0) == 0 &&
                 words[i + 1] != "configs/words.yaml") {
        base = words[++i];
      } else {
        expressible = false;  // another config file, a flag: not part of a request
      }
    }
    if (!expressible) continue;
    auto& service = services[base];
    if (!service) {
      scorch::ServerOptions o;
      o.config = base.empty() ? "" : std::string(SCORCH_SOURCE_DIR) + "/" + base;
      o.models = kModels;
      o.max_batch = 16777216;  // the CLI's own limit
      o.batch_window_ms = 0;
      service = std::make_unique<scorch::Service>(o);
    }
    const scorch::HttpReply r = service->handle("POST", "/v1/generate", json{{"set", sets}, {"format", "npy"}}.dump());
    ASSERT_EQ(r.status, 400) << c.id << ": " << r.body;
    const std::string message = body_of(r)["error"];
    bool sets_output = false;
    for (const auto& kv : sets) sets_output = sets_output || kv.rfind("output.", 0) == 0;
    if (sets_output) {
      EXPECT_NE(message.find("the server writes no files"), std::string::npos) << c.id << ": " << message;
      ++outputs;
      continue;
    }
    if (message.find("models folder") != std::string::npos) {
      // the key it names is one the case sets to a file
      const std::string key = message.substr(0, message.find(':'));
      bool named = false;
      for (const auto& kv : sets) named = named || kv.rfind(key + "=", 0) == 0;
      EXPECT_TRUE(named) << c.id << ": " << message;
      ++confined;
      continue;
    }
    // The CLI in this process's folder, as the service runs, so that both find relative
    // files (models/...) in the same places; the repository's configs by absolute path.
    std::string args = c.args;
    const size_t at = args.find("--config configs/");
    if (at != std::string::npos) args.replace(at, 9, "--config " SCORCH_SOURCE_DIR "/");
    const fs::path err = fs::temp_directory_path() / ("scorch_server_cli_" + std::to_string(::getpid()) + ".txt");
    ASSERT_EQ(std::system(("'" + kCli + "' " + args + " > /dev/null 2> '" + err.string() + "'").c_str()) >> 8, 2) << c.id;
    std::stringstream cli;
    cli << std::ifstream(err).rdbuf();
    fs::remove(err);
    EXPECT_EQ("scorch: error: " + message + "\n", cli.str()) << c.id;
    ++compared;
  }
  std::printf("%d cases: the CLI's message %d, a file outside the models folder %d, output keys %d\n",
              compared + confined + outputs, compared, confined, outputs);
  EXPECT_GE(compared, 50);
}

}  // namespace
#endif  // SCORCH_WITH_SERVER
