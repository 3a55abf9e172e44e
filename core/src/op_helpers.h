// Shared checks and shorthands for the op implementations (private to core/).
#pragma once

#include <initializer_list>
#include <string>

#include "clarena/core/autograd.h"
#include "clarena/core/tensor.h"
#include "clarena/kernels/backend.h"

namespace clarena::detail {

inline kernels::Backend& backend(const Tensor& t) {
  return kernels::backend_for(t.device());
}

/// Every defined input on one device and, for floats, one element type.
void check_inputs(const char* op, std::initializer_list<Tensor> inputs);
/// The tensor is float32 or float64.
void check_float(const char* op, const Tensor& t);
/// The tensor has exactly `rank` dimensions.
void check_rank(const char* op, const Tensor& t, int64_t rank);
[[noreturn]] void shape_mismatch(const char* op, const Tensor& a, const Tensor& b,
                                 const std::string& why = "");

inline Tensor empty_like(const Tensor& t) {
  return Tensor::empty(t.shape(), t.dtype(), t.device());
}

/// Normalises a possibly negative dimension index, or throws ValueError naming the op.
int64_t wrap_dim(const char* op, int64_t dim, int64_t rank);

}  // namespace clarena::detail
