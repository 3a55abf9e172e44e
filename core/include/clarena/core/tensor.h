// Tensor: a cheap, shared handle to a shape, a storage buffer and autograd state.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "clarena/core/device.h"
#include "clarena/core/errors.h"

namespace clarena {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& shape);  // "[128, 784]"
/// Number of elements of `shape`. Throws ShapeError, naming `op` and the shape, when a
/// dimension is negative or the product of the non-zero dimensions overflows int64 (so every
/// partial product of a valid shape fits, whatever its zero dimensions).
int64_t shape_numel(const Shape& shape, const char* op = "shape");
/// Bytes of a contiguous tensor of `shape` and `dtype`: shape_numel's checks, and the byte
/// count must fit int64 too. Every tensor's storage size comes from here.
size_t shape_nbytes(const Shape& shape, DType dtype, const char* op = "shape");

class Generator;
class Tensor;
namespace autograd {
class Node;
}

/// A contiguous buffer on one device, freed through that device's backend.
struct Storage {
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data = nullptr;
  size_t bytes = 0;
  Device device;
  /// Moves (to a value no storage has had) at every write in place through the library: see
  /// Tensor::version.
  std::atomic<uint64_t> version;
};

struct TensorImpl {
  Shape shape;
  DType dtype = DType::Float32;
  std::shared_ptr<Storage> storage;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;
  std::shared_ptr<autograd::Node> grad_fn;  // null for leaves and for untracked results
};

class Tensor {
 public:
  Tensor() = default;  // undefined: no storage
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // --- factories ---------------------------------------------------------------------
  static Tensor empty(const Shape& shape, DType dtype = DType::Float32, Device device = {});
  static Tensor zeros(const Shape& shape, DType dtype = DType::Float32, Device device = {});
  static Tensor ones(const Shape& shape, DType dtype = DType::Float32, Device device = {});
  static Tensor full(const Shape& shape, double value, DType dtype = DType::Float32,
                     Device device = {});
  /// Uniform in [low, high) and normal(mean, std), drawn on the host from `gen` so the same
  /// seed gives the same numbers on every device.
  static Tensor uniform(const Shape& shape, double low, double high, Generator& gen,
                        DType dtype = DType::Float32, Device device = {});
  static Tensor normal(const Shape& shape, double mean, double std, Generator& gen,
                       DType dtype = DType::Float32, Device device = {});
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape,
                            Device device = {});
  static Tensor from_vector(const std::vector<double>& values, const Shape& shape,
                            Device device = {});
  static Tensor from_vector(const std::vector<int64_t>& values, const Shape& shape,
                            Device device = {});
  /// Copies numel(shape) elements of `dtype` from host memory.
  static Tensor from_data(const void* data, const Shape& shape, DType dtype, Device device = {});

  // --- accessors ---------------------------------------------------------------------
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(shape()); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * itemsize(dtype()); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device; }
  std::string str() const;  // "float32[128, 10] on cpu"

  /// The data, for the library's kernels. Writing through it is allowed only followed by
  /// bump_version() (data<T>() bumps by itself).
  void* raw() const { return impl().storage->data; }
  /// Typed pointer to the data; checks the element type (any device). Counts as a write: it
  /// bumps the version.
  template <typename T>
  T* data() const;
  /// Changes whenever the data is written in place (copy_, the optimizer updates, batch norm's
  /// running statistics, data<T>(), bump_version), and is never the same for two storages: a
  /// kernel may keep work derived from the data (a packed weight) while it stays the same.
  uint64_t version() const { return impl().storage->version.load(std::memory_order_acquire); }
  void bump_version() const;
  /// Copies the elements to the host (checks the element type).
  template <typename T>
  std::vector<T> to_vector() const;
  /// The single element of a one-element tensor, as double.
  double item() const;

  // --- views and copies --------------------------------------------------------------
  Tensor reshape(const Shape& shape) const;  // shares storage; one dim may be -1
  Tensor clone() const;                      // a new buffer; keeps the graph
  Tensor detach() const;                     // shares storage, no history, no grad
  Tensor to(Device device) const;            // itself when already there
  void copy_(const Tensor& src);             // in place, no graph; shapes must match
  /// Points this handle (and every copy of it) at `src`'s storage, shape and dtype; keeps
  /// requires_grad, drops the gradient. Module::to(device) moves parameters this way.
  void set_data(const Tensor& src);

  // --- autograd ----------------------------------------------------------------------
  bool requires_grad() const { return impl().requires_grad; }
  /// Only on leaves: a non-leaf's requirement is decided by its inputs.
  Tensor& requires_grad_(bool on = true);
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  const std::shared_ptr<autograd::Node>& grad_fn() const { return impl().grad_fn; }
  Tensor grad() const { return Tensor(impl().grad); }
  void set_grad(const Tensor& grad);
  void zero_grad() { impl().grad.reset(); }  // to undefined, like set_to_none
  /// Back-propagates from this tensor: a scalar, or any shape with an explicit `grad`.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  TensorImpl& impl() const;
  std::shared_ptr<TensorImpl> impl_;
};

/// Throws DTypeError unless the tensor holds `dtype`; `what` names the op or parameter.
void check_dtype(const Tensor& t, DType dtype, const std::string& what);

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::Float32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::Float64;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::Int64;
}

template <typename T>
T* Tensor::data() const {
  check_dtype(*this, dtype_of<T>(), "Tensor::data");
  bump_version();
  return static_cast<T*>(raw());
}

namespace detail {
/// Throws OutOfMemory naming the tensor that to_vector could not copy to the host.
[[noreturn]] void host_copy_failed(const Tensor& t);
}  // namespace detail

template <typename T>
std::vector<T> Tensor::to_vector() const {
  check_dtype(*this, dtype_of<T>(), "Tensor::to_vector");
  std::vector<T> out;
  // Every tensor's size fits int64 bytes (shape_nbytes), so it fits a vector's max_size();
  // a failed allocation still becomes our error, not std::bad_alloc.
  try {
    out.resize(static_cast<size_t>(numel()));
  } catch (const std::bad_alloc&) {
    detail::host_copy_failed(*this);
  } catch (const std::length_error&) {
    detail::host_copy_failed(*this);
  }
  Tensor host = to(Device::cpu());
  std::copy_n(static_cast<const T*>(host.raw()), out.size(), out.begin());
  return out;
}

}  // namespace clarena
