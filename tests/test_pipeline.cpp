#include "scorch/pipeline.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <yaml-cpp/yaml.h>

#include "scorch/config.h"
#include "scorch/error.h"
#include "scorch/gaussian.h"
#include "scorch/io.h"
#include "scorch/rng.h"
#include "scorch/schedule.h"
#include "support/random_gaussian.h"

namespace fs = std::filesystem;

namespace scorch {
namespace {

const std::string kGaussianConfig = "configs/fmnist_gaussian.yaml";

const std::string kFixtures = SCORCH_FIXTURES;

// float64 end to end: the pipeline on a Gaussian model file reproduces the
// closed-form flow map from the same x_T.
TEST(Pipeline, Float64EndToEndMatchesExactFlow) {
  const std::string path = (fs::temp_directory_path() / "scorch_pipe_gauss.safetensors").string();
  const GaussianModel g = testing::random_gaussian(6, 6, 31, {2, 3});
  save_gaussian(path, g);
  const YAML::Node c = load_config(kGaussianConfig, {"model.path=" + path, "dtype=float64", "batch=3", "sampler.name=heun",
                                        "sampler.steps=200", "output.png=", "sampler.t_end=0.001"});
  const auto p = Pipeline::from_config(c);
  const at::Tensor x_T = p->initial_noise();
  EXPECT_EQ(x_T.scalar_type(), at::kDouble);
  const GenerateResult r = p->generate();
  EXPECT_EQ(r.nfe, 400);
  const auto s = make_vp_linear();
  const at::Tensor ref = gaussian_flow(g, x_T, s->alpha(1.0), s->sigma(1.0), s->alpha(1e-3), s->sigma(1e-3));
  EXPECT_LT(((r.samples - ref).norm() / ref.norm()).item<double>(), 1e-3);
  fs::remove(path);
}

// SDEdit (init_image, strength) in float64 on a Gaussian model file: the run starts from
// x_{t_s} = alpha(t_s) x_init + sigma(t_s) z at t_s = t_end + strength (t_max - t_end), with
// z the seed's noise, and the sampler then follows the exact flow from there (heun, 200
// steps: relative error below 1e-3). One init sample serves the whole batch.
TEST(Pipeline, SdeditStartsFromTheNoisedInitImage) {
  const std::string model = (fs::temp_directory_path() / "scorch_sdedit.safetensors").string();
  const std::string init = (fs::temp_directory_path() / "scorch_sdedit_init.npy").string();
  const GaussianModel g = testing::random_gaussian(6, 6, 41, {2, 3});
  save_gaussian(model, g);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor x_init = at::randn({2, 3}, at::detail::createCPUGenerator(5), f64);
  write_npy(init, x_init, "init");
  const auto s = make_vp_linear();
  for (double strength : {0.4, 1.0}) {
    const YAML::Node c = load_config(
        kGaussianConfig, {"model.path=" + model, "dtype=float64", "batch=3", "sampler.name=heun", "sampler.steps=200",
                          "output.png=", "sampler.t_end=0.001", "seed=9", "init_image=" + init,
                          "strength=" + std::to_string(strength)});
    const auto p = Pipeline::from_config(c);
    const double t_s = 1e-3 + strength * (s->t_max() - 1e-3);
    const at::Tensor z = Rng::per_sample({9, 10, 11}).normal({3, 2, 3}, f64);  // sample i: seed 9 + i
    const at::Tensor x_s = s->alpha(t_s) * x_init.unsqueeze(0) + s->sigma(t_s) * z;
    EXPECT_LT((p->initial_noise() - x_s).abs().max().item<double>(), 1e-12) << strength;
    const at::Tensor ref = gaussian_flow(g, x_s, s->alpha(t_s), s->sigma(t_s), s->alpha(1e-3), s->sigma(1e-3));
    const at::Tensor got = p->generate().samples;
    EXPECT_LT(((got - ref).norm() / ref.norm()).item<double>(), 1e-3) << strength;
  }
  fs::remove(model);
  fs::remove(init);
}

// Inpainting (init_image + inpaint_mask) in float64 on a Gaussian with independent
// coordinates: the kept entries equal init_image exactly, and the generated entries, which
// the kept ones cannot influence here, equal an unmasked run from the same x_{t_s} (heun:
// no sampler noise) to 1e-12; strength defaults to 1 with a mask.
TEST(Pipeline, InpaintingKeepsTheKnownPartExactly) {
  const std::string dir = fs::temp_directory_path().string();
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  save_gaussian(dir + "/scorch_inpaint.safetensors", testing::diagonal_gaussian());
  const at::Tensor x_known = at::randn({2, 3}, at::detail::createCPUGenerator(8), f64);
  const at::Tensor mask = at::tensor({0.0, 1.0, 1.0, 1.0, 0.0, 1.0}, f64).reshape({2, 3});
  write_npy(dir + "/scorch_inpaint_init.npy", x_known, "t");
  write_npy(dir + "/scorch_inpaint_mask.npy", mask, "t");
  const std::vector<std::string> sets = {"model.path=" + dir + "/scorch_inpaint.safetensors", "dtype=float64",
                                         "batch=3", "sampler.name=heun", "sampler.steps=50", "output.png=",
                                         "sampler.t_end=0.001", "init_image=" + dir + "/scorch_inpaint_init.npy"};
  std::vector<std::string> masked = sets, plain = sets;
  masked.push_back("inpaint_mask=" + dir + "/scorch_inpaint_mask.npy");
  plain.push_back("strength=1");
  const auto pm = Pipeline::from_config(load_config(kGaussianConfig, masked));
  const auto pp = Pipeline::from_config(load_config(kGaussianConfig, plain));
  EXPECT_TRUE(at::equal(pm->initial_noise(), pp->initial_noise()));  // strength 1 by default
  const at::Tensor a = pm->generate().samples, b = pp->generate().samples;
  const at::Tensor keep = (mask == 0).expand_as(a), gen = (mask == 1).expand_as(a);
  EXPECT_TRUE(at::equal(a.masked_select(keep), x_known.expand_as(a).masked_select(keep)));
  EXPECT_LT((a.masked_select(gen) - b.masked_select(gen)).abs().max().item<double>(), 1e-12);
  EXPECT_GT((a.masked_select(keep) - b.masked_select(keep)).abs().max().item<double>(), 1e-3);
  for (const char* f : {"scorch_inpaint.safetensors", "scorch_inpaint_init.npy", "scorch_inpaint_mask.npy"})
    fs::remove(dir + "/" + f);
}

// Inpainting a correlated Gaussian, whose conditional is closed-form: plain replacement
// misses the conditional mean (here by 1.08 conditional standard deviations; 0.36 on
// tools/scripts/inpaint_check.py's Gaussian), and one MALA iteration per step alternating with the
// replacement brings it within 0.15 (measured 0.082; 4000 samples, where the sampling
// error of a mean is 0.016).
TEST(Pipeline, InpaintingWithCorrectorSamplesTheConditional) {
  const std::string dir = fs::temp_directory_path().string();
  const GaussianModel g = testing::random_gaussian(6, 6, 77, {6});
  save_gaussian(dir + "/scorch_inpaint_corr.safetensors", g);
  const at::Tensor sigma = at::mm(g.eigenvectors * g.eigenvalues.unsqueeze(0), g.eigenvectors.t());
  const at::Tensor std_dev = sigma.diagonal().sqrt();
  const at::Tensor x = g.mean + at::tensor({1.5, -1.0, 0.5, 0.0, 0.0, 0.0}, testing::kF64) * std_dev;
  write_npy(dir + "/scorch_inpaint_corr_x.npy", x, "t");
  write_npy(dir + "/scorch_inpaint_corr_m.npy", at::tensor({0.0, 0.0, 0.0, 1.0, 1.0, 1.0}, testing::kF64), "t");
  // Exact conditional of coordinates 3-5 given 0-2: mean mu_u + S_uk S_kk^-1 (x_k - mu_k).
  const at::Tensor s_kk = sigma.slice(0, 0, 3).slice(1, 0, 3), s_uk = sigma.slice(0, 3, 6).slice(1, 0, 3);
  const at::Tensor s_uu = sigma.slice(0, 3, 6).slice(1, 3, 6);
  const at::Tensor gain = at::linalg_solve(s_kk, s_uk.t()).t();
  const at::Tensor cond_mean = g.mean.slice(0, 3, 6) + at::mv(gain, x.slice(0, 0, 3) - g.mean.slice(0, 0, 3));
  const at::Tensor cond_std = (s_uu - at::mm(gain, s_uk.t())).diagonal().sqrt();
  auto mean_error = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> sets = {"model.path=" + dir + "/scorch_inpaint_corr.safetensors", "dtype=float64",
                                     "batch=4000", "sampler.name=dpmpp_2m_sde", "sampler.steps=100", "output.png=",
                                     "sampler.t_end=0.001", "init_image=" + dir + "/scorch_inpaint_corr_x.npy",
                                     "inpaint_mask=" + dir + "/scorch_inpaint_corr_m.npy"};
    sets.insert(sets.end(), extra.begin(), extra.end());
    const at::Tensor s = Pipeline::from_config(load_config(kGaussianConfig, sets))->generate().samples;
    return ((s.slice(1, 3, 6).mean(0) - cond_mean).abs() / cond_std).max().item<double>();
  };
  EXPECT_GT(mean_error({}), 0.5);
  EXPECT_LT(mean_error({"guidance.corrector.type=mala", "guidance.corrector.steps=1"}), 0.15);
  for (const char* f : {"scorch_inpaint_corr.safetensors", "scorch_inpaint_corr_x.npy", "scorch_inpaint_corr_m.npy"})
    fs::remove(dir + "/" + f);
}

// The same config and seed give bit-identical samples whatever the thread count.
void expect_thread_independent(const Pipeline& p) {
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor a = p.generate().samples;
  at::set_num_threads(2);
  const at::Tensor b = p.generate().samples;
  at::set_num_threads(before);
  EXPECT_TRUE(at::equal(a, b));
}

TEST(Pipeline, BitIdenticalAcrossThreadCounts) {
  const YAML::Node c = load_config(kGaussianConfig, {"output.png=", "batch=8", "sampler.name=euler_ancestral"});
  expect_thread_independent(*Pipeline::from_config(c));
}

TEST(Pipeline, InitNoiseAndConditioning) {
  const std::string npy = (fs::temp_directory_path() / "scorch_init.npy").string();
  const at::Tensor x = at::randn({2, 2, 3}, at::kDouble);
  write_npy(npy, x);
  const auto p = Pipeline::from_config(load_config(
      kGaussianConfig, {"model.type=torchscript", "model.path=" + kFixtures + "/echo_cond.pt", "model.shape=[2, 3]",
           "batch=2", "cond=[4, 5]", "init_noise=" + npy, "output.png=", "dtype=float64"}));
  EXPECT_TRUE(at::equal(p->initial_noise(), x));
  fs::remove(npy);
}

// output.trajectory holds x_T and the state after every step.
TEST(Pipeline, Trajectory) {
  const std::string npy = (fs::temp_directory_path() / "scorch_traj.npy").string();
  const auto p = Pipeline::from_config(
      load_config(kGaussianConfig, {"output.png=", "output.trajectory=" + npy, "batch=2", "sampler.name=dpmpp_2m",
                       "sampler.steps=5", "dtype=float64"}));
  const GenerateResult r = p->generate();
  p->write_outputs(r);
  const at::Tensor traj = read_npy(npy);
  EXPECT_EQ(traj.sizes(), at::IntArrayRef({6, 2, 1, 28, 28}));
  EXPECT_TRUE(at::allclose(traj[0].to(at::kDouble), p->initial_noise(), 0, 1e-6));
  EXPECT_TRUE(at::allclose(traj[5].to(at::kDouble), r.samples, 0, 1e-6));
  fs::remove(npy);
}

// Sample, then invert the samples with the same deterministic sampler: x_T comes back.
TEST(Pipeline, InvertRoundTrip) {
  const std::string model = (fs::temp_directory_path() / "scorch_inv_gauss.safetensors").string();
  const std::string samples = (fs::temp_directory_path() / "scorch_inv_samples.npy").string();
  save_gaussian(model, testing::random_gaussian(6, 6, 41, {2, 3}));
  const std::vector<std::string> common = {"model.path=" + model, "dtype=float64", "batch=4", "output.png=",
                                           "sampler.name=dpmpp_2m", "sampler.steps=200", "sampler.t_end=0.001"};
  auto sets = common;
  sets.push_back("output.npy=" + samples);
  const auto forward = Pipeline::from_config(load_config(kGaussianConfig, sets));
  const at::Tensor x_T = forward->initial_noise();
  // float64 samples for the round trip (output.npy is float32)
  const at::Tensor x0 = forward->generate().samples;
  write_npy(samples, x0);
  sets = common;
  sets.push_back("invert=" + samples);
  const auto inverse = Pipeline::from_config(load_config(kGaussianConfig, sets));
  const at::Tensor back = inverse->generate().samples;
  EXPECT_LT(((back - x_T).norm() / x_T.norm()).item<double>(), 1e-3);
  fs::remove(model);
  fs::remove(samples);
}

void expect_bad(const std::vector<std::string>& sets, const std::string& fragment) {
  try {
    Pipeline::from_config(load_config(kGaussianConfig, sets));
    FAIL() << "accepted " << fragment;
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::BadInput);
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Pipeline, SdeditRejectsBadInput) {
  const std::string dir = fs::temp_directory_path().string();
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  write_npy(dir + "/scorch_sd_ok.npy", at::zeros({1, 28, 28}, f64), "t");
  write_npy(dir + "/scorch_sd_shape.npy", at::zeros({5, 1, 28, 28}, f64), "t");
  write_npy(dir + "/scorch_sd_nan.npy", at::full({1, 28, 28}, NAN, f64), "t");
  write_npy(dir + "/scorch_sd_int.npy", at::zeros({1, 28, 28}, at::kLong), "t");
  const std::string ok = "init_image=" + dir + "/scorch_sd_ok.npy";
  expect_bad({ok, "strength=0"}, "strength: expected a number in (0, 1], got 0");
  expect_bad({ok, "strength=1.5"}, "strength: expected a number from 0 to 1, got '1.5'");
  expect_bad({ok, "init_noise=" + dir + "/scorch_sd_ok.npy"}, "init_image: give one of init_image, init_noise, invert");
  expect_bad({"init_image=" + dir + "/scorch_sd_shape.npy"},
             "has shape [5, 1, 28, 28]; expected one sample [1, 28, 28] or [batch, *shape] = [16, 1, 28, 28]");
  expect_bad({"init_image=" + dir + "/scorch_sd_nan.npy"}, "has non-finite values");
  expect_bad({"init_image=" + dir + "/scorch_sd_int.npy"}, "expected float32 or float64 data");
  write_npy(dir + "/scorch_sd_mask2.npy", at::full({28, 28}, 2.0, f64), "t");
  write_npy(dir + "/scorch_sd_mask_shape.npy", at::ones({3, 28}, f64), "t");
  expect_bad({"inpaint_mask=" + dir + "/scorch_sd_ok.npy"}, "inpaint_mask: needs init_image");
  expect_bad({ok, "inpaint_mask=" + dir + "/scorch_sd_mask2.npy"}, "inpaint_mask: expected values in [0, 1]");
  expect_bad({ok, "inpaint_mask=" + dir + "/scorch_sd_mask_shape.npy"}, "inpaint_mask: mask of shape [3, 28] does not broadcast");
  for (const char* f : {"ok", "shape", "nan", "int", "mask2", "mask_shape"}) fs::remove(dir + "/scorch_sd_" + f + ".npy");
}

// The default config (the shipped U-Net, one row per class) runs end to end.
TEST(Pipeline, DefaultConfigRunsEndToEnd) {
  const auto p = Pipeline::from_config(load_config("", {"batch=10", "output.png=", "sampler.steps=3"}));
  const GenerateResult r = p->generate();
  EXPECT_EQ(r.samples.sizes(), at::IntArrayRef({10, 1, 28, 28}));
  EXPECT_EQ(r.nfe, 3);
  EXPECT_TRUE(at::isfinite(r.samples).all().item<bool>());
  expect_thread_independent(*p);  // with the convolutional network too
}

// model.dtype=bfloat16 on the shipped U-Net: float32 samples close to the float32
// network's from the same x_T (relative RMS below 0.1 after the default 10 steps;
// measured 0.04 on 50 samples: each step carries the bfloat16 rounding of eps, amplified
// by sigma/alpha in the data prediction at high noise), and still the same for every
// thread count.
TEST(Pipeline, Bfloat16NetworkRunsEndToEnd) {
  const std::vector<std::string> sets = {"batch=10", "output.png="};
  std::vector<std::string> bf16_sets = sets;
  bf16_sets.push_back("model.dtype=bfloat16");
  const auto p = Pipeline::from_config(load_config("", bf16_sets));
  const at::Tensor a = p->generate().samples;
  const at::Tensor b = Pipeline::from_config(load_config("", sets))->generate().samples;
  EXPECT_EQ(a.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::isfinite(a).all().item<bool>());
  const double d = ((a - b).norm() / b.norm()).item<double>();
  EXPECT_LT(d, 0.1);
  EXPECT_GT(d, 0.0);
  expect_thread_independent(*p);
}

// On a GPU (skips without one): the same seed gives the same x_T as on the CPU, and
// Fashion-MNIST generation with dpmpp_2m matches the CPU's samples to float32 accuracy
// (cuDNN and oneDNN sum in different orders: relative RMS below 1e-3 after 10 steps).
TEST(Pipeline, CudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device (this LibTorch or machine has none)";
  const std::vector<std::string> sets = {"batch=20", "output.png=", "sampler.name=dpmpp_2m"};
  std::vector<std::string> gpu_sets = sets;
  gpu_sets.push_back("device=cuda");
  const auto cpu = Pipeline::from_config(load_config("", sets));
  const auto gpu = Pipeline::from_config(load_config("", gpu_sets));
  EXPECT_TRUE(at::equal(gpu->initial_noise().cpu(), cpu->initial_noise()));
  const at::Tensor a = gpu->generate().samples, b = cpu->generate().samples;
  EXPECT_LT(((a.cpu() - b).norm() / b.norm()).item<double>(), 1e-3);
}

TEST(Pipeline, RejectsBadConfigs) {
  expect_bad({"strength=0.5"}, "strength: needs init_image");
  expect_bad({"init_image=/nonexistent.npy"}, "init_image");
  expect_bad({"init_image=" + kFixtures + "/not_a_model.pt"}, "init_image");
  expect_bad({"model.dtype=int8"}, "model.dtype: expected float32 | float64 | bfloat16 | float16, got 'int8'");
  expect_bad({"model.dtype=bfloat16"}, "model.dtype: only torchscript models take a dtype of their own");
  expect_bad({"sampler.name=nope"}, "unknown sampler 'nope'");
  expect_bad({"sampler.etaa=1"}, "sampler.etaa: unknown key");
  expect_bad({"sampler.stpes=3"}, "sampler.stpes: unknown key; did you mean 'steps'?");
  expect_bad({"model.predicton=eps"}, "did you mean 'prediction'?");
  expect_bad({"sampler.steps=0"}, "sampler.steps");
  expect_bad({"sampler.steps=ten"}, "sampler.steps: expected an integer");
  expect_bad({"batch=0"}, "batch");
  expect_bad({"dtype=float8"}, "dtype");
  expect_bad({"device=cuda"}, "device");
  expect_bad({"schedule.type=cosine"}, "schedule.type");
  expect_bad({"schedule.beta_1=-1"}, "schedule.beta_1: expected a number from 0 to 1000");
  expect_bad({"colour=red"}, "colour: unknown key");
  expect_bad({"model.path=/nonexistent.safetensors"}, "model.path");
  expect_bad({"model.shape=[1, 2]"}, "model.shape");
  expect_bad({"model.type=onnx"}, "model.type");
  expect_bad({"cond=3"}, "cond: the model takes no condition");
  expect_bad({"init_noise=/nonexistent.npy"}, "npy");
  expect_bad({"output.png=/nonexistent_dir/x.png"}, "output.png");
  expect_bad({"output.trajectory=/nonexistent_dir/t.npy"}, "output.trajectory");
  expect_bad({"invert=/nonexistent.npy"}, "npy");
  const std::string x_npy = (fs::temp_directory_path() / "scorch_pipeline_invert_x.npy").string();
  write_npy(x_npy, at::zeros({1, 2}));
  expect_bad({"invert=" + x_npy, "sampler.name=euler_ancestral"}, "invert: sampler 'euler_ancestral' adds noise");
  fs::remove(x_npy);
  expect_bad({"invert=/dev/zero"}, "invert: '/dev/zero' is a character device");
  expect_bad({"sampler.name=dpmpp_2m", "sampler.order=3"}, "fixes it to 2");
  expect_bad({"model.type=torchscript", "model.path=" + kFixtures + "/gaussian_eps.pt"}, "model.shape: required");
  expect_bad({"model.type=torchscript", "model.path=" + kFixtures + "/echo_cond.pt", "model.shape=[2, 3]",
              "output.png="},
             "cond: the model is conditional");
  expect_bad({"model.type=torchscript", "model.path=" + kFixtures + "/gaussian_eps.pt", "model.shape=[4, 2, 3]"},
             "output.png: samples of shape [4, 2, 3]");
}

// Guidance from the config on the shipped U-Net: classifier-free guidance costs one
// batched call per step; a masked score-mixture term with a reference sample (inverted
// at load) runs; a weight-0 term changes nothing.
TEST(Pipeline, GuidanceFromConfig) {
  const std::vector<std::string> base = {"batch=10", "output.png=", "sampler.steps=4"};
  const GenerateResult plain = Pipeline::from_config(load_config("", base))->generate();
  auto with = [&](std::vector<std::string> sets) {
    sets.insert(sets.begin(), base.begin(), base.end());
    return Pipeline::from_config(load_config("", sets))->generate();
  };
  const GenerateResult cfg = with({"guidance.scale=3"});
  EXPECT_EQ(cfg.nfe, 4);
  EXPECT_GT((cfg.samples - plain.samples).abs().max().item<double>(), 0.1);

  const fs::path dir = fs::temp_directory_path() / "scorch_guidance_cfg";
  fs::create_directories(dir);
  write_npy((dir / "ref.npy").string(), plain.samples.narrow(0, 3, 1).contiguous(), "ref");
  at::Tensor mask = at::zeros({1, 1, 28, 28});
  mask.narrow(3, 0, 14).fill_(1.0);
  write_npy((dir / "mask.npy").string(), mask[0], "mask");
  const std::string yaml = (dir / "msg.yaml").string();
  {
    std::ofstream f(yaml);
    f << "guidance:\n  terms:\n    - cond: same\n      ref_cond: same\n      weight: [[0.5, 0.0], [1.0, 2.0]]\n"
         "      window: [0.3, 1.0]\n      mask: " << (dir / "mask.npy").string() << "\n      reference: "
      << (dir / "ref.npy").string() << "\n      reference_cond: 0\n      reference_steps: 10\n";
  }
  YAML::Node c = load_config("", base);
  c["guidance"] = YAML::LoadFile(yaml)["guidance"];
  const GenerateResult msg = Pipeline::from_config(c)->generate();
  EXPECT_EQ(msg.nfe, 4);
  // the term acts on the left half only (the mask): the right half moves less
  const at::Tensor diff = (msg.samples - plain.samples).abs();
  EXPECT_GT(diff.narrow(3, 0, 14).mean().item<double>(), 2 * diff.narrow(3, 14, 14).mean().item<double>());
  c["guidance"]["terms"][0]["weight"] = 0;
  EXPECT_TRUE(at::equal(Pipeline::from_config(c)->generate().samples, plain.samples));
  fs::remove_all(dir);
}

// The msg sampler wrapper is the same guidance as guidance.terms, bit for bit.
TEST(Pipeline, MsgSamplerEqualsGuidanceTerms) {
  const std::string terms = "[{cond: 3, weight: [[0.0, 0.5], [1.0, 2.0]], window: [0.2, 1.0]}]";
  const std::vector<std::string> base = {"batch=10", "output.png=", "sampler.steps=5"};
  std::vector<std::string> a = base, b = base;
  a.insert(a.end(), {"guidance.scale=1.5", "guidance.terms=" + terms});
  b.insert(b.end(), {"sampler.name=msg", "sampler.scale=1.5", "sampler.terms=" + terms, "sampler.inner.name=dpmpp_2m"});
  const GenerateResult ra = Pipeline::from_config(load_config("", a))->generate();
  const GenerateResult rb = Pipeline::from_config(load_config("", b))->generate();
  EXPECT_TRUE(at::equal(ra.samples, rb.samples));
  EXPECT_EQ(ra.nfe, 5);
  EXPECT_EQ(rb.nfe, 5);
}

TEST(Pipeline, RejectsBadGuidance) {
  expect_bad({"guidance.scale=3"}, "guidance.scale: classifier-free guidance needs a conditional model");
  expect_bad({"guidance.colour=3"}, "guidance.colour: unknown key");
  expect_bad({"guidance.apg.eta=0"}, "guidance: rescale, interval, apg and cfg_zero_star vary classifier-free guidance");
  expect_bad({"guidance.corrector.type=langevin"}, "guidance.corrector.type");
  expect_bad({"guidance.corrector.type=ula", "guidance.corrector.steps=0"}, "guidance.corrector.steps");
  expect_bad({"guidance.compose.mode=and"}, "guidance.compose.mode");
  expect_bad({"guidance.compose.mode=product"}, "guidance.compose.models");
  auto bad_default = [](std::vector<std::string> sets, const std::string& fragment) {
    sets.push_back("batch=10");
    try {
      Pipeline::from_config(load_config("", sets))->generate();  // sampler options are read by the run
      FAIL() << "accepted " << fragment;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  bad_default({"guidance.scale=2", "guidance.corrector.type=mala"}, "needs the log-density");
  bad_default({"guidance.classifier.path=/nonexistent.pt"}, "guidance.classifier.path");
  bad_default({"guidance.classifier.path=models/fmnist_classifier.pt"}, "noise-conditional classifier");
  bad_default({"guidance.scale=2", "guidance.null_label=-1"}, "guidance.null_label");
  bad_default({"guidance.terms=[{cond: 3}]"}, "guidance.terms[0].weight: missing");
  bad_default({"guidance.terms=[{cond: 3, weight: 1, colour: red}]"}, "guidance.terms[0].colour: unknown key");
  bad_default({"guidance.terms=[{weight: 1, mask: /nonexistent.png}]"}, "guidance.terms[0].mask");
  bad_default({"guidance.terms=[{weight: 1, window: [0.9, 0.1]}]"}, "guidance.terms[0].window");
  bad_default({"guidance.scale=3", "guidance.rescale=1.5"}, "guidance.rescale: expected a number from 0 to 1");
  bad_default({"guidance.scale=3", "guidance.interval=[5, 1]"}, "guidance.interval: expected [sigma_lo, sigma_hi]");
  bad_default({"guidance.scale=3", "guidance.interval=2"}, "guidance.interval: expected [sigma_lo, sigma_hi]");
  bad_default({"guidance.scale=3", "guidance.apg.norm_threshold=-1"}, "guidance.apg.norm_threshold");
  bad_default({"guidance.scale=3", "guidance.apg.colour=1"}, "guidance.apg.colour: unknown key");
  bad_default({"guidance.scale=3", "guidance.apg.eta=0", "guidance.cfg_zero_star.zero_steps=1"}, "give one");
  bad_default({"guidance.scale=3", "guidance.cfg_zero_star.zero_steps=-1"}, "guidance.cfg_zero_star.zero_steps");
  bad_default({"guidance.scale=3", "guidance.cfg_zero_star.use_zero_init=true"}, "zero-init is for flow schedules");
  bad_default({"sampler.name=msg", "sampler.inner.name=msg"}, "msg cannot wrap itself");
  bad_default({"sampler.name=msg", "sampler.terms=[{cond: x, weight: 1}]"}, "sampler.terms[0].cond");
  bad_default({"sampler.name=msg", "sampler.terms=[{weight: 1, reference: r.npy}]"}, "sampler.terms[0].reference");
}

}  // namespace
}  // namespace scorch
