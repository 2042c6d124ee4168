// Fitting analytic models: the Gaussian's moments, k-means, and EM for every covariance
// type against known mixtures (tolerances are a few standard errors of the estimates).
#include "scorch/fit.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "scorch/error.h"
#include "support/random_gaussian.h"

namespace scorch {
namespace {

using testing::kF64;

double max_abs(const at::Tensor& a) { return a.abs().max().item<double>(); }

GmmFitOptions options(int64_t k, Covariance cov, int em_iters) {
  GmmFitOptions o;
  o.k = k;
  o.cov = cov;
  o.rank = 2;
  o.em_iters = em_iters;
  o.reg = 1e-6;
  return o;
}

// N = 40000 samples of a 6-d Gaussian: mean and covariance to within 5 standard errors
// (|Sigma| <= 2.1, so the errors are about 2.1 sqrt(2 / N) = 0.015).
TEST(Fit, GaussianRecoversMeanAndCovariance) {
  const GaussianModel g = testing::random_gaussian(6, 6, 1);
  const at::Tensor cov = g.eigenvectors.mm(at::diag(g.eigenvalues)).mm(g.eigenvectors.t());
  const at::Tensor x = g.mean + at::randn({40000, 6}, at::detail::createCPUGenerator(2), kF64)
                                    .mm(at::linalg_cholesky(cov).t());
  const GaussianModel f = fit_gaussian(x, 0, {2, 3});
  EXPECT_EQ(f.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_LT(max_abs(f.mean - g.mean), 0.04);
  EXPECT_LT(max_abs(f.eigenvectors.mm(at::diag(f.eigenvalues)).mm(f.eigenvectors.t()) - cov), 0.08);
  // rank 2 keeps the two largest eigenvalues, in descending order
  const GaussianModel r2 = fit_gaussian(x, 2, {6});
  EXPECT_LT(max_abs(r2.eigenvalues - f.eigenvalues.narrow(0, 0, 2)), 1e-10);
  EXPECT_GE(r2.eigenvalues[0].item<double>(), r2.eigenvalues[1].item<double>());
}

// Per-class Gaussians: each class's fit equals fit_gaussian on its rows exactly (it is that
// fit), the classes come in label order, and bad labels are refused.
TEST(Fit, ClassGaussiansAreTheFitsOfEachClassRows) {
  const at::Tensor x = at::randn({300, 4}, at::detail::createCPUGenerator(5), kF64);
  const at::Tensor y = at::arange(300, at::kLong).remainder(3);
  const std::vector<GaussianModel> classes = fit_class_gaussians(x, y, 0, {4});
  ASSERT_EQ(classes.size(), 3u);
  for (int64_t c = 0; c < 3; ++c) {
    const GaussianModel own = fit_gaussian(x.index_select(0, (y == c).nonzero().squeeze(1)), 0, {4});
    EXPECT_TRUE(at::equal(classes[size_t(c)].mean, own.mean)) << c;
    EXPECT_TRUE(at::equal(classes[size_t(c)].eigenvalues, own.eigenvalues)) << c;
  }
  EXPECT_THROW(fit_class_gaussians(x, y.narrow(0, 0, 10), 0, {4}), Error);             // one label per sample
  EXPECT_THROW(fit_class_gaussians(x, y - 1, 0, {4}), Error);                          // negative labels
  EXPECT_THROW(fit_class_gaussians(x, y.masked_fill(y == 1, 5), 0, {4}), Error);       // classes 1, 3, 4 empty
  EXPECT_THROW(fit_class_gaussians(x, y.to(at::kDouble) + 0.5, 0, {4}), Error);       // not integers
}

TEST(Fit, KMeansSeparatesWellSeparatedClusters) {
  const at::Tensor centres = at::tensor({0.0, 0.0, 10.0, 0.0, 0.0, 10.0, 10.0, 10.0}, kF64).view({4, 2});
  const at::Tensor label = at::arange(4).repeat({250});
  const at::Tensor x = (centres.index_select(0, label) + at::randn({1000, 2}, at::detail::createCPUGenerator(3), kF64))
                           .to(at::kFloat);
  auto [c, assign] = kmeans(x, 4, 50, 7);
  // every true cluster maps to exactly one found cluster, and vice versa
  for (int64_t j = 0; j < 4; ++j) {
    const at::Tensor found = assign.index({label == j});
    EXPECT_TRUE((found == found[0]).all().item<bool>()) << "cluster " << j;
    EXPECT_LT(max_abs(c[found[0].item<int64_t>()].to(at::kDouble) - centres[j]), 0.2);
  }
  EXPECT_EQ(std::get<0>(at::_unique(assign)).numel(), 4);
}

// Samples of a known, well-separated mixture of each covariance type: EM recovers weights,
// means and the dense covariances (components matched by nearest mean).
TEST(Fit, GmmRecoversKnownMixtures) {
  for (Covariance cov : {Covariance::Isotropic, Covariance::Diagonal, Covariance::LowRank, Covariance::Full}) {
    GaussianMixture truth = testing::random_gmm(cov, 10, 3, 5, 2);
    truth.means = truth.means * 6.0;  // well separated
    truth.log_weights = at::log(at::tensor({0.5, 0.3, 0.2}, kF64));
    const at::Tensor x = testing::sample_gmm(truth, 30000, 11);
    const GmmFit fit = fit_gmm(x, options(3, cov, 10));
    const GaussianMixture& m = fit.mixture;
    ASSERT_EQ(m.cov, cov);
    const at::Tensor match = std::get<1>(at::cdist(truth.means, m.means).min(1));  // truth k -> fitted
    EXPECT_EQ(std::get<0>(at::_unique(match)).numel(), 3) << covariance_name(cov);
    const at::Tensor true_cov = testing::dense_covariances(truth), fit_cov = testing::dense_covariances(m);
    for (int64_t j = 0; j < 3; ++j) {
      const int64_t f = match[j].item<int64_t>();
      EXPECT_NEAR(m.log_weights[f].exp().item<double>(), truth.log_weights[j].exp().item<double>(), 0.015)
          << covariance_name(cov);
      EXPECT_LT(max_abs(m.means[f] - truth.means[j]), 0.1) << covariance_name(cov);
      EXPECT_LT(max_abs(fit_cov[f] - true_cov[j]), 0.15) << covariance_name(cov);
    }
  }
}

// EM never lowers the likelihood: on overlapping components (where EM moves far from the
// k-means start) the mean log-likelihood is non-decreasing and ends above the start.
TEST(Fit, EmLikelihoodIsMonotone) {
  for (Covariance cov : {Covariance::Isotropic, Covariance::Diagonal, Covariance::LowRank, Covariance::Full}) {
    const GaussianMixture truth = testing::random_gmm(cov, 20, 4, 5, 2);
    const at::Tensor x = testing::sample_gmm(truth, 5000, 21);
    const std::vector<double> ll = fit_gmm(x, options(4, cov, 15)).log_likelihood;
    ASSERT_EQ(ll.size(), 15u);
    for (size_t i = 1; i < ll.size(); ++i) EXPECT_GE(ll[i], ll[i - 1] - 1e-4) << covariance_name(cov) << " iteration " << i;
    EXPECT_GT(ll.back(), ll.front()) << covariance_name(cov);
  }
}

TEST(Fit, RejectsBadArguments) {
  const at::Tensor x = at::randn({20, 3}, at::detail::createCPUGenerator(5), kF64);
  GmmFitOptions o;
  o.cov = Covariance::Isotropic;
  o.k = 21;  // more components than samples
  EXPECT_THROW(fit_gmm(x, o), Error);
  o.k = 0;
  EXPECT_THROW(fit_gmm(x, o), Error);
  o.k = 2;
  o.cov = Covariance::LowRank;
  o.rank = 3;  // lowrank needs rank < D
  EXPECT_THROW(fit_gmm(x, o), Error);
  o.rank = 1;
  o.em_iters = -1;
  EXPECT_THROW(fit_gmm(x, o), Error);
  o.em_iters = 1;
  o.reg = 0.0;
  EXPECT_THROW(fit_gmm(x, o), Error);
  at::Tensor bad = x.clone();
  bad[3][1] = NAN;
  o.reg = 1e-4;
  EXPECT_THROW(fit_gmm(bad, o), Error);
  EXPECT_THROW(fit_gaussian(bad, 0, {3}), Error);
  EXPECT_THROW(fit_gaussian(x, 4, {3}), Error);  // rank > D
  EXPECT_THROW(fit_gaussian(x.view({60}), 0, {1}), Error);
  EXPECT_THROW(parse_covariance("spherical", "--cov"), Error);
}

}  // namespace
}  // namespace scorch
