#include "scorch/denoiser.h"

#include <ATen/ATen.h>

#include "scorch/error.h"
#include "scorch/lincomb.h"
#include "scorch/schedule.h"

namespace scorch {

PredictionType parse_prediction_type(const std::string& name) {
  if (name == "eps") return PredictionType::Eps;
  if (name == "x0") return PredictionType::X0;
  if (name == "v") return PredictionType::V;
  if (name == "score") return PredictionType::Score;
  if (name == "velocity") return PredictionType::Velocity;
  bad_input("model.prediction: expected eps | x0 | v | score | velocity, got '" + name + "'");
}

std::string to_string(PredictionType type) {
  switch (type) {
    case PredictionType::Eps: return "eps";
    case PredictionType::X0: return "x0";
    case PredictionType::V: return "v";
    case PredictionType::Score: return "score";
    case PredictionType::Velocity: return "velocity";
  }
  return "?";
}

// Each conversion is a linear combination of x and the output, so each of x0 and eps is one
// fused pass (lincomb) instead of three tensor operations: a sampler step on a large latent
// spends this outside the network on every call. Where the divisor is 0 (alpha at t = 1 of a
// flow, sigma at t = 0) the plain formula keeps its inf / nan, which the callers handle.
Prediction from_model_output(PredictionType type, const at::Tensor& out, const at::Tensor& x, double alpha,
                             double sigma, double d_alpha, double d_sigma) {
  Prediction p;
  switch (type) {
    case PredictionType::Eps:
      p.eps = out;
      p.x0 = alpha != 0.0 ? lincomb({{1.0 / alpha, x}, {-sigma / alpha, out}}) : (x - sigma * out) / alpha;
      break;
    case PredictionType::X0:
      p.x0 = out;
      p.eps = sigma != 0.0 ? lincomb({{1.0 / sigma, x}, {-alpha / sigma, out}}) : (x - alpha * out) / sigma;
      break;
    case PredictionType::V: {
      const double r = alpha * alpha + sigma * sigma;
      p.x0 = lincomb({{alpha / r, x}, {-sigma / r, out}});
      p.eps = lincomb({{sigma / r, x}, {alpha / r, out}});
      break;
    }
    case PredictionType::Score:
      p.eps = -sigma * out;
      p.x0 = alpha != 0.0 ? lincomb({{1.0 / alpha, x}, {sigma * sigma / alpha, out}}) : (x + (sigma * sigma) * out) / alpha;
      break;
    case PredictionType::Velocity: {
      const double d = alpha * d_sigma - sigma * d_alpha;
      if (!(d != 0.0)) bad_input("model.prediction: velocity needs the schedule's d alpha/dt and d sigma/dt");
      p.x0 = lincomb({{d_sigma / d, x}, {-sigma / d, out}});
      p.eps = lincomb({{-d_alpha / d, x}, {alpha / d, out}});
      break;
    }
  }
  return p;
}

Prediction from_model_output(PredictionType type, const at::Tensor& out, const at::Tensor& x, const Schedule& schedule,
                             double t) {
  return from_model_output(type, out, x, schedule.alpha(t), schedule.sigma(t), schedule.d_alpha(t),
                           schedule.d_sigma(t));
}

at::Tensor to_model_output(PredictionType type, const Prediction& p, double alpha, double sigma, double d_alpha,
                           double d_sigma) {
  switch (type) {
    case PredictionType::Eps: return p.eps;
    case PredictionType::X0: return p.x0;
    case PredictionType::V: return alpha * p.eps - sigma * p.x0;
    case PredictionType::Score: return p.eps / (-sigma);
    case PredictionType::Velocity: return d_alpha * p.x0 + d_sigma * p.eps;
  }
  return p.eps;
}

at::Tensor Denoiser::log_density(const at::Tensor&, double, const at::Tensor&) {
  bad_input("this model has no log-density (analytic models have one; a TorchScript model needs an "
            "energy(x, t, cond) method)");
}

at::Tensor batch_invariant(const at::Tensor& x, const at::Tensor& cond,
                           const std::function<at::Tensor(const at::Tensor& x, const at::Tensor& cond)>& f) {
  const int64_t b = x.size(0), block = 16, rows = (b + block - 1) / block * block;
  if (b == rows) return f(x, cond);
  // Pad with copies of the first row up to the next multiple of 16 rows.
  std::vector<int64_t> idx(size_t(rows), 0);
  for (int64_t i = 0; i < b; ++i) idx[size_t(i)] = i;
  const at::Tensor index = at::tensor(idx, at::TensorOptions().dtype(at::kLong).device(x.device()));
  const at::Tensor padded_cond = cond.defined() && cond.dim() > 0 ? cond.index_select(0, index.to(cond.device())) : cond;
  return f(x.index_select(0, index), padded_cond).narrow(0, 0, b).contiguous();
}

}  // namespace scorch
