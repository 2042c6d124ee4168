// The public sampler API: run any registered sampler on any Denoiser (a TorchScript
// network, an analytic model, or a C++ lambda wrapped in FunctionDenoiser).
//
//   const SamplerEntry& e = samplers().find("dpmpp_2m");
//   std::unique_ptr<Sampler> s = e.make(read_sampler_options(e, yaml_node, "sampler"));
//   TimeGrid grid = build_time_grid(schedule, grid_spec(options));
//   Rng rng(seed);
//   SamplerContext ctx(denoiser, schedule, rng);
//   at::Tensor x0 = s->run(ctx, x_T, grid);
//
// A sampler is a function of (context, x_T, time grid, options): it owns no model and does
// no I/O. The context evaluates the denoiser (counting NFE, rejecting non-finite output
// with the step number), draws seeded noise, and ends each step: it runs the step hooks
// the caller installed (inpainting, MCMC correctors, trajectory recording) and reports
// progress, which may cancel the run.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <functional>
#include <initializer_list>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "scorch/brownian.h"
#include "scorch/denoiser.h"
#include "scorch/lincomb.h"
#include "scorch/options.h"
#include "scorch/progress.h"
#include "scorch/registry.h"
#include "scorch/rng.h"
#include "scorch/schedule.h"
#include "scorch/time_grid.h"

namespace scorch {

class SamplerContext;

// The coordinates the k-diffusion-style samplers (euler, heun, ipndm) integrate the PF-ODE in,
// with the time variable s(t) of the Brownian noise too:
//   VP, EDM (Karras et al. 2022): y = x / alpha, s = sigma / alpha,  dy/ds = eps;
//   flow (diffusers' FlowMatchEuler/Heun): y = x, s = t, dy/ds = alpha' x0 + sigma' eps
//   (the velocity, z - x0), finite at both ends t = 1 and t = 0.
// Euler is DDIM in both (a step exact for constant eps resp. velocity; on flow both hold).
double ode_time(const Schedule& schedule, double t);

// One Heun step (Karras et al. 2022, Alg. 2 without the churn) in the OdeFrame from t_a to
// t_b: Euler predictor, trapezoidal corrector; Euler alone into sigma = 0. 2 NFE (1 into 0).
at::Tensor heun_step(SamplerContext& ctx, const at::Tensor& x, double t_a, double t_b);

// k-diffusion's get_ancestral_step, in VE sigma: a step from sigma to sigma_next split into a
// deterministic step down to `down` and fresh noise of size `up`,
//   up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)),
//   down = sqrt(sigma_next^2 - up^2).
struct AncestralStep {
  double down, up;
};
AncestralStep ancestral_step(double sigma, double sigma_next, double eta);

// The integral of f over [a, b] by `panels` Gauss-Legendre panels of 4 nodes (exact for
// polynomials of degree 7 per panel): the solvers' time-integrated coefficients (deis,
// er_sde) whose integrands are smooth but not polynomials.
double gauss_legendre(const std::function<double(double)>& f, double a, double b, int panels = 8);
struct OdeFrame {
  const Schedule& ns;
  double s(double t) const { return ode_time(ns, t); }
  at::Tensor y(const at::Tensor& x, double t) const;
  at::Tensor x(const at::Tensor& y, double t) const;
  at::Tensor dy(const Prediction& p, double t) const;
  // x = scale(t) y: alpha(t), or 1 on a flow. A step y' = y + sum_j c_j d_j is then the one
  // pass x' = lincomb({scale(t')/scale(t), x}, {scale(t') c_j, d_j}).
  double scale(double t) const { return ns.integrates_in_time() ? 1.0 : ns.alpha(t); }
};

// What a step hook sees of the step just taken; a hook that changes x sets `changed`
// (multistep samplers then re-evaluate the model instead of reusing a corrector-free value).
struct StepEnd {
  int step = 0, total = 0;  // 1-based; total 0 when unknown (adaptive step sizes)
  double t = 0.0;
  double acceptance = std::numeric_limits<double>::quiet_NaN();  // an MCMC hook's acceptance rate
  bool changed = false;
};

// A policy applied after every step, installed by whoever runs the sampler.
class StepHook {
 public:
  virtual ~StepHook() = default;
  virtual at::Tensor after_step(SamplerContext& ctx, at::Tensor x, StepEnd& step) = 0;
};

class SamplerContext {
 public:
  SamplerContext(Denoiser& model, const Schedule& schedule, Rng& rng, at::Tensor cond = {},
                 ProgressFn progress = {});

  // One model evaluation: counts it and fails with the step number on non-finite output.
  Prediction denoise(const at::Tensor& x, double t) { return denoise(x, t, cond_); }
  // The same with other labels (a probe batch that is not the samples: teleport's auto).
  Prediction denoise(const at::Tensor& x, double t, const at::Tensor& cond);
  // log p_t(x) per sample, from the denoiser (MALA and HMC correctors).
  at::Tensor log_density(const at::Tensor& x, double t) { return model_->log_density(x, t, cond_); }
  Denoiser& model() { return *model_; }
  const at::Tensor& cond() const { return cond_; }
  // The model's null label (model.null_label; -1: none), for guidance wrappers.
  int64_t null_label() const { return null_label_; }
  void set_null_label(int64_t label) { null_label_ = label; }
  // Whether cond is a row index into the model's declared inputs (model_inputs.h): the
  // unconditional rows of sample index i are then -(i + 1), not null_label.
  bool indexed_cond() const { return indexed_cond_; }
  void set_indexed_cond(bool indexed) { indexed_cond_ = indexed; }
  at::Tensor noise_like(const at::Tensor& x) { return rng_.normal_like(x); }
  // The noise of a step from t_from to t_to (SDE and ancestral steps): a fresh standard
  // normal per sample, or, with a Brownian tree installed (config `noise: brownian`), the
  // increment of each sample's Brownian path over [sigma~(t_from), sigma~(t_to)] (brownian.h).
  at::Tensor noise_between(const at::Tensor& x, double t_from, double t_to);
  void set_brownian(std::shared_ptr<const BrownianTree> tree) { brownian_ = std::move(tree); }
  // Uniform(0, 1) numbers shaped like `like`, from the same seeded stream.
  at::Tensor uniform(const at::Tensor& like);
  // Ends step `step` of `total` at time t with state x: runs the hooks in the order they
  // were added, reports progress, and returns the (possibly changed) state; may throw a
  // cancelled Error.
  at::Tensor end_step(int step, int total, double t, at::Tensor x);
  // Whether a hook changed x at the last end_step.
  bool corrected() const { return corrected_; }
  // Steps taken outside the sampler's own grid (endpoint steps): end_step reports step +
  // `before` of total + `before` + `after`.
  void set_step_offset(int before, int after) {
    step_offset_ = before;
    extra_steps_ = before + after;
  }
  void add_hook(std::shared_ptr<StepHook> hook) { hooks_.push_back(std::move(hook)); }

  const Schedule& schedule() const { return schedule_; }
  int64_t nfe() const { return nfe_; }
  // A line for the user about a choice the sampler made (teleport's skip point, ...).
  void note(std::string line) { notes_.push_back(std::move(line)); }
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  friend class ScopedDenoiser;
  Denoiser* model_;
  const Schedule& schedule_;
  Rng& rng_;
  at::Tensor cond_;
  ProgressFn progress_;
  int64_t null_label_ = -1;
  bool indexed_cond_ = false;
  std::vector<std::shared_ptr<StepHook>> hooks_;
  std::shared_ptr<const BrownianTree> brownian_;
  at::Tensor last_x0_;  // the latest prediction, for progress previews
  bool corrected_ = false;
  int64_t nfe_ = 0;
  int step_ = 0;
  int step_offset_ = 0, extra_steps_ = 0;
  std::vector<std::string> notes_;
  std::chrono::steady_clock::time_point start_;
};

// Runs a wrapper's inner sampler on another denoiser (msg's guided one): the context's
// model is `model` for the lifetime of this object, then the old one again.
class ScopedDenoiser {
 public:
  ScopedDenoiser(SamplerContext& ctx, Denoiser& model) : ctx_(ctx), old_(ctx.model_) { ctx.model_ = &model; }
  ~ScopedDenoiser() { ctx_.model_ = old_; }
  ScopedDenoiser(const ScopedDenoiser&) = delete;
  ScopedDenoiser& operator=(const ScopedDenoiser&) = delete;

 private:
  SamplerContext& ctx_;
  Denoiser* old_;
};

// A denoiser from a function: the embedder's own network in C++ (tools/examples/).
// f(x, t) returns the prediction of the given type; x0 and eps follow from the schedule.
class FunctionDenoiser final : public Denoiser {
 public:
  using Fn = std::function<at::Tensor(const at::Tensor& x, double t)>;
  FunctionDenoiser(Fn f, PredictionType type, std::shared_ptr<const Schedule> schedule, std::vector<int64_t> shape)
      : f_(std::move(f)), type_(type), schedule_(std::move(schedule)), shape_(std::move(shape)) {}
  Prediction predict(const at::Tensor& x, double t, const at::Tensor&) override {
    return from_model_output(type_, f_(x, t), x, *schedule_, t);
  }
  std::vector<int64_t> sample_shape() const override { return shape_; }

 private:
  Fn f_;
  PredictionType type_;
  std::shared_ptr<const Schedule> schedule_;
  std::vector<int64_t> shape_;
};

// A configured sampler. Wrappers (teleport, msg) hold an inner Sampler made by the registry.
class Sampler {
 public:
  virtual ~Sampler() = default;
  // Runs from x at grid.t[0] to grid.t[steps]; returns the final state.
  virtual at::Tensor run(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid) = 0;
};

// A sampler written as a function (every family but the wrappers).
using SamplerFn = at::Tensor (*)(SamplerContext& ctx, at::Tensor x, const TimeGrid& grid, const Options& options);

struct SamplerEntry {
  std::string name;
  std::string summary;
  Schema options;  // the sampler's own options (the grid options come on top)
  // Builds the sampler from options read by read_sampler_options.
  std::function<std::unique_ptr<Sampler>(const Options&)> make;
  // Options an alias fixes (e.g. dpmpp_2m: order = 2); they are not user-settable.
  std::map<std::string, std::string> fixed = {};
  // Options that add noise when non-zero: inversion needs them all 0.
  std::vector<std::string> noise_options = {};
  // The grid of `skip_type: auto` on a flow schedule: time_uniform from t = 1 to 0 for the
  // solvers that step in logSNR (diffusers' use_flow_sigmas grid, which starts at 1 - 1/N;
  // its points near t = 0 are not logSNR steps of several units), flow_match
  // (FlowMatchEuler's) for the samplers that step in t.
  std::string flow_grid = "time_uniform";
};

// Where logSNR is infinite (flow's t = 1 and t = 0; a zero-terminal-SNR vp_discrete's t = 1):
// which samplers step there themselves.
enum class Endpoints {
  Runner,  // none: the runner takes a first-order step there (below)
  InTime,  // where the schedule integrates in time (OdeFrame: flow), else the runner
  Own,     // always (data-form steps: ddim, euler_ancestral)
};
// The row maker for a function sampler. A grid that starts or ends where logSNR is infinite
// gets, unless the sampler steps there itself, a first-order data-prediction step there,
// x_t = alpha_t x0 + sigma_t eps (finite at both; it returns x0 at t = 0, diffusers'
// final_sigmas_type "zero"), and the sampler runs on the points in between.
std::function<std::unique_ptr<Sampler>(const Options&)> function_sampler(SamplerFn fn,
                                                                         Endpoints endpoints = Endpoints::Runner);

// The explicit registry table (samplers/registry.cpp).
const Registry<SamplerEntry>& samplers();

// Options every continuous sampler takes: steps and the time grid.
const Schema& grid_options();
// grid_options() followed by the sampler's own, less the ones the entry fixes.
Schema all_options(const SamplerEntry& sampler);
// Reads a sampler's options from its section (`name` and keys in `ignore` skipped), adds the
// fixed ones. With grid = false the grid keys are errors (a wrapper's inner sampler runs on
// the wrapper's grid).
Options read_sampler_options(const SamplerEntry& sampler, const YAML::Node& section, const std::string& path,
                             bool grid = true);
// The same from key -> text (tests, the C API).
Options parse_sampler_options(const SamplerEntry& sampler, const std::map<std::string, std::string>& raw);
GridSpec grid_spec(const Options& options);
// A wrapper's inner sampler from its `inner` section: name (default `fallback`) and its own
// options, not the grid; `wrapper` may not wrap itself.
std::unique_ptr<Sampler> make_inner_sampler(const YAML::Node& section, const std::string& path,
                                            const std::string& wrapper, const std::string& fallback);

}  // namespace scorch
