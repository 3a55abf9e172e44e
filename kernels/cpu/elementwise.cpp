// CPU kernels: Element-wise kernels: binary ops with row broadcast, axpby, activations, bias +
// ReLU.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../dispatch.h"
#include "cpu_backend.h"

namespace clarena::kernels::cpu {
namespace {

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

}  // namespace

void CpuBackend::binary(Binary op, Broadcast bc, DType t, int64_t rows, int64_t cols,
                        const void* a_, const void* b_, void* out_) {
  dispatch_float(t, "binary", [&]<typename T>(T*) {
    const T* a = CLARENA_CTYPED(a_);
    const T* b = CLARENA_CTYPED(b_);
    T* out = CLARENA_TYPED(out_);
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
  });
}

void CpuBackend::axpby(DType t, int64_t n, double alpha_, const void* x_, double beta_, void* y_) {
  dispatch_float(t, "axpby", [&]<typename T>(T*) {
    const T alpha = T(alpha_), beta = T(beta_);
    const T* x = CLARENA_CTYPED(x_);
    T* y = CLARENA_TYPED(y_);
    if (beta == T(0)) {
      for (int64_t i = 0; i < n; ++i)
        y[i] = alpha * x[i];
    } else {
      for (int64_t i = 0; i < n; ++i)
        y[i] = alpha * x[i] + beta * y[i];
    }
  });
}

void CpuBackend::unary_forward(Unary f, DType t, int64_t n, const void* x_, void* y_) {
  dispatch_float(t, "unary", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(x_);
    T* y = CLARENA_TYPED(y_);
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
  });
}

void CpuBackend::unary_backward(Unary f, DType t, int64_t n, const void* y_, const void* dy_,
                                void* dx_) {
  dispatch_float(t, "unary_backward", [&]<typename T>(T*) {
    const T* y = CLARENA_CTYPED(y_);
    const T* dy = CLARENA_CTYPED(dy_);
    T* dx = CLARENA_TYPED(dx_);
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
  });
}

void CpuBackend::bias_relu(DType t, int64_t rows, int64_t cols, const void* bias_, void* y_) {
  dispatch_float(t, "bias_relu", [&]<typename T>(T*) {
    const T* bias = CLARENA_CTYPED(bias_);
    T* y = CLARENA_TYPED(y_);
    for (int64_t r = 0; r < rows; ++r) {
      T* yr = y + r * cols;
      for (int64_t c = 0; c < cols; ++c)
        yr[c] = relu_value(yr[c] + bias[c]);
    }
  });
}

}  // namespace clarena::kernels::cpu
