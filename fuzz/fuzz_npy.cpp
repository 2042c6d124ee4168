// libFuzzer harness: the .npy reader (magic, version, header dict, dtype, shape, size).
#include <cstddef>
#include <cstdint>
#include <string>

#include "scorch/error.h"
#include "scorch/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    scorch::parse_npy(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const scorch::Error&) {
  }
  return 0;
}
