// CPU kernels: Batch normalisation per column of [rows, cols, inner] (inner = 1 for [B, C],
// H·W for [N, C, H, W]): training, eval, backward.
//
// Work is split over columns (channels): a tile is a run of whole columns, its length a function
// of the shape alone, so every column's sums are taken by one thread in one fixed order,
// whatever the thread count. Within a tile, rows run in order and each row's values of the
// tile's columns (contiguous in memory) are added into accumulators in double, one per value
// position: the inner loop is a contiguous, vectorizable stream with no loop-carried
// dependency, where one running sum per column would wait on its adds. Positions past kSlots
// within a column fold onto the first kSlots, so the accumulators stay in L1. A column's total
// is then the sum of its slots in order.
//
// Forward statistics in one pass, as on the GPU: sums of d = x - K and d^2, with K the column's
// first value (the shifted-data algorithm), so a column with a large mean and a tiny spread
// keeps its digits: mean = K + S1/n, var = (S2 - S1^2/n) / n.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../dispatch.h"
#include "cpu_backend.h"
#include "thread_pool.h"

namespace clarena::kernels::cpu {
namespace {

constexpr int64_t kSlots = 1024;  // accumulators per column at most (8 KiB of doubles)

/// How columns are grouped into tiles: about 64K values of work each, at most kSlots
/// accumulator positions per tile.
struct ColumnTiles {
  int64_t span;  // accumulator slots per column: inner, within [1, kSlots]
  int64_t cols_per_tile;
};

ColumnTiles column_tiles(int64_t rows, int64_t inner) {
  const int64_t span = std::clamp<int64_t>(inner, 1, kSlots);
  const int64_t by_work = (int64_t{1} << 16) / std::max<int64_t>(1, rows * inner);
  return {span, std::clamp<int64_t>(by_work, 1, kSlots / span)};
}

/// Per column c of [c0, c1), with d = x - centre[c - c0] over its rows·inner values:
/// forward (dy null): sum_a = sum d, sum_b = sum d^2; backward: sum_a = sum dy, sum_b =
/// sum dy * d. x and dy are [rows, cols, inner].
template <typename T>
void column_sums(int64_t rows, int64_t cols, int64_t inner, int64_t c0, int64_t c1, int64_t span,
                 const T* x, const T* dy, const double* centre, double* sum_a, double* sum_b) {
  const int64_t width = (c1 - c0) * span;
  thread_local std::vector<double> slots;
  slots.assign(static_cast<size_t>(2 * width), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t at = (r * cols + c) * inner;
      double* __restrict a = slots.data() + (c - c0) * span;
      double* __restrict b = a + width;
      const double k = centre[c - c0];
      for (int64_t i0 = 0; i0 < inner; i0 += span) {
        const int64_t n = std::min(span, inner - i0);
        const T* xs = x + at + i0;
        if (!dy) {
          for (int64_t j = 0; j < n; ++j) {
            const double d = static_cast<double>(xs[j]) - k;
            a[j] += d;
            b[j] += d * d;
          }
        } else {
          const T* gs = dy + at + i0;
          for (int64_t j = 0; j < n; ++j) {
            const double g = static_cast<double>(gs[j]);
            a[j] += g;
            b[j] += g * (static_cast<double>(xs[j]) - k);
          }
        }
      }
    }
  for (int64_t c = c0; c < c1; ++c) {
    const double* a = slots.data() + (c - c0) * span;
    double sa = 0, sb = 0;
    for (int64_t j = 0; j < span; ++j) {
      sa += a[j];
      sb += a[width + j];
    }
    sum_a[c - c0] = sa;
    sum_b[c - c0] = sb;
  }
}

/// y = (x - centre) * scale + shift per column (double arithmetic) over columns [c0, c1), row by
/// row: each row's stretch of the tile is contiguous.
template <typename T>
void normalize(int64_t rows, int64_t cols, int64_t inner, int64_t c0, int64_t c1, const T* x,
               const double* centre, const double* scale, const double* shift, T* y) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t at = (r * cols + c) * inner;
      const double m = centre[c - c0], s = scale[c - c0], b = shift[c - c0];
      for (int64_t i = 0; i < inner; ++i)
        y[at + i] = static_cast<T>((static_cast<double>(x[at + i]) - m) * s + b);
    }
}

/// Runs fn(c0, c1, span) over the column tiles in parallel.
template <typename Fn>
void for_column_tiles(int64_t rows, int64_t cols, int64_t inner, Fn fn) {
  const ColumnTiles t = column_tiles(rows, inner);
  parallel_tiles(cols, t.cols_per_tile, [&](int64_t c0, int64_t c1) { fn(c0, c1, t.span); });
}

}  // namespace

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
    if (count == 0) return;
    for_column_tiles(rows, cols, inner, [&](int64_t c0, int64_t c1, int64_t span) {
      const size_t n_cols = static_cast<size_t>(c1 - c0);
      std::vector<double> shift(n_cols), s1(n_cols), s2(n_cols), mean(n_cols), scale(n_cols),
          bias(n_cols);
      for (int64_t c = c0; c < c1; ++c)
        shift[c - c0] = static_cast<double>(x[c * inner]);
      column_sums(rows, cols, inner, c0, c1, span, x, static_cast<const T*>(nullptr), shift.data(),
                  s1.data(), s2.data());
      const double n = static_cast<double>(count);
      for (int64_t c = c0; c < c1; ++c) {
        const size_t j = static_cast<size_t>(c - c0);
        const double sq = std::max(0.0, s2[j] - s1[j] * s1[j] / n);  // sum (x - mean)^2
        const double var = sq / n, invstd = 1.0 / std::sqrt(var + eps);
        mean[j] = shift[j] + s1[j] / n;
        save_mean[c] = static_cast<T>(mean[j]);
        save_invstd[c] = static_cast<T>(invstd);
        const double unbiased = count > 1 ? sq / (n - 1) : var;
        if (running_mean)
          running_mean[c] = static_cast<T>((1 - momentum) * running_mean[c] + momentum * mean[j]);
        if (running_var)
          running_var[c] = static_cast<T>((1 - momentum) * running_var[c] + momentum * unbiased);
        scale[j] = invstd * (gamma ? static_cast<double>(gamma[c]) : 1.0);
        bias[j] = beta ? static_cast<double>(beta[c]) : 0.0;
      }
      normalize(rows, cols, inner, c0, c1, x, mean.data(), scale.data(), bias.data(), y);
    });
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
    std::vector<T> invstd(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c)
      invstd[c] = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps));
    // Element-wise: tiles of whole (row, column) runs of `inner` values, about 16K values each.
    const int64_t runs = rows * cols;
    const int64_t tile = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, inner));
    parallel_tiles(runs, tile, [&](int64_t lo, int64_t hi) {
      for (int64_t run = lo; run < hi; ++run) {
        const int64_t c = run % cols;
        const T m = running_mean[c], s = invstd[c];
        const T g = gamma ? gamma[c] : T(1), b = beta ? beta[c] : T(0);
        const T* xs = x + run * inner;
        T* ys = y + run * inner;
        for (int64_t i = 0; i < inner; ++i)
          ys[i] = (xs[i] - m) * s * g + b;
      }
    });
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
    const int64_t count = rows * inner;
    for_column_tiles(rows, cols, inner, [&](int64_t c0, int64_t c1, int64_t span) {
      const size_t n_cols = static_cast<size_t>(c1 - c0);
      std::vector<double> centre(n_cols), sum_dy(n_cols), sum_dy_xc(n_cols), scale(n_cols),
          shift(n_cols);
      for (int64_t c = c0; c < c1; ++c)
        centre[c - c0] = static_cast<double>(mean[c]);
      column_sums(rows, cols, inner, c0, c1, span, x, dy, centre.data(), sum_dy.data(),
                  sum_dy_xc.data());
      const double n = static_cast<double>(count);
      for (int64_t c = c0; c < c1; ++c) {
        const size_t j = static_cast<size_t>(c - c0);
        const double is = invstd[c], sdx = sum_dy_xc[j] * is;  // sdx = sum dy * xhat
        if (dgamma) dgamma[c] = static_cast<T>(sdx);
        if (dbeta) dbeta[c] = static_cast<T>(sum_dy[j]);
        scale[j] = (gamma ? static_cast<double>(gamma[c]) : 1.0) * is / n;
        shift[j] = sdx * is;  // dx = scale * (n dy - sum dy - xhat sdx), xhat sdx = (x - m) shift
      }
      if (!dx || count == 0) return;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          const size_t j = static_cast<size_t>(c - c0);
          const int64_t at = (r * cols + c) * inner;
          const double m = centre[j], k = scale[j], q = shift[j], s = sum_dy[j];
          for (int64_t i = 0; i < inner; ++i)
            dx[at + i] = static_cast<T>(k * (n * static_cast<double>(dy[at + i]) - s -
                                             (static_cast<double>(x[at + i]) - m) * q));
        }
    });
  });
}

}  // namespace clarena::kernels::cpu
