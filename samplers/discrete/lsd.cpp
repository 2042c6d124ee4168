// Learned step coefficients for masked diffusion (LSD, Fu et al. 2025).
#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "common.h"
#include <yaml-cpp/yaml.h>
#include "scorch/io.h"
#include "scorch/error.h"

namespace scorch {

using namespace discrete;

namespace {

// lsd (Fu et al. 2025): tau-leaping with a learned coefficient c_i on the log-score of step i,
//   P(x_s = v) = (t - s) sigma(t) s_v^c_i,   s_v = p_v / (e^sigma_bar - 1),  sigma(t) = alpha_rate / alpha,
// and optionally learned step sizes (LSD+: a scale d_i of step i's rate, `step_scales`) or
// times; the last step unmasks every remaining position from p^c_n normalised (the reference
// drops the mask column of s^c). c_i = d_i = 1 is euler. From a YAML file (`coefficients: [...]`, optional
// `step_scales: [...]`, `times: [1, ..., t_end]`), written by `scorch distill-lsd`.
at::Tensor sample_lsd(DiscreteContext& ctx, at::Tensor x, const Options& o) {
  absorbing_only(ctx, "lsd");
  const DiscreteSchedule& ns = ctx.schedule();
  const int steps = int(o.integer("steps"));
  std::vector<double> coef(size_t(steps), 1.0), scale(size_t(steps), 1.0), t = ctx.grid(steps);
  if (!o.str("coefficients").empty()) {
    const std::string path = find_input_file(o.str("coefficients"));
    check_input_file(path, "sampler.coefficients");
    YAML::Node y;
    try {
      y = YAML::LoadFile(path);
    } catch (const std::exception& e) {
      bad_input("sampler.coefficients '" + path + "': not a readable YAML file");
    }
    try {
      coef = y["coefficients"].as<std::vector<double>>();
      if (y["times"]) t = y["times"].as<std::vector<double>>();
      if (y["step_scales"]) scale = y["step_scales"].as<std::vector<double>>();
    } catch (const std::exception&) {
      bad_input("sampler.coefficients '" + path + "': expected coefficients: [numbers] (and times: [numbers])");
    }
    if (int(coef.size()) != steps || int(t.size()) != steps + 1 || int(scale.size()) != steps)
      bad_input("sampler.coefficients '" + path + "': has " + std::to_string(coef.size()) +
                " coefficients for sampler.steps = " + std::to_string(steps));
  }
  if (o.integer("blocks") != 1) bad_input("sampler.blocks: lsd runs one block");
  const at::Tensor all = at::ones({1, ctx.spec().length}, at::kBool);
  for (int k = 0; k < steps; ++k) {
    const double tk = t[size_t(k)], sk = t[size_t(k) + 1];
    const at::Tensor p = ctx.probs(x, times(tk, x.size(0)));
    if (k + 1 == steps)
      return unmask_step(ctx, x, at::softmax(coef[size_t(k)] * at::log(p.clamp_min(1e-300)), -1), all, times(1.0, x.size(0)), true);
    const double a = ns.alpha(tk), rate = ns.alpha_rate(tk) / a, log_score_shift = std::log(std::expm1(-std::log(a)));
    const at::Tensor w = scale[size_t(k)] * (tk - sk) * rate * at::exp(coef[size_t(k)] * (at::log(p.clamp_min(1e-300)) - log_score_shift));
    const at::Tensor stay = (1.0 - w.sum(-1, true)).clamp_min(0.0);
    const at::Tensor choice = ctx.sample(at::cat({w, stay}, -1));  // V means: stay masked
    const at::Tensor masked = x == ctx.spec().mask_id;
    x = at::where(masked & (choice < ctx.spec().vocab), choice, x);
  }
  return x;
}

}  // namespace

std::vector<DiscreteSamplerEntry> lsd_rows() {
  return {{"lsd", "tau-leaping with learned per-step log-score coefficients (Fu et al. 2025)",
           {{"coefficients", OptionType::String, "", "YAML file from scorch distill-lsd (empty: all 1, i.e. euler)", {}}},
           sample_lsd}};
}

}  // namespace scorch
