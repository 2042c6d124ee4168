// gmm and empirical models: files, posterior means, and sampling correctness.
#include "scorch/mixture_model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include <cstdio>
#include <filesystem>

#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/schedule.h"
#include "support/random_gaussian.h"
#include "support/sampler_harness.h"

namespace fs = std::filesystem;

namespace scorch {
namespace {

const auto f64 = at::TensorOptions().dtype(at::kDouble);

std::string tmp(const std::string& name) { return (fs::temp_directory_path() / ("scorch_mm_" + name)).string(); }

void write_gmm(const std::string& path, const at::Tensor& w, const at::Tensor& mu, const at::Tensor& var,
              const std::string& cov = "isotropic") {
  SafeTensors st;
  st.tensors = {{"weights", w}, {"means", mu}, {"variances", var}};
  st.metadata = {{"scorch.type", "gmm"}, {"scorch.cov", cov}};
  write_safetensors(path, st);
}

const Covariance kAllCovariances[] = {Covariance::Isotropic, Covariance::Diagonal, Covariance::LowRank,
                                      Covariance::Full};

// VP (continuous and discrete), EDM and rectified flow (shift 3).
std::vector<std::shared_ptr<const Schedule>> three_schedules() {
  return {make_vp_linear(), make_vp_discrete(alphas_cumprod_from_betas(make_betas("linear", 1e-4, 0.02, 1000))),
          make_edm(), make_flow(3.0)};
}

// Under flow at t = 1 (alpha = 0, pure noise) every covariance type's posterior mean is the
// prior mean sum_k pi_k mu_k, and the empirical model's the data mean.
TEST(MixtureModel, PureNoiseGivesThePriorMean) {
  for (Covariance cov : kAllCovariances) {
    const GaussianMixture m = testing::random_gmm(cov, 20);
    const at::Tensor x = at::randn({6, 7}, at::detail::createCPUGenerator(21), f64);
    const at::Tensor prior = (m.log_weights.exp().unsqueeze(1) * m.means).sum(0);
    const MixturePosterior p = gmm_posterior(m, x, 0.0, 1.0);
    EXPECT_LT((p.x0 - prior.expand_as(x)).abs().max().item<double>(), 1e-12) << covariance_name(cov);
  }
}

// Every covariance type against the textbook formulas with dense matrices:
// log p = logsumexp_k [log pi_k + log N(x; alpha mu_k, C_k)], E[x0|x] = sum_k w_k (mu_k + alpha Sigma_k C_k^-1 y_k).
TEST(MixtureModel, EveryCovarianceMatchesDenseFormulas) {
  for (Covariance cov : kAllCovariances) {
    const GaussianMixture m = testing::random_gmm(cov, 20);
    const at::Tensor sigma_k = testing::dense_covariances(m);
    for (const auto& s : three_schedules()) {
      for (double w : {0.05, 0.5, 0.95}) {
        const double t = s->t_min() + w * (s->t_max() - s->t_min()), alpha = s->alpha(t), sigma = s->sigma(t);
        const at::Tensor x = at::randn({6, 7}, at::detail::createCPUGenerator(21), f64) * (alpha * 2 + sigma);
        const at::Tensor c = alpha * alpha * sigma_k + sigma * sigma * at::eye(7, f64);
        const at::Tensor y = x.unsqueeze(0) - alpha * m.means.unsqueeze(1);                 // [K, N, D]
        const at::Tensor c_inv_y = at::linalg_solve(c, y.transpose(1, 2)).transpose(1, 2);  // [K, N, D]
        const at::Tensor logits = (m.log_weights.unsqueeze(1) -
                                   0.5 * (7 * std::log(2 * M_PI) + at::logdet(c).unsqueeze(1) + (y * c_inv_y).sum(2)))
                                      .t();
        const at::Tensor resp = at::softmax(logits, 1);                                     // [N, K]
        const at::Tensor comp_x0 = m.means.unsqueeze(1) + alpha * at::bmm(c_inv_y, sigma_k);  // Sigma symmetric
        const at::Tensor x0 = (resp.t().unsqueeze(2) * comp_x0).sum(0);
        for (int64_t block : {0, 2}) {
          const MixturePosterior p = gmm_posterior(m, x, alpha, sigma, block);
          EXPECT_LT((p.x0 - x0).abs().max().item<double>(), 1e-9) << covariance_name(cov) << " " << s->name();
          EXPECT_LT((p.log_density - at::logsumexp(logits, 1)).abs().max().item<double>(), 1e-9)
              << covariance_name(cov) << " " << s->name();
        }
        EXPECT_LT((gmm_logits(m, x, alpha, sigma) - logits).abs().max().item<double>(), 1e-9);
      }
    }
  }
}

// The closed-form score (alpha x0 - x) / sigma^2 equals the autograd gradient of the
// log-density to 1e-8 (relative), for every covariance type, under vp_linear, vp_discrete and edm.
TEST(MixtureModel, ScoreIsGradientOfLogDensity) {
  for (Covariance cov : kAllCovariances) {
    const GaussianMixture m = testing::random_gmm(cov, 30);
    for (const auto& s : three_schedules()) {
      for (double w : {0.05, 0.5, 0.95}) {
        const double t = s->t_min() + w * (s->t_max() - s->t_min()), alpha = s->alpha(t), sigma = s->sigma(t);
        const at::Tensor x =
            (at::randn({5, 7}, at::detail::createCPUGenerator(31), f64) * (alpha * 2 + sigma)).requires_grad_(true);
        const at::Tensor logp = gmm_posterior(m, x, alpha, sigma, 2).log_density;
        const at::Tensor grad = torch::autograd::grad({logp.sum()}, {x})[0];
        const at::Tensor score = (alpha * gmm_posterior(m, x.detach(), alpha, sigma).x0 - x.detach()) / (sigma * sigma);
        EXPECT_LT((grad - score).abs().max().item<double>(), 1e-8 * (1 + score.abs().max().item<double>()))
            << covariance_name(cov) << " " << s->name() << " t=" << t;
      }
    }
  }
}

// A one-component lowrank mixture with no isotropic part is the gaussian model.
TEST(MixtureModel, OneLowRankComponentIsTheGaussian) {
  const GaussianModel g = testing::random_gaussian(7, 3, 40);
  GaussianMixture m;
  m.cov = Covariance::LowRank;
  m.log_weights = at::zeros({1}, f64);
  m.means = g.mean.unsqueeze(0);
  m.variances = at::zeros({1}, f64);
  m.eigenvalues = g.eigenvalues.unsqueeze(0);
  m.eigenvectors = g.eigenvectors.unsqueeze(0);
  const at::Tensor x = at::randn({4, 7}, at::detail::createCPUGenerator(41), f64);
  const MixturePosterior p = gmm_posterior(m, x, 0.6, 0.8);
  EXPECT_LT((p.x0 - gaussian_x0(g, x, 0.6, 0.8)).abs().max().item<double>(), 1e-12);
  EXPECT_LT((p.log_density - gaussian_log_density(g, x, 0.6, 0.8)).abs().max().item<double>(), 1e-10);
}

// Every covariance type survives the file round trip (stored as float32).
TEST(MixtureModel, GmmFileRoundTrip) {
  for (Covariance cov : kAllCovariances) {
    const GaussianMixture m = testing::random_gmm(cov, 50);
    const std::string p = tmp("rt.safetensors");
    save_gmm(p, m, {7});
    const MixtureModel back = load_mixture_model(p, "gmm");
    EXPECT_EQ(back.mixture.cov, cov);
    const at::Tensor x = at::randn({3, 7}, at::detail::createCPUGenerator(51), f64);
    const at::Tensor a = gmm_posterior(m, x, 0.7, 0.5).x0, b = gmm_posterior(back.mixture.to(f64), x, 0.7, 0.5).x0;
    EXPECT_LT((a - b).abs().max().item<double>(), 1e-5) << covariance_name(cov);
    fs::remove(p);
  }
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

// dpmpp_2m with 50 steps on a known 2-d (isotropic) and 16-d (low-rank plus isotropic)
// mixture: the sliced Wasserstein distance to exact samples of the marginal at t_end
// (starting from exact samples at t = 1) is within 1.5x of the distance between two exact
// sample sets of the same size (means over 8 sets).
TEST(MixtureModel, Dpmpp2mSamplesKnownMixtures) {
  for (int64_t d : {2, 16}) {
    const int64_t k = 6, n = 4000;
    GaussianMixture m = testing::random_gmm(d == 2 ? Covariance::Isotropic : Covariance::LowRank, 10 + d, k, d, 4);
    m.means = m.means * 1.5;
    const std::string p = tmp("gmm.safetensors");
    save_gmm(p, m, {d});
    m = load_mixture_model(p, "gmm").mixture.to(f64);  // the exact samples use the stored (float32) values
    std::shared_ptr<const Schedule> sched = make_vp_linear();
    auto model = make_mixture_denoiser(load_mixture_model(p, "gmm"), sched);
    // exact samples of the noised marginal at time t
    auto exact = [&](uint64_t seed, double t = 1e-3) {
      const double a = sched->alpha(t), s = sched->sigma(t);
      const at::Tensor x0 = testing::sample_gmm(m, n, seed);
      return a * x0 + s * at::randn({n, d}, at::detail::createCPUGenerator(seed + 1000), f64);
    };
    // x_T from the exact marginal at t = 1, so that the flow maps marginal to marginal
    const at::Tensor x = testing::run_sampler("dpmpp_2m", *model, *sched, exact(300, 1.0),
                                              {{"steps", "50"}, {"t_end", "0.001"}})
                             .x;
    // SW estimates at this size scatter by +-30%: compare means over 8 reference sets.
    double sw = 0.0, floor = 0.0;
    for (int j = 0; j < 8; ++j) {
      const at::Tensor ref = exact(100 + j);
      sw += testing::sliced_wasserstein(x, ref, 128, 5) / 8;
      floor += testing::sliced_wasserstein(exact(200 + j), ref, 128, 5) / 8;
    }
    EXPECT_LT(sw, 1.5 * floor) << "d = " << d << ": sampled " << sw << " vs exact-exact " << floor;
    std::printf("d = %lld: SW sampled %.4f, exact-exact %.4f\n", (long long)d, sw, floor);
    fs::remove(p);
  }
}

TEST(MixtureModel, RejectsBadFiles) {
  const std::string p = tmp("bad.safetensors");
  write_gmm(p, at::ones({3}, f64), at::zeros({2, 4}, f64), at::ones({3}, f64));  // K disagrees
  EXPECT_THROW(load_mixture_model(p, "gmm"), Error);
  write_gmm(p, at::ones({2}, f64), at::zeros({2, 4}, f64), -at::ones({2}, f64));  // negative variance
  EXPECT_THROW(load_mixture_model(p, "gmm"), Error);
  write_gmm(p, at::ones({2}, f64), at::zeros({2, 4}, f64), at::ones({2}, f64), "spherical");  // unknown
  EXPECT_THROW(load_mixture_model(p, "gmm"), Error);
  write_gmm(p, at::ones({2}, f64), at::zeros({2, 4}, f64), at::ones({2}, f64), "diagonal");  // variances not [K, D]
  EXPECT_THROW(load_mixture_model(p, "gmm"), Error);
  write_gmm(p, at::ones({2}, f64), at::zeros({2, 4}, f64), at::ones({2}, f64), "lowrank");  // no eigenvectors
  EXPECT_THROW(load_mixture_model(p, "gmm"), Error);
  {
    GaussianMixture m = testing::random_gmm(Covariance::LowRank, 60, 2, 4, 2);
    m.eigenvectors = m.eigenvectors * 2.0;  // not orthonormal
    save_gmm(p, m, {4});
    EXPECT_THROW(load_mixture_model(p, "gmm"), Error);
    m = testing::random_gmm(Covariance::Full, 60, 2, 4);
    m.eigenvalues = m.eigenvalues.narrow(1, 0, 3);  // full needs D eigenvalues
    m.eigenvectors = m.eigenvectors.narrow(2, 0, 3);
    save_gmm(p, m, {4});
    EXPECT_THROW(load_mixture_model(p, "gmm"), Error);
  }
  EXPECT_THROW(load_mixture_model("/nonexistent.safetensors", "gmm"), Error);
  fs::remove(p);
}

}  // namespace
}  // namespace scorch
