// libFuzzer harness: the safetensors reader (header JSON, dtypes, offsets, shapes).
#include <cstddef>
#include <cstdint>
#include <string>

#include "scorch/error.h"
#include "scorch/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    scorch::parse_safetensors(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const scorch::Error&) {
  }
  return 0;
}
