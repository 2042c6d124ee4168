// Declared network inputs (model.inputs): row selection by sample index, negatives for
// classifier-free guidance in the same batched call, and every bad input named.
#include "scorch/model_inputs.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/script.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "scorch/error.h"
#include "scorch/guidance.h"
#include "scorch/io.h"
#include "scorch/pipeline.h"
#include "scorch/schedule.h"
#include "scorch/torchscript_denoiser.h"

namespace fs = std::filesystem;
using namespace scorch;

namespace {

const std::string kFixtures = SCORCH_FIXTURES;
const auto kF64 = at::TensorOptions().dtype(at::kDouble);

at::Tensor longs(std::vector<int64_t> v) { return at::tensor(v, at::TensorOptions().dtype(at::kLong)); }

ModelInput tensor_input(const std::string& name, std::vector<int64_t> shape) {
  ModelInput in;
  in.name = name;
  in.shape = std::move(shape);
  in.dtype = at::kDouble;
  return in;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ModelInputs, RowsFollowTheSampleIndexAndNegativesTheirOwnSample) {
  ModelInput label;
  label.name = "label";
  label.source = ModelInput::Source::Label;
  label.dtype = at::kLong;
  ModelInput scalar;
  scalar.name = "guidance";
  scalar.source = ModelInput::Source::Scalar;
  scalar.dtype = at::kDouble;
  ModelInputs table({tensor_input("context", {2}), label, scalar});
  const at::Tensor per_sample = at::arange(6, kF64).view({3, 2});
  table.set("context", per_sample, false, 3, "");
  table.set("context", at::tensor({-1.0, -2.0}, kF64), true, 3, "");  // one negative for the batch
  table.set("label", longs({7, 8, 9}), false, 3, "");
  table.set("label", at::scalar_tensor(10, at::kLong), true, 3, "");
  table.set("guidance", at::scalar_tensor(3.5, at::kDouble), false, 3, "");
  table.check_ready(3);
  EXPECT_TRUE(table.has_negative());

  // Rows: sample 2, sample 0, sample 1's negative, sample 0's negative.
  const auto args = table.arguments(longs({2, 0, -2, -1}), at::kCPU);
  ASSERT_EQ(args.size(), 3u);
  const at::Tensor ctx = args[0].toTensor();
  EXPECT_TRUE(at::equal(ctx, at::tensor({4.0, 5.0, 0.0, 1.0, -1.0, -2.0, -1.0, -2.0}, kF64).view({4, 2})));
  EXPECT_TRUE(at::equal(args[1].toTensor(), longs({9, 7, 10, 10})));
  EXPECT_TRUE(at::equal(args[2].toTensor(), at::full({4}, 3.5, kF64)));
}

TEST(ModelInputs, BroadcastValueWithoutNegativeServesEveryRow) {
  ModelInputs table({tensor_input("context", {2, 2})});
  table.set("context", at::ones({2, 2}, kF64), false, 0, "");
  EXPECT_FALSE(table.has_negative());
  const at::Tensor a = table.arguments(longs({5, -3}), at::kCPU)[0].toTensor();
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{2, 2, 2}));
  EXPECT_TRUE(at::equal(a, at::ones({2, 2, 2}, kF64)));
}

TEST(ModelInputs, BadValuesNameTheInput) {
  ModelInputs table({tensor_input("context", {3, 4})});
  EXPECT_NE(error_of([&] { table.set("context", at::zeros({5, 4}, kF64), false, 2, "'a.npy'"); })
                .find("model.inputs 'context' from 'a.npy': shape [5, 4] is neither [3, 4]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { table.set("context", at::zeros({3, 3, 4}, kF64), false, 2, ""); }).find("[2, 3, 4]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { table.set("context", at::zeros({3, 4}, at::kLong), false, 2, ""); })
                .find("expected floating-point data"),
            std::string::npos);
  EXPECT_NE(error_of([&] { table.set("context", at::full({3, 4}, NAN, kF64), false, 2, ""); }).find("non-finite"),
            std::string::npos);
  EXPECT_NE(error_of([&] { table.set("ctx", at::zeros({3, 4}, kF64), false, 2, ""); })
                .find("no input named 'ctx' (declared: context)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { table.check_ready(2); }).find("'context': no value"), std::string::npos);
  table.set("context", at::zeros({4, 3, 4}, kF64), false, 0, "");  // rows are checked against the batch later
  EXPECT_NE(error_of([&] { table.check_ready(2); }).find("4 rows for a batch of 2"), std::string::npos);
  EXPECT_NE(error_of([&] { table.arguments(longs({4}), at::kCPU); }).find("has 4 rows"),
            std::string::npos);
}

struct Loaded {
  std::unique_ptr<Denoiser> denoiser;
  std::shared_ptr<ModelInputs> inputs;
};

Loaded load_tensor_cond(std::shared_ptr<const Schedule> sched, std::vector<ModelInput> inputs) {
  TorchScriptSpec spec;
  spec.path = kFixtures + "/tensor_cond.pt";
  spec.shape = {2, 3};
  spec.dtype = at::kDouble;
  spec.inputs = std::make_shared<ModelInputs>(std::move(inputs));
  Loaded out;
  out.inputs = spec.inputs;
  out.denoiser = load_torchscript_denoiser(spec, sched);
  return out;
}

std::vector<ModelInput> context_and_guidance() {
  ModelInput g;
  g.name = "guidance";
  g.source = ModelInput::Source::Scalar;
  g.dtype = at::kDouble;
  return {tensor_input("context", {3, 4}), g};
}

// CFG with tensor conditioning: eps = eps(x, negative) + s (eps(x, context) - eps(x, negative)),
// both evaluated in one batched call (NFE 1), against the module called directly.
TEST(ModelInputs, ClassifierFreeGuidanceEqualsTheFormulaInOneBatchedCall) {
  const auto sched = std::shared_ptr<const Schedule>(make_vp_linear());
  Loaded m = load_tensor_cond(sched, context_and_guidance());
  const int64_t b = 3;
  const at::Tensor ctx = at::randn({b, 3, 4}, kF64), neg = at::randn({3, 4}, kF64);
  m.inputs->set("context", ctx, false, b, "");
  m.inputs->set("context", neg, true, b, "");
  m.inputs->set("guidance", at::scalar_tensor(2.0, at::kDouble), false, b, "");
  GuidanceSpec g;
  g.cfg_scale = 4.0;
  g.indexed = true;
  auto guided = make_guided_denoiser(std::shared_ptr<Denoiser>(std::move(m.denoiser)), sched, g);

  const double t = 0.6;
  const at::Tensor x = at::randn({b, 2, 3}, kF64);
  const Prediction p = guided->predict(x, t, at::arange(b, at::TensorOptions().dtype(at::kLong)));
  EXPECT_EQ(guided->last_calls(), 1);

  torch::jit::Module module = torch::jit::load(kFixtures + "/tensor_cond.pt");
  module.to(at::kDouble);
  const at::Tensor tt = at::full({b}, t, kF64), gg = at::full({b}, 2.0, kF64);
  const at::Tensor eps_c = module.forward({x, tt, ctx, gg}).toTensor();
  const at::Tensor eps_u = module.forward({x, tt, neg.expand({b, 3, 4}), gg}).toTensor();
  const at::Tensor expected = eps_u + 4.0 * (eps_c - eps_u);
  EXPECT_LT((p.eps - expected).abs().max().item<double>(), 1e-12);
  // A guided row is not the conditional one: the test can fail.
  EXPECT_GT((expected - eps_c).abs().max().item<double>(), 1e-3);
}

TEST(ModelInputs, LoadChecksArityAndTheModulesArgumentNames) {
  const auto sched = std::shared_ptr<const Schedule>(make_vp_linear());
  auto swapped = context_and_guidance();
  std::swap(swapped[0], swapped[1]);
  EXPECT_NE(error_of([&] { load_tensor_cond(sched, swapped); })
                .find("argument 3 of forward is 'context', but model.inputs[0] is 'guidance'"),
            std::string::npos);
  auto one = context_and_guidance();
  one.pop_back();
  EXPECT_NE(error_of([&] { load_tensor_cond(sched, one); })
                .find("forward takes 4 arguments; model.inputs declares forward(x, t, context)"),
            std::string::npos);
  auto wrong_shape = context_and_guidance();
  wrong_shape[0].shape = {4, 3};  // the dry run meets the module's own check
  EXPECT_NE(error_of([&] { load_tensor_cond(sched, wrong_shape); }).find("context must be [B, 3, 4]"),
            std::string::npos);
}

// Through the config: per-sample files in a batch, CFG, and the same sample with a
// different batch gives the same result (rows follow the sample, not the position).
class ModelInputsPipeline : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("scorch_inputs_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  YAML::Node config(int64_t batch, const std::string& context_file, double scale) const {
    YAML::Node c = YAML::Load(
        "dtype: float64\n"
        "model: {type: torchscript, shape: [2, 3], prediction: eps}\n"
        "sampler: {name: ddim, steps: 4}\n");
    c["model"]["path"] = kFixtures + "/tensor_cond.pt";
    c["batch"] = batch;
    c["seed"] = 11;
    YAML::Node ctx;
    ctx["name"] = "context";
    ctx["file"] = context_file;
    ctx["negative_file"] = path("neg.npy");
    ctx["shape"] = YAML::Load("[3, 4]");
    YAML::Node g = YAML::Load("{name: guidance, source: scalar, value: 1.5}");
    c["model"]["inputs"].push_back(ctx);
    c["model"]["inputs"].push_back(g);
    if (scale != 1.0) c["guidance"]["scale"] = scale;
    return c;
  }
  fs::path dir_;
};

TEST_F(ModelInputsPipeline, PerSampleInputsFollowTheSampleAcrossBatchSizes) {
  const at::Tensor ctx = at::randn({5, 3, 4}, kF64);
  write_npy(path("ctx5.npy"), ctx);
  write_npy(path("ctx2.npy"), ctx.narrow(0, 3, 2).contiguous());  // samples 3 and 4 alone
  write_npy(path("neg.npy"), at::zeros({3, 4}, kF64));
  const auto r5 = Pipeline::from_config(config(5, path("ctx5.npy"), 3.0))->generate();
  YAML::Node c2 = config(2, path("ctx2.npy"), 3.0);
  c2["seed"] = YAML::Load("[14, 15]");  // sample i of the batch of 5 has seed 11 + i
  const auto r2 = Pipeline::from_config(c2)->generate();
  EXPECT_EQ(r5.nfe, 4);  // one batched call per step with CFG
  EXPECT_LT((r5.samples.narrow(0, 3, 2) - r2.samples).abs().max().item<double>(), 1e-12);
  EXPECT_GT((r5.samples.narrow(0, 0, 2) - r2.samples).abs().max().item<double>(), 1e-3);
  YAML::Node u2 = config(2, path("ctx2.npy"), 1.0);
  u2["seed"] = YAML::Load("[14, 15]");
  const auto unguided = Pipeline::from_config(u2)->generate();
  EXPECT_GT((unguided.samples - r2.samples).abs().max().item<double>(), 1e-3);
}

TEST_F(ModelInputsPipeline, BadInputIsOneErrorNamingTheInput) {
  write_npy(path("neg.npy"), at::zeros({3, 4}, kF64));
  write_npy(path("ctx3.npy"), at::zeros({3, 3, 4}, kF64));
  write_npy(path("bad.npy"), at::zeros({3, 5}, kF64));
  EXPECT_NE(error_of([&] { Pipeline::from_config(config(2, path("ctx3.npy"), 1.0)); })
                .find("model.inputs 'context': 3 rows for a batch of 2"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Pipeline::from_config(config(2, path("bad.npy"), 1.0)); })
                .find("model.inputs 'context' from '" + path("bad.npy") + "': shape [3, 5] is neither [3, 4]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Pipeline::from_config(config(2, path("missing.npy"), 1.0)); }).find("missing.npy"),
            std::string::npos);
  YAML::Node no_neg = config(3, path("ctx3.npy"), 2.0);
  no_neg["model"]["inputs"][0].remove("negative_file");
  EXPECT_NE(error_of([&] { Pipeline::from_config(no_neg); }).find("needs unconditional inputs"), std::string::npos);
  YAML::Node with_cond = config(3, path("ctx3.npy"), 1.0);
  with_cond["cond"] = 2;
  EXPECT_NE(error_of([&] { Pipeline::from_config(with_cond); }).find("take no class label"), std::string::npos);
  YAML::Node no_shape = config(3, path("ctx3.npy"), 1.0);
  no_shape["model"]["inputs"][0].remove("shape");
  EXPECT_NE(error_of([&] { Pipeline::from_config(no_shape); }).find("model.inputs[0].shape: missing"),
            std::string::npos);
  YAML::Node unknown = config(3, path("ctx3.npy"), 1.0);
  unknown["model"]["inputs"][1]["file"] = "x.npy";
  EXPECT_NE(error_of([&] { Pipeline::from_config(unknown); }).find("model.inputs[1].file: only for source file"),
            std::string::npos);
}

TEST_F(ModelInputsPipeline, SafetensorsByKeyAndHostValues) {
  SafeTensors st;
  st.tensors["ctx"] = at::randn({3, 4}, kF64);
  write_safetensors(path("c.safetensors"), st);
  write_npy(path("neg.npy"), at::zeros({3, 4}, kF64));
  YAML::Node c = config(2, path("c.safetensors"), 1.0);
  EXPECT_NE(error_of([&] { Pipeline::from_config(c); }).find("has no tensor 'context' (it has: ctx)"),
            std::string::npos);
  c["model"]["inputs"][0]["key"] = "ctx";
  const auto from_file = Pipeline::from_config(c)->generate();
  // The same values given as a host input.
  YAML::Node h = config(2, "", 1.0);
  h["model"]["inputs"][0].remove("file");
  h["model"]["inputs"][0].remove("negative_file");
  h["model"]["inputs"][0]["source"] = "host";
  auto p = Pipeline::from_config(h);
  EXPECT_NE(error_of([&] { p->generate(); }).find("'context': no value"), std::string::npos);
  p->set_input("context", st.tensors["ctx"]);
  EXPECT_TRUE(at::equal(p->generate().samples, from_file.samples));
}

}  // namespace
