#include "scorch/mixture_model.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/schedule.h"

namespace scorch {

namespace {

at::Tensor checked(const SafeTensors& st, const std::string& name, int64_t dims, const std::string& what) {
  const auto it = st.tensors.find(name);
  if (it == st.tensors.end()) bad_input(what + ": missing tensor '" + name + "'");
  const at::Tensor& t = it->second;
  if (t.dim() != dims || !at::isFloatingType(t.scalar_type()))
    bad_input(what + ": tensor '" + name + "' must be a floating " + std::to_string(dims) + "-d array");
  if (!at::isfinite(t).all().item<bool>()) bad_input(what + ": tensor '" + name + "' has non-finite values");
  return t.to(at::kFloat);
}

}  // namespace

MixtureModel load_mixture_model(const std::string& path, const std::string& type) {
  const std::string what = "model.path '" + path + "'";
  const SafeTensors st = read_safetensors(path);
  const auto kind = st.metadata.find("scorch.type");
  if (kind == st.metadata.end() || kind->second != type)
    bad_input(what + ": is not a '" + type + "' model (metadata scorch.type)");
  MixtureModel m;
  if (type == "empirical") {
    const at::Tensor data = checked(st, "data", 2, what);
    double s = 0.0;
    if (st.metadata.count("scorch.smoothing")) {
      try {
        s = std::stod(st.metadata.at("scorch.smoothing"));
      } catch (const std::exception&) {
        bad_input(what + ": metadata scorch.smoothing is not a number");
      }
    }
    if (!(s >= 0.0)) bad_input(what + ": scorch.smoothing must be >= 0");
    const int64_t k = data.size(0);
    m.mixture = {data, at::full({k}, -std::log(double(k))), at::full({k}, s * s)};
  } else {
    const auto cov = st.metadata.find("scorch.cov");
    if (cov != st.metadata.end() && cov->second != "isotropic")
      bad_input(what + ": covariance '" + cov->second + "' is not supported yet (isotropic only)");
    const at::Tensor w = checked(st, "weights", 1, what), mu = checked(st, "means", 2, what),
                     var = checked(st, "variances", 1, what);
    if (w.size(0) != mu.size(0) || var.size(0) != mu.size(0))
      bad_input(what + ": weights [K], means [K, D] and variances [K] disagree on K");
    if (w.min().item<double>() <= 0.0 || var.min().item<double>() < 0.0)
      bad_input(what + ": weights must be > 0 and variances >= 0");
    m.mixture = {mu, (w / w.sum()).log(), var};
  }
  const int64_t d = m.mixture.means.size(1);
  const auto shape = st.metadata.find("scorch.shape");
  m.shape = shape != st.metadata.end() ? parse_shape(shape->second, what + ": metadata scorch.shape") : std::vector<int64_t>{d};
  int64_t prod = 1;
  for (int64_t s : m.shape) prod *= s;
  if (prod != d) bad_input(what + ": scorch.shape does not match D = " + std::to_string(d));
  return m;
}

void save_empirical(const std::string& path, const at::Tensor& data, const std::vector<int64_t>& shape,
                    double smoothing) {
  SafeTensors st;
  st.tensors["data"] = data.reshape({data.size(0), -1}).to(at::kFloat).contiguous();
  st.metadata = {{"scorch.type", "empirical"}, {"scorch.shape", shape_string(shape)},
                 {"scorch.smoothing", std::to_string(smoothing)}};
  write_safetensors(path, st, "empirical model");
}

namespace {

class MixtureDenoiser final : public Denoiser {
 public:
  MixtureDenoiser(MixtureModel m, std::shared_ptr<const Schedule> s) : m_(std::move(m)), sched_(std::move(s)) {}
  Prediction predict(const at::Tensor& x, double t, const at::Tensor&) override {
    if (m_.mixture.means.scalar_type() != x.scalar_type() || m_.mixture.means.device() != x.device())
      m_.mixture = {m_.mixture.means.to(x.options()), m_.mixture.log_weights.to(x.options()),
                    m_.mixture.variances.to(x.options())};
    const double alpha = sched_->alpha(t), sigma = sched_->sigma(t);
    const at::Tensor x0 = mixture_posterior(m_.mixture, x.reshape({x.size(0), -1}), alpha, sigma).x0;
    return from_model_output(PredictionType::X0, x0.reshape(x.sizes()), x, alpha, sigma);
  }
  std::vector<int64_t> sample_shape() const override { return m_.shape; }

 private:
  MixtureModel m_;
  std::shared_ptr<const Schedule> sched_;
};

}  // namespace

std::unique_ptr<Denoiser> make_mixture_denoiser(MixtureModel model, std::shared_ptr<const Schedule> schedule) {
  return std::make_unique<MixtureDenoiser>(std::move(model), std::move(schedule));
}

}  // namespace scorch
