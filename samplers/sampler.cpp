// The sampler context, option reading shared by every registry row, and the wrappers' inner samplers.
#include "scorch/sampler.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>

#include "scorch/error.h"

namespace scorch {

SamplerContext::SamplerContext(Denoiser& model, const Schedule& schedule, Rng& rng, at::Tensor cond,
                               ProgressFn progress)
    : model_(&model),
      schedule_(schedule),
      rng_(rng),
      cond_(std::move(cond)),
      progress_(std::move(progress)),
      start_(std::chrono::steady_clock::now()) {}

Prediction SamplerContext::denoise(const at::Tensor& x, double t, const at::Tensor& cond) {
  Prediction p = model_->predict(x, t, cond);
  nfe_ += model_->last_calls();
  if (p.x0.size(0) == x.size(0)) last_x0_ = p.x0;  // probes on a sub-batch are no preview
  // One read of x0 finds NaN and Inf (they survive a sum). Checking x0 alone suffices:
  // x0 and eps determine each other through the finite x, alpha and sigma.
  if (!std::isfinite(p.x0.sum().item<double>())) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", t);
    bad_input("model output is not finite at step " + std::to_string(step_ + 1) + " (t = " + buf + ", NFE " +
              std::to_string(nfe_) + ")");
  }
  return p;
}

AncestralStep ancestral_step(double sigma, double sigma_next, double eta) {
  const double up =
      std::min(sigma_next, eta * std::sqrt(sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) /
                                           (sigma * sigma)));
  return {std::sqrt(sigma_next * sigma_next - up * up), up};
}

double gauss_legendre(const std::function<double(double)>& f, double a, double b, int panels) {
  static const double nodes[4] = {-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526};
  static const double weights[4] = {0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538};
  const double half = 0.5 * (b - a) / panels;
  double sum = 0.0;
  for (int p = 0; p < panels; ++p) {
    const double mid = a + (2 * p + 1) * half;
    for (int q = 0; q < 4; ++q) sum += half * weights[q] * f(mid + half * nodes[q]);
  }
  return sum;
}

double ode_time(const Schedule& schedule, double t) {
  return schedule.integrates_in_time() ? t : schedule.ve_sigma(t);
}

at::Tensor OdeFrame::y(const at::Tensor& x, double t) const { return ns.integrates_in_time() ? x : x / ns.alpha(t); }
at::Tensor OdeFrame::x(const at::Tensor& y, double t) const { return ns.integrates_in_time() ? y : ns.alpha(t) * y; }

at::Tensor OdeFrame::dy(const Prediction& p, double t) const {
  return ns.integrates_in_time() ? lincomb({{ns.d_alpha(t), p.x0}, {ns.d_sigma(t), p.eps}}) : p.eps;
}

at::Tensor SamplerContext::noise_between(const at::Tensor& x, double t_from, double t_to) {
  if (!brownian_) return rng_.normal_like(x);
  return brownian_->increment(x.sizes(), x.options(), ode_time(schedule_, t_from), ode_time(schedule_, t_to));
}

at::Tensor SamplerContext::uniform(const at::Tensor& like) {
  // Phi(z) of the seeded normal stream: uniform, and reproducible like every other draw.
  return at::special_ndtr(rng_.normal_like(like.to(at::kDouble))).to(like.options());
}

at::Tensor SamplerContext::end_step(int step, int total, double t, at::Tensor x) {
  step += step_offset_;
  if (total > 0) total += extra_steps_;
  step_ = step;
  StepEnd end{step, total, t};
  for (const auto& hook : hooks_) x = hook->after_step(*this, x, end);
  corrected_ = end.changed;
  if (!progress_) return x;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (!progress_(StepInfo{step, total, nfe_, t, elapsed, end.acceptance, last_x0_}))
    cancelled("cancelled after step " + std::to_string(step) + " of " + std::to_string(total));
  return x;
}

const Schema& grid_options() {
  static const Schema specs = {
      {"steps", OptionType::Int, "20", "number of steps (the time grid has steps + 1 points)", {}, 1, 100000},
      {"skip_type", OptionType::String, "auto", "time grid (auto: flow_match on flow schedules, else logSNR)",
       skip_types()},
      {"t_start", OptionType::Number, "-1", "first time of the grid; -1: the schedule's t_max", {}, -1, 1e6},
      {"t_end", OptionType::Number, "-1", "last time of the grid; -1: the schedule's t_min", {}, -1, 1e6},
      {"rho", OptionType::Number, "7", "karras grid exponent", {}, 0, 1000},
      {"threshold_noise", OptionType::Number, "0.025", "linear_quadratic: the noise fraction after the linear part", {}, 0, 1},
      {"linear_steps", OptionType::Int, "-1", "linear_quadratic: points of the linear part (-1: steps / 2)", {}, -1, 100000},
      {"beta_alpha", OptionType::Number, "0.6", "beta grid: the Beta distribution's alpha", {}, 0, 1000},
      {"beta_beta", OptionType::Number, "0.6", "beta grid: the Beta distribution's beta", {}, 0, 1000},
      {"ays_model", OptionType::String, "SD1", "ays grid: the Align Your Steps table", {"SD1", "SDXL", "SVD"}},
      {"gits_coeff", OptionType::Number, "1.2", "gits grid: the weight of earlier jumps' cost in the search", {}, 0, 1000},
      {"gits_teacher_steps", OptionType::Int, "100", "gits grid: the teacher's Heun steps (the points searched)", {}, 1, 10000},
      {"gits_warmup", OptionType::Int, "32", "gits grid: probe samples the teacher solves", {}, 1, 100000},
      {"sigmas", OptionType::NumberList, "[]",
       "a grid of your own in the schedule's sigma (VE sigma/alpha; flow: t), decreasing, 0 = t_end; overrides steps", {}},
      {"timesteps", OptionType::NumberList, "[]", "a grid of your own in training timesteps, decreasing; overrides steps", {}},
      {"split", OptionType::Int, "0", "two-stage sampling: the step where the grid is split (with part)", {}, 0, 100000},
      {"part", OptionType::String, "all", "two-stage sampling: the steps before split (high) or after (low)",
       {"all", "high", "low"}},
  };
  return specs;
}

Schema all_options(const SamplerEntry& sampler) {
  Schema specs;
  for (const auto* list : {&grid_options(), &sampler.options})
    for (const auto& s : *list)
      if (!sampler.fixed.count(s.name)) specs.push_back(s);
  return specs;
}

Options read_sampler_options(const SamplerEntry& sampler, const YAML::Node& section, const std::string& path,
                             bool grid) {
  if (section && section.IsMap())
    for (const auto& kv : section) {
      const std::string key = kv.first.as<std::string>();
      if (sampler.fixed.count(key))
        bad_input(path + "." + key + ": '" + sampler.name + "' fixes it to " + sampler.fixed.at(key) +
                  "; use the general sampler to change it");
      if (!grid)
        for (const auto& g : grid_options())
          if (g.name == key)
            bad_input(path + "." + key + ": the inner sampler runs on the wrapper's grid; set it on the wrapper");
    }
  Schema specs = grid_options();
  specs.insert(specs.end(), sampler.options.begin(), sampler.options.end());
  Options o = Options::read(section, specs, path, {"name"});
  for (const auto& [name, value] : sampler.fixed)
    for (const auto& s : specs)
      if (s.name == name) o.set(s, value, path);
  return o;
}

Options parse_sampler_options(const SamplerEntry& sampler, const std::map<std::string, std::string>& raw) {
  return read_sampler_options(sampler, yaml_mapping(raw), "sampler");
}

GridSpec grid_spec(const Options& o) {
  GridSpec g;
  g.steps = int(o.integer("steps"));
  g.skip_type = o.str("skip_type");
  g.t_start = o.number("t_start");
  g.t_end = o.number("t_end");
  g.rho = o.number("rho");
  g.threshold_noise = o.number("threshold_noise");
  g.linear_steps = int(o.integer("linear_steps"));
  g.beta_alpha = o.number("beta_alpha");
  g.beta_beta = o.number("beta_beta");
  g.ays_model = o.str("ays_model");
  g.gits_coeff = o.number("gits_coeff");
  g.gits_teacher_steps = int(o.integer("gits_teacher_steps"));
  g.gits_warmup = int(o.integer("gits_warmup"));
  g.sigmas = o.number_list("sigmas");
  g.timesteps = o.number_list("timesteps");
  g.split = int(o.integer("split"));
  g.part = o.str("part");
  return g;
}

namespace {

// Restores the context's step offset when the run ends (or throws).
class StepOffset {
 public:
  StepOffset(SamplerContext& ctx, int before, int after) : ctx_(ctx) { ctx.set_step_offset(before, after); }
  ~StepOffset() { ctx_.set_step_offset(0, 0); }

 private:
  SamplerContext& ctx_;
};

class FunctionSampler final : public Sampler {
 public:
  FunctionSampler(SamplerFn fn, Options o, Endpoints endpoints) : fn_(fn), o_(std::move(o)), endpoints_(endpoints) {}
  at::Tensor run(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid) override {
    const Schedule& ns = ctx.schedule();
    const int n = grid.steps();
    // An endpoint where logSNR is infinite (an exponential integrator's h would be too).
    const auto singular = [&](double t) { return ns.alpha(t) == 0.0 || ns.sigma(t) == 0.0; };
    const bool own = endpoints_ == Endpoints::Own || (endpoints_ == Endpoints::InTime && ns.integrates_in_time());
    const bool first = !own && singular(grid.t.front()), last = !own && singular(grid.t.back());
    if (!first && !last) return fn_(ctx, x, grid, o_);
    int lo = 0, hi = n;
    if (first) {
      x = endpoint_step(ctx, x, grid.t[0], grid.t[1], 1, n);
      lo = 1;
    }
    if (last && hi > lo) hi = n - 1;
    if (hi > lo) {
      TimeGrid inner = grid;
      inner.t.assign(grid.t.begin() + lo, grid.t.begin() + hi + 1);
      // spec.steps stays the configured count: the step-count checks are about the user's steps.
      inner.spec.t_start = inner.t.front();
      inner.spec.t_end = inner.t.back();
      if (inner.spec.reverse) std::swap(inner.spec.t_start, inner.spec.t_end);
      StepOffset offset(ctx, lo, n - hi);
      x = fn_(ctx, x, inner, o_);
    }
    if (hi < n) x = endpoint_step(ctx, x, grid.t[hi], grid.t[n], n, n);
    return x;
  }

 private:
  // x_t = alpha_t x0 + sigma_t eps (DDIM, first order).
  static at::Tensor endpoint_step(SamplerContext& ctx, const at::Tensor& x, double s, double t, int step, int total) {
    const Prediction p = ctx.denoise(x, s);
    return ctx.end_step(step, total, t, lincomb({{ctx.schedule().alpha(t), p.x0}, {ctx.schedule().sigma(t), p.eps}}));
  }

  SamplerFn fn_;
  Options o_;
  Endpoints endpoints_;
};

}  // namespace

std::function<std::unique_ptr<Sampler>(const Options&)> function_sampler(SamplerFn fn, Endpoints endpoints) {
  return [fn, endpoints](const Options& o) { return std::unique_ptr<Sampler>(new FunctionSampler(fn, o, endpoints)); };
}

std::unique_ptr<Sampler> make_inner_sampler(const YAML::Node& section, const std::string& path,
                                            const std::string& wrapper, const std::string& fallback) {
  std::string name = fallback;
  if (section && section.IsMap() && section["name"]) {
    if (!section["name"].IsScalar()) bad_input(path + ".name: expected a sampler name");
    name = section["name"].Scalar();
  }
  if (name == wrapper) bad_input(path + ".name: " + wrapper + " cannot wrap itself");
  const SamplerEntry& inner = samplers().find(name, path + ".name");
  return inner.make(read_sampler_options(inner, section, path, /*grid=*/false));
}

}  // namespace scorch
