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
#include "support/bad_input_cases.h"

namespace fs = std::filesystem;

namespace {

const std::string kCli = SCORCH_CLI;
const std::string kFixtures = SCORCH_FIXTURES;
constexpr double kEndlessSeconds = 2.0;
constexpr long kEndlessRssKb = 200 * 1024;

using scorch_test::Case;

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


INSTANTIATE_TEST_SUITE_P(Cases, BadInput, ::testing::ValuesIn(scorch_test::bad_input_cases()),
                         [](const ::testing::TestParamInfo<Case>& info) { return info.param.id; });

TEST(BadInputSuite, HasAtLeast150CasesWithDistinctNames) {
  const auto all = scorch_test::bad_input_cases();
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
