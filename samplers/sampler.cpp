#include "sampler.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>

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

Prediction SamplerContext::denoise(const at::Tensor& x, double t) {
  Prediction p = model_->predict(x, t, cond_);
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

void SamplerContext::record_trajectory(const at::Tensor& x_T) {
  record_ = true;
  trajectory_ = {x_T.clone()};
}

at::Tensor SamplerContext::uniform(const at::Tensor& like) {
  // Phi(z) of the seeded normal stream: uniform, and reproducible like every other draw.
  return at::special_ndtr(rng_.normal_like(like.to(at::kDouble))).to(like.options());
}

at::Tensor SamplerContext::end_step(int step, int total, double t, at::Tensor x) {
  step_ = step;
  corrected_ = false;
  double acceptance = std::nan("");
  if (!known_.defined()) {
    if (corrector_.active(t)) {
      x = run_corrector(*this, corrector_, x, t, &acceptance, &corrector_factor_);
      corrected_ = true;
    }
  } else {
    // Inpainting: the kept part becomes the forward-noised x_known; corrector iterations
    // then alternate with putting it back, so that they sample the generated part from
    // p_t(x_gen | x_kept) (a Gibbs sweep) instead of moving both.
    const at::Tensor known_t = schedule_.alpha(t) * known_ + schedule_.sigma(t) * rng_.normal_like(x);
    x = at::lerp(known_t, x, mask_);
    if (corrector_.active(t)) {
      CorrectorSpec one = corrector_;
      one.steps = 1;
      for (int k = 0; k < corrector_.steps; ++k)
        x = at::lerp(known_t, run_corrector(*this, one, x, t, &acceptance, &corrector_factor_), mask_);
      corrected_ = true;
    }
  }
  if (record_) trajectory_.push_back(x.clone());
  if (!progress_) return x;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (!progress_(StepInfo{step, total, nfe_, t, elapsed, acceptance, last_x0_}))
    cancelled("cancelled after step " + std::to_string(step) + " of " + std::to_string(total));
  return x;
}

const std::vector<OptionSpec>& grid_options() {
  static const std::vector<OptionSpec> specs = {
      {"steps", OptionType::Int, "20", "number of steps (the time grid has steps + 1 points)", {}},
      {"skip_type", OptionType::String, "logSNR", "time grid", skip_types()},
      {"t_start", OptionType::Number, "-1", "first time of the grid; -1: the schedule's t_max", {}},
      {"t_end", OptionType::Number, "-1", "last time of the grid; -1: the schedule's t_min", {}},
      {"rho", OptionType::Number, "7", "karras grid exponent", {}},
  };
  return specs;
}

std::vector<OptionSpec> all_options(const SamplerInfo& sampler) {
  std::vector<OptionSpec> specs;
  for (const auto* list : {&grid_options(), &sampler.options})
    for (const auto& s : *list)
      if (!sampler.fixed.count(s.name)) specs.push_back(s);
  return specs;
}

Options parse_sampler_options(const SamplerInfo& sampler, const std::map<std::string, std::string>& raw) {
  for (const auto& [name, value] : sampler.fixed)
    if (raw.count(name))
      bad_input("sampler." + name + ": '" + sampler.name + "' fixes it to " + value +
                "; use the general sampler to change it");
  std::vector<OptionSpec> specs = grid_options();
  specs.insert(specs.end(), sampler.options.begin(), sampler.options.end());
  std::map<std::string, std::string> all = raw;
  all.insert(sampler.fixed.begin(), sampler.fixed.end());
  return Options::parse("sampler", specs, all);
}

namespace {

// The fused CPU path: one pass over memory in cache-sized chunks, instead of one
// pass (and one temporary) per term. The two kernels are compiled for AVX2 and for
// the baseline, picked at load time (GCC function multiversioning), as ATen's own
// kernels are. Elementwise, so the result does not depend on the thread count.
template <typename T>
__attribute__((target_clones("avx2", "default"))) void scale_into(T* out, const T* p, T c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = c * p[i];
}
template <typename T>
__attribute__((target_clones("avx2", "default"))) void axpy_into(T* out, const T* p, T c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] += c * p[i];
}

template <typename scalar_t>
void lincomb_cpu(const std::vector<std::pair<double, const scalar_t*>>& terms, scalar_t* out, int64_t n) {
  at::parallel_for(0, n, 1 << 15, [&](int64_t begin, int64_t end) {
    constexpr int64_t kChunk = 4096;
    for (int64_t b = begin; b < end; b += kChunk) {
      const int64_t len = std::min(end, b + kChunk) - b;
      scale_into<scalar_t>(out + b, terms[0].second + b, scalar_t(terms[0].first), len);
      for (size_t k = 1; k < terms.size(); ++k)
        axpy_into<scalar_t>(out + b, terms[k].second + b, scalar_t(terms[k].first), len);
    }
  });
}

}  // namespace

at::Tensor lincomb(std::initializer_list<std::pair<double, at::Tensor>> terms) {
  return lincomb(std::vector<std::pair<double, at::Tensor>>(terms));
}

at::Tensor lincomb(const std::vector<std::pair<double, at::Tensor>>& terms) {
  const at::Tensor& first = terms.front().second;
  bool fused = first.device().is_cpu() && (first.scalar_type() == at::kFloat || first.scalar_type() == at::kDouble);
  for (const auto& [c, t] : terms)
    fused = fused && t.device().is_cpu() && t.scalar_type() == first.scalar_type() && t.sizes() == first.sizes() &&
            t.is_contiguous();
  if (!fused) {
    at::Tensor out = first * terms.front().first;
    for (size_t k = 1; k < terms.size(); ++k)
      if (terms[k].first != 0.0) out.add_(terms[k].second, terms[k].first);
    return out;
  }
  at::Tensor out = at::empty_like(first, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES(first.scalar_type(), "lincomb", [&] {
    std::vector<std::pair<double, const scalar_t*>> ptrs;
    for (const auto& [c, t] : terms)
      if (c != 0.0 || ptrs.empty()) ptrs.emplace_back(c, t.data_ptr<scalar_t>());
    lincomb_cpu<scalar_t>(ptrs, out.data_ptr<scalar_t>(), out.numel());
  });
  return out;
}

GridSpec grid_spec(const Options& o) {
  GridSpec g;
  g.steps = int(o.integer("steps"));
  g.skip_type = o.str("skip_type");
  g.t_start = o.number("t_start");
  g.t_end = o.number("t_end");
  g.rho = o.number("rho");
  return g;
}

const SamplerInfo& find_sampler(const std::string& name) {
  for (const auto& s : samplers())
    if (s.name == name) return s;
  std::string valid;
  for (const auto& s : samplers()) valid += (valid.empty() ? "" : ", ") + s.name;
  bad_input("sampler.name: unknown sampler '" + name + "'; registered samplers are: " + valid);
}

}  // namespace scorch
