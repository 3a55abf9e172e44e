// Typed errors. Every check in the library throws one of these, in every build type:
// the message names the op, shapes, file, offset or value at fault. Part of the base (no
// dependency on any layer), so the kernels throw the same types as the ops.
#pragma once

#include <stdexcept>
#include <string>

namespace clarena {

/// Base of every error the library throws.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Shapes that do not fit an op: the message names the op and both shapes.
class ShapeError : public Error {
 public:
  using Error::Error;
};

/// Element types that do not fit an op (float32 vs float64 vs int64).
class DTypeError : public Error {
 public:
  using Error::Error;
};

/// Tensors on different devices, or a device that does not exist in this build or machine.
class DeviceError : public Error {
 public:
  using Error::Error;
};

/// Misuse of the autograd graph (backward through a released graph, non-scalar root...).
class AutogradError : public Error {
 public:
  using Error::Error;
};

/// A value out of its valid range (an index, a label, a hyper-parameter, a config value).
class ValueError : public Error {
 public:
  using Error::Error;
};

/// A file that is missing, truncated, corrupt or does not match: names the file and offset.
class IOError : public Error {
 public:
  using Error::Error;
};

/// A failed CUDA or cuBLAS call: names the call, file and line.
class CudaError : public Error {
 public:
  using Error::Error;
};

/// Device memory exhausted even after the caching allocator flushed its cache.
class OutOfMemory : public Error {
 public:
  using Error::Error;
};

}  // namespace clarena
