// CPU kernels: Log-softmax and the fused softmax cross-entropy, forward and backward (Eigen
// vectorises exp).
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <string>

#include "clarena/core/errors.h"

namespace clarena::kernels::cpu {

template <typename T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

/// log(sum(exp(x))) of one row, stable for large values; Eigen vectorises the exp.
template <typename T>
T row_logsumexp(const T* x, int64_t cols) {
  ConstArrayMap<T> row(x, cols);
  const T mx = row.maxCoeff();
  if (!std::isfinite(mx)) return mx;  // -inf or nan rows propagate honestly
  return mx + std::log((row - mx).exp().sum());
}

template <typename T>
void log_softmax_forward(int64_t rows, int64_t cols, const T* x, T* y) {
  for (int64_t r = 0; r < rows; ++r) {
    T lse = row_logsumexp(x + r * cols, cols);
    for (int64_t c = 0; c < cols; ++c)
      y[r * cols + c] = x[r * cols + c] - lse;
  }
}

template <typename T>
void log_softmax_backward(int64_t rows, int64_t cols, const T* y, const T* dy, T* dx) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * cols;
    const T* dyr = dy + r * cols;
    T s = 0;
    for (int64_t c = 0; c < cols; ++c)
      s += dyr[c];
    ArrayMap<T>(dx + r * cols, cols) =
        ConstArrayMap<T>(dyr, cols) - ConstArrayMap<T>(yr, cols).exp() * s;
  }
}

inline void check_labels(int64_t rows, int64_t cols, const int64_t* labels) {
  for (int64_t r = 0; r < rows; ++r)
    if (labels[r] < 0 || labels[r] >= cols)
      throw ValueError("cross_entropy: label " + std::to_string(labels[r]) + " at row " +
                       std::to_string(r) + " is outside [0, " + std::to_string(cols) + ")");
}

template <typename T>
void cross_entropy_forward(int64_t rows, int64_t cols, const T* x, const int64_t* labels, T* lse,
                           T* loss) {
  check_labels(rows, cols, labels);
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    lse[r] = row_logsumexp(x + r * cols, cols);
    total += lse[r] - x[r * cols + labels[r]];
  }
  loss[0] = static_cast<T>(total / static_cast<double>(rows));
}

template <typename T>
void cross_entropy_backward(int64_t rows, int64_t cols, const T* x, const int64_t* labels,
                            const T* lse, const T* grad_loss, T* dx) {
  const T scale = grad_loss[0] / static_cast<T>(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* dr = dx + r * cols;
    ArrayMap<T>(dr, cols) = scale * (ConstArrayMap<T>(xr, cols) - lse[r]).exp();
    dr[labels[r]] -= scale;
  }
}

}  // namespace clarena::kernels::cpu
