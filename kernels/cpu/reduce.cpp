// CPU kernels: Reductions over the middle axis of [outer, reduce, inner], their backward, argmax,
// equal.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace clarena::kernels::cpu {

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

template <typename T>
void reduce_sum(int64_t outer, int64_t reduce, int64_t inner, T scale, const T* x, T beta, T* out) {
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
}

template <typename T>
void expand(int64_t outer, int64_t reduce, int64_t inner, T scale, const T* g, T* out) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t r = 0; r < reduce; ++r) {
      T* row = out + (o * reduce + r) * inner;
      for (int64_t i = 0; i < inner; ++i)
        row[i] = scale * g[o * inner + i];
    }
}

template <typename T>
void argmax(int64_t outer, int64_t reduce, int64_t inner, const T* x, int64_t* out) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const T* base = x + o * reduce * inner + i;
      int64_t best = 0;
      for (int64_t r = 1; r < reduce; ++r)
        if (base[r * inner] > base[best * inner]) best = r;
      out[o * inner + i] = best;
    }
}

template <typename T>
void equal(int64_t n, const T* a, const T* b, int64_t* out) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = a[i] == b[i] ? 1 : 0;
}

}  // namespace clarena::kernels::cpu
