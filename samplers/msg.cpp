// Mixture of score guidance as a sampler wrapper (MotionShop, Yesiltepe et al. 2024):
// the `inner` sampler runs on the guided denoiser
//   eps = eps(x, c) + sum_i w_i(t) M_i (eps(x, c_i) - eps(x, cref_i))
// (engine/include/scorch/guidance.h), the same terms as `guidance.terms` in the config;
// `scale` adds classifier-free guidance. Reference samples (x*_t) need the pipeline's
// inversion, so they are given under guidance.terms, not here.
#include <yaml-cpp/yaml.h>

#include <cstdio>

#include "../engine/src/guidance_config.h"
#include "sampler.h"
#include "scorch/error.h"

namespace scorch {

const std::vector<OptionSpec>& msg_options() {
  static const std::vector<OptionSpec> specs = {
      {"terms", OptionType::Yaml, "[]", "list of terms: cond, ref_cond, weight, window, mask (docs/guidance.md)", {}},
      {"scale", OptionType::Number, "1", "classifier-free guidance scale (1: none)", {}},
      {"null_label", OptionType::Int, "-1", "the null label (-1: model.null_label)", {}},
      {"inner", OptionType::Section, "", "the guided sampler: name and its options (grid: this entry's)", {}},
  };
  return specs;
}

at::Tensor sample_msg(SamplerContext& ctx, at::Tensor x, const GridSpec& grid, const Options& o) {
  Denoiser& base = ctx.model();
  GuidanceContext gc;
  gc.shape = base.sample_shape();
  gc.conditional = base.conditional();
  gc.null_label = o.integer("null_label") >= 0 ? o.integer("null_label") : ctx.null_label();
  gc.options = x.options();
  YAML::Node terms;
  try {
    terms = YAML::Load(o.str("terms"));
  } catch (const YAML::Exception& e) {
    bad_input("sampler.terms: not a YAML list of terms (" + std::string(e.what()) + ")");
  }
  GuidanceSpec spec;
  spec.null_label = gc.null_label;
  spec.terms = parse_guidance_terms(terms, "sampler.terms", gc);
  spec.cfg_scale = o.number("scale");
  if (spec.cfg_scale != 1.0 && (!gc.conditional || gc.null_label < 0))
    bad_input("sampler.scale: classifier-free guidance needs a conditional model with a null label");

  std::map<std::string, std::string> raw = o.section("inner");
  const std::string name = raw.count("name") ? raw["name"] : "dpmpp_2m";
  raw.erase("name");
  if (name == "msg") bad_input("sampler.inner.name: msg cannot wrap itself");
  const SamplerInfo& inner = find_sampler(name);
  // the inner sampler takes this entry's grid unless it sets its own
  auto exact = [](double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", v);
    return std::string(buf);
  };
  for (const auto& [key, value] : std::map<std::string, std::string>{
           {"steps", std::to_string(grid.steps)}, {"skip_type", grid.skip_type}, {"t_start", exact(grid.t_start)},
           {"t_end", exact(grid.t_end)}, {"rho", exact(grid.rho)}})
    raw.emplace(key, value);
  const Options io = parse_sampler_options(inner, raw);
  GridSpec ig = grid_spec(io);
  ig.reverse = grid.reverse;

  // Guide the context's model for the inner run (non-owning: the context keeps it).
  std::unique_ptr<Denoiser> guided =
      make_guided_denoiser(std::shared_ptr<Denoiser>(std::shared_ptr<Denoiser>(), &base),
                           std::shared_ptr<const Schedule>(std::shared_ptr<const Schedule>(), &ctx.schedule()), spec);
  Denoiser* old = ctx.swap_model(guided.get());
  try {
    x = inner.run(ctx, x, ig, io);
  } catch (...) {
    ctx.swap_model(old);
    throw;
  }
  ctx.swap_model(old);
  return x;
}

}  // namespace scorch
