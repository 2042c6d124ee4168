// Per-sample reproducibility: sample i's randomness comes from its own seed's streams, so it
// is the same in a batch of 7 and of 20 (the analytic models pad them to 16 and 32 rows),
// with 1 or 2 threads, and alone with its own seed.
// Every registered sampler (continuous and discrete) but dpm_adaptive, whose step sizes come
// from the whole batch's error (docs/samplers.md), and every policy that draws (correctors,
// inpainting, teleport's auto probe).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "scorch/torchscript_denoiser.h"
#include "scorch/config.h"
#include "scorch/discrete_sampler.h"
#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/pipeline.h"
#include "scorch/rng.h"
#include "scorch/schedule.h"
#include "scorch/sampler.h"
#include "scorch/token_pipeline.h"

namespace fs = std::filesystem;

namespace scorch {
namespace {

const std::string kGaussian = "configs/fmnist_gaussian.yaml";

at::Tensor sample_batch(const std::string& config, std::vector<std::string> sets, int64_t batch, int threads = 2) {
  sets.push_back("batch=" + std::to_string(batch));
  sets.push_back("output.png=");
  at::set_num_threads(threads);
  const auto p = Pipeline::from_config(load_config(config, sets));
  return p->generate().samples;
}

// The options that make each sampler draw noise where it can (stochastic variants on).
std::vector<std::string> sampler_sets(const std::string& name) {
  std::vector<std::string> s = {"sampler.name=" + name, "sampler.steps=6"};
  if (name == "ddim") s.push_back("sampler.eta=1");
  if (name == "euler" || name == "heun") s.push_back("sampler.s_churn=2");
  if (name == "teleport") s.insert(s.end(), {"sampler.gaussian=models/fmnist_gaussian.safetensors", "sampler.auto=true"});
  if (name == "msg") s.push_back("sampler.inner.name=euler_ancestral");
  if (name == "dpm_solver_v3") s.push_back("sampler.degenerated=true");
  return s;
}

void expect_prefix_equal(const at::Tensor& small, const at::Tensor& big, const std::string& what) {
  ASSERT_EQ(small.size(0), 7);
  EXPECT_TRUE(at::equal(small, big.narrow(0, 0, 7))) << what << ": max difference "
                                                     << (small - big.narrow(0, 0, 7)).abs().max().item<double>();
}

TEST(Reproducibility, EveryContinuousSamplerPerSample) {
  for (const auto& entry : samplers().entries()) {
    if (entry.name == "dpm_adaptive") continue;  // batch-wide step-size control, documented
    const auto sets = sampler_sets(entry.name);
    const at::Tensor small = sample_batch(kGaussian, sets, 7, 1);
    expect_prefix_equal(small, sample_batch(kGaussian, sets, 20, 2), entry.name + " (7 vs 20, 1 vs 2 threads)");
    expect_prefix_equal(small, sample_batch(kGaussian, sets, 7, 2), entry.name + " (1 vs 2 threads)");
  }
}

TEST(Reproducibility, CorrectorsAndInpaintingPerSample) {
  const std::string init = (fs::temp_directory_path() / "scorch_repro_init.npy").string();
  const std::string mask = (fs::temp_directory_path() / "scorch_repro_mask.npy").string();
  write_npy(init, sample_batch(kGaussian, {"sampler.steps=3"}, 1), "init");
  at::Tensor m = at::zeros({1, 28, 28});
  m.narrow(2, 14, 14).fill_(1.0);
  write_npy(mask, m, "mask");
  const std::vector<std::vector<std::string>> cases = {
      {"sampler.name=dpmpp_2m", "sampler.steps=5", "guidance.corrector.type=mala", "guidance.corrector.steps=2"},
      {"sampler.name=ddim", "sampler.steps=5", "guidance.corrector.type=hmc"},
      {"sampler.name=ddim", "sampler.steps=5", "guidance.corrector.type=uhmc", "guidance.corrector.steps=2"},
      {"sampler.name=euler", "sampler.steps=5", "guidance.corrector.type=ula"},
      {"sampler.name=ddim", "sampler.steps=5", "init_image=" + init, "inpaint_mask=" + mask,
       "guidance.corrector.type=mala"},
      {"sampler.name=ddim", "sampler.steps=5", "init_image=" + init, "strength=0.5", "sampler.eta=1"},
  };
  for (const auto& sets : cases) {
    const at::Tensor small = sample_batch(kGaussian, sets, 7);
    expect_prefix_equal(small, sample_batch(kGaussian, sets, 20), sets[2]);
  }
  fs::remove(init);
  fs::remove(mask);
}

// A chosen sample again on its own: batch 10 from seed 100 holds sample 7 = seed 107;
// `seed: 107, batch: 1` and a seed list give it back, bit for bit.
TEST(Reproducibility, OneSampleAgainFromItsSeed) {
  const std::vector<std::string> sets = {"sampler.name=euler_ancestral", "sampler.steps=8"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), sets.begin(), sets.end());
    return extra;
  };
  const at::Tensor batch = sample_batch(kGaussian, with({"seed=100"}), 10);
  const at::Tensor alone = sample_batch(kGaussian, with({"seed=107"}), 1);
  EXPECT_TRUE(at::equal(alone[0], batch[7]));
  const at::Tensor listed = sample_batch(kGaussian, with({"seed=[5, 107, 9]"}), 3);
  EXPECT_TRUE(at::equal(listed[1], batch[7]));
  EXPECT_FALSE(at::equal(listed[0], batch[7]));
  for (const char* bad : {"seed=[1, 2]", "seed=-1", "seed=[1, -2, 3]", "seed=x", "seed=[1, x, 3]", "noise=pink",
                          "noise_generator=numpy", "seed=[[1], 2, 3]"})
    EXPECT_THROW(sample_batch(kGaussian, with({bad}), 3), Error) << bad;
}

// The shipped U-Net: the same to float32 round-off of the network (its CPU chunks differ in
// composition between the two batches).
TEST(Reproducibility, UnetPerSampleToRoundOff) {
  const std::vector<std::string> sets = {"sampler.name=euler_ancestral", "sampler.steps=3", "cond=4"};
  const at::Tensor small = sample_batch("", sets, 7), big = sample_batch("", sets, 16);
  EXPECT_LT((small - big.narrow(0, 0, 7)).abs().max().item<double>(), 1e-4);
}

at::Tensor tokens(const std::vector<std::string>& sets, int64_t batch, int threads = 2) {
  std::vector<std::string> all = sets;
  all.push_back("batch=" + std::to_string(batch));
  at::set_num_threads(threads);
  return TokenPipeline::from_config(load_config("configs/words.yaml", all))->generate().tokens;
}

TEST(Reproducibility, EveryDiscreteSamplerPerSample) {
  const std::string fx = std::string(SCORCH_FIXTURES);
  const std::vector<std::string> tempered = {"model.path=" + fx + "/tempered_tokens.pt", "model.vocab=abcde",
                                             "model.mask_id=5", "model.length=6"};
  for (const auto& entry : discrete_samplers().entries()) {
    std::vector<std::string> sets = tempered;
    sets.insert(sets.end(), {"sampler.name=" + entry.name, "sampler.steps=6"});
    expect_prefix_equal(tokens(sets, 7, 1), tokens(sets, 16, 2), entry.name + " (7 vs 16, 1 vs 2 threads)");
  }
  // uniform-state diffusion (tweedie) and semi-autoregressive blocks
  std::vector<std::string> uniform = {"model.path=" + fx + "/uniform_tokens.pt", "model.vocab=abcde",
                                      "model.length=4", "model.transition=uniform", "sampler.name=tweedie"};
  expect_prefix_equal(tokens(uniform, 7), tokens(uniform, 16), "tweedie, uniform");
  std::vector<std::string> blocks = tempered;
  blocks.insert(blocks.end(), {"sampler.name=euler", "sampler.blocks=3", "sampler.steps=6"});
  expect_prefix_equal(tokens(blocks, 7), tokens(blocks, 16), "euler, 3 blocks");
}

// The shipped word model: a sequence again from its own seed.
TEST(Reproducibility, WordAgainFromItsSeed) {
  const at::Tensor batch = tokens({"seed=40"}, 6), alone = tokens({"seed=43"}, 1);
  EXPECT_TRUE(at::equal(alone[0], batch[3]));
}

// noise_generator: torch gives sample i the z of Python's
// torch.randn(shape, generator=torch.Generator().manual_seed(seed_i)), bit for bit (Debian's
// python3-torch is the same LibTorch); x_T = sigma(t_start) z.
TEST(Reproducibility, TorchNoiseGeneratorMatchesPython) {
  if (std::system("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1") != 0)
    GTEST_SKIP() << "no /usr/bin/python3 with torch: cannot compare with Python's torch.randn";
  const std::string out = (fs::temp_directory_path() / "scorch_torch_randn.npy").string();
  const std::string cmd = "/usr/bin/python3 -c 'import torch, numpy; numpy.save(\"" + out +
                          "\", torch.stack([torch.randn((1, 28, 28), generator=torch.Generator().manual_seed(s)) "
                          "for s in (1234, 1235, 1236)]).numpy())'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const at::Tensor python = read_npy(out);
  fs::remove(out);
  const at::Tensor z = Rng::per_sample({1234, 1235, 1236}, NoiseGenerator::Torch)
                           .normal({3, 1, 28, 28}, at::TensorOptions().dtype(at::kFloat));
  EXPECT_TRUE(at::equal(z, python));
  const auto p = Pipeline::from_config(
      load_config(kGaussian, {"seed=1234", "batch=3", "noise_generator=torch", "output.png="}));
  const at::Tensor x_T = p->initial_noise();
  const double sigma = make_vp_linear()->sigma(1.0);
  EXPECT_TRUE(at::equal(x_T, python * sigma));
  // the default generator draws float64 normals: other numbers
  const auto q = Pipeline::from_config(load_config(kGaussian, {"seed=1234", "batch=3", "output.png="}));
  EXPECT_FALSE(at::equal(q->initial_noise(), x_T));
  EXPECT_THROW(Pipeline::from_config(load_config(kGaussian, {"noise_generator=numpy"})), Error);
}

// model.cpu_parallel: the default chunks are bit-identical for 1 and 2 threads at every
// batch size (their size depends on the batch alone); intra_op agrees to float32 round-off.
TEST(Reproducibility, UnetChunksIgnoreThreadsAndIntraOpAgreesToRoundOff) {
  EXPECT_EQ(cpu_chunk_size(1), 2);
  EXPECT_EQ(cpu_chunk_size(5), 3);
  EXPECT_EQ(cpu_chunk_size(16), 8);
  EXPECT_EQ(cpu_chunk_size(64), 16);
  EXPECT_EQ(cpu_chunk_size(1000), 16);
  const std::vector<std::string> sets = {"sampler.name=dpmpp_2m", "sampler.steps=3", "cond=4"};
  std::vector<std::string> intra = sets;
  intra.push_back("model.cpu_parallel=intra_op");
  for (int64_t batch : {1, 5, 16}) {
    const at::Tensor one = sample_batch("", sets, batch, 1);
    EXPECT_TRUE(at::equal(one, sample_batch("", sets, batch, 2))) << "batch " << batch;
    EXPECT_LT((one - sample_batch("", intra, batch, 2)).abs().max().item<double>(), 1e-4) << "batch " << batch;
  }
  std::vector<std::string> bad = sets;
  bad.push_back("model.cpu_parallel=threads");
  EXPECT_THROW(sample_batch("", bad, 2), Error);
}

}  // namespace
}  // namespace scorch
