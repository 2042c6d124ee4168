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
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "scorch/io.h"
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
  server.stop();
  t.join();
}

// The CLI: a base config that does not validate is refused before listening; SIGTERM while
// a request runs lets it finish and exits 0.
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
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  request.join();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  fs::remove_all(dir);
}

}  // namespace
#endif  // SCORCH_WITH_SERVER
