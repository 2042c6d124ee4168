// The continuous-sampler interface. A sampler is a plain function of
// (context, x_T, time grid, options): it owns no model and does no I/O. The
// context evaluates the denoiser (counting NFE, rejecting non-finite output),
// draws seeded noise, and reports progress (which may cancel the run).
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "corrector.h"
#include "scorch/denoiser.h"
#include "scorch/options.h"
#include "scorch/progress.h"
#include "scorch/rng.h"
#include "scorch/schedule.h"
#include "scorch/time_grid.h"

namespace scorch {

class SamplerContext {
 public:
  SamplerContext(Denoiser& model, const Schedule& schedule, Rng& rng, at::Tensor cond = {},
                 ProgressFn progress = {});

  // One model evaluation: counts it and fails with the step number on non-finite output.
  Prediction denoise(const at::Tensor& x, double t);
  // log p_t(x) per sample, from the denoiser (MALA and HMC correctors).
  at::Tensor log_density(const at::Tensor& x, double t) { return model_->log_density(x, t, cond_); }
  // The denoiser and the samples' labels, for wrappers (msg) that guide the model: a
  // wrapper swaps in its guided denoiser for the inner run and swaps the old one back.
  Denoiser& model() { return *model_; }
  const at::Tensor& cond() const { return cond_; }
  Denoiser* swap_model(Denoiser* m) { std::swap(m, model_); return m; }
  // The model's null label (model.null_label; -1: none), for guidance terms.
  int64_t null_label() const { return null_label_; }
  void set_null_label(int64_t label) { null_label_ = label; }
  at::Tensor noise_like(const at::Tensor& x) { return rng_.normal_like(x); }
  // Uniform(0, 1) numbers shaped like `like`, from the same seeded stream.
  at::Tensor uniform(const at::Tensor& like);
  // Marks step `step` of `total` (1-based; total 0 when unknown, as for adaptive
  // step sizes) done at time t with state x, runs the corrector when its window holds t,
  // and returns the (corrected) state; may throw a cancelled Error.
  at::Tensor end_step(int step, int total, double t, at::Tensor x);
  // Whether the last end_step changed x (multistep samplers re-evaluate the model then).
  bool corrected() const { return corrected_; }
  void set_corrector(const CorrectorSpec& c) { corrector_ = c; }
  // Inpainting by replacement (RePaint without its resampling, Lugmayr et al. 2022): after
  // every step at time t, x = m x + (1 - m) (alpha(t) x_known + sigma(t) z) with fresh
  // noise z, so the known part follows the forward process of x_known; a corrector's
  // iterations alternate with this replacement. mask m broadcasts to x: 1 where new
  // content is generated, 0 where x_known is kept.
  void set_inpainting(at::Tensor x_known, at::Tensor mask) {
    known_ = std::move(x_known);
    mask_ = std::move(mask);
  }
  // Keep the state after every step (output.trajectory); the first entry is x_T.
  void record_trajectory(const at::Tensor& x_T);
  const std::vector<at::Tensor>& trajectory() const { return trajectory_; }

  const Schedule& schedule() const { return schedule_; }
  int64_t nfe() const { return nfe_; }
  // A line for the user about a choice the sampler made (teleport's skip point, ...).
  void note(std::string line) { notes_.push_back(std::move(line)); }
  const std::vector<std::string>& notes() const { return notes_; }

 private:
  Denoiser* model_;
  const Schedule& schedule_;
  int64_t null_label_ = -1;
  CorrectorSpec corrector_;
  at::Tensor known_, mask_;  // inpainting (set_inpainting); undefined: none
  at::Tensor last_x0_;  // the latest prediction, for progress previews
  double corrector_factor_ = 1.0;  // the adapted step-size factor, carried across steps
  bool corrected_ = false;
  Rng& rng_;
  at::Tensor cond_;
  ProgressFn progress_;
  int64_t nfe_ = 0;
  int step_ = 0;
  bool record_ = false;
  std::vector<at::Tensor> trajectory_;
  std::vector<std::string> notes_;
  std::chrono::steady_clock::time_point start_;
};

// grid: the time grid to build with make_time_grid (samplers that need their
// own outer grid, like singlestep DPM-Solver, build it from the same spec).
using SamplerFn = at::Tensor (*)(SamplerContext& ctx, at::Tensor x, const GridSpec& grid,
                                 const Options& options);

struct SamplerInfo {
  std::string name;
  std::string summary;
  std::vector<OptionSpec> options;  // the sampler's own options (the grid options come on top)
  SamplerFn run;
  // Options an alias fixes (e.g. dpmpp_2m: order = 2); they are not user-settable.
  std::map<std::string, std::string> fixed = {};
  // Options that add noise when non-zero: inversion needs them all 0.
  std::vector<std::string> noise_options = {};
};

// The explicit registry table (samplers/registry.cpp).
const std::vector<SamplerInfo>& samplers();
// Throws a bad-input Error listing the registered names when `name` is unknown.
const SamplerInfo& find_sampler(const std::string& name);

// Options every continuous sampler takes: steps and the time grid.
const std::vector<OptionSpec>& grid_options();
// grid_options() followed by the sampler's own, less the ones the entry fixes.
std::vector<OptionSpec> all_options(const SamplerInfo& sampler);
// Validates the user's options for a sampler and adds the fixed ones.
Options parse_sampler_options(const SamplerInfo& sampler, const std::map<std::string, std::string>& raw);
GridSpec grid_spec(const Options& options);

// sum_i c_i x_i with one allocation: the linear combinations every update formula is made of.
at::Tensor lincomb(std::initializer_list<std::pair<double, at::Tensor>> terms);
at::Tensor lincomb(const std::vector<std::pair<double, at::Tensor>>& terms);

// The sampler families (one file each).
at::Tensor sample_ddim(SamplerContext&, at::Tensor, const GridSpec&, const Options&);
at::Tensor sample_euler(SamplerContext&, at::Tensor, const GridSpec&, const Options&);
at::Tensor sample_euler_ancestral(SamplerContext&, at::Tensor, const GridSpec&, const Options&);
at::Tensor sample_heun(SamplerContext&, at::Tensor, const GridSpec&, const Options&);
at::Tensor sample_dpm_solver(SamplerContext&, at::Tensor, const GridSpec&, const Options&);
at::Tensor sample_dpmpp_2m_sde(SamplerContext&, at::Tensor, const GridSpec&, const Options&);
at::Tensor sample_dpmpp_3m_sde(SamplerContext&, at::Tensor, const GridSpec&, const Options&);
at::Tensor sample_unipc(SamplerContext&, at::Tensor, const GridSpec&, const Options&);
at::Tensor sample_teleport(SamplerContext&, at::Tensor, const GridSpec&, const Options&);
const std::vector<OptionSpec>& teleport_options();
at::Tensor sample_msg(SamplerContext&, at::Tensor, const GridSpec&, const Options&);
const std::vector<OptionSpec>& msg_options();
const std::vector<OptionSpec>& dpm_solver_options();
// The official singlestep order list for a step budget, e.g. (10, 3) -> 3, 3, 3, 1.
std::vector<int> dpm_solver_singlestep_orders(int steps, int order);
const std::vector<OptionSpec>& unipc_options();

}  // namespace scorch
