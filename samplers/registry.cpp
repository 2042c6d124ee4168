// The sampler registry: an explicit table, name -> (options, function). A new
// sampler is one file plus one line here.
#include "sampler.h"

namespace scorch {

namespace {
const std::vector<OptionSpec> kChurn = {
    {"s_churn", OptionType::Number, "0", "stochasticity (Karras et al. 2022, Alg. 2)", {}},
    {"s_tmin", OptionType::Number, "0", "churn only where s_tmin <= sigma/alpha", {}},
    {"s_tmax", OptionType::Number, "inf", "churn only where sigma/alpha <= s_tmax", {}},
    {"s_noise", OptionType::Number, "1", "scale of the added noise", {}},
};
}  // namespace

const std::vector<SamplerInfo>& samplers() {
  static const std::vector<SamplerInfo> table = {
      {"ddim", "DDIM (Song et al. 2021); eta = 0 is DPM-Solver-1. 1 NFE/step",
       {{"eta", OptionType::Number, "0", "stochasticity: 0 deterministic, 1 DDPM-like", {}}},
       sample_ddim},
      {"euler", "Euler on the PF-ODE in sigma = sigma/alpha (k-diffusion). 1 NFE/step", kChurn, sample_euler},
      {"euler_ancestral", "Euler with ancestral noise (k-diffusion). 1 NFE/step",
       {{"eta", OptionType::Number, "1", "ancestral noise fraction", {}},
        {"s_noise", OptionType::Number, "1", "scale of the added noise", {}}},
       sample_euler_ancestral},
      {"heun", "Heun's 2nd order method (Karras et al. 2022, Alg. 2). 2 NFE/step", kChurn, sample_heun},
  };
  return table;
}

}  // namespace scorch
