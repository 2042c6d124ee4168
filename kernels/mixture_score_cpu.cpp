#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "scorch/mixture_score.h"
#ifdef SCORCH_WITH_CUDA_KERNELS
#include "mixture_score_cuda.h"
#endif

namespace scorch {

namespace {

// The logits l_k of a block of components for every x: [N, Kb].
at::Tensor block_logits(const at::Tensor& x, const at::Tensor& x_sq, const at::Tensor& mu, const at::Tensor& mu_sq,
                        const at::Tensor& log_w, const at::Tensor& v, double alpha) {
  const int64_t d = x.size(1);
  // -|x - alpha mu|^2 / (2v) = (alpha x.mu - |x|^2/2 - alpha^2 |mu|^2 / 2) / v
  at::Tensor l = at::mm(x, mu.t()).mul_(alpha);
  l.sub_(x_sq.unsqueeze(1) * 0.5).sub_((alpha * alpha * 0.5) * mu_sq.unsqueeze(0));
  l.div_(v.unsqueeze(0));
  return l.add_((log_w - 0.5 * double(d) * (2.0 * M_PI * v).log()).unsqueeze(0));
}

}  // namespace

MixturePosterior mixture_posterior_reference(const IsotropicMixture& m, const at::Tensor& x, double alpha,
                                             double sigma) {
  const at::Tensor v = alpha * alpha * m.variances + sigma * sigma;
  const at::Tensor l = block_logits(x, at::linalg_vector_norm(x, 2, {1}).square(), m.means, at::linalg_vector_norm(m.means, 2, {1}).square(), m.log_weights, v, alpha);
  const at::Tensor w = at::softmax(l, 1);
  MixturePosterior r;
  r.x0 = at::mm(w * (sigma * sigma / v).unsqueeze(0), m.means) +
         x * (w * (alpha * m.variances / v).unsqueeze(0)).sum(1, true);
  r.log_density = at::logsumexp(l, 1);
  return r;
}

MixturePosterior mixture_posterior(const IsotropicMixture& m, const at::Tensor& x, double alpha, double sigma,
                                   int64_t block) {
#ifdef SCORCH_WITH_CUDA_KERNELS
  if (x.is_cuda() && x.scalar_type() == at::kFloat) {
    const at::Tensor xc = x.contiguous(), mu = m.means.to(x.options()).contiguous();
    const at::Tensor lw = m.log_weights.to(x.options()).contiguous(), var = m.variances.to(x.options()).contiguous();
    MixturePosterior r;
    r.x0 = at::empty_like(xc);
    r.log_density = at::empty({x.size(0)}, x.options());
    const int err = mixture_posterior_cuda(xc.data_ptr<float>(), mu.data_ptr<float>(), lw.data_ptr<float>(),
                                           var.data_ptr<float>(), x.size(0), mu.size(0), x.size(1), alpha, sigma,
                                           r.x0.data_ptr<float>(), r.log_density.data_ptr<float>(), nullptr);
    TORCH_CHECK(err == 0, "mixture_posterior_cuda: CUDA error ", err);
    return r;
  }
#endif
  return mixture_posterior_blocked(m, x, alpha, sigma, block);
}

MixturePosterior mixture_posterior_blocked(const IsotropicMixture& m, const at::Tensor& x, double alpha, double sigma,
                                           int64_t block) {
  const int64_t n = x.size(0), k = m.means.size(0);
  if (block <= 0) {
    // About 1M logits per block on the CPU (cache-sized), 64M on a GPU (large products).
    block = x.device().is_cpu() ? std::clamp<int64_t>((int64_t(1) << 20) / std::max<int64_t>(n, 1), 256, 4096)
                                : std::clamp<int64_t>((int64_t(1) << 26) / std::max<int64_t>(n, 1), 1024, 65536);
  }
  const auto f64 = x.options().dtype(at::kDouble);
  const at::Tensor x_sq = at::linalg_vector_norm(x, 2, {1}).square();
  const at::Tensor v_all = alpha * alpha * m.variances + sigma * sigma;
  const at::Tensor mu_sq_all = at::linalg_vector_norm(m.means, 2, {1}).square();
  // Online log-sum-exp (FlashAttention's recurrence): running max m_run, sum s_run and
  // the unnormalised accumulators acc (means) and b (the coefficient of x), rescaled by
  // e^{m_old - m_new} whenever the max grows.
  at::Tensor m_run = at::full({n}, -INFINITY, f64), s_run = at::zeros({n}, f64);
  at::Tensor acc = at::zeros_like(x), b = at::zeros({n}, f64);
  for (int64_t k0 = 0; k0 < k; k0 += block) {
    const int64_t kb = std::min(block, k - k0);
    const at::Tensor v = v_all.narrow(0, k0, kb);
    const at::Tensor l = block_logits(x, x_sq, m.means.narrow(0, k0, kb), mu_sq_all.narrow(0, k0, kb),
                                      m.log_weights.narrow(0, k0, kb), v, alpha);
    const at::Tensor m_new = at::maximum(m_run, std::get<0>(l.max(1)).to(at::kDouble));
    const at::Tensor rescale = (m_run - m_new).exp();  // 0 on the first block (exp(-inf))
    const at::Tensor p = (l - m_new.to(l.scalar_type()).unsqueeze(1)).exp_();  // [N, Kb], <= 1
    s_run = s_run * rescale + p.sum(1, false, at::kDouble);
    b = b * rescale + at::mv(p, (alpha * m.variances.narrow(0, k0, kb) / v)).to(at::kDouble);
    acc.mul_(rescale.to(acc.scalar_type()).unsqueeze(1));
    acc.addmm_(p * (sigma * sigma / v).unsqueeze(0), m.means.narrow(0, k0, kb));
    m_run = m_new;
  }
  MixturePosterior r;
  r.x0 = (acc + x * b.to(x.scalar_type()).unsqueeze(1)) / s_run.to(x.scalar_type()).unsqueeze(1);
  r.log_density = (m_run + s_run.log()).to(x.scalar_type());
  return r;
}

}  // namespace scorch
