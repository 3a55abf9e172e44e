// CPU kernels: Log-softmax and the fused softmax cross-entropy, forward and backward (Eigen
// vectorises exp).
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "../dispatch.h"
#include "clarena/base/errors.h"
#include "cpu_backend.h"

namespace clarena::kernels::cpu {
namespace {

template <typename T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

/// A row's max and log(sum(exp(x - max))), the two halves of its logsumexp kept apart.
///
/// Results are formed as (x - max) - log_sum, as PyTorch's log_softmax does, never as
/// x - (max + log_sum): rounding max + log_sum to the element type first costs half an ulp of
/// the max (~5e-7 at logits near 10 in float32), which is the whole answer when the log
/// probability (the loss) is near zero. The exponentials are summed in double: the max's
/// term is exactly 1, and log_sum ~ sum - 1 lives in the digits a float sum would round off.
template <typename T>
struct RowLogSum {
  T max;
  double log_sum;  // log(sum): the log-normaliser relative to max
  double sum;      // sum(exp(x - max))
};

/// The row's max (Eigen's vectorised one). With a NaN in the row it may or may not be NaN;
/// either way the sum of exponentials is NaN, and so is everything computed from the row.
template <typename T>
T row_max(const T* x, int64_t cols) {
  return ConstArrayMap<T>(x, cols).maxCoeff();
}

/// sum(e) accumulated in double, in 8 interleaved lanes (vectorisable without reassociating
/// anything: the order is fixed by the row length alone).
template <typename T>
double sum_in_double(const T* e, int64_t cols) {
  constexpr int kLanes = 8;
  double lane[kLanes] = {};
  const int64_t full = cols - cols % kLanes;
  for (int64_t c = 0; c < full; c += kLanes)
    for (int j = 0; j < kLanes; ++j)
      lane[j] += static_cast<double>(e[c + j]);
  double sum = 0;
  for (int64_t c = full; c < cols; ++c)
    sum += static_cast<double>(e[c]);
  for (int j = 0; j < kLanes; ++j)
    sum += lane[j];
  return sum;
}

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

/// Writes exp(x - max) to e and returns the row's statistics. A row whose max is not finite
/// (+inf, NaN, or every entry -inf) is all NaN in PyTorch's log_softmax (x - max is NaN for
/// the max), and so are its loss and gradients here.
template <typename T>
RowLogSum<T> row_logsum(const T* x, int64_t cols, T* e) {
  const T mx = row_max(x, cols);
  if (!std::isfinite(mx)) return {mx, kNaN, kNaN};  // e untouched: the caller writes NaN
  ArrayMap<T>(e, cols) = (ConstArrayMap<T>(x, cols) - mx).exp();
  const double sum = sum_in_double(e, cols);
  return {mx, std::log(sum), sum};
}

inline void check_labels(int64_t rows, int64_t cols, const int64_t* labels) {
  for (int64_t r = 0; r < rows; ++r)
    if (labels[r] < 0 || labels[r] >= cols)
      throw ValueError("cross_entropy: label " + std::to_string(labels[r]) + " at row " +
                       std::to_string(r) + " is outside [0, " + std::to_string(cols) + ")");
}

}  // namespace

void CpuBackend::log_softmax_forward(DType t, int64_t rows, int64_t cols, const void* x_,
                                     void* y_) {
  dispatch_float(t, "log_softmax", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(x_);
    T* y = CLARENA_TYPED(y_);
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * cols;
      T* yr = y + r * cols;
      const RowLogSum<T> s = row_logsum(xr, cols, yr);  // y as scratch for the exponentials
      if (!std::isfinite(s.max)) {
        std::fill_n(yr, cols, static_cast<T>(kNaN));
        continue;
      }
      const T log_sum = static_cast<T>(s.log_sum);
      ArrayMap<T>(yr, cols) = (ConstArrayMap<T>(xr, cols) - s.max) - log_sum;
    }
  });
}

void CpuBackend::log_softmax_backward(DType t, int64_t rows, int64_t cols, const void* y_,
                                      const void* dy_, void* dx_) {
  dispatch_float(t, "log_softmax_backward", [&]<typename T>(T*) {
    const T* y = CLARENA_CTYPED(y_);
    const T* dy = CLARENA_CTYPED(dy_);
    T* dx = CLARENA_TYPED(dx_);
    for (int64_t r = 0; r < rows; ++r) {
      const T* yr = y + r * cols;
      const T* dyr = dy + r * cols;
      T s = 0;
      for (int64_t c = 0; c < cols; ++c)
        s += dyr[c];
      ArrayMap<T>(dx + r * cols, cols) =
          ConstArrayMap<T>(dyr, cols) - ConstArrayMap<T>(yr, cols).exp() * s;
    }
  });
}

/// loss = mean_r ((max_r - x_r[label]) + log_sum_r), each row's term in double; lse[r] =
/// max_r + log_sum_r rounded to T, the backward's shift (NaN for a non-finite row).
void CpuBackend::cross_entropy_forward(DType t, int64_t rows, int64_t cols, const void* logits,
                                       const int64_t* labels, void* lse_, void* loss_) {
  dispatch_float(t, "cross_entropy", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(logits);
    T* lse = CLARENA_TYPED(lse_);
    T* loss = CLARENA_TYPED(loss_);
    check_labels(rows, cols, labels);
    Eigen::Array<T, Eigen::Dynamic, 1> scratch(cols);
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * cols;
      const RowLogSum<T> s = row_logsum(xr, cols, scratch.data());
      lse[r] = static_cast<T>(static_cast<double>(s.max) + s.log_sum);
      total += (static_cast<double>(s.max) - static_cast<double>(xr[labels[r]])) + s.log_sum;
    }
    loss[0] = static_cast<T>(total / static_cast<double>(rows));
  });
}

/// dx = g/rows * (softmax(x) - onehot(label)), with softmax = e / sum(e), e = exp(x - lse):
/// normalising by the sum cancels the rounding of lse to T (half an ulp of the max, which
/// exp(x - lse) alone would carry into every probability), so only x - lse's own rounding
/// remains, as in torch's (x - max) - log_sum. The label's entry, p - 1, is formed as
/// -(sum - e_label) / sum in double: it keeps its digits when p is close to 1 (a loss near zero),
/// where p - 1 would cancel them.
void CpuBackend::cross_entropy_backward(DType t, int64_t rows, int64_t cols, const void* logits,
                                        const int64_t* labels, const void* lse_,
                                        const void* grad_loss_, void* dlogits) {
  dispatch_float(t, "cross_entropy_backward", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(logits);
    const T* lse = CLARENA_CTYPED(lse_);
    const T* grad_loss = CLARENA_CTYPED(grad_loss_);
    T* dx = CLARENA_TYPED(dlogits);
    const double scale = static_cast<double>(grad_loss[0]) / static_cast<double>(rows);
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * cols;
      T* dr = dx + r * cols;
      double sum;
      if (std::isfinite(lse[r])) {
        ArrayMap<T>(dr, cols) = (ConstArrayMap<T>(xr, cols) - lse[r]).exp();
        sum = sum_in_double(dr, cols);
      } else {  // a non-finite row (all NaN), or a logsumexp beyond T's range: shift by the max
        const RowLogSum<T> s = row_logsum(xr, cols, dr);
        if (!std::isfinite(s.max)) {
          std::fill_n(dr, cols, static_cast<T>(kNaN));
          continue;
        }
        sum = s.sum;
      }
      const int64_t label = labels[r];
      const double e_label = static_cast<double>(dr[label]);
      ArrayMap<T>(dr, cols) *= static_cast<T>(scale / sum);
      dr[label] = static_cast<T>(-scale * ((sum - e_label) / sum));
    }
  });
}

}  // namespace clarena::kernels::cpu
