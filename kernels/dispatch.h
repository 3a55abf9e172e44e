// Element-type dispatch shared by the backends (private to kernels/).
#pragma once

#include <string>

#include "clarena/core/device.h"
#include "clarena/core/errors.h"

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

}  // namespace clarena::kernels
