// Our float32 GEMM for AVX-512, in the BLIS way: op(A) and op(B) are copied into panels laid out
// in the order the micro-kernel reads them (8 rows × kc of A, kc × 32 columns of B, zero-padded
// at the edges), then an 8×32 tile of C lives in 16 zmm registers while kc rank-1 updates stream
// through it. Transposed operands are handled by the packing (8×8 register transposes), so the
// micro-kernel is the same for all four cases.
//
// Loops: columns in blocks of kNC, k in blocks of kc ≤ max_kc() (the same blocks whatever the
// thread count: every C element adds its k products in the same order), rows in blocks of kMC;
// each (k, row) block packs its panels in parallel, then computes its C tiles in parallel.
// Within a tile the A micro-panel (8 × kc floats, ≤ 12 KiB) stays in L1 while the B panels
// stream from L2.
#include "sgemm.h"

#include <algorithm>
#include <cstddef>
#include <memory>
#include <new>

#include <unistd.h>

#include "thread_pool.h"

#ifdef CLARENA_HAVE_SGEMM
#include <immintrin.h>

namespace clarena::kernels::cpu {
namespace {

constexpr int64_t kMR = 8, kNR = 32;
constexpr int64_t kMC = 1024, kNC = 2048;  // packed blocks stay ≤ 1.5 MiB (A) and 3 MiB (B)
constexpr double kMinTileFlops = 2e6;      // below this a C tile is not worth another task
constexpr int64_t kTargetTiles = 16;
constexpr int64_t kPackTaskFloats = 1 << 15;

int64_t ceil_div(int64_t x, int64_t d) {
  return (x + d - 1) / d;
}

/// 64-byte aligned scratch that only grows: the packed panels of the calling thread's GEMMs
/// (no allocation in steady state). A nested call on the same thread gets a buffer of its own.
class Scratch {
 public:
  float* get(size_t floats) {
    if (floats > capacity_) {
      data_.reset(static_cast<float*>(::operator new[](floats * sizeof(float), kAlign)));
      capacity_ = floats;
    }
    return data_.get();
  }
  const float* data() const { return data_.get(); }

 private:
  static constexpr std::align_val_t kAlign{64};
  struct Free {
    void operator()(float* p) const { ::operator delete[](p, kAlign); }
  };
  std::unique_ptr<float[], Free> data_;
  size_t capacity_ = 0;
};

struct ScratchPair {
  Scratch a, b;
  bool busy = false;
};

/// Writes the 8×8 block at src (rows lds apart) transposed to dst (rows ldd apart).
inline void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i)
    r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int h = 0; h < 8; h += 4) {  // columns (0, 1, 2, 3) of rows h .. h + 3, per 128-bit lane
    r[h] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

/// dst[p][r] = src[r][p] for r < rows (rows lds apart), p < kc; rows .. width-1 are zero.
/// Full 8-row groups go through the register transpose.
void pack_transposed(const float* src, int64_t lds, int64_t rows, int64_t kc, int64_t width,
                     float* dst) {
  int64_t r0 = 0;
  for (; r0 + 8 <= rows; r0 += 8) {
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8)
      transpose8x8(src + r0 * lds + p, lds, dst + p * width + r0, width);
    for (; p < kc; ++p)
      for (int64_t r = r0; r < r0 + 8; ++r)
        dst[p * width + r] = src[r * lds + p];
  }
  for (int64_t p = 0; p < kc; ++p) {
    for (int64_t r = r0; r < rows; ++r)
      dst[p * width + r] = src[r * lds + p];
    for (int64_t r = rows; r < width; ++r)
      dst[p * width + r] = 0.0f;
  }
}

/// dst[p][j] = src[p][j] for j < cols (rows lds apart), p < kc; cols .. width-1 are zero.
void pack_straight(const float* src, int64_t lds, int64_t cols, int64_t kc, int64_t width,
                   float* dst) {
  for (int64_t p = 0; p < kc; ++p) {
    const float* s = src + p * lds;
    float* d = dst + p * width;
    std::copy(s, s + cols, d);
    std::fill(d + cols, d + width, 0.0f);
  }
}

/// The operands of one GEMM call and its block sizes.
struct Problem {
  bool ta, tb;
  int64_t m, n, k;
  float alpha, beta;
  const float *a, *b;
  float* c;

  /// Panel of op(A): rows i0 .. i0 + rows of k-block p0 .. p0 + kc, as [kc][kMR].
  void pack_a(int64_t i0, int64_t rows, int64_t p0, int64_t kc, float* dst) const {
    if (ta)  // op(A)[i][p] = a[p * m + i]: rows of a are already k-major
      pack_straight(a + p0 * m + i0, m, rows, kc, kMR, dst);
    else
      pack_transposed(a + i0 * k + p0, k, rows, kc, kMR, dst);
  }
  /// Panel of op(B): columns j0 .. j0 + cols of k-block p0 .. p0 + kc, as [kc][kNR].
  void pack_b(int64_t j0, int64_t cols, int64_t p0, int64_t kc, float* dst) const {
    if (tb)  // op(B)[p][j] = b[j * k + p]
      pack_transposed(b + j0 * k + p0, k, cols, kc, kNR, dst);
    else
      pack_straight(b + p0 * n + j0, n, cols, kc, kNR, dst);
  }
};

/// The 8×32 tile at c (rows ldc apart) = alpha · (ap · bp) + beta · c, over kc packed steps;
/// only `rows` × `cols` of it are written, and c is not read when beta is 0.
template <bool kFull>
void micro_kernel(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, float alpha,
                  float beta, int64_t rows, int64_t cols) {
  __m512 acc[kMR][2];
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r)
    acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < kc; ++p, ap += kMR, bp += kNR) {
    const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 8
    for (int r = 0; r < kMR; ++r) {
      const __m512 av = _mm512_set1_ps(ap[r]);
      acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const __mmask16 m0 = kFull || cols >= 16 ? 0xffff : __mmask16((1u << cols) - 1);
  const __mmask16 m1 = kFull || cols >= 32 ? 0xffff
                       : cols > 16         ? __mmask16((1u << (cols - 16)) - 1)
                                           : __mmask16(0);
#pragma GCC unroll 8
  for (int r = 0; r < kMR; ++r) {
    if (!kFull && r >= rows) break;
    float* row = c + r * ldc;
    __m512 v0 = _mm512_mul_ps(va, acc[r][0]), v1 = _mm512_mul_ps(va, acc[r][1]);
    if (beta != 0.0f) {
      v0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, row), v0);
      v1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, row + 16), v1);
    }
    _mm512_mask_storeu_ps(row, m0, v0);
    _mm512_mask_storeu_ps(row + 16, m1, v1);
  }
}

/// How a block of panels_a × panels_b micro-tiles is cut into tasks: tiles of tile_a × tile_b
/// micro-tiles, halved until there are enough tasks for the pool or a tile would fall under
/// kMinTileFlops.
struct Tiling {
  int64_t tile_a, tile_b, tiles_a, tiles_b;
};

Tiling tiling(int64_t panels_a, int64_t panels_b, int64_t kc) {
  int64_t ta = std::min<int64_t>(panels_a, 16), tb = std::min<int64_t>(panels_b, 8);
  auto tiles = [&] { return ceil_div(panels_a, ta) * ceil_div(panels_b, tb); };
  const double micro_flops = 2.0 * kMR * kNR * static_cast<double>(kc);
  while (tiles() < kTargetTiles && (ta > 1 || tb > 1) &&
         micro_flops * static_cast<double>(ta * tb) >= 2 * kMinTileFlops) {
    if (ta * kMR >= tb * kNR && ta > 1)
      ta = ceil_div(ta, 2);
    else if (tb > 1)
      tb = ceil_div(tb, 2);
    else
      ta = ceil_div(ta, 2);
  }
  return {ta, tb, ceil_div(panels_a, ta), ceil_div(panels_b, tb)};
}

/// The longest k block, from the L1 data cache this machine reports: an A micro-panel (8 × kc
/// floats) fills 3/8 of it, so it stays there beside the B panel's stream and C's tile (384 for
/// the 32 KiB of this Zen 4; 32 KiB is assumed where the system reports nothing). Fixed for
/// the process: the same blocks, so the same bits, at every thread count on a machine type.
int64_t max_kc() {
  static const int64_t kc = [] {
    long l1 = 0;
#ifdef _SC_LEVEL1_DCACHE_SIZE
    l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
#endif
    if (l1 <= 0) l1 = 32 << 10;
    return std::clamp<int64_t>(int64_t{l1} * 3 / 8 / (kMR * 4) / 8 * 8, 64, 1024);
  }();
  return kc;
}

/// The k block length: equal blocks of at most max_kc(), on 8-element bounds so that the
/// packing's 8×8 transposes cover them. A function of k (and the machine) alone.
int64_t k_block(int64_t k) {
  return std::min(k, ceil_div(ceil_div(k, ceil_div(k, max_kc())), 8) * 8);
}

/// Where the panels of column block jc, k block pc start in a whole packed op(B): blocks in
/// column-block order, each k block round_up(nc, kNR) × kc floats.
int64_t packed_b_offset(int64_t n, int64_t k, int64_t jc, int64_t pc) {
  return jc * k + ceil_div(std::min(kNC, n - jc), kNR) * kNR * pc;
}

/// The GEMM, op(B) packed here block by block, or read from `prepacked` (all of it, as PackedB
/// lays it out for this shape) when given.
void run(const Problem& pr, ScratchPair& scratch, const float* prepacked) {
  const int64_t kc_max = k_block(pr.k);
  const int64_t mc_max = std::min(pr.m, kMC), nc_max = std::min(pr.n, kNC);
  float* apack = scratch.a.get(static_cast<size_t>(ceil_div(mc_max, kMR) * kMR * kc_max));
  float* bscratch = prepacked
                        ? nullptr
                        : scratch.b.get(static_cast<size_t>(ceil_div(nc_max, kNR) * kNR * kc_max));
  for (int64_t jc = 0; jc < pr.n; jc += kNC) {
    const int64_t nc = std::min(kNC, pr.n - jc), panels_b = ceil_div(nc, kNR);
    for (int64_t pc = 0; pc < pr.k; pc += kc_max) {
      const int64_t kc = std::min(kc_max, pr.k - pc);
      const float beta = pc == 0 ? pr.beta : 1.0f;
      const float* bpack = prepacked ? prepacked + packed_b_offset(pr.n, pr.k, jc, pc) : bscratch;
      for (int64_t ic = 0; ic < pr.m; ic += kMC) {
        const int64_t mc = std::min(kMC, pr.m - ic), panels_a = ceil_div(mc, kMR);
        // Pack: A's panels, and B's with the first row block. Copies only: any split gives the
        // same panels.
        const int64_t pack_b = ic == 0 && !prepacked ? panels_b : 0, panels = panels_a + pack_b;
        const int64_t per_task = std::max<int64_t>(1, kPackTaskFloats / (kc * kNR));
        parallel_tiles(panels, per_task, [&](int64_t lo, int64_t hi) {
          for (int64_t q = lo; q < hi; ++q) {
            if (q < panels_a) {
              const int64_t i = q * kMR;
              pr.pack_a(ic + i, std::min(kMR, mc - i), pc, kc, apack + q * kMR * kc);
            } else {
              const int64_t j = (q - panels_a) * kNR;
              pr.pack_b(jc + j, std::min(kNR, nc - j), pc, kc,
                        bscratch + (q - panels_a) * kNR * kc);
            }
          }
        });
        const Tiling t = tiling(panels_a, panels_b, kc);
        parallel_tiles(t.tiles_a * t.tiles_b, 1, [&](int64_t lo, int64_t hi) {
          for (int64_t task = lo; task < hi; ++task) {
            const int64_t a0 = task / t.tiles_b * t.tile_a, b0 = task % t.tiles_b * t.tile_b;
            const int64_t a1 = std::min(panels_a, a0 + t.tile_a);
            const int64_t b1 = std::min(panels_b, b0 + t.tile_b);
            for (int64_t pa = a0; pa < a1; ++pa) {
              const int64_t i = pa * kMR, rows = std::min(kMR, mc - i);
              for (int64_t pb = b0; pb < b1; ++pb) {
                const int64_t j = pb * kNR, cols = std::min(kNR, nc - j);
                float* ctile = pr.c + (ic + i) * pr.n + jc + j;
                const float* ap = apack + pa * kMR * kc;
                const float* bp = bpack + pb * kNR * kc;
                if (rows == kMR && cols == kNR)
                  micro_kernel<true>(kc, ap, bp, ctile, pr.n, pr.alpha, beta, rows, cols);
                else
                  micro_kernel<false>(kc, ap, bp, ctile, pr.n, pr.alpha, beta, rows, cols);
              }
            }
          }
        });
      }
    }
  }
}

}  // namespace

// Below two micro-tiles of rows (the head's dW: 10 classes) the zero-padded rows cost more than
// Eigen's narrower kernels; measured with bench_kernels (dW_head).
bool sgemm_suits(int64_t m, int64_t n, int64_t k) {
  return m >= 2 * kMR && n >= kNR && k >= 8;
}

namespace {

void run_on_this_thread(const Problem& problem, const float* prepacked) {
  thread_local ScratchPair scratch;
  if (scratch.busy) {  // a GEMM called from inside a GEMM's task on this thread
    ScratchPair own;
    return run(problem, own, prepacked);
  }
  struct Claim {
    bool& busy;
    explicit Claim(bool& b) : busy(b) { busy = true; }
    ~Claim() { busy = false; }
  } claim(scratch.busy);
  run(problem, scratch, prepacked);
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           const float* b, float beta, float* c) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // C = beta C (an empty sum); beta = 0 writes zeros without reading C
    for (int64_t i = 0; i < m * n; ++i)
      c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    return;
  }
  run_on_this_thread({trans_a, trans_b, m, n, k, alpha, beta, a, b, c}, nullptr);
}

struct PackedB::Panels {
  Scratch floats;
};

PackedB::PackedB(bool trans_b, int64_t n, int64_t k, const float* b)
    : trans_b_(trans_b), n_(n), k_(k), panels_(std::make_unique<Panels>()) {
  const int64_t kc_max = k_block(k), last = (n - 1) / kNC * kNC;
  floats_ = static_cast<size_t>(packed_b_offset(n, k, last, 0) + ceil_div(n - last, kNR) * kNR * k);
  float* dst = panels_->floats.get(floats_);
  const Problem pr{false, trans_b, 1, n, k, 1.0f, 0.0f, nullptr, b, nullptr};
  // Every (panel, k block), each where run() reads it: the panels sgemm packs one block at a time.
  const int64_t panels = ceil_div(n, kNR), blocks = ceil_div(k, kc_max);
  parallel_tiles(panels * blocks, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t q = lo; q < hi; ++q) {
      const int64_t j = q / blocks * kNR, pc = q % blocks * kc_max;
      const int64_t jc = j / kNC * kNC, kc = std::min(kc_max, k - pc);
      pr.pack_b(j, std::min(kNR, n - j), pc, kc,
                dst + packed_b_offset(n, k, jc, pc) + (j - jc) * kc);
    }
  });
}

PackedB::~PackedB() = default;

void sgemm_packed(bool trans_a, int64_t m, float alpha, const float* a, const PackedB& b,
                  float beta, float* c) {
  if (m <= 0) return;
  const Problem problem{trans_a, b.trans_b_, m, b.n_, b.k_, alpha, beta, a, nullptr, c};
  run_on_this_thread(problem, b.panels_->floats.data());
}

}  // namespace clarena::kernels::cpu
#endif  // CLARENA_HAVE_SGEMM
