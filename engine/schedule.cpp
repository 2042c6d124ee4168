#include "scorch/schedule.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "scorch/error.h"

namespace scorch {

double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

double Schedule::alpha(double t) const { return std::exp(log_alpha(t)); }
double Schedule::ve_sigma(double t) const { return std::exp(-lambda(t)); }
double Schedule::t_of_ve_sigma(double s) const { return inverse_lambda(-std::log(s)); }

namespace {

// For VP schedules sigma and lambda follow from log alpha alone:
// sigma^2 = 1 - alpha^2 and lambda = log alpha - log sigma.
double vp_sigma(double log_alpha) { return std::sqrt(-std::expm1(2.0 * log_alpha)); }
double vp_lambda(double log_alpha) { return log_alpha - 0.5 * std::log(-std::expm1(2.0 * log_alpha)); }
// Inverse of vp_lambda: log alpha = -1/2 log(1 + exp(-2 lambda)).
double vp_log_alpha_of_lambda(double lambda) { return -0.5 * softplus(-2.0 * lambda); }

// Piecewise-linear interpolation on increasing keypoints xp, extrapolating
// with the outermost segments (the official DPM-Solver's interpolate_fn).
double interpolate(double x, const std::vector<double>& xp, const std::vector<double>& yp) {
  const size_t n = xp.size();
  if (n == 1) return yp[0];
  size_t i = std::upper_bound(xp.begin(), xp.end(), x) - xp.begin();
  i = std::clamp<size_t>(i, 1, n - 1);
  const double w = (x - xp[i - 1]) / (xp[i] - xp[i - 1]);
  return yp[i - 1] + w * (yp[i] - yp[i - 1]);
}

class VpLinear final : public Schedule {
 public:
  VpLinear(double b0, double b1) : b0_(b0), b1_(b1) {}
  double log_alpha(double t) const override { return -0.25 * t * t * (b1_ - b0_) - 0.5 * t * b0_; }
  double sigma(double t) const override { return vp_sigma(log_alpha(t)); }
  double lambda(double t) const override { return vp_lambda(log_alpha(t)); }
  // Stable root of (b1 - b0) t^2 / 2 + b0 t - log(1 + e^{-2 lambda}) = 0.
  double inverse_lambda(double lambda) const override {
    const double tmp = 2.0 * (b1_ - b0_) * softplus(-2.0 * lambda);
    const double delta = b0_ * b0_ + tmp;
    return tmp / (std::sqrt(delta) + b0_) / (b1_ - b0_);
  }
  double t_max() const override { return 1.0; }
  double t_min() const override { return 1e-3; }
  std::string name() const override { return "vp_linear"; }

 private:
  double b0_, b1_;
};

class VpDiscrete final : public Schedule {
 public:
  explicit VpDiscrete(std::vector<double> log_alphas) : log_alpha_(std::move(log_alphas)) {
    const size_t n = log_alpha_.size();
    t_.resize(n);
    for (size_t i = 0; i < n; ++i) t_[i] = double(i + 1) / double(n);
    flipped_log_alpha_.assign(log_alpha_.rbegin(), log_alpha_.rend());
    flipped_t_.assign(t_.rbegin(), t_.rend());
  }
  double log_alpha(double t) const override { return interpolate(t, t_, log_alpha_); }
  double sigma(double t) const override { return vp_sigma(log_alpha(t)); }
  double lambda(double t) const override { return vp_lambda(log_alpha(t)); }
  double inverse_lambda(double lambda) const override {
    return interpolate(vp_log_alpha_of_lambda(lambda), flipped_log_alpha_, flipped_t_);
  }
  double t_max() const override { return 1.0; }
  double t_min() const override { return 1.0 / double(log_alpha_.size()); }
  int num_train_steps() const override { return int(log_alpha_.size()); }
  std::string name() const override { return "vp_discrete"; }

 private:
  std::vector<double> log_alpha_, t_, flipped_log_alpha_, flipped_t_;
};

class VpCosine final : public Schedule {
 public:
  explicit VpCosine(double s) : s_(s) {
    log_alpha_0_ = std::log(std::cos(s_ / (1.0 + s_) * M_PI / 2.0));
    t_max_ = inverse_lambda(-5.1);
  }
  double log_alpha(double t) const override {
    return std::log(std::cos((t + s_) / (1.0 + s_) * M_PI / 2.0)) - log_alpha_0_;
  }
  double sigma(double t) const override { return vp_sigma(log_alpha(t)); }
  double lambda(double t) const override { return vp_lambda(log_alpha(t)); }
  double inverse_lambda(double lambda) const override {
    const double la = vp_log_alpha_of_lambda(lambda);
    return std::acos(std::exp(la + log_alpha_0_)) * 2.0 * (1.0 + s_) / M_PI - s_;
  }
  double t_max() const override { return t_max_; }
  double t_min() const override { return 1e-3; }
  std::string name() const override { return "vp_cosine"; }

 private:
  double s_, log_alpha_0_, t_max_;
};

class Edm final : public Schedule {
 public:
  Edm(double smin, double smax) : smin_(smin), smax_(smax) {}
  double log_alpha(double) const override { return 0.0; }
  double sigma(double t) const override { return t; }
  double lambda(double t) const override { return -std::log(t); }
  double inverse_lambda(double lambda) const override { return std::exp(-lambda); }
  double t_max() const override { return smax_; }
  double t_min() const override { return smin_; }
  std::string name() const override { return "edm"; }

 private:
  double smin_, smax_;
};

}  // namespace

std::unique_ptr<Schedule> make_vp_linear(double beta_0, double beta_1) {
  if (!(beta_0 >= 0.0) || !(beta_1 > beta_0))
    bad_input("schedule: vp_linear needs 0 <= beta_0 < beta_1 (got beta_0=" + std::to_string(beta_0) +
              ", beta_1=" + std::to_string(beta_1) + ")");
  return std::make_unique<VpLinear>(beta_0, beta_1);
}

std::vector<double> make_betas(const std::string& kind, double start, double end, int n) {
  if (n < 2) bad_input("schedule.num_train_steps: expected an integer >= 2, got " + std::to_string(n));
  if (!(start > 0.0) || !(end < 1.0) || !(start <= end))
    bad_input("schedule: expected 0 < beta_start <= beta_end < 1");
  std::vector<double> betas(n);
  for (int i = 0; i < n; ++i) {
    const double w = double(i) / double(n - 1);
    if (kind == "linear") {
      betas[i] = start + w * (end - start);
    } else if (kind == "scaled_linear") {
      const double r = std::sqrt(start) + w * (std::sqrt(end) - std::sqrt(start));
      betas[i] = r * r;
    } else {
      bad_input("schedule.beta_schedule: expected linear | scaled_linear, got '" + kind + "'");
    }
  }
  return betas;
}

std::vector<double> alphas_cumprod_from_betas(const std::vector<double>& betas) {
  std::vector<double> out(betas.size());
  double log_acp = 0.0;
  for (size_t i = 0; i < betas.size(); ++i) {
    if (!(betas[i] > 0.0 && betas[i] < 1.0))
      bad_input("schedule.betas: every beta must lie in (0, 1); entry " + std::to_string(i) + " is " +
                std::to_string(betas[i]));
    log_acp += std::log1p(-betas[i]);
    out[i] = std::exp(log_acp);
  }
  return out;
}

std::unique_ptr<Schedule> make_vp_discrete(const std::vector<double>& alphas_cumprod) {
  if (alphas_cumprod.size() < 2) bad_input("schedule: vp_discrete needs at least 2 alphas_cumprod entries");
  std::vector<double> log_alphas;
  for (size_t i = 0; i < alphas_cumprod.size(); ++i) {
    const double a = alphas_cumprod[i];
    if (!(a > 0.0 && a < 1.0))
      bad_input("schedule.alphas_cumprod: entry " + std::to_string(i) + " must lie in (0, 1)");
    if (i > 0 && !(a < alphas_cumprod[i - 1]))
      bad_input("schedule.alphas_cumprod: must be strictly decreasing (entry " + std::to_string(i) + ")");
    const double la = 0.5 * std::log(a);
    // numerical_clip_alpha: drop the tail where lambda < -5.1 (its lambda is
    // too low to matter and makes the inverse ill-conditioned).
    if (vp_lambda(la) < -5.1) break;
    log_alphas.push_back(la);
  }
  if (log_alphas.size() < 2) bad_input("schedule: vp_discrete has fewer than 2 steps with lambda >= -5.1");
  return std::make_unique<VpDiscrete>(std::move(log_alphas));
}

std::unique_ptr<Schedule> make_vp_cosine(double s) {
  if (!(s > 0.0 && s < 1.0)) bad_input("schedule.s: vp_cosine needs 0 < s < 1");
  return std::make_unique<VpCosine>(s);
}

std::unique_ptr<Schedule> make_edm(double sigma_min, double sigma_max) {
  if (!(sigma_min > 0.0) || !(sigma_max > sigma_min))
    bad_input("schedule: edm needs 0 < sigma_min < sigma_max");
  return std::make_unique<Edm>(sigma_min, sigma_max);
}

}  // namespace scorch
