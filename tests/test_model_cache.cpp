// The model cache (include/scorch/model_cache.h): nothing kept at budget 0; hits return the
// kept value without loading; least recently used entries are evicted past the budget; a
// changed file is a new key; pipelines built twice load their model once and sample the
// same numbers.
#include "scorch/model_cache.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "scorch/config.h"
#include "scorch/pipeline.h"

namespace fs = std::filesystem;

namespace {

// Restores the process's budget (0) whatever the test does.
struct Budget {
  explicit Budget(size_t bytes) { scorch::set_model_cache_budget(bytes); }
  ~Budget() { scorch::set_model_cache_budget(0); }
};

std::pair<int, size_t> load_count(int* loads, int value, size_t bytes) {
  ++*loads;
  return {value, bytes};
}

TEST(ModelCache, BudgetZeroKeepsNothing) {
  Budget budget(0);
  int loads = 0;
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(*scorch::cached_model<int>("a", [&] { return load_count(&loads, 7, 10); }), 7);
  EXPECT_EQ(loads, 3);
  EXPECT_TRUE(scorch::model_cache_stats().entries.empty());
}

TEST(ModelCache, HitsAndLeastRecentlyUsedEviction) {
  Budget budget(100);
  int loads = 0;
  const auto get = [&](const std::string& key, int value, size_t bytes) {
    return *scorch::cached_model<int>(key, [&] { return load_count(&loads, value, bytes); });
  };
  EXPECT_EQ(get("a", 1, 40), 1);
  EXPECT_EQ(get("b", 2, 40), 2);
  EXPECT_EQ(get("a", 99, 40), 1);  // a hit: the kept value, no load
  EXPECT_EQ(loads, 2);
  EXPECT_EQ(get("c", 3, 40), 3);  // 120 > 100: b, the least recently used, goes
  const auto s = scorch::model_cache_stats();
  ASSERT_EQ(s.entries.size(), 2u);
  EXPECT_EQ(s.entries[0].key, "c");
  EXPECT_EQ(s.entries[1].key, "a");
  EXPECT_EQ(s.bytes, 80u);
  EXPECT_EQ(s.evictions, 1u);
  EXPECT_EQ(get("b", 4, 40), 4);  // loaded again
  EXPECT_EQ(loads, 4);
  EXPECT_EQ(get("huge", 5, 1000), 5);  // above the whole budget: returned, not kept
  EXPECT_EQ(scorch::model_cache_stats().entries.size(), 2u);
  EXPECT_EQ(get("", 6, 1), 6);  // an empty key is never kept
  EXPECT_EQ(get("", 7, 1), 7);
  scorch::set_model_cache_budget(50);  // shrinking evicts at once
  EXPECT_EQ(scorch::model_cache_stats().entries.size(), 1u);
  EXPECT_LE(scorch::model_cache_stats().bytes, 50u);
}

TEST(ModelCache, AFailedLoadKeepsNothing) {
  Budget budget(100);
  EXPECT_THROW(scorch::cached_model<int>("bad", []() -> std::pair<int, size_t> { throw std::runtime_error("no"); }),
               std::runtime_error);
  EXPECT_TRUE(scorch::model_cache_stats().entries.empty());
}

TEST(ModelCache, FileKeyFollowsTheFile) {
  const fs::path p = fs::temp_directory_path() / ("scorch_cache_" + std::to_string(::getpid()) + ".bin");
  std::ofstream(p) << "one";
  const std::string a = scorch::model_file_key(p.string());
  EXPECT_NE(a.find(fs::canonical(p).string()), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  std::ofstream(p) << "three";
  EXPECT_NE(scorch::model_file_key(p.string()), a);  // size and time changed
  EXPECT_EQ(scorch::model_file_key((p.parent_path() / "." / p.filename()).string()), scorch::model_file_key(p.string()));
  fs::remove(p);
  EXPECT_EQ(scorch::model_file_key(p.string()), "");
}

// The U-Net and the closed-form Gaussian, each built twice: the second build loads nothing
// (hits only) and samples the same numbers.
TEST(ModelCache, PipelinesShareTheirModel) {
  Budget budget(size_t(1) << 30);
  const std::vector<std::pair<std::string, std::string>> configs = {
      {"", "cond=1"}, {std::string(SCORCH_SOURCE_DIR) + "/configs/fmnist_gaussian.yaml", "cond="}};
  for (const auto& [config, cond] : configs) {
    const YAML::Node c = scorch::load_config(config, {"batch=2", cond, "sampler.steps=3", "output.png="});
    const auto first = scorch::Pipeline::from_config(c);
    const auto before = scorch::model_cache_stats();
    const auto second = scorch::Pipeline::from_config(c);
    const auto after = scorch::model_cache_stats();
    EXPECT_EQ(after.misses, before.misses) << config;
    EXPECT_GT(after.hits, before.hits) << config;
    EXPECT_TRUE(at::equal(first->generate().samples, second->generate().samples)) << config;
  }
}

}  // namespace
