#include "scorch/input_files.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <stdexcept>

#include "scorch/error.h"
#include "scorch/image.h"
#include "scorch/io.h"

namespace scorch {

namespace {

bool is_npy(const std::string& path) { return path.size() > 4 && path.substr(path.size() - 4) == ".npy"; }

std::string existing_file(const std::string& file, const std::string& where) {
  const std::string path = find_input_file(file);
  check_input_file(path, where);
  return path;
}

}  // namespace

at::Tensor read_samples(const std::string& file, const std::string& where, const std::vector<int64_t>& shape,
                        int64_t batch) {
  const std::string path = existing_file(file, where);
  at::Tensor x;
  if (is_npy(path)) {
    x = read_npy(path, where);
    if (!at::isFloatingType(x.scalar_type())) bad_input(where + ": '" + path + "': expected float32 or float64 data");
  } else {
    if (!is_image_shape(shape) || (shape.size() == 3 && shape[0] != 1))
      bad_input(where + ": image files are read for one-channel image samples only; give a .npy");
    x = read_grey_image(path, shape[shape.size() - 2], shape.back(), where) * 2.0 - 1.0;
  }
  std::vector<int64_t> one = {1}, full = {batch};
  one.insert(one.end(), shape.begin(), shape.end());
  full.insert(full.end(), shape.begin(), shape.end());
  const int64_t sample_numel = at::zeros(shape, at::kByte).numel();
  if (x.numel() == sample_numel && (x.sizes() == at::IntArrayRef(shape) || x.sizes() == at::IntArrayRef(one) ||
                                    !is_npy(path))) {
    x = x.reshape(one);
  } else if (batch <= 1 || x.sizes() != at::IntArrayRef(full)) {
    bad_input(where + ": '" + path + "' has shape " + shape_string(x.sizes()) + "; expected one sample " +
              shape_string(shape) + (batch > 1 ? " or [batch, *shape] = " + shape_string(full) : ""));
  }
  if (!at::isfinite(x).all().item<bool>()) bad_input(where + ": '" + path + "' has non-finite values");
  return x;
}

at::Tensor read_mask(const std::string& file, const std::string& where, const std::vector<int64_t>& shape) {
  const std::string path = existing_file(file, where);
  at::Tensor m;
  if (is_npy(path)) {
    m = read_npy(path, where).to(at::kFloat);
  } else {
    if (!is_image_shape(shape))
      bad_input(where + ": samples of shape " + shape_string(shape) + " are not images; give a .npy mask");
    m = read_grey_image(path, shape[shape.size() - 2], shape.back(), where);
  }
  if (!at::isfinite(m).all().item<bool>()) bad_input(where + ": '" + path + "' has non-finite values");
  const at::Tensor probe = at::zeros(shape);
  try {
    if ((probe * m).sizes() != probe.sizes()) throw std::runtime_error("");
  } catch (const std::exception&) {
    bad_input(where + ": mask of shape " + shape_string(m.sizes()) + " does not broadcast to a sample " +
              shape_string(shape));
  }
  return m;
}

}  // namespace scorch
