// The stages around the denoiser: tokenizers, the text encoder, the latent codec with tiled
// decoding, and a whole prompted latent pipeline on float64 fixtures.
#include "scorch/stages.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>

#include "scorch/error.h"
#include "scorch/eval.h"
#include "scorch/io.h"
#include "scorch/pipeline.h"

namespace fs = std::filesystem;
using namespace scorch;

namespace {

const std::string kFixtures = SCORCH_FIXTURES;
const auto kF64 = at::TensorOptions().dtype(at::kDouble);
const std::string kChars = "abcdefghijklmnopqrstuvwxyz -";

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TokenizerSpec chars(int64_t length) {
  TokenizerSpec t;
  t.chars = kChars;
  t.length = length;
  return t;
}

TEST(Tokenizer, CharsPadTruncateAndNameBadCharacters) {
  TokenizerSpec t = chars(5);
  Tokens a = tokenize(t, "ab c", "p");
  EXPECT_EQ(a.ids, (std::vector<int64_t>{1, 2, 27, 3, 0}));
  EXPECT_FALSE(a.truncated);
  Tokens b = tokenize(t, "abcdefg", "p");
  EXPECT_EQ(b.ids, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  EXPECT_TRUE(b.truncated);
  EXPECT_NE(error_of([&] { tokenize(t, "aB", "prompt \"aB\""); })
                .find("prompt \"aB\": character 'B' at position 2 is not in the tokenizer's table"),
            std::string::npos);
  t.lowercase = true;
  EXPECT_EQ(tokenize(t, "aB", "p").ids, (std::vector<int64_t>{1, 2, 0, 0, 0}));
  EXPECT_NE(error_of([&] { tokenize(t, "caf\xc3\xa9", "p"); }).find("a non-ASCII byte at position 4"),
            std::string::npos);
}

TEST(Tokenizer, VocabUnknownWordIsNamed) {
  TokenizerSpec t;
  t.kind = TokenizerSpec::Kind::Vocab;
  t.vocab = {"<pad>", "a", "boot", "ankle"};
  t.length = 4;
  EXPECT_EQ(tokenize(t, "a  ankle boot", "p").ids, (std::vector<int64_t>{1, 3, 2, 0}));
  EXPECT_NE(error_of([&] { tokenize(t, "an ankle boot", "p"); }).find("word 'an' is not in the tokenizer's vocabulary"),
            std::string::npos);
}

TEST(TextEncoder, OneRowPerPromptAsTheModuleGivesThem) {
  TextEncoder enc(ScriptModule::load(kFixtures + "/tiny_text.pt", "tiny_text", at::kCPU, at::kDouble), chars(5));
  std::vector<std::string> notes;
  const auto out = enc.encode({"boot", "bag", "boot", "a long prompt"}, &notes);
  ASSERT_EQ(out.size(), 2u);  // (context, pooled)
  EXPECT_EQ(out[0].sizes(), (std::vector<int64_t>{4, 5, 8}));
  EXPECT_EQ(out[1].sizes(), (std::vector<int64_t>{4, 8}));
  ASSERT_EQ(notes.size(), 1u);
  EXPECT_NE(notes[0].find("\"a long prompt\" is longer than the text encoder's 5 tokens; truncated"), std::string::npos);
  torch::jit::Module m = torch::jit::load(kFixtures + "/tiny_text.pt");
  const at::Tensor ids = at::tensor(std::vector<int64_t>{2, 15, 15, 20, 0}, at::TensorOptions().dtype(at::kLong));
  const at::Tensor direct = m.forward({ids.view({1, 5})}).toTuple()->elements()[0].toTensor();
  EXPECT_TRUE(at::equal(out[0][0], direct[0]));
  EXPECT_TRUE(at::equal(out[0][2], direct[0]));
  EXPECT_FALSE(at::equal(out[0][1], direct[0]));
}

at::Tensor decode_direct(const at::Tensor& z) {
  static torch::jit::Module m = torch::jit::load(kFixtures + "/tiny_decoder.pt");
  return m.forward({z}).toTensor();
}

// Tiles of 8 latent cells overlapping by 4 on a 20 x 20 latent. The decoder sees 1.5 cells
// around each pixel: outside the overlaps the tiled result is the untiled one to round-off;
// inside them (a margin of 4 / 3 = 1 cell dropped) a blend of two nearly equal tiles; with
// overlaps of 6 (a margin of 2 cells) it is the untiled result everywhere.
TEST(TiledDecode, EqualsUntiledAwayFromSeamsAndCloseAtThem) {
  at::manual_seed(3);
  const at::Tensor z = at::randn({2, 2, 20, 20}, kF64);
  const at::Tensor full = decode_direct(z);
  const at::Tensor tiled = tiled_decode(decode_direct, z, 8, 4, 2);
  ASSERT_EQ(tiled.sizes(), full.sizes());
  // Tile starts 0, 4, 8, 12: overlaps cover latent rows 4-7, 8-11, 12-15 (each row is shared
  // by two tiles there); rows 0-3 and 16-19 are one tile's alone.
  at::Tensor diff = (tiled - full).abs();
  const double alone = at::cat({diff.narrow(-2, 0, 8), diff.narrow(-2, 32, 8)}, -2)
                           .narrow(-1, 0, 8).max().item<double>();
  EXPECT_LT(alone, 1e-12);
  const double seams = diff.max().item<double>();
  const double scale = full.abs().max().item<double>();
  EXPECT_LT(seams, 0.1 * scale) << "seam error " << seams << " against values up to " << scale;
  EXPECT_GT(seams, 1e-9);  // the seams are where a too narrow overlap shows
  // Overlaps wider than the receptive field give the untiled result everywhere.
  const at::Tensor wide = tiled_decode(decode_direct, z, 12, 6, 2);
  EXPECT_LT((wide - full).abs().max().item<double>(), 1e-12);
  // A tile as large as the latent is one call.
  EXPECT_TRUE(at::equal(tiled_decode(decode_direct, z, 20, 0, 2), full));
}

TEST(LatentCodec, ScaleShiftAndDryRunChecks) {
  LatentSpec spec;
  spec.scale_factor = 2.0;
  spec.shift_factor = 0.25;
  const auto load = [](const std::string& f) { return ScriptModule::load(kFixtures + "/" + f, f, at::kCPU, at::kDouble); };
  LatentCodec codec(load("tiny_decoder.pt"), load("tiny_encoder.pt"), spec, {2, 6, 6}, kF64);
  EXPECT_EQ(codec.image_shape(), (std::vector<int64_t>{1, 12, 12}));
  EXPECT_EQ(codec.upscale(), 2);
  const at::Tensor x = at::randn({3, 1, 12, 12}, kF64);
  torch::jit::Module enc = torch::jit::load(kFixtures + "/tiny_encoder.pt");
  const at::Tensor raw = enc.forward({x}).toTensor();
  const at::Tensor z = codec.encode(x);
  EXPECT_LT((z - (raw - 0.25) * 2.0).abs().max().item<double>(), 1e-12);
  EXPECT_LT((codec.decode(z) - decode_direct(raw)).abs().max().item<double>(), 1e-12);
  // The decoder does not take 3-channel latents; the encoder does not give the latent shape.
  EXPECT_NE(error_of([&] { LatentCodec(load("tiny_decoder.pt"), nullptr, spec, {3, 6, 6}, kF64); })
                .find("tiny_decoder.pt: forward failed"),
            std::string::npos);
  EXPECT_NE(error_of([&] { LatentCodec(load("tiny_decoder.pt"), load("tiny_decoder.pt"), spec, {2, 6, 6}, kF64); })
                .find("forward failed"),
            std::string::npos);
  spec.tile = 4;
  spec.overlap = 4;
  EXPECT_NE(error_of([&] { LatentCodec(load("tiny_decoder.pt"), nullptr, spec, {2, 6, 6}, kF64); })
                .find("decoder.overlap: must be smaller than decoder.tile"),
            std::string::npos);
}

// The shipped autoencoder of the text-to-image model (models/fmnist_prompt_*.pt): encoder
// then decoder on the first 1000 Fashion-MNIST test images, in [-1, 1]; the training script
// reports 0.00725 on all 10k for the shipped decoder (trained for the fixed encoder with
// --decoder-only; the joint autoencoder's own decoder had 0.0109), so 0.01 bounds it.
TEST(ShippedAutoencoder, RoundTripError) {
  const std::string file = fashion_mnist_file("t10k-images-idx3-ubyte.gz");
  if (!fs::exists(file)) GTEST_SKIP() << "no Fashion-MNIST at " << file << " (Debian's dataset-fashion-mnist)";
  const at::Tensor x = read_idx(file).narrow(0, 0, 1000).to(at::kFloat).div(127.5).sub(1.0).unsqueeze(1);
  const std::string models = std::string(SCORCH_SOURCE_DIR) + "/models/fmnist_prompt_";
  LatentSpec spec;
  spec.scale_factor = 1.012761;
  spec.shift_factor = -0.18965;
  LatentCodec codec(ScriptModule::load(models + "decoder.pt", "decoder", at::kCPU, at::kFloat),
                    ScriptModule::load(models + "encoder.pt", "encoder", at::kCPU, at::kFloat), spec, {8, 7, 7},
                    at::TensorOptions().dtype(at::kFloat));
  const at::Tensor z = codec.encode(x);
  // The scale and shift make the latents standard: mean 0 and variance 1 to within 0.1.
  EXPECT_LT(std::abs(z.mean().item<double>()), 0.1);
  EXPECT_LT(std::abs(z.std().item<double>() - 1.0), 0.1);
  const double mse = (codec.decode(z) - x).pow(2).mean().item<double>();
  EXPECT_LT(mse, 0.01);
  EXPECT_GT(mse, 1e-4);  // a 196-number code of a 784-pixel image is lossy
  std::printf("shipped autoencoder: round-trip MSE %.5f on 1000 test images\n", mse);
}

class PromptPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("scorch_stages_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  YAML::Node config() const {
    YAML::Node c = YAML::Load(
        "dtype: float64\nbatch: 3\nseed: 4\nprompt: boot\n"
        "model: {type: torchscript, shape: [2, 6, 6], inputs: [{name: context, source: prompt, shape: [5, 8]}]}\n"
        "text_encoder: {tokenizer: chars, length: 5}\n"
        "decoder: {scale_factor: 2, shift_factor: 0.25}\n"
        "sampler: {name: dpmpp_2m, steps: 5}\n");
    c["model"]["path"] = kFixtures + "/latent_eps.pt";
    c["text_encoder"]["path"] = kFixtures + "/tiny_text.pt";
    c["text_encoder"]["chars"] = kChars;
    c["decoder"]["path"] = kFixtures + "/tiny_decoder.pt";
    return c;
  }
  fs::path dir_;
};

TEST_F(PromptPipeline, PromptsLatentsAndDecodedImages) {
  YAML::Node c = config();
  c["output"]["latents"] = (dir_ / "lat.npy").string();
  c["output"]["npy"] = (dir_ / "img.npy").string();
  const auto p = Pipeline::from_config(c);
  EXPECT_EQ(p->sample_shape(), (std::vector<int64_t>{1, 12, 12}));
  const GenerateResult r = p->generate();
  EXPECT_EQ(r.samples.sizes(), (std::vector<int64_t>{3, 1, 12, 12}));
  EXPECT_EQ(r.latents.sizes(), (std::vector<int64_t>{3, 2, 6, 6}));
  EXPECT_LT((r.samples - decode_direct(r.latents / 2.0 + 0.25)).abs().max().item<double>(), 1e-12);
  p->write_outputs(r);
  EXPECT_TRUE(at::allclose(read_npy((dir_ / "lat.npy").string()).to(at::kDouble), r.latents, 1e-6, 1e-6));
  EXPECT_NE(p->summary(r).find("prompt \"boot\""), std::string::npos);
  EXPECT_NE(p->provenance_yaml().find("prompt: boot"), std::string::npos);

  // A prompt per sample: sample 1 prompted "boot" equals sample 1 of the run above.
  YAML::Node per = config();
  per["prompt"] = YAML::Load("[bag, boot, a]");
  const GenerateResult q = Pipeline::from_config(per)->generate();
  EXPECT_LT((q.samples[1] - r.samples[1]).abs().max().item<double>(), 1e-12);
  EXPECT_GT((q.samples[0] - r.samples[0]).abs().max().item<double>(), 1e-6);

  // Classifier-free guidance against the negative prompt changes the result.
  YAML::Node g = config();
  g["guidance"]["scale"] = 3.0;
  g["negative_prompt"] = "bag";
  const GenerateResult gr = Pipeline::from_config(g)->generate();
  EXPECT_EQ(gr.nfe, r.nfe);
  EXPECT_GT((gr.samples - r.samples).abs().max().item<double>(), 1e-6);

  // The guidance variants with tensor conditioning: each runs (finite) and differs from plain CFG.
  for (const char* variant : {"{rescale: 0.7}", "{interval: [0.2, 5.0]}", "{apg: {eta: 0, norm_threshold: 5}}",
                              "{cfg_zero_star: {zero_steps: 0}}"}) {
    YAML::Node v = config();
    v["guidance"] = YAML::Load(variant);
    v["guidance"]["scale"] = 3.0;
    v["negative_prompt"] = "bag";
    const GenerateResult vr = Pipeline::from_config(v)->generate();
    EXPECT_TRUE(at::isfinite(vr.samples).all().item<bool>()) << variant;
    EXPECT_GT((vr.samples - gr.samples).abs().max().item<double>(), 1e-6) << variant;
  }
}

TEST_F(PromptPipeline, TruncationWarnsAndBadPromptsAreErrors) {
  YAML::Node c = config();
  c["prompt"] = "ankle boots";
  const GenerateResult r = Pipeline::from_config(c)->generate();
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes[0].find("truncated"), std::string::npos);
  YAML::Node bad = config();
  bad["prompt"] = "Boot";
  EXPECT_NE(error_of([&] { Pipeline::from_config(bad); }).find("character 'B' at position 1"), std::string::npos);
  YAML::Node count = config();
  count["prompt"] = YAML::Load("[a, b]");
  EXPECT_NE(error_of([&] { Pipeline::from_config(count); }).find("prompt: 2 prompts for batch 3"), std::string::npos);
  YAML::Node none = config();
  none.remove("prompt");
  EXPECT_NE(error_of([&] { Pipeline::from_config(none); }).find("prompt: missing"), std::string::npos);
  YAML::Node shape = config();
  shape["model"]["inputs"][0]["shape"] = YAML::Load("[4, 8]");  // the encoder gives [5, 8]
  EXPECT_NE(error_of([&] { Pipeline::from_config(shape); })
                .find("model.inputs 'context' from text_encoder output 0: shape [3, 5, 8] is neither [4, 8]"),
            std::string::npos);
  YAML::Node latents = config();
  latents.remove("decoder");
  latents["output"]["latents"] = (dir_ / "l.npy").string();
  EXPECT_NE(error_of([&] { Pipeline::from_config(latents); }).find("output.latents: the model has no decoder"),
            std::string::npos);
}

// SDEdit and inpainting of a latent model take images, encoded; the mask is pooled onto the
// latent grid.
TEST_F(PromptPipeline, ImageInputsAreEncoded) {
  YAML::Node c = config();
  c["encoder"]["path"] = kFixtures + "/tiny_encoder.pt";
  write_npy((dir_ / "init.npy").string(), at::randn({1, 12, 12}, kF64));
  at::Tensor mask = at::zeros({1, 12, 12}, kF64);
  mask.narrow(1, 0, 6).fill_(1.0);  // generate the top half
  write_npy((dir_ / "mask.npy").string(), mask.to(at::kFloat));
  c["init_image"] = (dir_ / "init.npy").string();
  c["inpaint_mask"] = (dir_ / "mask.npy").string();
  const GenerateResult r = Pipeline::from_config(c)->generate();
  EXPECT_EQ(r.samples.sizes(), (std::vector<int64_t>{3, 1, 12, 12}));
  // The kept latent rows (3-5) are the encoded init image's, the same for every sample.
  const at::Tensor kept = r.latents.narrow(2, 3, 3);
  EXPECT_LT((kept[0] - kept[2]).abs().max().item<double>(), 1e-12);
  EXPECT_GT((r.latents[0].narrow(1, 0, 3) - r.latents[2].narrow(1, 0, 3)).abs().max().item<double>(), 1e-6);
  YAML::Node no_encoder = config();
  no_encoder["init_image"] = (dir_ / "init.npy").string();
  EXPECT_NE(error_of([&] { Pipeline::from_config(no_encoder); }).find("needs an encoder"), std::string::npos);
}

}  // namespace
