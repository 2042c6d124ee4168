// UniPC against exact references in float64.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "scorch/error.h"
#include "support/sampler_harness.h"

namespace scorch {
namespace {

using testing::rel_error;
using testing::run_sampler;
using Opts = std::map<std::string, std::string>;

TEST(UniPC, ExactForConstantPrediction) {
  const testing::ConstantCase k;
  for (bool is_x0 : {true, false}) {
    testing::ConstantModel model(k.c, is_x0, k.sched);
    const at::Tensor ref = k.exact(is_x0);
    for (const char* variant : {"bh1", "bh2"})
      for (int order = 1; order <= 3; ++order) {
        const Opts o = {{"steps", "10"}, {"order", std::to_string(order)}, {"variant", variant},
                        {"algorithm_type", is_x0 ? "data_prediction" : "noise_prediction"}, {"t_end", "0.001"}};
        const at::Tensor x = run_sampler("unipc", model, *k.sched, k.x_T, o).x;
        EXPECT_LT((x - ref).abs().max().item<double>(), 1e-10 * (1 + ref.abs().max().item<double>()))
            << variant << " order " << order << (is_x0 ? " data" : " noise");
      }
  }
}

TEST(UniPC, ConvergesAtLeastOrder1_5) {
  for (auto make : {testing::gaussian_target, testing::mixture_target}) {
    testing::Target c = make(make == testing::gaussian_target ? 1e-3 : 1e-2);
    for (const char* variant : {"bh1", "bh2"})
      for (const char* algorithm : {"data_prediction", "noise_prediction"})
        for (int order : {2, 3}) {
          auto err = [&](int n) {
            const Opts o = {{"steps", std::to_string(n)}, {"order", std::to_string(order)}, {"variant", variant},
                            {"algorithm_type", algorithm}, {"t_end", std::to_string(c.t_end)}};
            return rel_error(run_sampler("unipc", *c.model, *c.sched, c.x_T, o).x, c.reference);
          };
          EXPECT_GE(std::log2(err(48) / err(192)) / 2.0, 1.5) << variant << " " << algorithm << " order " << order;
        }
  }
}

// NFE = steps: the corrector reuses the next step's model output.
TEST(UniPC, NfeAndDisabledCorrector) {
  testing::Target c = testing::gaussian_target();
  EXPECT_EQ(run_sampler("unipc", *c.model, *c.sched, c.x_T, {{"steps", "10"}}).nfe, 10);
  const testing::Run with = run_sampler("unipc", *c.model, *c.sched, c.x_T, {{"steps", "10"}});
  const testing::Run without =
      run_sampler("unipc", *c.model, *c.sched, c.x_T, {{"steps", "10"}, {"disable_corrector", "[0, 1, 2, 3, 4, 5, 6, 7, 8]"}});
  EXPECT_EQ(without.nfe, 10);
  // The corrector improves the 10-step result.
  EXPECT_LT(rel_error(with.x, c.reference), rel_error(without.x, c.reference));
  EXPECT_THROW(run_sampler("unipc", *c.model, *c.sched, c.x_T, {{"disable_corrector", "[a]"}}), Error);
  EXPECT_THROW(run_sampler("unipc", *c.model, *c.sched, c.x_T, {{"variant", "bh3"}}), Error);
}

}  // namespace
}  // namespace scorch
