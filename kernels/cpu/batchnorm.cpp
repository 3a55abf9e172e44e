// CPU kernels: Batch normalisation over the rows of [rows, cols]: training, eval, backward.
#pragma once

#include <cmath>
#include <cstdint>

namespace clarena::kernels::cpu {

template <typename T>
void batch_norm_train(int64_t rows, int64_t cols, const T* x, const T* gamma, const T* beta,
                      double eps, double momentum, T* running_mean, T* running_var, T* y,
                      T* save_mean, T* save_invstd) {
  for (int64_t c = 0; c < cols; ++c) {
    double mean = 0, sq = 0;
    for (int64_t r = 0; r < rows; ++r)
      mean += x[r * cols + c];
    mean /= static_cast<double>(rows);
    for (int64_t r = 0; r < rows; ++r) {
      double d = x[r * cols + c] - mean;
      sq += d * d;
    }
    double var = sq / static_cast<double>(rows);
    double invstd = 1.0 / std::sqrt(var + eps);
    save_mean[c] = static_cast<T>(mean);
    save_invstd[c] = static_cast<T>(invstd);
    double unbiased = rows > 1 ? sq / static_cast<double>(rows - 1) : var;
    if (running_mean)
      running_mean[c] = static_cast<T>((1 - momentum) * running_mean[c] + momentum * mean);
    if (running_var)
      running_var[c] = static_cast<T>((1 - momentum) * running_var[c] + momentum * unbiased);
    const T g = gamma ? gamma[c] : T(1), b = beta ? beta[c] : T(0);
    for (int64_t r = 0; r < rows; ++r)
      y[r * cols + c] = static_cast<T>((x[r * cols + c] - mean) * invstd * g + b);
  }
}

template <typename T>
void batch_norm_eval(int64_t rows, int64_t cols, const T* x, const T* gamma, const T* beta,
                     const T* running_mean, const T* running_var, double eps, T* y) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      T invstd = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps));
      y[r * cols + c] = (x[r * cols + c] - running_mean[c]) * invstd * (gamma ? gamma[c] : T(1)) +
                        (beta ? beta[c] : T(0));
    }
}

template <typename T>
void batch_norm_backward(int64_t rows, int64_t cols, const T* x, const T* gamma, const T* mean,
                         const T* invstd, const T* dy, T* dx, T* dgamma, T* dbeta) {
  for (int64_t c = 0; c < cols; ++c) {
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double xhat = (x[r * cols + c] - mean[c]) * invstd[c];
      sum_dy += dy[r * cols + c];
      sum_dy_xhat += dy[r * cols + c] * xhat;
    }
    if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xhat);
    if (dbeta) dbeta[c] = static_cast<T>(sum_dy);
    if (!dx) continue;
    const double n = static_cast<double>(rows), k = (gamma ? gamma[c] : T(1)) * invstd[c] / n;
    for (int64_t r = 0; r < rows; ++r) {
      double xhat = (x[r * cols + c] - mean[c]) * invstd[c];
      dx[r * cols + c] = static_cast<T>(k * (n * dy[r * cols + c] - sum_dy - xhat * sum_dy_xhat));
    }
  }
}

}  // namespace clarena::kernels::cpu
