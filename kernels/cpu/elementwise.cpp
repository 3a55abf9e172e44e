// CPU kernels: Element-wise kernels: binary ops with row broadcast, axpby, activations, bias +
// ReLU.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "clarena/kernels/backend.h"

namespace clarena::kernels::cpu {

template <typename T>
void binary(Binary op, Broadcast bc, int64_t rows, int64_t cols, const T* a, const T* b, T* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* ar = bc == Broadcast::RowA ? a : a + r * cols;
    const T* br = bc == Broadcast::RowB ? b : b + r * cols;
    T* o = out + r * cols;
    switch (op) {
      case Binary::Add:
        for (int64_t c = 0; c < cols; ++c)
          o[c] = ar[c] + br[c];
        break;
      case Binary::Sub:
        for (int64_t c = 0; c < cols; ++c)
          o[c] = ar[c] - br[c];
        break;
      case Binary::Mul:
        for (int64_t c = 0; c < cols; ++c)
          o[c] = ar[c] * br[c];
        break;
    }
  }
}

template <typename T>
void axpby(int64_t n, T alpha, const T* x, T beta, T* y) {
  if (beta == T(0)) {
    for (int64_t i = 0; i < n; ++i)
      y[i] = alpha * x[i];
  } else {
    for (int64_t i = 0; i < n; ++i)
      y[i] = alpha * x[i] + beta * y[i];
  }
}

/// torch.relu, which is clamp_min(x, 0): NaN stays NaN and -0 stays -0 (only x < 0 becomes 0).
template <typename T>
inline T relu_value(T x) {
  return x < T(0) ? T(0) : x;
}

/// torch's relu backward, threshold_backward(dy, y, 0): `y <= 0 ? 0 : dy` on the output, so a
/// NaN output (NaN <= 0 is false) passes its gradient through.
template <typename T>
inline T relu_grad(T y, T dy) {
  return y <= T(0) ? T(0) : dy;
}

template <typename T>
void unary_forward(Unary f, int64_t n, const T* x, T* y) {
  switch (f) {
    case Unary::Relu:
      for (int64_t i = 0; i < n; ++i)
        y[i] = relu_value(x[i]);
      break;
    case Unary::Tanh:
      for (int64_t i = 0; i < n; ++i)
        y[i] = std::tanh(x[i]);
      break;
    case Unary::Sigmoid:
      for (int64_t i = 0; i < n; ++i)
        y[i] = T(1) / (T(1) + std::exp(-x[i]));
      break;
    case Unary::Exp:
      for (int64_t i = 0; i < n; ++i)
        y[i] = std::exp(x[i]);
      break;
  }
}

template <typename T>
void unary_backward(Unary f, int64_t n, const T* y, const T* dy, T* dx) {
  switch (f) {
    case Unary::Relu:
      for (int64_t i = 0; i < n; ++i)
        dx[i] = relu_grad(y[i], dy[i]);
      break;
    case Unary::Tanh:
      for (int64_t i = 0; i < n; ++i)
        dx[i] = dy[i] * (T(1) - y[i] * y[i]);
      break;
    case Unary::Sigmoid:
      for (int64_t i = 0; i < n; ++i)
        dx[i] = dy[i] * y[i] * (T(1) - y[i]);
      break;
    case Unary::Exp:
      for (int64_t i = 0; i < n; ++i)
        dx[i] = dy[i] * y[i];
      break;
  }
}

template <typename T>
void bias_relu(int64_t rows, int64_t cols, const T* bias, T* y) {
  for (int64_t r = 0; r < rows; ++r) {
    T* yr = y + r * cols;
    for (int64_t c = 0; c < cols; ++c)
      yr[c] = relu_value(yr[c] + bias[c]);
  }
}

}  // namespace clarena::kernels::cpu
