#include "support/gaussian_mixture.h"

#include <ATen/ATen.h>

namespace scorch::testing {

at::Tensor mixture_x0(const DiagonalMixture& m, const at::Tensor& x, double alpha, double sigma) {
  const at::Tensor xf = x.reshape({x.size(0), 1, -1});                     // [B, 1, D]
  const at::Tensor var = alpha * alpha * m.variances + sigma * sigma;      // [K, D]
  const at::Tensor diff = xf - alpha * m.means;                            // [B, K, D]
  const at::Tensor logp = m.weights.log() - 0.5 * (diff * diff / var + var.log()).sum(-1);  // [B, K]
  const at::Tensor r = at::softmax(logp, 1).unsqueeze(-1);                 // [B, K, 1]
  const at::Tensor post = m.means + alpha * m.variances / var * diff;      // [B, K, D]
  return (r * post).sum(1).reshape(x.sizes());
}

namespace {

class MixtureDenoiser final : public Denoiser {
 public:
  MixtureDenoiser(DiagonalMixture m, std::shared_ptr<const Schedule> s) : m_(std::move(m)), s_(std::move(s)) {}
  Prediction predict(const at::Tensor& x, double t, const at::Tensor&) override {
    const double alpha = s_->alpha(t), sigma = s_->sigma(t);
    return from_model_output(PredictionType::X0, mixture_x0(m_, x, alpha, sigma), x, alpha, sigma);
  }
  std::vector<int64_t> sample_shape() const override { return {m_.means.size(1)}; }

 private:
  DiagonalMixture m_;
  std::shared_ptr<const Schedule> s_;
};

}  // namespace

std::unique_ptr<Denoiser> make_mixture_denoiser(DiagonalMixture m, std::shared_ptr<const Schedule> schedule) {
  return std::make_unique<MixtureDenoiser>(std::move(m), std::move(schedule));
}

}  // namespace scorch::testing
