// Noise schedules of the form x_t = alpha(t) x_0 + sigma(t) eps, in double.
//
// Every schedule provides log alpha(t), sigma(t), the half-logSNR
// lambda(t) = log alpha(t) - log sigma(t), and the inverse lambda -> t, as the
// official DPM-Solver's NoiseScheduleVP does (Lu et al. 2022, App. A). The EDM
// schedule (Karras et al. 2022) is the same with alpha = 1, sigma = t.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace scorch {

class Schedule {
 public:
  virtual ~Schedule() = default;

  virtual double log_alpha(double t) const = 0;
  virtual double sigma(double t) const = 0;
  virtual double lambda(double t) const = 0;
  virtual double inverse_lambda(double lambda) const = 0;

  double alpha(double t) const;
  // VE noise level sigma/alpha, the "sigma" of k-diffusion and EDM.
  double ve_sigma(double t) const;
  // t at which sigma/alpha equals the given VE sigma (lambda = -log sigma).
  double t_of_ve_sigma(double ve_sigma) const;

  // The time interval the schedule is defined on: [t_min, t_max]. Samplers run
  // from t_start (default t_max) down to t_end (default t_min).
  virtual double t_max() const = 0;
  virtual double t_min() const = 0;
  // Number of training steps N, used by model.time_input = index ((t - 1/N) N).
  virtual int num_train_steps() const { return 1000; }
  virtual std::string name() const = 0;
};

// log(1 + exp(x)) without overflow.
double softplus(double x);

// VP SDE with linear beta(t) = beta_0 + t (beta_1 - beta_0), t in [1e-3, 1]:
// log alpha_t = -t^2 (beta_1 - beta_0) / 4 - t beta_0 / 2.
std::unique_ptr<Schedule> make_vp_linear(double beta_0 = 0.1, double beta_1 = 20.0);

// Discrete DDPM schedule given alphas_cumprod (N entries). log alpha is
// interpolated piecewise linearly on t_i = (i + 1) / N, and trailing entries
// with lambda < -5.1 are clipped, as the official DPM-Solver does
// (numerical_clip_alpha).
std::unique_ptr<Schedule> make_vp_discrete(const std::vector<double>& alphas_cumprod);
// betas for beta_schedule = linear | scaled_linear.
std::vector<double> make_betas(const std::string& beta_schedule, double beta_start,
                               double beta_end, int num_train_steps);
std::vector<double> alphas_cumprod_from_betas(const std::vector<double>& betas);

// Continuous cosine schedule (Nichol & Dhariwal 2021), s = 0.008:
// log alpha_t = log cos((t + s)/(1 + s) pi/2) - log cos(s/(1 + s) pi/2).
// t_max is where lambda reaches -5.1 (the official clipping), t_min = 1e-3.
std::unique_ptr<Schedule> make_vp_cosine(double s = 0.008);

// EDM / VE: alpha = 1, sigma = t on [sigma_min, sigma_max].
std::unique_ptr<Schedule> make_edm(double sigma_min = 0.002, double sigma_max = 80.0);

}  // namespace scorch
