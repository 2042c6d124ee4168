// Analytic Gaussian teleportation (Wang & Vastola 2024, "The Unreasonable Effectiveness
// of Gaussian Score Approximation for Diffusion Models"): at high noise the learned
// score is nearly that of the data's Gaussian N(mu, Sigma), so the start of the
// trajectory is replaced by the exact Gaussian probability-flow map
//   x_skip = alpha_skip mu + U diag(sqrt((alpha_skip^2 lam + sigma_skip^2)/(alpha_T^2 lam + sigma_T^2))) U^T d
//            + (sigma_skip / sigma_T)(d - U U^T d),   d = x_T - alpha_T mu,
// and any registered sampler (`inner`) runs from t_skip to t_end.
//
// With a class-conditional file (`scorch fit gaussian --labels`) each labelled sample jumps
// with its own class's Gaussian. With `warm_model` a Gaussian mixture (or the empirical data
// set) replaces the single Gaussian: its exact flow has no closed form, so it is integrated
// by many cheap steps (no network call) to the skip point.
//
// The wrapper's `steps` and grid keys are the inner sampler's: it runs `steps` steps of
// `skip_type` from t_skip to t_end, so steps and model calls are what the inner sampler
// takes for that many steps. skip_fraction and auto read the skip point off a separate
// probe grid of `probe_steps` steps of `skip_type` over [t_start, t_end].
#include <ATen/ATen.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>

#include "scorch/error.h"
#include "scorch/gaussian.h"
#include "scorch/io.h"
#include "scorch/mixture_model.h"
#include "scorch/sampler.h"
#include "scorch/teleport.h"

namespace scorch {

namespace {

const Schema& teleport_options() {
  static const Schema specs = {
      {"gaussian", OptionType::String, "", "the data's Gaussian (a `gaussian` safetensors file)", {}},
      {"t_skip", OptionType::Number, "-1", "skip point as a time", {}, -1, 1e6},
      {"sigma_skip", OptionType::Number, "-1", "skip point as a VE noise level sigma/alpha", {}, -1, 1e6},
      {"skip_fraction", OptionType::Number, "-1", "skip point as a fraction of the probe grid (probe_steps)", {}, -1, 1},
      {"auto", OptionType::Bool, "false", "choose the skip point from the denoiser (see docs/samplers.md)", {}},
      {"auto_rule", OptionType::String, "error", "auto: error (least estimated error of the result for these steps) | departure (the first point where eps departs by auto_tol)", {"error", "departure"}},
      {"auto_tol", OptionType::Number, "0.02", "auto_rule departure: relative eps departure from the Gaussian that ends the jump", {}, 0, 1000},
      {"auto_probe", OptionType::Int, "16", "auto: size of the fixed probe batch (its own noise, not the samples)", {}, 1, 1000000},
      {"auto_ref_steps", OptionType::Int, "3", "auto_rule error: reference dpmpp_2m steps per probe-grid interval", {}, 1, 1000},
      {"probe_steps", OptionType::Int, "20", "steps of the grid over [t_start, t_end] that auto probes and skip_fraction rounds to", {}, 1, 100000},
      {"warm_model", OptionType::String, "", "instead of the Gaussian jump: a gmm or empirical file integrated to the skip point (no network call)", {}},
      {"warm_model_type", OptionType::String, "gmm", "warm_model's kind", {"gmm", "empirical"}},
      {"warm_steps", OptionType::Int, "50", "warm_model: dpmpp_3m steps (logSNR) from t_start to the skip point", {}, 1, 100000},
      {"inner", OptionType::Section, "", "the sampler run from the skip point: name (default dpmpp_2m; none: stop at the skip point) and its own options, not the grid", {}},
  };
  return specs;
}

// auto: walk the probe grid from t_start down; at each point teleport a probe batch
// there and compare the denoiser's eps with the Gaussian's. The skip point is the
// last point where the relative RMS departure is at most tol (the largest t where
// the prediction departs by more than tol ends the jump). The probe batch is its own
// fixed noise (stream 0), not the samples: the skip point depends on the model, the
// grid and the model only, so each sample stays reproducible on its own. The Gaussian is
// the whole data's, so a conditional model is probed unconditionally (its null label).
double auto_skip(SamplerContext& ctx, const GaussianModel& g, const at::Tensor& x, const std::vector<double>& t,
                 double tol, int64_t probe) {
  const Schedule& ns = ctx.schedule();
  std::vector<int64_t> shape = x.sizes().vec();
  shape[0] = probe;
  const at::Tensor xp = Rng(0).normal(shape, x.options()) * ns.sigma(t[0]);
  at::Tensor null;
  if (ctx.model().conditional()) {
    if (ctx.null_label() < 0 && !ctx.indexed_cond())
      bad_input("sampler.auto: a conditional model needs model.null_label (the probe compares its unconditional "
                "prediction with the data's Gaussian)");
    // declared inputs: -1 is sample 0's negative inputs (model_inputs.h)
    null = at::full({probe}, ctx.indexed_cond() ? -1 : ctx.null_label(),
                    at::TensorOptions().dtype(at::kLong).device(x.device()));
  }
  double t_skip = t.front();
  for (size_t k = 1; k + 1 < t.size(); ++k) {
    const double a = ns.alpha(t[k]), s = ns.sigma(t[k]);
    const at::Tensor xk = gaussian_flow(g, xp, ns.alpha(t[0]), ns.sigma(t[0]), a, s);
    const at::Tensor eps_model = ctx.denoise(xk, t[k], null).eps;
    const at::Tensor eps_gauss = from_model_output(PredictionType::X0, gaussian_x0(g, xk, a, s), xk, a, s).eps;
    const double dev = ((eps_model - eps_gauss).norm() / eps_gauss.norm()).item<double>();
    if (!(dev <= tol)) break;
    t_skip = t[k];
  }
  return t_skip;
}

// Keeps the state after every `every`-th step of a run while `on` (the reference
// trajectory's states at the candidate points).
class KeepStates final : public StepHook {
 public:
  explicit KeepStates(int every) : every_(every) {}
  at::Tensor after_step(SamplerContext&, at::Tensor x, StepEnd& step) override {
    if (on && step.step % every_ == 0) states.push_back(x.clone());
    return x;
  }
  bool on = true;
  std::vector<at::Tensor> states;

 private:
  int every_;
};

double rms(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).to(at::kDouble).pow(2).mean().sqrt().item<double>();
}

class Teleport final : public Sampler {
 public:
  explicit Teleport(const Options& o) : o_(o) {
    const YAML::Node& inner = o.node("inner");
    const bool none = inner.IsMap() && inner["name"] && inner["name"].IsScalar() && inner["name"].Scalar() == "none";
    if (!none) inner_ = make_inner_sampler(inner, "sampler.inner", "teleport", "dpmpp_2m");
    const bool departure = o.flag("auto") && o.str("auto_rule") == "departure";
    if (o.str("gaussian").empty() && (o.str("warm_model").empty() || departure))
      bad_input("sampler.gaussian: teleport needs the data's Gaussian model file (or a warm_model, with a fixed skip "
                "point or auto_rule error)");
    if (o.flag("auto") && !departure && !inner_)
      bad_input("sampler.auto_rule: error measures the inner sampler's result; with inner.name none use auto_rule: "
                "departure or a fixed skip point");
    const int given = (o.number("t_skip") >= 0) + (o.number("sigma_skip") >= 0) + (o.number("skip_fraction") >= 0) +
                      o.flag("auto");
    if (given != 1) bad_input("sampler: teleport needs exactly one of t_skip, sigma_skip, skip_fraction, auto");
    if (o.number("skip_fraction") > 1.0) bad_input("sampler.skip_fraction: expected a number in [0, 1]");
  }

  // The exact Gaussian flow from t_from to t_to. With a class-conditional file and class
  // labels, each sample moves with its own class's Gaussian; samples without a class (the
  // null label, an unconditional model, declared inputs) with the whole data's. Under
  // classifier-free guidance the class's Gaussian is the target the guided model aims at
  // (the guided score of two Gaussians is not a Gaussian's), docs/samplers.md.
  static at::Tensor jump(SamplerContext& ctx, const GaussianModel& all, const std::vector<GaussianModel>& classes,
                         const at::Tensor& x, double t_from, double t_to) {
    const Schedule& ns = ctx.schedule();
    const double a0 = ns.alpha(t_from), s0 = ns.sigma(t_from), a1 = ns.alpha(t_to), s1 = ns.sigma(t_to);
    // Padded to 16 rows like the analytic denoisers (batch_invariant): sample i's jump must
    // not depend on how many samples share its batch or its class.
    const auto flow = [&](const GaussianModel& g, const at::Tensor& xs) {
      return batch_invariant(xs, {}, [&](const at::Tensor& xb, const at::Tensor&) {
        return gaussian_flow(g, xb, a0, s0, a1, s1);
      });
    };
    const at::Tensor& cond = ctx.cond();
    const bool labelled = !classes.empty() && cond.defined() && !ctx.indexed_cond() && cond.dim() == 1 &&
                          cond.size(0) == x.size(0) && !at::isFloatingType(cond.scalar_type());
    if (!labelled) return flow(all, x);
    const at::Tensor labels = cond.to(at::kLong).cpu();
    at::Tensor out = flow(all, x);
    for (size_t c = 0; c < classes.size(); ++c) {
      const at::Tensor rows = (labels == int64_t(c)).nonzero().squeeze(1).to(x.device());
      if (rows.numel() == 0) continue;
      const GaussianModel g = classes[c].to(x.options());
      if (g.dim() != x[0].numel())
        bad_input("sampler.gaussian: class " + std::to_string(c) + "'s Gaussian has D = " + std::to_string(g.dim()) +
                  ", the samples " + std::to_string(x[0].numel()));
      out.index_copy_(0, rows, flow(g, x.index_select(0, rows)));
    }
    return out;
  }

  // The warm start: the probability-flow ODE of a cheap analytic model (a Gaussian mixture
  // or the empirical data set: its score is exact and costs no network call) integrated
  // with `warm_steps` dpmpp_3m steps from t_from to the skip point. A class-conditional
  // mixture follows each sample's label.
  at::Tensor warm_start(SamplerContext& ctx, const at::Tensor& x, double t_from, double t_to) const {
    const Schedule& ns = ctx.schedule();
    const std::string path = o_.str("warm_model");
    MixtureModel mm = load_mixture_model(find_input_file(path), o_.str("warm_model_type"));
    mm.mixture = mm.mixture.to(x.options());
    if (mm.mixture.means.size(1) != x[0].numel())
      bad_input("sampler.warm_model: the mixture has D = " + std::to_string(mm.mixture.means.size(1)) + ", the samples " +
                std::to_string(x[0].numel()));
    const bool labelled = mm.labels.defined() && ctx.cond().defined() && !ctx.indexed_cond();
    // The context's schedule outlives this call: a shared pointer that does not own it.
    const std::shared_ptr<const Schedule> schedule(&ns, [](const Schedule*) {});
    std::unique_ptr<Denoiser> cheap = make_mixture_denoiser(mm, schedule);
    Rng rng(0);
    SamplerContext warm(*cheap, ns, rng, labelled ? ctx.cond() : at::Tensor());
    const SamplerEntry& entry = samplers().find("dpmpp_3m");
    const Options wo = parse_sampler_options(entry, {{"steps", std::to_string(o_.integer("warm_steps"))}});
    GridSpec spec = grid_spec(wo);
    spec.skip_type = "logSNR";
    spec.t_start = t_from;
    spec.t_end = t_to;
    const auto start = std::chrono::steady_clock::now();
    const at::Tensor out = entry.make(wo)->run(warm, x, build_time_grid(ns, spec));
    ctx.note("teleport: warm start: " + std::to_string(warm.nfe()) + " steps of dpmpp_3m on '" + path + "' to the skip point, " +
             std::to_string(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count()) +
             " ms, no network call");
    return out;
  }

  using MoveFn = std::function<at::Tensor(SamplerContext&, const at::Tensor&, double, double)>;

  // auto_rule error (teleport.h): on a fixed probe batch (its own noise, stream 0, so each
  // sample stays reproducible on its own), the skip point whose jump followed by this run's
  // inner sampler and steps lands nearest the network's finely solved flow. A conditional
  // model is probed with labels 0 .. C-1 in turn (C: the class Gaussians', else null_label)
  // when the run has labels, else unconditionally (the null label).
  double least_error_skip(SamplerContext& ctx, const at::Tensor& x, const TimeGrid& grid, const GridSpec& probe,
                          size_t classes, const MoveFn& move) const {
    const Schedule& ns = ctx.schedule();
    const int64_t size = o_.integer("auto_probe");
    std::vector<int64_t> shape = x.sizes().vec();
    shape[0] = size;
    const at::Tensor xp = Rng(0).normal(shape, x.options()) * ns.sigma(grid.t.front());
    at::Tensor cond;
    if (ctx.model().conditional()) {
      const at::Tensor& c = ctx.cond();
      const bool labelled = c.defined() && !ctx.indexed_cond() && c.dim() == 1 && !at::isFloatingType(c.scalar_type());
      const int64_t count = classes > 0 ? int64_t(classes) : ctx.null_label();
      const auto opts = at::TensorOptions().dtype(at::kLong).device(x.device());
      if (labelled && count > 0) {
        cond = at::arange(size, opts).remainder(count);
      } else {
        if (ctx.null_label() < 0 && !ctx.indexed_cond())
          bad_input("sampler.auto: a conditional model needs model.null_label (the probe batch runs unconditionally "
                    "when the samples have no class labels)");
        cond = at::full({size}, ctx.indexed_cond() ? -1 : ctx.null_label(), opts);  // -1: sample 0's negative inputs
      }
    }
    Rng rng(0);
    SamplerContext pc(ctx.model(), ns, rng, cond);
    pc.set_null_label(ctx.null_label());
    pc.set_indexed_cond(ctx.indexed_cond());
    SkipSearch search;
    search.candidates = probe.steps;
    search.ref_steps = int(o_.integer("auto_ref_steps"));
    search.jump_errors = false;
    search.stop_ratio = 2.0;  // the error is U-shaped in the skip point: past twice the best, stop
    const std::vector<SkipEstimate> est = estimate_skip_errors(
        pc, xp, probe, *inner_, grid.spec,
        [&](const at::Tensor& x0, double t_k) { return move(pc, x0, grid.t.front(), t_k); }, search);
    size_t best = 0;
    for (size_t k = 1; k < est.size(); ++k)
      if (est[k].total_error < est[best].total_error) best = k;
    char line[400];
    std::snprintf(line, sizeof line,
                  "teleport: auto: sigma_skip %.4g (t %.6g) for %d inner steps: estimated RMS error of the result %.4g "
                  "(the jump's share %.4g; no jump %.4g); %zu of %d candidates tried; probe: %lld calls of %lld samples",
                  est[best].sigma, est[best].t, grid.steps(), est[best].total_error, est[best].jump_error,
                  est[0].total_error, est.size(), probe.steps, static_cast<long long>(pc.nfe()),
                  static_cast<long long>(size));
    ctx.note(line);
    return est[best].t;
  }

  at::Tensor run(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid) override {
    const Schedule& ns = ctx.schedule();
    const Options& o = o_;
    if (grid.reverse()) bad_input("sampler: teleport cannot run an inversion");
    GaussianModel g;
    if (!o.str("gaussian").empty()) g = load_gaussian(find_input_file(o.str("gaussian"))).to(x.options());
    if (g.mean.defined() && g.dim() != x[0].numel())
      bad_input("sampler.gaussian: the Gaussian has D = " + std::to_string(g.dim()) + ", the samples " +
                std::to_string(x[0].numel()));
    const std::vector<GaussianModel> classes =
        o.str("gaussian").empty() ? std::vector<GaussianModel>{} : load_class_gaussians(find_input_file(o.str("gaussian")));
    // The cheap model's move from t_from to t_to: the Gaussian jump or the warm start, for
    // the samples and for auto's probe batch (each with its own context's labels).
    const MoveFn move = [&](SamplerContext& c, const at::Tensor& x0, double t_from, double t_to) {
      if (o.str("warm_model").empty()) return jump(c, g, classes, x0, t_from, t_to);
      return t_to < t_from ? warm_start(c, x0, t_from, t_to) : x0;
    };
    const std::vector<double>& t = grid.t;
    GridSpec probe = grid.spec;
    probe.steps = int(o.integer("probe_steps"));
    const std::vector<double> tp = make_time_grid(ns, probe);
    double t_skip;
    if (o.number("t_skip") >= 0) {
      t_skip = o.number("t_skip");
    } else if (o.number("sigma_skip") >= 0) {
      t_skip = ns.t_of_ve_sigma(o.number("sigma_skip"));
    } else if (o.number("skip_fraction") >= 0) {
      t_skip = tp[size_t(std::lround(o.number("skip_fraction") * probe.steps))];
    } else if (o.str("auto_rule") == "departure") {
      t_skip = auto_skip(ctx, g, x, tp, o.number("auto_tol"), o.integer("auto_probe"));
    } else {
      t_skip = least_error_skip(ctx, x, grid, probe, classes.size(), move);
    }
    if (!(t_skip <= t.front() && t_skip >= t.back()))
      bad_input("sampler.t_skip: " + std::to_string(t_skip) + " is outside [t_end, t_start] = [" +
                std::to_string(t.back()) + ", " + std::to_string(t.front()) + "]");
    ctx.note("teleport: skip point t = " + std::to_string(t_skip) + " (sigma/alpha = " +
             std::to_string(ns.sigma(t_skip) / ns.alpha(t_skip)) + ")");
    x = move(ctx, x, t.front(), t_skip);
    if (!inner_ || t_skip <= t.back()) return x;  // no inner sampler, or the jump reached t_end
    // The inner sampler: `steps` steps of the same kind from the skip point to t_end.
    GridSpec inner = grid.spec;
    inner.t_start = t_skip;
    inner.t_end = t.back();
    return inner_->run(ctx, x, build_time_grid(ns, inner));
  }

 private:
  Options o_;
  std::unique_ptr<Sampler> inner_;
};

}  // namespace

std::vector<SkipEstimate> estimate_skip_errors(SamplerContext& ctx, const at::Tensor& x_T, const GridSpec& probe,
                                               Sampler& inner, const GridSpec& inner_spec,
                                               const std::function<at::Tensor(const at::Tensor&, double)>& jump,
                                               const SkipSearch& search) {
  const Schedule& ns = ctx.schedule();
  // The reference: the network's own flow from x_T by dpmpp_2m on the probe grid refined
  // ref_steps times, keeping its state at every probe point (the candidates).
  GridSpec fine = probe;
  fine.steps = probe.steps * search.ref_steps;
  const TimeGrid ref_grid = build_time_grid(ns, fine);
  const SamplerEntry& solver = samplers().find("dpmpp_2m");
  auto keep = std::make_shared<KeepStates>(search.ref_steps);
  ctx.add_hook(keep);
  const at::Tensor x_end =
      solver.make(parse_sampler_options(solver, {{"steps", std::to_string(fine.steps)}}))->run(ctx, x_T, ref_grid);
  keep->on = false;
  std::vector<at::Tensor> x_ref = {x_T};
  x_ref.insert(x_ref.end(), keep->states.begin(), keep->states.end());

  const auto finish = [&](const at::Tensor& x, double t_k) {
    GridSpec g = inner_spec;
    g.t_start = t_k;
    g.t_end = ref_grid.t.back();
    return inner.run(ctx, x, build_time_grid(ns, g));
  };
  std::vector<SkipEstimate> out;
  std::vector<at::Tensor> results;
  size_t best = 0;
  const int count = std::min(search.candidates, probe.steps);
  for (int k = 0; k < count && size_t(k) < x_ref.size(); ++k) {
    SkipEstimate e;
    e.t = ref_grid.t[size_t(k * search.ref_steps)];
    e.sigma = ns.sigma(e.t) / ns.alpha(e.t);
    const at::Tensor a = finish(k == 0 ? x_T : jump(x_T, e.t), e.t);
    e.total_error = rms(a, x_end);
    if (search.jump_errors) e.jump_error = k == 0 ? 0.0 : rms(a, finish(x_ref[size_t(k)], e.t));
    out.push_back(e);
    results.push_back(a);
    if (e.total_error < out[best].total_error) best = out.size() - 1;
    if (search.stop_ratio > 0 && e.total_error > search.stop_ratio * out[best].total_error) break;
  }
  if (!search.jump_errors)  // the chosen candidate's share only
    out[best].jump_error = best == 0 ? 0.0 : rms(results[best], finish(x_ref[best], out[best].t));
  return out;
}

std::vector<SamplerEntry> teleport_rows() {
  return {{"teleport", "Exact Gaussian flow map to a skip point, then `steps` steps of the `inner` sampler (Wang & Vastola 2024)",
           teleport_options(), [](const Options& o) { return std::unique_ptr<Sampler>(new Teleport(o)); }}};
}

}  // namespace scorch
