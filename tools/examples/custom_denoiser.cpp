// Example: embed scorch's sampler API from C++ with your own denoiser, no YAML, no model file.
//
// The "network" is a C++ lambda: the exact data prediction of a Gaussian data set
// N(mu, s^2 I) in D dimensions, x0(x_t) = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu).
// Any registered sampler runs on it; the probability-flow ODE of this target has the
// closed-form solution
//   x_0 = mu + s / sqrt(alpha_T^2 s^2 + sigma_T^2) (x_T - alpha_T mu)     (at t = t_end, to O(sigma_end)),
// so the example checks the samplers' answers against it.
// Usage: custom_denoiser [SAMPLER [STEPS]]   (build: tools/examples/CMakeLists.txt)
#include <ATen/ATen.h>
#include <scorch/sampler.h>
#include <scorch/error.h>

#include <cmath>
#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  const std::string name = argc > 1 ? argv[1] : "dpmpp_2m";
  const std::string steps = argc > 2 ? argv[2] : "20";
  const int64_t D = 16, batch = 64;
  const double s = 0.5;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor mu = at::linspace(-1.0, 1.0, D, f64);

  try {
    std::shared_ptr<const scorch::Schedule> schedule = scorch::make_vp_linear();  // beta in [0.1, 20]
    scorch::FunctionDenoiser denoiser(
        [&](const at::Tensor& x, double t) {
          const double a = schedule->alpha(t), sigma = schedule->sigma(t);
          return mu + (a * s * s / (a * a * s * s + sigma * sigma)) * (x - a * mu);
        },
        scorch::PredictionType::X0, schedule, {D});

    // The sampler and its options, as `scorch samplers` lists them.
    const scorch::SamplerEntry& entry = scorch::samplers().find(name);
    const scorch::Options options = scorch::parse_sampler_options(entry, {{"steps", steps}});
    std::unique_ptr<scorch::Sampler> sampler = entry.make(options);
    const scorch::TimeGrid grid = scorch::build_time_grid(*schedule, scorch::grid_spec(options));

    scorch::Rng rng(0);
    const at::Tensor x_T = rng.normal({batch, D}, f64) * schedule->sigma(grid.t.front());
    scorch::SamplerContext ctx(denoiser, *schedule, rng);
    const at::Tensor x_0 = sampler->run(ctx, x_T, grid);

    const double aT = schedule->alpha(grid.t.front()), sT = schedule->sigma(grid.t.front());
    const double a0 = schedule->alpha(grid.t.back()), s0 = schedule->sigma(grid.t.back());
    const at::Tensor exact =
        a0 * mu + std::sqrt(a0 * a0 * s * s + s0 * s0) / std::sqrt(aT * aT * s * s + sT * sT) * (x_T - aT * mu);
    const double err = ((x_0 - exact).norm() / exact.norm()).item<double>();
    std::printf("%s, %s steps: %lld model calls, relative error against the exact flow %.3g\n", name.c_str(),
                steps.c_str(), (long long)ctx.nfe(), err);
    return err < 1e-2 ? 0 : 1;
  } catch (const scorch::Error& e) {
    std::fprintf(stderr, "custom_denoiser: %s\n", e.what());
    return 2;
  }
}
