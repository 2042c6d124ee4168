#include "scorch/fit.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "scorch/error.h"
#include "scorch/io.h"

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

// A statistic of this process's rows, summed over the shards (DataShards).
at::Tensor summed(at::Tensor t, const DataShards& shards) {
  shards.sum(t);
  return t;
}

// sum over rows of f(first, count), accumulated in float64 over blocks of rows (bounded
// memory). Sums over rows are float64 throughout: a float32 sum would depend on how the
// rows are split between processes (at 1e-7), enough to move a point across a k-means
// boundary and a fit onto another path; float64 sums agree to ~1e-16 and round to the same
// float32 model.
template <typename F>
at::Tensor row_sum(int64_t n, F f) {
  constexpr int64_t kBlock = 4096;
  at::Tensor acc;
  for (int64_t b = 0; b < n; b += kBlock) {
    const at::Tensor part = f(b, std::min(kBlock, n - b)).to(at::kDouble);
    acc = acc.defined() ? acc.add_(part) : part.clone();
  }
  return acc;
}

// Row g of the whole data set, on every process (its owner contributes it, the others zeros).
at::Tensor global_row(const at::Tensor& x, int64_t g, const DataShards& shards) {
  at::Tensor row = at::zeros({x.size(1)}, x.options());
  if (g >= shards.first && g < shards.first + x.size(0)) row.copy_(x[g - shards.first]);
  return summed(row, shards);
}

// The M-step for responsibilities r [N, K] (rows sum to 1; one-hot after k-means): every
// statistic is a sum over rows, summed over the shards.
GaussianMixture m_step(const at::Tensor& x, const at::Tensor& r, const GmmFitOptions& o, const DataShards& shards) {
  const int64_t d = x.size(1), k = r.size(1);
  const int64_t n = x.size(0);
  // r^T f(x) summed over rows, in float64
  const auto weighted = [&](auto f) {
    return summed(row_sum(n, [&](int64_t b, int64_t len) {
                    return at::mm(r.narrow(0, b, len).t().to(at::kDouble), f(x.narrow(0, b, len).to(at::kDouble)));
                  }),
                  shards);
  };
  const at::Tensor nk = summed(r.sum(0, false, at::kDouble), shards).clamp_min(1e-12);  // [K]
  GaussianMixture m;
  m.cov = o.cov;
  m.log_weights = (nk / nk.sum()).log();
  m.means = weighted([](const at::Tensor& xb) { return xb; }) / nk.unsqueeze(1);  // [K, D]
  switch (o.cov) {
    case Covariance::Isotropic: {
      // s^2 = (E_k|x|^2 - |mu_k|^2) / D
      const at::Tensor ex2 = weighted([](const at::Tensor& xb) { return xb.square().sum(1, true); }).squeeze(1) / nk;
      m.variances = ((ex2 - m.means.square().sum(1)) / double(d)).clamp_min(0.0) + o.reg;
      break;
    }
    case Covariance::Diagonal:
      m.variances =
          (weighted([](const at::Tensor& xb) { return xb.square(); }) / nk.unsqueeze(1) - m.means.square()).clamp_min(0.0) +
          o.reg;
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
        if (sel.numel() > 0)
          cov = row_sum(sel.numel(), [&](int64_t b, int64_t len) {
            const at::Tensor rows = sel.narrow(0, b, len);
            const at::Tensor w = r.select(1, j).index_select(0, rows).to(at::kDouble).sqrt().unsqueeze(1);
            const at::Tensor xc = (x.index_select(0, rows).to(at::kDouble) - m.means[j]) * w;
            return at::mm(xc.t(), xc);
          });
        auto [val, vec] = eigh_descending(summed(cov, shards) / nk[j]);
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

GaussianModel fit_gaussian(const at::Tensor& x_in, int64_t rank, const std::vector<int64_t>& shape,
                           const DataShards& shards) {
  check_data(x_in, "fit gaussian");
  const at::Tensor x = x_in.to(at::kDouble);
  const int64_t n = shards.total > 0 ? shards.total : x.size(0), d = x.size(1);
  if (n < 2) bad_input("fit gaussian: need at least 2 samples");
  if (rank < 0 || rank > d) bad_input("--rank: expected 0 (all) to D = " + std::to_string(d) + ", got " + std::to_string(rank));
  if (rank == 0) rank = d;
  GaussianModel g;
  // mean = sum x / N, covariance = sum (x - mean)(x - mean)^T / N: sums over the shards
  g.mean = summed(x.sum(0), shards) / double(n);
  const at::Tensor xc = x - g.mean;
  auto [val, vec] = eigh_descending(summed(at::mm(xc.t(), xc), shards) / double(n));
  g.eigenvalues = val.narrow(0, 0, rank).clamp_min(0.0);
  g.eigenvectors = vec.narrow(1, 0, rank).contiguous();
  g.shape = shape;
  return g;
}

std::vector<GaussianModel> fit_class_gaussians(const at::Tensor& x, const at::Tensor& labels, int64_t rank,
                                               const std::vector<int64_t>& shape) {
  if (labels.dim() != 1 || labels.size(0) != x.size(0))
    bad_input("--labels: expected one label per sample, [" + std::to_string(x.size(0)) + "]; got " + shape_string(labels.sizes()));
  if (at::isFloatingType(labels.scalar_type()) && !at::equal(labels, labels.round()))
    bad_input("--labels: expected integer class labels");
  const at::Tensor y = labels.to(at::kLong);
  if (y.numel() == 0 || y.min().item<int64_t>() < 0) bad_input("--labels: class labels must be >= 0");
  const int64_t classes = y.max().item<int64_t>() + 1;
  if (classes > 100000) bad_input("--labels: " + std::to_string(classes) + " classes; at most 100000");
  std::vector<GaussianModel> out;
  for (int64_t c = 0; c < classes; ++c) {
    const at::Tensor rows = (y == c).nonzero().squeeze(1);
    if (rows.numel() < 2)
      bad_input("--labels: class " + std::to_string(c) + " has " + std::to_string(rows.numel()) +
                " sample(s); each class from 0 to the largest label needs at least 2");
    out.push_back(fit_gaussian(x.index_select(0, rows), rank, shape));
  }
  return out;
}

std::pair<at::Tensor, at::Tensor> kmeans(const at::Tensor& x, int64_t k, int iters, uint64_t seed,
                                         const DataShards& shards) {
  const int64_t n = shards.total > 0 ? shards.total : x.size(0);
  // Every process draws the same numbers from the same generator: the draws are over the
  // whole data set (its D^2 gathered, a scalar per row), the chosen rows sent by their owner.
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const at::Tensor x_sq = x.square().sum(1);
  // k-means++: each new centre drawn with probability proportional to D(x)^2, the squared
  // distance to the nearest centre chosen so far.
  std::vector<at::Tensor> centres{
      global_row(x, at::randint(n, {1}, gen, at::TensorOptions().dtype(at::kLong)).item<int64_t>(), shards)};
  at::Tensor d2 = sq_distances(x, x_sq, centres[0].unsqueeze(0)).squeeze(1).to(at::kDouble);
  for (int64_t j = 1; j < k; ++j) {
    const at::Tensor d2_all = shards.gather(d2);
    const double total = d2_all.sum().item<double>();
    const int64_t next = total > 0.0 ? at::multinomial(d2_all, 1, false, gen).item<int64_t>()
                                     : at::randint(n, {1}, gen, at::TensorOptions().dtype(at::kLong)).item<int64_t>();
    centres.push_back(global_row(x, next, shards));
    d2 = at::minimum(d2, sq_distances(x, x_sq, centres.back().unsqueeze(0)).squeeze(1).to(at::kDouble));
  }
  at::Tensor c = at::stack(centres);
  at::Tensor assign;
  for (int it = 0; it < iters; ++it) {
    auto [dist, a] = sq_distances(x, x_sq, c).min(1);
    // Lloyd stops once no point anywhere changed its cluster.
    if (assign.defined() && summed(at::full({1}, at::equal(a, assign) ? 0.0 : 1.0, at::kDouble), shards).item<double>() == 0.0)
      break;
    assign = a;
    const at::Tensor counts = summed(at::bincount(assign, {}, k).to(at::kDouble), shards);
    const at::Tensor sums = summed(row_sum(x.size(0), [&](int64_t b, int64_t len) {
                                     return at::zeros({k, x.size(1)}, kF64)
                                         .index_add_(0, assign.narrow(0, b, len), x.narrow(0, b, len).to(at::kDouble));
                                   }),
                                   shards);
    c = (sums / counts.clamp_min(1.0).unsqueeze(1)).to(x.scalar_type());
    // an empty cluster takes the point farthest from its centre
    for (int64_t j = 0; j < k; ++j)
      if (counts[j].item<double>() == 0.0) {
        const int64_t far = shards.gather(dist.to(at::kDouble)).argmax().item<int64_t>();
        c[j] = global_row(x, far, shards);
        if (far >= shards.first && far < shards.first + x.size(0)) dist[far - shards.first] = 0.0;
      }
  }
  if (!assign.defined() || iters == 0) assign = std::get<1>(sq_distances(x, x_sq, c).min(1));
  return {c, assign};
}

GmmFit fit_gmm(const at::Tensor& x_in, const GmmFitOptions& o, const DataShards& shards) {
  check_data(x_in, "fit gmm");
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t n = shards.total > 0 ? shards.total : x.size(0), d = x.size(1);
  if (o.k < 1 || o.k > n) bad_input("--k: expected 1 to N = " + std::to_string(n) + " components, got " + std::to_string(o.k));
  if (o.cov == Covariance::LowRank && (o.rank < 1 || o.rank >= d))
    bad_input("--rank: a lowrank covariance needs 1 <= rank < D = " + std::to_string(d) + ", got " + std::to_string(o.rank));
  if (o.kmeans_iters < 0 || o.em_iters < 0) bad_input("--iters / --em-iters: expected counts >= 0");
  if (!(o.reg > 0.0)) bad_input("--reg: expected a number > 0");
  const double nan = std::numeric_limits<double>::quiet_NaN();

  auto [centres, assign] = kmeans(x, o.k, o.kmeans_iters, o.seed, shards);
  if (o.progress) o.progress("k-means", o.kmeans_iters, o.kmeans_iters, nan);
  GmmFit fit;
  at::Tensor r = at::one_hot(assign, o.k).to(at::kFloat);
  fit.mixture = m_step(x, r, o, shards);
  for (int it = 0; it < o.em_iters; ++it) {
    // E-step: responsibilities softmax_k l_k at alpha = 1, sigma = 0 (the data density)
    const at::Tensor logits = gmm_logits(fit.mixture.to(x.options()), x, 1.0, 0.0);
    const double ll = summed(at::logsumexp(logits.to(at::kDouble), 1).sum(0, true), shards).item<double>() / double(n);
    if (!std::isfinite(ll)) bad_input("fit gmm: the log-likelihood became non-finite (try a larger --reg)");
    r = at::softmax(logits, 1);
    fit.mixture = m_step(x, r, o, shards);
    fit.log_likelihood.push_back(ll);
    if (o.progress) o.progress("EM", it + 1, o.em_iters, ll);
  }
  return fit;
}

}  // namespace scorch
