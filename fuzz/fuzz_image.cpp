// libFuzzer harness: the image readers (OpenCV's decoders behind read_grey_image, as masks
// and init images are read; the PNG text-chunk reader behind `--config image.png`). The
// input is written to a file, since both read paths. Any input must give an image or a
// bad-input Error.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "scorch/error.h"
#include "scorch/image.h"
#include "scorch/provenance.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/scorch_fuzz_image_" + std::to_string(getpid());
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    return 0;
  }
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
