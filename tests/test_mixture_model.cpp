// gmm and empirical models: files, posterior means, and sampling correctness.
#include "scorch/mixture_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "scorch/error.h"
#include "scorch/io.h"
#include "support/sampler_harness.h"

namespace fs = std::filesystem;

namespace scorch {
namespace {

const auto f64 = at::TensorOptions().dtype(at::kDouble);

std::string tmp(const std::string& name) { return (fs::temp_directory_path() / ("scorch_mm_" + name)).string(); }

void save_gmm(const std::string& path, const at::Tensor& w, const at::Tensor& mu, const at::Tensor& var,
              const std::string& cov = "isotropic") {
  SafeTensors st;
  st.tensors = {{"weights", w}, {"means", mu}, {"variances", var}};
  st.metadata = {{"scorch.type", "gmm"}, {"scorch.cov", cov}};
  write_safetensors(path, st);
}

// Sliced Wasserstein-1 distance with `n` random directions (1-d W1 of sorted projections).
double sliced_wasserstein(const at::Tensor& a, const at::Tensor& b, int n, uint64_t seed) {
  const at::Tensor dirs = at::randn({a.size(1), n}, at::detail::createCPUGenerator(seed), f64);
  const at::Tensor u = dirs / dirs.norm(2, 0, true);
  const at::Tensor pa = std::get<0>(a.to(at::kDouble).mm(u).sort(0)), pb = std::get<0>(b.to(at::kDouble).mm(u).sort(0));
  return (pa - pb).abs().mean().item<double>();
}

TEST(MixtureModel, EmpiricalFileAndPosterior) {
  const at::Tensor data = at::randn({40, 6}, at::detail::createCPUGenerator(1), f64);
  const std::string p = tmp("emp.safetensors");
  save_empirical(p, data, {2, 3}, 0.1);
  MixtureModel m = load_mixture_model(p, "empirical");
  EXPECT_EQ(m.shape, (std::vector<int64_t>{2, 3}));
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto model = make_mixture_denoiser(m, sched);
  const at::Tensor x = at::randn({5, 2, 3}, at::detail::createCPUGenerator(2), f64);
  const double t = 0.3;
  testing::DiagonalMixture ref{at::full({40}, 1.0 / 40, f64), data.to(at::kFloat).to(at::kDouble),
                               at::full({40, 6}, 0.01, f64)};
  const at::Tensor expected = testing::mixture_x0(ref, x, sched->alpha(t), sched->sigma(t));
  EXPECT_LT((model->predict(x, t, {}).x0 - expected).abs().max().item<double>(), 1e-6);
  EXPECT_THROW(load_mixture_model(p, "gmm"), Error);
  fs::remove(p);
}

// With no smoothing the exact score of a data set carries every sample to a data point.
TEST(MixtureModel, EmpiricalScoreMemorises) {
  const at::Tensor data = at::tensor({-1.0, -1.0, 1.0, 0.5, 0.0, 1.5, 1.2, -0.8, -0.5, 0.2}, f64).view({5, 2});
  const std::string p = tmp("mem.safetensors");
  save_empirical(p, data, {2});
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto model = make_mixture_denoiser(load_mixture_model(p, "empirical"), sched);
  const at::Tensor x_T = Rng(4).normal({200, 2}, f64);
  const at::Tensor x = testing::run_sampler("dpmpp_2m", *model, *sched, x_T, {{"steps", "100"}, {"t_end", "0.0001"}}).x;
  const at::Tensor nearest = std::get<0>(at::cdist(x, data.to(at::kFloat).to(at::kDouble)).min(1));
  EXPECT_LT(nearest.max().item<double>(), 0.02);
  fs::remove(p);
}

// dpmpp_2m with 50 steps on a known 2-d and 16-d mixture: the sliced Wasserstein distance
// to exact samples of the marginal at t_end (starting from exact samples at t = 1) is within
// 1.5x of the distance between two exact sample sets of the same size (means over 8 sets).
TEST(MixtureModel, Dpmpp2mSamplesKnownMixtures) {
  for (int64_t d : {2, 16}) {
    at::Generator gen = at::detail::createCPUGenerator(10 + d);
    const int64_t k = 6, n = 4000;
    const at::Tensor w = at::softmax(at::randn({k}, gen, f64), 0), mu = at::randn({k, d}, gen, f64) * 2.0,
                     var = at::rand({k}, gen, f64) * 0.2 + 0.05;
    const std::string p = tmp("gmm.safetensors");
    save_gmm(p, w, mu, var);
    std::shared_ptr<const Schedule> sched = make_vp_linear();
    auto model = make_mixture_denoiser(load_mixture_model(p, "gmm"), sched);
    // exact samples of the noised marginal at time t
    auto exact = [&](uint64_t seed, double t = 1e-3) {
      const double a = sched->alpha(t), s = sched->sigma(t);
      at::Generator g = at::detail::createCPUGenerator(seed);
      const at::Tensor comp = at::multinomial(w, n, true, g);
      const at::Tensor x0 = mu.index_select(0, comp) + var.index_select(0, comp).sqrt().unsqueeze(1) * at::randn({n, d}, g, f64);
      return a * x0 + s * at::randn({n, d}, g, f64);
    };
    // x_T from the exact marginal at t = 1, so that the flow maps marginal to marginal
    const at::Tensor x = testing::run_sampler("dpmpp_2m", *model, *sched, exact(300, 1.0),
                                              {{"steps", "50"}, {"t_end", "0.001"}})
                             .x;
    // SW estimates at this size scatter by +-30%: compare means over 8 reference sets.
    double sw = 0.0, floor = 0.0;
    for (int j = 0; j < 8; ++j) {
      const at::Tensor ref = exact(100 + j);
      sw += sliced_wasserstein(x, ref, 128, 5) / 8;
      floor += sliced_wasserstein(exact(200 + j), ref, 128, 5) / 8;
    }
    EXPECT_LT(sw, 1.5 * floor) << "d = " << d << ": sampled " << sw << " vs exact-exact " << floor;
    fs::remove(p);
  }
}

TEST(MixtureModel, RejectsBadFiles) {
  const std::string p = tmp("bad.safetensors");
  save_gmm(p, at::ones({3}, f64), at::zeros({2, 4}, f64), at::ones({3}, f64));  // K disagrees
  EXPECT_THROW(load_mixture_model(p, "gmm"), Error);
  save_gmm(p, at::ones({2}, f64), at::zeros({2, 4}, f64), -at::ones({2}, f64));  // negative variance
  EXPECT_THROW(load_mixture_model(p, "gmm"), Error);
  save_gmm(p, at::ones({2}, f64), at::zeros({2, 4}, f64), at::ones({2}, f64), "full");
  EXPECT_THROW(load_mixture_model(p, "gmm"), Error);
  EXPECT_THROW(load_mixture_model("/nonexistent.safetensors", "gmm"), Error);
  fs::remove(p);
}

}  // namespace
}  // namespace scorch
