#include "scorch/fit.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "scorch/error.h"

namespace scorch {

namespace {

const auto kF64 = at::TensorOptions().dtype(at::kDouble);

void check_data(const at::Tensor& x, const char* what) {
  if (x.dim() != 2 || x.size(0) < 1 || x.size(1) < 1) bad_input(std::string(what) + ": expected data [N, D]");
  if (!at::isfinite(x).all().item<bool>()) bad_input(std::string(what) + ": the data has non-finite values");
}

// Eigendecomposition of a symmetric [D, D] matrix, eigenvalues in descending order.
std::pair<at::Tensor, at::Tensor> eigh_descending(const at::Tensor& s) {
  auto [val, vec] = at::linalg_eigh(s);
  return {val.flip(0), vec.flip(1)};
}

// Squared distances [N, K] from one matrix product.
at::Tensor sq_distances(const at::Tensor& x, const at::Tensor& x_sq, const at::Tensor& c) {
  return (x_sq.unsqueeze(1) - 2.0 * at::mm(x, c.t()) + c.square().sum(1).unsqueeze(0)).clamp_min_(0.0);
}

// The M-step for responsibilities r [N, K] (rows sum to 1; one-hot after k-means).
GaussianMixture m_step(const at::Tensor& x, const at::Tensor& r, const GmmFitOptions& o) {
  const int64_t d = x.size(1), k = r.size(1);
  const at::Tensor nk = r.sum(0, false, at::kDouble).clamp_min(1e-12);  // [K]
  GaussianMixture m;
  m.cov = o.cov;
  m.log_weights = (nk / nk.sum()).log();
  m.means = at::mm(r.t(), x).to(at::kDouble) / nk.unsqueeze(1);  // [K, D]
  switch (o.cov) {
    case Covariance::Isotropic: {
      // s^2 = (E_k|x|^2 - |mu_k|^2) / D
      const at::Tensor ex2 = at::mv(r.t(), x.square().sum(1)).to(at::kDouble) / nk;
      m.variances = ((ex2 - m.means.square().sum(1)) / double(d)).clamp_min(0.0) + o.reg;
      break;
    }
    case Covariance::Diagonal:
      m.variances = (at::mm(r.t(), x.square()).to(at::kDouble) / nk.unsqueeze(1) - m.means.square()).clamp_min(0.0) + o.reg;
      break;
    case Covariance::LowRank:
    case Covariance::Full: {
      const int64_t rank = o.cov == Covariance::Full ? d : o.rank;
      m.variances = at::zeros({k}, kF64);
      m.eigenvalues = at::zeros({k, rank}, kF64);
      m.eigenvectors = at::zeros({k, d, rank}, kF64);
      for (int64_t j = 0; j < k; ++j) {
        // weighted scatter of the points that carry this component (responsibility > 1e-4:
        // in high dimension responsibilities are nearly hard, so this is a few percent of N)
        const at::Tensor sel = at::nonzero(r.select(1, j) > 1e-4).squeeze(1);
        at::Tensor cov = at::zeros({d, d}, kF64);
        if (sel.numel() > 0) {
          const at::Tensor w = r.select(1, j).index_select(0, sel).sqrt().unsqueeze(1);
          const at::Tensor xc = (x.index_select(0, sel) - m.means[j].to(x.scalar_type())) * w;
          cov = at::mm(xc.t(), xc).to(at::kDouble) / nk[j];
        }
        auto [val, vec] = eigh_descending(cov);
        val = val.clamp_min(0.0);
        if (o.cov == Covariance::Full) {
          m.eigenvalues[j] = val + o.reg;
        } else {
          // PPCA: s^2 = mean of the discarded eigenvalues, lam = eig - s^2 on the kept ones
          const double s2 = rank < d ? val.narrow(0, rank, d - rank).mean().item<double>() : 0.0;
          m.eigenvalues[j] = (val.narrow(0, 0, rank) - s2).clamp_min(0.0);
          m.variances[j] = s2 + o.reg;
        }
        m.eigenvectors[j] = vec.narrow(1, 0, rank);
      }
      if (o.cov == Covariance::Full) m.variances = at::Tensor();
      break;
    }
  }
  return m;
}

}  // namespace

GaussianModel fit_gaussian(const at::Tensor& x_in, int64_t rank, const std::vector<int64_t>& shape) {
  check_data(x_in, "fit gaussian");
  const at::Tensor x = x_in.to(at::kDouble);
  const int64_t n = x.size(0), d = x.size(1);
  if (n < 2) bad_input("fit gaussian: need at least 2 samples");
  if (rank < 0 || rank > d) bad_input("--rank: expected 0 (all) to D = " + std::to_string(d) + ", got " + std::to_string(rank));
  if (rank == 0) rank = d;
  GaussianModel g;
  g.mean = x.mean(0);
  const at::Tensor xc = x - g.mean;
  auto [val, vec] = eigh_descending(at::mm(xc.t(), xc) / double(n));
  g.eigenvalues = val.narrow(0, 0, rank).clamp_min(0.0);
  g.eigenvectors = vec.narrow(1, 0, rank).contiguous();
  g.shape = shape;
  return g;
}

std::pair<at::Tensor, at::Tensor> kmeans(const at::Tensor& x, int64_t k, int iters, uint64_t seed) {
  const int64_t n = x.size(0);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const at::Tensor x_sq = x.square().sum(1);
  // k-means++: each new centre drawn with probability proportional to D(x)^2, the squared
  // distance to the nearest centre chosen so far.
  std::vector<int64_t> idx{at::randint(n, {1}, gen, at::TensorOptions().dtype(at::kLong)).item<int64_t>()};
  at::Tensor d2 = sq_distances(x, x_sq, x[idx[0]].unsqueeze(0)).squeeze(1).to(at::kDouble);
  for (int64_t j = 1; j < k; ++j) {
    const double total = d2.sum().item<double>();
    const int64_t next = total > 0.0 ? at::multinomial(d2, 1, false, gen).item<int64_t>()
                                     : at::randint(n, {1}, gen, at::TensorOptions().dtype(at::kLong)).item<int64_t>();
    idx.push_back(next);
    d2 = at::minimum(d2, sq_distances(x, x_sq, x[next].unsqueeze(0)).squeeze(1).to(at::kDouble));
  }
  at::Tensor c = x.index_select(0, at::tensor(idx, at::kLong));
  at::Tensor assign;
  for (int it = 0; it < iters; ++it) {
    auto [dist, a] = sq_distances(x, x_sq, c).min(1);
    if (assign.defined() && at::equal(a, assign)) break;
    assign = a;
    const at::Tensor counts = at::bincount(assign, {}, k).to(x.scalar_type());
    at::Tensor sums = at::zeros_like(c).index_add_(0, assign, x);
    c = sums / counts.clamp_min(1.0).unsqueeze(1);
    // an empty cluster takes the point farthest from its centre
    for (int64_t j = 0; j < k; ++j)
      if (counts[j].item<double>() == 0.0) {
        const int64_t far = dist.argmax().item<int64_t>();
        c[j] = x[far];
        dist[far] = 0.0;
      }
  }
  if (!assign.defined() || iters == 0) assign = std::get<1>(sq_distances(x, x_sq, c).min(1));
  return {c, assign};
}

GmmFit fit_gmm(const at::Tensor& x_in, const GmmFitOptions& o) {
  check_data(x_in, "fit gmm");
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t n = x.size(0), d = x.size(1);
  if (o.k < 1 || o.k > n) bad_input("--k: expected 1 to N = " + std::to_string(n) + " components, got " + std::to_string(o.k));
  if (o.cov == Covariance::LowRank && (o.rank < 1 || o.rank >= d))
    bad_input("--rank: a lowrank covariance needs 1 <= rank < D = " + std::to_string(d) + ", got " + std::to_string(o.rank));
  if (o.kmeans_iters < 0 || o.em_iters < 0) bad_input("--iters / --em-iters: expected counts >= 0");
  if (!(o.reg > 0.0)) bad_input("--reg: expected a number > 0");
  const double nan = std::numeric_limits<double>::quiet_NaN();

  auto [centres, assign] = kmeans(x, o.k, o.kmeans_iters, o.seed);
  if (o.progress) o.progress("k-means", o.kmeans_iters, o.kmeans_iters, nan);
  GmmFit fit;
  at::Tensor r = at::one_hot(assign, o.k).to(at::kFloat);
  fit.mixture = m_step(x, r, o);
  for (int it = 0; it < o.em_iters; ++it) {
    // E-step: responsibilities softmax_k l_k at alpha = 1, sigma = 0 (the data density)
    const at::Tensor logits = gmm_logits(fit.mixture.to(x.options()), x, 1.0, 0.0);
    const double ll = at::logsumexp(logits.to(at::kDouble), 1).mean().item<double>();
    if (!std::isfinite(ll)) bad_input("fit gmm: the log-likelihood became non-finite (try a larger --reg)");
    r = at::softmax(logits, 1);
    fit.mixture = m_step(x, r, o);
    fit.log_likelihood.push_back(ll);
    if (o.progress) o.progress("EM", it + 1, o.em_iters, ll);
  }
  return fit;
}

}  // namespace scorch
