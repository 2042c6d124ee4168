// libFuzzer harness: the IDX reader of `scorch fit --data` / `eval` (plain or gzip: zlib
// tells them apart by content). The input is written to a file, since the reader takes a
// path. Any input must give a tensor or a bad-input Error.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "scorch/error.h"
#include "scorch/eval.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/scorch_fuzz_idx_" + std::to_string(getpid());
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    return 0;
  }
  try {
    scorch::read_idx(path);
  } catch (const scorch::Error&) {
  }
  return 0;
}
