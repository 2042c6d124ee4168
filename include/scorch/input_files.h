// Data and masks read from files named in a config: guidance references and masks,
// SDEdit's init_image and the inpainting mask. Errors name the config key (`where`).
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace scorch {

// Samples as [n, *shape], n = 1 or `batch`: a .npy (float32 or float64, kept) holding one
// sample ([*shape] or [1, *shape]) or [batch, *shape]; or an image file (PNG, JPEG, ...)
// for one-channel image shapes, grey values resized to H x W and mapped to [-1, 1].
at::Tensor read_samples(const std::string& file, const std::string& where, const std::vector<int64_t>& shape,
                        int64_t batch = 1);

// A mask broadcastable to one sample, float32: an image (grey values in [0, 1], resized to
// H x W) for image shapes, or a .npy of the sample's shape (or H x W).
at::Tensor read_mask(const std::string& file, const std::string& where, const std::vector<int64_t>& shape);

}  // namespace scorch
