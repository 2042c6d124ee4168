#include "scorch/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "scorch/discrete_sampler.h"
#include "scorch/error.h"
#include "scorch/options.h"
#include "scorch/sampler.h"

namespace scorch {
namespace {

const std::string kGaussianConfig = "configs/fmnist_gaussian.yaml";

TEST(Config, DefaultIsEmbedded) {
  const YAML::Node c = load_config("", {});
  EXPECT_EQ(c["model"]["path"].as<std::string>(), "models/fmnist_unet.pt");
  EXPECT_EQ(c["sampler"]["name"].as<std::string>(), "dpmpp_2m");
  EXPECT_EQ(load_config(kGaussianConfig, {})["model"]["type"].as<std::string>(), "gaussian");
}

TEST(Config, SetOverridesDottedPaths) {
  const YAML::Node c = load_config(kGaussianConfig, {"sampler.steps=7", "sampler.order=3", "model.shape=[1, 28, 28]",
                                        "new.section.key=abc", "seed=42"});
  EXPECT_EQ(c["sampler"]["steps"].as<int>(), 7);
  EXPECT_EQ(c["sampler"]["order"].as<int>(), 3);
  EXPECT_EQ(c["model"]["shape"].size(), 3u);
  EXPECT_EQ(c["new"]["section"]["key"].as<std::string>(), "abc");
  EXPECT_EQ(c["seed"].as<int>(), 42);
  // A list element by index; a bad index is an error.
  const YAML::Node l = load_config(kGaussianConfig, {"model.inputs=[1, 2]", "model.inputs.1=5"});
  EXPECT_EQ(l["model"]["inputs"][1].as<int>(), 5);
  EXPECT_THROW(load_config(kGaussianConfig, {"model.inputs=[1, 2]", "model.inputs.2=5"}), Error);
  EXPECT_THROW(load_config(kGaussianConfig, {"model.inputs=[1, 2]", "model.inputs.x=5"}), Error);
  // The embedded default is not modified by overrides.
  EXPECT_NE(load_config(kGaussianConfig, {})["seed"].as<int>(), 42);
}

TEST(Config, BadOverrides) {
  EXPECT_THROW(load_config(kGaussianConfig, {"sampler.steps"}), Error);          // no '='
  EXPECT_THROW(load_config(kGaussianConfig, {"=3"}), Error);                      // no key
  EXPECT_THROW(load_config(kGaussianConfig, {"sampler..steps=3"}), Error);        // empty component
  EXPECT_THROW(load_config(kGaussianConfig, {"seed.x=3"}), Error);                // seed is a value
  EXPECT_THROW(load_config(kGaussianConfig, {"sampler.steps=[1, 2"}), Error);    // invalid YAML value
}

TEST(Config, InvalidYamlNamesTheLine) {
  const std::string p = (std::filesystem::temp_directory_path() / "scorch_bad.yaml").string();
  std::ofstream(p) << "model:\n  type: gaussian\nsampler:\n  name: [ddim\n";
  try {
    load_config(p, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::BadInput);
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p + ":"), std::string::npos) << msg;
    EXPECT_NE(msg.find("invalid YAML"), std::string::npos) << msg;
  }
  std::remove(p.c_str());
  EXPECT_THROW(load_config("/nonexistent/config.yaml", {}), Error);
}

}  // namespace
}  // namespace scorch

// Every integer and number option, in every config section and every sampler's table, has
// a declared range: both ends finite (an option whose default is infinity may leave its top
// open), so a careless 1e300 is refused with the range in words before any work.
TEST(Config, EveryNumericOptionHasARange) {
  std::vector<std::pair<std::string, scorch::OptionSpec>> specs;
  for (const auto& section : scorch::config_schemas())
    for (const auto& k : section.keys) specs.push_back({section.path + "." + k.name, k});
  for (const auto& e : scorch::samplers().entries())
    for (const auto& o : e.options) specs.push_back({"sampler " + e.name + "." + o.name, o});
  for (const auto& e : scorch::discrete_samplers().entries())
    for (const auto& o : e.options) specs.push_back({"discrete sampler " + e.name + "." + o.name, o});
  int numeric = 0;
  for (const auto& [where, spec] : specs) {
    if (spec.type != scorch::OptionType::Int && spec.type != scorch::OptionType::Number) continue;
    ++numeric;
    EXPECT_TRUE(std::isfinite(spec.min)) << where << " has no lower bound";
    EXPECT_TRUE(std::isfinite(spec.max) || spec.default_value == "inf") << where << " has no upper bound";
    EXPECT_LE(spec.min, spec.max) << where;
    EXPECT_FALSE(scorch::range_words(spec).empty()) << where;
  }
  EXPECT_GT(numeric, 100);
}
