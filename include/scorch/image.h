// PNG image grids (OpenCV). Samples in [-1, 1] map to 0..255.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace scorch {

// Whether this build can write images (OpenCV found at configure time).
bool images_supported();

// samples: [B, C, H, W] with C = 1 or 3, or [B, H, W]. nrow: images per row (0: ceil(sqrt(B))).
// Written atomically; errors name `what` (e.g. "output.png").
// text: tEXt chunks written into the PNG (scorch/provenance.h).
void write_png_grid(const std::string& path, const at::Tensor& samples, int nrow, const std::string& what,
                    const std::map<std::string, std::string>& text = {});
// The same grid as PNG bytes (the server's replies).
std::string encode_png_grid(const at::Tensor& samples, int nrow, const std::string& what,
                            const std::map<std::string, std::string>& text = {});

// Reads an image file (PNG, JPEG, ...) as grey values in [0, 1], resized to h x w with
// area interpolation: [h, w] float32. Errors name `what` (e.g. "guidance.terms[0].mask").
// PNG, JPEG, BMP and PNM files are read; one that declares more than kMaxImagePixels
// (4096 x 4096) is refused before it is decoded.
constexpr int64_t kMaxImagePixels = int64_t(1) << 24;
at::Tensor read_grey_image(const std::string& path, int64_t h, int64_t w, const std::string& what);

// Whether a sample shape (without batch) can be drawn as an image.
bool is_image_shape(const std::vector<int64_t>& shape);

}  // namespace scorch
