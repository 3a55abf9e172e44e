// CPU kernels: GEMM. float32 products big enough for packing go to our AVX-512 kernel
// (sgemm.cpp) where the build has it; the rest, and float64, to Eigen split over the thread pool.
#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
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

#ifdef CLARENA_HAVE_SGEMM
/// Packed copies of weights that do not change between products, keyed by where B lives, its
/// version, and the product's shape. Least recently used first out above kCapacity; an entry
/// goes when its version moves (a new version is packed afresh) or its memory is freed.
class PackedWeights {
 public:
  static constexpr size_t kCapacity = size_t{64} << 20;

  /// The packed B for this key, packing it on a miss; `reused` tells which.
  std::shared_ptr<const PackedB> get(const void* b, uint64_t version, bool tb, int64_t n, int64_t k,
                                     bool& reused) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = entries_.begin(); it != entries_.end(); ++it)
        if (it->b == b && it->version == version && it->tb == tb && it->n == n && it->k == k) {
          entries_.splice(entries_.begin(), entries_, it);
          reused = true;
          return it->packed;
        }
    }
    reused = false;
    auto packed = std::make_shared<const PackedB>(tb, n, k, static_cast<const float*>(b));
    std::lock_guard<std::mutex> lock(mu_);
    erase_locked(b);  // an older version, or another shape, of the same memory
    entries_.push_front({b, version, tb, n, k, packed});
    bytes_ += packed->bytes();
    while (bytes_ > kCapacity && entries_.size() > 1) {
      bytes_ -= entries_.back().packed->bytes();
      entries_.pop_back();
    }
    count_.store(entries_.size(), std::memory_order_relaxed);
    return packed;
  }

  /// Drops every entry of the memory at b (about to be freed). Cheap when nothing is cached.
  void forget(const void* b) noexcept {
    if (count_.load(std::memory_order_relaxed) == 0) return;
    try {
      std::lock_guard<std::mutex> lock(mu_);
      erase_locked(b);
    } catch (...) {  // a lock that cannot be taken leaves the entry to the LRU order
    }
  }

 private:
  struct Entry {
    const void* b;
    uint64_t version;
    bool tb;
    int64_t n, k;
    std::shared_ptr<const PackedB> packed;
  };
  void erase_locked(const void* b) {
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->b != b) {
        ++it;
        continue;
      }
      bytes_ -= it->packed->bytes();
      it = entries_.erase(it);
    }
    count_.store(entries_.size(), std::memory_order_relaxed);
  }
  std::mutex mu_;
  std::list<Entry> entries_;
  size_t bytes_ = 0;
  std::atomic<size_t> count_{0};
};

PackedWeights& packed_weights() {
  static auto* cache = new PackedWeights();  // never destroyed: tensors may outlive statics
  return *cache;
}
#endif

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

void CpuBackend::gemm_reusing_b(DType t, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                                double alpha, const void* a, const void* b, double beta, void* c,
                                uint64_t b_version) {
#ifdef CLARENA_HAVE_SGEMM
  if (t == DType::Float32 && sgemm_suits(m, n, k)) {
    ++stats_.gemm_calls;
    stats_.gemm_flops += 2 * m * n * k;
    bool reused = false;
    const auto packed = packed_weights().get(b, b_version, tb, n, k, reused);
    if (reused) ++stats_.packed_reuses;
    return sgemm_packed(ta, m, static_cast<float>(alpha), static_cast<const float*>(a), *packed,
                        static_cast<float>(beta), static_cast<float*>(c));
  }
#endif
  (void)b_version;
  gemm(t, ta, tb, m, n, k, alpha, a, b, beta, c);
}

void CpuBackend::forget_packed([[maybe_unused]] const void* ptr) {
#ifdef CLARENA_HAVE_SGEMM
  packed_weights().forget(ptr);
#endif
}

}  // namespace clarena::kernels::cpu
