// Sums over the middle axis of a [outer, reduce, inner] view, and its backward (expand).
//
// inner == 1 (row sums, whole-tensor sums): a warp or a block per row, warp shuffles + shared
// memory. inner > 1 (column sums, e.g. the bias gradient over a batch): a block of 32 x 8 threads
// per 32 consecutive columns, the 8 thread rows striding over the reduced axis, combined through
// shared memory in a fixed order. When those give too few blocks to fill the card and the reduced
// axis is long, the reduced axis is split into chunks: pass 1 writes per-chunk partial sums to
// scratch ([outer, splits, inner]), pass 2 reduces the partials with the same kernel. Every
// order of summation is fixed by the sizes, so results are deterministic run to run.
#include "common.cuh"

namespace clarena::kernels::cuda {
namespace {

constexpr int kColX = 32, kColY = 8;

/// Row sums: x is [rows, len]; chunk z of row r covers [z*chunk, min(len, (z+1)*chunk)).
/// splits == 1: out[r] = scale * s + beta * out[r] (beta == 0 never reads out);
/// splits > 1: out[r * splits + z] = s (partials, written raw).
template <bool kBlockRow, typename T>
__global__ void row_sum_kernel(int64_t rows, int64_t len, int64_t chunk, int64_t splits, T scale,
                               const T* __restrict__ x, T beta, T* __restrict__ out) {
  __shared__ T smem[32];
  const RowIter<kBlockRow> it;
  for (int64_t z = blockIdx.y; z < splits; z += gridDim.y) {
    const int64_t begin = z * chunk, end = min(len, begin + chunk);
    for (int64_t r = it.first; r < rows; r += it.stride) {
      const T* xr = x + r * len;
      T acc = T(0);
      for (int64_t c = begin + it.lane; c < end; c += it.width)
        acc += xr[c];
      acc = group_sum<kBlockRow>(acc, smem);
      if (it.lane == 0) {
        if (splits > 1) {
          out[r * splits + z] = acc;
        } else {
          out[r] = beta == T(0) ? scale * acc : scale * acc + beta * out[r];
        }
      }
    }
  }
}

/// Column sums of x viewed as [outer, len, inner]; chunking as in row_sum_kernel, partials laid
/// out [outer, splits, inner].
template <typename T>
__global__ void col_sum_kernel(int64_t outer, int64_t len, int64_t inner, int64_t chunk,
                               int64_t splits, T scale, const T* __restrict__ x, T beta,
                               T* __restrict__ out) {
  __shared__ T smem[kColY][kColX + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kColX + tx;
  for (int64_t o = blockIdx.z; o < outer; o += gridDim.z) {
    for (int64_t z = blockIdx.y; z < splits; z += gridDim.y) {
      const int64_t begin = z * chunk, end = min(len, begin + chunk);
      T acc = T(0);
      if (i < inner) {
        const T* xo = x + o * len * inner + i;
        for (int64_t r = begin + ty; r < end; r += kColY)
          acc += xo[r * inner];
      }
      __syncthreads();  // smem reuse across loop iterations
      smem[ty][tx] = acc;
      __syncthreads();
      if (ty == 0 && i < inner) {
        T s = T(0);
#pragma unroll
        for (int k = 0; k < kColY; ++k)
          s += smem[k][tx];
        if (splits > 1) {
          out[(o * splits + z) * inner + i] = s;
        } else {
          T* dst = out + o * inner + i;
          *dst = beta == T(0) ? scale * s : scale * s + beta * *dst;
        }
      }
    }
  }
}

template <typename T>
__global__ void expand_kernel(int64_t rows, int64_t reduce, int64_t inner, T scale,
                              const T* __restrict__ g, T* __restrict__ out) {
  // out viewed as [rows = outer * reduce, inner]; row r reads g row r / reduce.
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const T* gr = g + (r / reduce) * inner;
    T* orow = out + r * inner;
    for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < inner;
         c += int64_t{gridDim.x} * blockDim.x)
      orow[c] = scale * gr[c];
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

template <typename T>
void row_sum(const Ctx& ctx, int64_t rows, int64_t len, int64_t chunk, int64_t splits, T scale,
             const T* x, T beta, T* out) {
  launch_rows(ctx, rows, chunk, [&](auto block_row, unsigned grid, int block) {
    constexpr bool kB = decltype(block_row)::value;
    const dim3 g(grid, static_cast<unsigned>(std::min<int64_t>(splits, 65535)));
    row_sum_kernel<kB, T>
        <<<g, block, 0, ctx.stream>>>(rows, len, chunk, splits, scale, x, beta, out);
  });
}

template <typename T>
void col_sum(const Ctx& ctx, int64_t outer, int64_t len, int64_t inner, int64_t chunk,
             int64_t splits, T scale, const T* x, T beta, T* out) {
  const dim3 grid(static_cast<unsigned>((inner + kColX - 1) / kColX),
                  static_cast<unsigned>(std::min<int64_t>(splits, 65535)),
                  static_cast<unsigned>(std::min<int64_t>(outer, 65535)));
  col_sum_kernel<T><<<grid, dim3(kColX, kColY), 0, ctx.stream>>>(outer, len, inner, chunk, splits,
                                                                 scale, x, beta, out);
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
      row_sum<T>(ctx, outer, len, len, 1, scale, x, beta, out);
      return;
    }
    const int64_t chunk = (len + splits - 1) / splits, used = (len + chunk - 1) / chunk;
    T* partial = static_cast<T*>(ctx.scratch->get(sizeof(T) * outer * used));
    row_sum<T>(ctx, outer, len, chunk, used, T(1), x, T(0), partial);
    row_sum<T>(ctx, outer, used, used, 1, scale, partial, beta, out);
    return;
  }
  const int64_t natural = (inner + kColX - 1) / kColX * outer;
  const int64_t splits = choose_splits(ctx, natural, len, 256);
  if (splits == 1) {
    col_sum<T>(ctx, outer, len, inner, len, 1, scale, x, beta, out);
    return;
  }
  const int64_t chunk = (len + splits - 1) / splits, used = (len + chunk - 1) / chunk;
  T* partial = static_cast<T*>(ctx.scratch->get(sizeof(T) * outer * used * inner));
  col_sum<T>(ctx, outer, len, inner, chunk, used, T(1), x, T(0), partial);
  col_sum<T>(ctx, outer, used, inner, used, 1, scale, partial, beta, out);
}

}  // namespace

void reduce_sum(const Ctx& ctx, DType t, int64_t outer, int64_t reduce, int64_t inner, double scale,
                const void* x, double beta, void* out) {
  if (outer <= 0 || inner <= 0) return;
  dispatch_float(t, "sum", [&]<typename T>(T*) {
    if (reduce <= 0) {  // empty sum: out = beta * out
      scale_inplace(ctx, t, outer * inner, beta, out);
      return;
    }
    reduce_sum_typed<T>(ctx, outer, reduce, inner, static_cast<T>(scale), static_cast<const T*>(x),
                        static_cast<T>(beta), static_cast<T*>(out));
  });
}

void expand(const Ctx& ctx, DType t, int64_t outer, int64_t reduce, int64_t inner, double scale,
            const void* g, void* out) {
  if (outer <= 0 || reduce <= 0 || inner <= 0) return;
  dispatch_float(t, "expand", [&]<typename T>(T*) {
    const int64_t rows = outer * reduce;
    const int64_t gx = std::max<int64_t>(
        1, std::min<int64_t>((inner + kBlock - 1) / kBlock, int64_t{ctx.sm_count} * 32));
    const int64_t gy = std::max<int64_t>(
        1, std::min<int64_t>({rows, std::max<int64_t>(1, int64_t{ctx.sm_count} * 32 / gx), 65535}));
    expand_kernel<T>
        <<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), kBlock, 0, ctx.stream>>>(
            rows, reduce, inner, static_cast<T>(scale), static_cast<const T*>(g),
            static_cast<T*>(out));
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
