// libFuzzer harness: the IDX reader of `scorch fit --data` / `eval` (plain or gzip: zlib
// tells them apart by content). The input is written to a file, since the reader takes a
// path. Any input must give a tensor or a bad-input Error.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "fuzz/input_file.h"
#include "scorch/error.h"
#include "scorch/eval.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = write_fuzz_input("idx", data, size);
  if (path.empty()) return 0;
  try {
    scorch::read_idx(path);
  } catch (const scorch::Error&) {
  }
  return 0;
}
