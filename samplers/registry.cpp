// The sampler registry: an explicit table, name -> (options, function). A new
// sampler is one file plus one line here. Aliases (dpmpp_2m, ...) are rows that
// fix some options of a general sampler.
#include "sampler.h"

namespace scorch {

namespace {

const std::vector<OptionSpec> kChurn = {
    {"s_churn", OptionType::Number, "0", "stochasticity (Karras et al. 2022, Alg. 2)", {}},
    {"s_tmin", OptionType::Number, "0", "churn only where s_tmin <= sigma/alpha", {}},
    {"s_tmax", OptionType::Number, "inf", "churn only where sigma/alpha <= s_tmax", {}},
    {"s_noise", OptionType::Number, "1", "scale of the added noise", {}},
};

const std::vector<OptionSpec> kSde = {
    {"eta", OptionType::Number, "1", "SDE noise: 0 is the ODE solver", {}},
    {"s_noise", OptionType::Number, "1", "scale of the added noise", {}},
};

std::vector<OptionSpec> with_default(std::vector<OptionSpec> specs, const std::string& name, const std::string& value) {
  for (auto& s : specs)
    if (s.name == name) s.default_value = value;
  return specs;
}

std::vector<OptionSpec> plus(std::vector<OptionSpec> specs, const std::vector<OptionSpec>& more) {
  specs.insert(specs.end(), more.begin(), more.end());
  return specs;
}

std::map<std::string, std::string> dpm(const char* algorithm, const char* method, const char* order) {
  return {{"algorithm_type", algorithm}, {"method", method}, {"order", order}};
}

}  // namespace

const std::vector<SamplerInfo>& samplers() {
  static const std::vector<SamplerInfo> table = {
      {"ddim", "DDIM (Song et al. 2021); eta = 0 is DPM-Solver-1. 1 NFE/step",
       {{"eta", OptionType::Number, "0", "stochasticity: 0 deterministic, 1 DDPM-like", {}}}, sample_ddim, {},
       {"eta"}},
      {"euler", "Euler on the PF-ODE in sigma = sigma/alpha (k-diffusion). 1 NFE/step", kChurn, sample_euler, {},
       {"s_churn"}},
      {"euler_ancestral", "Euler with ancestral noise (k-diffusion). 1 NFE/step",
       {{"eta", OptionType::Number, "1", "ancestral noise fraction", {}},
        {"s_noise", OptionType::Number, "1", "scale of the added noise", {}}},
       sample_euler_ancestral, {}, {"eta"}},
      {"heun", "Heun's 2nd order method (Karras et al. 2022, Alg. 2). 2 NFE/step", kChurn, sample_heun, {},
       {"s_churn"}},
      {"dpm_solver", "DPM-Solver / DPM-Solver++, every method and order (official options). NFE = steps",
       dpm_solver_options(), sample_dpm_solver},
      {"dpmpp_2m", "DPM-Solver++(2M): multistep, data prediction, order 2", dpm_solver_options(), sample_dpm_solver,
       dpm("dpmsolver++", "multistep", "2")},
      {"dpmpp_3m", "DPM-Solver++(3M): multistep, data prediction, order 3", dpm_solver_options(), sample_dpm_solver,
       dpm("dpmsolver++", "multistep", "3")},
      {"dpmpp_2s", "DPM-Solver++(2S): singlestep, data prediction, order 2", dpm_solver_options(), sample_dpm_solver,
       dpm("dpmsolver++", "singlestep", "2")},
      {"dpm_solver_3s", "DPM-Solver-3 singlestep (DPM-Solver-fast), noise prediction", dpm_solver_options(),
       sample_dpm_solver, dpm("dpmsolver", "singlestep", "3")},
      {"dpm_adaptive", "DPM-Solver-12 / -23 with adaptive step size (order 2 / 3); NFE from atol, rtol",
       with_default(dpm_solver_options(), "order", "3"), sample_dpm_solver, {{"method", "adaptive"}}},
      {"dpmpp_2m_sde", "SDE-DPM-Solver++(2M) (eta, solver_type midpoint | heun). 1 NFE/step",
       plus(kSde, {{"solver_type", OptionType::String, "midpoint", "second-order term", {"midpoint", "heun"}}}),
       sample_dpmpp_2m_sde, {}, {"eta"}},
      {"dpmpp_3m_sde", "SDE-DPM-Solver++(3M) (eta). 1 NFE/step", kSde, sample_dpmpp_3m_sde, {}, {"eta"}},
      {"unipc", "UniPC (bh1 | bh2): predictor + free corrector. NFE = steps", unipc_options(), sample_unipc},
      {"teleport", "Exact Gaussian flow map to a skip point, then the `inner` sampler (Wang & Vastola 2024)",
       teleport_options(), sample_teleport},
      {"msg", "Mixture of score guidance around the `inner` sampler (MotionShop, Yesiltepe et al. 2024)",
       msg_options(), sample_msg},
  };
  return table;
}

}  // namespace scorch
