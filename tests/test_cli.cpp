// The scorch binary, run as users run it: exit status, one error line, and no
// output file left behind on failure.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "scorch/config.h"
#include "scorch/discrete_sampler.h"
#include "scorch/io.h"
#include "scorch/provenance.h"
#include "scorch/sampler.h"

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
  Result expect_bad(const std::string& args, const std::string& fragment) {
    const auto before = files();
    const Result r = run(args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.err;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << r.err;
    // Progress lines may precede it; the error itself is one line, the last.
    const size_t pos = r.err.find("scorch: error: ");
    EXPECT_NE(pos, std::string::npos) << r.err;
    if (pos != std::string::npos) EXPECT_EQ(r.err.find('\n', pos), r.err.size() - 1) << r.err;
    EXPECT_EQ(files(), before) << args << " left a file";
    return r;
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

// The CLI keeps freed memory for reuse (tools/cli/scorch.cpp, keep_freed_memory); glibc's
// defaults (SCORCH_SYSTEM_MALLOC=1) must give the same bytes, only slower.
// The CLI runs CPU networks with TorchScript's plain executor (no profiling runs): the same
// samples, to the bit, as LibTorch's default profiling executor.
TEST_F(Cli, PlainExecutorLeavesSamplesBitIdentical) {
  const std::string args = "generate -q --set output.png= --set batch=10 --set sampler.steps=3 --set output.npy=";
  ASSERT_EQ(run(args + "plain.npy").status, 0);
  ASSERT_EQ(std::system(("cd '" + dir_.string() + "' && SCORCH_PROFILING_EXECUTOR=1 '" + kCli + "' " + args +
                         "profiling.npy")
                            .c_str()),
            0);
  EXPECT_TRUE(at::equal(scorch::read_npy((dir_ / "plain.npy").string()),
                        scorch::read_npy((dir_ / "profiling.npy").string())));
}

TEST_F(Cli, AllocatorSettingsLeaveSamplesBitIdentical) {
  const std::string args = "generate -q --set output.png= --set sampler.steps=2 --set output.npy=";
  ASSERT_EQ(run(args + "kept.npy").status, 0);
  ASSERT_EQ(std::system(("cd '" + dir_.string() + "' && SCORCH_SYSTEM_MALLOC=1 '" + kCli + "' " + args + "glibc.npy")
                            .c_str()),
            0);
  auto bytes = [&](const char* name) {
    std::ifstream in(dir_ / name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string kept = bytes("kept.npy");
  EXPECT_GT(kept.size(), 28u * 28u * 4u);
  EXPECT_EQ(kept, bytes("glibc.npy"));
}

// The PNG carries its config: `scorch info` prints it, `--config out.png` runs it again (the
// same samples), and a PNG without metadata, a corrupt chunk or a recorded config that no
// longer validates is one error line, exit status 2, no output.
TEST_F(Cli, InfoAndRunAgainFromAPng) {
  const std::string base = "generate --config configs/fmnist_gaussian.yaml --set batch=3 --set sampler.steps=4";
  ASSERT_EQ(run(base + " --set output.png=a.png --set output.npy=a.npy").status, 0);
  const Result info = run("info a.png");
  ASSERT_EQ(info.status, 0) << info.err;
  for (const char* key : {"seed: [0, 1, 2]", "model_sha256:", "scorch_version:", "skip_type: logSNR", "heun, 4 steps"})
    EXPECT_NE(info.out.find(key), std::string::npos) << key << "\n" << info.out;
  const Result json = run("info a.json");
  ASSERT_EQ(json.status, 0) << json.err;
  EXPECT_NE(json.out.find("seed: [0, 1, 2]"), std::string::npos) << json.out;
  ASSERT_EQ(run("generate --config a.png --set output.npy=b.npy").status, 0);
  EXPECT_TRUE(at::equal(scorch::read_npy((dir_ / "a.npy").string()), scorch::read_npy((dir_ / "b.npy").string())));
  ASSERT_EQ(run("generate --config a.png --set 'seed=[5, 1, 7]' --set output.npy=c.npy").status, 0);
  const at::Tensor a = scorch::read_npy((dir_ / "a.npy").string()), c = scorch::read_npy((dir_ / "c.npy").string());
  EXPECT_TRUE(at::equal(a[1], c[1]));
  EXPECT_FALSE(at::equal(a[0], c[0]));

  // a PNG without metadata, a corrupt chunk, a recorded config that does not validate
  std::string bytes;
  {
    std::ifstream in((dir_ / "a.png").string(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    bytes = ss.str();
  }
  const size_t at = bytes.find("skip_type: logSNR");
  ASSERT_NE(at, std::string::npos);
  std::string corrupt = bytes;
  corrupt[at] = 'S';
  std::ofstream((dir_ / "corrupt.png").string(), std::ios::binary) << corrupt;
  expect_bad("generate --config corrupt.png --set output.npy=x.npy", "CRC mismatch");
  expect_bad("info corrupt.png", "CRC mismatch");
  const std::string plain = scorch::png_with_text(bytes.substr(0, 33) + bytes.substr(bytes.find("IDAT") - 4), {});
  std::ofstream((dir_ / "plain.png").string(), std::ios::binary) << plain;
  expect_bad("generate --config plain.png --set output.npy=x.npy", "without scorch metadata");
  expect_bad("info plain.png", "without scorch metadata");
  std::ofstream((dir_ / "bad.png").string(), std::ios::binary)
      << scorch::png_with_text(plain, {{"scorch", "model: {type: gaussian, path: models/fmnist_gaussian.safetensors}\n"
                                                  "sampler: {name: no_such}\n"}});
  expect_bad("generate --config bad.png --set output.npy=x.npy", "unknown sampler 'no_such'");
  std::ofstream((dir_ / "notes.txt").string()) << "not a record\n";
  expect_bad("info notes.txt", "expected a PNG");
  expect_bad("info missing.png", "info: 'missing.png' does not exist");
}

// Inputs that are not bounded regular files, outputs that are not regular files, and careless
// options: each is one line naming the key or path, exit 2, within 2 s, and nothing created or
// replaced (the FIFOs are made here, in the test's folder).
TEST_F(Cli, HostileInputsAndOutputs) {
  const std::string fifo = (dir_ / "fifo.npy").string(), fifo_yaml = (dir_ / "fifo.yaml").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ASSERT_EQ(::mkfifo(fifo_yaml.c_str(), 0600), 0);
  std::ofstream((dir_ / "dup.yaml").string()) << "batch: 10\nseed: 1\nbatch: 20\n";
  scorch::write_npy((dir_ / "empty.npy").string(), at::zeros({0, 1, 28, 28}));
  scorch::write_npy((dir_ / "s.npy").string(), at::zeros({20, 1, 28, 28}));
  scorch::write_npy((dir_ / "lab.npy").string(), at::full({20}, 42, at::kLong));
  std::ofstream((dir_ / "bad.png").string(), std::ios::binary) << std::string("\x89PNG\r\n\x1a\n", 8) << "truncated";
  std::ofstream((dir_ / "big.pgm").string(), std::ios::binary) << "P5\n99999 99999\n255\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"generate --config fifo.yaml", "--config: 'fifo.yaml' is a FIFO, not a regular file"},
      {"generate --config /dev/zero", "--config: '/dev/zero' is a character device"},
      {"generate --config .", "--config: '.' is a directory"},
      {"generate --config \"\"", "--config: empty path"},
      {"generate --config dup.yaml", "dup.yaml:3: duplicate key 'batch'"},
      {"generate --set batch=10 --set init_noise=/dev/zero", "init_noise: '/dev/zero' is a character device"},
      {"generate --set batch=10 --set init_noise=fifo.npy", "init_noise: 'fifo.npy' is a FIFO"},
      {"generate --set batch=10 --set output.png= --set output.npy=fifo.npy", "output.npy: 'fifo.npy' is a FIFO; scorch writes only regular files"},
      {"generate --set batch=10 --set output.png=fifo.npy", "output.png: 'fifo.npy' does not end in .png"},
      {"generate --set model.path=/dev/urandom --set model.type=torchscript", "'/dev/urandom' is a character device"},
      {"fit gaussian --data /dev/zero --out g.safetensors", "'/dev/zero' is a character device"},
      {"fit gaussian --data fifo.npy --out g.safetensors", "--data: 'fifo.npy' is a FIFO"},
      {"fit gaussian --data x.npy --out fifo.npy", "--out: 'fifo.npy' is a FIFO"},
      {"eval --samples /dev/zero", "--samples: '/dev/zero' is a character device"},
      {"info fifo.npy", "info: 'fifo.npy' is a FIFO"},
      {"frobnicate", "unknown subcommand 'frobnicate'; expected generate"},
      {"generate --threads 0", "--threads: expected an integer from 1 to 1024, got '0'"},
      {"generate --threads 100000", "--threads: expected an integer from 1 to 1024"},
      {"fit gmm --data x.npy --out g.safetensors --seed -1", "--seed: expected an integer from 0 to"},
      {"fit gaussian --data x.npy --out g.safetensors --rank -2", "--rank: expected an integer from 0 to"},
      {"fit gaussian --data x.npy --out g.safetensors --limit -1", "--limit: expected an integer from 0 to"},
      {"distill-lsd --config configs/words.yaml --out l.yaml --seed -1", "--seed: expected an integer from 0 to"},
      {"generate --set sampler.name=\"$(printf 'dp\\033m')\"", "unknown sampler 'dp\\x1bm'"},
      {"generate --set batch=100000000000", "batch: expected an integer from 1 to 16777216"},
      {"generate --set sampler.skip_type=gits --set sampler.gits_warmup=0", "sampler.gits_warmup: expected an integer from 1 to 100000"},
      {"generate --set sampler.skip_type=gits --set sampler.gits_teacher_steps=5", "sampler.gits_teacher_steps: must exceed"},
      {"generate --set sampler.skip_type=gits --set sampler.gits_coeff=0", "sampler.gits_coeff: expected a number > 0"},
      {"generate --set sampler.name=er_sde --set sampler.max_stage=4", "sampler.max_stage: expected an integer from 1 to 3"},
      {"generate --set sampler.name=sa_solver --set sampler.predictor_order=0", "sampler.predictor_order: expected an integer from 1 to 6"},
      {"generate --set sampler.name=sa_solver --set sampler.sde_start_percent=0.9", "sde_start_percent, sde_end_percent"},
      {"generate --set guidance.scale=1e300", "guidance.scale: expected a number from -1000 to 1000, got '1e300'"},
      {"generate --set sampler.name=dpmpp_2m_sde --set sampler.eta=1e9", "sampler.eta: expected a number from 0 to 100"},
      {"generate --set batch=10000000", "batch: 10000000 samples of [1, 28, 28] in Float need about"},
      {"generate --config configs/fmnist_gaussian.yaml --set model.rank=-3", "model.rank: expected an integer from 0 to"},
      {"fit gaussian --data empty.npy --out g.safetensors", "--data 'empty.npy': no samples"},
      // the image libraries' own messages (libpng's "Read Error") never reach the terminal
      {"generate --set batch=10 --set init_image=bad.png", "init_image: 'bad.png' is truncated"},
      {"generate --set batch=10 --set init_image=big.pgm", "declares 99999 x 99999 pixels"},
      {"eval --samples empty.npy", "eval: needs at least 2 samples"},
      {"eval --samples s.npy --labels lab.npy", "eval: labels must lie in 0..9"},
  };
  for (const auto& [args, fragment] : cases) {
    const auto t0 = std::chrono::steady_clock::now();
    // stderr is that one line and nothing else (no library's own message before it)
    EXPECT_EQ(expect_bad(args, fragment).err.rfind("scorch: error: ", 0), 0u) << args;
    // Endless inputs are refused by kind, before anything is read: within 2 s (the cases that
    // load a network first take that long on a loaded machine, so only these are timed).
    const bool endless = args.find("/dev/") != std::string::npos || args.find("fifo") != std::string::npos;
    if (endless) EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0) << args;
  }
  EXPECT_TRUE(fs::is_fifo(fifo));
  EXPECT_FALSE(fs::exists(dir_ / "samples.png"));
}

// Every registered sampler, continuous and discrete, with every option's help line.
TEST_F(Cli, SamplersListsBothTablesWithHelp) {
  const Result r = run("samplers");
  ASSERT_EQ(r.status, 0) << r.err;
  for (const auto& e : scorch::samplers().entries()) {
    EXPECT_NE(r.out.find("\n" + e.name + "\n"), std::string::npos) << e.name;
    for (const auto& o : e.options) EXPECT_NE(r.out.find(o.name + " ("), std::string::npos) << e.name << "." << o.name;
    for (const auto& o : e.options) EXPECT_NE(r.out.find(o.help), std::string::npos) << e.name << "." << o.name;
  }
  for (const auto& e : scorch::discrete_samplers().entries()) {
    EXPECT_NE(r.out.find("\n" + e.name), std::string::npos) << e.name;
    for (const auto& o : e.options) EXPECT_NE(r.out.find(o.help), std::string::npos) << e.name << "." << o.name;
  }
  for (const char* name : {"first_hitting", "maskgit", "remdm", "lsd", "skip_type", "temperature", "blocks"})
    EXPECT_NE(r.out.find(name), std::string::npos) << name;
}

// `scorch config` prints every section's keys; docs/configuration.md's "Every key" tables
// are its --markdown output, unchanged (regenerate: see that section's first line).
TEST_F(Cli, ConfigPrintsEverySchemaAndTheDocsMatch) {
  const Result plain = run("config");
  ASSERT_EQ(plain.status, 0) << plain.err;
  for (const auto& section : scorch::config_schemas())
    for (const auto& k : section.keys) EXPECT_NE(plain.out.find(k.name), std::string::npos) << section.path << "." << k.name;
  for (const char* key : {"inpaint_mask", "beta_schedule", "null_label", "step_size", "ref_cond", "trajectory", "vocab"})
    EXPECT_NE(plain.out.find(key), std::string::npos) << key;
  const Result md = run("config --markdown");
  ASSERT_EQ(md.status, 0) << md.err;
  std::stringstream doc;
  doc << std::ifstream(std::string(SCORCH_SOURCE_DIR) + "/docs/configuration.md").rdbuf();
  const std::string text = doc.str(), begin = "<!-- scorch-config:begin -->\n", end = "\n<!-- scorch-config:end -->";
  const size_t b = text.find(begin), e = text.find(end);
  ASSERT_NE(b, std::string::npos) << "docs/configuration.md has no scorch-config section";
  ASSERT_NE(e, std::string::npos);
  const std::string section = text.substr(b + begin.size(), e - b - begin.size());
  std::string expected = md.out;
  while (!expected.empty() && expected.back() == '\n') expected.pop_back();
  EXPECT_EQ(section, expected) << "docs/configuration.md is out of date: build/bin/scorch config --markdown | "
                                  "/usr/bin/python3 tools/scripts/update_doc_section.py docs/configuration.md scorch-config";
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

// A flow config: the Gaussian's exact velocity network (tests/fixtures), 4 samples, .npy out.
void write_flow_config(const fs::path& dir) {
  std::ofstream(dir / "flow.yaml") << "model: {type: torchscript, path: " << kFixtures
                                   << "/gaussian_velocity.pt, shape: [2, 3], prediction: velocity, time_input: t}\n"
                                      "schedule: {type: flow}\nsampler: {name: dpmpp_2m, steps: 10}\nbatch: 4\n"
                                      "output: {npy: out.npy}\n";
}

TEST_F(Cli, BadInputExitsTwoWithOneLineAndNoOutput) {
  const std::string ts =
      "--set model.type=torchscript --set model.shape=[2,3] --set model.time_input=t --set cond= --set output.npy=out.npy "
      "--set output.png= ";
  expect_bad("generate --set model.path=missing.safetensors", "model.path");
  expect_bad("generate " + ts + "--set model.path=" + kFixtures + "/missing.pt", "does not exist");
  expect_bad("generate " + ts + "--set model.path=" + kFixtures + "/wrong_arity.pt", "forward takes 1 arguments");
  expect_bad("generate " + ts + "--set model.path=" + kFixtures + "/wrong_shape.pt", "forward returned shape");
  expect_bad("generate " + ts + "--set model.path=" + kFixtures + "/nan_output.pt", "non-finite");
  expect_bad("generate " + ts + "--set model.path=" + kFixtures + "/late_nan.pt --set sampler.name=ddim",
             "model output is not finite at step");
  std::ofstream(dir_ / "bad.yaml") << "model:\n  type: gaussian\n  path: [x\n";
  expect_bad("generate --config bad.yaml", "bad.yaml:");
  fs::remove(dir_ / "bad.yaml");
  expect_bad("generate --set sampler.name=nope", "unknown sampler");
  expect_bad("generate --set sampler.bogus=1", "sampler.bogus: unknown key");
  expect_bad("generate --set sampler.steps=0", "sampler.steps");
  expect_bad("generate --set sampler.steps=-5", "sampler.steps");
  expect_bad("generate --set output.png=/nonexistent_dir/out.png", "output.png");
  expect_bad("generate --config missing.yaml", "missing.yaml");
  expect_bad("generate --bogus-flag", "bogus");
  expect_bad("eval --samples missing.npy", "missing.npy");
  // flow: a velocity network on the flow schedule, and what is wrong with it
  write_flow_config(dir_);
  const std::string flow = "--config flow.yaml ";
  expect_bad("generate " + flow + "--set schedule.shift=0", "schedule.shift");
  expect_bad("generate " + flow + "--set schedule.shift=-1", "schedule.shift");
  expect_bad("generate " + flow + "--set sampler.t_start=1.5", "sampler.t_start");
  expect_bad("generate " + flow + "--set sampler.skip_type=logSNR", "sampler.skip_type");
  expect_bad("generate " + flow + "--set schedule.type=rectified", "schedule.type");
  expect_bad("generate " + flow + "--set model.prediction=flow", "model.prediction");
  expect_bad("generate " + flow + "--set schedule.use_dynamic_shifting=true --set schedule.shift=3", "schedule.shift");
  expect_bad("generate " + flow + "--set schedule.type=vp_linear --set sampler.skip_type=flow_match", "flow_match");
}

// The velocity network on flow runs from t = 1 to t = 0 with every ODE sampler family.
TEST_F(Cli, FlowVelocityModelRuns) {
  write_flow_config(dir_);
  const std::string flow = "generate --config flow.yaml --set schedule.shift=3 --set output.npy=f.npy ";
  for (const std::string extra :
       {"--set sampler.name=euler", "--set sampler.name=heun", "--set sampler.name=dpmpp_2m", "--set sampler.name=unipc",
        "--set sampler.name=dpmpp_2m_sde", "--set sampler.name=euler_ancestral", "--set sampler.name=dpm_2_ancestral",
        "--set sampler.name=ddpm", "--set sampler.name=dpmpp_2s_ancestral", "--set sampler.name=dpmpp_sde",
        "--set sampler.name=dpmpp_sde --set noise=brownian", "--set sampler.name=res_multistep",
        "--set sampler.name=res_multistep_ancestral", "--set sampler.name=lcm", "--set sampler.name=restart",
        "--set sampler.name=deis", "--set sampler.name=tcd", "--set sampler.name=er_sde", "--set sampler.name=sa_solver",
        "--set sampler.skip_type=gits --set sampler.gits_teacher_steps=20",
        "--set guidance.corrector.type=ula",
        "--set guidance.corrector.type=uhmc", "--set sampler.name=dpmpp_2m_sde --set noise=brownian"}) {
    const Result r = run(flow + extra);
    ASSERT_EQ(r.status, 0) << extra << ": " << r.err;
    EXPECT_TRUE(at::isfinite(scorch::read_npy((dir_ / "f.npy").string())).all().item<bool>()) << extra;
  }
  // The shipped flow model with classifier-free guidance, and CFG++.
  for (const std::string extra : {"--set guidance.scale=2", "--set guidance.scale=0.6 --set sampler.name=euler_cfg_pp",
                                  "--set guidance.scale=0.6 --set sampler.name=dpmpp_2m_cfg_pp",
                                  "--set guidance.scale=3 --set guidance.cfg_zero_star.zero_steps=0",
                                  "--set guidance.scale=3 --set guidance.apg.eta=0 --set guidance.rescale=0.5",
                                  "--set guidance.scale=3 --set guidance.interval=[0.2,5]"}) {
    const Result g = run("generate --config configs/fmnist_flow.yaml --set batch=10 --set sampler.steps=3 " + extra +
                         " --set output.png= --set output.npy=g.npy");
    ASSERT_EQ(g.status, 0) << extra << ": " << g.err;
    EXPECT_TRUE(at::isfinite(scorch::read_npy((dir_ / "g.npy").string())).all().item<bool>()) << extra;
  }
}

// Declared network inputs (model.inputs) from .npy files, with classifier-free guidance;
// each bad input is one line naming the input, exit 2, no output.
TEST_F(Cli, DeclaredInputsFromFiles) {
  scorch::write_npy((dir_ / "ctx.npy").string(), at::randn({4, 3, 4}));
  scorch::write_npy((dir_ / "neg.npy").string(), at::zeros({3, 4}));
  scorch::write_npy((dir_ / "short.npy").string(), at::randn({3, 3, 4}));
  std::ofstream(dir_ / "in.yaml") << "batch: 4\nmodel:\n  type: torchscript\n  path: " << kFixtures
                                  << "/tensor_cond.pt\n  shape: [2, 3]\n  inputs:\n"
                                     "    - {name: context, file: ctx.npy, negative_file: neg.npy, shape: [3, 4]}\n"
                                     "    - {name: guidance, source: scalar, value: 3.5}\n"
                                     "guidance: {scale: 2}\nsampler: {name: dpmpp_2m, steps: 5}\noutput: {npy: out.npy}\n";
  const Result r = run("generate --config in.yaml");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(scorch::read_npy((dir_ / "out.npy").string()).sizes(), (std::vector<int64_t>{4, 2, 3}));
  fs::remove(dir_ / "out.npy");
  fs::remove(dir_ / "out.npy.json");
  expect_bad("generate --config in.yaml --set model.inputs.0.file=short.npy", "model.inputs 'context': 3 rows for a batch of 4");
  expect_bad("generate --config in.yaml --set model.inputs.0.file=nope.npy", "nope.npy");
  expect_bad("generate --config in.yaml --set model.inputs.0.name=ctx", "model.inputs[0] is 'ctx'");
  expect_bad("generate --config in.yaml --set model.inputs.1.value=nan", "model.inputs[1].value: expected a number");
  expect_bad("generate --config in.yaml --set model.inputs.2.value=1", "is not an index of that list (0 to 1)");
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

  // infill through the CLI: a template for every sequence, then one per sequence and pairs
  const Result t = run(base + " --set template=b_d_ --set output.npy=tpl.npy");
  ASSERT_EQ(t.status, 0) << t.err;
  const at::Tensor tt = scorch::read_npy((dir_ / "tpl.npy").string());
  EXPECT_TRUE((tt.select(1, 0) == 1).all().item<bool>() && (tt.select(1, 2) == 3).all().item<bool>()) << tt;
  for (const std::string& line : {std::string("b"), std::string("d")}) EXPECT_NE(t.out.find(line), std::string::npos);
  const Result per = run(base + " --set 'template=[a___, _b__, __c_, ___d, ab__, ____]' --set 'fixed=[[3, 4]]' "
                                "--set output.npy=per.npy");
  ASSERT_EQ(per.status, 0) << per.err;
  const at::Tensor pt = scorch::read_npy((dir_ / "per.npy").string());
  EXPECT_EQ(pt[0][0].item<int64_t>(), 0);
  EXPECT_EQ(pt[1][1].item<int64_t>(), 1);
  EXPECT_EQ(pt[2][2].item<int64_t>(), 2);
  EXPECT_EQ(pt[4][0].item<int64_t>(), 0);
  EXPECT_EQ(pt[4][1].item<int64_t>(), 1);
  EXPECT_TRUE((pt.select(1, 3) == 4).all().item<bool>()) << pt;  // fixed overrides the template's position 3
  expect_bad(base + " --set template=abcdef", "template: 'abcdef' has 6 characters; the model's sequences have L = 4");
  expect_bad(base + " --set template=ab", "'ab' has 2 characters, not L = 4, and the model has no pad character");
  expect_bad(base + " --set template=a?__", "character '?' at position 1");
}

// A class-conditional token network (tests/fixtures/class_tokens.pt: class c puts its mass
// on token c, the null label is uniform): per-sequence labels, guidance, the null label,
// and the bad inputs.
TEST_F(Cli, GenerateTokensWithClasses) {
  const std::string fx = std::string(SCORCH_FIXTURES) + "/class_tokens.pt";
  const std::string base = "generate --config configs/words.yaml --set model.path=" + fx +
                           " --set model.vocab=abcde --set model.length=4 --set model.mask_id=5 --set batch=4"
                           " --set model.num_classes=2 --set sampler.steps=4";
  const Result r = run(base + " --set 'cond=[0, 1, 1, 0]' --set guidance.scale=2 --set output.npy=c.npy");
  ASSERT_EQ(r.status, 0) << r.err;
  const at::Tensor tok = scorch::read_npy((dir_ / "c.npy").string());
  const at::Tensor want = at::tensor({0, 1, 1, 0}, at::kLong).unsqueeze(1).expand({4, 4});
  EXPECT_TRUE(at::equal(tok, want)) << tok;
  EXPECT_NE(r.out.find("aaaa"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bbbb"), std::string::npos) << r.out;
  const Result u = run(base + " --set batch=200 --set output.npy=u.npy");  // no cond: the null label, uniform
  ASSERT_EQ(u.status, 0) << u.err;
  const at::Tensor ut = scorch::read_npy((dir_ / "u.npy").string());
  for (int64_t v = 0; v < 5; ++v) EXPECT_GT((ut == v).sum().item<int64_t>(), 100) << v;
  expect_bad(base + " --set cond=3", "cond: label 3 is out of range for model.num_classes = 2");
  expect_bad(base + " --set 'cond=[0, 1]'", "cond");
  expect_bad(base + " --set model.num_classes=0 --set cond=1", "cond: the model takes no condition");
  expect_bad(base + " --set model.num_classes=0", "a class-conditional network needs model.num_classes");
  const std::string plain = "generate --config configs/words.yaml --set model.path=" + std::string(SCORCH_FIXTURES) +
                            "/uniform_tokens.pt --set model.vocab=abcde --set model.length=4 --set model.mask_id=5";
  expect_bad(plain + " --set guidance.scale=3", "guidance.scale: classifier-free guidance needs a class-conditional");
  expect_bad(plain + " --set model.num_classes=2", "expected forward(tokens, t, labels)");
}

// A prompt-conditional token network: the prompt goes through a text encoder into the declared
// context input; per-sequence prompts, guidance against a negative prompt, and bad input.
TEST_F(Cli, GenerateTokensWithPrompts) {
  const std::string fx = std::string(SCORCH_FIXTURES);
  const std::string base = "generate --config configs/words.yaml --set model.path=" + fx + "/prompt_tokens.pt"
                           " --set model.vocab=abcde --set model.length=4 --set model.mask_id=5 --set sampler.steps=4"
                           " --set 'model.inputs=[{name: context, source: prompt, shape: [5, 8]}]' --set text_encoder.path=" +
                           fx + "/tiny_text.pt --set text_encoder.length=5 --set text_encoder.chars=abcdefghijklmnopqrstuvwxyz-";
  const Result a = run(base + " --set batch=20 --set prompt=boot --set output.npy=a.npy");
  ASSERT_EQ(a.status, 0) << a.err;
  const Result b = run(base + " --set batch=20 --set prompt=bag --set output.npy=b.npy");
  ASSERT_EQ(b.status, 0) << b.err;
  const at::Tensor ta = scorch::read_npy((dir_ / "a.npy").string()), tb = scorch::read_npy((dir_ / "b.npy").string());
  EXPECT_FALSE(at::equal(ta, tb));  // the prompt reaches the network
  // one prompt per sequence: sequence 1 prompted "boot" is sequence 1 of the all-"boot" run
  const Result per = run(base + " --set batch=3 --set 'prompt=[bag, boot, a]' --set output.npy=p.npy");
  ASSERT_EQ(per.status, 0) << per.err;
  EXPECT_TRUE(at::equal(scorch::read_npy((dir_ / "p.npy").string())[1], ta[1]));
  const Result g = run(base + " --set batch=20 --set prompt=boot --set negative_prompt=bag --set guidance.scale=3 "
                       "--set output.npy=g.npy");
  ASSERT_EQ(g.status, 0) << g.err;
  EXPECT_FALSE(at::equal(scorch::read_npy((dir_ / "g.npy").string()), ta));
  const Result longer = run(base + " --set batch=2 --set prompt=bootsandbags");
  EXPECT_EQ(longer.status, 0) << longer.err;
  EXPECT_NE(longer.err.find("note: "), std::string::npos) << longer.err;  // truncated to the encoder's 5 tokens, said once
  expect_bad(base + " --set batch=3 --set 'prompt=[bag, boot]'", "prompt: 2 prompts for batch 3");
  expect_bad(base + " --set prompt=boot! ", "prompt");
  expect_bad(base, "prompt: missing");
  expect_bad(base + " --set prompt=boot --set text_encoder=", "prompt: needs a text_encoder section");
  expect_bad(base + " --set prompt=boot --set model.inputs=", "text_encoder: no model input takes its output");
  expect_bad(base + " --set prompt=boot --set 'model.inputs=[{name: text, source: prompt, shape: [5, 8]}]'",
             "argument 3 of forward is 'context'");
  expect_bad(base + " --set prompt=boot --set 'model.inputs=[{name: context, source: prompt, shape: [4, 8]}]'",
             "context");
  expect_bad(base + " --set prompt=boot --set model.num_classes=2", "model.num_classes: a network with declared inputs");
  expect_bad(base + " --set batch=3 --set prompt=boot --set guidance.scale=2 --set 'negative_prompt=[a, b]'",
             "negative_prompt: 2 prompts for batch 3");
  expect_bad(base + " --set prompt=boot --set cond=1", "cond: the model's declared inputs");
}

// distill-lsd on a model whose answer is known: with uniform p every q_c and every teacher
// distribution are uniform, so the reverse KL is 0 for any c and the coefficients stay at 1;
// the lsd sampler reads the file, and a file for another step count is refused.
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
    EXPECT_NEAR(c, 1.0, 1e-3) << "step " << n;
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

// Reads `key: [a, b, ...]` from a YAML file written by distill-lsd.
static std::vector<double> yaml_list(const fs::path& file, const std::string& key) {
  std::ifstream in(file.string());
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ": [", 0) != 0) continue;
    std::stringstream ss(line.substr(key.size() + 3));
    std::vector<double> v;
    double c;
    char sep;
    while (ss >> c) {
      v.push_back(c);
      ss >> sep;
    }
    return v;
  }
  return {};
}

// distill-lsd recovers a known sharpening. The fixture's prediction for a masked position is
// softmax(beta z) with beta = 2 - m, m the masked fraction of the sequence. Under the euler
// teacher on the log-linear schedule each position is still masked at grid time t_k with
// probability t_k, so given that one position is masked, m = t_k + (1 - t_k) / L in
// expectation; a position masked at t_a is unmasked in teacher step k >= a with probability
// (t_k - t_k+1) / t_a (the last step takes what is left), from softmax(beta' z). With
// --target step a position still masked at the student's next time b keeps the distribution
// at b instead. The reverse KL to those distributions is minimised by their geometric mean,
// softmax(E[beta'] z), which is q_c for c = E[beta'] / beta_a: exact up to the teacher's
// sampling noise and the spread of m across sequences (L = 64), hence the 0.005 tolerance.
// With --learn-step-sizes the fitted d makes the student's unmasking probability the
// teacher's (t_a - b) / t_a (within 3%).
TEST_F(Cli, DistillLsdRecoversKnownSharpening) {
  const std::string fx = std::string(SCORCH_FIXTURES) + "/tempered_tokens.pt";
  {
    std::ofstream f((dir_ / "tok.yaml").string());
    f << "model: {type: tokens, path: " << fx << ", vocab: abcde, length: 64}\n"
      << "schedule: {type: loglinear, eps: 0.001}\n";
  }
  const int n = 4, K = 128, L = 64;
  const double t_end = 1e-5, eps = 0.001;
  auto grid = [&](int k) { return 1.0 + (t_end - 1.0) * k / K; };
  auto beta = [&](double t) { return 2.0 - (t + (1.0 - t) / L); };
  const std::vector<double> z = {-1.5, -0.75, 0.0, 0.75, 1.5};
  for (const std::string target : {"final", "step"}) {
    SCOPED_TRACE("--target " + target);
    const Result r = run("distill-lsd --config tok.yaml --steps 4 --teacher-steps 128 --batch 1000 --iters 400 "
                         "--learn-step-sizes --target " + target + " --out c.yaml");
    ASSERT_EQ(r.status, 0) << r.err;
    const std::vector<double> c = yaml_list(dir_ / "c.yaml", "coefficients"), d = yaml_list(dir_ / "c.yaml", "step_scales");
    ASSERT_EQ(c.size(), size_t(n));
    ASSERT_EQ(d.size(), size_t(n));
    for (int i = 0; i < n; ++i) {
      const int ka = i * K / n, kb = (i + 1) * K / n;
      const double ta = grid(ka), b = grid(kb);
      const int k_end = target == "final" ? K : kb;
      double mean_beta = 0.0;  // E beta' given masked at t_a
      for (int k = ka; k < k_end; ++k) {
        const bool last = k + 1 == K;  // the teacher's last step unmasks everything left
        mean_beta += (last ? grid(k) : grid(k) - grid(k + 1)) / ta * beta(grid(k));
      }
      if (k_end < K) mean_beta += b / ta * beta(b);
      EXPECT_NEAR(c[size_t(i)], mean_beta / beta(ta), 0.005) << "step " << i + 1;
      if (i + 1 == n) continue;
      // P(unmask) = d (t_a - b) sigma(t_a) sum_v (p_v / (e^sigma_bar - 1))^c, p = softmax(beta_a z).
      const double alpha = 1.0 - (1.0 - eps) * ta, shift = std::log((1.0 - alpha) / alpha);
      double norm = 0.0, sum_pc = 0.0;
      for (double zv : z) norm += std::exp(beta(ta) * zv);
      for (double zv : z) sum_pc += std::exp(c[size_t(i)] * (beta(ta) * zv - std::log(norm) - shift));
      const double unmask = d[size_t(i)] * (ta - b) * (1.0 - eps) / alpha * sum_pc;
      EXPECT_NEAR(unmask / ((ta - b) / ta), 1.0, 0.03) << "step " << i + 1;
    }
    EXPECT_GT(c[0], 1.1);  // the known answer is a real sharpening, not the trivial c = 1
  }
  expect_bad("distill-lsd --config tok.yaml --steps 4 --teacher-steps 128 --target later --out e.yaml", "--target");
}

// --target joint on the same fixture. The teacher reveals the positions of one student step one
// after another, and the fixture's beta grows by 1/L with each revealed token, so its joint law
// on the step's set S (s tokens, m masked at t_a) is a product of softmax(beta_k z) with
// beta_k = beta_0 + k / L. The student's q_c = softmax(c beta_0 z) for every position, and the
// reverse KL sum_k KL(q_c || softmax(beta_k z)) has derivative in c
//   beta_0 Var_{c beta_0}(z) sum_{k < s} (c beta_0 - beta_k).
// Its expectation over m ~ Bin(L, t_a) and s ~ Bin(m, (t_a - t_b) / t_a) (s = m in the last
// step, which unmasks everything) is zero at the known c.
TEST_F(Cli, DistillLsdJointMatchesTheClosedFormMinimiser) {
  const std::string fx = std::string(SCORCH_FIXTURES) + "/tempered_tokens.pt";
  {
    std::ofstream f((dir_ / "tok.yaml").string());
    f << "model: {type: tokens, path: " << fx << ", vocab: abcde, length: 64}\n"
      << "schedule: {type: loglinear, eps: 0.001}\n";
  }
  const int n = 4, K = 128, L = 64;
  const double t_end = 1e-5;
  auto grid = [&](int k) { return 1.0 + (t_end - 1.0) * k / K; };
  const std::vector<double> z = {-1.5, -0.75, 0.0, 0.75, 1.5};
  auto var = [&](double a) {
    double w = 0, m1 = 0, m2 = 0;
    for (double zv : z) w += std::exp(a * zv), m1 += zv * std::exp(a * zv), m2 += zv * zv * std::exp(a * zv);
    return m2 / w - (m1 / w) * (m1 / w);
  };
  auto binom = [](int N, int k, double p) {
    if (p <= 0.0) return k == 0 ? 1.0 : 0.0;
    if (p >= 1.0) return k == N ? 1.0 : 0.0;
    return std::exp(std::lgamma(N + 1.0) - std::lgamma(k + 1.0) - std::lgamma(N - k + 1.0) + k * std::log(p) +
                    (N - k) * std::log1p(-p));
  };
  const Result r = run("distill-lsd --config tok.yaml --steps 4 --teacher-steps 128 --batch 1000 --iters 400 "
                       "--target joint --out j.yaml");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<double> c = yaml_list(dir_ / "j.yaml", "coefficients");
  ASSERT_EQ(c.size(), size_t(n));
  for (int i = 0; i < n; ++i) {
    const double ta = grid(i * K / n), tb = grid((i + 1) * K / n);
    auto dloss = [&](double cc) {
      double sum = 0.0;
      for (int m = 1; m <= L; ++m) {
        const double pm = binom(L, m, ta), b0 = 1.0 + double(L - m) / L;
        if (pm < 1e-15) continue;
        for (int s = 2; s <= m; ++s) {
          const double ps = i + 1 == n ? (s == m ? 1.0 : 0.0) : binom(m, s, (ta - tb) / ta);
          sum += pm * ps * b0 * var(cc * b0) * (s * (cc - 1.0) * b0 - s * (s - 1.0) / (2.0 * L));
        }
      }
      return sum;
    };
    double lo = 0.5, hi = 3.0;  // dloss < 0 below the minimiser, > 0 above
    for (int it = 0; it < 60; ++it) (dloss(0.5 * (lo + hi)) > 0.0 ? hi : lo) = 0.5 * (lo + hi);
    EXPECT_NEAR(c[size_t(i)], 0.5 * (lo + hi), 0.006) << "step " << i + 1;
    EXPECT_GT(c[size_t(i)], 1.05) << "step " << i + 1;  // a real sharpening, not the trivial c = 1
  }
  // The reverse KL per position falls with the fit; a one-position step (s = 1) would give c = 1.
  const std::vector<double> before = yaml_list(dir_ / "j.yaml", "loss_before"), after = yaml_list(dir_ / "j.yaml", "loss_after");
  for (int i = 0; i < n; ++i) EXPECT_LT(after[size_t(i)], 0.5 * before[size_t(i)]);
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

namespace {

// LibTorch's own warnings (a network's warnings.warn, raised on the chunked evaluation's
// worker threads too) never print before scorch's lines: with -q nothing is printed; without,
// each distinct warning is one note after the run.
class CliWarnings : public ::testing::Test {};

TEST_F(CliWarnings, LibTorchWarningsBecomeOneNote) {
  const std::string dir = (fs::temp_directory_path() / ("scorch_warns_" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  const std::string base = "cd '" + dir + "' && '" + kCli + "' generate --set cond= --set model.type=torchscript --set model.path=" +
                           kFixtures + "/warns.pt --set model.shape=[2,3] --set model.time_input=t --set batch=8 "
                           "--set output.png= --set output.npy=w.npy ";
  const auto err_of = [&](const std::string& flags) {
    EXPECT_EQ(std::system((base + flags + " 2> err.txt").c_str()), 0);
    std::ifstream in(dir + "/err.txt");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  EXPECT_EQ(err_of("-q"), "");
  EXPECT_EQ(err_of("-q --threads 1"), "");
  const std::string loud = err_of("");
  const std::string note = "note: LibTorch warned: this fixture always warns\n";
  ASSERT_NE(loud.find(note), std::string::npos) << loud;
  EXPECT_EQ(loud.find(note), loud.rfind(note)) << loud;
  EXPECT_EQ(loud.find("Warning:"), std::string::npos) << loud;
  fs::remove_all(dir);
}

}  // namespace

namespace {

// An allocation that fails under bad input (a batch this machine cannot hold, below the
// up-front estimate's limit) is bad input too: exit 2, one line, nothing written.
TEST(CliMemory, FailedAllocationIsBadInput) {
  const std::string dir = (fs::temp_directory_path() / ("scorch_oom_" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  const std::string cmd = "cd '" + dir + "' && (ulimit -v 3000000; exec '" + kCli +
                          "' generate -q --config configs/fmnist_gaussian.yaml --set batch=600000 --set output.png= "
                          "--set output.npy=big.npy) 2> err.txt";
  const int raw = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(raw) && WEXITSTATUS(raw) == 2) << raw;
  std::ifstream in(dir + "/err.txt");
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str().rfind("scorch: error: out of memory (", 0), 0u) << ss.str();
  EXPECT_EQ(ss.str().find('\n'), ss.str().size() - 1) << ss.str();
  EXPECT_FALSE(fs::exists(dir + "/big.npy"));
  fs::remove_all(dir);
}

}  // namespace
