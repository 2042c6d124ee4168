#include "scorch/gaussian.h"

#include <ATen/ATen.h>

#include <cmath>
#include <sstream>

#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/model_cache.h"
#include "scorch/schedule.h"

namespace scorch {

GaussianModel GaussianModel::to(const at::TensorOptions& options) const {
  return {mean.to(options), eigenvalues.to(options), eigenvectors.to(options), shape};
}


void validate_gaussian(const GaussianModel& m, const std::string& what) {
  if (!m.mean.defined() || m.mean.dim() != 1) bad_input(what + ": 'mean' must be a vector [D]");
  const int64_t d = m.mean.size(0);
  int64_t prod = 1;
  for (int64_t s : m.shape) prod *= s;
  if (prod != d) bad_input(what + ": shape " + shape_string(m.shape) + " does not match D = " + std::to_string(d));
  if (!m.eigenvalues.defined() || m.eigenvalues.dim() != 1) bad_input(what + ": 'eigenvalues' must be a vector [r]");
  const int64_t r = m.eigenvalues.size(0);
  if (r < 1 || r > d) bad_input(what + ": need 1 <= r <= D eigenvalues, got r = " + std::to_string(r));
  if (!m.eigenvectors.defined() || m.eigenvectors.dim() != 2 || m.eigenvectors.size(0) != d ||
      m.eigenvectors.size(1) != r)
    bad_input(what + ": 'eigenvectors' must be [D, r] = [" + std::to_string(d) + ", " + std::to_string(r) + "]");
  for (const auto& [name, t] : {std::pair<const char*, at::Tensor>{"mean", m.mean},
                                {"eigenvalues", m.eigenvalues},
                                {"eigenvectors", m.eigenvectors}}) {
    if (!at::isFloatingType(t.scalar_type())) bad_input(what + ": '" + name + "' must be floating point");
    if (!at::isfinite(t).all().item<bool>()) bad_input(what + ": '" + name + "' has non-finite values");
  }
  if (m.eigenvalues.min().item<double>() < 0.0) bad_input(what + ": 'eigenvalues' must be >= 0");
  const at::Tensor u = m.eigenvectors.to(at::kDouble);
  const double err = (u.t().mm(u) - at::eye(r, u.options())).abs().max().item<double>();
  if (err > 1e-3) bad_input(what + ": 'eigenvectors' columns are not orthonormal (max |U^T U - I| = " +
                            std::to_string(err) + ")");
}

namespace {

GaussianModel read_gaussian(const std::string& path, int64_t rank) {
  const std::string what = "model.path '" + path + "'";
  SafeTensors st = read_safetensors(path);
  const auto type = st.metadata.find("scorch.type");
  if (type != st.metadata.end() && type->second != "gaussian")
    bad_input(what + ": is a '" + type->second + "' model, not gaussian");
  GaussianModel m;
  for (const char* name : {"mean", "eigenvalues", "eigenvectors"})
    if (!st.tensors.count(name)) bad_input(what + ": missing tensor '" + std::string(name) + "'");
  m.mean = st.tensors["mean"];
  m.eigenvalues = st.tensors["eigenvalues"];
  m.eigenvectors = st.tensors["eigenvectors"];
  const auto shape = st.metadata.find("scorch.shape");
  m.shape = shape != st.metadata.end() ? parse_shape(shape->second, what + ": metadata scorch.shape")
                                       : std::vector<int64_t>{m.mean.dim() == 1 ? m.mean.size(0) : 0};
  validate_gaussian(m, what);
  if (rank > 0 && rank < m.eigenvalues.size(0)) {
    const at::Tensor idx = std::get<1>(m.eigenvalues.sort(/*dim=*/0, /*descending=*/true)).narrow(0, 0, rank);
    m.eigenvalues = m.eigenvalues.index_select(0, idx);
    m.eigenvectors = m.eigenvectors.index_select(1, idx);
  }
  return m;
}

size_t tensor_bytes(std::initializer_list<at::Tensor> tensors) {
  size_t n = 0;
  for (const at::Tensor& t : tensors) n += t.defined() ? t.nbytes() : 0;
  return n;
}

}  // namespace

GaussianModel load_gaussian(const std::string& path, int64_t rank) {
  const std::string file = model_file_key(path);
  return *cached_model<GaussianModel>(file.empty() ? "" : "gaussian|" + file + "|" + std::to_string(rank),
                                      [&]() -> std::pair<GaussianModel, size_t> {
                                        GaussianModel m = read_gaussian(path, rank);
                                        return {m, tensor_bytes({m.mean, m.eigenvalues, m.eigenvectors})};
                                      });
}

void save_gaussian(const std::string& path, const GaussianModel& m) {
  SafeTensors st;
  st.tensors = {{"mean", m.mean}, {"eigenvalues", m.eigenvalues}, {"eigenvectors", m.eigenvectors}};
  st.metadata = {{"scorch.type", "gaussian"}, {"scorch.shape", shape_string(m.shape)}};
  write_safetensors(path, st, "gaussian model");
}

void save_class_gaussians(const std::string& path, const GaussianModel& all, const std::vector<GaussianModel>& classes) {
  SafeTensors st;
  st.tensors = {{"mean", all.mean}, {"eigenvalues", all.eigenvalues}, {"eigenvectors", all.eigenvectors}};
  std::vector<at::Tensor> means, values, vectors;
  for (const auto& c : classes) {
    if (c.eigenvalues.size(0) != classes.front().eigenvalues.size(0))
      throw Error(Status::Internal, "save_class_gaussians: every class needs the same rank");
    means.push_back(c.mean);
    values.push_back(c.eigenvalues);
    vectors.push_back(c.eigenvectors);
  }
  st.tensors["class_mean"] = at::stack(means);
  st.tensors["class_eigenvalues"] = at::stack(values);
  st.tensors["class_eigenvectors"] = at::stack(vectors);
  st.metadata = {{"scorch.type", "gaussian"}, {"scorch.shape", shape_string(all.shape)},
                 {"scorch.classes", std::to_string(classes.size())}};
  write_safetensors(path, st, "gaussian model");
}

std::vector<GaussianModel> load_class_gaussians(const std::string& path) {
  const std::string what = "model '" + path + "'";
  const SafeTensors st = read_safetensors(path, what);
  if (!st.tensors.count("class_mean")) return {};
  for (const char* name : {"class_eigenvalues", "class_eigenvectors"})
    if (!st.tensors.count(name)) bad_input(what + ": has class_mean but no " + std::string(name));
  const at::Tensor means = st.tensors.at("class_mean"), values = st.tensors.at("class_eigenvalues"),
                   vectors = st.tensors.at("class_eigenvectors");
  if (means.dim() != 2 || values.dim() != 2 || vectors.dim() != 3 || values.size(0) != means.size(0) ||
      vectors.size(0) != means.size(0))
    bad_input(what + ": class tensors must be class_mean [C, D], class_eigenvalues [C, r], class_eigenvectors [C, D, r]");
  const GaussianModel all = load_gaussian(path);
  std::vector<GaussianModel> out;
  for (int64_t c = 0; c < means.size(0); ++c) {
    GaussianModel g{means[c], values[c], vectors[c], all.shape};
    validate_gaussian(g, what + " class " + std::to_string(c));
    out.push_back(g);
  }
  return out;
}

at::Tensor gaussian_x0(const GaussianModel& m, const at::Tensor& x, double alpha, double sigma) {
  const at::Tensor d = x.reshape({x.size(0), -1}) - alpha * m.mean;
  const at::Tensor lam = m.eigenvalues;
  const at::Tensor coef = alpha * lam / (alpha * alpha * lam + sigma * sigma);
  const at::Tensor x0 = m.mean + (d.mm(m.eigenvectors) * coef).mm(m.eigenvectors.t());
  return x0.reshape(x.sizes());
}

at::Tensor gaussian_log_density(const GaussianModel& m, const at::Tensor& x, double alpha, double sigma) {
  const at::Tensor d = x.reshape({x.size(0), -1}) - alpha * m.mean;
  const at::Tensor c = alpha * alpha * m.eigenvalues + sigma * sigma;
  const at::Tensor p = d.mm(m.eigenvectors);
  const at::Tensor perp = d - p.mm(m.eigenvectors.t());
  const int64_t dim = m.dim(), r = m.eigenvalues.size(0);
  const double s2 = sigma * sigma;
  return -0.5 * (double(dim) * std::log(2.0 * M_PI) + c.log().sum() + double(dim - r) * std::log(s2) +
                 (p * p / c).sum(1) + (perp * perp).sum(1) / s2);
}

at::Tensor gaussian_flow(const GaussianModel& m, const at::Tensor& x_s, double alpha_s, double sigma_s,
                         double alpha_t, double sigma_t) {
  const at::Tensor d = x_s.reshape({x_s.size(0), -1}) - alpha_s * m.mean;
  const at::Tensor lam = m.eigenvalues;
  const at::Tensor proj = d.mm(m.eigenvectors);
  const at::Tensor gain =
      ((alpha_t * alpha_t * lam + sigma_t * sigma_t) / (alpha_s * alpha_s * lam + sigma_s * sigma_s)).sqrt();
  const at::Tensor in_span = proj.mm(m.eigenvectors.t());
  const at::Tensor x_t = alpha_t * m.mean + (proj * gain).mm(m.eigenvectors.t()) + (sigma_t / sigma_s) * (d - in_span);
  return x_t.reshape(x_s.sizes());
}

namespace {

class GaussianDenoiser final : public Denoiser {
 public:
  GaussianDenoiser(GaussianModel m, std::shared_ptr<const Schedule> s) : m_(std::move(m)), sched_(std::move(s)) {}

  Prediction predict(const at::Tensor& x, double t, const at::Tensor&) override {
    if (m_.mean.scalar_type() != x.scalar_type() || m_.mean.device() != x.device()) m_ = m_.to(x.options());
    const double alpha = sched_->alpha(t), sigma = sched_->sigma(t);
    const at::Tensor x0 =
        batch_invariant(x, {}, [&](const at::Tensor& xb, const at::Tensor&) { return gaussian_x0(m_, xb, alpha, sigma); });
    return from_model_output(PredictionType::X0, x0, x, alpha, sigma);
  }
  std::vector<int64_t> sample_shape() const override { return m_.shape; }
  bool has_log_density() const override { return true; }
  at::Tensor log_density(const at::Tensor& x, double t, const at::Tensor&) override {
    if (m_.mean.scalar_type() != x.scalar_type() || m_.mean.device() != x.device()) m_ = m_.to(x.options());
    return batch_invariant(x, {}, [&](const at::Tensor& xb, const at::Tensor&) {
      return gaussian_log_density(m_, xb, sched_->alpha(t), sched_->sigma(t));
    });
  }

 private:
  GaussianModel m_;
  std::shared_ptr<const Schedule> sched_;
};

}  // namespace

std::unique_ptr<Denoiser> make_gaussian_denoiser(GaussianModel model, std::shared_ptr<const Schedule> schedule) {
  return std::make_unique<GaussianDenoiser>(std::move(model), std::move(schedule));
}

}  // namespace scorch
