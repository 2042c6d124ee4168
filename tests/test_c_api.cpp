// The C API: results, every documented error path, cancellation from another thread,
// concurrency rules, and memory over 1,000 create-generate-free cycles.
#include "scorch/scorch.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <filesystem>
#include "scorch/provenance.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <sys/stat.h>
#include <unistd.h>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "scorch/io.h"

namespace {

const std::string kGaussian = std::string(SCORCH_SOURCE_DIR) + "/configs/fmnist_gaussian.yaml";

// Parameters for the Gaussian config with `--set` overrides (kept alive with the params).
struct GaussianParams {
  std::vector<const char*> sets;
  scorch_pipeline_params params = scorch_pipeline_params_init();
  explicit GaussianParams(std::vector<const char*> s, void* user = nullptr) : sets(std::move(s)) {
    params.config_path = kGaussian.c_str();
    params.overrides = sets.data();
    params.n_overrides = int(sets.size());
    params.user = user;
  }
};

scorch_pipeline* create_from(const scorch_pipeline_params& params) {
  scorch_pipeline* out = nullptr;
  EXPECT_EQ(scorch_pipeline_create(&params, &out), SCORCH_OK) << scorch_last_error(nullptr);
  return out;
}

scorch_pipeline* create(std::vector<const char*> sets) { return create_from(GaussianParams(std::move(sets)).params); }

std::vector<float> samples(scorch_pipeline* p, int64_t* nfe = nullptr) {
  scorch_result* r = nullptr;
  EXPECT_EQ(scorch_generate(p, &r), SCORCH_OK) << scorch_last_error(p);
  if (!r) return {};
  int64_t n = 1;
  for (int a = 0; a < scorch_result_rank(r); ++a) n *= scorch_result_dim(r, a);
  std::vector<float> v(scorch_result_data(r), scorch_result_data(r) + n);
  if (nfe) *nfe = scorch_result_nfe(r);
  scorch_result_free(r);
  return v;
}

TEST(CApi, GeneratesWithShapeAndNfe) {
  EXPECT_EQ(scorch_abi_version(), SCORCH_ABI_VERSION);
  scorch_pipeline* p = create({"batch=3", "sampler.steps=4", "output.png="});
  ASSERT_NE(p, nullptr);
  scorch_result* r = nullptr;
  ASSERT_EQ(scorch_generate(p, &r), SCORCH_OK) << scorch_last_error(p);
  ASSERT_EQ(scorch_result_rank(r), 4);
  EXPECT_EQ(scorch_result_dim(r, 0), 3);
  EXPECT_EQ(scorch_result_dim(r, 3), 28);
  EXPECT_EQ(scorch_result_dim(r, 4), 0);  // out of range
  EXPECT_EQ(scorch_result_nfe(r), 8);     // heun: 2 per step
  for (int64_t i = 0; i < 3 * 784; ++i) ASSERT_TRUE(std::isfinite(scorch_result_data(r)[i]));
  EXPECT_STREQ(scorch_last_error(p), "");
  scorch_result_free(r);
  scorch_pipeline_free(p);
}

// The config's output files are written as the CLI writes them, equal to the returned samples.
TEST(CApi, WritesTheConfiguredOutputs) {
  const std::string npy = (std::filesystem::temp_directory_path() / "scorch_capi_out.npy").string();
  const std::string key = "output.npy=" + npy;
  scorch_pipeline* p = create({"batch=2", "sampler.steps=3", "output.png=", key.c_str()});
  ASSERT_NE(p, nullptr);
  scorch_result* r = nullptr;
  ASSERT_EQ(scorch_generate(p, &r), SCORCH_OK) << scorch_last_error(p);
  const at::Tensor written = scorch::read_npy(npy);
  ASSERT_EQ(written.numel(), 2 * 784);
  EXPECT_TRUE(at::equal(written.reshape({-1}), at::from_blob(const_cast<float*>(scorch_result_data(r)), {2 * 784}, at::kFloat)));
  EXPECT_TRUE(std::filesystem::exists(scorch::provenance_json_path(npy)));
  std::filesystem::remove(npy);
  std::filesystem::remove(scorch::provenance_json_path(npy));
  scorch_result_free(r);
  scorch_pipeline_free(p);
}

// The preview gets the latest x0 after every step, shaped [batch, *shape]; the last one
// is the result's data prediction (close to the samples at t_end).
TEST(CApi, PreviewOfX0EveryStep) {
  struct Seen {
    int calls = 0;
    std::vector<int64_t> shape;
    std::vector<float> last;
  } seen;
  GaussianParams gp({"batch=2", "output.png=", "sampler.name=dpmpp_2m", "sampler.steps=6"}, &seen);
  gp.params.preview = [](void* user, int, const float* x0, int rank, const int64_t* shape) {
    auto* s = static_cast<Seen*>(user);
    ++s->calls;
    s->shape.assign(shape, shape + rank);
    s->last.assign(x0, x0 + 2 * 784);
  };
  scorch_pipeline* p = create_from(gp.params);
  ASSERT_NE(p, nullptr);
  const std::vector<float> x = samples(p);
  EXPECT_EQ(seen.calls, 6);
  EXPECT_EQ(seen.shape, (std::vector<int64_t>{2, 1, 28, 28}));
  double err = 0;
  for (size_t i = 0; i < x.size(); ++i) err = std::max(err, double(std::abs(x[i] - seen.last[i])));
  EXPECT_LT(err, 0.2);  // the last preview is x0 at the last evaluated time, the samples are at t_end
  scorch_pipeline_free(p);
}

TEST(CApi, ConfigFromTextAndLogCallback) {
  std::ifstream in(kGaussian);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  scorch_pipeline_params params = scorch_pipeline_params_init();
  params.config_yaml = text.c_str();
  const char* sets[] = {"output.png=", "batch=2", "sampler.name=teleport",
                        "sampler.gaussian=models/fmnist_gaussian.safetensors", "sampler.sigma_skip=5"};
  params.overrides = sets;
  params.n_overrides = 5;
  std::vector<std::string> lines;
  params.log = [](void* user, const char* line) { static_cast<std::vector<std::string>*>(user)->push_back(line); };
  params.user = &lines;
  scorch_pipeline* p = nullptr;
  ASSERT_EQ(scorch_pipeline_create(&params, &p), SCORCH_OK) << scorch_last_error(nullptr);
  samples(p);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("skip point"), std::string::npos);
  scorch_pipeline_free(p);
}

TEST(CApi, EveryErrorPathReturnsItsStatusAndMessage) {
  scorch_pipeline* p = nullptr;
  EXPECT_EQ(scorch_pipeline_create(nullptr, &p), SCORCH_INVALID_ARGUMENT);
  EXPECT_NE(std::string(scorch_last_error(nullptr)).find("params is NULL"), std::string::npos);
  scorch_pipeline_params params = scorch_pipeline_params_init();
  EXPECT_EQ(scorch_pipeline_create(&params, nullptr), SCORCH_INVALID_ARGUMENT);
  params.n_overrides = 2;  // with overrides NULL
  EXPECT_EQ(scorch_pipeline_create(&params, &p), SCORCH_INVALID_ARGUMENT);
  params.n_overrides = 0;
  params.config_path = "/nonexistent.yaml";
  EXPECT_EQ(scorch_pipeline_create(&params, &p), SCORCH_BAD_INPUT);
  EXPECT_EQ(p, nullptr);
  EXPECT_NE(std::string(scorch_last_error(nullptr)).find("nonexistent.yaml"), std::string::npos);
  params.config_path = kGaussian.c_str();
  const char* bad[] = {"sampler.name=nope"};
  params.overrides = bad;
  params.n_overrides = 1;
  EXPECT_EQ(scorch_pipeline_create(&params, &p), SCORCH_BAD_INPUT);
  EXPECT_NE(std::string(scorch_last_error(nullptr)).find("unknown sampler 'nope'"), std::string::npos);
  const char* with_null[] = {"batch=2", nullptr};  // a NULL entry is a NULL pointer, as the docs say
  params.overrides = with_null;
  params.n_overrides = 2;
  EXPECT_EQ(scorch_pipeline_create(&params, &p), SCORCH_INVALID_ARGUMENT);
  EXPECT_NE(std::string(scorch_last_error(nullptr)).find("overrides[1] is NULL"), std::string::npos);
  params.config_path = "/dev/zero";  // not a regular file: refused at once
  params.n_overrides = 0;
  EXPECT_EQ(scorch_pipeline_create(&params, &p), SCORCH_BAD_INPUT);
  EXPECT_NE(std::string(scorch_last_error(nullptr)).find("is a character device"), std::string::npos);
  params.config_path = kGaussian.c_str();
  params.overrides = bad;
  params.n_overrides = 1;
  params.config_path = nullptr;
  params.config_yaml = "model: [unclosed";
  params.n_overrides = 0;
  EXPECT_EQ(scorch_pipeline_create(&params, &p), SCORCH_BAD_INPUT);
  EXPECT_EQ(scorch_generate(nullptr, nullptr), SCORCH_INVALID_ARGUMENT);
  p = create({"batch=1", "output.png="});
  EXPECT_EQ(scorch_generate(p, nullptr), SCORCH_INVALID_ARGUMENT);
  EXPECT_NE(std::string(scorch_last_error(p)).find("out is NULL"), std::string::npos);
  scorch_pipeline_free(p);
  scorch_pipeline_free(nullptr);
  scorch_result_free(nullptr);
  scorch_cancel(nullptr);
  EXPECT_EQ(scorch_result_data(nullptr), nullptr);
}

// The bad-input suite's C API part (tests/test_bad_input.cpp has the CLI's): configs and
// overrides that are bad in every way the CLI's are, token models, sizes that overflow or
// cannot be allocated, bad host buffers' shapes and dtypes. Each returns its status with a
// message naming the key, quickly and without reading an endless input, and no call
// creates a file.
TEST(CApi, BadInputStatuses) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("scorch_capi_bad_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string fifo = (dir / "in.fifo").string(), folder = (dir / "folder").string();
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  fs::create_directories(folder);
  const std::string fixtures = SCORCH_FIXTURES;
  struct Create {
    const char* path;
    std::string yaml;
    std::vector<std::string> sets;
    scorch_status status;
    std::string fragment;
  };
  const std::string out = "output.npy=" + (dir / "x.npy").string();
  const std::vector<Create> creates = {
      {"/dev/zero", "", {}, SCORCH_BAD_INPUT, "'/dev/zero' is a character device"},
      {"/dev/urandom", "", {}, SCORCH_BAD_INPUT, "'/dev/urandom' is a character device"},
      {fifo.c_str(), "", {}, SCORCH_BAD_INPUT, "is a FIFO"},
      {folder.c_str(), "", {}, SCORCH_BAD_INPUT, "is a directory"},
      {"", "", {}, SCORCH_BAD_INPUT, "config_path: empty path"},
      {nullptr, "batch: 1\nbatch: 2\n", {}, SCORCH_BAD_INPUT, "duplicate key 'batch'"},
      {nullptr, "- a list\n", {}, SCORCH_BAD_INPUT, "mapping"},
      {nullptr, "model: {type: tokens, path: " + fixtures + "/uniform_tokens.pt, vocab: 5, length: 4, num_classes: 2}\n", {},
       SCORCH_BAD_INPUT, "expected forward(tokens, t, labels)"},
      {nullptr, "model: {type: tokens, path: " + fixtures + "/uniform_tokens.pt, vocab: abcde, length: 4}\n", {"template=abcdefg"},
       SCORCH_BAD_INPUT, "template: 'abcdefg' has 7 characters"},
      {kGaussian.c_str(), "", {"batch=100000000000"}, SCORCH_BAD_INPUT, "batch: expected an integer from 1 to 16777216"},
      {kGaussian.c_str(), "", {"batch=10000000"}, SCORCH_BAD_INPUT, "batch: 10000000 samples"},
      {kGaussian.c_str(), "", {"sampler.steps=0"}, SCORCH_BAD_INPUT, "sampler.steps"},
      {kGaussian.c_str(), "", {"sampler.rho=1e300"}, SCORCH_BAD_INPUT, "sampler.rho: expected a number from 0 to 1000"},
      {kGaussian.c_str(), "", {"guidance.scale=1e300"}, SCORCH_BAD_INPUT, "guidance.scale"},
      {kGaussian.c_str(), "", {"init_noise=/dev/zero"}, SCORCH_BAD_INPUT, "init_noise: '/dev/zero'"},
      {kGaussian.c_str(), "", {"init_noise=" + fifo}, SCORCH_BAD_INPUT, "init_noise"},
      {kGaussian.c_str(), "", {"output.npy=" + fifo}, SCORCH_BAD_INPUT, "output.npy"},
      {kGaussian.c_str(), "", {"output.png=" + (dir / "x.jpg").string()}, SCORCH_BAD_INPUT, "does not end in .png"},
      {kGaussian.c_str(), "", {"model.path=/dev/zero"}, SCORCH_BAD_INPUT, "model.path"},
      {kGaussian.c_str(), "", {"model.rank=-1"}, SCORCH_BAD_INPUT, "model.rank"},
      {kGaussian.c_str(), "", {"no_equals_sign"}, SCORCH_BAD_INPUT, "no_equals_sign"},
      {kGaussian.c_str(), "", {"model.type=torchscript", "model.path=" + fixtures + "/gaussian_eps.pt",
                               "model.shape=[4294967296,4294967296]", out},
       SCORCH_BAD_INPUT, "model.shape"},
  };
  for (const auto& c : creates) {
    std::vector<const char*> sets;
    for (const auto& s : c.sets) sets.push_back(s.c_str());
    scorch_pipeline_params params = scorch_pipeline_params_init();
    params.config_path = c.path;
    params.config_yaml = c.path ? nullptr : c.yaml.c_str();
    params.overrides = sets.data();
    params.n_overrides = int(sets.size());
    scorch_pipeline* p = nullptr;
    const auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(scorch_pipeline_create(&params, &p), c.status) << c.fragment;
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0) << c.fragment;
    EXPECT_EQ(p, nullptr);
    EXPECT_NE(std::string(scorch_last_error(nullptr)).find(c.fragment), std::string::npos)
        << c.fragment << "\ngot: " << scorch_last_error(nullptr);
  }
  // Host buffers: shapes that overflow, negative or zero sizes, ranks out of range, unknown
  // dtypes and names. The data pointer is one float: a shape the library accepted without
  // checking would read past it (AddressSanitizer in tools/asan_check.sh).
  scorch_pipeline* p = create({"batch=2", "output.png="});
  ASSERT_NE(p, nullptr);
  float one = 0.5f;
  const int64_t overflow[] = {int64_t(1) << 40, int64_t(1) << 40, 4}, negative[] = {2, -1, 28, 28},
                zero[] = {0, 1, 28, 28}, wrong[] = {2, 1, 27, 28};
  struct Call {
    int rank;
    const int64_t* shape;
    double strength;
    scorch_status status;
    const char* fragment;
  };
  for (const Call& c : std::vector<Call>{{3, overflow, 0.5, SCORCH_BAD_INPUT, "is too large"},
                                         {4, negative, 0.5, SCORCH_INVALID_ARGUMENT, "positive"},
                                         {4, zero, 0.5, SCORCH_INVALID_ARGUMENT, "positive"},
                                         {4, wrong, 0.5, SCORCH_BAD_INPUT, "init_image: shape [2, 1, 27, 28]"},
                                         {9, wrong, 0.5, SCORCH_INVALID_ARGUMENT, "rank"},
                                         {-1, wrong, 0.5, SCORCH_INVALID_ARGUMENT, "rank"},
                                         {4, nullptr, 0.5, SCORCH_INVALID_ARGUMENT, "shape"},
                                         {0, nullptr, 0.5, SCORCH_INVALID_ARGUMENT, "rank"}}) {
    EXPECT_EQ(scorch_pipeline_set_init_image(p, &one, c.rank, c.shape, nullptr, c.strength), c.status) << c.rank;
    EXPECT_NE(std::string(scorch_last_error(p)).find(c.fragment), std::string::npos) << scorch_last_error(p);
  }
  const int64_t ok[] = {1, 28, 28};
  std::vector<float> image(784, 0.1f);
  EXPECT_EQ(scorch_pipeline_set_init_image(p, image.data(), 3, ok, nullptr, 7.0), SCORCH_BAD_INPUT);
  EXPECT_NE(std::string(scorch_last_error(p)).find("strength"), std::string::npos) << scorch_last_error(p);
  EXPECT_EQ(scorch_pipeline_set_init_image(p, image.data(), 3, ok, nullptr, std::nan("")), SCORCH_BAD_INPUT);
  // set_input on a model without declared inputs, an unknown dtype (a C caller's int)
  EXPECT_EQ(scorch_pipeline_set_input(p, "context", &one, SCORCH_FLOAT32, 0, nullptr, false), SCORCH_BAD_INPUT);
  EXPECT_NE(std::string(scorch_last_error(p)).find("context"), std::string::npos) << scorch_last_error(p);
  scorch_dtype unknown;
  const int seven = 7;
  std::memcpy(&unknown, &seven, sizeof unknown);
  EXPECT_EQ(scorch_pipeline_set_input(p, "context", &one, unknown, 0, nullptr, false), SCORCH_INVALID_ARGUMENT);
  EXPECT_NE(std::string(scorch_last_error(p)).find("unknown dtype"), std::string::npos);
  // the pipeline is unchanged by all of the above: it still generates from its own noise
  EXPECT_EQ(samples(p).size(), 2u * 784u);
  scorch_pipeline_free(p);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"folder", "in.fifo"}));
  fs::remove_all(dir);
}

// scorch_pipeline_set_init_image: SDEdit from host memory gives exactly the samples of the
// init_image / strength config keys with the same data; NULL goes back to the configured
// start; every bad argument has its status and message and leaves the pipeline as it was.
// Token models (ABI 4): samples come back as int64 [batch, L] through scorch_result_tokens;
// class labels, guidance and templates come from the config, fixed positions also from
// host memory (one row per sequence), and every bad call is its status with a message.
TEST(CApi, TokenModelsWithClassesAndFixedTokens) {
  const std::string yaml = "model: {type: tokens, path: " + std::string(SCORCH_FIXTURES) +
                           "/class_tokens.pt, vocab: abcde, length: 4, mask_id: 5, num_classes: 2}\n"
                           "sampler: {name: tweedie, steps: 4}\nbatch: 4\n";
  std::vector<const char*> sets = {"cond=[0, 1, 1, 0]", "guidance.scale=2"};
  scorch_pipeline_params params = scorch_pipeline_params_init();
  params.config_yaml = yaml.c_str();
  params.overrides = sets.data();
  params.n_overrides = int(sets.size());
  scorch_pipeline* p = create_from(params);
  ASSERT_NE(p, nullptr);
  // fixed positions from memory: sequence i has token 4 at position i
  std::vector<int64_t> fixed(16, -1);
  for (int i = 0; i < 4; ++i) fixed[size_t(i * 4 + i)] = 4;
  const int64_t shape[2] = {4, 4};
  ASSERT_EQ(scorch_pipeline_set_fixed_tokens(p, fixed.data(), shape), SCORCH_OK) << scorch_last_error(p);
  scorch_result* r = nullptr;
  ASSERT_EQ(scorch_generate(p, &r), SCORCH_OK) << scorch_last_error(p);
  EXPECT_EQ(scorch_result_data(r), nullptr);
  ASSERT_NE(scorch_result_tokens(r), nullptr);
  ASSERT_EQ(scorch_result_rank(r), 2);
  EXPECT_EQ(scorch_result_dim(r, 0), 4);
  EXPECT_EQ(scorch_result_dim(r, 1), 4);
  EXPECT_EQ(scorch_result_nfe(r), 4);
  const int64_t* tok = scorch_result_tokens(r);
  const int label[4] = {0, 1, 1, 0};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(tok[i * 4 + j], i == j ? 4 : label[i]) << i << ", " << j;
  scorch_result_free(r);
  // bad fixed tokens, images and inputs on a token pipeline
  const int64_t wrong[2] = {4, 5};
  EXPECT_EQ(scorch_pipeline_set_fixed_tokens(p, fixed.data(), wrong), SCORCH_BAD_INPUT);
  EXPECT_NE(std::string(scorch_last_error(p)).find("expected [batch, L] = [4, 4]"), std::string::npos) << scorch_last_error(p);
  fixed[0] = 9;
  EXPECT_EQ(scorch_pipeline_set_fixed_tokens(p, fixed.data(), shape), SCORCH_BAD_INPUT);
  EXPECT_EQ(scorch_pipeline_set_fixed_tokens(p, fixed.data(), nullptr), SCORCH_INVALID_ARGUMENT);
  const float img[4] = {0, 0, 0, 0};
  const int64_t ishape[1] = {4};
  EXPECT_EQ(scorch_pipeline_set_init_image(p, img, 1, ishape, nullptr, 0.5), SCORCH_BAD_INPUT);
  EXPECT_EQ(scorch_pipeline_set_input(p, "x", img, SCORCH_FLOAT32, 1, ishape, false), SCORCH_BAD_INPUT);
  EXPECT_EQ(scorch_pipeline_set_fixed_tokens(p, nullptr, nullptr), SCORCH_OK);  // back to none
  scorch_pipeline_free(p);
  // a continuous pipeline refuses fixed tokens
  scorch_pipeline* g = create({});
  EXPECT_EQ(scorch_pipeline_set_fixed_tokens(g, fixed.data(), shape), SCORCH_BAD_INPUT);
  scorch_pipeline_free(g);
}

// A prompt-conditional token network from the C API: the prompts (one per sequence) and the
// negative prompt come with the config; sequence 1's tokens equal those of a run that prompts
// every sequence with its prompt, and a bad prompt list is a status with the key named.
TEST(CApi, TokenModelsWithPrompts) {
  const std::string fx = SCORCH_FIXTURES;
  const std::string yaml = "model: {type: tokens, path: " + fx + "/prompt_tokens.pt, vocab: abcde, length: 4, mask_id: 5,"
                           " inputs: [{name: context, source: prompt, shape: [5, 8]}]}\n"
                           "text_encoder: {path: " + fx + "/tiny_text.pt, length: 5, chars: abcdefghijklmnopqrstuvwxyz-}\n"
                           "sampler: {name: tweedie, steps: 4}\nbatch: 3\nguidance: {scale: 2}\nnegative_prompt: a\n";
  auto tokens_of = [&](std::vector<const char*> sets) {
    scorch_pipeline_params params = scorch_pipeline_params_init();
    params.config_yaml = yaml.c_str();
    params.overrides = sets.data();
    params.n_overrides = int(sets.size());
    scorch_pipeline* p = create_from(params);
    std::vector<int64_t> out;
    if (!p) return out;
    scorch_result* r = nullptr;
    if (scorch_generate(p, &r) == SCORCH_OK) {
      const int64_t* tok = scorch_result_tokens(r);
      out.assign(tok, tok + 12);
      scorch_result_free(r);
    }
    scorch_pipeline_free(p);
    return out;
  };
  const std::vector<int64_t> per = tokens_of({"prompt=[bag, boot, a]"}), all = tokens_of({"prompt=boot"});
  ASSERT_EQ(per.size(), 12u);
  ASSERT_EQ(all.size(), 12u);
  EXPECT_TRUE(std::equal(per.begin() + 4, per.begin() + 8, all.begin() + 4));
  scorch_pipeline_params params = scorch_pipeline_params_init();
  params.config_yaml = yaml.c_str();
  std::vector<const char*> bad = {"prompt=[bag, boot]"};
  params.overrides = bad.data();
  params.n_overrides = 1;
  scorch_pipeline* p = nullptr;
  EXPECT_EQ(scorch_pipeline_create(&params, &p), SCORCH_BAD_INPUT);
  EXPECT_EQ(p, nullptr);
  EXPECT_NE(std::string(scorch_last_error(nullptr)).find("prompt: 2 prompts for batch 3"), std::string::npos)
      << scorch_last_error(nullptr);
}

TEST(CApi, InitImageFromMemoryMatchesTheConfigKeys) {
  std::vector<float> image(28 * 28);
  for (size_t i = 0; i < image.size(); ++i) image[i] = std::sin(0.05f * float(i));
  const std::string file = ::testing::TempDir() + "scorch_c_api_init.npy";
  scorch::write_npy(file, at::from_blob(image.data(), {1, 28, 28}, at::kFloat), "init");
  const std::string init_key = "init_image=" + file;
  scorch_pipeline* keyed = create({"batch=4", "output.png=", init_key.c_str(), "strength=0.5"});
  scorch_pipeline* plain = create({"batch=4", "output.png="});
  const std::vector<float> from_key = samples(keyed), unguided = samples(plain);
  const int64_t one[] = {1, 28, 28};
  ASSERT_EQ(scorch_pipeline_set_init_image(plain, image.data(), 3, one, nullptr, 0.5), SCORCH_OK) << scorch_last_error(plain);
  EXPECT_EQ(samples(plain), from_key);
  EXPECT_NE(from_key, unguided);

  const int64_t wrong[] = {2, 28, 28}, negative[] = {1, -28, 28};
  EXPECT_EQ(scorch_pipeline_set_init_image(plain, image.data(), 3, one, nullptr, 0.0), SCORCH_BAD_INPUT);
  EXPECT_NE(std::string(scorch_last_error(plain)).find("strength: expected a number in (0, 1]"), std::string::npos);
  std::vector<float> two(2 * 28 * 28, 0.f);
  EXPECT_EQ(scorch_pipeline_set_init_image(plain, two.data(), 3, wrong, nullptr, 0.5), SCORCH_BAD_INPUT);
  EXPECT_NE(std::string(scorch_last_error(plain)).find("is neither [batch, *shape] = [4, 1, 28, 28]"),
            std::string::npos);
  std::vector<float> nan_image(image);
  nan_image[3] = NAN;
  EXPECT_EQ(scorch_pipeline_set_init_image(plain, nan_image.data(), 3, one, nullptr, 0.5), SCORCH_BAD_INPUT);
  EXPECT_NE(std::string(scorch_last_error(plain)).find("non-finite"), std::string::npos);
  EXPECT_EQ(scorch_pipeline_set_init_image(plain, image.data(), 0, one, nullptr, 0.5), SCORCH_INVALID_ARGUMENT);
  EXPECT_EQ(scorch_pipeline_set_init_image(plain, image.data(), 3, nullptr, nullptr, 0.5), SCORCH_INVALID_ARGUMENT);
  EXPECT_EQ(scorch_pipeline_set_init_image(plain, image.data(), 3, negative, nullptr, 0.5), SCORCH_INVALID_ARGUMENT);
  EXPECT_NE(std::string(scorch_last_error(plain)).find("shape entries must be positive"), std::string::npos);
  EXPECT_EQ(scorch_pipeline_set_init_image(nullptr, image.data(), 3, one, nullptr, 0.5), SCORCH_INVALID_ARGUMENT);
  EXPECT_EQ(samples(plain), from_key);  // the failed calls changed nothing

  // Inpainting: the right half generated, as with the inpaint_mask key.
  std::vector<float> mask(28 * 28, 0.f);
  for (int i = 0; i < 28 * 28; ++i) mask[size_t(i)] = i % 28 >= 14 ? 1.f : 0.f;
  const std::string mask_file = ::testing::TempDir() + "scorch_c_api_mask.npy";
  scorch::write_npy(mask_file, at::from_blob(mask.data(), {1, 28, 28}, at::kFloat), "mask");
  const std::string mask_key = "inpaint_mask=" + mask_file;
  scorch_pipeline* inpainted = create({"batch=4", "output.png=", init_key.c_str(), mask_key.c_str()});
  ASSERT_EQ(scorch_pipeline_set_init_image(plain, image.data(), 3, one, mask.data(), 1.0), SCORCH_OK);
  EXPECT_EQ(samples(plain), samples(inpainted));
  std::vector<float> bad_mask(mask);
  bad_mask[0] = 1.5f;
  EXPECT_EQ(scorch_pipeline_set_init_image(plain, image.data(), 3, one, bad_mask.data(), 1.0), SCORCH_BAD_INPUT);
  EXPECT_NE(std::string(scorch_last_error(plain)).find("inpaint_mask: expected values in [0, 1]"), std::string::npos);
  scorch_pipeline_free(inpainted);
  std::remove(mask_file.c_str());

  ASSERT_EQ(scorch_pipeline_set_init_image(plain, nullptr, 0, nullptr, nullptr, 0.0), SCORCH_OK);
  EXPECT_EQ(samples(plain), unguided);
  scorch_pipeline_free(keyed);
  scorch_pipeline_free(plain);
  std::remove(file.c_str());
}

// A progress callback returning false, and scorch_cancel from another thread mid-run,
// both end the run with SCORCH_CANCELLED after the current step; the pipeline runs again.
// Declared inputs from host memory (model.inputs source: host): the conditional and the
// negative context, a scalar, and CFG; equal to the same values given as files in the config.
TEST(CApi, DeclaredInputsFromHostMemoryMatchTheConfigFiles) {
  const std::string fx = std::string(SCORCH_FIXTURES) + "/tensor_cond.pt";
  const std::string dir = ::testing::TempDir();
  const at::Tensor ctx = at::randn({2, 3, 4}), neg = at::randn({3, 4});
  scorch::write_npy(dir + "/capi_ctx.npy", ctx);
  scorch::write_npy(dir + "/capi_neg.npy", neg);
  const std::string common = "batch: 2\nseed: 5\nguidance: {scale: 3}\nsampler: {name: dpmpp_2m, steps: 6}\n"
                             "model: {type: torchscript, path: '" + fx + "', shape: [2, 3], inputs: [";
  const std::string files = common + "{name: context, file: '" + dir + "/capi_ctx.npy', negative_file: '" + dir +
                            "/capi_neg.npy', shape: [3, 4]}, {name: guidance, source: scalar, value: 2}]}\n";
  const std::string host = common + "{name: context, source: host, shape: [3, 4]}, "
                                    "{name: guidance, source: host, shape: []}]}\n";
  scorch_pipeline_params params = scorch_pipeline_params_init();
  params.config_yaml = files.c_str();
  scorch_pipeline* a = create_from(params);
  params.config_yaml = host.c_str();
  scorch_pipeline* b = create_from(params);
  ASSERT_TRUE(a && b);
  scorch_result* r = nullptr;
  EXPECT_EQ(scorch_generate(b, &r), SCORCH_BAD_INPUT);  // not set yet
  EXPECT_NE(std::string(scorch_last_error(b)).find("model.inputs 'context': no value"), std::string::npos);
  const int64_t shape[] = {2, 3, 4}, one[] = {3, 4}, bad[] = {3, 5};
  EXPECT_EQ(scorch_pipeline_set_input(b, "context", neg.data_ptr<float>(), SCORCH_FLOAT32, 2, bad, true),
            SCORCH_BAD_INPUT);
  EXPECT_NE(std::string(scorch_last_error(b)).find("shape [3, 5] is neither [3, 4]"), std::string::npos);
  EXPECT_EQ(scorch_pipeline_set_input(b, "ctx", neg.data_ptr<float>(), SCORCH_FLOAT32, 2, one, true), SCORCH_BAD_INPUT);
  EXPECT_EQ(scorch_pipeline_set_input(b, nullptr, neg.data_ptr<float>(), SCORCH_FLOAT32, 2, one, true),
            SCORCH_INVALID_ARGUMENT);
  EXPECT_EQ(scorch_pipeline_set_input(b, "context", ctx.data_ptr<float>(), SCORCH_FLOAT32, 3, shape, false), SCORCH_OK);
  EXPECT_EQ(scorch_pipeline_set_input(b, "context", neg.data_ptr<float>(), SCORCH_FLOAT32, 2, one, true), SCORCH_OK);
  const double g = 2.0;
  EXPECT_EQ(scorch_pipeline_set_input(b, "guidance", &g, SCORCH_FLOAT64, 0, nullptr, false), SCORCH_OK);
  int64_t nfe_a = 0, nfe_b = 0;
  const std::vector<float> xa = samples(a, &nfe_a), xb = samples(b, &nfe_b);
  EXPECT_EQ(xa, xb);
  EXPECT_EQ(nfe_a, 6);
  scorch_pipeline_free(a);
  scorch_pipeline_free(b);
}

TEST(CApi, CancelFromCallbackAndFromAnotherThread) {
  struct State {
    std::atomic<int> steps{0};
    int stop_at = 3;
  } st;
  GaussianParams gp({"batch=2", "output.png=", "sampler.steps=200", "sampler.name=euler"}, &st);
  gp.params.progress = [](void* user, int step, int, int64_t) {
    auto* s = static_cast<State*>(user);
    s->steps = step;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    return step < s->stop_at;
  };
  scorch_pipeline* p = create_from(gp.params);
  ASSERT_NE(p, nullptr);
  scorch_result* r = nullptr;
  EXPECT_EQ(scorch_generate(p, &r), SCORCH_CANCELLED);
  EXPECT_EQ(r, nullptr);
  EXPECT_EQ(st.steps.load(), 3);
  EXPECT_NE(std::string(scorch_last_error(p)).find("cancel"), std::string::npos);

  st.stop_at = 1000000;
  st.steps = 0;
  scorch_status status = SCORCH_OK;
  std::thread worker([&] { status = scorch_generate(p, &r); });
  while (st.steps.load() < 5) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto t0 = std::chrono::steady_clock::now();
  scorch_cancel(p);
  worker.join();
  EXPECT_EQ(status, SCORCH_CANCELLED);
  EXPECT_LT(st.steps.load(), 200);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 1.0);
  EXPECT_EQ(samples(p).size(), 2u * 784);  // usable again
  scorch_pipeline_free(p);
}

// Two pipelines in two threads give the results of running them one after the other;
// a second generate on a busy pipeline is refused with SCORCH_BUSY.
TEST(CApi, ThreadsAndBusy) {
  scorch_pipeline* a = create({"batch=4", "output.png=", "sampler.name=euler_ancestral", "seed=1"});
  scorch_pipeline* b = create({"batch=4", "output.png=", "sampler.name=dpmpp_2m_sde", "seed=2"});
  const std::vector<float> ra = samples(a), rb = samples(b);
  std::vector<float> ta, tb;
  std::thread t1([&] { ta = samples(a); }), t2([&] { tb = samples(b); });
  t1.join();
  t2.join();
  EXPECT_EQ(ta, ra);
  EXPECT_EQ(tb, rb);

  struct Gate {
    std::atomic<bool> running{false}, release{false};
  } gate;
  GaussianParams gp({"batch=1", "output.png="}, &gate);
  gp.params.progress = [](void* user, int, int, int64_t) {
    auto* g = static_cast<Gate*>(user);
    g->running = true;
    while (!g->release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return true;
  };
  scorch_pipeline* c = create_from(gp.params);
  ASSERT_NE(c, nullptr);
  scorch_result* r = nullptr;
  std::thread t3([&] {
    scorch_result* mine = nullptr;
    EXPECT_EQ(scorch_generate(c, &mine), SCORCH_OK);
    scorch_result_free(mine);
  });
  while (!gate.running) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(scorch_generate(c, &r), SCORCH_BUSY);
  gate.release = true;
  t3.join();
  scorch_pipeline_free(a);
  scorch_pipeline_free(b);
  scorch_pipeline_free(c);
}

long rss_kb() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * 4;
}

// 1,000 create-generate-free cycles: resident memory after 1,000 is within 20 MB of after 100.
TEST(CApi, ThousandCyclesStableMemory) {
  long after100 = 0;
  for (int i = 1; i <= 1000; ++i) {
    scorch_pipeline* p = create({"batch=2", "output.png=", "sampler.steps=2", "sampler.name=ddim"});
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(samples(p).size(), 2u * 784);
    scorch_pipeline_free(p);
    if (i == 100) after100 = rss_kb();
  }
  EXPECT_LT(rss_kb() - after100, 20 * 1024) << "RSS after 100: " << after100 << " kB, after 1000: " << rss_kb();
}

}  // namespace
