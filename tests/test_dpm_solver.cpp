// DPM-Solver / DPM-Solver++ against exact references in float64.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "scorch/error.h"
#include "samplers/dpm_solver.h"
#include "support/sampler_harness.h"

namespace scorch {
namespace {

using testing::rel_error;
using testing::run_sampler;
using Opts = std::map<std::string, std::string>;

Opts dpm(const std::string& algorithm, const std::string& method, int order, int steps, Opts more = {}) {
  Opts o = {{"algorithm_type", algorithm}, {"method", method}, {"order", std::to_string(order)},
            {"steps", std::to_string(steps)}};
  o.insert(more.begin(), more.end());
  return o;
}

// A constant data prediction (one-point data set) makes every DPM-Solver++ update
// exact, and a constant noise prediction every DPM-Solver update: all the
// higher-order differences vanish and the exponential integrator is exact.
TEST(DpmSolver, ExactForConstantPrediction) {
  const testing::ConstantCase k;
  for (bool is_x0 : {true, false}) {
    testing::ConstantModel model(k.c, is_x0, k.sched);
    const std::string algorithm = is_x0 ? "dpmsolver++" : "dpmsolver";
    for (const std::string skip : {"logSNR", "time_uniform", "time_quadratic", "karras"}) {
      const at::Tensor ref = k.exact(is_x0);
      for (const std::string method : {"singlestep", "multistep", "singlestep_fixed", "adaptive"}) {
        for (int order = 1; order <= 3; ++order) {
          if (method == "adaptive" && order == 1) continue;
          for (const std::string solver_type : {"dpmsolver", "taylor"}) {
            const Opts o = dpm(algorithm, method, order, 12,
                               {{"skip_type", skip}, {"t_end", "0.001"}, {"solver_type", solver_type}});
            const at::Tensor x = run_sampler("dpm_solver", model, *k.sched, k.x_T, o).x;
            EXPECT_LT((x - ref).abs().max().item<double>(), 1e-10 * (1 + ref.abs().max().item<double>()))
                << algorithm << " " << method << " order " << order << " " << skip << " " << solver_type;
          }
        }
      }
    }
  }
}

double order_between(const std::string& sampler, testing::Target& c, const Opts& base, int n0, int n1) {
  auto err = [&](int n) {
    Opts o = base;
    o["steps"] = std::to_string(n);
    o["t_end"] = std::to_string(c.t_end);
    return rel_error(run_sampler(sampler, *c.model, *c.sched, c.x_T, o).x, c.reference);
  };
  return std::log2(err(n0) / err(n1)) / std::log2(double(n1) / n0);
}

// Noise-prediction singlestep_fixed DPM-Solver-2 and -3 converge at orders 2 and 3
// (within 0.4, 48 -> 192 steps) on the Gaussian and on the mixture target.
TEST(DpmSolver, SinglestepFixedOrders) {
  for (auto make : {testing::gaussian_target, testing::mixture_target}) {
    testing::Target c = make(make == testing::gaussian_target ? 1e-3 : 1e-2);
    for (int order : {2, 3}) {
      const double p = order_between("dpm_solver", c, dpm("dpmsolver", "singlestep_fixed", order, 0), 48, 192);
      EXPECT_NEAR(p, order, 0.4) << "order " << order;
    }
  }
}

// Every second- and third-order method of both algorithm types shows order >= 1.5.
TEST(DpmSolver, EveryHighOrderMethodConverges) {
  for (auto make : {testing::gaussian_target, testing::mixture_target}) {
    testing::Target c = make(make == testing::gaussian_target ? 1e-3 : 1e-2);
    for (const std::string algorithm : {"dpmsolver", "dpmsolver++"})
      for (const std::string method : {"singlestep", "multistep", "singlestep_fixed"})
        for (int order : {2, 3})
          for (const std::string solver_type : {"dpmsolver", "taylor"}) {
            const double p = order_between("dpm_solver", c, dpm(algorithm, method, order, 0, {{"solver_type", solver_type}}),
                                           48, 192);
            EXPECT_GE(p, 1.5) << algorithm << " " << method << " order " << order << " " << solver_type;
          }
  }
}

TEST(DpmSolver, ThirdOrderMultistepBeatsSecondAt40Steps) {
  testing::Target c = testing::gaussian_target();
  auto err = [&](const std::string& name) {
    return rel_error(run_sampler(name, *c.model, *c.sched, c.x_T, {{"steps", "40"}, {"t_end", "0.001"}}).x,
                     c.reference);
  };
  EXPECT_LT(err("dpmpp_3m"), err("dpmpp_2m"));
}

// The official order lists for each steps mod order.
TEST(DpmSolver, SinglestepOrderLists) {
  EXPECT_EQ(dpm_solver_singlestep_orders(9, 3), (std::vector<int>{3, 3, 2, 1}));
  EXPECT_EQ(dpm_solver_singlestep_orders(10, 3), (std::vector<int>{3, 3, 3, 1}));
  EXPECT_EQ(dpm_solver_singlestep_orders(11, 3), (std::vector<int>{3, 3, 3, 2}));
  EXPECT_EQ(dpm_solver_singlestep_orders(6, 2), (std::vector<int>{2, 2, 2}));
  EXPECT_EQ(dpm_solver_singlestep_orders(7, 2), (std::vector<int>{2, 2, 2, 1}));
  EXPECT_EQ(dpm_solver_singlestep_orders(4, 1), (std::vector<int>{1, 1, 1, 1}));
}

TEST(DpmSolver, NfeCounts) {
  testing::Target c = testing::gaussian_target();
  for (const std::string method : {"singlestep", "multistep"})
    for (int order = 1; order <= 3; ++order)
      for (int steps : {7, 10, 20}) {
        EXPECT_EQ(run_sampler("dpm_solver", *c.model, *c.sched, c.x_T, dpm("dpmsolver++", method, order, steps)).nfe,
                  steps)
            << method << order << " " << steps;
        EXPECT_EQ(run_sampler("dpm_solver", *c.model, *c.sched, c.x_T,
                              dpm("dpmsolver", method, order, steps, {{"denoise_to_zero", "true"}}))
                      .nfe,
                  steps + 1);
      }
  EXPECT_EQ(run_sampler("dpm_solver", *c.model, *c.sched, c.x_T, dpm("dpmsolver", "singlestep_fixed", 3, 10)).nfe, 9);
  for (const char* alias : {"dpmpp_2m", "dpmpp_3m", "dpmpp_2s", "dpm_solver_3s"})
    EXPECT_EQ(run_sampler(alias, *c.model, *c.sched, c.x_T, {{"steps", "10"}}).nfe, 10) << alias;
}

// DPM-Solver-12 and -23 stop on their own; the global error follows the tolerance.
// (A rejected trial reuses the model value at s, so NFE is not always a multiple of order.)
TEST(DpmSolver, AdaptiveMeetsTolerance) {
  testing::Target c = testing::gaussian_target();
  for (int order : {2, 3}) {
    double last = 1e9;
    int64_t last_nfe = 0;
    for (const char* tol : {"1e-2", "1e-3", "1e-4"}) {
      const testing::Run r = run_sampler("dpm_adaptive", *c.model, *c.sched, c.x_T,
                                         {{"order", std::to_string(order)}, {"atol", tol}, {"rtol", tol},
                                          {"t_end", "0.001"}});
      const double err = rel_error(r.x, c.reference);
      EXPECT_LT(err, 10 * std::stod(tol)) << "order " << order << " tol " << tol;
      EXPECT_LT(err, last);
      EXPECT_GT(r.nfe, last_nfe);
      last = err;
      last_nfe = r.nfe;
    }
  }
}

// Sampling then inverting with 200 steps of DPM-Solver++(2M) recovers x_T.
TEST(DpmSolver, InversionRoundTrip) {
  testing::Target c = testing::gaussian_target();
  const Opts o = {{"steps", "200"}, {"t_end", "0.001"}};
  const at::Tensor x0 = run_sampler("dpmpp_2m", *c.model, *c.sched, c.x_T, o).x;
  const at::Tensor back = run_sampler("dpmpp_2m", *c.model, *c.sched, x0, o, 0, /*reverse=*/true).x;
  EXPECT_LT(rel_error(back, c.x_T), 1e-3);
}

// Dynamic thresholding keeps x0 within [-s, s] / s: with denoise_to_zero the result
// lies in [-1, 1] even for a target far outside it.
TEST(DpmSolver, DynamicThresholding) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  GaussianModel g = testing::random_gaussian(6, 6, 4);
  g.mean = g.mean * 5.0;
  auto model = make_gaussian_denoiser(g, sched);
  const at::Tensor x_T = Rng(2).normal({8, 6}, at::TensorOptions().dtype(at::kDouble));
  const Opts o = {{"steps", "10"}, {"thresholding", "true"}, {"denoise_to_zero", "true"},
                  {"dynamic_thresholding_ratio", "1.0"}};
  const at::Tensor x = run_sampler("dpmpp_2m", *model, *sched, x_T, o).x;
  EXPECT_LE(x.abs().max().item<double>(), 1.0 + 1e-12);
  EXPECT_THROW(run_sampler("dpm_solver_3s", *model, *sched, x_T, {{"thresholding", "true"}}), Error);
}

TEST(DpmSolver, BadOptions) {
  testing::Target c = testing::gaussian_target();
  auto bad = [&](const std::string& name, const Opts& o) {
    EXPECT_THROW(run_sampler(name, *c.model, *c.sched, c.x_T, o), Error) << name;
  };
  bad("dpm_solver", {{"order", "4"}});
  bad("dpm_solver", {{"order", "3"}, {"steps", "2"}});
  bad("dpm_solver", {{"method", "fast"}});
  bad("dpm_solver", {{"algorithm_type", "dpmsolver+++"}});
  bad("dpm_adaptive", {{"order", "1"}});
  bad("dpm_adaptive", {{"atol", "0"}});
  bad("dpmpp_2m", {{"order", "3"}});  // fixed by the alias
}

}  // namespace
}  // namespace scorch
