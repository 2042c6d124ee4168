#include "scorch/image.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "scorch/error.h"
#include "scorch/io.h"
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
    bad_input(what + ": cannot encode '" + path + "': " + e.what());
  }
  if (!ok) bad_input(what + ": cannot encode '" + path + "'");
  const std::string png = png_with_text(std::string(encoded.begin(), encoded.end()), text);
  write_atomically(path, what, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary);
    f.write(png.data(), std::streamsize(png.size()));
    if (!f) bad_input(what + ": cannot write '" + path + "'");
  });
#else
  (void)samples;
  (void)nrow;
  (void)text;
  bad_input(what + ": this build has no image output (configured without OpenCV); cannot write '" + path + "'");
#endif
}

at::Tensor read_grey_image(const std::string& path, int64_t h, int64_t w, const std::string& what) {
#ifdef SCORCH_WITH_OPENCV
  check_input_file(path, what);
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
