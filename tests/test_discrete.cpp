// Discrete diffusion: schedules, float64 categorical sampling, and every discrete sampler
// against the exact law of a Markov chain (the forward-backward oracle as the denoiser).
#include "scorch/discrete.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <cmath>
#include <cstdio>

#include "scorch/discrete_sampler.h"
#include "scorch/config.h"
#include "scorch/token_pipeline.h"
#include "scorch/error.h"
#include "scorch/model_inputs.h"
#include "support/markov_oracle.h"
#include "support/sampler_harness.h"

namespace scorch {
namespace {

const auto kF64 = at::TensorOptions().dtype(at::kDouble);

TEST(Discrete, SchedulesRatesAndInverse) {
  for (const char* name : {"loglinear", "cosine", "linear", "geometric"}) {
    const auto s = make_discrete_schedule(name);
    EXPECT_GT(s->alpha(0.0), 0.99) << name;
    EXPECT_LT(s->alpha(1.0), 0.01) << name;
    for (double t : {0.1, 0.5, 0.9}) {
      const double h = 1e-6, fd = -(s->alpha(t + h) - s->alpha(t - h)) / (2 * h);
      EXPECT_NEAR(s->alpha_rate(t), fd, 1e-6 * (1 + fd)) << name << " t=" << t;
      EXPECT_NEAR(s->inverse_alpha(s->alpha(t)), t, 1e-12) << name;
    }
  }
  EXPECT_THROW(make_discrete_schedule("quadratic"), Error);
  EXPECT_THROW(make_discrete_schedule("linear", 1e-3, 5.0, 1.0), Error);
}

// A 4-state chain with clear structure (sticky, a rare transition 0 -> 3). Every transition
// has positive probability: parallel samplers may put any two tokens side by side.
testing::MarkovOracle chain(int64_t length, Transition tr = Transition::Absorbing, const DiscreteSchedule* s = nullptr) {
  const at::Tensor pi = at::tensor({0.4, 0.3, 0.2, 0.1}, kF64);
  const at::Tensor P = at::tensor({0.55, 0.3, 0.1, 0.05, 0.1, 0.5, 0.2, 0.2, 0.2, 0.2, 0.5, 0.1, 0.3, 0.1, 0.1, 0.5}, kF64)
                           .view({4, 4});
  return testing::MarkovOracle(pi, P, length, tr, s);
}

// The oracle's conditionals equal brute-force enumeration over all 4^5 sequences.
TEST(Discrete, OracleMatchesEnumeration) {
  const auto sched = make_discrete_schedule("loglinear");
  for (Transition tr : {Transition::Absorbing, Transition::Uniform}) {
    auto oracle = chain(5, tr, sched.get());
    const at::Tensor x = tr == Transition::Absorbing ? at::tensor({4, 2, 4, 4, 0}, at::kLong).view({1, 5})
                                                     : at::tensor({1, 2, 3, 0, 0}, at::kLong).view({1, 5});
    const double t = 0.6, a = sched->alpha(t);
    at::Tensor post = at::zeros({5, 4}, kF64);
    for (int64_t code = 0; code < 1024; ++code) {
      int64_t s[5], c = code;
      for (int i = 0; i < 5; ++i, c /= 4) s[i] = c % 4;
      double w = oracle.marginal(0)[s[0]].item<double>();
      for (int i = 1; i < 5; ++i) w *= oracle.pair(0)[s[i - 1]][s[i]].item<double>() / oracle.marginal(0)[s[i - 1]].item<double>();
      for (int i = 0; i < 5; ++i) {
        const int64_t xi = x[0][i].item<int64_t>();
        w *= tr == Transition::Absorbing ? (xi == 4 || xi == s[i] ? 1.0 : 0.0) : a * (xi == s[i]) + (1 - a) / 4;
      }
      for (int i = 0; i < 5; ++i) post[i][s[i]] += w;
    }
    post = post / post.sum(1, true);
    const at::Tensor got = oracle.log_probs(x, at::full({1}, t, kF64)).exp()[0];
    EXPECT_LT((got - post).abs().max().item<double>(), 1e-12);
  }
}

struct Result {
  at::Tensor x;
  double calls;
};

Result run(const std::string& name, testing::MarkovOracle& model, const DiscreteSchedule& sched, int64_t n,
           std::map<std::string, std::string> opts, uint64_t seed = 1) {
  const DiscreteSamplerEntry& info = discrete_samplers().find(name);
  const Options o = read_discrete_options(info, testing::sampler_section(opts), "sampler");
  DiscreteContext ctx(model, sched, seed, o);
  const at::Tensor x0 = discrete_prior(ctx, n);
  Result r{info.run(ctx, x0, o), ctx.calls()};
  return r;
}

// Largest total variation over positions of the marginals, and of the pair law pooled over
// adjacent positions, between samples [N, L] and the chain.
std::pair<double, double> tv_to_chain(const at::Tensor& x, const testing::MarkovOracle& m) {
  const int64_t n = x.size(0), l = x.size(1);
  double marg = 0.0;
  at::Tensor pair_emp = at::zeros({16}, kF64), pair_ref = at::zeros({4, 4}, kF64);
  for (int64_t i = 0; i < l; ++i) {
    const at::Tensor h = at::bincount(x.select(1, i), {}, 4).to(at::kDouble) / double(n);
    marg = std::max(marg, 0.5 * (h - m.marginal(i)).abs().sum().item<double>());
    if (i + 1 < l) {
      pair_emp += at::bincount(x.select(1, i) * 4 + x.select(1, i + 1), {}, 16).to(at::kDouble);
      pair_ref += m.pair(i);
    }
  }
  pair_emp = pair_emp / pair_emp.sum();
  pair_ref = (pair_ref / double(l - 1)).flatten();
  return {marg, 0.5 * (pair_emp - pair_ref).abs().sum().item<double>()};
}

// With 100 steps every sampler draws the chain: marginal and pair TV below 0.02 at 20k
// samples (the sampling noise is about 0.007). The gap at 4 steps is printed (docs/benchmarks.md).
TEST(Discrete, EverySamplerMatchesTheChain) {
  const auto sched = make_discrete_schedule("loglinear");
  auto oracle = chain(6);
  const int64_t n = 20000;
  struct Case {
    std::string name;
    std::map<std::string, std::string> opts;
  };
  const std::vector<Case> cases = {{"euler", {}},
                                   {"tweedie", {}},
                                   {"cached", {}},
                                   {"first_hitting", {}},
                                   {"maskgit", {{"choice_temperature", "1e9"}}},
                                   {"remdm", {{"strategy", "cap"}, {"eta", "0.05"}}},
                                   {"remdm", {{"strategy", "rescale"}, {"eta", "0.5"}}},
                                   {"remdm", {{"strategy", "conf"}}},
                                   {"remdm", {{"strategy", "loop"}}},
                                   {"remdm", {{"strategy", "loop"}, {"eta", "0.1"}, {"alpha_on", "0.5"}}},
                                   {"lsd", {}},
                                   {"tweedie", {{"blocks", "2"}}}};
  for (const auto& c : cases) {
    auto many = c.opts, few = c.opts;
    many["steps"] = "100";
    few["steps"] = "4";
    const Result r = run(c.name, oracle, *sched, n, many);
    EXPECT_TRUE(((r.x >= 0) & (r.x < 4)).all().item<bool>()) << c.name << ": masks left";
    const auto [marg, pair] = tv_to_chain(r.x, oracle);
    EXPECT_LT(marg, 0.02) << c.name;
    EXPECT_LT(pair, 0.02) << c.name;
    const auto [marg4, pair4] = tv_to_chain(run(c.name, oracle, *sched, n, few).x, oracle);
    std::printf("%-14s %-22s 100 steps: TV marginal %.4f pair %.4f (%.1f calls) | 4 steps: %.4f %.4f\n",
                c.name.c_str(), c.opts.empty() ? "" : (c.opts.begin()->first + "=" + c.opts.begin()->second).c_str(),
                marg, pair, r.calls, marg4, pair4);
  }
}

// The exact law of the chain given fixed positions (-1: free), by enumerating all 4^L
// sequences: the conditional marginal of every position and pair law of every adjacent pair.
struct ConditionalLaw {
  std::vector<at::Tensor> marginal, pair;  // [4] per position, [4, 4] per adjacent pair
};
ConditionalLaw conditional_law(const testing::MarkovOracle& m, const std::vector<int64_t>& fixed) {
  const int64_t l = int64_t(fixed.size());
  const at::Tensor pi = m.marginal(0), P = m.pair(0) / m.marginal(0).unsqueeze(1);
  ConditionalLaw law;
  for (int64_t i = 0; i < l; ++i) law.marginal.push_back(at::zeros({4}, kF64));
  for (int64_t i = 0; i + 1 < l; ++i) law.pair.push_back(at::zeros({4, 4}, kF64));
  double total = 0.0;
  std::vector<int64_t> s(size_t(l), 0);
  for (int64_t code = 0; code < (int64_t(1) << (2 * l)); ++code) {
    bool ok = true;
    for (int64_t i = 0; i < l; ++i) {
      s[size_t(i)] = (code >> (2 * i)) & 3;
      ok = ok && (fixed[size_t(i)] < 0 || fixed[size_t(i)] == s[size_t(i)]);
    }
    if (!ok) continue;
    double w = pi[s[0]].item<double>();
    for (int64_t i = 1; i < l; ++i) w *= P[s[size_t(i - 1)]][s[size_t(i)]].item<double>();
    total += w;
    for (int64_t i = 0; i < l; ++i) law.marginal[size_t(i)][s[size_t(i)]] += w;
    for (int64_t i = 0; i + 1 < l; ++i) law.pair[size_t(i)][s[size_t(i)]][s[size_t(i + 1)]] += w;
  }
  for (auto& t : law.marginal) t /= total;
  for (auto& t : law.pair) t /= total;
  return law;
}

// Largest TV over positions of the marginals, and TV of the pair law pooled over adjacent
// positions (as tv_to_chain).
std::pair<double, double> tv_to_law(const at::Tensor& x, const ConditionalLaw& law) {
  const int64_t n = x.size(0);
  double marg = 0.0;
  at::Tensor pair_emp = at::zeros({16}, kF64), pair_ref = at::zeros({16}, kF64);
  for (size_t i = 0; i < law.marginal.size(); ++i) {
    const at::Tensor h = at::bincount(x.select(1, int64_t(i)), {}, 4).to(at::kDouble) / double(n);
    marg = std::max(marg, 0.5 * (h - law.marginal[i]).abs().sum().item<double>());
    if (i < law.pair.size()) {
      pair_emp += at::bincount(x.select(1, int64_t(i)) * 4 + x.select(1, int64_t(i) + 1), {}, 16).to(at::kDouble);
      pair_ref += law.pair[i].flatten();
    }
  }
  const double pair = 0.5 * (pair_emp / pair_emp.sum() - pair_ref / pair_ref.sum()).abs().sum().item<double>();
  return {marg, pair};
}

// Infill: with positions 1 and 4 fixed (to tokens 2 and 0, an unlikely pair under the
// chain), every masked sampler draws the chain's exact conditional law at 100 steps:
// marginal and pair TV below 0.02 at 20k samples, and the fixed positions never change.
// Uniform-state tweedie clamps by replacement, an approximation: printed, not asserted.
TEST(Discrete, InfillMatchesTheExactConditional) {
  const auto sched = make_discrete_schedule("loglinear");
  auto oracle = chain(6);
  const std::vector<int64_t> fixed = {-1, 2, -1, -1, 0, -1};
  const ConditionalLaw law = conditional_law(oracle, fixed);
  const int64_t n = 20000;
  const at::Tensor tokens = at::tensor(fixed, at::kLong).unsqueeze(0).expand({n, 6}).contiguous();
  const auto run_fixed = [&](testing::MarkovOracle& model, const std::string& name, std::map<std::string, std::string> opts,
                             const at::Tensor& fixed_rows) {
    const DiscreteSamplerEntry& info = discrete_samplers().find(name);
    const Options o = read_discrete_options(info, testing::sampler_section(opts), "sampler");
    DiscreteContext ctx(model, *sched, 1, o);
    ctx.set_fixed(fixed_rows);
    const at::Tensor x0 = discrete_prior(ctx, fixed_rows.size(0));
    return info.run(ctx, x0, o);
  };
  const std::vector<std::pair<std::string, std::map<std::string, std::string>>> cases = {
      {"euler", {}}, {"tweedie", {}}, {"cached", {}}, {"first_hitting", {}},
      {"maskgit", {{"choice_temperature", "1e9"}}}, {"remdm", {{"strategy", "cap"}, {"eta", "0.05"}}},
      {"remdm", {{"strategy", "rescale"}, {"eta", "0.5"}}}, {"remdm", {{"strategy", "conf"}}},
      {"remdm", {{"strategy", "loop"}, {"eta", "0.1"}, {"alpha_on", "0.5"}}}, {"lsd", {}},
      {"tweedie", {{"blocks", "2"}}}};
  for (auto [name, opts] : cases) {
    opts["steps"] = "100";
    const at::Tensor x = run_fixed(oracle, name, opts, tokens);
    EXPECT_TRUE((x.select(1, 1) == 2).all().item<bool>() && (x.select(1, 4) == 0).all().item<bool>()) << name;
    EXPECT_TRUE(((x >= 0) & (x < 4)).all().item<bool>()) << name << ": masks left";
    const auto [marg, pair] = tv_to_law(x, law);
    std::string label;
    for (const auto& [k, v] : opts)
      if (k != "steps") label += k + "=" + v + " ";
    std::printf("infill %-14s %-30s TV marginal %.4f pair %.4f\n", name.c_str(), label.c_str(), marg, pair);
    EXPECT_LT(marg, 0.02) << name;
    EXPECT_LT(pair, 0.02) << name;
  }
  // the conditioning matters: the unconditioned chain is far from this law
  EXPECT_GT(tv_to_law(run("tweedie", oracle, *sched, n, {{"steps", "100"}}).x, law).first, 0.1);
  // uniform-state replacement (approximate)
  auto uniform = chain(6, Transition::Uniform, sched.get());
  const at::Tensor xu = run_fixed(uniform, "tweedie", {{"steps", "100"}, {"t_end", "0.001"}}, tokens);
  EXPECT_TRUE((xu.select(1, 1) == 2).all().item<bool>() && (xu.select(1, 4) == 0).all().item<bool>());
  const auto [um, up] = tv_to_law(xu, law);
  std::printf("infill uniform-state tweedie (replacement): TV marginal %.4f pair %.4f\n", um, up);
  // per sequence: each row keeps its own fixed positions
  at::Tensor rows = at::full({4, 6}, -1, at::kLong);
  rows[0][0] = 3;
  rows[1][5] = 1;
  rows[2][2] = 0;
  rows[2][3] = 0;
  const at::Tensor xr = run_fixed(oracle, "euler", {{"steps", "8"}}, rows);
  EXPECT_TRUE((at::where(rows >= 0, xr == rows, at::ones_like(rows, at::kBool))).all().item<bool>()) << xr;
  // bad fixed tokens
  EXPECT_THROW(run_fixed(oracle, "euler", {}, at::full({2, 5}, -1, at::kLong)), Error);
  EXPECT_THROW(run_fixed(oracle, "euler", {}, at::full({2, 6}, 4, at::kLong)), Error);
}

// A class-conditional token denoiser whose logits are known: a per-class table plus a bonus
// for each position's current token, log-softmax normalised (float64).
class TableTokens final : public TokenDenoiser {
 public:
  TableTokens() {
    spec_.vocab = 4;
    spec_.mask_id = 4;
    spec_.length = 3;
    spec_.num_classes = 2;
    table_ = Rng(11).normal({3, 3, 4}, at::TensorOptions().dtype(at::kDouble));  // [class incl. null, L, V]
  }
  at::Tensor logits(const at::Tensor& tokens, const at::Tensor& labels) const {
    const at::Tensor bonus = 0.7 * at::one_hot(tokens.clamp_max(3), 4).to(at::kDouble) * (tokens != 4).unsqueeze(-1);
    return table_.index_select(0, labels) + bonus;
  }
  at::Tensor log_probs(const at::Tensor& tokens, const at::Tensor& t) override {
    return log_probs_given(tokens, t, at::full({tokens.size(0)}, 2, at::kLong));
  }
  at::Tensor log_probs_given(const at::Tensor& tokens, const at::Tensor&, const at::Tensor& labels) override {
    ++calls;
    return at::log_softmax(logits(tokens, labels), -1);
  }
  const TokenSpec& spec() const override { return spec_; }
  int calls = 0;

 private:
  TokenSpec spec_;
  at::Tensor table_;
};

// Token-level classifier-free guidance equals its formula on the logits to 1e-12,
//   p~ = softmax(l_null + w (l_c - l_null)),  l = log-softmax of the network's output,
// per row (each its own label, the null label too), for the rows a sampler asks about, in
// one network call counted once per sequence; w = 1 is the conditional model alone.
TEST(Discrete, TokenGuidanceEqualsTheFormulaOnTheLogits) {
  const auto sched = make_discrete_schedule("loglinear");
  TableTokens model;
  const DiscreteSamplerEntry& info = discrete_samplers().find("euler");
  const Options o = read_discrete_options(info, testing::sampler_section({}), "sampler");
  const at::Tensor x = at::tensor({0, 4, 2, 4, 4, 4, 1, 3, 4, 2, 2, 0}, at::kLong).view({4, 3});
  const at::Tensor labels = at::tensor({0, 1, 2, 1}, at::kLong);
  const at::Tensor t = at::full({4}, 0.5, kF64);
  for (double w : {1.0, 3.0, -0.5}) {
    DiscreteContext ctx(model, *sched, 1, o);
    ctx.set_batch(4);
    ctx.set_labels(labels, 2, w);
    const int before = model.calls;
    const at::Tensor p = ctx.probs(x, t);
    EXPECT_EQ(model.calls - before, 1) << w;
    EXPECT_DOUBLE_EQ(ctx.calls(), 1.0);
    const at::Tensor lc = at::log_softmax(model.logits(x, labels), -1);
    const at::Tensor lu = at::log_softmax(model.logits(x, at::full({4}, 2, at::kLong)), -1);
    const at::Tensor expect = at::softmax(lu + w * (lc - lu), -1);
    EXPECT_LT((p - expect).abs().max().item<double>(), 1e-12) << w;
    const at::Tensor rows = at::tensor({3, 1}, at::kLong);
    const at::Tensor pr = ctx.probs(x, t, rows);
    EXPECT_LT((pr - expect.index_select(0, rows)).abs().max().item<double>(), 1e-12) << w;
  }
  // a model without classes refuses labels
  auto oracle = chain(3);
  EXPECT_THROW(oracle.log_probs_given(at::zeros({1, 3}, at::kLong), at::ones({1}, kF64), at::zeros({1}, at::kLong)),
               Error);
}

// Prompt-conditional token networks: the context tensors are declared inputs (model_inputs.h),
// the context's rows chosen by sequence index, the negative context's by -(i + 1); guidance on
// the logits combines the two in one batched call. The reference calls the TorchScript module
// itself with each context (the fixture is float64 inside, nonlinear in the context).
TEST(Discrete, PromptGuidanceEqualsTheFormulaOnTheLogits) {
  const std::string path = std::string(SCORCH_FIXTURES) + "/prompt_tokens.pt";
  ModelInput in;
  in.name = "context";
  in.shape = {5, 8};
  in.dtype = at::kFloat;
  auto inputs = std::make_shared<ModelInputs>(std::vector<ModelInput>{in});
  at::Generator gen = at::detail::createCPUGenerator(3);
  const at::Tensor cond = at::randn({4, 5, 8}, gen, at::kFloat), neg = at::randn({1, 5, 8}, gen, at::kFloat);
  inputs->set("context", cond, false, 4, "test");
  inputs->set("context", neg, true, 4, "test");
  TokenSpec spec;
  spec.vocab = 5;
  spec.length = 4;
  spec.mask_id = 5;
  const auto model = load_token_denoiser(path, spec, inputs);
  torch::jit::Module raw = torch::jit::load(path);
  const at::Tensor x = at::tensor({0, 5, 2, 5, 5, 5, 5, 5, 1, 3, 5, 2, 4, 4, 4, 0}, at::kLong).view({4, 4});
  const at::Tensor t = at::full({4}, 0.5, kF64);
  const at::Tensor lc = raw.forward({x, t.to(at::kFloat), cond}).toTensor().to(at::kDouble);
  const at::Tensor lu = raw.forward({x, t.to(at::kFloat), neg.expand({4, 5, 8})}).toTensor().to(at::kDouble);
  const auto sched = make_discrete_schedule("loglinear");
  const Options o = read_discrete_options(discrete_samplers().find("euler"), testing::sampler_section({}), "sampler");
  for (double w : {1.0, 3.0, -0.5}) {
    DiscreteContext ctx(*model, *sched, 1, o);
    ctx.set_batch(4);
    ctx.set_labels(at::arange(4, at::kLong), -1, w, /*indexed=*/true);
    const at::Tensor p = ctx.probs(x, t);
    EXPECT_DOUBLE_EQ(ctx.calls(), 1.0);
    const at::Tensor expect = at::softmax(lu + w * (lc - lu), -1);
    EXPECT_LT((p - expect).abs().max().item<double>(), 1e-12) << w;
    const at::Tensor rows = at::tensor({3, 1}, at::kLong);  // a subset of the sequences keeps each one's context
    EXPECT_LT((ctx.probs(x, t, rows) - expect.index_select(0, rows)).abs().max().item<double>(), 1e-12) << w;
  }
  EXPECT_GT((lc - lu).abs().max().item<double>(), 0.1);  // the two contexts give different predictions
  // forward's arguments are checked by name and number against the declaration
  ModelInput other = in;
  other.name = "text";
  EXPECT_THROW(load_token_denoiser(path, spec, std::make_shared<ModelInputs>(std::vector<ModelInput>{other})), Error);
  EXPECT_THROW(load_token_denoiser(path, spec, std::make_shared<ModelInputs>(std::vector<ModelInput>{in, other})), Error);
}

// Prefix-cached semi-autoregressive blocks on a block-causal fixture network (one attention
// layer, attention blocks of 4, float64): the cached run draws the same tokens as
// whole-sequence calls and the network evaluates fewer positions. L = 16, 16 steps:
// whole-sequence calls evaluate 16 x 16 = 256 positions per sequence; sampler blocks of 4
// evaluate 16 x 4 block positions plus the prefixes 0 + 4 + 8 + 12, 88; sampler blocks of 8
// (two attention blocks each, causal between them) 16 x 8 + 0 + 8, 136.
TEST(Discrete, PrefixCacheEqualsWholeSequenceCalls) {
  TokenSpec spec;
  spec.vocab = 5;
  spec.length = 16;
  spec.mask_id = 5;
  const auto model = load_token_denoiser(std::string(SCORCH_FIXTURES) + "/block_causal_tokens.pt", spec);
  ASSERT_EQ(model->cache_block_size(), 4);
  const auto sched = make_discrete_schedule("loglinear");
  auto sample = [&](const std::string& name, int blocks, bool cache, double* evals) {
    const DiscreteSamplerEntry& info = discrete_samplers().find(name);
    const Options o = read_discrete_options(
        info, testing::sampler_section({{"steps", "16"}, {"blocks", std::to_string(blocks)}, {"kv_cache", cache ? "true" : "false"}}),
        "sampler");
    DiscreteContext ctx(*model, *sched, 5, o);
    ctx.set_batch(64);
    const at::Tensor x = info.run(ctx, discrete_prior(ctx, 64), o);
    *evals = ctx.token_evaluations();
    return x;
  };
  for (const std::string name : {"euler", "tweedie", "maskgit"}) {
    SCOPED_TRACE(name);
    for (const auto& [blocks, positions] : std::vector<std::pair<int, double>>{{4, 88.0}, {2, 136.0}, {3, 256.0}}) {
      SCOPED_TRACE(blocks);  // 3: blocks of 5 do not fall on the attention blocks, so whole-sequence calls
      double cached = 0, whole = 0;
      const at::Tensor a = sample(name, blocks, true, &cached), b = sample(name, blocks, false, &whole);
      EXPECT_TRUE(at::equal(a, b));
      EXPECT_FALSE((a == 5).any().item<bool>());
      EXPECT_DOUBLE_EQ(whole, 256.0);
      EXPECT_DOUBLE_EQ(cached, positions);
    }
  }
  // the block's predictions from the cache equal the whole-sequence call's there
  const Options o = read_discrete_options(discrete_samplers().find("euler"), testing::sampler_section({}), "sampler");
  DiscreteContext ctx(*model, *sched, 5, o);
  const at::Tensor x = at::tensor({0, 1, 2, 3, 4, 0, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 3, 3, 2, 2, 1, 5, 1, 5, 5, 5, 5, 5, 5, 5, 5, 5},
                                  at::kLong).view({2, 16});
  const at::Tensor t = at::full({2}, 0.5, kF64);
  const at::Tensor whole = ctx.probs(x, t);
  ASSERT_TRUE(ctx.begin_block(x, 4, 12));  // two attention blocks at once
  const at::Tensor block = ctx.probs(x, t);
  EXPECT_LT((block.narrow(1, 4, 8) - whole.narrow(1, 4, 8)).abs().max().item<double>(), 1e-12);
  EXPECT_TRUE(at::equal(block.narrow(1, 0, 4).argmax(-1), x.narrow(1, 0, 4)));  // the prefix: one-hot on its tokens
  ctx.end_blocks();
  // a network without a cache runs whole-sequence calls
  auto oracle = chain(6);
  DiscreteContext plain(oracle, *sched, 5, o);
  EXPECT_FALSE(plain.begin_block(discrete_prior(plain, 2), 0, 3));
}

// Duo's greedy tail: with `final: argmax` a uniform-state run's last step is the argmax of the
// model's clean-token prediction. With one step that prediction is the oracle's at the prior
// x_1 (drawn first from the same seed), so the result is known exactly.
TEST(Discrete, UniformGreedyTailIsTheArgmaxOfTheLastPrediction) {
  const auto sched = make_discrete_schedule("loglinear");
  auto oracle = chain(6, Transition::Uniform, sched.get());
  const DiscreteSamplerEntry& info = discrete_samplers().find("tweedie");
  const Options o = read_discrete_options(info, testing::sampler_section({{"steps", "1"}, {"final", "argmax"}}), "sampler");
  DiscreteContext ctx(oracle, *sched, 7, o);
  const at::Tensor x1 = discrete_prior(ctx, 64);
  const at::Tensor x = info.run(ctx, x1, o);
  const at::Tensor expect = oracle.log_probs(x1, at::ones({64}, kF64)).argmax(-1);
  EXPECT_TRUE(at::equal(x, expect));
  const Result sampled = run("tweedie", oracle, *sched, 64, {{"steps", "1"}, {"final", "sample"}}, 7);
  EXPECT_FALSE(at::equal(sampled.x, expect));
  // with many steps the tail is one greedy step: the law stays near the chain's
  const auto [marg, pair] = tv_to_chain(run("tweedie", oracle, *sched, 20000, {{"steps", "100"}, {"t_end", "0.001"},
                                                                           {"final", "argmax"}}).x, oracle);
  std::printf("uniform-state tweedie, greedy tail, 100 steps: TV marginal %.4f pair %.4f\n", marg, pair);
  EXPECT_LT(marg, 0.03);
}

// Uniform-state diffusion: tweedie with Duo's posterior on the uniform oracle.
TEST(Discrete, UniformStateTweedieMatchesTheChain) {
  const auto sched = make_discrete_schedule("cosine", 1e-4);
  auto oracle = chain(6, Transition::Uniform, sched.get());
  const Result r = run("tweedie", oracle, *sched, 20000, {{"steps", "100"}, {"t_end", "0.001"}});
  const auto [marg, pair] = tv_to_chain(r.x, oracle);
  EXPECT_LT(marg, 0.02);
  EXPECT_LT(pair, 0.02);
  EXPECT_THROW(run("maskgit", oracle, *sched, 10, {}), Error);
  EXPECT_THROW(run("euler", oracle, *sched, 10, {}), Error);
}

// cached: n (1 - (1 - 1/n)^L) model calls per sequence (RADD) within 5%, same law as euler.
TEST(Discrete, CachedCallsAndLaw) {
  const auto sched = make_discrete_schedule("loglinear");
  auto oracle = chain(64);
  for (int steps : {16, 64, 256}) {
    const Result r = run("cached", oracle, *sched, 2000, {{"steps", std::to_string(steps)}});
    const double expected = steps * (1.0 - std::pow(1.0 - 1.0 / steps, 64));
    EXPECT_NEAR(r.calls, expected, 0.05 * expected) << steps << " steps";
    if (steps != 64) continue;
    // the same law as euler (which calls the model at every step)
    const Result e = run("euler", oracle, *sched, 2000, {{"steps", std::to_string(steps)}}, 2);
    EXPECT_DOUBLE_EQ(e.calls, steps);
    const auto [mc, pc] = tv_to_chain(r.x, oracle);
    const auto [me, pe] = tv_to_chain(e.x, oracle);
    EXPECT_LT(pc, 0.02);
    EXPECT_LT(pe, 0.02);
    EXPECT_LT(std::max(mc, me), 0.06);  // 2000 samples, the worst of 64 positions
  }
}

// 10,000 tokens of probability 1e-8 next to one of 1 - 1e-4: 1e6 float64 draws hit them
// about 100 times (within 4 standard deviations). The float32 exponential race of the
// reference samplers (argmax w / E, E = -log u, u a float32 uniform) cannot: E >= 2^-24,
// so a small token beats the big one only when E_big > 5.96 and its own E is at the
// floor; simulated exactly (the minimum of the 10,000 small E's drawn through the maximum
// of their float32 uniforms), it hits a few times at most.
TEST(Discrete, Float64SamplingKeepsRareTokens) {
  at::Tensor p = at::full({10001}, 1e-8, kF64);
  p[0] = 1.0 - 1e-4;
  at::Generator gen = at::detail::createCPUGenerator(5);
  const at::Tensor draws = sample_categorical(p, gen, 1000000);
  const double hits = (draws > 0).sum().item<double>();
  EXPECT_NEAR(hits, 100.0, 4.0 * std::sqrt(100.0));
  const double grid = std::ldexp(1.0, -24);  // float32 uniforms are multiples of 2^-24 in [0, 1)
  auto f32_uniform = [&](const at::Tensor& u) { return at::floor(u / grid) * grid; };
  const at::Tensor u_max = f32_uniform(at::pow(at::rand({1000000}, gen, kF64), 1e-4));  // max of 1e4 uniforms
  const at::Tensor e_small = -at::log(u_max.to(at::kFloat)), e_big = -at::log(f32_uniform(at::rand({1000000}, gen, kF64)).to(at::kFloat));
  const int64_t f32_hits = (1e-8f / e_small > float(1.0 - 1e-4) / e_big).sum().item<int64_t>();
  std::printf("rare tokens in 1e6 draws: float64 %.0f (expected 100), float32 race %lld\n", hits, (long long)f32_hits);
  EXPECT_LT(f32_hits, 100 - 4 * 10);
}

// Ordinary categoricals pass a chi-square test at the 1% level (5 degrees of freedom: 15.09),
// for one distribution and for rows of a batch.
TEST(Discrete, CategoricalChiSquare) {
  const at::Tensor p = at::tensor({0.1, 0.2, 0.3, 0.15, 0.15, 0.1}, kF64);
  at::Generator gen = at::detail::createCPUGenerator(6);
  auto chi2 = [&](const at::Tensor& x) {
    const at::Tensor obs = at::bincount(x.flatten(), {}, 6).to(at::kDouble), exp = p * double(x.numel());
    return ((obs - exp).square() / exp).sum().item<double>();
  };
  EXPECT_LT(chi2(sample_categorical(p, gen, 60000)), 15.09);
  EXPECT_LT(chi2(sample_categorical(p.expand({200, 300, 6}) * 3.0, gen)), 15.09);  // unnormalised weights
}

// The shipped word model passes the load-time validation and generates through the pipeline.
TEST(Discrete, ShippedWordModelRuns) {
  const auto p = TokenPipeline::from_config(load_config("configs/words.yaml", {"batch=4", "sampler.steps=4"}));
  const TokenResult r = p->generate();
  EXPECT_EQ(r.tokens.sizes(), at::IntArrayRef({4, 12}));
  EXPECT_TRUE(((r.tokens >= 0) & (r.tokens < 27)).all().item<bool>());
  EXPECT_DOUBLE_EQ(r.calls, 4.0);
  EXPECT_EQ(p->decode(r.tokens).size(), 4u);
}

// lsd's coefficient acts at its last step too: one lsd step from the all-mask state draws
// every position from p^c normalised, p the chain's marginal there (c = 2, 20k samples:
// total variation below 0.02, the sampling noise is about 0.005). A file with the wrong
// number of coefficients is refused.
TEST(Discrete, LsdLastStepUsesItsCoefficient) {
  const auto sched = make_discrete_schedule("loglinear");
  auto oracle = chain(3);
  const std::string file = ::testing::TempDir() + "lsd_c2.yaml";
  {
    std::FILE* f = std::fopen(file.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("coefficients: [2.0]\n", f);
    std::fclose(f);
  }
  const at::Tensor x = run("lsd", oracle, *sched, 20000, {{"steps", "1"}, {"coefficients", file}}).x;
  for (int64_t i = 0; i < 3; ++i) {
    const at::Tensor p2 = oracle.marginal(i).square();
    const at::Tensor expected = p2 / p2.sum();
    const at::Tensor got = at::bincount(x.select(1, i), {}, 4).to(at::kDouble) / 20000.0;
    EXPECT_LT(0.5 * (got - expected).abs().sum().item<double>(), 0.02) << "position " << i;
  }
  EXPECT_THROW(run("lsd", oracle, *sched, 10, {{"steps", "2"}, {"coefficients", file}}), Error);
  std::remove(file.c_str());
}

TEST(Discrete, RejectsBadOptions) {
  const auto sched = make_discrete_schedule("loglinear");
  auto oracle = chain(6);
  EXPECT_THROW(discrete_samplers().find("ddim"), Error);
  EXPECT_THROW(run("euler", oracle, *sched, 4, {{"steps", "0"}}), Error);
  EXPECT_THROW(run("euler", oracle, *sched, 4, {{"blocks", "7"}}), Error);
  EXPECT_THROW(run("euler", oracle, *sched, 4, {{"top_p", "0"}}), Error);
  EXPECT_THROW(run("euler", oracle, *sched, 4, {{"temperature", "-1"}}), Error);
  EXPECT_THROW(run("remdm", oracle, *sched, 4, {{"strategy", "forever"}}), Error);
  EXPECT_THROW(run("remdm", oracle, *sched, 4, {{"strategy", "loop"}, {"t_off", "0.6"}}), Error);
  EXPECT_THROW(run("remdm", oracle, *sched, 4, {{"strategy", "loop"}, {"t_off", "0"}}), Error);
  EXPECT_THROW(run("remdm", oracle, *sched, 4, {{"strategy", "loop"}, {"alpha_on", "1"}}), Error);
  EXPECT_THROW(run("lsd", oracle, *sched, 4, {{"coefficients", "/nonexistent.yaml"}}), Error);
}

}  // namespace
}  // namespace scorch
