// Mixture of score guidance as a sampler wrapper (MotionShop, Yesiltepe et al. 2024):
// the `inner` sampler runs, on the wrapper's grid, on the guided denoiser
//   eps = eps(x, c) + sum_i w_i(t) M_i (eps(x, c_i) - eps(x, cref_i))
// (include/scorch/guidance.h). The terms are read by the same reader as the config's
// `guidance.terms` (scorch/guidance_reader.h); `scale` adds classifier-free guidance.
// Reference samples (x*_t) need the pipeline's inversion, so they are given under
// guidance.terms, not here.
#include "scorch/error.h"
#include "scorch/guidance_reader.h"
#include "scorch/sampler.h"

namespace scorch {

namespace {

const Schema& msg_options() {
  static const Schema specs = {
      {"terms", OptionType::Yaml, "[]", "list of terms: cond, ref_cond, weight, window, mask (docs/guidance.md)", {}},
      {"scale", OptionType::Number, "1", "classifier-free guidance scale (1: none)", {}, -1000, 1000},
      {"null_label", OptionType::Int, "-1", "the null label (-1: model.null_label)", {}, -1, 16777216},
      {"inner", OptionType::Section, "", "the guided sampler: name (default dpmpp_2m) and its own options, not the grid", {}},
  };
  return specs;
}

class Msg final : public Sampler {
 public:
  explicit Msg(const Options& o) : o_(o), inner_(make_inner_sampler(o.node("inner"), "sampler.inner", "msg", "dpmpp_2m")) {}

  at::Tensor run(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid) override {
    Denoiser& base = ctx.model();
    GuidanceContext gc;
    gc.shape = base.sample_shape();
    gc.conditional = base.conditional();
    gc.indexed = ctx.indexed_cond();
    if (gc.indexed && o_.integer("null_label") >= 0)
      bad_input("sampler.null_label: with model.inputs the unconditional rows are the inputs' negatives");
    gc.null_label = o_.integer("null_label") >= 0 ? o_.integer("null_label") : ctx.null_label();
    gc.options = x.options();
    GuidanceSpec spec;
    spec.null_label = gc.null_label;
    spec.indexed = gc.indexed;
    spec.terms = parse_guidance_terms(o_.node("terms"), "sampler.terms", gc);
    spec.cfg_scale = o_.number("scale");
    if (spec.cfg_scale != 1.0 && (!gc.conditional || (gc.null_label < 0 && !gc.indexed)))
      bad_input("sampler.scale: classifier-free guidance needs a conditional model with a null label");
    // Guide the context's model for the inner run (non-owning: the context keeps it).
    std::unique_ptr<Denoiser> guided =
        make_guided_denoiser(std::shared_ptr<Denoiser>(std::shared_ptr<Denoiser>(), &base),
                             std::shared_ptr<const Schedule>(std::shared_ptr<const Schedule>(), &ctx.schedule()), spec);
    ScopedDenoiser scope(ctx, *guided);
    return inner_->run(ctx, x, grid);
  }

 private:
  Options o_;
  std::unique_ptr<Sampler> inner_;
};

}  // namespace

std::vector<SamplerEntry> msg_rows() {
  return {{"msg", "Mixture of score guidance around the `inner` sampler, on this entry's grid (MotionShop, Yesiltepe et al. 2024)",
           msg_options(), [](const Options& o) { return std::unique_ptr<Sampler>(new Msg(o)); }}};
}

}  // namespace scorch
