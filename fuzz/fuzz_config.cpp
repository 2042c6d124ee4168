// libFuzzer harness: the YAML config reader (parse + --set style overrides). Any input must
// give a config or a bad-input Error, never a crash or a sanitizer report.
#include <cstddef>
#include <cstdint>
#include <string>

#include "scorch/config.h"
#include "scorch/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    scorch::load_config_text(text, {"sampler.steps=3", "model.shape=[1, 2]"});
  } catch (const scorch::Error&) {
  }
  return 0;
}
