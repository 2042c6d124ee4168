#include "scorch/ems.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "scorch/denoiser.h"
#include "scorch/error.h"
#include "scorch/gaussian.h"
#include "scorch/io.h"
#include "scorch/rng.h"
#include "scorch/schedule.h"

namespace scorch {

namespace {

const auto kF64 = at::TensorOptions().dtype(at::kDouble);

// 8-point Gauss-Legendre rule on [-1, 1].
constexpr double kGaussX[8] = {-0.9602898564975363, -0.7966664774136267, -0.5255324099163290, -0.1834346424956498,
                               0.1834346424956498,  0.5255324099163290,  0.7966664774136267,  0.9602898564975363};
constexpr double kGaussW[8] = {0.1012285362903763, 0.2223810344533745, 0.3137066458778873, 0.3626837833783620,
                               0.3626837833783620, 0.3137066458778873, 0.2223810344533745, 0.1012285362903763};

// d log(alpha) / d lambda at t.
double dlog_alpha_dlambda(const Schedule& ns, double t) {
  const double a = ns.alpha(t), s = ns.sigma(t);
  const double da = ns.d_alpha(t) / a, dl = da - ns.d_sigma(t) / s;
  return da / dl;
}

std::vector<int64_t> with_first(int64_t n, const std::vector<int64_t>& shape) {
  std::vector<int64_t> v = {n};
  v.insert(v.end(), shape.begin(), shape.end());
  return v;
}

// Seed of grid point i's noise for chunk c (the same in both passes of the estimate).
uint64_t chunk_seed(uint64_t seed, int64_t i, int64_t c) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + uint64_t(i) * 0xBF58476D1CE4E5B9ull + uint64_t(c) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z;
}

}  // namespace

Ems trivial_ems(const at::Tensor& lambda, const std::vector<int64_t>& shape) {
  Ems e;
  e.lambda = lambda.to(at::kDouble);
  e.l = at::ones(with_first(lambda.size(0), shape), kF64);
  e.s = at::zeros_like(e.l);
  e.b = at::zeros_like(e.l);
  e.metadata["scorch.type"] = "ems";
  e.metadata["scorch.ems.kind"] = "trivial";
  return e;
}

Ems gaussian_ems(const GaussianModel& g, const Schedule& ns, const at::Tensor& lambda) {
  const int64_t d = g.dim();
  const at::Tensor mu = g.mean.to(at::kDouble), U = g.eigenvectors.to(at::kDouble), ev = g.eigenvalues.to(at::kDouble);
  const at::Tensor I = at::eye(d, kF64);
  const at::Tensor sigma_data = (U * ev).mm(U.t());
  // The affine maps of x at one lambda: sigma eps = (I - A)(x - alpha mu) with
  // A = U diag(alpha^2 e / (alpha^2 e + sigma^2)) U^T, l = diag(I - A), and
  // f = N / alpha = P x + p with P = ((I - A) - diag(l)) / alpha, p = -(I - A) mu.
  struct Maps {
    at::Tensor ia, l, P, p;
    double alpha, sigma, dlog_alpha;
  };
  const auto maps = [&](double lam) {
    const double t = ns.inverse_lambda(lam), a = ns.alpha(t), s = ns.sigma(t);
    const at::Tensor w = a * a * ev / (a * a * ev + s * s);
    Maps m;
    m.ia = I - (U * w).mm(U.t());
    m.l = m.ia.diagonal().clone();
    m.P = (m.ia - at::diag(m.l)) / a;
    m.p = -m.ia.mv(mu);
    m.alpha = a;
    m.sigma = s;
    m.dlog_alpha = dlog_alpha_dlambda(ns, t);
    return m;
  };
  const int64_t n = lambda.size(0);
  Ems e;
  e.lambda = lambda.to(at::kDouble);
  e.l = at::empty({n, d}, kF64);
  e.s = at::empty({n, d}, kF64);
  e.b = at::empty({n, d}, kF64);
  const double delta = 1e-5;
  for (int64_t i = 0; i < n; ++i) {
    const double lam = e.lambda[i].item<double>();
    const Maps m = maps(lam), up = maps(lam + delta), down = maps(lam - delta);
    // The trajectory: dx/dlambda = Q x + q, Q = dlog(alpha)/dlambda I - (I - A), q = alpha (I - A) mu.
    const at::Tensor Q = m.dlog_alpha * I - m.ia, q = m.alpha * m.ia.mv(mu);
    // f' = (P' + P Q) x + (P q + p') along it.
    const at::Tensor R = (up.P - down.P) / (2 * delta) + m.P.mm(Q);
    const at::Tensor r = m.P.mv(q) + (up.p - down.p) / (2 * delta);
    // Moments of x ~ N(alpha mu, alpha^2 Sigma + sigma^2 I).
    const at::Tensor mean_x = m.alpha * mu, cov_x = m.alpha * m.alpha * sigma_data + m.sigma * m.sigma * I;
    const at::Tensor mean_f = m.P.mv(mean_x) + m.p, mean_df = R.mv(mean_x) + r;
    const at::Tensor var_f = (m.P.mm(cov_x) * m.P).sum(1), cov_df = (R.mm(cov_x) * m.P).sum(1);
    // A dimension whose f does not vary has no slope to fit: s = 0, b = E f'.
    const at::Tensor flat = var_f <= 1e-300;
    const at::Tensor s = at::where(flat, at::zeros_like(var_f), cov_df / at::where(flat, at::ones_like(var_f), var_f));
    e.l[i] = m.l;
    e.s[i] = s;
    e.b[i] = mean_df - s * mean_f;
  }
  const std::vector<int64_t> shape = g.shape;
  e.l = e.l.reshape(with_first(n, shape));
  e.s = e.s.reshape(with_first(n, shape));
  e.b = e.b.reshape(with_first(n, shape));
  e.metadata["scorch.type"] = "ems";
  e.metadata["scorch.ems.kind"] = "gaussian";
  return e;
}

Ems estimate_ems(Denoiser& model, const Schedule& ns, const at::Tensor& x0, const at::Tensor& cond,
                 const EmsEstimate& o, const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t n = x0.size(0), points = o.grid + 1;
  if (n < 3) bad_input("ems: needs at least 3 samples, got " + std::to_string(n));
  if (o.grid < 2) bad_input("ems: the grid needs at least 3 points");
  if (!(o.lambda_max > o.lambda_min) || !std::isfinite(o.lambda_min) || !std::isfinite(o.lambda_max))
    bad_input("ems: the lambda range [" + std::to_string(o.lambda_min) + ", " + std::to_string(o.lambda_max) +
              "] is empty or not finite");
  const std::vector<int64_t> shape(x0.sizes().begin() + 1, x0.sizes().end());
  const int64_t d = x0[0].numel();
  Ems e;
  e.lambda = at::linspace(o.lambda_min, o.lambda_max, points, kF64);
  e.l = at::empty({points, d}, kF64);
  e.l_se = at::empty({points, d}, kF64);
  e.s = at::empty({points, d}, kF64);
  e.s_se = at::empty({points, d}, kF64);
  e.b = at::empty({points, d}, kF64);
  e.b_se = at::empty({points, d}, kF64);
  const auto eps = [&](const at::Tensor& x, double t, const at::Tensor& c) { return model.predict(x, t, c).eps; };
  const int64_t chunks = (n + o.batch - 1) / o.batch;
  const double fd = x0.scalar_type() == at::kDouble ? 1e-3 : 1e-2;
  const double h = o.jacobian_step > 0 ? o.jacobian_step : fd, dl = o.lambda_step > 0 ? o.lambda_step : fd;
  for (int64_t i = 0; i < points; ++i) {
    const double lam = e.lambda[i].item<double>(), t = ns.inverse_lambda(lam), s = ns.sigma(t), a = ns.alpha(t);
    const double t_up = ns.inverse_lambda(lam + dl), t_down = ns.inverse_lambda(lam - dl);
    // l_d = E[v_d (J v)_d] with J = sigma d eps / d x and Rademacher v (Hutchinson), and its
    // lambda-derivative from the same x0, z and v at lambda +- dl (common random numbers:
    // the difference has far less noise than two independent estimates).
    at::Tensor sum = at::zeros({d}, kF64), sq = at::zeros({d}, kF64), dsum = at::zeros({d}, kF64);
    const auto probe = [&](const at::Tensor& x0c, const at::Tensor& z, const at::Tensor& v, const at::Tensor& cc,
                           double tt) {
      const double st = ns.sigma(tt), x_a = ns.alpha(tt);
      const at::Tensor x = x_a * x0c + st * z;
      const at::Tensor jv = st * (eps(x + h * v, tt, cc) - eps(x - h * v, tt, cc)) / (2 * h);
      return (v * jv).to(at::kDouble).reshape({x.size(0), d});
    };
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t first = c * o.batch, count = std::min(o.batch, n - first);
      const at::Tensor x0c = x0.narrow(0, first, count), cc = cond.defined() ? cond.narrow(0, first, count) : at::Tensor();
      Rng rng(chunk_seed(o.seed, i, c));
      const at::Tensor z = rng.normal_like(x0c);
      for (int64_t k = 0; k < o.probes; ++k) {
        const at::Tensor v = at::where(rng.uniform(x0c.sizes()).to(x0c.scalar_type()) < 0.5, -at::ones_like(x0c),
                                       at::ones_like(x0c));
        const at::Tensor q = probe(x0c, z, v, cc, t);
        sum += q.sum(0);
        sq += (q * q).sum(0);
        dsum += ((probe(x0c, z, v, cc, t_up) - probe(x0c, z, v, cc, t_down)) / (2 * dl)).sum(0);
      }
    }
    const double draws = double(n * o.probes);
    const at::Tensor l = sum / draws, dl_i = dsum / draws;
    e.l[i] = l;
    e.l_se[i] = ((sq / draws - l * l).clamp_min(0) * (draws / (draws - 1)) / draws).sqrt();
    // f = (sigma eps - l x) / alpha and its total derivative along the trajectory
    // dx/dlambda = dlog(alpha)/dlambda x - sigma eps (l's change included), then the
    // least-squares line of f' on f per dimension.
    const double k = dlog_alpha_dlambda(ns, t);
    at::Tensor sf = at::zeros({d}, kF64), sg = at::zeros({d}, kF64), sff = at::zeros({d}, kF64),
               sfg = at::zeros({d}, kF64), sgg = at::zeros({d}, kF64);
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t first = c * o.batch, count = std::min(o.batch, n - first);
      const at::Tensor x0c = x0.narrow(0, first, count), cc = cond.defined() ? cond.narrow(0, first, count) : at::Tensor();
      Rng rng(chunk_seed(o.seed, i, c));
      const at::Tensor x = a * x0c + s * rng.normal_like(x0c);
      const at::Tensor e0 = eps(x, t, cc);
      const at::Tensor xd = x.to(at::kDouble).reshape({count, d}), sed = (s * e0).to(at::kDouble).reshape({count, d});
      const at::Tensor f = (sed - l * xd) / a;
      const at::Tensor xdot = k * xd - sed;
      const at::Tensor v = xdot.reshape(x.sizes()).to(x.scalar_type());
      const at::Tensor up = ns.sigma(t_up) * eps(x + dl * v, t_up, cc), down = ns.sigma(t_down) * eps(x - dl * v, t_down, cc);
      const at::Tensor dse = (up - down).to(at::kDouble).reshape({count, d}) / (2 * dl);
      const at::Tensor g = (dse - l * xdot - dl_i * xd) / a - k * f;
      sf += f.sum(0);
      sg += g.sum(0);
      sff += (f * f).sum(0);
      sfg += (f * g).sum(0);
      sgg += (g * g).sum(0);
    }
    const double nn = double(n);
    const at::Tensor mf = sf / nn, mg = sg / nn;
    const at::Tensor sxx = (sff - nn * mf * mf).clamp_min(0), sxy = sfg - nn * mf * mg, syy = (sgg - nn * mg * mg).clamp_min(0);
    // A dimension whose f does not vary has no slope to fit: s = 0, b = E f'.
    const at::Tensor flat = sxx <= 1e-300;
    const at::Tensor safe = at::where(flat, at::ones_like(sxx), sxx);
    const at::Tensor slope = at::where(flat, at::zeros_like(sxx), sxy / safe);
    const at::Tensor resid = (syy - slope * sxy).clamp_min(0) / (nn - 2);
    e.s[i] = slope;
    e.b[i] = mg - slope * mf;
    e.s_se[i] = at::where(flat, at::zeros_like(sxx), (resid / safe).sqrt());
    e.b_se[i] = (resid * (1.0 / nn + at::where(flat, at::zeros_like(sxx), mf * mf / safe))).sqrt();
    if (progress) progress(i + 1, points);
  }
  for (at::Tensor* t : {&e.l, &e.l_se, &e.s, &e.s_se, &e.b, &e.b_se}) *t = t->reshape(with_first(points, shape));
  e.metadata["scorch.type"] = "ems";
  e.metadata["scorch.ems.kind"] = "estimate";
  e.metadata["scorch.ems.samples"] = std::to_string(n);
  e.metadata["scorch.ems.grid"] = std::to_string(o.grid);
  e.metadata["scorch.ems.seed"] = std::to_string(o.seed);
  return e;
}

void write_ems(const std::string& path, const Ems& e) {
  SafeTensors st;
  st.tensors = {{"lambda", e.lambda}, {"l", e.l}, {"s", e.s}, {"b", e.b}};
  if (e.l_se.defined()) {
    st.tensors["l_se"] = e.l_se;
    st.tensors["s_se"] = e.s_se;
    st.tensors["b_se"] = e.b_se;
  }
  st.metadata = e.metadata;
  st.metadata["scorch.type"] = "ems";
  st.metadata["scorch.shape"] = shape_string(e.l.sizes().slice(1));
  write_safetensors(path, st, "EMS statistics");
}

Ems read_ems(const std::string& path, const std::string& what) {
  const SafeTensors st = read_safetensors(path, what);
  const auto type = st.metadata.find("scorch.type");
  if (type == st.metadata.end() || type->second != "ems")
    bad_input(what + ": '" + path + "' is not an EMS file (metadata scorch.type is not 'ems'; make one with scorch ems)");
  Ems e;
  e.metadata = st.metadata;
  for (const char* name : {"lambda", "l", "s", "b"})
    if (!st.tensors.count(name)) bad_input(what + ": '" + path + "' has no tensor '" + name + "'");
  e.lambda = st.tensors.at("lambda").to(at::kDouble);
  e.l = st.tensors.at("l").to(at::kDouble);
  e.s = st.tensors.at("s").to(at::kDouble);
  e.b = st.tensors.at("b").to(at::kDouble);
  if (e.lambda.dim() != 1 || e.lambda.size(0) < 2) bad_input(what + ": 'lambda' must be a vector of at least 2 grid points");
  for (const auto& [name, t] : {std::pair<const char*, at::Tensor>{"l", e.l}, {"s", e.s}, {"b", e.b}})
    if (t.dim() < 2 || t.size(0) != e.lambda.size(0))
      bad_input(what + ": '" + name + "' must be [" + std::to_string(e.lambda.size(0)) + ", *shape], one row per grid point");
  if (e.s.sizes() != e.l.sizes() || e.b.sizes() != e.l.sizes()) bad_input(what + ": 'l', 's' and 'b' differ in shape");
  for (const auto& [name, t] : {std::pair<const char*, at::Tensor>{"lambda", e.lambda}, {"l", e.l}, {"s", e.s}, {"b", e.b}})
    if (!at::isfinite(t).all().item<bool>()) bad_input(what + ": '" + name + "' has non-finite values");
  if (!(e.lambda.diff() > 0).all().item<bool>()) bad_input(what + ": the 'lambda' grid must increase");
  return e;
}

EmsIntegrals::EmsIntegrals(const Ems& ems, std::vector<double> points)
    : lambda_(ems.lambda), l_(ems.l), s_(ems.s), b_(ems.b) {
  const double lo = lambda_[0].item<double>(), hi = lambda_[-1].item<double>();
  for (double p : points)
    if (!(p >= lo - 1e-9 && p <= hi + 1e-9))
      bad_input("the EMS grid covers lambda from " + std::to_string(lo) + " to " + std::to_string(hi) +
                "; the sampler steps at lambda = " + std::to_string(p));
  const auto grid = lambda_.accessor<double, 1>();
  for (int64_t i = 0; i < lambda_.size(0); ++i) nodes_.push_back(grid[i]);
  for (double p : points) nodes_.push_back(std::clamp(p, lo, hi));
  std::sort(nodes_.begin(), nodes_.end());
  nodes_.erase(std::unique(nodes_.begin(), nodes_.end()), nodes_.end());
  // Values at the nodes, integrating piece by piece from the first node.
  At first;
  first.l = interpolate(l_, nodes_[0]);
  first.L = at::zeros_like(first.l);
  first.S = at::zeros_like(first.l);
  first.I = at::zeros_like(first.l);
  first.B = at::zeros_like(first.l);
  first.C = at::zeros_like(first.l);
  values_.push_back(first);
  for (size_t k = 1; k < nodes_.size(); ++k) {
    const double a = nodes_[k - 1], c = nodes_[k], h = c - a;
    const At& va = values_.back();
    const at::Tensor la = va.l, lc = interpolate(l_, c), sa = interpolate(s_, a), sc = interpolate(s_, c);
    const at::Tensor ba = interpolate(b_, a), bc = interpolate(b_, c);
    // On [a, c] l, s, b are linear, so L(u) = L_a + (u - a) l_a + (l_c - l_a)(u - a)^2 / (2h).
    const auto L = [&](double u) { return va.L + (u - a) * la + (lc - la) * ((u - a) * (u - a) / (2 * h)); };
    const auto S = [&](double u) { return va.S + (u - a) * sa + (sc - sa) * ((u - a) * (u - a) / (2 * h)); };
    const auto bb = [&](double u) { return ba + (bc - ba) * ((u - a) / h); };
    // B(u) = B_a + int_a^u e^{-S} b (inner quadrature for C)
    const auto B = [&](double u) {
      at::Tensor acc = at::zeros_like(la);
      for (int j = 0; j < 8; ++j) {
        const double v = a + (u - a) * (1 + kGaussX[j]) / 2;
        acc += kGaussW[j] * (u - a) / 2 * at::exp(-S(v)) * bb(v);
      }
      return va.B + acc;
    };
    at::Tensor dI = at::zeros_like(la), dB = at::zeros_like(la), dC = at::zeros_like(la);
    for (int j = 0; j < 8; ++j) {
      const double u = a + h * (1 + kGaussX[j]) / 2, w = kGaussW[j] * h / 2;
      const at::Tensor e = at::exp(L(u) + S(u));
      dI += w * e;
      dB += w * at::exp(-S(u)) * bb(u);
      dC += w * e * B(u);
    }
    At vc;
    vc.l = lc;
    vc.L = L(c);
    vc.S = S(c);
    vc.I = va.I + dI;
    vc.B = va.B + dB;
    vc.C = va.C + dC;
    values_.push_back(vc);
  }
}

at::Tensor EmsIntegrals::interpolate(const at::Tensor& v, double lambda) const {
  const int64_t n = lambda_.size(0);
  const auto grid = lambda_.accessor<double, 1>();
  int64_t i = int64_t(std::upper_bound(grid.data(), grid.data() + n, lambda) - grid.data()) - 1;
  i = std::clamp<int64_t>(i, 0, n - 2);
  const double w = std::clamp((lambda - grid[i]) / (grid[i + 1] - grid[i]), 0.0, 1.0);
  return v[i] * (1 - w) + v[i + 1] * w;
}

size_t EmsIntegrals::node(double lambda) const {
  const double lo = nodes_.front(), hi = nodes_.back();
  const double c = std::clamp(lambda, lo, hi);
  const auto it = std::lower_bound(nodes_.begin(), nodes_.end(), c - 1e-12);
  if (it == nodes_.end() || std::abs(*it - c) > 1e-9)
    throw Error(Status::Internal, "EmsIntegrals: lambda " + std::to_string(lambda) + " is not one of the solver's points");
  return size_t(it - nodes_.begin());
}

const EmsIntegrals::At& EmsIntegrals::at(double lambda) const { return values_[node(lambda)]; }

at::Tensor EmsIntegrals::taylor(double s, double t, int n) const {
  const size_t i = node(s), j = node(t);
  const At& vs = values_[i];
  const double fact = std::tgamma(n + 1.0), s0 = nodes_[i];
  at::Tensor acc = at::zeros_like(vs.L);
  for (size_t k = i + 1; k <= j; ++k) {
    const double a = nodes_[k - 1], c = nodes_[k], h = c - a;
    const At& va = values_[k - 1];
    const at::Tensor la = va.l, lc = values_[k].l, sa = interpolate(s_, a), sc = interpolate(s_, c);
    for (int q = 0; q < 8; ++q) {
      const double u = a + h * (1 + kGaussX[q]) / 2;
      const at::Tensor L = va.L + (u - a) * la + (lc - la) * ((u - a) * (u - a) / (2 * h));
      const at::Tensor S = va.S + (u - a) * sa + (sc - sa) * ((u - a) * (u - a) / (2 * h));
      acc += kGaussW[q] * h / 2 * at::exp(L + S - vs.L - vs.S) * (std::pow(u - s0, n) / fact);
    }
  }
  return acc;
}

}  // namespace scorch
