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
                         double* factor) {
  const double sigma = ctx.schedule().sigma(t);
  auto adapt = [&](const at::Tensor& accept, double target) {
    if (c.adapt) *factor *= std::exp(accept.to(at::kDouble).mean().item<double>() - target);
  };
  auto score = [&](const at::Tensor& y) { return ctx.denoise(y, t).eps / -sigma; };
  int64_t proposed = 0, accepted = 0;
  if (c.type == "ula" || c.type == "mala") {
    for (int k = 0; k < c.steps; ++k) {
      const double e = c.step_size * *factor * sigma * sigma;
      const at::Tensor s = score(x);
      const at::Tensor y = x + e * s + std::sqrt(2.0 * e) * ctx.noise_like(x);
      if (c.type == "ula") {
        x = y;
        continue;
      }
      // log q(a | b) = -|a - b - e s(b)|^2 / (4 e) + const
      const at::Tensor s_y = score(y);
      const at::Tensor log_ratio = ctx.log_density(y, t) - ctx.log_density(x, t) -
                                   per_sample((x - y - e * s_y).square()) / (4.0 * e) +
                                   per_sample((y - x - e * s).square()) / (4.0 * e);
      const at::Tensor accept = at::log(ctx.uniform(log_ratio)) < log_ratio;
      x = at::where(expand_as_x(accept, x), y, x);
      proposed += accept.numel();
      accepted += accept.sum().item<int64_t>();
      adapt(accept, 0.57);
    }
  } else {
    at::Tensor v = ctx.noise_like(x);
    for (int k = 0; k < c.steps; ++k) {
      const double e = c.step_size * (c.type == "hmc" ? *factor : 1.0) * sigma;
      if (c.type == "hmc")
        v = ctx.noise_like(x);
      else if (k > 0)
        v = c.damping * v + std::sqrt(1.0 - c.damping * c.damping) * ctx.noise_like(x);
      // leapfrog: half kick, (drift, kick) x L with half kicks at both ends
      at::Tensor y = x, w = v + 0.5 * e * score(x);
      for (int l = 0; l < c.leapfrog; ++l) {
        y = y + e * w;
        w = w + (l + 1 < c.leapfrog ? e : 0.5 * e) * score(y);
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
      adapt(accept, 0.65);
    }
  }
  *acceptance = proposed > 0 ? double(accepted) / double(proposed) : std::nan("");
  return x;
}

}  // namespace scorch
