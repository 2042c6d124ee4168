// The bad-input suite (docs/errors.md): every subcommand and every input kind (config,
// overrides, model, safetensors, npy, image, IDX, outputs, signals) given what a careless or
// hostile user gives. Each case runs the scorch binary and asserts:
//   - exit status 2 (a signal case: killed, or finished with complete outputs);
//   - stderr is exactly one line, "scorch: error: ...", containing the key or file named;
//   - no file in the working folder was created, replaced or changed (name, inode, size,
//     modification time), and no temporary file is left;
//   - an endless input (/dev/zero, /dev/urandom, a FIFO with or without a writer, a header
//     declaring more than the input cap) ends within 2 s under 200 MB of resident memory,
//     measured from rusage or, when the test process itself is that large, from /proc.
// Device nodes and FIFOs are made by the suite in its own temporary folder, never under
// /dev (a device node needs root: those cases are skipped otherwise). The C API's cases
// are in tests/test_c_api.cpp (CApi.BadInputStatuses).
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "scorch/io.h"

namespace fs = std::filesystem;

namespace {

const std::string kCli = SCORCH_CLI;
const std::string kFixtures = SCORCH_FIXTURES;
constexpr double kEndlessSeconds = 2.0;
constexpr long kEndlessRssKb = 200 * 1024;

struct Case {
  std::string id;        // the test's name
  std::string args;      // after `scorch`, shell words, run in the suite's folder
  std::string fragment;  // what the error line must contain (the key or the file)
  std::string env = "";  // VAR=value words before the command
};

struct RunResult {
  int status = -1;  // exit status; -1 when killed by a signal
  int signal = 0;
  std::string err;
  double seconds = 0;
  long max_rss_kb = 0;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs the shell command in `dir`; kills it after `kill_after` seconds with `sig` (0: never)
// and after 30 s in any case. The resident-memory peak is the process's own (wait4).
RunResult run_in(const fs::path& dir, const fs::path& io, const std::string& command, double kill_after = 0,
                 int sig = 0, const std::string& env = "") {
  const std::string err = (io / "stderr.txt").string();
  const std::string sh =
      "cd '" + dir.string() + "' && " + env + " exec " + command + " 2> '" + err + "' > /dev/null < /dev/null";
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl("/bin/sh", "sh", "-c", sh.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  RunResult r;
  int st = 0;
  struct rusage ru {};
  bool signalled = false;
  long polled_kb = 0;
  for (;;) {
    // The peak of the scorch process itself, once it runs (its name is scorch after exec):
    // VmHWM, read while it lives.
    if (slurp("/proc/" + std::to_string(pid) + "/comm").rfind("scorch", 0) == 0) {
      const std::string status = slurp("/proc/" + std::to_string(pid) + "/status");
      const size_t at = status.find("VmHWM:");
      if (at != std::string::npos) polled_kb = std::max(polled_kb, std::atol(status.c_str() + at + 6));
    }
    const pid_t done = ::wait4(pid, &st, WNOHANG, &ru);
    if (done == pid) break;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (sig && !signalled && s >= kill_after) {
      ::kill(pid, sig);
      signalled = true;
    }
    if (s > 30) ::kill(pid, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // rusage's peak is an upper bound: Linux keeps the forking process's resident size at the
  // fork in it (the test process, large after other tests). Below the limit it decides;
  // above, the peak read from /proc while the process ran does.
  r.max_rss_kb = ru.ru_maxrss < kEndlessRssKb ? ru.ru_maxrss : polled_kb;
  if (WIFEXITED(st)) r.status = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) r.signal = WTERMSIG(st);
  r.err = slurp(err);
  return r;
}

// What the folder holds: name -> (kind, inode, size, mtime): a replaced file gets a new
// inode, a rewritten one a new size or time.
using Snapshot = std::map<std::string, std::tuple<int, ino_t, off_t, long long>>;
Snapshot snapshot(const fs::path& dir) {
  Snapshot s;
  for (const auto& e : fs::directory_iterator(dir)) {
    struct stat st {};
    ::lstat(e.path().c_str(), &st);
    s[e.path().filename().string()] = {int(st.st_mode & S_IFMT), st.st_ino, S_ISREG(st.st_mode) ? st.st_size : 0,
                                       (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec};
  }
  return s;
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
}

std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = char((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string idx_bytes(const std::vector<uint32_t>& shape, size_t data_bytes) {
  std::string out = {0, 0, 8, char(shape.size())};
  for (uint32_t s : shape)
    for (int b = 3; b >= 0; --b) out.push_back(char((s >> (8 * b)) & 0xff));
  return out + std::string(data_bytes, '\x01');
}

void write_gzip(const fs::path& p, const std::string& head, size_t zeros) {
  gzFile f = gzopen(p.c_str(), "wb9");
  gzwrite(f, head.data(), unsigned(head.size()));
  const std::string chunk(1 << 20, '\0');
  for (size_t done = 0; done < zeros; done += chunk.size()) gzwrite(f, chunk.data(), unsigned(chunk.size()));
  gzclose(f);
}

class BadInput : public ::testing::TestWithParam<Case> {
 public:
  static fs::path dir;  // the working folder the cases run in
  static fs::path io;   // stderr captures, outside it
  static pid_t writer;  // the endless FIFO's writer
  static bool device_node;

  static void SetUpTestSuite() {
    const fs::path base = fs::temp_directory_path() / ("scorch_bad_input_" + std::to_string(::getpid()));
    fs::remove_all(base);
    dir = base / "work";
    io = base / "io";
    fs::create_directories(dir);
    fs::create_directories(io);
    const auto at = [](const char* name) { return dir / name; };
    // FIFOs: one nobody writes to, one with a writer that never stops.
    ::mkfifo(at("silent.fifo").c_str(), 0600);
    ::mkfifo(at("endless.fifo").c_str(), 0600);
    ::mkfifo(at("silent.json").c_str(), 0600);
    writer = ::fork();
    if (writer == 0) {
      ::execl("/bin/sh", "sh", "-c", ("exec yes > '" + at("endless.fifo").string() + "'").c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    device_node = ::geteuid() == 0 && ::mknod(at("null.dev").c_str(), S_IFCHR | 0600, makedev(1, 3)) == 0;
    fs::create_directories(at("folder"));
    write_file(at("keep.npy"), "an existing file no failed run may replace");
    write_file(at("keep.png"), "an existing file no failed run may replace");
    fs::create_symlink("keep.npy", at("link.npy"));
    // configs
    write_file(at("dup.yaml"), "batch: 10\nseed: 1\nbatch: 20\n");
    write_file(at("syntax.yaml"), "model:\n  type: gaussian\n  path: [x\n");
    write_file(at("list.yaml"), "- 1\n- 2\n");
    write_file(at("scalar.yaml"), "just text\n");
    write_file(at("binary.yaml"), std::string("\x00\x01\xff\xfe\x89PNG", 8));
    write_file(at("unknown.yaml"), "modle: {type: gaussian}\n");
    write_file(at("tab.yaml"), "model:\n\ttype: gaussian\n");
    write_file(at("anchor.yaml"), "a: &x [*x]\n");
    write_file(at("deep.yaml"), std::string(5000, '[') + std::string(5000, ']') + "\n");
    write_file(at("tokens.yaml"), "model: {type: tokens, path: " + kFixtures +
                                      "/uniform_tokens.pt, vocab: 5, length: 4, transition: uniform}\nbatch: 3\n");
    // npy
    scorch::write_npy(at("noise_wrong.npy").string(), at::zeros({3, 2, 2}));
    scorch::write_npy(at("nan.npy").string(), at::full({16, 1, 28, 28}, std::numeric_limits<float>::quiet_NaN()));
    scorch::write_npy(at("empty.npy").string(), at::zeros({0, 1, 28, 28}));
    scorch::write_npy(at("s.npy").string(), at::zeros({20, 1, 28, 28}));
    scorch::write_npy(at("flat.npy").string(), at::randn({50, 6}));
    scorch::write_npy(at("one.npy").string(), at::randn({1, 6}));
    scorch::write_npy(at("lab.npy").string(), at::full({20}, 42, at::kLong));
    scorch::write_npy(at("lab_short.npy").string(), at::zeros({3}, at::kLong));
    scorch::write_npy(at("mask_wrong.npy").string(), at::ones({5, 5}));
    scorch::write_npy(at("cplx.npy").string(), at::zeros({4}));
    {
      std::string b = slurp(at("cplx.npy").string());
      const size_t p = b.find("<f4");
      b.replace(p, 3, "<c8");
      write_file(at("cplx.npy"), b);
      std::string t = slurp(at("s.npy").string());
      write_file(at("trunc.npy"), t.substr(0, t.size() / 2));
      write_file(at("magic.npy"), "\x93NUMPX" + t.substr(6));
      std::string h = t;
      const size_t q = h.find("(20, 1, 28, 28)");
      h.replace(q, 15, "(99999999999, 1)");
      write_file(at("huge.npy"), h);
    }
    write_file(at("zero.npy"), "");
    // safetensors
    const std::string f4x2 = std::string(8, '\0');
    write_file(at("trunc.safetensors"),
               safetensors_bytes(R"({"mean":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", f4x2));
    write_file(at("overlap.safetensors"),
               safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                 R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                 std::string(12, '\0')));
    write_file(at("hole.safetensors"),
               safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                 R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                                 std::string(12, '\0')));
    write_file(at("json.safetensors"), safetensors_bytes("{not json", ""));
    write_file(at("headlen.safetensors"), std::string("\xff\xff\xff\xff\xff\xff\x00\x00{}", 10));
    write_file(at("dtype.safetensors"),
               safetensors_bytes(R"({"mean":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", f4x2));
    write_file(at("missing_keys.safetensors"),
               safetensors_bytes(R"({"mean":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", f4x2));
    // models
    write_file(at("text.pt"), "this is not a TorchScript archive\n");
    write_file(at("zip.pt"), std::string("PK\x03\x04", 4) + std::string(100, 'z'));
    write_file(at("zero.pt"), "");
    // images
    write_file(at("bad.png"), std::string("\x89PNG\r\n\x1a\n", 8) + "truncated");
    write_file(at("big.pgm"), "P5\n99999 99999\n255\n");
    write_file(at("text.png"), "hello\n");
    write_file(at("zero.png"), "");
    write_file(at("header.pgm"), "P5\n4 4\n255\n");
    // IDX
    write_file(at("magic.idx"), std::string("\x00\x00\x0d\x01\x00\x00\x00\x02\x01\x02", 10));
    write_file(at("dims.idx"), std::string("\x00\x00\x08\x07", 4));
    write_file(at("zerodim.idx"), idx_bytes({0, 28, 28}, 0));
    write_file(at("short.idx"), idx_bytes({10, 28, 28}, 100));
    write_file(at("empty.idx"), "");
    // a gzip bomb: 64 MiB of zeros behind a header declaring 60000 x 28 x 28
    write_gzip(at("bomb.idx.gz"), idx_bytes({60000, 28, 28}, 0), 64u << 20);
    write_file(at("bad.gz"), std::string("\x1f\x8b\x08\x00garbage", 12));
    // LSD and vocab files
    write_file(at("coeffs.yaml"), "not: [coefficients\n");
  }

  static void TearDownTestSuite() {
    if (writer > 0) {
      ::kill(writer, SIGKILL);
      ::waitpid(writer, nullptr, 0);
    }
    fs::remove_all(dir.parent_path());
  }
};

fs::path BadInput::dir;
fs::path BadInput::io;
pid_t BadInput::writer = -1;
bool BadInput::device_node = false;

bool endless(const Case& c) {
  for (const char* w : {"/dev/zero", "/dev/urandom", ".fifo", "bomb", "huge", "SCORCH_MAX_INPUT_BYTES"})
    if (c.args.find(w) != std::string::npos || c.env.find(w) != std::string::npos) return true;
  return false;
}

TEST_P(BadInput, ExitsTwoWithOneLineAndChangesNothing) {
  const Case& c = GetParam();
  if (c.args.find("null.dev") != std::string::npos && !device_node) GTEST_SKIP() << "making a device node needs root";
  const Snapshot before = snapshot(dir);
  const RunResult r = run_in(dir, io, "'" + kCli + "' " + c.args, 0, 0, c.env);
  EXPECT_EQ(r.status, 2) << c.args << "\n" << r.err;
  EXPECT_EQ(r.err.rfind("scorch: error: ", 0), 0u) << c.args << "\n" << r.err;
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line:\n" << r.err;
  EXPECT_NE(r.err.find(c.fragment), std::string::npos) << c.args << "\nexpected: " << c.fragment << "\ngot: " << r.err;
  EXPECT_EQ(snapshot(dir), before) << c.args << " created, replaced or changed a file";
  if (endless(c)) {
    EXPECT_LT(r.seconds, kEndlessSeconds) << c.args;
    EXPECT_LT(r.max_rss_kb, kEndlessRssKb) << c.args;
  }
  RecordProperty("seconds", std::to_string(r.seconds));
  RecordProperty("max_rss_kb", std::to_string(r.max_rss_kb));
}

const std::string G = "generate -q --config configs/fmnist_gaussian.yaml ";      // a closed-form model
const std::string T = "generate -q --set cond= --set model.type=torchscript --set model.path=";  // a network file
const std::string W = "generate -q --config configs/words.yaml ";                 // a token model
const std::string F = "fit gaussian -q --out g.safetensors --data ";

std::vector<Case> cases() {
  std::vector<Case> c = {
      // --- configs ---
      {"config_fifo", "generate --config silent.fifo", "--config: 'silent.fifo' is a FIFO"},
      {"config_endless_fifo", "generate --config endless.fifo", "--config: 'endless.fifo' is a FIFO"},
      {"config_dev_zero", "generate --config /dev/zero", "--config: '/dev/zero' is a character device"},
      {"config_dev_urandom", "generate --config /dev/urandom", "--config: '/dev/urandom' is a character device"},
      {"config_device_node", "generate --config null.dev", "--config: 'null.dev' is a character device"},
      {"config_directory", "generate --config folder", "--config: 'folder' is a directory"},
      {"config_empty_path", "generate --config \"\"", "--config: empty path"},
      {"config_missing", "generate --config nowhere.yaml", "nowhere.yaml"},
      {"config_duplicate_key", "generate --config dup.yaml", "dup.yaml:3: duplicate key 'batch'"},
      {"config_syntax", "generate --config syntax.yaml", "syntax.yaml:"},
      {"config_list", "generate --config list.yaml", "list.yaml"},
      {"config_scalar", "generate --config scalar.yaml", "scalar.yaml"},
      {"config_binary", "generate --config binary.yaml", "binary.yaml"},
      {"config_unknown_section", "generate --config unknown.yaml", "modle"},
      {"config_tab", "generate --config tab.yaml", "tab.yaml"},
      {"config_self_alias", "generate --config anchor.yaml", "anchor.yaml"},
      {"config_deep_nesting", "generate --config deep.yaml", "deep.yaml"},
      {"config_capped", "generate --config configs/default.yaml", "--config", "SCORCH_MAX_INPUT_BYTES=100"},
      {"config_bad_cap", "generate --config configs/default.yaml", "SCORCH_MAX_INPUT_BYTES: expected a positive number of bytes, got '-5'", "SCORCH_MAX_INPUT_BYTES=-5"},
      {"config_bad_cap_text", "generate --config configs/default.yaml", "SCORCH_MAX_INPUT_BYTES", "SCORCH_MAX_INPUT_BYTES=lots"},
      {"config_png_without_metadata", "generate --config bad.png", "bad.png"},
      {"info_fifo", "info silent.fifo", "info: 'silent.fifo' is a FIFO"},
      {"info_dev_zero", "info /dev/zero", "'/dev/zero' is a character device"},
      {"info_directory", "info folder", "'folder' is a directory"},
      {"info_text_file", "info dup.yaml", "dup.yaml"},
      {"info_missing", "info nowhere.png", "nowhere.png"},
      {"info_corrupt_png", "info bad.png", "bad.png"},
      // --- overrides ---
      {"set_no_equals", G + "--set batch", "--set"},
      {"set_empty_key", G + "--set =3", "--set"},
      {"set_unknown_key", G + "--set sampler.bogus=1", "sampler.bogus: unknown key"},
      {"set_unknown_section", G + "--set bogus.x=1", "bogus"},
      {"set_misspelt_key", G + "--set sampler.stpes=4", "sampler.stpes"},
      {"set_unknown_sampler", G + "--set sampler.name=nope", "unknown sampler 'nope'"},
      {"set_control_chars", G + "--set sampler.name=\"$(printf 'dp\\033m')\"", "unknown sampler 'dp\\x1bm'"},
      {"set_steps_zero", G + "--set sampler.steps=0", "sampler.steps"},
      {"set_steps_negative", G + "--set sampler.steps=-5", "sampler.steps"},
      {"set_steps_huge", G + "--set sampler.steps=1000000000", "sampler.steps"},
      {"set_steps_text", G + "--set sampler.steps=many", "sampler.steps: expected an integer"},
      {"set_steps_float", G + "--set sampler.steps=2.5", "sampler.steps: expected an integer"},
      {"set_steps_overflow", G + "--set sampler.steps=99999999999999999999999", "sampler.steps"},
      {"set_batch_zero", G + "--set batch=0", "batch"},
      {"set_batch_overflow", G + "--set batch=100000000000", "batch: expected an integer from 1 to 16777216"},
      {"set_batch_memory", G + "--set batch=10000000", "batch: 10000000 samples of [1, 28, 28] in Float need about"},
      {"set_seed_negative", G + "--set seed=-1", "seed"},
      {"set_seed_list_length", G + "--set batch=3 --set 'seed=[1, 2]'", "seed"},
      {"set_dtype", G + "--set dtype=float16x", "dtype"},
      {"set_device", G + "--set device=tpu", "device"},
      {"set_skip_type", G + "--set sampler.skip_type=spiral", "sampler.skip_type"},
      {"set_rho_huge", G + "--set sampler.rho=1e300", "sampler.rho: expected a number from 0 to 1000"},
      {"set_t_start_huge", G + "--set sampler.t_start=1e300", "sampler.t_start"},
      {"set_threshold_noise", G + "--set sampler.threshold_noise=7", "sampler.threshold_noise"},
      {"set_beta_alpha", G + "--set sampler.beta_alpha=-1", "sampler.beta_alpha"},
      {"set_linear_steps", G + "--set sampler.linear_steps=-7", "sampler.linear_steps"},
      {"set_split", G + "--set sampler.split=-1", "sampler.split"},
      {"set_gits_warmup", G + "--set sampler.skip_type=gits --set sampler.gits_warmup=0", "sampler.gits_warmup"},
      {"set_gits_teacher", G + "--set sampler.skip_type=gits --set sampler.gits_teacher_steps=5", "sampler.gits_teacher_steps"},
      {"set_gits_coeff", G + "--set sampler.skip_type=gits --set sampler.gits_coeff=0", "sampler.gits_coeff"},
      {"set_sigmas_custom", G + "--set sampler.skip_type=custom", "sampler.sigmas"},
      {"set_eta_huge", G + "--set sampler.name=dpmpp_2m_sde --set sampler.eta=1e9", "sampler.eta: expected a number from 0 to 100"},
      {"set_s_noise_negative", G + "--set sampler.name=euler_ancestral --set sampler.s_noise=-1", "sampler.s_noise"},
      {"set_s_churn_huge", G + "--set sampler.name=euler --set sampler.s_churn=1e6", "sampler.s_churn"},
      {"set_s_tmin_negative", G + "--set sampler.name=euler --set sampler.s_tmin=-1", "sampler.s_tmin"},
      {"set_order_four", G + "--set sampler.name=dpm_solver --set sampler.order=4", "sampler.order"},
      {"set_atol_negative", G + "--set sampler.name=dpm_solver --set sampler.atol=-1", "sampler.atol"},
      {"set_threshold_ratio", G + "--set sampler.name=dpm_solver --set sampler.dynamic_thresholding_ratio=2", "sampler.dynamic_thresholding_ratio"},
      {"set_unipc_order", G + "--set sampler.name=unipc --set sampler.order=9", "sampler.order"},
      {"set_deis_order", G + "--set sampler.name=deis --set sampler.max_order=0", "sampler.max_order"},
      {"set_ipndm_order", G + "--set sampler.name=ipndm --set sampler.max_order=5", "sampler.max_order"},
      {"set_lms_order", G + "--set sampler.name=lms --set sampler.order=-2", "sampler.order"},
      {"set_er_sde_stage", G + "--set sampler.name=er_sde --set sampler.max_stage=4", "sampler.max_stage"},
      {"set_sa_predictor", G + "--set sampler.name=sa_solver --set sampler.predictor_order=0", "sampler.predictor_order"},
      {"set_sa_interval", G + "--set sampler.name=sa_solver --set sampler.sde_start_percent=0.9", "sde_start_percent"},
      {"set_tcd_gamma", G + "--set sampler.name=tcd --set sampler.gamma=2", "sampler.gamma"},
      {"set_dpmpp_sde_r", G + "--set sampler.name=dpmpp_sde --set sampler.r=3", "sampler.r"},
      {"set_restart_times", G + "--set sampler.name=restart --set sampler.restart_times=-2", "sampler.restart_times"},
      {"set_restart_sigma", G + "--set sampler.name=restart --set sampler.restart_sigma_max=1e300", "sampler.restart_sigma_max"},
      {"set_teleport_fraction", G + "--set sampler.name=teleport --set sampler.skip_fraction=2", "sampler.skip_fraction"},
      {"set_teleport_probe", G + "--set sampler.name=teleport --set sampler.auto_probe=0", "sampler.auto_probe"},
      {"set_teleport_inner", G + "--set sampler.name=teleport --set sampler.inner.name=nope", "nope"},
      {"set_msg_terms", G + "--set sampler.name=msg --set sampler.terms=7", "sampler.terms"},
      {"set_guidance_scale_huge", G + "--set guidance.scale=1e300", "guidance.scale: expected a number from -1000 to 1000"},
      {"set_guidance_rescale", "generate -q --set guidance.scale=2 --set guidance.rescale=5", "guidance.rescale"},
      {"set_guidance_interval", "generate -q --set guidance.scale=2 --set guidance.interval=[3,1]", "guidance.interval"},
      {"set_guidance_momentum", "generate -q --set guidance.scale=2 --set guidance.momentum=9", "guidance.momentum"},
      {"set_guidance_unconditional", G + "--set guidance.scale=3", "guidance"},
      {"set_corrector_steps", G + "--set guidance.corrector.type=langevin --set guidance.corrector.steps=0", "guidance.corrector"},
      {"set_corrector_type", G + "--set guidance.corrector.type=warp", "guidance.corrector.type"},
      {"set_strength", G + "--set init_image=s.npy --set strength=2", "strength"},
      {"set_model_rank", G + "--set model.rank=-3", "model.rank"},
      {"set_model_type", G + "--set model.type=quantum", "model.type"},
      {"set_model_shape", T + kFixtures + "/gaussian_eps.pt --set model.shape=[0,3]", "model.shape"},
      {"set_model_shape_overflow", T + kFixtures + "/gaussian_eps.pt --set model.shape=[4294967296,4294967296]", "model.shape"},
      {"set_model_shape_negative", T + kFixtures + "/gaussian_eps.pt --set model.shape=[-2,3]", "model.shape"},
      {"set_max_batch", G + "--set model.max_batch=-1", "model.max_batch"},
      {"set_schedule_type", G + "--set schedule.type=vp_nonsense", "schedule.type"},
      {"set_schedule_key_for_other_type", G + "--set schedule.sigma_max=5", "schedule.sigma_max"},
      {"set_beta_end", G + "--set schedule.type=vp_discrete --set schedule.beta_end=3", "schedule.beta_end"},
      {"set_train_steps", G + "--set schedule.type=vp_discrete --set schedule.num_train_steps=0", "schedule.num_train_steps"},
      {"set_nrow", G + "--set output.nrow=-1", "output.nrow"},
      {"set_cond_out_of_range", "generate -q --set cond=12", "cond"},
      {"set_cond_list_length", "generate -q --set batch=3 --set 'cond=[1, 2]'", "cond"},
      {"set_null_label", "generate -q --set guidance.scale=2 --set guidance.null_label=-5", "guidance.null_label"},
      {"set_threads_zero", "generate --threads 0", "--threads: expected an integer from 1 to 1024, got '0'"},
      {"set_threads_huge", "generate --threads 100000", "--threads: expected an integer from 1 to 1024"},
      {"unknown_flag", "generate --bogus-flag", "bogus"},
      {"unknown_subcommand", "frobnicate", "unknown subcommand 'frobnicate'"},
      {"config_subcommand_flag", "config --bogus", "bogus"},
      {"samplers_subcommand_arg", "samplers extra", "extra"},
      // --- models ---
      {"model_missing", T + "nowhere.pt --set model.shape=[2,3]", "nowhere.pt"},
      {"model_text", T + "text.pt --set model.shape=[2,3]", "text.pt"},
      {"model_zip", T + "zip.pt --set model.shape=[2,3]", "zip.pt"},
      {"model_zero_bytes", T + "zero.pt --set model.shape=[2,3]", "zero.pt"},
      {"model_directory", T + "folder --set model.shape=[2,3]", "'folder' is a directory"},
      {"model_dev_urandom", T + "/dev/urandom --set model.shape=[2,3]", "'/dev/urandom' is a character device"},
      {"model_fifo", T + "silent.fifo --set model.shape=[2,3]", "'silent.fifo' is a FIFO"},
      {"model_endless_fifo", T + "endless.fifo --set model.shape=[2,3]", "'endless.fifo' is a FIFO"},
      {"model_device_node", T + "null.dev --set model.shape=[2,3]", "'null.dev' is a character device"},
      {"model_not_a_model", T + kFixtures + "/not_a_model.pt --set model.shape=[2,3]", "not_a_model.pt"},
      {"model_wrong_arity", T + kFixtures + "/wrong_arity.pt --set model.shape=[2,3] --set model.time_input=t", "forward takes 1 arguments"},
      {"model_wrong_shape", T + kFixtures + "/wrong_shape.pt --set model.shape=[2,3] --set model.time_input=t", "forward returned shape"},
      {"model_nan", T + kFixtures + "/nan_output.pt --set model.shape=[2,3] --set model.time_input=t", "non-finite"},
      {"model_late_nan", T + kFixtures + "/late_nan.pt --set model.shape=[2,3] --set model.time_input=t --set sampler.name=ddim --set output.png= --set output.npy=out.npy", "model output is not finite at step"},
      {"model_capped", T + kFixtures + "/gaussian_eps.pt --set model.shape=[2,3]", "SCORCH_MAX_INPUT_BYTES", "SCORCH_MAX_INPUT_BYTES=1000"},
      {"model_text_encoder_missing", "generate -q --config configs/fmnist_prompt.yaml --set text_encoder.path=nowhere.pt", "nowhere.pt"},
      {"model_decoder_text", "generate -q --config configs/fmnist_prompt.yaml --set decoder.path=text.pt", "text.pt"},
      {"model_classifier_dev_zero", "generate -q --set guidance.classifier.path=/dev/zero --set guidance.classifier.scale=1", "/dev/zero"},
      // --- safetensors ---
      {"st_truncated", G + "--set model.path=trunc.safetensors", "trunc.safetensors"},
      {"st_overlap", G + "--set model.path=overlap.safetensors", "overlap.safetensors"},
      {"st_hole", G + "--set model.path=hole.safetensors", "hole.safetensors"},
      {"st_json", G + "--set model.path=json.safetensors", "json.safetensors"},
      {"st_header_length", G + "--set model.path=headlen.safetensors", "headlen.safetensors"},
      {"st_dtype", G + "--set model.path=dtype.safetensors", "dtype.safetensors"},
      {"st_missing_tensors", G + "--set model.path=missing_keys.safetensors", "missing_keys.safetensors"},
      {"st_dev_zero", G + "--set model.path=/dev/zero", "'/dev/zero' is a character device"},
      {"st_fifo", G + "--set model.path=endless.fifo", "'endless.fifo' is a FIFO"},
      {"st_npy_as_model", G + "--set model.path=s.npy", "s.npy"},
      {"st_gmm_kind", G + "--set model.type=gmm --set model.path=models/fmnist_gaussian.safetensors", "models/fmnist_gaussian.safetensors"},
      // --- npy inputs ---
      {"npy_noise_dev_zero", G + "--set init_noise=/dev/zero", "init_noise: '/dev/zero' is a character device"},
      {"npy_noise_fifo", G + "--set init_noise=silent.fifo", "init_noise: 'silent.fifo' is a FIFO"},
      {"npy_noise_endless_fifo", G + "--set init_noise=endless.fifo", "init_noise: 'endless.fifo' is a FIFO"},
      {"npy_noise_device_node", G + "--set init_noise=null.dev", "init_noise: 'null.dev' is a character device"},
      {"npy_noise_shape", G + "--set init_noise=noise_wrong.npy", "init_noise"},
      {"npy_noise_nan", G + "--set init_noise=nan.npy", "init_noise"},
      {"npy_noise_truncated", G + "--set init_noise=trunc.npy", "trunc.npy"},
      {"npy_noise_magic", G + "--set init_noise=magic.npy", "magic.npy"},
      {"npy_noise_huge_header", G + "--set init_noise=huge.npy", "huge.npy"},
      {"npy_noise_complex", G + "--set init_noise=cplx.npy", "cplx.npy"},
      {"npy_noise_zero_bytes", G + "--set init_noise=zero.npy", "zero.npy"},
      {"npy_noise_directory", G + "--set init_noise=folder", "init_noise: 'folder' is a directory"},
      {"npy_noise_capped", G + "--set init_noise=s.npy", "SCORCH_MAX_INPUT_BYTES", "SCORCH_MAX_INPUT_BYTES=1000"},
      {"npy_invert_shape", G + "--set invert=flat.npy", "invert"},
      {"npy_init_image_shape", G + "--set init_image=flat.npy", "init_image"},
      {"npy_mask_shape", G + "--set init_image=s.npy --set inpaint_mask=mask_wrong.npy", "inpaint_mask"},
      {"npy_mask_fifo", G + "--set init_image=s.npy --set inpaint_mask=silent.fifo", "inpaint_mask: 'silent.fifo' is a FIFO"},
      // --- images ---
      {"image_truncated_png", G + "--set init_image=bad.png", "init_image: 'bad.png' is truncated"},
      {"image_above_pixel_limit", G + "--set init_image=big.pgm", "declares 99999 x 99999 pixels"},
      {"image_text", G + "--set init_image=text.png", "init_image: 'text.png' is not a PNG, JPEG, BMP or PNM image"},
      {"image_zero_bytes", G + "--set init_image=zero.png", "init_image"},
      {"image_header_only", G + "--set init_image=header.pgm", "init_image"},
      {"image_dev_urandom", G + "--set init_image=/dev/urandom", "init_image: '/dev/urandom' is a character device"},
      {"image_mask_truncated", G + "--set init_image=s.npy --set inpaint_mask=bad.png", "inpaint_mask"},
      {"image_mask_endless_fifo", G + "--set init_image=s.npy --set inpaint_mask=endless.fifo", "inpaint_mask: 'endless.fifo' is a FIFO"},
      // --- outputs ---
      {"out_npy_fifo", G + "--set output.npy=silent.fifo", "output.npy: 'silent.fifo' is a FIFO; scorch writes only regular files"},
      {"out_png_fifo", G + "--set output.png=silent.fifo", "output.png"},
      {"out_npy_device_node", G + "--set output.npy=null.dev", "output.npy: 'null.dev' is a character device"},
      {"out_png_device_node", G + "--set output.png=null.png --set output.npy=null.dev", "'null.dev' is a character device"},
      {"out_npy_symlink", G + "--set output.npy=link.npy", "output.npy: 'link.npy' is a symbolic link"},
      {"out_npy_directory", G + "--set output.npy=folder", "output.npy: 'folder' is a directory"},
      {"out_png_missing_folder", G + "--set output.png=nowhere/out.png", "output.png: directory 'nowhere' does not exist"},
      {"out_png_extension", G + "--set output.png=out.jpg", "output.png: 'out.jpg' does not end in .png"},
      {"out_png_no_extension", G + "--set output.png=out", "output.png: 'out' does not end in .png"},
      {"out_trajectory_fifo", G + "--set output.trajectory=silent.fifo", "output.trajectory"},
      {"out_labels_device", G + "--set output.labels=null.dev", "output.labels"},
      {"out_json_fifo", G + "--set output.npy=silent.npy", "output.npy (its .json): 'silent.json' is a FIFO"},
      {"out_keep_after_late_error", T + kFixtures + "/late_nan.pt --set model.shape=[2,3] --set model.time_input=t --set sampler.name=ddim --set output.png= --set output.npy=keep.npy", "model output is not finite at step"},
      {"out_keep_png_after_bad_sampler", G + "--set output.png=keep.png --set sampler.name=nope", "unknown sampler"},
      {"out_png_for_vectors", T + kFixtures + "/gaussian_eps.pt --set model.shape=[6] --set output.png=v.png", "output.png: samples of shape [6] are not images"},
      // --- token models (generate) ---
      {"tokens_mask_id", W + "--set model.mask_id=1000", "model.mask_id: the network does not take token 1000"},
      {"tokens_mask_inside", W + "--set model.mask_id=5", "model.mask_id: the mask token must be outside the vocabulary"},
      {"tokens_length", W + "--set model.length=0", "model.length"},
      {"tokens_vocab", W + "--set model.vocab=1", "model.vocab"},
      {"tokens_sampler", W + "--set sampler.name=nope", "nope"},
      {"tokens_top_p", W + "--set sampler.top_p=3", "sampler.top_p"},
      {"tokens_temperature", W + "--set sampler.temperature=-1", "sampler.temperature"},
      {"tokens_blocks", W + "--set sampler.blocks=0", "sampler.blocks"},
      {"tokens_model_dev_zero", W + "--set model.path=/dev/zero", "'/dev/zero' is a character device"},
      {"tokens_output_fifo", W + "--set output.text=silent.fifo", "output.text"},
      {"tokens_lsd_coefficients", W + "--set sampler.name=lsd --set sampler.coefficients=coeffs.yaml", "coeffs.yaml"},
      {"tokens_lsd_coefficients_fifo", W + "--set sampler.name=lsd --set sampler.coefficients=endless.fifo", "'endless.fifo' is a FIFO"},
      {"tokens_uniform_on_mask_sampler", "generate -q --config tokens.yaml --set sampler.name=first_hitting", "first_hitting"},
      // --- fit ---
      {"fit_dev_zero", F + "/dev/zero", "'/dev/zero' is a character device"},
      {"fit_dev_urandom", F + "/dev/urandom", "'/dev/urandom' is a character device"},
      {"fit_fifo", F + "silent.fifo", "--data: 'silent.fifo' is a FIFO"},
      {"fit_endless_fifo", F + "endless.fifo", "--data: 'endless.fifo' is a FIFO"},
      {"fit_directory", F + "folder", "'folder' is a directory"},
      {"fit_empty_npy", F + "empty.npy", "--data 'empty.npy': no samples"},
      {"fit_one_sample", F + "one.npy", "--data 'one.npy': one sample"},
      {"fit_nan", F + "nan.npy", "nan.npy"},
      {"fit_truncated_npy", F + "trunc.npy", "trunc.npy"},
      {"fit_idx_magic", F + "magic.idx", "magic.idx"},
      {"fit_idx_dims", F + "dims.idx", "dims.idx"},
      {"fit_idx_zero_dim", F + "zerodim.idx", "zerodim.idx"},
      {"fit_idx_short", F + "short.idx", "short.idx"},
      {"fit_idx_empty", F + "empty.idx", "empty.idx"},
      {"fit_idx_gzip_bomb", F + "bomb.idx.gz", "bomb.idx.gz", "SCORCH_MAX_INPUT_BYTES=1000000"},
      {"fit_gzip_garbage", F + "bad.gz", "bad.gz"},
      {"fit_out_fifo", "fit gaussian -q --data flat.npy --out silent.fifo", "--out: 'silent.fifo' is a FIFO"},
      {"fit_out_device", "fit gaussian -q --data flat.npy --out null.dev", "--out: 'null.dev' is a character device"},
      {"fit_out_symlink", "fit gaussian -q --data flat.npy --out link.npy", "--out: 'link.npy' is a symbolic link"},
      {"fit_out_missing_folder", "fit gaussian -q --data flat.npy --out nowhere/g.safetensors", "--out"},
      {"fit_kind", "fit wavelet -q --data flat.npy --out g.safetensors", "wavelet"},
      {"fit_k_zero", "fit gmm -q --data flat.npy --out g.safetensors --k 0", "--k"},
      {"fit_k_above_samples", "fit gmm -q --data flat.npy --out g.safetensors --k 500", "--k"},
      {"fit_cov", "fit gmm -q --data flat.npy --out g.safetensors --cov spherical", "--cov"},
      {"fit_seed_negative", "fit gmm -q --data flat.npy --out g.safetensors --seed -1", "--seed: expected an integer from 0 to"},
      {"fit_rank_negative", "fit gaussian -q --data flat.npy --out g.safetensors --rank -2", "--rank: expected an integer from 0 to"},
      {"fit_limit_negative", "fit gaussian -q --data flat.npy --out g.safetensors --limit -1", "--limit: expected an integer from 0 to"},
      {"fit_reg_negative", "fit gmm -q --data flat.npy --out g.safetensors --reg -1", "--reg"},
      {"fit_reg_huge", "fit gmm -q --data flat.npy --out g.safetensors --reg 1e300", "--reg"},
      {"fit_smoothing_negative", "fit empirical -q --data flat.npy --out g.safetensors --smoothing -1", "--smoothing"},
      {"fit_iters_text", "fit gmm -q --data flat.npy --out g.safetensors --iters many", "--iters"},
      // --- eval ---
      {"eval_dev_zero", "eval --samples /dev/zero", "--samples: '/dev/zero' is a character device"},
      {"eval_fifo", "eval --samples endless.fifo", "--samples: 'endless.fifo' is a FIFO"},
      {"eval_missing", "eval --samples nowhere.npy", "nowhere.npy"},
      {"eval_empty", "eval --samples empty.npy", "eval: needs at least 2 samples"},
      {"eval_labels_range", "eval --samples s.npy --labels lab.npy", "eval: labels must lie in 0..9"},
      {"eval_labels_count", "eval --samples s.npy --labels lab_short.npy", "--labels 'lab_short.npy': shape [3]"},
      {"eval_labels_fifo", "eval --samples s.npy --labels silent.fifo", "--labels: 'silent.fifo' is a FIFO"},
      {"eval_classifier_missing", "eval --samples s.npy --classifier nowhere.pt", "nowhere.pt"},
      {"eval_classifier_text", "eval --samples s.npy --classifier text.pt", "text.pt"},
      {"eval_classifier_dev_zero", "eval --samples s.npy --classifier /dev/zero", "'/dev/zero' is a character device"},
      {"eval_reference_shape", "eval --samples s.npy --reference flat.npy", "--reference 'flat.npy'"},
      {"eval_reference_fifo", "eval --samples s.npy --reference endless.fifo", "'endless.fifo' is a FIFO"},
      {"eval_reference_idx_bomb", "eval --samples s.npy --reference bomb.idx.gz", "bomb.idx.gz", "SCORCH_MAX_INPUT_BYTES=1000000"},
      {"eval_samples_shape", "eval --samples flat.npy", "--samples 'flat.npy'"},
      {"eval_samples_nan", "eval --samples nan.npy", "--samples 'nan.npy': has non-finite values"},
      {"eval_k_zero", "eval --samples s.npy --k 0", "--k"},
      // --- distill-lsd ---
      {"lsd_seed_negative", "distill-lsd --config configs/words.yaml --out l.yaml --seed -1", "--seed: expected an integer from 0 to"},
      {"lsd_steps_zero", "distill-lsd --config configs/words.yaml --out l.yaml --steps 0", "--steps"},
      {"lsd_config_dev_zero", "distill-lsd --config /dev/zero --out l.yaml", "'/dev/zero' is a character device"},
      {"lsd_config_fifo", "distill-lsd --config endless.fifo --out l.yaml", "'endless.fifo' is a FIFO"},
      {"lsd_config_continuous", "distill-lsd --config configs/fmnist_gaussian.yaml --out l.yaml", "is not a token model"},
      {"lsd_out_fifo", "distill-lsd --config configs/words.yaml --out silent.fifo", "--out: 'silent.fifo' is a FIFO"},
      {"lsd_out_device", "distill-lsd --config configs/words.yaml --out null.dev", "--out: 'null.dev' is a character device"},
      {"lsd_out_symlink", "distill-lsd --config configs/words.yaml --out link.npy", "--out: 'link.npy' is a symbolic link"},
      {"lsd_target", "distill-lsd --config configs/words.yaml --out l.yaml --target everything", "--target"},
      {"lsd_batch_huge", "distill-lsd --config configs/words.yaml --out l.yaml --batch 100000000", "--batch"},
  };
  return c;
}

INSTANTIATE_TEST_SUITE_P(Cases, BadInput, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.id; });

TEST(BadInputSuite, HasAtLeast150CasesWithDistinctNames) {
  const auto all = cases();
  EXPECT_GE(all.size(), 150u);
  std::set<std::string> ids;
  for (const auto& c : all) EXPECT_TRUE(ids.insert(c.id).second) << c.id;
}

// SIGINT and SIGTERM during long runs of generate, fit and distill-lsd: the process ends by
// the signal and leaves no file (neither the hidden temporary nor a partial output).
// tools/scripts/signal_trials.sh runs the same at random points, many times.
struct SignalCase {
  std::string id;
  std::string args;
  int sig;
  double after;
};

TEST(BadInputSignalsTest, LongRunsLeaveNothingBehind) {
  const fs::path base = fs::temp_directory_path() / ("scorch_signals_" + std::to_string(::getpid()));
  fs::remove_all(base);
  const fs::path work = base / "work", io = base / "io";
  fs::create_directories(work);
  fs::create_directories(io);
  scorch::write_npy((work / "data.npy").string(), at::randn({4000, 64}));
  const std::vector<SignalCase> runs = {
      {"generate_int", "generate -q --set batch=2000 --set sampler.steps=50 --set output.npy=x.npy", SIGINT, 1.0},
      {"generate_term", "generate -q --set batch=2000 --set sampler.steps=50 --set output.png=x.png", SIGTERM, 1.5},
      {"fit_int", "fit gmm -q --data data.npy --k 64 --cov full --em-iters 1000000 --out g.safetensors", SIGINT, 1.0},
      {"fit_term", "fit gmm -q --data data.npy --k 64 --cov full --em-iters 1000000 --out g.safetensors", SIGTERM, 2.0},
      {"lsd_int", "distill-lsd --config configs/words.yaml --steps 4 --iters 100000 --out l.yaml", SIGINT, 1.5},
      {"lsd_term", "distill-lsd --config configs/words.yaml --steps 4 --iters 100000 --out l.yaml", SIGTERM, 2.5},
  };
  for (const auto& s : runs) {
    const Snapshot before = snapshot(work);
    const RunResult r = run_in(work, io, "'" + kCli + "' " + s.args, s.after, s.sig);
    EXPECT_EQ(r.signal, s.sig) << s.id << ": ended with status " << r.status << "\n" << r.err;
    EXPECT_EQ(snapshot(work), before) << s.id << " left a file behind";
  }
  fs::remove_all(base);
}

}  // namespace
