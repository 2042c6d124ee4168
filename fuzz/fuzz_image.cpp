// libFuzzer harness: the image readers (OpenCV's decoders behind read_grey_image, as masks
// and init images are read; the PNG text-chunk reader behind `--config image.png`). The
// input is written to a file, since both read paths. Any input must give an image or a
// bad-input Error.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "fuzz/input_file.h"
#include "scorch/error.h"
#include "scorch/image.h"
#include "scorch/provenance.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = write_fuzz_input("image", data, size);
  if (path.empty()) return 0;
  try {
    scorch::read_grey_image(path, 8, 8, "fuzz");
  } catch (const scorch::Error&) {
  }
  try {
    scorch::png_text_chunks(path, "fuzz");
  } catch (const scorch::Error&) {
  }
  return 0;
}
