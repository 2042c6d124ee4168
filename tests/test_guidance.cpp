// Guidance on analytic models in float64: classifier-free guidance, score-mixture terms,
// classifier guidance with the exact classifier of a labelled mixture, composition
// (product, negation, mixture) and MCMC correctors against exact targets.
#include "scorch/guidance.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include "scorch/sampler.h"
#include "scorch/step_hooks.h"
#include "support/sampler_harness.h"
#include "scorch/error.h"
#include "scorch/gaussian.h"
#include "scorch/mixture_model.h"
#include "scorch/torchscript_denoiser.h"
#include "support/random_gaussian.h"

namespace scorch {
namespace {

using testing::kF64;

double max_abs(const at::Tensor& a) { return a.abs().max().item<double>(); }

// Three classes, one isotropic component each, in 4-d; label 3 is the whole mixture.
std::shared_ptr<Denoiser> labelled_mixture(std::shared_ptr<const Schedule> sched) {
  MixtureModel m;
  m.mixture = testing::random_gmm(Covariance::Isotropic, 3, 3, 4);
  m.mixture.means = m.mixture.means * 2.0;
  m.shape = {4};
  m.labels = at::arange(3);
  return make_mixture_denoiser(m, std::move(sched));
}

struct Sampled {
  at::Tensor x;
  int64_t nfe;
  std::vector<double> acceptance;
};

Sampled sample(const std::string& name, Denoiser& model, const Schedule& sched, const at::Tensor& x_T,
               const std::map<std::string, std::string>& opts, const at::Tensor& cond = {},
               const CorrectorSpec& corrector = {}, uint64_t seed = 0) {
  const SamplerEntry& entry = samplers().find(name);
  const Options o = read_sampler_options(entry, testing::sampler_section(opts), "sampler");
  Rng rng(seed);
  Sampled out;
  SamplerContext ctx(model, sched, rng, cond, [&](const StepInfo& s) {
    if (!std::isnan(s.acceptance)) out.acceptance.push_back(s.acceptance);
    return true;
  });
  if (!corrector.type.empty()) ctx.add_hook(std::make_shared<CorrectorHook>(corrector));
  out.x = entry.make(o)->run(ctx, x_T, build_time_grid(sched, grid_spec(o)));
  out.nfe = ctx.nfe();
  return out;
}

TEST(Guidance, WeightScheduleIsPiecewiseLinear) {
  const WeightSchedule w{{{0.2, 1.0}, {0.6, 3.0}}};
  EXPECT_DOUBLE_EQ(w.at(0.0), 1.0);
  EXPECT_DOUBLE_EQ(w.at(0.4), 2.0);
  EXPECT_DOUBLE_EQ(w.at(0.5), 2.5);
  EXPECT_DOUBLE_EQ(w.at(0.9), 3.0);
}

// eps = eps(x, null) + s (eps(x, c) - eps(x, null)) to 1e-12, in one batched call.
TEST(Guidance, ClassifierFreeMatchesFormulaInOneCall) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto base = labelled_mixture(sched);
  GuidanceSpec g;
  g.cfg_scale = 3.5;
  g.null_label = 3;
  auto guided = make_guided_denoiser(base, sched, g);
  const at::Tensor x = at::randn({6, 4}, at::detail::createCPUGenerator(1), kF64);
  const at::Tensor c = at::tensor({0, 1, 2, 0, 1, 2}, at::kLong), null = at::full({6}, 3, at::kLong);
  for (double t : {0.9, 0.5, 0.05}) {
    const at::Tensor e_c = base->predict(x, t, c).eps, e_u = base->predict(x, t, null).eps;
    const Prediction p = guided->predict(x, t, c);
    EXPECT_LT(max_abs(p.eps - (e_u + 3.5 * (e_c - e_u))), 1e-12) << "t = " << t;
    EXPECT_LT(max_abs(sched->alpha(t) * p.x0 + sched->sigma(t) * p.eps - x), 1e-12);
    EXPECT_EQ(guided->last_calls(), 1);
  }
  const Sampled r = sample("dpmpp_2m", *guided, *sched, at::randn({6, 4}, kF64), {{"steps", "10"}}, c);
  EXPECT_EQ(r.nfe, 10);  // one batched call per step, as unguided
}

// CFG++: without classifier-free guidance euler_cfg_pp is DDIM and dpmpp_2m_cfg_pp is
// DPM-Solver++(2M); with it, a step is alpha' D + sigma' eps_u, D the guided x0 and eps_u the
// unconditional noise, from the base model's two predictions.
TEST(Guidance, CfgPlusPlusStepsMatchTheirFormulas) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto base = labelled_mixture(sched);
  const at::Tensor x_T = at::randn({6, 4}, at::detail::createCPUGenerator(2), kF64);
  const at::Tensor c = at::tensor({0, 1, 2, 0, 1, 2}, at::kLong), null = at::full({6}, 3, at::kLong);
  const auto run = [&](const std::string& name, Denoiser& m, const std::map<std::string, std::string>& o) {
    return sample(name, m, *sched, x_T, o, c).x;
  };
  EXPECT_LT(max_abs(run("euler_cfg_pp", *base, {{"steps", "12"}}) - run("ddim", *base, {{"steps", "12"}})), 1e-12);
  EXPECT_LT(max_abs(run("dpmpp_2m_cfg_pp", *base, {{"steps", "12"}}) - run("dpmpp_2m", *base, {{"steps", "12"}})),
            1e-10);
  GuidanceSpec g;
  g.cfg_scale = 2.5;
  g.null_label = 3;
  auto guided = make_guided_denoiser(base, sched, g);
  const auto grid = make_time_grid(*sched, {"logSNR", 1, -1, -1, 7});
  const Prediction pc = base->predict(x_T, grid[0], c), pu = base->predict(x_T, grid[0], null);
  const at::Tensor d = pu.x0 + 2.5 * (pc.x0 - pu.x0);
  const at::Tensor want = sched->alpha(grid[1]) * d + sched->sigma(grid[1]) * pu.eps;
  EXPECT_LT(max_abs(run("euler_cfg_pp", *guided, {{"steps", "1"}}) - want), 1e-12);
  EXPECT_LT(max_abs(run("dpmpp_2m_cfg_pp", *guided, {{"steps", "1"}}) - want), 1e-12);
  // It is not plain CFG with DDIM (which re-noises with the guided eps).
  EXPECT_GT(max_abs(run("ddim", *guided, {{"steps", "1"}}) - want), 1e-5);
}

// Per-sample helpers for the variants' references, written with other ops than the code's.
at::Tensor flat(const at::Tensor& v) { return v.reshape({v.size(0), -1}); }
at::Tensor col(const at::Tensor& v) { return v.reshape({-1, 1}); }

// Classifier-free guidance at scale s on labelled_mixture (label 3 is the null).
GuidanceSpec cfg_spec(double s) {
  GuidanceSpec g;
  g.cfg_scale = s;
  g.null_label = 3;
  return g;
}

// guidance.rescale: diffusers' rescale_noise_cfg on eps, std unbiased over each sample.
TEST(GuidanceVariants, RescaleMatchesFormula) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto base = labelled_mixture(sched);
  GuidanceSpec g = cfg_spec(5.0);
  g.rescale = 0.7;
  auto guided = make_guided_denoiser(base, sched, g);
  const at::Tensor x = at::randn({6, 4}, at::detail::createCPUGenerator(3), kF64);
  const at::Tensor c = at::tensor({0, 1, 2, 0, 1, 2}, at::kLong), null = at::full({6}, 3, at::kLong);
  for (double t : {0.9, 0.5, 0.05}) {
    const at::Tensor e_c = base->predict(x, t, c).eps, e_u = base->predict(x, t, null).eps;
    const at::Tensor cfg = e_u + 5.0 * (e_c - e_u);
    const at::Tensor r = cfg * col(at::std(e_c, {1}, true) / at::std(cfg, {1}, true));
    const Prediction p = guided->predict(x, t, c);
    EXPECT_LT(max_abs(p.eps - (0.7 * r + 0.3 * cfg)), 1e-12) << "t = " << t;
    EXPECT_LT(max_abs(sched->alpha(t) * p.x0 + sched->sigma(t) * p.eps - x), 1e-12);
  }
}

// guidance.interval: classifier-free guidance for VE sigma in (lo, hi], the conditional
// prediction alone (and no unconditional rows) elsewhere.
TEST(GuidanceVariants, IntervalGuidesOnlyInside) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto base = labelled_mixture(sched);
  GuidanceSpec g = cfg_spec(3.0);
  g.interval_lo = 0.5;
  g.interval_hi = 2.0;
  auto guided = make_guided_denoiser(base, sched, g);
  const at::Tensor x = at::randn({6, 4}, at::detail::createCPUGenerator(4), kF64);
  const at::Tensor c = at::tensor({0, 1, 2, 0, 1, 2}, at::kLong), null = at::full({6}, 3, at::kLong);
  int inside = 0, outside = 0;
  for (double t : {0.95, 0.6, 0.4, 0.3, 0.2, 0.1, 0.02}) {
    const double ve = sched->ve_sigma(t);
    const at::Tensor e_c = base->predict(x, t, c).eps, e_u = base->predict(x, t, null).eps;
    const Prediction p = guided->predict(x, t, c);
    if (ve > 0.5 && ve <= 2.0) {
      ++inside;
      EXPECT_LT(max_abs(p.eps - (e_u + 3.0 * (e_c - e_u))), 1e-12) << "t = " << t;
    } else {
      ++outside;
      EXPECT_TRUE(at::equal(p.eps, e_c)) << "t = " << t;
    }
  }
  EXPECT_GT(inside, 0);
  EXPECT_GT(outside, 1);
}

// APG (Sadat et al. 2024, Alg. 1) on x0, over a run of decreasing times (the momentum
// buffer), and a new run (a later time) starts a new buffer.
TEST(GuidanceVariants, ApgMatchesAlgorithmOne) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto base = labelled_mixture(sched);
  const double s = 4.0, eta = 0.3, r = 1.5, beta = -0.5;
  GuidanceSpec g = cfg_spec(s);
  g.apg = {true, eta, r, beta};
  auto guided = make_guided_denoiser(base, sched, g);
  const at::Tensor x = at::randn({6, 4}, at::detail::createCPUGenerator(5), kF64) * 2.0;
  const at::Tensor c = at::tensor({0, 1, 2, 0, 1, 2}, at::kLong), null = at::full({6}, 3, at::kLong);
  for (int run = 0; run < 2; ++run) {
    at::Tensor avg;
    bool capped = false;
    for (double t : {0.8, 0.5, 0.3, 0.1}) {
      const at::Tensor d_c = base->predict(x, t, c).x0, d_u = base->predict(x, t, null).x0;
      avg = avg.defined() ? (d_c - d_u) + beta * avg : d_c - d_u;
      const at::Tensor norm = col(at::norm(flat(avg), 2, {1}));
      capped = capped || (norm > r).any().item<bool>();
      const at::Tensor diff = avg * at::minimum(at::ones_like(norm), r / norm);
      const at::Tensor v1 = d_c / col(at::norm(flat(d_c), 2, {1}));
      const at::Tensor par = col((diff * v1).sum(1)) * v1;
      const at::Tensor want = d_c + (s - 1.0) * ((diff - par) + eta * par);
      const Prediction p = guided->predict(x, t, c);
      EXPECT_LT(max_abs(p.x0 - want), 1e-12) << "run " << run << ", t = " << t;
      EXPECT_LT(max_abs(sched->alpha(t) * p.x0 + sched->sigma(t) * p.eps - x), 1e-12);
    }
    EXPECT_TRUE(capped);  // the threshold acted
  }
  // eta 1, no threshold, no momentum: plain classifier-free guidance.
  g.apg = {true, 1.0, 0.0, 0.0};
  auto plain_apg = make_guided_denoiser(base, sched, g);
  const at::Tensor e_c = base->predict(x, 0.4, c).eps, e_u = base->predict(x, 0.4, null).eps;
  EXPECT_LT(max_abs(plain_apg->predict(x, 0.4, c).eps - (e_u + s * (e_c - e_u))), 1e-12);
}

// CFG-Zero* (Fan et al. 2025): d = a d_u + s (d_c - a d_u), a = <d_c, d_u> / (||d_u||^2 + 1e-8),
// d = eps on a VP schedule and the velocity eps - x0 on a flow; d = 0 at the first step.
TEST(GuidanceVariants, CfgZeroStarMatchesFormula) {
  for (bool flow : {false, true}) {
    std::shared_ptr<const Schedule> sched = flow ? std::shared_ptr<const Schedule>(make_flow()) : make_vp_linear();
    auto base = labelled_mixture(sched);
    const double s = 3.0;
    GuidanceSpec g = cfg_spec(s);
    g.cfg_zero_star = {true, true, 1};
    auto guided = make_guided_denoiser(base, sched, g);
    const at::Tensor x = at::randn({6, 4}, at::detail::createCPUGenerator(6), kF64);
    const at::Tensor c = at::tensor({0, 1, 2, 0, 1, 2}, at::kLong), null = at::full({6}, 3, at::kLong);
    const std::vector<double> ts = flow ? std::vector<double>{1.0, 0.8, 0.5, 0.2} : std::vector<double>{0.9, 0.7, 0.4, 0.1};
    for (size_t i = 0; i < ts.size(); ++i) {
      const double t = ts[i];
      const Prediction p = guided->predict(x, t, c);
      const Prediction pc = base->predict(x, t, c), pu = base->predict(x, t, null);
      const at::Tensor dir = flow ? p.eps - p.x0 : p.eps;
      if (i <= 1) {  // zero_steps 1: steps 0 and 1, without a network call
        EXPECT_LT(max_abs(dir), 1e-12) << "t = " << t;
        EXPECT_EQ(guided->last_calls(), 0);
      } else {
        const at::Tensor d_c = flow ? pc.eps - pc.x0 : pc.eps, d_u = flow ? pu.eps - pu.x0 : pu.eps;
        const at::Tensor a = col((d_c * d_u).sum(1) / (d_u.pow(2).sum(1) + 1e-8));
        EXPECT_LT(max_abs(dir - (a * d_u + s * (d_c - a * d_u))), 1e-12) << "t = " << t;
        EXPECT_EQ(guided->last_calls(), 1);
      }
      EXPECT_LT(max_abs(sched->alpha(t) * p.x0 + sched->sigma(t) * p.eps - x), 1e-12);
    }
  }
}

// Every variant runs with samplers of each kind (multistep, two-stage, stochastic, CFG++),
// finite, and each changes the plain classifier-free result.
TEST(GuidanceVariants, RunWithEverySamplerKind) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto base = labelled_mixture(sched);
  const at::Tensor x_T = at::randn({6, 4}, at::detail::createCPUGenerator(7), kF64);
  const at::Tensor c = at::tensor({0, 1, 2, 0, 1, 2}, at::kLong);
  const GuidanceSpec plain = cfg_spec(4.0);
  std::vector<GuidanceSpec> variants(4, plain);
  variants[0].rescale = 0.7;
  variants[1].interval_lo = 0.3;
  variants[1].interval_hi = 3.0;
  variants[2].apg = {true, 0.0, 2.0, -0.5};
  variants[3].cfg_zero_star = {true, false, 0};  // zero-init is for flows
  for (const std::string name : {"dpmpp_2m", "heun", "dpmpp_sde", "euler_cfg_pp", "unipc"}) {
    const at::Tensor ref = sample(name, *make_guided_denoiser(base, sched, plain), *sched, x_T, {{"steps", "8"}}, c).x;
    for (size_t v = 0; v < variants.size(); ++v) {
      const at::Tensor out = sample(name, *make_guided_denoiser(base, sched, variants[v]), *sched, x_T, {{"steps", "8"}}, c).x;
      EXPECT_TRUE(at::isfinite(out).all().item<bool>()) << name << " variant " << v;
      EXPECT_GT(max_abs(out - ref), 1e-6) << name << " variant " << v;
    }
  }
}

// A weight-0 term, a term outside its window and an all-zero mask change nothing, bit for bit.
TEST(Guidance, InactiveTermsAreExactlyNoTerm) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto base = labelled_mixture(sched);
  const at::Tensor c = at::tensor({0, 1, 2, 0}, at::kLong);
  const at::Tensor x_T = at::randn({4, 4}, at::detail::createCPUGenerator(2), kF64);
  GuidanceSpec plain;
  plain.null_label = 3;
  const at::Tensor ref = sample("dpmpp_2m", *make_guided_denoiser(base, sched, plain), *sched, x_T, {{"steps", "8"}}, c).x;
  for (int variant = 0; variant < 3; ++variant) {
    GuidanceSpec g = plain;
    GuidanceTerm term;
    term.cond = {CondSpec::Label, 1};
    term.weight.points = {{0.0, variant == 0 ? 0.0 : 2.0}};
    if (variant == 1) term.t_min = term.t_max = 0.123456;  // never hit by the grid
    if (variant == 2) term.mask = at::zeros({4}, kF64);
    g.terms.push_back(term);
    const Sampled r = sample("dpmpp_2m", *make_guided_denoiser(base, sched, g), *sched, x_T, {{"steps", "8"}}, c);
    EXPECT_TRUE(at::equal(r.x, ref)) << "variant " << variant;
  }
}

// eps = eps(x, c) + sum_i w_i(t) M_i (eps(x, c_i) - eps(x, cref_i)), with a weight
// schedule, a window and a mask; all pairs in one call.
TEST(Guidance, ScoreMixtureTermsMatchFormula) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  auto base = labelled_mixture(sched);
  GuidanceSpec g;
  g.null_label = 3;
  GuidanceTerm a;  // towards class 2, against the null label, masked to two coordinates
  a.cond = {CondSpec::Label, 2};
  a.weight.points = {{0.0, 0.5}, {1.0, 2.5}};
  a.mask = at::tensor({1.0, 0.0, 0.5, 1.0}, kF64);
  GuidanceTerm b;  // class 0 against the sample's own class, only for t >= 0.6
  b.cond = {CondSpec::Label, 0};
  b.ref_cond = {CondSpec::Same, 0};
  b.weight.points = {{0.0, 1.5}};
  b.t_min = 0.6;
  g.terms = {a, b};
  auto guided = make_guided_denoiser(base, sched, g);
  const at::Tensor x = at::randn({3, 4}, at::detail::createCPUGenerator(3), kF64);
  const at::Tensor c = at::tensor({0, 1, 2}, at::kLong);
  auto eps = [&](int64_t label, double t) { return base->predict(x, t, at::full({3}, label, at::kLong)).eps; };
  for (double t : {0.8, 0.3}) {
    const at::Tensor e_c = base->predict(x, t, c).eps;
    at::Tensor expected = e_c + (0.5 + 2.0 * t) * a.mask * (eps(2, t) - eps(3, t));
    if (t >= 0.6) expected = expected + 1.5 * (eps(0, t) - e_c);
    EXPECT_LT(max_abs(guided->predict(x, t, c).eps - expected), 1e-12) << "t = " << t;
    EXPECT_EQ(guided->last_calls(), 1);
  }
}

// A denoiser that answers every label with the whole mixture (the unconditional model),
// while still taking labels: the base of classifier guidance.
class NullView final : public Denoiser {
 public:
  NullView(std::shared_ptr<Denoiser> m, int64_t null_label) : m_(std::move(m)), null_(null_label) {}
  Prediction predict(const at::Tensor& x, double t, const at::Tensor&) override {
    return m_->predict(x, t, at::full({x.size(0)}, null_, at::kLong));
  }
  std::vector<int64_t> sample_shape() const override { return m_->sample_shape(); }
  bool conditional() const override { return true; }

 private:
  std::shared_ptr<Denoiser> m_;
  int64_t null_;
};

// With the exact classifier p(c | x_t) of the labelled mixture, scale 1 turns the
// unconditional score into the class-conditional one: eps(x|c) to 1e-10.
TEST(Guidance, ExactClassifierGivesTheConditional) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  MixtureModel m;
  m.mixture = testing::random_gmm(Covariance::LowRank, 4, 4, 5, 2);
  m.shape = {5};
  m.labels = at::tensor({0, 1, 1, 2}, at::kLong);  // class 1 has two components
  auto base = std::shared_ptr<Denoiser>(make_mixture_denoiser(m, sched));
  GuidanceSpec g;
  g.classifier = make_gmm_classifier(m, sched);
  g.classifier_scale = 1.0;
  auto guided = make_guided_denoiser(std::make_shared<NullView>(base, 3), sched, g);
  const at::Tensor x = at::randn({4, 5}, at::detail::createCPUGenerator(4), kF64);
  const at::Tensor c = at::tensor({0, 1, 2, 1}, at::kLong);
  for (double t : {0.9, 0.4, 0.1}) {
    EXPECT_LT(max_abs(guided->predict(x, t, c).eps - base->predict(x, t, c).eps), 1e-10) << "t = " << t;
    EXPECT_EQ(guided->last_calls(), 2);  // the denoiser and the classifier
  }
}

// The same through a TorchScript classifier (tests/fixtures/gmm_classifier.pt: the exact
// classifier of two diagonal Gaussians under vp_linear), gradients by autograd through it.
TEST(Guidance, TorchScriptClassifierGivesTheConditional) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  MixtureModel m;
  m.mixture.cov = Covariance::Diagonal;
  m.mixture.log_weights = at::log(at::tensor({0.4, 0.6}, kF64));
  m.mixture.means = at::tensor({1.0, -0.5, 0.0, 0.5, 1.5, -1.0, -1.0, 0.5, 0.5, 0.0, -1.0, 1.0}, kF64).view({2, 6});
  m.mixture.variances = at::tensor({0.5, 0.3, 0.8, 0.4, 0.6, 0.2, 0.3, 0.7, 0.4, 0.9, 0.2, 0.5}, kF64).view({2, 6});
  m.shape = {2, 3};
  m.labels = at::tensor({0, 1}, at::kLong);
  auto base = std::shared_ptr<Denoiser>(make_mixture_denoiser(m, sched));
  GuidanceSpec g;
  g.classifier = load_torchscript_classifier(std::string(SCORCH_FIXTURES) + "/gmm_classifier.pt", TimeInput::T,
                                             sched, at::kDouble, at::kCPU);
  g.classifier_scale = 1.0;
  auto guided = make_guided_denoiser(std::make_shared<NullView>(base, 2), sched, g);
  const at::Tensor x = at::randn({4, 2, 3}, at::detail::createCPUGenerator(9), kF64);
  const at::Tensor c = at::tensor({0, 1, 1, 0}, at::kLong);
  for (double t : {0.8, 0.3, 0.05}) {
    c10::InferenceMode guard;  // as in a pipeline run: the gradient must still work
    EXPECT_LT(max_abs(guided->predict(x, t, c).eps - base->predict(x, t, c).eps), 1e-5) << "t = " << t;
  }
  EXPECT_THROW(load_torchscript_classifier(std::string(SCORCH_FIXTURES) + "/gaussian_eps.pt", TimeInput::T, sched,
                                           at::kDouble, at::kCPU)
                   ->log_prob(x, 0.5, c),
               Error);  // eps [B, 2, 3] is not logits [B, classes]
}

std::shared_ptr<Denoiser> gaussian_model(const at::Tensor& mean, const at::Tensor& cov,
                                         std::shared_ptr<const Schedule> sched) {
  GaussianModel g;
  auto [val, vec] = at::linalg_eigh(cov);
  g.mean = mean;
  g.eigenvalues = val;
  g.eigenvectors = vec;
  g.shape = {mean.size(0)};
  return make_gaussian_denoiser(g, std::move(sched));
}

// Product (weights 1, 1) of two 2-d Gaussians, sampled with dpmpp_2m and MALA correctors:
// mean and covariance of the exact product N(C (A^-1 a + B^-1 b), C = (A^-1 + B^-1)^-1)
// within 3 standard errors (of the mean: sqrt(C_ii / n); of the covariance: sqrt(2 / n) C_ii).
TEST(Guidance, ProductOfGaussiansWithCorrectors) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  const at::Tensor a = at::tensor({1.0, 0.0}, kF64), b = at::tensor({-0.5, 1.0}, kF64);
  const at::Tensor A = at::tensor({1.0, 0.6, 0.6, 1.0}, kF64).view({2, 2});
  const at::Tensor B = at::tensor({0.5, -0.2, -0.2, 0.8}, kF64).view({2, 2});
  GuidanceSpec g;
  g.compose = GuidanceSpec::Compose::Product;
  g.models = {{gaussian_model(b, B, sched), 1.0}};
  auto guided = make_guided_denoiser(gaussian_model(a, A, sched), sched, g);
  ASSERT_TRUE(guided->has_log_density());
  const at::Tensor C = at::linalg_inv(at::linalg_inv(A) + at::linalg_inv(B));
  const at::Tensor mu = C.mv(at::linalg_solve(A, a) + at::linalg_solve(B, b));
  const int64_t n = 4000;
  CorrectorSpec mala;
  mala.type = "mala";
  mala.step_size = 0.5;
  mala.steps = 5;
  const Sampled r = sample("dpmpp_2m", *guided, *sched, at::randn({n, 2}, at::detail::createCPUGenerator(5), kF64),
                           {{"steps", "30"}, {"t_end", "0.001"}}, {}, mala);
  const at::Tensor m = r.x.mean(0), d = r.x - m, cov = d.t().mm(d) / double(n - 1);
  for (int i = 0; i < 2; ++i) {
    EXPECT_NEAR(m[i].item<double>(), mu[i].item<double>(), 3 * std::sqrt(C[i][i].item<double>() / n)) << i;
    for (int j = 0; j < 2; ++j)
      EXPECT_NEAR(cov[i][j].item<double>(), C[i][j].item<double>(),
                  3 * std::sqrt(2.0 / n) * std::sqrt(C[i][i].item<double>() * C[j][j].item<double>()))
          << i << j;
  }
  ASSERT_FALSE(r.acceptance.empty());
  EXPECT_GT(r.acceptance.back(), 0.3);
  // without correctors the summed scores miss the product (the flow of p_a,t p_b,t is not
  // the noised product): the covariance is off by more than 3 standard errors
  const Sampled plain = sample("dpmpp_2m", *guided, *sched, at::randn({n, 2}, at::detail::createCPUGenerator(5), kF64),
                               {{"steps", "30"}, {"t_end", "0.001"}});
  const at::Tensor dp = plain.x - plain.x.mean(0);
  EXPECT_GT(max_abs(dp.t().mm(dp) / double(n - 1) - C), 3 * std::sqrt(2.0 / n) * C.diagonal().max().item<double>());
}

// Exact samples of the product of two isotropic mixtures: components (i, j) with weight
// pi_i rho_j N(mu_i; nu_j, (s_i^2 + r_j^2) I), variance v = (1/s_i^2 + 1/r_j^2)^-1 and mean
// v (mu_i / s_i^2 + nu_j / r_j^2).
at::Tensor sample_product(const GaussianMixture& p, const GaussianMixture& q, int64_t n, uint64_t seed) {
  const int64_t kp = p.components(), kq = q.components(), d = p.dim();
  const at::Tensor s2 = p.variances.view({kp, 1}), r2 = q.variances.view({1, kq});
  const at::Tensor v = 1.0 / (1.0 / s2 + 1.0 / r2);                                   // [kp, kq]
  const at::Tensor m = v.unsqueeze(2) * (p.means.view({kp, 1, d}) / s2.unsqueeze(2) +
                                         q.means.view({1, kq, d}) / r2.unsqueeze(2));   // [kp, kq, d]
  const at::Tensor gap = (p.means.view({kp, 1, d}) - q.means.view({1, kq, d})).square().sum(2);
  const at::Tensor logw = p.log_weights.view({kp, 1}) + q.log_weights.view({1, kq}) -
                          0.5 * double(d) * (s2 + r2).log() - 0.5 * gap / (s2 + r2);
  at::Generator g = at::detail::createCPUGenerator(seed);
  const at::Tensor comp = at::multinomial(at::softmax(logw.flatten(), 0), n, true, g);
  return m.view({kp * kq, d}).index_select(0, comp) +
         v.flatten().index_select(0, comp).sqrt().unsqueeze(1) * at::randn({n, d}, g, kF64);
}

// Reduce, Reuse, Recycle (Du et al. 2023): for the product of two Gaussian mixtures,
// reverse sampling of the summed scores is measurably off the exact product (sliced
// Wasserstein), and with MALA or HMC correctors it comes within 1.5x of the noise floor
// (two exact sample sets of the same size).
TEST(Guidance, ProductOfMixturesNeedsCorrectors) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  GaussianMixture p = testing::random_gmm(Covariance::Isotropic, 70, 4, 2);
  GaussianMixture q = testing::random_gmm(Covariance::Isotropic, 71, 4, 2);
  p.variances = p.variances + 0.2;
  q.variances = q.variances + 0.2;
  auto model = [&](const GaussianMixture& m) { return std::shared_ptr<Denoiser>(make_mixture_denoiser({m, {2}, {}}, sched)); };
  GuidanceSpec g;
  g.compose = GuidanceSpec::Compose::Product;
  g.models = {{model(q), 1.0}};
  auto guided = make_guided_denoiser(model(p), sched, g);
  const int64_t n = 3000;
  double floor = 0.0;
  for (int j = 0; j < 4; ++j)
    floor += testing::sliced_wasserstein(sample_product(p, q, n, 100 + j), sample_product(p, q, n, 200 + j), 64, 7) / 4;
  auto sw_of = [&](const CorrectorSpec& c) {
    const at::Tensor x_T = at::randn({n, 2}, at::detail::createCPUGenerator(8), kF64);
    const at::Tensor x = sample("dpmpp_2m", *guided, *sched, x_T, {{"steps", "30"}, {"t_end", "0.001"}}, {}, c).x;
    double sw = 0.0;
    for (int j = 0; j < 4; ++j) sw += testing::sliced_wasserstein(x, sample_product(p, q, n, 300 + j), 64, 7) / 4;
    return sw;
  };
  const double plain = sw_of({});
  CorrectorSpec mala;
  mala.type = "mala";
  mala.step_size = 0.5;
  mala.steps = 5;
  CorrectorSpec hmc;
  hmc.type = "hmc";
  hmc.step_size = 0.5;
  hmc.steps = 5;
  CorrectorSpec ula = mala, uhmc = hmc;
  ula.type = "ula";
  uhmc.type = "uhmc";
  const double with_mala = sw_of(mala), with_hmc = sw_of(hmc), with_ula = sw_of(ula), with_uhmc = sw_of(uhmc);
  std::printf("SW to the exact product: plain %.4f, mala %.4f, hmc %.4f, ula %.4f, uhmc %.4f, floor %.4f\n", plain,
              with_mala, with_hmc, with_ula, with_uhmc, floor);
  EXPECT_GT(plain, 2.0 * floor);
  EXPECT_LT(with_mala, 1.5 * floor);
  EXPECT_LT(with_hmc, 1.5 * floor);
  // the unadjusted ones (no accept step, so no step-size adaptation) still remove most of the gap
  EXPECT_LT(with_ula, 0.5 * plain);
  EXPECT_LT(with_uhmc, 0.5 * plain);
}

// Mixture (OR) of two separated Gaussians with pi = (0.3, 0.7): the proportions come back within 0.02.
TEST(Guidance, MixtureRecoversProportions) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  const at::Tensor eye = at::eye(2, kF64) * 0.1;
  GuidanceSpec g;
  g.compose = GuidanceSpec::Compose::Mixture;
  g.base_weight = 0.3;
  g.models = {{gaussian_model(at::tensor({3.0, 0.0}, kF64), eye, sched), 0.7}};
  auto guided = make_guided_denoiser(gaussian_model(at::tensor({-3.0, 0.0}, kF64), eye, sched), sched, g);
  const int64_t n = 4000;
  const Sampled r = sample("dpmpp_2m", *guided, *sched, at::randn({n, 2}, at::detail::createCPUGenerator(6), kF64),
                           {{"steps", "30"}, {"t_end", "0.001"}});
  EXPECT_EQ(r.nfe, 60);  // two models, one call each per step
  const double left = (r.x.select(1, 0) < 0).to(at::kDouble).mean().item<double>();
  EXPECT_NEAR(left, 0.3, 0.02);
}

TEST(Guidance, CorrectorAndLogDensityErrors) {
  std::shared_ptr<const Schedule> sched = make_vp_linear();
  CorrectorSpec c;
  c.type = "langevin";
  EXPECT_THROW(check_corrector(c, "guidance.corrector"), Error);
  c.type = "mala";
  c.step_size = -1;
  EXPECT_THROW(check_corrector(c, "guidance.corrector"), Error);
  GuidanceSpec g;
  g.cfg_scale = 2.0;
  g.null_label = 3;
  auto guided = make_guided_denoiser(labelled_mixture(sched), sched, g);
  EXPECT_FALSE(guided->has_log_density());
  EXPECT_THROW(guided->log_density(at::zeros({1, 4}, kF64), 0.5, at::zeros({1}, at::kLong)), Error);
}

}  // namespace
}  // namespace scorch
