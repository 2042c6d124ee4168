// Noise schedules of the form x_t = alpha(t) x_0 + sigma(t) eps, in double.
// (The rectified-flow schedule is one of them: alpha = 1 - t, sigma = t.)
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
  // d alpha / dt and d sigma / dt: a velocity prediction (d x_t / dt) converts with them.
  virtual double d_alpha(double t) const = 0;
  virtual double d_sigma(double t) const = 0;
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
  // The discrete timestep a network trained on this schedule takes (model.time_input:
  // index): the DDPM index (t - 1/N) N, or for flow diffusers' timestep N t (SD3).
  virtual double timestep(double t) const;
  // The time shift applied to grids spaced in t (time_uniform, time_quadratic,
  // flow_match), and its inverse: the identity except for flow's shift.
  virtual double shift_time(double u) const { return u; }
  virtual double unshift_time(double t) const { return t; }
  // Whether the k-diffusion-style samplers (euler, heun, ipndm) integrate the PF-ODE in t
  // on x itself, dx/dt = alpha' x0 + sigma' eps (flow: the velocity, as diffusers'
  // FlowMatchEuler/Heun do), rather than in VE sigma on x / alpha (Karras et al. 2022).
  virtual bool integrates_in_time() const { return false; }
  // The smallest unshifted time of diffusers' flow-matching grid (its scheduler's
  // sigma_min): shift(1/N) for a fixed shift (diffusers shifts it again on the grid), 1/N
  // with the dynamic shift; 0 for schedules that are not flows.
  virtual double flow_match_u_min() const { return 0.0; }
  // The time grid a sampler uses when skip_type is `auto`.
  virtual std::string default_skip_type() const { return "logSNR"; }
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
//
// A last entry of exactly 0 (zero terminal SNR) is kept: nothing is clipped, alpha falls
// linearly in t to 0 on the last interval, and samplers start at t = 1 with alpha = 0.
// `spacing` (linspace | leading | trailing, or empty) is the grid `skip_type: auto` gives.
std::unique_ptr<Schedule> make_vp_discrete(const std::vector<double>& alphas_cumprod,
                                           const std::string& spacing = "");
// diffusers' timestep_spacing (DPMSolverMultistepScheduler.set_timesteps) for N training
// steps and S inference steps, from the top: the S timesteps, all above 0, after which the
// sampler ends at t_end (index 0: final_sigmas_type "sigma_min"):
//   linspace: round(linspace(0, N - 1, S + 1)) reversed, the last dropped (999, 899, ..., 100)
//   leading:  k (N / (S + 1)) for k = S .. 1, integer division (900, 810, ..., 90)
//   trailing: round(arange(N, 0, -N / S)) - 1 (999, 899, ..., 99; Lin et al. 2024, Table 2)
std::vector<double> spaced_timesteps(const std::string& spacing, int num_train_steps, int steps);
// Lin et al. (2024), Alg. 1: rescale sqrt(alphas_cumprod) so that its last entry is 0 and
// its first unchanged; returns the betas of the rescaled schedule (the last beta is 1).
std::vector<double> rescale_zero_terminal_snr(const std::vector<double>& betas);
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

// Rectified flow (Liu et al. 2023; Esser et al. 2024): x_t = (1 - t) x_0 + t z on [0, 1],
// so alpha = 1 - t, sigma = t, lambda = log((1 - t) / t): -inf at t = 1 (pure noise), +inf
// at t = 0 (data). Grids spaced in t are shifted as SD3 does,
//   t = shift u / (1 + (shift - 1) u),
// and N (num_train_steps, diffusers' num_train_timesteps) sets the network's timestep N t.
std::unique_ptr<Schedule> make_flow(double shift = 1.0, int num_train_steps = 1000);
// The same with Flux's resolution-dependent exponential shift (diffusers' time_shift with
// sigma = 1): t = e^mu / (e^mu + 1/u - 1), mu = flux_mu(...).
std::unique_ptr<Schedule> make_flow_dynamic(double mu, int num_train_steps = 1000);
// Flux's mu (diffusers' calculate_shift): linear in the number of latent tokens between
// (base_seq_len, base_shift) and (max_seq_len, max_shift).
double flux_mu(double image_seq_len, double base_seq_len = 256, double max_seq_len = 4096, double base_shift = 0.5,
               double max_shift = 1.15);

}  // namespace scorch
