// Empirical model statistics (include/scorch/ems.h): the solver's integrals against closed
// forms (constant statistics), the estimator against the exact statistics of a Gaussian
// (within their standard errors at N = 4096), the file round trip, and bad files.
#include "scorch/ems.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "scorch/error.h"
#include "scorch/gaussian.h"
#include "scorch/io.h"
#include "scorch/rng.h"
#include "scorch/schedule.h"
#include "support/random_gaussian.h"

namespace scorch {
namespace {

using testing::kF64;

// Constant l = c, s = e, b = beta: L = c u, S = e u, I = (e^{(c+e)u} - 1)/(c+e),
// B = beta (1 - e^{-e u})/e, and K_1(s, t) = int_0^h e^{(c+e)r} r dr, with u = lambda - lambda_0.
TEST(EmsIntegrals, ConstantStatisticsHaveClosedForms) {
  const double c = 0.7, e = 0.3, beta = -0.4, lo = -2.0;
  Ems ems = trivial_ems(at::linspace(lo, 3.0, 11, kF64), {2});
  ems.l.fill_(c);
  ems.s.fill_(e);
  ems.b.fill_(beta);
  const std::vector<double> points = {-1.37, 0.21, 2.9};
  const EmsIntegrals in(ems, points);
  const double k = c + e;
  for (double p : points) {
    const double u = p - lo;
    const EmsIntegrals::At& v = in.at(p);
    EXPECT_NEAR(v.L[0].item<double>(), c * u, 1e-13);
    EXPECT_NEAR(v.S[1].item<double>(), e * u, 1e-13);
    EXPECT_NEAR(v.I[0].item<double>(), std::expm1(k * u) / k, 1e-12 * std::exp(k * u));
    EXPECT_NEAR(v.B[1].item<double>(), beta * -std::expm1(-e * u) / e, 1e-13);
    // C = int_0^u e^{k r} B(r) dr = beta/e [ (e^{ku} - 1)/k - (e^{c u} - 1)/c ]
    EXPECT_NEAR(v.C[0].item<double>(), beta / e * (std::expm1(k * u) / k - std::expm1(c * u) / c), 1e-12 * std::exp(k * u));
  }
  const double h = 2.9 - 0.21;
  const double k1 = (std::exp(k * h) * (k * h - 1) + 1) / (k * k);
  EXPECT_NEAR(in.taylor(0.21, 2.9, 1)[0].item<double>(), k1, 1e-12 * k1);
  // K_2 = int_0^h e^{kr} r^2 / 2 dr
  const double k2 = (std::exp(k * h) * (k * k * h * h - 2 * k * h + 2) - 2) / (2 * k * k * k);
  EXPECT_NEAR(in.taylor(0.21, 2.9, 2)[1].item<double>(), k2, 1e-12 * k2);
  // a point outside the grid is refused
  EXPECT_THROW(EmsIntegrals(ems, {3.5}), Error);
}

// The estimator on the exact denoiser of a Gaussian with a full, rotated covariance (so that
// no statistic is trivial), N = 4096 data samples and 4 probes per sample: every l, s and b
// at every grid point lies within 4.5 standard errors of the closed form (96 values per
// statistic; the errors are small enough that the test means something).
TEST(EmsEstimate, MatchesTheGaussianClosedFormWithinItsStandardErrors) {
  const GaussianModel g = testing::random_gaussian(4, 4, 21);
  std::shared_ptr<const Schedule> ns = make_vp_linear();
  std::unique_ptr<Denoiser> model = make_gaussian_denoiser(g, ns);
  const int64_t n = 4096;
  const at::Tensor z = Rng(5).normal({n, 4}, kF64);
  const at::Tensor x0 = g.mean + (z * g.eigenvalues.sqrt()).mm(g.eigenvectors.t());
  EmsEstimate o;
  o.grid = 23;
  o.lambda_min = -3.0;
  o.lambda_max = 4.0;
  o.batch = 1024;
  o.probes = 4;
  const Ems est = estimate_ems(*model, *ns, x0, {}, o);
  const Ems exact = gaussian_ems(g, *ns, est.lambda);
  for (const auto& [name, a, b, se] : {std::tuple<const char*, at::Tensor, at::Tensor, at::Tensor>{"l", est.l, exact.l, est.l_se},
                                      {"s", est.s, exact.s, est.s_se},
                                      {"b", est.b, exact.b, est.b_se}}) {
    const double z_max = ((a - b).abs() / se).max().item<double>();
    EXPECT_LT(z_max, 4.5) << name << ": largest |estimate - exact| / standard error";
    EXPECT_LT(se.max().item<double>(), 0.1) << name << ": standard errors too large for the test to mean anything";
    EXPECT_GT((b - b.mean()).abs().max().item<double>(), 10 * se.max().item<double>()) << name << " varies";
    std::printf("%s: max |z| %.2f, max standard error %.4f, range of the exact values %.3f\n", name, z_max,
                se.max().item<double>(), (b.max() - b.min()).item<double>());
  }
}

TEST(EmsFile, RoundTripAndBadFiles) {
  const std::string dir = ::testing::TempDir() + "ems_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  Ems e = gaussian_ems(testing::random_gaussian(3, 3, 2), *make_vp_linear(), at::linspace(-2.0, 2.0, 5, kF64));
  e.metadata["scorch.model_sha256"] = "abc";
  write_ems(dir + "/e.safetensors", e);
  const Ems back = read_ems(dir + "/e.safetensors", "stats");
  EXPECT_TRUE(at::equal(back.l, e.l));
  EXPECT_TRUE(at::equal(back.b, e.b));
  EXPECT_EQ(back.metadata.at("scorch.model_sha256"), "abc");
  // not an EMS file; a grid that does not increase; mis-shaped statistics; NaN
  save_gaussian(dir + "/g.safetensors", testing::random_gaussian(3, 3, 2));
  const auto message = [&](const std::string& file) {
    try {
      read_ems(file, "sampler.stats");
    } catch (const Error& err) {
      EXPECT_EQ(err.status(), Status::BadInput);
      return std::string(err.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(dir + "/g.safetensors").find("is not an EMS file"), std::string::npos);
  Ems bad = e;
  bad.lambda = bad.lambda.flip(0);
  write_ems(dir + "/flip.safetensors", bad);
  EXPECT_NE(message(dir + "/flip.safetensors").find("must increase"), std::string::npos);
  bad = e;
  bad.s = bad.s.narrow(0, 0, 3);
  write_ems(dir + "/short.safetensors", bad);
  EXPECT_NE(message(dir + "/short.safetensors").find("one row per grid point"), std::string::npos);
  bad = e;
  bad.b = bad.b.clone();
  bad.b[1][0] = std::nan("");
  write_ems(dir + "/nan.safetensors", bad);
  EXPECT_NE(message(dir + "/nan.safetensors").find("non-finite"), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace scorch
