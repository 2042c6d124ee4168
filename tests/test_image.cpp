// Image reading (engine/image.cpp): PNG, JPEG, BMP and PNM files read back as grey values;
// a file's declared size is checked before a decoder allocates it (a PNG declaring a 2 GB
// chunk, found by fuzz/fuzz_image; images above 4096 x 4096); other formats are refused.
#include "scorch/image.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "scorch/error.h"

#ifdef SCORCH_WITH_OPENCV
#include <opencv2/imgcodecs.hpp>
#endif

namespace fs = std::filesystem;

namespace {

std::string message_of(const std::string& path) {
  try {
    scorch::read_grey_image(path, 4, 4, "init_image");
  } catch (const scorch::Error& e) {
    EXPECT_EQ(e.status(), scorch::Status::BadInput);
    return e.what();
  }
  return "";
}

class Image : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!scorch::images_supported()) GTEST_SKIP() << "built without OpenCV";
    dir_ = fs::temp_directory_path() / ("scorch_image_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name, const std::string& bytes) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  fs::path dir_;
};

#ifdef SCORCH_WITH_OPENCV
// Every accepted format reads back a uniform grey (value 128 / 255) to 1/255 (JPEG's loss).
TEST_F(Image, EveryFormatReadsBack) {
  const cv::Mat grey(30, 40, CV_8UC1, cv::Scalar(128));
  for (const char* ext : {".png", ".jpg", ".bmp", ".pgm"}) {
    const std::string p = (dir_ / (std::string("g") + ext)).string();
    ASSERT_TRUE(cv::imwrite(p, grey)) << ext;
    const at::Tensor x = scorch::read_grey_image(p, 3, 4, "init_image");
    EXPECT_EQ(x.sizes(), (std::vector<int64_t>{3, 4})) << ext;
    EXPECT_LT((x - 128.0 / 255.0).abs().max().item<double>(), 1.0 / 255.0 + 1e-6) << ext;
  }
  // a TIFF is a format scorch does not size-check: refused by name
  const std::string tiff = (dir_ / "g.tiff").string();
  if (cv::imwrite(tiff, grey)) EXPECT_NE(message_of(tiff).find("is not a PNG, JPEG, BMP or PNM image"), std::string::npos);
}
#endif

// Declared sizes above the limit are refused from the header, quickly and without decoding.
TEST_F(Image, DeclaredSizesAreCheckedBeforeDecoding) {
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_NE(message_of(file("big.pgm", "P5\n99999 99999\n255\n")).find("declares 99999 x 99999 pixels"), std::string::npos);
  EXPECT_NE(message_of(file("wide.pgm", "P5 # comment\n5000 4000 255\n")).find("declares 5000 x 4000"), std::string::npos);
  // BMP: width at 18, height at 22 (negative: top-down)
  std::string bmp = "BM" + std::string(24, '\0');
  bmp[18] = char(0x88), bmp[19] = char(0x13);  // 5000
  bmp[22] = char(0x78), bmp[23] = char(0xEC), bmp[24] = char(0xFF), bmp[25] = char(0xFF);  // -5000
  EXPECT_NE(message_of(file("big.bmp", bmp)).find("declares 5000 x 5000"), std::string::npos);
  // JPEG: an APP0 segment, then a start of frame declaring 60000 x 60000
  const std::string jpeg = std::string("\xFF\xD8\xFF\xE0\x00\x04\x00\x00\xFF\xC0\x00\x0B\x08\xEA\x60\xEA\x60\x01\x01\x11\x00", 21);
  EXPECT_NE(message_of(file("big.jpg", jpeg)).find("declares 60000 x 60000"), std::string::npos);
  EXPECT_NE(message_of(file("zero.pgm", "P5 0 7 255\n")).find("declares 0 x 7"), std::string::npos);
  EXPECT_NE(message_of(file("short.jpg", std::string("\xFF\xD8\xFF\xE0\x00\x10", 6))).find("truncated"), std::string::npos);
  EXPECT_NE(message_of(file("text.txt", "hello")).find("is not a PNG, JPEG, BMP or PNM image"), std::string::npos);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
}

// The fuzzer's PNG: a 4 x 4 image whose tEXt chunk declares 0x7a00001f bytes; libpng
// allocated them (2 GB) before finding the file short. Now our chunk walk refuses it.
TEST_F(Image, PngChunkLongerThanTheFileIsRefusedBeforeLibpng) {
  std::string png = std::string("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x04\x00\x00\x00\x04\x08\x00\x00\x00\x00\x8c\x9a\xc1\xa2", 33);
  png += std::string("\x7a\x00\x00\x1ftEXtscorch", 14);
  EXPECT_NE(message_of(file("chunk.png", png)).find("is truncated (a chunk runs past the end)"), std::string::npos);
}

}  // namespace
