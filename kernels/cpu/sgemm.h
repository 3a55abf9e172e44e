// Our own float32 GEMM for AVX-512 machines: packed panels and an 8×32 register-tile micro-kernel,
// split over the thread pool. Other types and machines use Eigen (gemm.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

// The kernel exists in builds for AVX-512 (-march=native on a machine that has it).
#if defined(__AVX512F__)
#define CLARENA_HAVE_SGEMM 1
#endif

#ifdef CLARENA_HAVE_SGEMM
namespace clarena::kernels::cpu {

/// Whether sgemm pays for a product of this shape: its packing needs a few rows and columns to
/// be reused over. A function of the shape alone (the same kernel at every thread count).
bool sgemm_suits(int64_t m, int64_t n, int64_t k);

/// C = alpha op(A) op(B) + beta C, row-major, op(A) m×k, op(B) k×n. beta = 0 never reads C.
/// Every element of C sums its k products in the same blocks and order whatever the thread
/// count, so results are bitwise the same at any thread count.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           const float* b, float beta, float* c);

/// op(B) (k×n) packed once into the panels sgemm would make of it on every call, for a weight
/// that does not change between products (the Linear forward's x·Wᵀ of a frozen or evaluated
/// layer). sgemm_packed with it gives the same bits as sgemm with B.
class PackedB {
 public:
  PackedB(bool trans_b, int64_t n, int64_t k, const float* b);  // n, k > 0
  ~PackedB();
  PackedB(const PackedB&) = delete;
  PackedB& operator=(const PackedB&) = delete;
  size_t bytes() const { return floats_ * sizeof(float); }

 private:
  friend void sgemm_packed(bool, int64_t, float, const float*, const PackedB&, float, float*);
  struct Panels;
  bool trans_b_;
  int64_t n_, k_;
  size_t floats_ = 0;
  std::unique_ptr<Panels> panels_;
};

/// C = alpha op(A) · B + beta C with B packed beforehand; m×n = m × B's n, k = B's k.
void sgemm_packed(bool trans_a, int64_t m, float alpha, const float* a, const PackedB& b,
                  float beta, float* c);

}  // namespace clarena::kernels::cpu
#endif
