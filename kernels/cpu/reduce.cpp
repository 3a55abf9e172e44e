// CPU kernels: Reductions over the middle axis of [outer, reduce, inner], their backward, argmax,
// equal.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "../dispatch.h"
#include "cpu_backend.h"

namespace clarena::kernels::cpu {
namespace {

/// Sum of a contiguous run, in double with eight independent lanes (vectorisable, and no long
/// dependency chain through one accumulator).
template <typename T>
double contiguous_sum(const T* x, int64_t n) {
  double lanes[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j)
      lanes[j] += x[i + j];
  for (; i < n; ++i)
    lanes[0] += x[i];
  double total = 0;
  for (double lane : lanes)
    total += lane;
  return total;
}

}  // namespace

void CpuBackend::reduce_sum(DType t, int64_t outer, int64_t reduce, int64_t inner, double scale_,
                            const void* x_, double beta_, void* out_) {
  dispatch_float(t, "sum", [&]<typename T>(T*) {
    const T scale = T(scale_), beta = T(beta_);
    const T* x = CLARENA_CTYPED(x_);
    T* out = CLARENA_TYPED(out_);
    // Accumulate in double for float too: sums over a batch must not drift with its size.
    auto store = [&](T* slot, double sum) {
      const T value = scale * static_cast<T>(sum);
      *slot = beta == T(0) ? value : value + beta * *slot;
    };
    if (inner == 1) {
      for (int64_t o = 0; o < outer; ++o)
        store(out + o, contiguous_sum(x + o * reduce, reduce));
      return;
    }
    std::vector<double> acc(static_cast<size_t>(inner));
    for (int64_t o = 0; o < outer; ++o) {
      std::fill(acc.begin(), acc.end(), 0.0);
      const T* xo = x + o * reduce * inner;
      for (int64_t r = 0; r < reduce; ++r) {
        const T* row = xo + r * inner;
        for (int64_t i = 0; i < inner; ++i)
          acc[i] += row[i];
      }
      for (int64_t i = 0; i < inner; ++i)
        store(out + o * inner + i, acc[i]);
    }
  });
}

void CpuBackend::expand(DType t, int64_t outer, int64_t reduce, int64_t inner, double scale_,
                        const void* g_, void* out_) {
  dispatch_float(t, "expand", [&]<typename T>(T*) {
    const T scale = T(scale_);
    const T* g = CLARENA_CTYPED(g_);
    T* out = CLARENA_TYPED(out_);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t r = 0; r < reduce; ++r) {
        T* row = out + (o * reduce + r) * inner;
        for (int64_t i = 0; i < inner; ++i)
          row[i] = scale * g[o * inner + i];
      }
  });
}

void CpuBackend::argmax(DType t, int64_t outer, int64_t reduce, int64_t inner, const void* x_,
                        int64_t* out) {
  dispatch_float(t, "argmax", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(x_);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        const T* base = x + o * reduce * inner + i;
        int64_t best = 0;
        for (int64_t r = 1; r < reduce; ++r)
          if (base[r * inner] > base[best * inner]) best = r;
        out[o * inner + i] = best;
      }
  });
}

void CpuBackend::equal(DType t, int64_t n, const void* a_, const void* b_, int64_t* out) {
  dispatch_all(t, "equal", [&]<typename T>(T*) {
    const T* a = CLARENA_CTYPED(a_);
    const T* b = CLARENA_CTYPED(b_);
    for (int64_t i = 0; i < n; ++i)
      out[i] = a[i] == b[i] ? 1 : 0;
  });
}

int64_t CpuBackend::count_equal(int64_t n, const int64_t* a, const int64_t* b) {
  ++stats_.host_waits;
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i)
    count += a[i] == b[i];
  return count;
}

}  // namespace clarena::kernels::cpu
