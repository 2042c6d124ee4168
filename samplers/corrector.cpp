#include "scorch/corrector.h"

#include <ATen/ATen.h>

#include <cmath>

#include "scorch/sampler.h"
#include "scorch/error.h"

namespace scorch {

void check_corrector(const CorrectorSpec& c, const std::string& where) {
  if (c.type.empty()) return;
  if (c.type != "ula" && c.type != "mala" && c.type != "hmc" && c.type != "uhmc")
    bad_input(where + ".type: '" + c.type + "' is not one of ula, mala, hmc, uhmc");
  if (!(c.step_size > 0.0)) bad_input(where + ".step_size: expected a number > 0");
  if (c.steps < 1) bad_input(where + ".steps: expected an integer >= 1");
  if (c.leapfrog < 1) bad_input(where + ".leapfrog: expected an integer >= 1");
  if (!(c.damping >= 0.0 && c.damping < 1.0)) bad_input(where + ".damping: expected a number in [0, 1)");
  if (!(c.t_min <= c.t_max)) bad_input(where + ".window: expected [t_min, t_max] with t_min <= t_max");
}

namespace {

// Per-sample sum over every dimension but the first.
at::Tensor per_sample(const at::Tensor& a) { return a.reshape({a.size(0), -1}).sum(1); }

// Broadcast a per-sample [B] tensor against x.
at::Tensor expand_as_x(const at::Tensor& a, const at::Tensor& x) {
  std::vector<int64_t> shape(size_t(x.dim()), 1);
  shape[0] = x.size(0);
  return a.view(shape);
}

}  // namespace

at::Tensor run_corrector(SamplerContext& ctx, const CorrectorSpec& c, at::Tensor x, double t, double* acceptance,
                         at::Tensor* factor) {
  const double sigma = ctx.schedule().sigma(t);
  // Each sample's own factor f_i, adapted by its own accept draws only, so that sample i
  // never depends on the others (per-sample reproducibility).
  if (!factor->defined()) *factor = at::ones({x.size(0)}, at::TensorOptions().dtype(at::kDouble));
  // Each sample adapts by its own acceptance probability min(1, e^log_ratio) (its expected
  // accept draw, far less noisy than the 0/1 draw itself).
  auto adapt = [&](const at::Tensor& log_ratio, double target) {
    if (c.adapt) factor->mul_(at::exp(log_ratio.to(at::kDouble).clamp_max(0.0).exp() - target));
  };
  auto per_x = [&](const at::Tensor& per_sample_value) {
    return expand_as_x(per_sample_value.to(x.options()), x);
  };
  auto score = [&](const at::Tensor& y) { return ctx.denoise(y, t).eps / -sigma; };
  int64_t proposed = 0, accepted = 0;
  if (c.type == "ula" || c.type == "mala") {
    for (int k = 0; k < c.steps; ++k) {
      const at::Tensor e = *factor * (c.step_size * sigma * sigma);  // [B]
      const at::Tensor ex = per_x(e);
      const at::Tensor s = score(x);
      const at::Tensor y = x + ex * s + at::sqrt(2.0 * ex) * ctx.noise_like(x);
      if (c.type == "ula") {
        x = y;
        continue;
      }
      // log q(a | b) = -|a - b - e s(b)|^2 / (4 e) + const
      const at::Tensor s_y = score(y);
      const at::Tensor e4 = 4.0 * e.to(x.scalar_type());
      const at::Tensor log_ratio = ctx.log_density(y, t) - ctx.log_density(x, t) -
                                   per_sample((x - y - ex * s_y).square()) / e4 +
                                   per_sample((y - x - ex * s).square()) / e4;
      const at::Tensor accept = at::log(ctx.uniform(log_ratio)) < log_ratio;
      x = at::where(expand_as_x(accept, x), y, x);
      proposed += accept.numel();
      accepted += accept.sum().item<int64_t>();
      adapt(log_ratio, 0.57);
    }
  } else {
    at::Tensor v = ctx.noise_like(x);
    for (int k = 0; k < c.steps; ++k) {
      const at::Tensor ex = per_x(c.type == "hmc" ? *factor * (c.step_size * sigma)
                                                  : at::full({x.size(0)}, c.step_size * sigma, at::kDouble));
      if (c.type == "hmc")
        v = ctx.noise_like(x);
      else if (k > 0)
        v = c.damping * v + std::sqrt(1.0 - c.damping * c.damping) * ctx.noise_like(x);
      // leapfrog: half kick, (drift, kick) x L with half kicks at both ends
      at::Tensor y = x, w = v + 0.5 * ex * score(x);
      for (int l = 0; l < c.leapfrog; ++l) {
        y = y + ex * w;
        w = w + (l + 1 < c.leapfrog ? 1.0 : 0.5) * ex * score(y);
      }
      if (c.type == "uhmc") {
        x = y;
        v = w;
        continue;
      }
      const at::Tensor log_ratio = ctx.log_density(y, t) - ctx.log_density(x, t) - 0.5 * per_sample(w.square()) +
                                   0.5 * per_sample(v.square());
      const at::Tensor accept = at::log(ctx.uniform(log_ratio)) < log_ratio;
      x = at::where(expand_as_x(accept, x), y, x);
      proposed += accept.numel();
      accepted += accept.sum().item<int64_t>();
      adapt(log_ratio, 0.65);
    }
  }
  *acceptance = proposed > 0 ? double(accepted) / double(proposed) : std::nan("");
  return x;
}

}  // namespace scorch
