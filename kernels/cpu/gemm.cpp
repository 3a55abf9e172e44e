// CPU kernels: GEMM. float32 products big enough for packing go to our AVX-512 kernel
// (sgemm.cpp) where the build has it; the rest, and float64, to Eigen split over the thread pool.
#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../dispatch.h"
#include "cpu_backend.h"
#include "sgemm.h"
#include "thread_pool.h"

namespace clarena::kernels::cpu {
namespace {

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMatMap = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned>;

template <typename T, typename OpA, typename OpB, typename OutBlock>
void gemm_block(const OpA& a, const OpB& b, OutBlock c, T alpha, T beta) {
  if (beta == T(0)) {
    c.noalias() = alpha * a * b;
  } else {
    if (beta != T(1)) c *= beta;
    c.noalias() += alpha * a * b;
  }
}

/// Products this small run as one Eigen call on the calling thread: waking workers would cost
/// more.
constexpr double kParallelGemmFlops = 2e6;
constexpr int64_t kGemmGrain = 16;  // tile bounds stay on 16-element (one AVX-512 vector) bounds
constexpr int64_t kMaxGemmTiles = 16;
constexpr double kMinGemmTileFlops = 1e6;

/// The extent of one output tile (columns, or rows of a tall output). A function of the shape
/// alone: every thread count makes the same Eigen call per tile, so the result has the same
/// bits whether one thread computes all the tiles or sixteen share them.
inline int64_t gemm_tile(int64_t extent, double flops) {
  if (flops < kParallelGemmFlops) return extent;
  const double flops_per_line = flops / static_cast<double>(extent);
  const int64_t tile = std::max((extent + kMaxGemmTiles - 1) / kMaxGemmTiles,
                                static_cast<int64_t>(kMinGemmTileFlops / flops_per_line) + 1);
  return std::min(extent, (tile + kGemmGrain - 1) / kGemmGrain * kGemmGrain);
}

/// C = alpha op(A) op(B) + beta C with Eigen, the output cut into column (or, for tall outputs,
/// row) tiles that the thread pool computes side by side. Eigen itself stays
/// single-threaded: one pool for the whole library, and no OpenMP teams spinning.
template <typename T, bool kTa, bool kTb>
void gemm_typed(int64_t m, int64_t n, int64_t k, T alpha, const T* a, const T* b, T beta, T* c) {
  ConstMatMap<T> A(a, kTa ? k : m, kTa ? m : k);
  ConstMatMap<T> B(b, kTb ? n : k, kTb ? k : n);
  Eigen::Map<RowMatrix<T>> C(c, m, n);
  auto rows_of_a = [&](int64_t lo, int64_t len) {
    if constexpr (kTa)
      return A.middleCols(lo, len).transpose();
    else
      return A.middleRows(lo, len);
  };
  auto cols_of_b = [&](int64_t lo, int64_t len) {
    if constexpr (kTb)
      return B.middleRows(lo, len).transpose();
    else
      return B.middleCols(lo, len);
  };
#ifdef CLARENA_HAVE_SGEMM
  if constexpr (std::is_same_v<T, float>) {
    if (sgemm_suits(m, n, k)) return sgemm(kTa, kTb, m, n, k, alpha, a, b, beta, c);
  }
#endif
  if (k == 1) {
    // An outer product (a weight gradient at batch 1): Eigen writes it in one pass, where the
    // GEMM path would first zero C and then accumulate into it.
    auto a_col = rows_of_a(0, m).col(0);
    auto b_row = cols_of_b(0, n).row(0);
    if (beta == T(0))
      C.noalias() = (alpha * a_col) * b_row;
    else
      gemm_block(a_col, b_row, C, alpha, beta);
    return;
  }
  const bool split_rows = m > n;
  const int64_t extent = split_rows ? m : n;
  const double flops =
      2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  parallel_tiles(extent, gemm_tile(extent, flops), [&](int64_t lo, int64_t hi) {
    if (split_rows)
      gemm_block(rows_of_a(lo, hi - lo), cols_of_b(0, n), C.middleRows(lo, hi - lo), alpha, beta);
    else
      gemm_block(rows_of_a(0, m), cols_of_b(lo, hi - lo), C.middleCols(lo, hi - lo), alpha, beta);
  });
}

}  // namespace

void CpuBackend::gemm(DType t, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                      const void* a, const void* b, double beta, void* c) {
  ++stats_.gemm_calls;
  stats_.gemm_flops += 2 * m * n * k;
  dispatch_float(t, "gemm", [&]<typename T>(T*) {
    const T* ta_ = CLARENA_CTYPED(a);
    const T* tb_ = CLARENA_CTYPED(b);
    T* tc = CLARENA_TYPED(c);
    if (ta && tb)
      gemm_typed<T, true, true>(m, n, k, T(alpha), ta_, tb_, T(beta), tc);
    else if (ta)
      gemm_typed<T, true, false>(m, n, k, T(alpha), ta_, tb_, T(beta), tc);
    else if (tb)
      gemm_typed<T, false, true>(m, n, k, T(alpha), ta_, tb_, T(beta), tc);
    else
      gemm_typed<T, false, false>(m, n, k, T(alpha), ta_, tb_, T(beta), tc);
  });
}

}  // namespace clarena::kernels::cpu
