// The scorch binary, run as users run it: exit status, one error line, and no
// output file left behind on failure.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "scorch/io.h"

namespace fs = std::filesystem;

namespace {

const std::string kCli = SCORCH_CLI;
const std::string kFixtures = SCORCH_FIXTURES;

struct Result {
  int status;
  std::string err;
  std::string out;
};

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("scorch_cli_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `scorch args` in the test's directory; captures stderr and stdout.
  Result run(const std::string& args) {
    const std::string err = (dir_ / "stderr.txt").string(), out = (dir_ / "stdout.txt").string();
    const std::string cmd = "cd '" + dir_.string() + "' && '" + kCli + "' " + args + " 2> '" + err + "' > '" + out + "'";
    const int raw = std::system(cmd.c_str());
    auto slurp = [](const std::string& path) {
      std::ifstream in(path);
      std::stringstream ss;
      ss << in.rdbuf();
      fs::remove(path);
      return ss.str();
    };
    const std::string e = slurp(err);
    return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, e, slurp(out)};
  }
  // Files the run left in the directory.
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    return out;
  }
  void expect_bad(const std::string& args, const std::string& fragment) {
    const auto before = files();
    const Result r = run(args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << r.err;
    // Progress lines may precede it; the error itself is one line, the last.
    const size_t pos = r.err.find("scorch: error: ");
    EXPECT_NE(pos, std::string::npos) << r.err;
    if (pos != std::string::npos) EXPECT_EQ(r.err.find('\n', pos), r.err.size() - 1) << r.err;
    EXPECT_EQ(files(), before) << args << " left a file";
  }

  fs::path dir_;
};

TEST_F(Cli, GenerateWithNoArgumentsWritesPng) {
  const Result r = run("generate");
  ASSERT_EQ(r.status, 0) << r.err;
  const fs::path png = dir_ / "samples.png";
  ASSERT_TRUE(fs::exists(png));
  std::ifstream in(png, std::ios::binary);
  char magic[8];
  in.read(magic, 8);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  EXPECT_EQ(files().size(), 1u);  // no temporary left
}

TEST_F(Cli, SamplersListsTheTable) {
  const std::string out = (dir_ / "out.txt").string();
  ASSERT_EQ(std::system(("'" + kCli + "' samplers > '" + out + "'").c_str()), 0);
  std::stringstream ss;
  ss << std::ifstream(out).rdbuf();
  for (const char* name : {"ddim", "euler", "euler_ancestral", "heun", "s_churn", "skip_type"})
    EXPECT_NE(ss.str().find(name), std::string::npos) << name;
}

TEST_F(Cli, NpyOutputIsFloat32WithBatchShape) {
  ASSERT_EQ(run("generate --config configs/fmnist_gaussian.yaml --set output.png= --set output.npy=x.npy --set batch=3")
                .status,
            0);
  std::ifstream in(dir_ / "x.npy", std::ios::binary);
  std::string head(128, '\0');
  in.read(head.data(), 128);
  EXPECT_NE(head.find("'<f4'"), std::string::npos);
  EXPECT_NE(head.find("(3, 1, 28, 28)"), std::string::npos) << head;
}

TEST_F(Cli, BadInputExitsTwoWithOneLineAndNoOutput) {
  const std::string ts =
      "--set model.type=torchscript --set model.shape=[2,3] --set model.time_input=t --set cond= --set output.npy=out.npy "
      "--set output.png= ";
  expect_bad("generate --set model.path=missing.safetensors", "model.path");
  expect_bad("generate " + ts + "--set model.path=" + kFixtures + "/missing.pt", "file not found");
  expect_bad("generate " + ts + "--set model.path=" + kFixtures + "/wrong_arity.pt", "forward takes 1 arguments");
  expect_bad("generate " + ts + "--set model.path=" + kFixtures + "/wrong_shape.pt", "forward returned shape");
  expect_bad("generate " + ts + "--set model.path=" + kFixtures + "/nan_output.pt", "non-finite");
  expect_bad("generate " + ts + "--set model.path=" + kFixtures + "/late_nan.pt --set sampler.name=ddim",
             "model output is not finite at step");
  std::ofstream(dir_ / "bad.yaml") << "model:\n  type: gaussian\n  path: [x\n";
  expect_bad("generate --config bad.yaml", "bad.yaml:");
  fs::remove(dir_ / "bad.yaml");
  expect_bad("generate --set sampler.name=nope", "unknown sampler");
  expect_bad("generate --set sampler.bogus=1", "unknown option");
  expect_bad("generate --set sampler.steps=0", "sampler.steps");
  expect_bad("generate --set sampler.steps=-5", "sampler.steps");
  expect_bad("generate --set output.png=/nonexistent_dir/out.png", "output.png");
  expect_bad("generate --config missing.yaml", "missing.yaml");
  expect_bad("generate --bogus-flag", "bogus");
  expect_bad("eval --samples missing.npy", "missing.npy");
  expect_bad("eval --samples x.npy --classifier missing.pt", "missing.pt");
}

TEST_F(Cli, UnwritableOutputDirectory) {
  if (::geteuid() == 0) GTEST_SKIP() << "root can write anywhere; covered by the missing-directory case";
  fs::create_directories(dir_ / "ro");
  fs::permissions(dir_ / "ro", fs::perms::owner_read | fs::perms::owner_exec);
  const Result r = run("generate --set output.png=ro/out.png");
  EXPECT_EQ(r.status, 2);
  EXPECT_FALSE(fs::exists(dir_ / "ro" / "out.png"));
  fs::permissions(dir_ / "ro", fs::perms::owner_all);
}

}  // namespace

namespace {

// A token model: one decoded sample per line on stdout, tokens in output.npy.
TEST_F(Cli, GenerateTokens) {
  const std::string fx = std::string(SCORCH_FIXTURES) + "/uniform_tokens.pt";
  const std::string base = "generate --config configs/words.yaml --set model.path=" + fx +
                           " --set model.vocab=abcde --set model.length=4 --set model.mask_id=5 --set batch=6";
  const Result r = run(base + " --set output.npy=tok.npy --set output.text=tok.txt --set sampler.name=cached");
  ASSERT_EQ(r.status, 0) << r.err;
  int lines = 0;
  for (char c : r.out) lines += c == '\n';
  EXPECT_EQ(lines, 6);
  EXPECT_NE(r.err.find("model calls per sequence"), std::string::npos) << r.err;
  const at::Tensor tok = scorch::read_npy((dir_ / "tok.npy").string());
  EXPECT_EQ(tok.sizes(), at::IntArrayRef({6, 4}));
  EXPECT_TRUE(((tok >= 0) & (tok < 5)).all().item<bool>());
  EXPECT_TRUE(fs::exists(dir_ / "tok.txt"));
  expect_bad(base + " --set sampler.name=ddim", "unknown discrete sampler 'ddim'");
  expect_bad(base + " --set model.vocab=", "model.vocab");
  expect_bad(base + " --set model.length=5", "model.length");
  expect_bad(base + " --set schedule.type=vp_linear", "schedule.type");
  expect_bad(base + " --set sampler.steps=0", "sampler.steps");
  expect_bad(base + " --set output.png=x.png", "output.png");
}

// distill-lsd on a model whose answer is known: with uniform p the teacher's transitions
// over a student step are exactly euler's (log-linear: probability (t_i - t_i+1) / t_i), so
// the fitted coefficients stay at 1 (within the estimate's noise); the lsd sampler reads them.
TEST_F(Cli, DistillLsd) {
  const std::string fx = std::string(SCORCH_FIXTURES) + "/uniform_tokens.pt";
  {
    std::ofstream f((dir_ / "tok.yaml").string());
    f << "model: {type: tokens, path: " << fx << ", vocab: abcde, length: 4}\nschedule: {type: loglinear}\n";
  }
  const Result r = run("distill-lsd --config tok.yaml --steps 4 --teacher-steps 64 --batch 2000 --iters 200 --out c.yaml");
  ASSERT_EQ(r.status, 0) << r.err;
  std::ifstream in((dir_ / "c.yaml").string());
  std::string line;
  std::getline(in, line);
  ASSERT_EQ(line.rfind("coefficients: [", 0), 0u) << line;
  std::stringstream ss(line.substr(15));
  double c;
  char sep;
  int n = 0;
  while (ss >> c) {
    EXPECT_NEAR(c, 1.0, 0.1) << "step " << n;
    ++n;
    ss >> sep;
  }
  EXPECT_EQ(n, 4);
  const Result g = run("generate --config tok.yaml --set sampler.name=lsd --set sampler.steps=4 --set sampler.coefficients=c.yaml");
  EXPECT_EQ(g.status, 0) << g.err;
  expect_bad("generate --config tok.yaml --set sampler.name=lsd --set sampler.steps=5 --set sampler.coefficients=c.yaml",
             "sampler.steps = 5");
  expect_bad("distill-lsd --config tok.yaml --steps 4 --teacher-steps 30 --out d.yaml", "--teacher-steps");
}

// scorch fit empirical | gmm | gaussian, then sampling from each written model.
TEST_F(Cli, FitThenGenerate) {
  const std::string data = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
  const std::string sample = " --set output.png=x.png --set batch=4 --set sampler.name=dpmpp_2m --set sampler.steps=5";
  ASSERT_EQ(run("fit empirical --data " + data + " --limit 200 --out fm.safetensors").status, 0);
  Result r = run("generate --config configs/fmnist_gaussian.yaml --set model.type=empirical "
                 "--set model.path=fm.safetensors" + sample);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "x.png"));
  fs::remove(dir_ / "x.png");
  r = run("fit gmm --data " + data + " --limit 500 --k 4 --cov lowrank --rank 8 --em-iters 2 --out g.safetensors");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("EM 2/2"), std::string::npos) << r.err;  // progress lines
  r = run("generate --config configs/fmnist_gaussian.yaml --set model.type=gmm --set model.path=g.safetensors" + sample);
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "x.png"));
  ASSERT_EQ(run("fit gaussian -q --data " + data + " --limit 500 --rank 16 --out n.safetensors").status, 0);
  EXPECT_EQ(run("generate --config configs/fmnist_gaussian.yaml --set model.path=n.safetensors" + sample).status, 0);

  expect_bad("fit gmm --data " + data + " --limit 10 --k 11 --out bad.safetensors", "--k");
  expect_bad("fit gmm --data " + data + " --limit 50 --cov spherical --out bad.safetensors", "spherical");
  expect_bad("fit gmm --data " + data + " --limit 50 --rank 784 --out bad.safetensors", "--rank");
  expect_bad("fit gaussian --data " + data + " --limit 50 --rank 785 --out bad.safetensors", "--rank");
  expect_bad("fit mixture --data " + data + " --out bad.safetensors", "mixture");
  expect_bad("fit empirical --data missing.npy --out e.safetensors", "missing.npy");
  EXPECT_FALSE(fs::exists(dir_ / "bad.safetensors"));
}

}  // namespace
