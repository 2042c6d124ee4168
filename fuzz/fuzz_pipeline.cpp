// libFuzzer harness: the whole config-to-pipeline validation, no sampling. The input is a
// YAML config, then up to eight `--set` overrides, separated by NUL bytes. Any input must
// give a pipeline (or a token pipeline) or a bad-input Error, never a crash, a sanitizer
// report or another exception. Models are loaded as the config names them, so the seeds
// use closed-form and small fixture models.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "scorch/config.h"
#include "scorch/error.h"
#include "scorch/pipeline.h"
#include "scorch/token_pipeline.h"

// A 256 MB cap on inputs and batch memory (SCORCH_MAX_INPUT_BYTES), so that the fuzzer's
// own 2 GB limit flags a real overrun, not a large batch the config legitimately asks for.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  setenv("SCORCH_MAX_INPUT_BYTES", "268435456", 1);
  return 0;
}

// The GITS grid search runs the teacher when the pipeline is built: its cost is what the
// config asks for (gits_warmup probes x gits_teacher_steps Heun steps), so large searches
// are skipped here rather than reported as hangs.
bool expensive_search(const YAML::Node& config) {
  const YAML::Node s = config["sampler"];
  if (!s || !s.IsMap() || !s["skip_type"] || !s["skip_type"].IsScalar() || s["skip_type"].Scalar() != "gits") return false;
  const auto value = [&](const char* key, double fallback) {
    double v = fallback;
    if (s[key] && s[key].IsScalar()) YAML::convert<double>::decode(s[key], v);
    return v;
  };
  return value("gits_warmup", 32) * value("gits_teacher_steps", 100) > 20000;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  size_t start = 0;
  while (parts.size() < 9) {
    const size_t nul = bytes.find('\0', start);
    parts.push_back(bytes.substr(start, nul == std::string::npos ? std::string::npos : nul - start));
    if (nul == std::string::npos) break;
    start = nul + 1;
  }
  const std::vector<std::string> overrides(parts.begin() + 1, parts.end());
  try {
    const YAML::Node config = scorch::load_config_text(parts[0], overrides);
    if (expensive_search(config)) return 0;
    if (scorch::is_token_config(config))
      scorch::TokenPipeline::from_config(config);
    else
      scorch::Pipeline::from_config(config);
  } catch (const scorch::Error&) {
  }
  return 0;
}
