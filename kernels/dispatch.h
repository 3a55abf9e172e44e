// Element-type dispatch shared by the CPU and CUDA backends (private to kernels/).
#pragma once

#include <cstdint>
#include <string>

#include "clarena/base/device.h"
#include "clarena/base/errors.h"

namespace clarena::kernels {

/// Calls fn with a typed null pointer selecting float or double (fn is a template lambda
/// `[&]<typename T>(T*) {...}`); int64 throws DTypeError naming the op.
template <typename Fn>
void dispatch_float(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::Float32:
      fn(static_cast<float*>(nullptr));
      return;
    case DType::Float64:
      fn(static_cast<double*>(nullptr));
      return;
    case DType::Int64:
      break;
  }
  throw DTypeError(std::string(op) + ": int64 is not supported, expected float32 or float64");
}

/// As dispatch_float, with int64 (int64_t) as a third type: for the kernels that move or compare
/// elements without arithmetic (fill, equal).
template <typename Fn>
void dispatch_all(DType t, const char* op, Fn&& fn) {
  if (t == DType::Int64) {
    fn(static_cast<int64_t*>(nullptr));
    return;
  }
  dispatch_float(t, op, fn);
}

}  // namespace clarena::kernels

/// A void pointer of the backend interface as the dispatched element type T.
#define CLARENA_TYPED(ptr) static_cast<T*>(ptr)
#define CLARENA_CTYPED(ptr) static_cast<const T*>(ptr)
