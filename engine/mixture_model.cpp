#include "scorch/mixture_model.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "scorch/error.h"
#include "scorch/model_cache.h"
#include "scorch/guidance.h"
#include "scorch/io.h"
#include "scorch/schedule.h"

namespace scorch {

Covariance parse_covariance(const std::string& name, const std::string& what) {
  if (name == "isotropic") return Covariance::Isotropic;
  if (name == "diagonal") return Covariance::Diagonal;
  if (name == "lowrank") return Covariance::LowRank;
  if (name == "full") return Covariance::Full;
  bad_input(what + ": covariance '" + name + "' is not one of isotropic, diagonal, lowrank, full");
}

const char* covariance_name(Covariance c) {
  switch (c) {
    case Covariance::Isotropic: return "isotropic";
    case Covariance::Diagonal: return "diagonal";
    case Covariance::LowRank: return "lowrank";
    case Covariance::Full: return "full";
  }
  return "?";
}

GaussianMixture GaussianMixture::to(const at::TensorOptions& o) const {
  auto conv = [&](const at::Tensor& t) { return t.defined() ? t.to(o) : t; };
  return {cov, conv(log_weights), conv(means), conv(variances), conv(eigenvalues), conv(eigenvectors)};
}

namespace {

// One block of components [k0, k0 + kb): its logits [N, kb] and, for weights p [N, kb],
// the unnormalised sum_k p_k E[x0 | x_t, k].
struct BlockTerms {
  at::Tensor logits;
  std::function<at::Tensor(const at::Tensor&)> weighted_x0;
};

BlockTerms block_terms(const GaussianMixture& m, const at::Tensor& x, const at::Tensor& x_sq, double alpha,
                       double sigma, int64_t k0, int64_t kb) {
  const int64_t n = x.size(0), d = m.dim();
  const double a2 = alpha * alpha, s2 = sigma * sigma, dlog2pi = double(d) * std::log(2.0 * M_PI);
  const at::Tensor mu = m.means.narrow(0, k0, kb), log_w = m.log_weights.narrow(0, k0, kb);
  // |y_k|^2 = |x - alpha mu_k|^2 from one matrix product
  auto y_sq = [&] {
    return x_sq.unsqueeze(1) - (2.0 * alpha) * at::mm(x, mu.t()) + (a2 * mu.square().sum(1)).unsqueeze(0);
  };
  switch (m.cov) {
    case Covariance::Isotropic: {
      // C_k = v_k I, v_k = alpha^2 s_k^2 + sigma^2;  E[x0|x,k] = (sigma^2/v_k) mu_k + (alpha s_k^2/v_k) x
      const at::Tensor var = m.variances.narrow(0, k0, kb), v = a2 * var + s2;
      at::Tensor l = log_w - 0.5 * (dlog2pi + double(d) * v.log()) - 0.5 * y_sq() / v;
      return {l, [=](const at::Tensor& p) {
                return at::mm(p, mu * (s2 / v).unsqueeze(1)) + alpha * x * at::mv(p, var / v).unsqueeze(1);
              }};
    }
    case Covariance::Diagonal: {
      // C_k = diag(V_k), V_k = alpha^2 d_k + sigma^2;  E[x0|x,k] = (sigma^2/V_k) mu_k + (alpha d_k/V_k) x
      const at::Tensor var = m.variances.narrow(0, k0, kb), inv_v = 1.0 / (a2 * var + s2);
      const at::Tensor quad = at::mm(x.square(), inv_v.t()) - (2.0 * alpha) * at::mm(x, (mu * inv_v).t()) +
                              (a2 * (mu.square() * inv_v).sum(1)).unsqueeze(0);
      at::Tensor l = log_w + 0.5 * inv_v.log().sum(1) - 0.5 * dlog2pi - 0.5 * quad;
      return {l, [=](const at::Tensor& p) {
                return at::mm(p, mu * (s2 * inv_v)) + alpha * x * at::mm(p, var * inv_v);
              }};
    }
    case Covariance::LowRank:
    case Covariance::Full: {
      // In the basis of U_k: C_k = U diag(e) U^T + v (I - U U^T), e = alpha^2 lam + v,
      // v = alpha^2 s^2 + sigma^2 (s = 0 for full). With c = U^T y:
      //   y^T C^-1 y = sum_j c_j^2 / e_j + (|y|^2 - |c|^2) / v,   log det C = sum_j log e_j + (D - r) log v,
      //   Sigma C^-1 y = (s^2/v) y + U diag((lam + s^2)/e - s^2/v) c.
      // For full (r = D) the complement is empty, so its terms are left out (no cancellation).
      const bool full = m.cov == Covariance::Full;
      const at::Tensor u = m.eigenvectors.narrow(0, k0, kb), lam = m.eigenvalues.narrow(0, k0, kb);
      const int64_t r = lam.size(1);
      const at::Tensor s_var = full ? at::zeros({kb}, x.options()) : m.variances.narrow(0, k0, kb);
      const at::Tensor v = a2 * s_var + s2, e = a2 * lam + v.unsqueeze(1);
      const at::Tensor u_flat = u.permute({1, 0, 2}).reshape({d, kb * r});
      const at::Tensor mu_u = at::bmm(mu.unsqueeze(1), u).squeeze(1);  // [kb, r]
      const at::Tensor c = at::mm(x, u_flat).view({n, kb, r}) - alpha * mu_u.unsqueeze(0);
      const at::Tensor c_sq = c.square();
      at::Tensor quad = (c_sq / e.unsqueeze(0)).sum(2);
      at::Tensor log_det = e.log().sum(1);
      if (!full) {
        quad = quad + (y_sq() - c_sq.sum(2)) / v.unsqueeze(0);
        log_det = log_det + double(d - r) * v.log();
      }
      at::Tensor l = log_w - 0.5 * (dlog2pi + log_det) - 0.5 * quad;
      const at::Tensor h = (lam + s_var.unsqueeze(1)) / e - (s_var / v).unsqueeze(1);
      return {l, [=](const at::Tensor& p) {
                const at::Tensor g = (p.unsqueeze(2) * h.unsqueeze(0) * c).reshape({n, kb * r});
                return at::mm(p, mu * (s2 / v).unsqueeze(1)) + alpha * x * at::mv(p, s_var / v).unsqueeze(1) +
                       alpha * at::mm(g, u_flat.t());
              }};
    }
  }
  return {};
}

int64_t default_block(const GaussianMixture& m, int64_t n) {
  const int64_t r = m.eigenvalues.defined() ? std::max<int64_t>(m.eigenvalues.size(1), 1) : 1;
  return std::clamp<int64_t>((int64_t(1) << 21) / std::max<int64_t>(n * r, 1), 1, 4096);
}

}  // namespace

at::Tensor gmm_logits(const GaussianMixture& m, const at::Tensor& x, double alpha, double sigma) {
  const at::Tensor x_sq = x.square().sum(1);
  const int64_t k = m.components(), block = default_block(m, x.size(0));
  std::vector<at::Tensor> parts;
  for (int64_t k0 = 0; k0 < k; k0 += block)
    parts.push_back(block_terms(m, x, x_sq, alpha, sigma, k0, std::min(block, k - k0)).logits);
  return at::cat(parts, 1);
}

MixturePosterior gmm_posterior(const GaussianMixture& m, const at::Tensor& x, double alpha, double sigma,
                               int64_t block) {
  if (m.cov == Covariance::Isotropic)
    return mixture_posterior({m.means, m.log_weights, m.variances}, x, alpha, sigma, block);
  const int64_t n = x.size(0), k = m.components();
  if (block <= 0) block = default_block(m, n);
  const auto f64 = x.options().dtype(at::kDouble);
  const at::Tensor x_sq = x.square().sum(1);
  // The online log-sum-exp of kernels/mixture_score_cpu.cpp: running max, running sum and
  // the unnormalised accumulator, rescaled by e^{m_old - m_new} when the max grows.
  at::Tensor m_run = at::full({n}, -INFINITY, f64), s_run = at::zeros({n}, f64), acc = at::zeros_like(x);
  for (int64_t k0 = 0; k0 < k; k0 += block) {
    const BlockTerms b = block_terms(m, x, x_sq, alpha, sigma, k0, std::min(block, k - k0));
    const at::Tensor m_new = at::maximum(m_run, std::get<0>(b.logits.max(1)).to(at::kDouble));
    const at::Tensor rescale = (m_run - m_new).exp();
    const at::Tensor p = (b.logits - m_new.to(x.scalar_type()).unsqueeze(1)).exp();
    s_run = s_run * rescale + p.sum(1, false, at::kDouble);
    acc = acc * rescale.to(x.scalar_type()).unsqueeze(1) + b.weighted_x0(p);
    m_run = m_new;
  }
  MixturePosterior r;
  r.x0 = acc / s_run.to(x.scalar_type()).unsqueeze(1);
  r.log_density = (m_run + s_run.log()).to(x.scalar_type());
  return r;
}

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

void expect_shape(const at::Tensor& t, std::vector<int64_t> shape, const std::string& name, const std::string& what) {
  if (t.sizes() != at::IntArrayRef(shape))
    bad_input(what + ": tensor '" + name + "' is " + shape_string(t.sizes().vec()) + ", expected " +
              shape_string(shape));
}

GaussianMixture read_gmm(const SafeTensors& st, const std::string& what) {
  const auto cov_meta = st.metadata.find("scorch.cov");
  GaussianMixture m;
  m.cov = cov_meta == st.metadata.end() ? Covariance::Isotropic
                                        : parse_covariance(cov_meta->second, what + ": metadata scorch.cov");
  const at::Tensor w = checked(st, "weights", 1, what);
  m.means = checked(st, "means", 2, what);
  const int64_t k = m.means.size(0), d = m.means.size(1);
  expect_shape(w, {k}, "weights", what);
  if (k < 1 || w.min().item<double>() <= 0.0) bad_input(what + ": weights must be > 0");
  m.log_weights = (w / w.sum()).log();
  if (m.cov == Covariance::Diagonal) {
    m.variances = checked(st, "variances", 2, what);
    expect_shape(m.variances, {k, d}, "variances", what);
  } else if (m.cov != Covariance::Full) {
    m.variances = checked(st, "variances", 1, what);
    expect_shape(m.variances, {k}, "variances", what);
  }
  if (m.variances.defined() && m.variances.min().item<double>() < 0.0) bad_input(what + ": variances must be >= 0");
  if (m.cov == Covariance::LowRank || m.cov == Covariance::Full) {
    m.eigenvalues = checked(st, "eigenvalues", 2, what);
    m.eigenvectors = checked(st, "eigenvectors", 3, what);
    const int64_t r = m.eigenvalues.size(1);
    if (m.cov == Covariance::Full && r != d)
      bad_input(what + ": a full covariance needs D = " + std::to_string(d) + " eigenvalues per component");
    if (r < 1 || r > d) bad_input(what + ": need 1 <= rank <= D eigenvalues per component");
    expect_shape(m.eigenvalues, {k, r}, "eigenvalues", what);
    expect_shape(m.eigenvectors, {k, d, r}, "eigenvectors", what);
    if (m.eigenvalues.min().item<double>() < 0.0) bad_input(what + ": eigenvalues must be >= 0");
    const at::Tensor u = m.eigenvectors.to(at::kDouble);
    const double err = (at::bmm(u.transpose(1, 2), u) - at::eye(r, u.options())).abs().max().item<double>();
    if (err > 1e-3)
      bad_input(what + ": 'eigenvectors' columns are not orthonormal (max |U^T U - I| = " + std::to_string(err) + ")");
  }
  return m;
}

}  // namespace

namespace {

MixtureModel read_mixture_model(const std::string& path, const std::string& type) {
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
    if (k < 1) bad_input(what + ": the data set is empty");
    m.mixture.means = data;
    m.mixture.log_weights = at::full({k}, -std::log(double(k)));
    m.mixture.variances = at::full({k}, s * s);
  } else {
    m.mixture = read_gmm(st, what);
    if (st.tensors.count("labels")) {
      const at::Tensor l = st.tensors.at("labels");
      if (l.scalar_type() != at::kLong || l.dim() != 1 || l.size(0) != m.mixture.components())
        bad_input(what + ": tensor 'labels' must be int64 [K]");
      if (l.min().item<int64_t>() < 0) bad_input(what + ": labels must be >= 0");
      const int64_t c = l.max().item<int64_t>() + 1;
      if (at::bincount(l, {}, c).min().item<int64_t>() == 0)
        bad_input(what + ": every class 0.." + std::to_string(c - 1) + " needs at least one component");
      m.labels = l;
    }
  }
  const int64_t d = m.mixture.dim();
  const auto shape = st.metadata.find("scorch.shape");
  m.shape = shape != st.metadata.end() ? parse_shape(shape->second, what + ": metadata scorch.shape") : std::vector<int64_t>{d};
  int64_t prod = 1;
  for (int64_t s : m.shape) prod *= s;
  if (prod != d) bad_input(what + ": scorch.shape does not match D = " + std::to_string(d));
  return m;
}

}  // namespace

MixtureModel load_mixture_model(const std::string& path, const std::string& type) {
  const std::string file = model_file_key(path);
  return *cached_model<MixtureModel>(file.empty() ? "" : "mixture|" + file + "|" + type,
                                     [&]() -> std::pair<MixtureModel, size_t> {
                                       MixtureModel m = read_mixture_model(path, type);
                                       size_t bytes = m.labels.defined() ? m.labels.nbytes() : 0;
                                       for (const at::Tensor& t : {m.mixture.means, m.mixture.log_weights, m.mixture.variances,
                                                                   m.mixture.eigenvalues, m.mixture.eigenvectors})
                                         bytes += t.defined() ? t.nbytes() : 0;
                                       return {m, bytes};
                                     });
}

GaussianMixture select_components(const GaussianMixture& m, const at::Tensor& index) {
  auto sel = [&](const at::Tensor& t) { return t.defined() ? t.index_select(0, index) : t; };
  GaussianMixture s{m.cov, sel(m.log_weights), sel(m.means), sel(m.variances), sel(m.eigenvalues), sel(m.eigenvectors)};
  s.log_weights = s.log_weights - at::logsumexp(s.log_weights, 0);
  return s;
}

void save_gmm(const std::string& path, const GaussianMixture& m, const std::vector<int64_t>& shape,
              const at::Tensor& labels) {
  SafeTensors st;
  if (labels.defined()) st.tensors["labels"] = labels.to(at::kLong).contiguous();
  auto f32 = [](const at::Tensor& t) { return t.to(at::kFloat).contiguous(); };
  st.tensors["weights"] = f32(m.log_weights.exp());
  st.tensors["means"] = f32(m.means);
  if (m.variances.defined() && m.cov != Covariance::Full) st.tensors["variances"] = f32(m.variances);
  if (m.cov == Covariance::LowRank || m.cov == Covariance::Full) {
    st.tensors["eigenvalues"] = f32(m.eigenvalues);
    st.tensors["eigenvectors"] = f32(m.eigenvectors);
  }
  st.metadata = {{"scorch.type", "gmm"}, {"scorch.cov", covariance_name(m.cov)}, {"scorch.shape", shape_string(shape)}};
  write_safetensors(path, st, "gmm model");
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
  Prediction predict(const at::Tensor& x, double t, const at::Tensor& cond) override {
    const double alpha = sched_->alpha(t), sigma = sched_->sigma(t);
    const at::Tensor x0 = batch_invariant(
        x, cond, [&](const at::Tensor& xb, const at::Tensor& cb) { return posterior(xb, t, cb, &MixturePosterior::x0); });
    return from_model_output(PredictionType::X0, x0.reshape(x.sizes()), x, alpha, sigma);
  }
  std::vector<int64_t> sample_shape() const override { return m_.shape; }
  bool conditional() const override { return m_.labels.defined(); }
  bool has_log_density() const override { return true; }
  at::Tensor log_density(const at::Tensor& x, double t, const at::Tensor& cond) override {
    return batch_invariant(x, cond, [&](const at::Tensor& xb, const at::Tensor& cb) {
      return posterior(xb, t, cb, &MixturePosterior::log_density);
    });
  }

 private:
  // One field of the posterior, per class for a labelled mixture (label C: all components).
  at::Tensor posterior(const at::Tensor& x, double t, const at::Tensor& cond, at::Tensor MixturePosterior::*field) {
    if (m_.mixture.means.scalar_type() != x.scalar_type() || m_.mixture.means.device() != x.device()) {
      m_.mixture = m_.mixture.to(x.options());
      per_class_.clear();
    }
    const double alpha = sched_->alpha(t), sigma = sched_->sigma(t);
    const at::Tensor flat = x.reshape({x.size(0), -1});
    if (!m_.labels.defined() || !cond.defined()) return gmm_posterior(m_.mixture, flat, alpha, sigma).*field;
    const int64_t classes = m_.labels.max().item<int64_t>() + 1;
    const at::Tensor c = cond.to(at::kCPU).to(at::kLong);
    if (c.dim() != 1 || c.size(0) != x.size(0)) bad_input("cond: a labelled gmm needs one int label per sample");
    if (((c < 0) | (c > classes)).any().item<bool>())
      bad_input("cond: labels of this gmm are 0.." + std::to_string(classes - 1) + " and " + std::to_string(classes) +
                " (the whole mixture)");
    if (per_class_.empty())
      for (int64_t k = 0; k < classes; ++k)
        per_class_.push_back(select_components(m_.mixture, at::nonzero(m_.labels == k).squeeze(1).to(x.device())));
    at::Tensor out;
    for (int64_t k = 0; k <= classes; ++k) {
      const at::Tensor rows = at::nonzero(c == k).squeeze(1);
      if (rows.numel() == 0) continue;
      const at::Tensor r = gmm_posterior(k < classes ? per_class_[size_t(k)] : m_.mixture,
                                         flat.index_select(0, rows.to(x.device())), alpha, sigma).*field;
      if (!out.defined()) out = at::zeros(field == &MixturePosterior::x0 ? flat.sizes() : at::IntArrayRef{x.size(0)},
                                         x.options());
      out.index_copy_(0, rows.to(x.device()), r);
    }
    return out;
  }

  MixtureModel m_;
  std::shared_ptr<const Schedule> sched_;
  std::vector<GaussianMixture> per_class_;
};

class MixtureClassifier final : public Classifier {
 public:
  MixtureClassifier(MixtureModel m, std::shared_ptr<const Schedule> s) : m_(std::move(m)), sched_(std::move(s)) {}
  at::Tensor log_prob(const at::Tensor& x, double t, const at::Tensor& labels) override {
    const GaussianMixture g = m_.mixture.to(x.options());
    const at::Tensor l = gmm_logits(g, x.reshape({x.size(0), -1}), sched_->alpha(t), sched_->sigma(t));  // [B, K]
    const at::Tensor mine = m_.labels.to(x.device()).unsqueeze(0) == labels.to(x.device()).unsqueeze(1);
    return at::logsumexp(l.masked_fill(~mine, -INFINITY), 1) - at::logsumexp(l, 1);
  }

 private:
  MixtureModel m_;
  std::shared_ptr<const Schedule> sched_;
};

}  // namespace

std::shared_ptr<Classifier> make_gmm_classifier(MixtureModel model, std::shared_ptr<const Schedule> schedule) {
  return std::make_shared<MixtureClassifier>(std::move(model), std::move(schedule));
}

std::unique_ptr<Denoiser> make_mixture_denoiser(MixtureModel model, std::shared_ptr<const Schedule> schedule) {
  return std::make_unique<MixtureDenoiser>(std::move(model), std::move(schedule));
}

}  // namespace scorch
