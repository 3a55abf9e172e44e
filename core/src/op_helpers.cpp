#include "op_helpers.h"

namespace clarena::detail {

void check_inputs(const char* op, std::initializer_list<Tensor> inputs) {
  const Tensor* first = nullptr;
  for (const Tensor& t : inputs) {
    if (!t.defined()) continue;
    if (!first) {
      first = &t;
      continue;
    }
    if (t.device() != first->device())
      throw DeviceError(std::string(op) + ": inputs on different devices: " + first->str() +
                        " and " + t.str());
    if (t.dtype() != first->dtype())
      throw DTypeError(std::string(op) + ": inputs of different element types: " + first->str() +
                       " and " + t.str());
  }
}

void check_float(const char* op, const Tensor& t) {
  if (t.dtype() == DType::Int64)
    throw DTypeError(std::string(op) + ": expected a float32 or float64 tensor, got " + t.str());
}

void check_rank(const char* op, const Tensor& t, int64_t rank) {
  if (t.dim() != rank)
    throw ShapeError(std::string(op) + ": expected a " + std::to_string(rank) +
                     "-D tensor, got shape " + shape_str(t.shape()));
}

void shape_mismatch(const char* op, const Tensor& a, const Tensor& b, const std::string& why) {
  throw ShapeError(std::string(op) + ": shapes " + shape_str(a.shape()) + " and " +
                   shape_str(b.shape()) + " do not match" + (why.empty() ? "" : " (" + why + ")"));
}

int64_t wrap_dim(const char* op, int64_t dim, int64_t rank) {
  if (dim < -rank || dim >= rank)
    throw ValueError(std::string(op) + ": dimension " + std::to_string(dim) +
                     " out of range for a " + std::to_string(rank) + "-D tensor");
  return dim < 0 ? dim + rank : dim;
}

}  // namespace clarena::detail
