// sum_i c_i x_i with one allocation: the linear combinations every solver update is made
// of. On the CPU one fused pass over memory (kernels/lincomb.cpp); elsewhere ATen ops.
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <utility>
#include <vector>

namespace scorch {

at::Tensor lincomb(std::initializer_list<std::pair<double, at::Tensor>> terms);
at::Tensor lincomb(const std::vector<std::pair<double, at::Tensor>>& terms);

}  // namespace scorch
