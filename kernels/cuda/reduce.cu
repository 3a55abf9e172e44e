// Sums over the middle axis of a [outer, reduce, inner] view, and its backward (expand).
//
// Sums accumulate in double for float32 too, as the CPU does (kernels/cpu/reduce.cpp): a sum over
// a batch must not drift with the batch size. Each thread keeps four independent accumulators
// (no single dependency chain) combined in a fixed order.
//
// inner == 1 (row sums, whole-tensor sums): a warp or a block per row, warp shuffles + shared
// memory. inner > 1 (column sums, e.g. the bias gradient over a batch): a block of 32 x 8 threads
// per 32 consecutive columns, the 8 thread rows striding over the reduced axis, combined through
// shared memory in a fixed order. When those give too few blocks to fill the card and the reduced
// axis is long, the reduced axis is split into chunks: pass 1 writes per-chunk partial sums (in
// double) to scratch ([outer, splits, inner]), pass 2 reduces the partials with the same kernel.
// Every order of summation is fixed by the sizes, so results are bitwise the same run to run.
//
// expand is one flat loop over the output; the source of element i is found with multiply-high
// dividers (Div32), in 16-byte packs when the row length allows.
#include "common.cuh"
#include "cuda_backend.cuh"

namespace clarena::kernels::cuda {
namespace {

constexpr int kColX = 32, kColY = 8;

/// The final store of a sum, as the CPU's: scale * T(sum) (+ beta * out unless beta == 0, which
/// never reads out).
template <typename T>
__device__ __forceinline__ void store_sum(T* slot, double sum, T scale, T beta) {
  const T value = scale * static_cast<T>(sum);
  *slot = beta == T(0) ? value : value + beta * *slot;
}

/// Row sums: x is [rows, len]; chunk z of row r covers [z*chunk, min(len, (z+1)*chunk)).
/// splits == 1: out[r] = store_sum; splits > 1: partial[r * splits + z] = sum (raw, double).
template <bool kBlockRow, typename TIn, typename T>
__global__ void CLARENA_BOUNDS(kBlockRow ? RowGroup::kRowBlock : RowGroup::kWarpBlock)
    row_sum_kernel(int64_t rows, int64_t len, int64_t chunk, int64_t splits, T scale,
                   const TIn* __restrict__ x, T beta, T* __restrict__ out,
                   double* __restrict__ partial) {
  __shared__ double smem[32];
  const RowIter<kBlockRow> it;
  for (int64_t z = blockIdx.y; z < splits; z += gridDim.y) {
    const int64_t begin = z * chunk, end = min(len, begin + chunk);
    for (int64_t r = it.first; r < rows; r += it.stride) {
      const TIn* xr = x + r * len;
      double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      const int64_t w = it.width;
      int64_t c = begin + it.lane;
      for (; c + 3 * w < end; c += 4 * w) {
        a0 += static_cast<double>(xr[c]);
        a1 += static_cast<double>(xr[c + w]);
        a2 += static_cast<double>(xr[c + 2 * w]);
        a3 += static_cast<double>(xr[c + 3 * w]);
      }
      for (; c < end; c += w)
        a0 += static_cast<double>(xr[c]);
      double acc = (a0 + a1) + (a2 + a3);
      acc = group_sum<kBlockRow>(acc, smem);
      if (it.lane == 0) {
        if (partial)
          partial[r * splits + z] = acc;
        else
          store_sum(out + r, acc, scale, beta);
      }
    }
  }
}

/// Column sums of x viewed as [outer, len, inner]; chunking as in row_sum_kernel, partials laid
/// out [outer, splits, inner].
template <typename TIn, typename T>
__global__ void CLARENA_BOUNDS(kColX* kColY)
    col_sum_kernel(int64_t outer, int64_t len, int64_t inner, int64_t chunk, int64_t splits,
                   T scale, const TIn* __restrict__ x, T beta, T* __restrict__ out,
                   double* __restrict__ partial) {
  __shared__ double smem[kColY][kColX + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kColX + tx;
  for (int64_t o = blockIdx.z; o < outer; o += gridDim.z) {
    for (int64_t z = blockIdx.y; z < splits; z += gridDim.y) {
      const int64_t begin = z * chunk, end = min(len, begin + chunk);
      double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      if (i < inner) {
        const TIn* xo = x + o * len * inner + i;
        int64_t r = begin + ty;
        for (; r + 3 * kColY < end; r += 4 * kColY) {
          a0 += static_cast<double>(xo[r * inner]);
          a1 += static_cast<double>(xo[(r + kColY) * inner]);
          a2 += static_cast<double>(xo[(r + 2 * kColY) * inner]);
          a3 += static_cast<double>(xo[(r + 3 * kColY) * inner]);
        }
        for (; r < end; r += kColY)
          a0 += static_cast<double>(xo[r * inner]);
      }
      __syncthreads();  // smem reuse across loop iterations
      smem[ty][tx] = (a0 + a1) + (a2 + a3);
      __syncthreads();
      if (ty == 0 && i < inner) {
        double s = 0;
#pragma unroll
        for (int k = 0; k < kColY; ++k)
          s += smem[k][tx];
        if (partial)
          partial[(o * splits + z) * inner + i] = s;
        else
          store_sum(out + o * inner + i, s, scale, beta);
      }
    }
  }
}

/// kMode 0: element by element; 1: 16-byte packs along a row (inner % V == 0); 2: inner == 1
/// and reduce % V == 0, so a pack of outputs shares one source value. `items` counts elements
/// (mode 0) or packs. ri = reduce * inner.
template <int kMode, typename I, typename D, typename T>
__global__ void CLARENA_BOUNDS(kBlock) expand_kernel(I items, D inner_d, D ri_d, I inner, T scale,
                                                     const T* __restrict__ g, T* __restrict__ out) {
  constexpr I V = kMode == 0 ? 1 : kVec<T>;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I k = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; k < items; k += stride) {
    const I i = k * V;
    const I o = ri_d.div(i);
    if constexpr (kMode == 0) {
      out[i] = scale * g[o * inner + inner_d.mod(i)];
    } else if constexpr (kMode == 1) {
      Packed<T> p = load_packed(g + o * inner + inner_d.mod(i));
#pragma unroll
      for (int e = 0; e < kVec<T>; ++e)
        p.v[e] = scale * p.v[e];
      store_packed(out + i, p);
    } else {
      Packed<T> p;
      const T v = scale * g[o];
#pragma unroll
      for (int e = 0; e < kVec<T>; ++e)
        p.v[e] = v;
      store_packed(out + i, p);
    }
  }
}

/// Chunks for the reduced axis: split only when the natural grid is under two waves and the
/// axis is long enough for each chunk to keep `min_chunk` items.
int64_t choose_splits(const Ctx& ctx, int64_t natural_blocks, int64_t len, int64_t min_chunk) {
  const int64_t want = int64_t{ctx.sm_count} * 4;
  if (natural_blocks >= want / 2 || len < 2 * min_chunk) return 1;
  int64_t splits = (want + natural_blocks - 1) / natural_blocks;
  splits = std::min<int64_t>({splits, len / min_chunk, 65535});
  return std::max<int64_t>(1, splits);
}

template <typename TIn, typename T>
void row_sum(const Ctx& ctx, int64_t rows, int64_t len, int64_t chunk, int64_t splits, T scale,
             const TIn* x, T beta, T* out, double* partial) {
  launch_rows(ctx, rows, chunk, [&](auto block_row, unsigned grid, int block) {
    constexpr bool kB = decltype(block_row)::value;
    const dim3 g(grid, static_cast<unsigned>(std::min<int64_t>(splits, 65535)));
    row_sum_kernel<kB, TIn, T>
        <<<g, block, 0, ctx.stream>>>(rows, len, chunk, splits, scale, x, beta, out, partial);
  });
}

template <typename TIn, typename T>
void col_sum(const Ctx& ctx, int64_t outer, int64_t len, int64_t inner, int64_t chunk,
             int64_t splits, T scale, const TIn* x, T beta, T* out, double* partial) {
  const dim3 grid(static_cast<unsigned>((inner + kColX - 1) / kColX),
                  static_cast<unsigned>(std::min<int64_t>(splits, 65535)),
                  static_cast<unsigned>(std::min<int64_t>(outer, 65535)));
  col_sum_kernel<TIn, T><<<grid, dim3(kColX, kColY), 0, ctx.stream>>>(
      outer, len, inner, chunk, splits, scale, x, beta, out, partial);
  after_launch(ctx);
}

template <typename T>
void reduce_sum_typed(const Ctx& ctx, int64_t outer, int64_t len, int64_t inner, T scale,
                      const T* x, T beta, T* out) {
  if (inner == 1) {
    const int64_t rows_per_block = len > RowGroup::kWarpMaxCols ? 1 : RowGroup::kWarpBlock / 32;
    const int64_t natural = (outer + rows_per_block - 1) / rows_per_block;
    const int64_t splits = choose_splits(ctx, natural, len, 8192);
    if (splits == 1) {
      row_sum<T, T>(ctx, outer, len, len, 1, scale, x, beta, out, nullptr);
      return;
    }
    const int64_t chunk = (len + splits - 1) / splits, used = (len + chunk - 1) / chunk;
    auto* partial = static_cast<double*>(ctx.scratch->get(sizeof(double) * outer * used));
    row_sum<T, T>(ctx, outer, len, chunk, used, T(1), x, T(0), nullptr, partial);
    row_sum<double, T>(ctx, outer, used, used, 1, scale, partial, beta, out, nullptr);
    return;
  }
  const int64_t natural = (inner + kColX - 1) / kColX * outer;
  const int64_t splits = choose_splits(ctx, natural, len, 256);
  if (splits == 1) {
    col_sum<T, T>(ctx, outer, len, inner, len, 1, scale, x, beta, out, nullptr);
    return;
  }
  const int64_t chunk = (len + splits - 1) / splits, used = (len + chunk - 1) / chunk;
  auto* partial = static_cast<double*>(ctx.scratch->get(sizeof(double) * outer * used * inner));
  col_sum<T, T>(ctx, outer, len, inner, chunk, used, T(1), x, T(0), nullptr, partial);
  col_sum<double, T>(ctx, outer, used, inner, used, 1, scale, partial, beta, out, nullptr);
}

template <typename I, typename D, typename T>
void expand_launch(const Ctx& ctx, int64_t outer, int64_t reduce, int64_t inner, T scale,
                   const T* g, T* out) {
  const int64_t n = outer * reduce * inner;
  constexpr int64_t V = kVec<T>;
  const D inner_d(static_cast<I>(inner)), ri_d(static_cast<I>(reduce * inner));
  const I in = static_cast<I>(inner);
  if (inner % V == 0 && all_aligned16(g, out)) {
    expand_kernel<1, I, D, T><<<grid_for(ctx, n / V), kBlock, 0, ctx.stream>>>(
        static_cast<I>(n / V), inner_d, ri_d, in, scale, g, out);
  } else if (inner == 1 && reduce % V == 0 && aligned16(out)) {
    expand_kernel<2, I, D, T><<<grid_for(ctx, n / V), kBlock, 0, ctx.stream>>>(
        static_cast<I>(n / V), inner_d, ri_d, in, scale, g, out);
  } else {
    expand_kernel<0, I, D, T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        static_cast<I>(n), inner_d, ri_d, in, scale, g, out);
  }
}

}  // namespace

void CudaBackend::reduce_sum(DType t, int64_t outer, int64_t reduce, int64_t inner, double scale,
                             const void* x, double beta, void* out) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (outer <= 0 || inner <= 0) return;
  dispatch_float(t, "sum", [&]<typename T>(T*) {
    if (reduce <= 0) {  // empty sum: out = beta * out (beta == 0 writes zeros)
      scale_inplace(ctx, t, outer * inner, beta, out);
      return;
    }
    reduce_sum_typed<T>(ctx, outer, reduce, inner, static_cast<T>(scale), static_cast<const T*>(x),
                        static_cast<T>(beta), static_cast<T*>(out));
  });
}

void CudaBackend::expand(DType t, int64_t outer, int64_t reduce, int64_t inner, double scale,
                         const void* g, void* out) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (outer <= 0 || reduce <= 0 || inner <= 0) return;
  dispatch_float(t, "expand", [&]<typename T>(T*) {
    const T s = static_cast<T>(scale);
    const T* tg = static_cast<const T*>(g);
    T* to = static_cast<T*>(out);
    if (outer * reduce * inner <= kMax32)
      expand_launch<uint32_t, Div32, T>(ctx, outer, reduce, inner, s, tg, to);
    else
      expand_launch<uint64_t, Div64, T>(ctx, outer, reduce, inner, s, tg, to);
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
