// The CPU backend: memory, copies and fill; the kernels are defined in their families' files.
#include "cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../dispatch.h"
#include "clarena/base/errors.h"

namespace clarena::kernels {
namespace cpu {

void* CpuBackend::allocate(size_t bytes) {
  // 64-byte alignment for AVX-512 loads; aligned_alloc needs a multiple of the alignment.
  size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw OutOfMemory("cpu: cannot allocate " + std::to_string(bytes) + " bytes");
  stats_.on_allocate(bytes);
  return p;
}
void CpuBackend::deallocate(void* ptr, size_t bytes) {
  forget_packed(ptr);
  stats_.on_deallocate(bytes);
  std::free(ptr);
}
void CpuBackend::copy_from_host(void* dst, const void* src, size_t bytes) {
  if (bytes) std::memcpy(dst, src, bytes);
}
void CpuBackend::copy_to_host(void* dst, const void* src, size_t bytes) {
  ++stats_.host_waits;
  if (bytes) std::memcpy(dst, src, bytes);
}
void CpuBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes && dst != src) std::memmove(dst, src, bytes);
}
void CpuBackend::fill(DType t, int64_t n, double value, void* dst) {
  dispatch_all(t, "fill",
               [&]<typename T>(T*) { std::fill_n(CLARENA_TYPED(dst), n, static_cast<T>(value)); });
}

void CpuBackend::copy_block(DType t, int64_t rows, int64_t cols, const void* src, int64_t src_ld,
                            void* dst, int64_t dst_ld) {
  const size_t item = itemsize(t), row_bytes = static_cast<size_t>(cols) * item;
  if (cols < 16) {  // narrow rows (a conv kernel's live taps): a call per row would dominate
    dispatch_all(t, "copy_block", [&]<typename T>(T*) {
      const T* s = CLARENA_CTYPED(src);
      T* d = CLARENA_TYPED(dst);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
          d[r * dst_ld + c] = s[r * src_ld + c];
    });
    return;
  }
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(static_cast<char*>(dst) + r * dst_ld * item,
                static_cast<const char*>(src) + r * src_ld * item, row_bytes);
}

}  // namespace cpu

Backend& cpu_backend() {
  static cpu::CpuBackend backend;
  return backend;
}

}  // namespace clarena::kernels
