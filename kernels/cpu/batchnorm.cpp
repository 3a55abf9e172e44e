// CPU kernels: Batch normalisation per column of [rows, cols, inner] (inner = 1 for [B, C],
// H·W for [N, C, H, W]): training, eval, backward. Each column's sums run over r, then i, in
// double; with inner = 1 the loops are exactly the 2-D ones.
#include <cmath>
#include <cstdint>

#include "../dispatch.h"
#include "cpu_backend.h"

namespace clarena::kernels::cpu {

void CpuBackend::batch_norm_train(DType t, int64_t rows, int64_t cols, int64_t inner,
                                  const void* x_, const void* gamma_, const void* beta_, double eps,
                                  double momentum, void* running_mean_, void* running_var_,
                                  void* y_, void* save_mean_, void* save_invstd_) {
  dispatch_float(t, "batch_norm", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(x_);
    const T* gamma = CLARENA_CTYPED(gamma_);
    const T* beta = CLARENA_CTYPED(beta_);
    T* running_mean = CLARENA_TYPED(running_mean_);
    T* running_var = CLARENA_TYPED(running_var_);
    T* y = CLARENA_TYPED(y_);
    T* save_mean = CLARENA_TYPED(save_mean_);
    T* save_invstd = CLARENA_TYPED(save_invstd_);
    const int64_t count = rows * inner;
    for (int64_t c = 0; c < cols; ++c) {
      double mean = 0, sq = 0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < inner; ++i)
          mean += x[(r * cols + c) * inner + i];
      mean /= static_cast<double>(count);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < inner; ++i) {
          double d = x[(r * cols + c) * inner + i] - mean;
          sq += d * d;
        }
      double var = sq / static_cast<double>(count);
      double invstd = 1.0 / std::sqrt(var + eps);
      save_mean[c] = static_cast<T>(mean);
      save_invstd[c] = static_cast<T>(invstd);
      double unbiased = count > 1 ? sq / static_cast<double>(count - 1) : var;
      if (running_mean)
        running_mean[c] = static_cast<T>((1 - momentum) * running_mean[c] + momentum * mean);
      if (running_var)
        running_var[c] = static_cast<T>((1 - momentum) * running_var[c] + momentum * unbiased);
      const T g = gamma ? gamma[c] : T(1), b = beta ? beta[c] : T(0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = (r * cols + c) * inner + i;
          y[k] = static_cast<T>((x[k] - mean) * invstd * g + b);
        }
    }
  });
}

void CpuBackend::batch_norm_eval(DType t, int64_t rows, int64_t cols, int64_t inner, const void* x_,
                                 const void* gamma_, const void* beta_, const void* running_mean_,
                                 const void* running_var_, double eps, void* y_) {
  dispatch_float(t, "batch_norm", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(x_);
    const T* gamma = CLARENA_CTYPED(gamma_);
    const T* beta = CLARENA_CTYPED(beta_);
    const T* running_mean = CLARENA_CTYPED(running_mean_);
    const T* running_var = CLARENA_CTYPED(running_var_);
    T* y = CLARENA_TYPED(y_);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        T invstd = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps));
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t k = (r * cols + c) * inner + i;
          y[k] = (x[k] - running_mean[c]) * invstd * (gamma ? gamma[c] : T(1)) +
                 (beta ? beta[c] : T(0));
        }
      }
  });
}

void CpuBackend::batch_norm_backward(DType t, int64_t rows, int64_t cols, int64_t inner,
                                     const void* x_, const void* gamma_, const void* save_mean,
                                     const void* save_invstd, const void* dy_, void* dx_,
                                     void* dgamma_, void* dbeta_) {
  dispatch_float(t, "batch_norm_backward", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(x_);
    const T* gamma = CLARENA_CTYPED(gamma_);
    const T* mean = CLARENA_CTYPED(save_mean);
    const T* invstd = CLARENA_CTYPED(save_invstd);
    const T* dy = CLARENA_CTYPED(dy_);
    T* dx = CLARENA_TYPED(dx_);
    T* dgamma = CLARENA_TYPED(dgamma_);
    T* dbeta = CLARENA_TYPED(dbeta_);
    for (int64_t c = 0; c < cols; ++c) {
      double sum_dy = 0, sum_dy_xhat = 0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t j = (r * cols + c) * inner + i;
          double xhat = (x[j] - mean[c]) * invstd[c];
          sum_dy += dy[j];
          sum_dy_xhat += dy[j] * xhat;
        }
      if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xhat);
      if (dbeta) dbeta[c] = static_cast<T>(sum_dy);
      if (!dx) continue;
      const double n = static_cast<double>(rows * inner),
                   k = (gamma ? gamma[c] : T(1)) * invstd[c] / n;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t j = (r * cols + c) * inner + i;
          double xhat = (x[j] - mean[c]) * invstd[c];
          dx[j] = static_cast<T>(k * (n * dy[j] - sum_dy - xhat * sum_dy_xhat));
        }
    }
  });
}

}  // namespace clarena::kernels::cpu
