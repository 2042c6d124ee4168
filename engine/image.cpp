#include "scorch/image.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/provenance.h"
#include "scorch/provenance.h"

#ifdef SCORCH_WITH_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/core/utils/logger.hpp>
#endif

namespace scorch {

namespace {

// Points file descriptor 2 at /dev/null while alive: the image libraries under OpenCV print
// their own errors there, before scorch's one line.
class QuietStderr {
 public:
  QuietStderr() {
    std::fflush(stderr);
    saved_ = ::dup(2);
    const int null = ::open("/dev/null", O_WRONLY);
    if (saved_ >= 0 && null >= 0) ::dup2(null, 2);
    if (null >= 0) ::close(null);
  }
  ~QuietStderr() {
    std::fflush(stderr);
    if (saved_ >= 0) {
      ::dup2(saved_, 2);
      ::close(saved_);
    }
  }
  QuietStderr(const QuietStderr&) = delete;
  QuietStderr& operator=(const QuietStderr&) = delete;

 private:
  int saved_ = -1;
};

}  // namespace

bool images_supported() {
#ifdef SCORCH_WITH_OPENCV
  return true;
#else
  return false;
#endif
}

bool is_image_shape(const std::vector<int64_t>& s) {
  return s.size() == 2 || (s.size() == 3 && (s[0] == 1 || s[0] == 3));
}

void write_png_grid(const std::string& path, const at::Tensor& samples, int nrow, const std::string& what,
                    const std::map<std::string, std::string>& text) {
  const std::string png = encode_png_grid(samples, nrow, what, text);
  write_atomically(path, what, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary);
    f.write(png.data(), std::streamsize(png.size()));
    if (!f) bad_input(what + ": cannot write '" + path + "'");
  });
}

std::string encode_png_grid(const at::Tensor& samples, int nrow, const std::string& what,
                            const std::map<std::string, std::string>& text) {
#ifdef SCORCH_WITH_OPENCV
  at::Tensor x = samples.detach().cpu().to(at::kFloat);
  if (x.dim() == 3) x = x.unsqueeze(1);
  if (x.dim() != 4 || (x.size(1) != 1 && x.size(1) != 3))
    bad_input(what + ": samples of this shape are not images (need [C, H, W] with C = 1 or 3, or [H, W])");
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t cols = nrow > 0 ? nrow : int64_t(std::ceil(std::sqrt(double(b))));
  const int64_t rows = (b + cols - 1) / cols;
  const int64_t pad = 2;
  // [-1, 1] -> [0, 255], NCHW -> NHWC, RGB -> BGR for OpenCV.
  at::Tensor u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(at::kByte).permute({0, 2, 3, 1}).contiguous();
  if (c == 3) u8 = u8.flip({3}).contiguous();
  cv::Mat grid(int(rows * (h + pad) + pad), int(cols * (w + pad) + pad), c == 3 ? CV_8UC3 : CV_8UC1, cv::Scalar(0));
  for (int64_t i = 0; i < b; ++i) {
    const int64_t r = i / cols, col = i % cols;
    cv::Mat tile(int(h), int(w), c == 3 ? CV_8UC3 : CV_8UC1, u8[i].data_ptr());
    tile.copyTo(grid(cv::Rect(int(pad + col * (w + pad)), int(pad + r * (h + pad)), int(w), int(h))));
  }
  std::vector<unsigned char> encoded;
  bool ok = false;
  try {
    ok = cv::imencode(".png", grid, encoded);
  } catch (const cv::Exception& e) {
    bad_input(what + ": cannot encode the grid: " + e.what());
  }
  if (!ok) bad_input(what + ": cannot encode the grid");
  return png_with_text(std::string(encoded.begin(), encoded.end()), text);
#else
  (void)samples;
  (void)nrow;
  (void)text;
  bad_input(what + ": this build has no image output (configured without OpenCV)");
#endif
}

namespace {

// The width and height an image file declares, read from its header: PNG (IHDR), JPEG (the
// start-of-frame segment), BMP and PNM (P1-P6). Other formats are refused: these are the
// ones whose size is checked before a decoder allocates it.
std::pair<int64_t, int64_t> declared_image_size(const std::string& path, const std::string& what) {
  const std::string b = read_input_file(path, what);
  const auto u8 = [&](size_t i) -> uint64_t { return i < b.size() ? static_cast<unsigned char>(b[i]) : 0; };
  const auto be16 = [&](size_t i) { return int64_t(u8(i) << 8 | u8(i + 1)); };
  const auto be32 = [&](size_t i) { return int64_t(u8(i) << 24 | u8(i + 1) << 16 | u8(i + 2) << 8 | u8(i + 3)); };
  const auto le32 = [&](size_t i) { return int32_t(uint32_t(u8(i) | u8(i + 1) << 8 | u8(i + 2) << 16 | u8(i + 3) << 24)); };
  const auto truncated = [&]() -> std::pair<int64_t, int64_t> { bad_input(what + ": '" + path + "' is truncated"); };
  if (b.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0) {
    if (b.size() < 24 || b.compare(12, 4, "IHDR") != 0) truncated();
    return {be32(16), be32(20)};
  }
  if (u8(0) == 0xFF && u8(1) == 0xD8) {
    // markers: FF xx, a 2-byte length after all but the standalone ones
    for (size_t i = 2; i + 4 <= b.size();) {
      if (u8(i) != 0xFF) bad_input(what + ": '" + path + "' is not a readable JPEG file");
      const uint64_t m = u8(i + 1);
      if (m == 0xFF) {
        ++i;
        continue;
      }
      if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
        i += 2;
        continue;
      }
      const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
      if (sof) {
        if (i + 9 > b.size()) truncated();
        return {be16(i + 7), be16(i + 5)};
      }
      i += 2 + size_t(be16(i + 2));
    }
    truncated();
  }
  if (b.compare(0, 2, "BM") == 0) {
    if (b.size() < 26) truncated();
    return {int64_t(le32(18)), std::abs(int64_t(le32(22)))};
  }
  if (b.size() >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '6') {
    // whitespace-separated width and height, with # comments to the end of a line
    std::vector<int64_t> v;
    size_t i = 2;
    while (v.size() < 2 && i < b.size()) {
      if (b[i] == '#') {
        while (i < b.size() && b[i] != '\n') ++i;
      } else if (std::isdigit(static_cast<unsigned char>(b[i]))) {
        int64_t x = 0;
        for (; i < b.size() && std::isdigit(static_cast<unsigned char>(b[i])) && x < (int64_t(1) << 40); ++i) x = x * 10 + (b[i] - '0');
        v.push_back(x);
      } else {
        ++i;
      }
    }
    if (v.size() < 2) truncated();
    return {v[0], v[1]};
  }
  bad_input(what + ": '" + path + "' is not a PNG, JPEG, BMP or PNM image (the formats scorch reads)");
}

}  // namespace

at::Tensor read_grey_image(const std::string& path, int64_t h, int64_t w, const std::string& what) {
#ifdef SCORCH_WITH_OPENCV
  check_input_file(path, what);
  // The decoders allocate what a file declares before reading it: libpng a chunk's length
  // (a 128-byte PNG declaring a 2 GB chunk took 2 GB; found by fuzz/fuzz_image), every
  // decoder the image's pixels. A PNG's chunks are checked against the file first (our own
  // reader, with CRCs), and images are capped at kMaxImagePixels (OpenCV's limit, set
  // before its first use; the default 2^30 pixels would allow gigabytes).
  if (is_png_file(path)) png_text_chunks(path, what);
  const auto [width, height] = declared_image_size(path, what);
  if (width < 1 || height < 1 || width > kMaxImagePixels / height)
    bad_input(what + ": '" + path + "' declares " + std::to_string(width) + " x " + std::to_string(height) +
              " pixels; scorch reads images of 1 to " + std::to_string(kMaxImagePixels) + " pixels (4096 x 4096)");
  // OpenCV would print its own warning for an unreadable file, and libpng / libjpeg their
  // errors straight to stderr: both are kept quiet, and the error below says it once.
  cv::utils::logging::setLogLevel(cv::utils::logging::LOG_LEVEL_SILENT);
  cv::Mat img;
  std::string reason;
  {
    const QuietStderr quiet;
    try {
      img = cv::imread(path, cv::IMREAD_GRAYSCALE);
    } catch (const cv::Exception& e) {
      reason = e.err.find("CV_IO_MAX_IMAGE_PIXELS") != std::string::npos || e.err.find("validateInputImageSize") != std::string::npos
                   ? " (its declared size is above OpenCV's limit)"
                   : " (" + e.err + ")";
    }
  }
  if (img.empty()) bad_input(what + ": cannot read '" + path + "' as an image" + reason);
  cv::Mat resized;
  cv::resize(img, resized, cv::Size(int(w), int(h)), 0, 0, cv::INTER_AREA);
  cv::Mat f;
  resized.convertTo(f, CV_32F, 1.0 / 255.0);
  return at::from_blob(f.ptr<float>(), {h, w}, at::kFloat).clone();
#else
  (void)h;
  (void)w;
  bad_input(what + ": this build reads no images (configured without OpenCV); give a .npy mask ('" + path + "')");
#endif
}

}  // namespace scorch
