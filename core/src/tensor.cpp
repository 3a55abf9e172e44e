#include "clarena/core/tensor.h"

#include <sstream>

#include "clarena/core/autograd.h"
#include "clarena/core/random.h"
#include "clarena/kernels/backend.h"

namespace clarena {

std::string shape_str(const Shape& shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i)
    out << (i ? ", " : "") << shape[i];
  out << ']';
  return out.str();
}

int64_t shape_numel(const Shape& shape, const char* op) {
  int64_t nonzero = 1;  // product of the non-zero dimensions: must fit, so every part does
  bool empty = false;
  for (int64_t d : shape) {
    if (d < 0)
      throw ShapeError(std::string(op) + ": negative dimension in shape " + shape_str(shape));
    if (d == 0)
      empty = true;
    else if (__builtin_mul_overflow(nonzero, d, &nonzero))
      throw ShapeError(std::string(op) + ": shape " + shape_str(shape) +
                       " has more elements than int64 can count (overflow)");
  }
  return empty ? 0 : nonzero;
}

size_t shape_nbytes(const Shape& shape, DType dtype, const char* op) {
  const int64_t n = shape_numel(shape, op);
  int64_t bytes = 0;
  if (__builtin_mul_overflow(n, static_cast<int64_t>(itemsize(dtype)), &bytes))
    throw ShapeError(std::string(op) + ": " + dtype_name(dtype) + shape_str(shape) + " needs " +
                     std::to_string(n) + " elements of " + std::to_string(itemsize(dtype)) +
                     " bytes: more bytes than int64 can count (overflow)");
  return static_cast<size_t>(bytes);
}

namespace detail {
void host_copy_failed(const Tensor& t) {
  throw OutOfMemory("Tensor::to_vector: cannot allocate host memory for " + t.str() + " (" +
                    std::to_string(t.nbytes()) + " bytes)");
}
}  // namespace detail

namespace {
/// Versions are drawn from one counter, so no two storages ever share one.
uint64_t next_version() {
  static std::atomic<uint64_t> counter{0};
  return counter.fetch_add(1, std::memory_order_relaxed) + 1;
}
}  // namespace

Storage::Storage(size_t bytes_, Device device_)
    : bytes(bytes_), device(device_), version(next_version()) {
  data = kernels::backend_for(device).allocate(bytes);
}

void Tensor::bump_version() const {
  impl().storage->version.store(next_version(), std::memory_order_release);
}

Storage::~Storage() {
  // Never throws from a destructor: the backend's deallocate does not throw by contract.
  kernels::backend_for(device).deallocate(data, bytes);
}

void check_dtype(const Tensor& t, DType dtype, const std::string& what) {
  if (t.dtype() != dtype)
    throw DTypeError(what + ": expected " + dtype_name(dtype) + ", got " + t.str());
}

TensorImpl& Tensor::impl() const {
  if (!impl_) throw ValueError("use of an undefined tensor");
  return *impl_;
}

// --- factories -------------------------------------------------------------------------

namespace {
/// The one place storage is sized: refuses negative dimensions and overflowing element or
/// byte counts (naming `op`) before anything is allocated.
Tensor allocate(const char* op, const Shape& shape, DType dtype, Device device) {
  const size_t bytes = shape_nbytes(shape, dtype, op);
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(bytes, device);
  return Tensor(std::move(impl));
}

Tensor filled(const char* op, const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = allocate(op, shape, dtype, device);
  kernels::backend_for(device).fill(dtype, t.numel(), value, t.raw());
  return t;
}
}  // namespace

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  return allocate("empty", shape, dtype, device);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  return filled("full", shape, value, dtype, device);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  return filled("zeros", shape, 0.0, dtype, device);
}

Tensor Tensor::ones(const Shape& shape, DType dtype, Device device) {
  return filled("ones", shape, 1.0, dtype, device);
}

namespace {
template <typename Draw>
Tensor random_tensor(const char* op, const Shape& shape, DType dtype, Device device, Draw draw) {
  if (dtype == DType::Int64)
    throw DTypeError(std::string(op) + ": random factories make float32 or float64 tensors");
  Tensor host = allocate(op, shape, dtype, Device::cpu());
  const int64_t n = host.numel();
  if (dtype == DType::Float32) {
    float* p = host.data<float>();
    for (int64_t i = 0; i < n; ++i)
      p[i] = static_cast<float>(draw());
  } else {
    double* p = host.data<double>();
    for (int64_t i = 0; i < n; ++i)
      p[i] = draw();
  }
  return host.to(device);
}
}  // namespace

Tensor Tensor::uniform(const Shape& shape, double low, double high, Generator& gen, DType dtype,
                       Device device) {
  return random_tensor("uniform", shape, dtype, device,
                       [&] { return low + (high - low) * gen.uniform(); });
}

Tensor Tensor::normal(const Shape& shape, double mean, double std, Generator& gen, DType dtype,
                      Device device) {
  return random_tensor("normal", shape, dtype, device, [&] { return mean + std * gen.normal(); });
}

namespace {
Tensor copied(const char* op, const void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t = allocate(op, shape, dtype, device);
  kernels::backend_for(device).copy_from_host(t.raw(), data, t.nbytes());
  return t;
}

template <typename T>
Tensor from_values(const std::vector<T>& values, const Shape& shape, Device device) {
  if (values.size() != static_cast<uint64_t>(shape_numel(shape, "from_vector")))
    throw ShapeError("from_vector: " + std::to_string(values.size()) +
                     " values do not fill shape " + shape_str(shape));
  return copied("from_vector", values.data(), shape, dtype_of<T>(), device);
}
}  // namespace

Tensor Tensor::from_data(const void* data, const Shape& shape, DType dtype, Device device) {
  return copied("from_data", data, shape, dtype, device);
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& s, Device d) {
  return from_values(v, s, d);
}
Tensor Tensor::from_vector(const std::vector<double>& v, const Shape& s, Device d) {
  return from_values(v, s, d);
}
Tensor Tensor::from_vector(const std::vector<int64_t>& v, const Shape& s, Device d) {
  return from_values(v, s, d);
}

// --- accessors -------------------------------------------------------------------------

int64_t Tensor::size(int64_t d) const {
  const int64_t rank = dim();
  if (d < -rank || d >= rank)
    throw ValueError("size: dimension " + std::to_string(d) + " out of range for " + str());
  return shape()[static_cast<size_t>(d < 0 ? d + rank : d)];
}

std::string Tensor::str() const {
  if (!defined()) return "undefined tensor";
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " on " + device().str();
}

double Tensor::item() const {
  if (numel() != 1) throw ShapeError("item: expected a one-element tensor, got " + str());
  Tensor host = to(Device::cpu());
  switch (dtype()) {
    case DType::Float32:
      return *host.data<float>();
    case DType::Float64:
      return *host.data<double>();
    case DType::Int64:
      return static_cast<double>(*host.data<int64_t>());
  }
  return 0;
}

// --- views and copies ------------------------------------------------------------------

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape();
  impl->dtype = dtype();
  impl->storage = impl_->storage;
  return Tensor(std::move(impl));
}

void Tensor::copy_(const Tensor& src) {
  if (src.shape() != shape() || src.dtype() != dtype())
    throw ShapeError("copy_: source " + src.str() + " does not match destination " + str());
  bump_version();
  if (src.device() == device()) {
    kernels::backend_for(device()).copy(raw(), src.raw(), nbytes());
  } else if (src.device().is_cpu()) {
    kernels::backend_for(device()).copy_from_host(raw(), src.raw(), nbytes());
  } else if (device().is_cpu()) {
    kernels::backend_for(src.device()).copy_to_host(raw(), src.raw(), nbytes());
  } else {
    copy_(src.to(Device::cpu()));  // between two GPUs, through the host
  }
}

void Tensor::set_data(const Tensor& src) {
  TensorImpl& self = impl();
  self.shape = src.shape();
  self.dtype = src.dtype();
  self.storage = src.impl().storage;
  self.grad.reset();
}

Tensor Tensor::to(Device target) const {
  if (device() == target) return *this;
  Tensor out = empty(shape(), dtype(), target);
  out.copy_(*this);
  // Moving keeps the autograd role of a leaf (module.to(device) moves parameters).
  out.impl_->requires_grad = requires_grad() && is_leaf();
  return out;
}

Tensor& Tensor::requires_grad_(bool on) {
  if (!is_leaf())
    throw AutogradError("requires_grad_ on a non-leaf tensor (" + str() +
                        "): its requirement follows from its inputs; detach() it first");
  if (on && dtype() == DType::Int64)
    throw DTypeError("requires_grad_: int64 tensors cannot require grad");
  impl().requires_grad = on;
  return *this;
}

void Tensor::set_grad(const Tensor& grad) {
  if (grad.defined() && (grad.shape() != shape() || grad.dtype() != dtype()))
    throw ShapeError("set_grad: gradient " + grad.str() + " does not match " + str());
  impl().grad = grad.impl_ptr();
}

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  autograd::backward(*this, grad, retain_graph);
}

}  // namespace clarena
