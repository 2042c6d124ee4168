// The example configs for users' own SD 1.5, SDXL and Flux exports (configs/examples/), run
// on randomly initialised networks with the real interfaces and shapes
// (tests/fixtures/shaped/, tools/scripts/make_shaped_models.py) through the CLI and the C
// API: plumbing, shapes, decoding, bad conditioning. No claim on image quality.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "scorch/io.h"
#include "scorch/scorch.h"

namespace fs = std::filesystem;

namespace {

const std::string kCli = SCORCH_CLI;
const std::string kSource = SCORCH_SOURCE_DIR;
const std::string kShaped = std::string(SCORCH_FIXTURES) + "/shaped";

struct Example {
  std::string name;  // configs/examples/<name>.yaml
  std::vector<std::pair<std::string, std::vector<int64_t>>> files;  // the embeddings it reads
  std::string model, decoder;
  std::vector<int64_t> image;
};

const std::vector<Example> kExamples = {
    {"sd15", {{"prompt_embeds", {77, 768}}, {"negative_prompt_embeds", {77, 768}}}, "sd15_unet", "sd_decoder", {3, 512, 512}},
    {"sdxl",
     {{"prompt_embeds", {77, 2048}},
      {"negative_prompt_embeds", {77, 2048}},
      {"pooled_prompt_embeds", {1280}},
      {"negative_pooled_prompt_embeds", {1280}},
      {"time_ids", {6}}},
     "sdxl_unet",
     "sd_decoder",
     {3, 1024, 1024}},
    {"flux",
     {{"t5_embeds", {512, 4096}}, {"clip_pooled", {768}}, {"img_ids", {1024, 3}}, {"txt_ids", {512, 3}}},
     "flux_transformer",
     "flux_decoder",
     {3, 512, 512}},
};

class ShapedModels : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("scorch_shaped_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write_inputs(const Example& e, int64_t rows = 0) {
    at::manual_seed(0);
    for (const auto& f : e.files) {
      std::vector<int64_t> shape = f.second;
      if (rows > 0) shape.insert(shape.begin(), rows);
      scorch::write_npy((dir_ / (f.first + ".npy")).string(), at::randn(shape));
    }
  }
  std::vector<std::string> overrides(const Example& e) const {
    return {"model.path=" + kShaped + "/" + e.model + ".pt", "decoder.path=" + kShaped + "/" + e.decoder + ".pt",
            "sampler.steps=2"};
  }
  int run(const std::string& args, std::string* err) {
    const std::string e = (dir_ / "stderr.txt").string();
    const int raw = std::system(("cd '" + dir_.string() + "' && '" + kCli + "' " + args + " 2> '" + e + "'").c_str());
    std::ifstream in(e);
    std::stringstream ss;
    ss << in.rdbuf();
    *err = ss.str();
    return WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  }
  fs::path dir_;
};

TEST_F(ShapedModels, EachExampleGeneratesThroughTheCli) {
  for (const Example& e : kExamples) {
    write_inputs(e);
    std::string args = "generate --config '" + kSource + "/configs/examples/" + e.name + ".yaml'";
    for (const auto& o : overrides(e)) args += " --set " + o;
    std::string err;
    ASSERT_EQ(run(args + " --set output.npy=out.npy --set output.latents=lat.npy", &err), 0) << e.name << ": " << err;
    EXPECT_TRUE(fs::exists(dir_ / (e.name + ".png"))) << e.name;
    const at::Tensor img = scorch::read_npy((dir_ / "out.npy").string());
    std::vector<int64_t> want = {1};
    want.insert(want.end(), e.image.begin(), e.image.end());
    EXPECT_EQ(img.sizes().vec(), want) << e.name;
    EXPECT_TRUE(at::isfinite(img).all().item<bool>()) << e.name;
    EXPECT_NE(err.find("(network "), std::string::npos) << err;
    // The output's record runs again to the same samples (relative input files resolve in this directory).
    ASSERT_EQ(run("generate --config out.json --set output.npy=again.npy", &err), 0) << e.name << ": " << err;
    EXPECT_TRUE(at::equal(scorch::read_npy((dir_ / "again.npy").string()), img)) << e.name;
  }
}

TEST_F(ShapedModels, EachExampleGeneratesThroughTheCApi) {
  for (const Example& e : kExamples) {
    write_inputs(e);
    const std::string config = kSource + "/configs/examples/" + e.name + ".yaml";
    const std::vector<std::string> sets = overrides(e);
    std::vector<const char*> raw;
    // The config's embedding files are relative: they resolve against the working directory.
    const std::string cwd = fs::current_path().string();
    fs::current_path(dir_);
    for (const auto& s : sets) raw.push_back(s.c_str());
    scorch_pipeline_params params = scorch_pipeline_params_init();
    params.config_path = config.c_str();
    params.overrides = raw.data();
    params.n_overrides = int(raw.size());
    scorch_pipeline* p = nullptr;
    ASSERT_EQ(scorch_pipeline_create(&params, &p), SCORCH_OK) << e.name << ": " << scorch_last_error(nullptr);
    scorch_result* r = nullptr;
    ASSERT_EQ(scorch_generate(p, &r), SCORCH_OK) << e.name << ": " << scorch_last_error(p);
    fs::current_path(cwd);
    ASSERT_EQ(scorch_result_rank(r), 4);
    for (int a = 1; a < 4; ++a) EXPECT_EQ(scorch_result_dim(r, a), e.image[size_t(a - 1)]) << e.name;
    scorch_result_free(r);
    scorch_pipeline_free(p);
  }
}

TEST_F(ShapedModels, MismatchedConditioningBatchIsOneError) {
  const Example& sd = kExamples[0];
  write_inputs(sd, 3);  // three rows of embeddings for a batch of 2
  std::string args = "generate --config '" + kSource + "/configs/examples/sd15.yaml' --set batch=2";
  for (const auto& o : overrides(sd)) args += " --set " + o;
  std::string err;
  EXPECT_EQ(run(args, &err), 2);
  EXPECT_NE(err.find("model.inputs 'encoder_hidden_states': 3 rows for a batch of 2"), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(dir_ / "sd15.png"));
}

}  // namespace
