#include "scorch/schedule.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>

#include "scorch/error.h"

namespace scorch {

double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

double Schedule::alpha(double t) const { return std::exp(log_alpha(t)); }
double Schedule::timestep(double t) const {
  const double n = num_train_steps();
  return (t - 1.0 / n) * n;
}
double Schedule::ve_sigma(double t) const { return std::exp(-lambda(t)); }
double Schedule::t_of_ve_sigma(double s) const { return inverse_lambda(-std::log(s)); }

namespace {

// For VP schedules sigma and lambda follow from log alpha alone:
// sigma^2 = 1 - alpha^2 and lambda = log alpha - log sigma.
double vp_sigma(double log_alpha) { return std::sqrt(-std::expm1(2.0 * log_alpha)); }
double vp_lambda(double log_alpha) { return log_alpha - 0.5 * std::log(-std::expm1(2.0 * log_alpha)); }
// Inverse of vp_lambda: log alpha = -1/2 log(1 + exp(-2 lambda)).
double vp_log_alpha_of_lambda(double lambda) { return -0.5 * softplus(-2.0 * lambda); }

// For VP schedules, alpha' = alpha (log alpha)' and sigma' = -alpha alpha' / sigma.
double vp_d_alpha(double log_alpha, double d_log_alpha) { return std::exp(log_alpha) * d_log_alpha; }
double vp_d_sigma(double log_alpha, double d_log_alpha) {
  return -std::exp(2.0 * log_alpha) * d_log_alpha / vp_sigma(log_alpha);
}

// The slope of the segment interpolate() uses at x.
double interpolate_slope(double x, const std::vector<double>& xp, const std::vector<double>& yp) {
  const size_t n = xp.size();
  if (n == 1) return 0.0;
  size_t i = std::upper_bound(xp.begin(), xp.end(), x) - xp.begin();
  i = std::clamp<size_t>(i, 1, n - 1);
  return (yp[i] - yp[i - 1]) / (xp[i] - xp[i - 1]);
}

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
  double d_log_alpha(double t) const { return -0.5 * t * (b1_ - b0_) - 0.5 * b0_; }
  double d_alpha(double t) const override { return vp_d_alpha(log_alpha(t), d_log_alpha(t)); }
  double d_sigma(double t) const override { return vp_d_sigma(log_alpha(t), d_log_alpha(t)); }
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
  // log_alphas: the entries kept; zero_last: one more entry follows with alpha = 0.
  VpDiscrete(std::vector<double> log_alphas, bool zero_last, std::string spacing)
      : log_alpha_(std::move(log_alphas)), zero_last_(zero_last), spacing_(std::move(spacing)) {
    const size_t n = log_alpha_.size() + (zero_last_ ? 1 : 0);
    t_.resize(log_alpha_.size());
    for (size_t i = 0; i < t_.size(); ++i) t_[i] = double(i + 1) / double(n);
    flipped_log_alpha_.assign(log_alpha_.rbegin(), log_alpha_.rend());
    flipped_t_.assign(t_.rbegin(), t_.rend());
  }
  // Past the last finite entry (zero terminal SNR): alpha linear in t down to 0 at t = 1.
  bool in_last(double t) const { return zero_last_ && t > t_.back(); }
  double last_w(double t) const { return (t - t_.back()) / (1.0 - t_.back()); }
  double log_alpha(double t) const override {
    if (in_last(t)) return log_alpha_.back() + std::log1p(-std::min(1.0, last_w(t)));
    return interpolate(t, t_, log_alpha_);
  }
  double sigma(double t) const override { return vp_sigma(log_alpha(t)); }
  double lambda(double t) const override { return vp_lambda(log_alpha(t)); }
  double d_alpha(double t) const override {
    if (in_last(t)) return -std::exp(log_alpha_.back()) / (1.0 - t_.back());
    return vp_d_alpha(log_alpha(t), interpolate_slope(t, t_, log_alpha_));
  }
  double d_sigma(double t) const override {
    return -std::exp(log_alpha(t)) * d_alpha(t) / sigma(t);
  }
  double inverse_lambda(double lambda) const override {
    const double la = vp_log_alpha_of_lambda(lambda);
    if (zero_last_ && la < log_alpha_.back())
      return t_.back() + (1.0 - t_.back()) * (1.0 - std::exp(la - log_alpha_.back()));
    return interpolate(la, flipped_log_alpha_, flipped_t_);
  }
  double t_max() const override { return zero_last_ ? 1.0 : t_.back(); }
  double t_min() const override { return t_.front(); }
  int num_train_steps() const override { return int(t_.size()) + (zero_last_ ? 1 : 0); }
  // Zero terminal SNR has lambda = -inf at t = 1, where a logSNR grid cannot start: trailing,
  // as Lin et al. (2024) pair them.
  std::string default_skip_type() const override {
    return !spacing_.empty() ? spacing_ : (zero_last_ ? "trailing" : "logSNR");
  }
  std::string name() const override { return "vp_discrete"; }

 private:
  std::vector<double> log_alpha_, t_, flipped_log_alpha_, flipped_t_;
  bool zero_last_;
  std::string spacing_;
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
  double d_log_alpha(double t) const { return -std::tan((t + s_) / (1.0 + s_) * M_PI / 2.0) * M_PI / (2.0 * (1.0 + s_)); }
  double d_alpha(double t) const override { return vp_d_alpha(log_alpha(t), d_log_alpha(t)); }
  double d_sigma(double t) const override { return vp_d_sigma(log_alpha(t), d_log_alpha(t)); }
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
  double d_alpha(double) const override { return 0.0; }
  double d_sigma(double) const override { return 1.0; }
  double inverse_lambda(double lambda) const override { return std::exp(-lambda); }
  double t_max() const override { return smax_; }
  double t_min() const override { return smin_; }
  std::string name() const override { return "edm"; }

 private:
  double smin_, smax_;
};

// Rectified flow: alpha = 1 - t, sigma = t on [0, 1]; lambda = log((1 - t) / t) is -inf at
// t = 1 and +inf at t = 0, which the samplers' endpoint steps handle (sampler.cpp).
class Flow final : public Schedule {
 public:
  // shift(u) and its inverse.
  Flow(std::function<double(double)> shift, std::function<double(double)> unshift, int n, bool dynamic)
      : shift_(std::move(shift)), unshift_(std::move(unshift)), n_(n), dynamic_(dynamic) {}
  double log_alpha(double t) const override { return std::log1p(-t); }
  double sigma(double t) const override { return t; }
  double lambda(double t) const override { return std::log1p(-t) - std::log(t); }
  // t = 1 / (1 + e^lambda): 1 at lambda = -inf, 0 at +inf.
  double inverse_lambda(double lambda) const override { return 1.0 / (1.0 + std::exp(lambda)); }
  double d_alpha(double) const override { return -1.0; }
  double d_sigma(double) const override { return 1.0; }
  double t_max() const override { return 1.0; }
  double t_min() const override { return 0.0; }
  int num_train_steps() const override { return n_; }
  double timestep(double t) const override { return double(n_) * t; }
  double shift_time(double u) const override { return shift_(u); }
  double unshift_time(double t) const override { return unshift_(t); }
  bool integrates_in_time() const override { return true; }
  double flow_match_u_min() const override { return dynamic_ ? 1.0 / n_ : shift_(1.0 / n_); }
  std::string default_skip_type() const override { return "flow_match"; }
  std::string name() const override { return "flow"; }

 private:
  std::function<double(double)> shift_, unshift_;
  int n_;
  bool dynamic_;
};

}  // namespace

std::unique_ptr<Schedule> make_flow(double shift, int n) {
  if (!(shift > 0.0) || !std::isfinite(shift))
    bad_input("schedule.shift: expected a positive number, got " + std::to_string(shift));
  if (n < 2) bad_input("schedule.num_train_steps: expected an integer >= 2, got " + std::to_string(n));
  // t = s u / (1 + (s - 1) u)  <=>  u = t / (s - (s - 1) t)
  return std::make_unique<Flow>([shift](double u) { return shift * u / (1.0 + (shift - 1.0) * u); },
                                [shift](double t) { return t / (shift - (shift - 1.0) * t); }, n, false);
}

std::unique_ptr<Schedule> make_flow_dynamic(double mu, int n) {
  if (!std::isfinite(mu)) bad_input("schedule: the dynamic shift's mu is not finite");
  if (n < 2) bad_input("schedule.num_train_steps: expected an integer >= 2, got " + std::to_string(n));
  // t = e^mu / (e^mu + 1/u - 1)  <=>  u = 1 / (1 + e^mu (1/t - 1))
  const double e = std::exp(mu);
  return std::make_unique<Flow>([e](double u) { return u <= 0.0 ? 0.0 : e / (e + 1.0 / u - 1.0); },
                                [e](double t) { return t <= 0.0 ? 0.0 : 1.0 / (1.0 + e * (1.0 / t - 1.0)); }, n, true);
}

double flux_mu(double image_seq_len, double base_seq_len, double max_seq_len, double base_shift, double max_shift) {
  if (!(max_seq_len > base_seq_len))
    bad_input("schedule.max_image_seq_len: expected more than base_image_seq_len");
  const double m = (max_shift - base_shift) / (max_seq_len - base_seq_len);
  return image_seq_len * m + (base_shift - m * base_seq_len);
}

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
    // A last beta of 1 is a zero-terminal-SNR schedule (alphas_cumprod ends at 0).
    const bool terminal = i + 1 == betas.size() && betas[i] == 1.0;
    if (!(betas[i] > 0.0 && betas[i] < 1.0) && !terminal)
      bad_input("schedule.betas: every beta must lie in (0, 1) (the last may be 1); entry " + std::to_string(i) +
                " is " + std::to_string(betas[i]));
    log_acp += std::log1p(-betas[i]);
    out[i] = std::exp(log_acp);
  }
  return out;
}

std::unique_ptr<Schedule> make_vp_discrete(const std::vector<double>& alphas_cumprod, const std::string& spacing) {
  if (alphas_cumprod.size() < 2) bad_input("schedule: vp_discrete needs at least 2 alphas_cumprod entries");
  if (!spacing.empty() && spacing != "linspace" && spacing != "leading" && spacing != "trailing")
    bad_input("schedule.timestep_spacing: expected linspace | leading | trailing, got '" + spacing + "'");
  const size_t n = alphas_cumprod.size();
  const bool zero_last = alphas_cumprod.back() == 0.0;
  std::vector<double> log_alphas;
  for (size_t i = 0; i < n; ++i) {
    const double a = alphas_cumprod[i];
    if (zero_last && i + 1 == n) break;
    if (!(a > 0.0 && a < 1.0))
      bad_input("schedule.alphas_cumprod: entry " + std::to_string(i) + " must lie in (0, 1)" +
                (i + 1 == n ? " (or be exactly 0: zero terminal SNR)" : ""));
    if (i > 0 && !(a < alphas_cumprod[i - 1]))
      bad_input("schedule.alphas_cumprod: must be strictly decreasing (entry " + std::to_string(i) + ")");
    const double la = 0.5 * std::log(a);
    // numerical_clip_alpha: drop the tail where lambda < -5.1 (its lambda is too low to
    // matter and makes the inverse ill-conditioned); a zero-terminal-SNR schedule keeps all.
    if (!zero_last && vp_lambda(la) < -5.1) break;
    log_alphas.push_back(la);
  }
  if (log_alphas.size() < 2) bad_input("schedule: vp_discrete has fewer than 2 steps with lambda >= -5.1");
  return std::make_unique<VpDiscrete>(std::move(log_alphas), zero_last, spacing);
}

std::vector<double> spaced_timesteps(const std::string& spacing, int n, int steps) {
  if (steps < 1 || steps >= n)
    bad_input("sampler.steps: timestep_spacing needs 1 <= steps < num_train_steps (" + std::to_string(n) + ")");
  std::vector<double> k;
  if (spacing == "linspace") {
    for (int i = steps; i >= 1; --i) k.push_back(std::nearbyint(double(n - 1) * i / steps));
  } else if (spacing == "leading") {
    const int ratio = n / (steps + 1);
    for (int i = steps; i >= 1; --i) k.push_back(double(i * ratio));
  } else if (spacing == "trailing") {
    const double ratio = double(n) / steps;
    for (int i = 0; i < steps; ++i) k.push_back(std::nearbyint(n - i * ratio) - 1.0);
  } else {
    bad_input("timestep_spacing: expected linspace | leading | trailing, got '" + spacing + "'");
  }
  return k;
}

std::vector<double> rescale_zero_terminal_snr(const std::vector<double>& betas) {
  const std::vector<double> abar = alphas_cumprod_from_betas(betas);
  std::vector<double> r(abar.size());
  const double a0 = std::sqrt(abar.front()), aT = std::sqrt(abar.back());
  for (size_t i = 0; i < abar.size(); ++i) {
    const double v = (std::sqrt(abar[i]) - aT) * a0 / (a0 - aT);
    r[i] = v * v;
  }
  std::vector<double> out(r.size());
  out[0] = 1.0 - r[0];
  for (size_t i = 1; i < r.size(); ++i) out[i] = 1.0 - r[i] / r[i - 1];
  return out;
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
