// Sampler benchmarks: accuracy against exact references and the solvers' own cost.
// Writes Markdown tables to stdout; tools/bench/bench.sh puts them in docs/benchmarks.md.
//
//   1. error vs NFE (5, 10, 20, 50) on a Gaussian-mixture target, float64, against a
//      float64 RK4 reference solve (8000 steps);
//   2. empirical convergence order from 48 to 192 steps, Gaussian and mixture targets;
//   3. adaptive DPM-Solver: NFE and error per tolerance;
//   4. stochastic samplers: sliced Wasserstein to exact mixture samples, against the floor;
//   5. cost per step of everything but the model (a free denoiser returning fixed
//      tensors), batch 64 x 784 float32 on CPU, as a ratio to a bare LibTorch loop
//      doing only the two tensor operations of a DDIM step, in the same run.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>

#include <cstring>

#include "scorch/ems.h"
#include "scorch/mixture_score.h"
#include "scorch/eval.h"
#include "scorch/mixture_model.h"
#include "support/random_gaussian.h"
#include "support/sampler_harness.h"

using namespace scorch;
using Opts = std::map<std::string, std::string>;

namespace {

struct Solver {
  std::string label, name;
  Opts opts;
  int nfe_per_step = 1;
  bool ode = true;  // false: stochastic, in the cost and distribution tables only
};

const std::vector<Solver>& solvers() {
  static const std::vector<Solver> list = {
      {"ddim", "ddim", {}},
      {"euler", "euler", {}},
      {"heun", "heun", {}, 2},
      {"dpm_solver multistep 2 (noise)", "dpm_solver", {{"algorithm_type", "dpmsolver"}, {"order", "2"}}},
      {"dpm_solver multistep 3 (noise)", "dpm_solver", {{"algorithm_type", "dpmsolver"}, {"order", "3"}}},
      {"dpm_solver_3s (singlestep 3, noise)", "dpm_solver_3s", {}},
      {"dpm_solver singlestep_fixed 2 (noise)", "dpm_solver", {{"algorithm_type", "dpmsolver"}, {"method", "singlestep_fixed"}}},
      {"dpm_solver singlestep_fixed 3 (noise)", "dpm_solver",
       {{"algorithm_type", "dpmsolver"}, {"method", "singlestep_fixed"}, {"order", "3"}}},
      {"dpmpp_2m", "dpmpp_2m", {}},
      {"dpmpp_3m", "dpmpp_3m", {}},
      {"dpmpp_2s", "dpmpp_2s", {}},
      {"dpm_solver++ singlestep 3", "dpm_solver", {{"method", "singlestep"}, {"order", "3"}}},
      {"dpmpp_2m taylor", "dpmpp_2m", {{"solver_type", "taylor"}}},
      {"dpmpp_2m_sde eta=0", "dpmpp_2m_sde", {{"eta", "0"}}},
      {"dpmpp_3m_sde eta=0", "dpmpp_3m_sde", {{"eta", "0"}}},
      {"unipc bh1 order 2", "unipc", {}},
      {"unipc bh2 order 2", "unipc", {{"variant", "bh2"}}},
      {"unipc bh1 order 3", "unipc", {{"order", "3"}}},
      {"unipc bh2 order 3", "unipc", {{"variant", "bh2"}, {"order", "3"}}},
      {"lms order 4", "lms", {}},
      {"dpm_2", "dpm_2", {}, 2},
      {"ipndm", "ipndm", {}},
      {"deis order 3", "deis", {}},
      {"res_multistep", "res_multistep", {}},
      {"er_sde ode, 3 stages", "er_sde", {{"solver_type", "ode"}}},
      {"sa_solver eta=0 (3, 4)", "sa_solver", {{"eta", "0"}}},
      {"sa_solver eta=0 (3, 4) pece", "sa_solver", {{"eta", "0"}, {"use_pece", "true"}}, 2},
      {"euler_cfg_pp (no guidance)", "euler_cfg_pp", {}},
      {"dpmpp_2m_cfg_pp (no guidance)", "dpmpp_2m_cfg_pp", {}},
      {"ddpm", "ddpm", {}, 1, false},
      {"euler_ancestral", "euler_ancestral", {}, 1, false},
      {"dpm_2_ancestral", "dpm_2_ancestral", {}, 2, false},
      {"dpmpp_2s_ancestral", "dpmpp_2s_ancestral", {}, 2, false},
      {"dpmpp_sde", "dpmpp_sde", {}, 2, false},
      {"dpmpp_2m_sde", "dpmpp_2m_sde", {}, 1, false},
      {"dpmpp_3m_sde", "dpmpp_3m_sde", {}, 1, false},
      {"res_multistep_ancestral", "res_multistep_ancestral", {}, 1, false},
      {"er_sde", "er_sde", {}, 1, false},
      {"er_sde reverse_time_sde", "er_sde", {{"solver_type", "reverse_time_sde"}}, 1, false},
      {"sa_solver", "sa_solver", {}, 1, false},
      {"restart", "restart", {}, 2, false},
      {"lcm", "lcm", {}, 1, false},
      {"tcd gamma=0.3", "tcd", {}, 1, false},
  };
  return list;
}

testing::Target big_mixture() {
  testing::Target c;
  c.t_end = 1e-3;
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Generator gen = at::detail::createCPUGenerator(7);
  const int64_t k = 8, d = 16;
  testing::DiagonalMixture mix{at::softmax(at::randn({k}, gen, f64), 0), at::randn({k, d}, gen, f64) * 1.5,
                               at::rand({k, d}, gen, f64) * 0.3 + 0.02};
  c.model = testing::make_mixture_denoiser(mix, c.sched);
  c.x_T = Rng(1).normal({256, d}, f64);
  c.reference = testing::reference_solve(*c.model, *c.sched, c.x_T, 1.0, c.t_end, 8000);
  return c;
}

double error_at(const Solver& s, testing::Target& c, int steps, int64_t* nfe = nullptr) {
  Opts o = s.opts;
  o["steps"] = std::to_string(steps);
  o["t_end"] = std::to_string(c.t_end);
  const testing::Run r = testing::run_sampler(s.name, *c.model, *c.sched, c.x_T, o);
  if (nfe) *nfe = r.nfe;
  return testing::rel_error(r.x, c.reference);
}

// A denoiser that costs nothing: fixed tensors.
class FreeDenoiser final : public Denoiser {
 public:
  explicit FreeDenoiser(const at::Tensor& like) : x0_(at::randn_like(like) * 0.5), eps_(at::randn_like(like)) {}
  Prediction predict(const at::Tensor&, double, const at::Tensor&) override { return {x0_, eps_}; }
  std::vector<int64_t> sample_shape() const override { return {x0_.size(1)}; }

 private:
  at::Tensor x0_, eps_;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Resident-set bytes from /proc/self/status ("VmRSS" now, "VmHWM" the peak).
int64_t status_bytes(const char* key) {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  char line[256];
  int64_t kb = -1;
  while (f && std::fgets(line, sizeof line, f))
    if (std::strncmp(line, key, std::strlen(key)) == 0) kb = std::atoll(line + std::strlen(key) + 1);
  if (f) std::fclose(f);
  return kb * 1024;
}

// Peak extra resident memory of fn (resets the peak with /proc/self/clear_refs).
template <typename F>
double peak_extra_mib(F&& fn) {
  if (std::FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
  const int64_t base = status_bytes("VmRSS:");
  fn();
  return double(status_bytes("VmHWM:") - base) / (1 << 20);
}

void bench_mixture_kernel() {
  std::printf("\n### Mixture posterior kernel vs the plain LibTorch formulation, float32\n\n");
  std::printf("Plain: logits from one matrix product x . mu^T plus the norm terms, softmax over the N x K logits, "
              "matrix product. Kernel: `mixture_posterior` (default blocks: about 1M logits, online log-sum-exp). "
              "Median of 3 runs; peak extra memory from VmHWM.\n\n");
  std::printf("| N, K, D | plain ms | kernel ms | speed-up | plain peak MiB | kernel peak MiB |\n|---|---|---|---|---|---|\n");
  struct Case {
    int64_t n, k, d;
    bool fmnist;
  };
  for (const Case c : {Case{256, 60000, 784, true}, Case{4096, 100000, 16, false}}) {
    IsotropicMixture m;
    if (c.fmnist) {
      m.means = read_idx("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
                    .reshape({c.k, c.d}).to(at::kFloat).div_(127.5).sub_(1.0);
    } else {
      m.means = at::randn({c.k, c.d});
    }
    m.log_weights = at::full({c.k}, -std::log(double(c.k)));
    m.variances = at::zeros({c.k});
    const double alpha = 0.8, sigma = 0.6;
    const at::Tensor x = alpha * m.means.narrow(0, 0, c.n) + sigma * at::randn({c.n, c.d});
    std::vector<double> tp, tk;
    double mem_p = 0, mem_k = 0;
    for (int r = 0; r < 3; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      mem_p = peak_extra_mib([&] { mixture_posterior_reference(m, x, alpha, sigma); });
      tp.push_back(seconds_since(t0));
      t0 = std::chrono::steady_clock::now();
      mem_k = peak_extra_mib([&] { mixture_posterior(m, x, alpha, sigma); });
      tk.push_back(seconds_since(t0));
    }
    std::printf("| %lld, %lld, %lld%s | %.1f | %.1f | %.2fx | %.0f | %.0f |\n", (long long)c.n, (long long)c.k,
                (long long)c.d, c.fmnist ? " (Fashion-MNIST train)" : "", median(tp) * 1e3, median(tk) * 1e3,
                median(tp) / median(tk), mem_p, mem_k);
  }
}

// Stochastic samplers against exact samples of the mixture: sliced Wasserstein of 4000
// samples at t_end (from exact samples at t = 1), against the distance between two exact
// sets of the same size, means over 8 reference sets (the test Samplers.StochasticSamplers*).
void bench_stochastic() {
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  const int64_t n = 4000, d = 16;
  GaussianMixture m = testing::random_gmm(Covariance::LowRank, 31, 8, d, 4);
  m.means = m.means * 1.5;
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto model = make_mixture_denoiser({m, {d}, {}}, sched);
  auto exact = [&](uint64_t seed, double t) {
    return sched->alpha(t) * testing::sample_gmm(m, n, seed) +
           sched->sigma(t) * at::randn({n, d}, at::detail::createCPUGenerator(seed + 1000), f64);
  };
  auto sw = [&](const at::Tensor& x) {
    double s = 0.0;
    for (int j = 0; j < 8; ++j) s += testing::sliced_wasserstein(x, exact(100 + j, 1e-3), 128, 5) / 8;
    return s;
  };
  const double floor = sw(exact(200, 1e-3));
  std::printf("\n### Stochastic samplers: sliced Wasserstein to exact mixture samples\n\n");
  std::printf("8-component low-rank mixture in 16-d, 4000 samples from exact samples at t = 1 to t_end = 1e-3, "
              "logSNR grid. SW: mean over 8 exact reference sets; floor: an independent exact set, %.4f.\n\n", floor);
  std::printf("| sampler | 10 steps | 20 steps | 50 steps | 100 steps |\n|---|---|---|---|---|\n");
  for (const auto& s : solvers()) {
    if (s.ode) continue;
    std::printf("| %s |", s.label.c_str());
    for (int steps : {10, 20, 50, 100}) {
      Opts o = s.opts;
      o["steps"] = std::to_string(steps);
      o["t_end"] = "0.001";
      const at::Tensor x = testing::run_sampler(s.name, *model, *sched, exact(300, 1.0), o, 7).x;
      std::printf(" %.2fx |", sw(x) / floor);
    }
    std::printf("\n");
  }
}

}  // namespace

// DPM-Solver-v3 on the 16-d mixture: its statistics estimated by scorch's estimator from
// 4096 exact samples of the mixture on 64 grid intervals over the sampler's lambda range
// (the model is float64 here, so the central differences are accurate), against
// dpmpp_2m, dpmpp_3m and UniPC at every NFE from 5 to 10 and 20, and measured orders.
void bench_dpm_solver_v3() {
  testing::Target mix = big_mixture();
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Generator gen = at::detail::createCPUGenerator(7);
  const int64_t k = 8, d = 16, n = 4096;
  testing::DiagonalMixture m{at::softmax(at::randn({k}, gen, f64), 0), at::randn({k, d}, gen, f64) * 1.5,
                             at::rand({k, d}, gen, f64) * 0.3 + 0.02};  // big_mixture's, drawn again
  const at::Tensor comp = at::multinomial(m.weights, n, true, at::detail::createCPUGenerator(3));
  const at::Tensor x0 = m.means.index_select(0, comp) +
                        m.variances.index_select(0, comp).sqrt() * at::randn({n, d}, at::detail::createCPUGenerator(4), f64);
  EmsEstimate o;
  o.grid = 64;
  o.lambda_min = mix.sched->lambda(1.0);
  o.lambda_max = mix.sched->lambda(mix.t_end);
  o.batch = 4096;
  const auto t0 = std::chrono::steady_clock::now();
  const Ems ems = estimate_ems(*mix.model, *mix.sched, x0, {}, o);
  const double est_s = seconds_since(t0);
  const std::string path = "/tmp/scorch_bench_v3_" + std::to_string(::getpid()) + ".safetensors";
  write_ems(path, ems);
  std::printf("\n### DPM-Solver-v3, 8-component Gaussian mixture in 16-d (256 samples)\n\n");
  std::printf("EMS: %lld exact samples, %lld grid points over lambda [%.2f, %.2f], estimated in %.1f s (%lld model "
              "calls per sample and grid point: 3 Jacobian-vector products and 3 evaluations).\n\n",
              (long long)n, (long long)ems.points(), o.lambda_min, o.lambda_max, est_s, 9LL);
  const std::vector<Solver> rows = {
      {"dpmpp_2m", "dpmpp_2m", {}},
      {"dpmpp_3m", "dpmpp_3m", {}},
      {"unipc bh1 order 2", "unipc", {}},
      {"unipc bh2 order 3", "unipc", {{"variant", "bh2"}, {"order", "3"}}},
      {"dpm_solver_v3 order 2 (trivial statistics)", "dpm_solver_v3", {{"degenerated", "true"}}},
      {"dpm_solver_v3 order 2", "dpm_solver_v3", {{"stats", path}}},
      {"dpm_solver_v3 order 3", "dpm_solver_v3", {{"stats", path}, {"order", "3"}}},
      {"dpm_solver_v3 order 3, p_pseudo, c_pseudo", "dpm_solver_v3",
       {{"stats", path}, {"order", "3"}, {"p_pseudo", "true"}, {"c_pseudo", "true"}}},
      {"dpm_solver_v3 order 2, no corrector", "dpm_solver_v3", {{"stats", path}, {"use_corrector", "false"}}},
  };
  std::printf("| solver | NFE 5 | NFE 6 | NFE 7 | NFE 8 | NFE 9 | NFE 10 | NFE 20 | order (48 to 192) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& s : rows) {
    std::printf("| %s |", s.label.c_str());
    for (int nfe : {5, 6, 7, 8, 9, 10, 20}) std::printf(" %.2e |", error_at(s, mix, nfe));
    std::printf(" %.2f |\n", std::log2(error_at(s, mix, 48) / error_at(s, mix, 192)) / 2.0);
  }
  std::remove(path.c_str());
}

int main(int argc, char** argv) {
  c10::InferenceMode guard;
  if (argc > 1 && std::strcmp(argv[1], "v3") == 0) {
    bench_dpm_solver_v3();
    return 0;
  }
  std::printf("Threads: %d. Targets: float64 under vp_linear, logSNR grid, t_end = 1e-3.\n\n", at::get_num_threads());

  // 1. error vs NFE on the mixture
  testing::Target mix = big_mixture();
  std::printf("### Relative error vs NFE, 8-component Gaussian mixture in 16-d (256 samples)\n\n");
  std::printf("| solver | NFE 5 | NFE 10 | NFE 20 | NFE 50 |\n|---|---|---|---|---|\n");
  for (const auto& s : solvers()) {
    if (!s.ode) continue;
    std::printf("| %s |", s.label.c_str());
    for (int nfe : {5, 10, 20, 50}) {
      const int steps = nfe / s.nfe_per_step;
      if (steps < 3) {
        std::printf(" - |");
        continue;
      }
      int64_t used = 0;
      const double err = error_at(s, mix, steps, &used);
      std::printf(" %.2e%s |", err, used == nfe ? "" : (" (NFE " + std::to_string(used) + ")").c_str());
    }
    std::printf("\n");
  }

  // 2. convergence orders
  testing::Target gauss = testing::gaussian_target(1e-3);
  std::printf("\n### Empirical order, log2(err(n) / err(2n)) averaged from 48 to 192 steps\n\n");
  std::printf("| solver | Gaussian | mixture |\n|---|---|---|\n");
  for (const auto& s : solvers()) {
    if (!s.ode) continue;
    std::printf("| %s |", s.label.c_str());
    for (testing::Target* c : {&gauss, &mix})
      std::printf(" %.2f |", std::log2(error_at(s, *c, 48) / error_at(s, *c, 192)) / 2.0);
    std::printf("\n");
  }

  // 3. adaptive
  std::printf("\n### Adaptive DPM-Solver (atol = rtol = tol), mixture target\n\n");
  std::printf("| solver | tol | NFE | relative error |\n|---|---|---|---|\n");
  for (int order : {2, 3})
    for (const char* tol : {"1e-2", "1e-3", "1e-4"}) {
      const testing::Run r = testing::run_sampler(
          "dpm_adaptive", *mix.model, *mix.sched, mix.x_T,
          {{"order", std::to_string(order)}, {"atol", tol}, {"rtol", tol}, {"t_end", "0.001"}});
      std::printf("| DPM-Solver-%s | %s | %lld | %.2e |\n", order == 2 ? "12" : "23", tol, (long long)r.nfe,
                  testing::rel_error(r.x, mix.reference));
    }

  bench_stochastic();
  bench_mixture_kernel();

  // 4. cost per step
  const int steps = 200, reps = 7;
  const at::Tensor x_T = at::randn({64, 784});
  FreeDenoiser free_model(x_T);
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  std::vector<double> bare;
  for (int r = 0; r < reps; ++r) {
    const at::Tensor eps = at::randn_like(x_T);
    at::Tensor x = x_T.clone();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) x = at::add(x * (1.0 + 1e-3 * i), eps, -1e-3);
    bare.push_back(seconds_since(t0) / steps);
  }
  const double bare_s = median(bare);
  // What one step's noise costs: 64 x 784 normals from per-sample streams, as the samplers draw them.
  std::vector<double> draws;
  {
    std::vector<uint64_t> seeds(64);
    for (size_t i = 0; i < seeds.size(); ++i) seeds[i] = i;
    Rng rng = Rng::per_sample(seeds);
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 20; ++i) rng.normal({64, 784}, x_T.options());
      draws.push_back(seconds_since(t0) / 20);
    }
  }
  std::printf("\n### Cost per step without the model, batch 64 x 784 float32, %d steps\n\n", steps);
  std::printf("Bare loop (`x = at::add(x * a, eps, b)`): %.1f us/step.\n\n", bare_s * 1e6);
  std::printf("One step's noise (64 x 784 normals from the per-sample streams, `Rng::per_sample`): %.1f us, "
              "%.0fx the bare loop; the stochastic rows pay it once per step (twice for the two-stage ones).\n\n",
              median(draws) * 1e6, median(draws) / bare_s);
  std::printf("| solver | us/step | ratio to bare loop |\n|---|---|---|\n");
  for (const auto& s : solvers()) {
    std::vector<double> times;
    for (int r = 0; r < reps; ++r) {
      Opts o = s.opts;
      o["steps"] = std::to_string(steps);
      const auto t0 = std::chrono::steady_clock::now();
      testing::run_sampler(s.name, free_model, *sched, x_T, o);
      times.push_back(seconds_since(t0) / (steps * s.nfe_per_step) * s.nfe_per_step);
    }
    const double t = median(times);
    std::printf("| %s | %.1f | %.2f |\n", s.label.c_str(), t * 1e6, t / bare_s);
  }
  return 0;
}
