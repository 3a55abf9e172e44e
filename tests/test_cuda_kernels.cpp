// The CUDA backend against the CPU backend, kernel by kernel.
//
// Every kernel runs on fresh random inputs (never zeros) over a grid of sizes including 1, odd,
// non-power-of-two, sizes that make the grid-stride loops iterate, and one large size; device
// outputs are poisoned (NaN, or a sentinel for int64) before the run so an element the kernel
// forgot to write fails; results must satisfy |gpu - cpu| <= atol + rtol * |cpu|, which NaN never
// does (edge-case tests that expect NaN say so explicitly). Every GPU test skips cleanly when no
// CUDA device is visible, and fails instead when CLARENA_REQUIRE_CUDA=1 (bench/gpu_check.sh sets
// it, so a machine whose driver is broken cannot pass by skipping). The device-free tests (the
// probe, TF32 switch and guard, the caching allocator on host memory) run everywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../kernels/cuda/caching_allocator.h"
#include "clarena/core/errors.h"
#include "clarena/core/ops.h"
#include "clarena/core/random.h"
#include "clarena/core/runtime.h"
#include "clarena/kernels/backend.h"
#include "clarena/kernels/cuda_backend.h"

namespace {

using clarena::DType;
using namespace clarena::kernels;

bool require_cuda() {
  const char* v = std::getenv("CLARENA_REQUIRE_CUDA");
  return v && *v && std::strcmp(v, "0") != 0;
}

// "no CUDA device" is the marker bench/gpu_check.sh looks for in a failed run.
#define SKIP_WITHOUT_GPU()                                                                \
  do {                                                                                    \
    if (clarena::kernels::cuda_device_count_impl() == 0) {                                \
      if (require_cuda())                                                                 \
        FAIL() << "no CUDA device, and CLARENA_REQUIRE_CUDA=1: " << cuda_probe().message; \
      GTEST_SKIP() << cuda_probe().message;                                               \
    }                                                                                     \
  } while (0)

Backend& gpu() {
  return cuda_backend(0);
}
Backend& cpu() {
  return cpu_backend();
}

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>)
    return DType::Float32;
  else if constexpr (std::is_same_v<T, double>)
    return DType::Float64;
  else
    return DType::Int64;
}

template <typename T>
T poison_value() {
  if constexpr (std::is_floating_point_v<T>)
    return std::numeric_limits<T>::quiet_NaN();
  else
    return T(-777777);
}

/// A device buffer of n elements, freed back to the caching allocator on scope exit.
template <typename T>
class DevBuf {
 public:
  explicit DevBuf(size_t n) : n_(n), p_(gpu().allocate(n * sizeof(T))) {}
  explicit DevBuf(const std::vector<T>& host) : DevBuf(host.size()) { upload(host); }
  ~DevBuf() { gpu().deallocate(p_, n_ * sizeof(T)); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;

  void upload(const std::vector<T>& host) { gpu().copy_from_host(p_, host.data(), n_ * sizeof(T)); }
  void poison() { upload(std::vector<T>(n_, poison_value<T>())); }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    gpu().copy_to_host(host.data(), p_, n_ * sizeof(T));
    return host;
  }
  T* get() { return static_cast<T*>(p_); }
  size_t size() const { return n_; }

 private:
  size_t n_;
  void* p_;
};

/// Uniform in [lo, hi), nudged away from zero so no input is (near) zero.
template <typename T>
std::vector<T> random_vec(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (auto& x : v) {
    double d = dist(rng);
    if (std::abs(d) < 1e-3) d = d < 0 ? -0.5 : 0.5;
    x = static_cast<T>(d);
  }
  return v;
}

std::vector<int64_t> random_labels(size_t n, int64_t classes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> dist(0, classes - 1);
  std::vector<int64_t> v(n);
  for (auto& x : v)
    x = dist(rng);
  return v;
}

/// GPU against CPU within atol + rtol·|ref|. A NaN fails, unless `specials_match`: then a NaN
/// matches a NaN and an infinity the same infinity (edge cases where both backends must give
/// NaN or inf at the same places).
template <typename T>
void expect_close(const std::vector<T>& ref, const std::vector<T>& got, double atol, double rtol,
                  const std::string& what, bool specials_match = false) {
  ASSERT_EQ(ref.size(), got.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double r = static_cast<double>(ref[i]), g = static_cast<double>(got[i]);
    const bool same_special =
        specials_match && ((std::isnan(r) && std::isnan(g)) || (std::isinf(r) && r == g));
    if (!same_special && !(std::abs(g - r) <= atol + rtol * std::abs(r))) {
      if (bad < 5)
        ADD_FAILURE() << what << ": element " << i << " of " << ref.size() << ": gpu " << g
                      << " vs cpu " << r << " (atol " << atol << ", rtol " << rtol << ")";
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << ref.size() << " elements differ";
}

template <typename T>
void expect_equal(const std::vector<T>& ref, const std::vector<T>& got, const std::string& what) {
  expect_close(ref, got, 0.0, 0.0, what);
}

uint64_t seed_of(int64_t a, int64_t b, int64_t c = 0) {
  return static_cast<uint64_t>(a * 1000003 + b * 7919 + c * 131 + 17);
}

template <typename T>
void expect_close_nan(const std::vector<T>& ref, const std::vector<T>& got, double atol,
                      double rtol, const std::string& what) {
  expect_close(ref, got, atol, rtol, what, /*specials_match=*/true);
}

template <typename T>
void expect_bitwise(const std::vector<T>& a, const std::vector<T>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(T)))
      << what << ": two runs on the same input differ";
}

template <typename T>
double tol_of(double f32, double f64) {
  return std::is_same_v<T, float> ? f32 : f64;
}

// ---------------------------------------------------------------------------------------------
// Tests that need no device.

TEST(CudaBackendNoDevice, ProbeSaysWhyThereIsNoDevice) {
  const CudaProbe& p = cuda_probe();
  EXPECT_EQ(p.count, cuda_device_count_impl());
  EXPECT_EQ(p.count, clarena::cuda_device_count());
  if (p.count > 0) {
    EXPECT_EQ(p.error, 0);
    EXPECT_TRUE(p.message.empty()) << p.message;
  } else {
    EXPECT_FALSE(p.message.empty());
    // Either the normal CPU-machine case, named as such, or a broken driver, named as such.
    if (p.no_device)
      EXPECT_NE(p.message.find("no CUDA device"), std::string::npos) << p.message;
    else
      EXPECT_NE(p.message.find("unusable"), std::string::npos) << p.message;
  }
}

TEST(CudaBackendNoDevice, BadDeviceIndexThrowsDeviceError) {
  const int count = cuda_device_count_impl();
  EXPECT_GE(count, 0);
  EXPECT_THROW(cuda_backend(-1), clarena::DeviceError);
  EXPECT_THROW(cuda_backend(count), clarena::DeviceError);
  EXPECT_THROW(cuda_backend(count + 7), clarena::DeviceError);
  try {
    cuda_backend(count + 7);
  } catch (const clarena::DeviceError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cuda:" + std::to_string(count + 7)), std::string::npos) << msg;
  }
}

TEST(CudaBackendNoDevice, Tf32IsOffByDefaultAndSwitches) {
  EXPECT_FALSE(tf32_enabled());
  set_tf32_enabled(true);
  EXPECT_TRUE(tf32_enabled());
  set_tf32_enabled(false);
  EXPECT_FALSE(tf32_enabled());
}

TEST(CudaBackendNoDevice, Tf32GuardRestoresEvenWhenAnExceptionEscapes) {
  ASSERT_FALSE(tf32_enabled());
  try {
    Tf32Guard on(true);
    EXPECT_TRUE(tf32_enabled());
    {
      Tf32Guard off(false);
      EXPECT_FALSE(tf32_enabled());
    }
    EXPECT_TRUE(tf32_enabled());
    throw std::runtime_error("a failing check inside a TF32 region");
  } catch (const std::runtime_error&) {
  }
  EXPECT_FALSE(tf32_enabled());
}

// --- the caching allocator on host memory (a fake DeviceMemory) -------------------------------

/// Host memory standing in for the device: 512-aligned blocks, an optional capacity past which
/// malloc answers cudaErrorMemoryAllocation, and call counts.
class FakeMemory final : public cuda::DeviceMemory {
 public:
  explicit FakeMemory(size_t capacity = SIZE_MAX) : capacity_(capacity) {}
  ~FakeMemory() override {
    for (auto& [p, n] : live_)
      std::free(p);
  }
  cudaError_t malloc(void** ptr, size_t bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++mallocs;
    if (bytes > capacity_ || used_ > capacity_ - bytes) return cudaErrorMemoryAllocation;
    *ptr = std::aligned_alloc(512, (bytes + 511) / 512 * 512);
    if (!*ptr) return cudaErrorMemoryAllocation;
    live_.emplace_back(*ptr, bytes);
    used_ += bytes;
    return cudaSuccess;
  }
  cudaError_t free(void* ptr) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++frees;
    for (size_t i = 0; i < live_.size(); ++i)
      if (live_[i].first == ptr) {
        used_ -= live_[i].second;
        std::free(ptr);
        live_.erase(live_.begin() + static_cast<std::ptrdiff_t>(i));
        return cudaSuccess;
      }
    ADD_FAILURE() << "free of a pointer the fake did not hand out";
    return cudaErrorInvalidValue;
  }
  cudaError_t synchronize() override {
    ++syncs;
    return cudaSuccess;
  }
  size_t used() const { return used_; }
  std::atomic<int> mallocs{0}, frees{0}, syncs{0};

 private:
  std::mutex mu_;
  size_t capacity_, used_ = 0;
  std::vector<std::pair<void*, size_t>> live_;
};

using Alloc = cuda::CachingAllocator;
constexpr size_t kMiB = size_t{1} << 20;

TEST(CachingAllocatorHost, RoundsTo512ByteMultiplesWithoutOverflow) {
  EXPECT_EQ(Alloc::round_size(1), 512u);
  EXPECT_EQ(Alloc::round_size(512), 512u);
  EXPECT_EQ(Alloc::round_size(513), 1024u);
  EXPECT_EQ(Alloc::round_size(1000), 1024u);
  EXPECT_EQ(Alloc::round_size(3 * kMiB + 1), 3 * kMiB + 512);  // not a power of two
  const size_t top = std::numeric_limits<size_t>::max();
  EXPECT_THROW(Alloc::round_size(top), clarena::OutOfMemory);
  EXPECT_THROW(Alloc::round_size(top - 100), clarena::OutOfMemory);
  EXPECT_EQ(Alloc::round_size(top - 1023) % 512, 0u);
  EXPECT_GE(Alloc::round_size(top - 1023), top - 1023);
  EXPECT_EQ(Alloc::segment_size(512), 2 * kMiB);
  EXPECT_EQ(Alloc::segment_size(kMiB), 2 * kMiB);
  EXPECT_EQ(Alloc::segment_size(kMiB + 512), 20 * kMiB);
  EXPECT_EQ(Alloc::segment_size(10 * kMiB), 10 * kMiB);
  EXPECT_EQ(Alloc::segment_size(11 * kMiB), 12 * kMiB);
  EXPECT_EQ(Alloc::segment_size(top - 1023), top - 1023);  // no overflow when rounding up
}

TEST(CachingAllocatorHost, HugeRequestThrowsOutOfMemory) {
  FakeMemory mem;
  Alloc a(0, mem);
  EXPECT_THROW(a.allocate(std::numeric_limits<size_t>::max() - 5, nullptr), clarena::OutOfMemory);
  EXPECT_THROW(a.allocate(size_t{1} << 62, nullptr), clarena::OutOfMemory);
  EXPECT_EQ(a.stats().bytes_in_use, 0);
}

TEST(CachingAllocatorHost, SplitsSegmentsAndCoalescesOnFree) {
  FakeMemory mem;
  Alloc a(0, mem);
  clarena::kernels::Counter mallocs;
  char* p1 = static_cast<char*>(a.allocate(1000, &mallocs));
  char* p2 = static_cast<char*>(a.allocate(3000, &mallocs));
  char* p3 = static_cast<char*>(a.allocate(512, &mallocs));
  EXPECT_EQ(mallocs, 1);  // one 2 MiB small segment serves all three
  EXPECT_EQ(p2, p1 + 1024);
  EXPECT_EQ(p3, p2 + 3072);
  EXPECT_EQ(a.stats().bytes_in_use, 1024 + 3072 + 512);
  EXPECT_EQ(a.stats().bytes_reserved, static_cast<int64_t>(2 * kMiB));
  a.deallocate(p2);
  // The hole left by p2 is reused first (best fit, lowest address).
  EXPECT_EQ(a.allocate(2000, &mallocs), p2);
  a.deallocate(p2);
  a.deallocate(p1);
  a.deallocate(p3);  // all three merge back into the whole segment
  EXPECT_EQ(a.stats().bytes_in_use, 0);
  EXPECT_EQ(a.stats().blocks_in_use, 0);
  // A request as large as the pool allows gets the whole merged segment back.
  void* big = a.allocate(kMiB, &mallocs);
  EXPECT_EQ(big, p1);
  EXPECT_EQ(mallocs, 1);
  a.deallocate(big);
  a.empty_cache();
  EXPECT_EQ(a.stats().bytes_reserved, 0);
  EXPECT_EQ(mem.frees, 1);
  EXPECT_EQ(mem.used(), 0u);
}

TEST(CachingAllocatorHost, LargeRequestsShareA20MiBSegment) {
  FakeMemory mem;
  Alloc a(0, mem);
  void* p = a.allocate(5 * kMiB, nullptr);
  void* q = a.allocate(5 * kMiB, nullptr);
  EXPECT_EQ(mem.mallocs, 1);
  EXPECT_EQ(static_cast<char*>(q), static_cast<char*>(p) + 5 * kMiB);
  void* r = a.allocate(30 * kMiB + 1, nullptr);  // a segment of its own, rounded to 2 MiB
  EXPECT_EQ(mem.mallocs, 2);
  EXPECT_EQ(a.stats().bytes_reserved, static_cast<int64_t>((20 + 32) * kMiB));
  // Small requests never come from the large pool.
  void* s = a.allocate(100, nullptr);
  EXPECT_EQ(mem.mallocs, 3);
  for (void* x : {p, q, r, s})
    a.deallocate(x);
  const int64_t mallocs = mem.mallocs;
  // Steady state: the same sizes again make no new segment.
  for (int i = 0; i < 3; ++i) {
    void* x = a.allocate(5 * kMiB, nullptr);
    void* y = a.allocate(30 * kMiB + 1, nullptr);
    a.deallocate(x);
    a.deallocate(y);
  }
  EXPECT_EQ(mem.mallocs, mallocs);
}

TEST(CachingAllocatorHost, FlushesCachedSegmentsAndRetriesWhenOutOfMemory) {
  FakeMemory mem(50 * kMiB);
  Alloc a(0, mem);
  void* p = a.allocate(40 * kMiB, nullptr);
  a.deallocate(p);  // cached: the fake now has 10 MiB free
  // Too large for the cached block and for what is left: fails once, releases the cached 40 MiB
  // segment, succeeds.
  void* q = a.allocate(45 * kMiB, nullptr);
  EXPECT_NE(q, nullptr);
  EXPECT_EQ(mem.frees, 1);
  EXPECT_GE(mem.syncs, 1);
  // Still too large after the flush: OutOfMemory naming the size.
  try {
    a.allocate(45 * kMiB, nullptr);
    ADD_FAILURE() << "expected OutOfMemory";
  } catch (const clarena::OutOfMemory& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(45 * kMiB)), std::string::npos) << e.what();
  }
  a.deallocate(q);
  EXPECT_EQ(a.stats().bytes_in_use, 0);
}

TEST(CachingAllocatorHost, UncachedModeAllocatesExactSizesAndFreesAfterSync) {
  FakeMemory mem;
  Alloc a(0, mem, /*caching=*/false);
  void* p = a.allocate(1000, nullptr);
  void* q = a.allocate(1000, nullptr);
  EXPECT_EQ(mem.mallocs, 2);
  EXPECT_EQ(mem.used(), 2000u);  // exact sizes, no rounding: overruns are visible
  a.deallocate(p);
  EXPECT_EQ(mem.frees, 1);
  EXPECT_EQ(mem.syncs, 1);
  a.deallocate(q);
  EXPECT_EQ(a.stats().bytes_in_use, 0);
  EXPECT_EQ(mem.used(), 0u);
}

TEST(CachingAllocatorHost, SeveralThreadsNeverShareABlock) {
  FakeMemory mem;
  Alloc a(0, mem);
  constexpr int kThreads = 8, kIters = 400;
  std::atomic<int> overlaps{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) + 1);
      std::vector<std::pair<unsigned char*, size_t>> held;
      for (int i = 0; i < kIters; ++i) {
        const size_t n = 1 + rng() % (rng() % 4 == 0 ? 3 * kMiB : 8192);
        auto* p = static_cast<unsigned char*>(a.allocate(n, nullptr));
        std::memset(p, t + 1, n);
        held.emplace_back(p, n);
        if (held.size() > 6 || rng() % 2) {
          const size_t k = rng() % held.size();
          auto [q, m] = held[k];
          for (size_t j = 0; j < m; j += 97)  // still ours: nobody else was handed this block
            if (q[j] != t + 1) ++overlaps;
          a.deallocate(q);
          held.erase(held.begin() + static_cast<std::ptrdiff_t>(k));
        }
      }
      for (auto [q, m] : held)
        a.deallocate(q);
    });
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(overlaps, 0);
  const cuda::AllocatorStats s = a.stats();
  EXPECT_EQ(s.bytes_in_use, 0);
  EXPECT_EQ(s.blocks_in_use, 0);
  EXPECT_EQ(s.bytes_reserved, static_cast<int64_t>(mem.used()));
  a.empty_cache();  // every segment is wholly free again: all go back
  EXPECT_EQ(mem.used(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Allocator, counters, error paths on the device.

TEST(CudaAllocator, FreedBlockIsReusedWithoutMalloc) {
  SKIP_WITHOUT_GPU();
  if (!cuda_caching_enabled()) GTEST_SKIP() << "CLARENA_CUDA_NO_CACHE is set";
  Backend& b = gpu();
  void* p = b.allocate(1000);
  b.deallocate(p, 1000);
  const int64_t before = b.stats().device_mallocs, before_total = cuda_malloc_count(0);
  void* q = b.allocate(1000);
  EXPECT_EQ(b.stats().device_mallocs, before);
  EXPECT_EQ(cuda_malloc_count(0), before_total);
  EXPECT_EQ(p, q);
  b.deallocate(q, 1000);
  EXPECT_EQ(b.allocate(0), nullptr);
}

TEST(CudaAllocator, SteadyStateMakesNoMalloc) {
  SKIP_WITHOUT_GPU();
  if (!cuda_caching_enabled()) GTEST_SKIP() << "CLARENA_CUDA_NO_CACHE is set";
  Backend& b = gpu();
  const std::vector<size_t> sizes = {4, 512, 513, 4096, 100000, 3 << 20, 3 << 20, 40 << 20};
  auto step = [&] {
    std::vector<void*> blocks;
    for (size_t s : sizes)
      blocks.push_back(b.allocate(s));
    for (size_t i = 0; i < sizes.size(); ++i)
      b.deallocate(blocks[i], sizes[i]);
  };
  step();
  const int64_t before = b.stats().device_mallocs;
  for (int i = 0; i < 3; ++i)
    step();
  EXPECT_EQ(b.stats().device_mallocs, before);
  EXPECT_GT(cuda_bytes_cached(0), 0);
}

TEST(CudaAllocator, UncachedModeMallocsEveryBlock) {
  SKIP_WITHOUT_GPU();
  if (cuda_caching_enabled()) GTEST_SKIP() << "runs with CLARENA_CUDA_NO_CACHE=1";
  Backend& b = gpu();
  const int64_t before = b.stats().device_mallocs;
  void* p = b.allocate(1000);
  void* q = b.allocate(1000);
  EXPECT_EQ(b.stats().device_mallocs, before + 2);
  b.deallocate(p, 1000);
  b.deallocate(q, 1000);
}

TEST(CudaAllocator, OutOfMemoryThrowsAfterFlush) {
  SKIP_WITHOUT_GPU();
  Backend& b = gpu();
  EXPECT_THROW(b.allocate(size_t{1} << 50), clarena::OutOfMemory);
  EXPECT_THROW(b.allocate(std::numeric_limits<size_t>::max() - 3), clarena::OutOfMemory);
  void* p = b.allocate(256);  // still usable afterwards
  EXPECT_NE(p, nullptr);
  b.deallocate(p, 256);
  cuda_empty_cache();
  if (cuda_caching_enabled()) {
    EXPECT_LE(cuda_bytes_cached(0), cuda_bytes_in_use(0) + (64 << 20));
  }
}

TEST(CudaAllocator, SeveralThreadsAllocateFillAndFree) {
  SKIP_WITHOUT_GPU();
  Backend& b = gpu();
  b.synchronize();
  const int64_t in_use = cuda_bytes_in_use(0);
  constexpr int kThreads = 8, kIters = 40;
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) + 11);
      for (int i = 0; i < kIters; ++i) {
        const int64_t n = 1 + static_cast<int64_t>(rng() % 300000);
        void* p = b.allocate(static_cast<size_t>(n) * sizeof(float));
        b.fill(DType::Float32, n, t + 0.5, p);
        std::vector<float> host(static_cast<size_t>(n));
        b.copy_to_host(host.data(), p, host.size() * sizeof(float));
        for (float v : host)
          if (v != static_cast<float>(t + 0.5)) {
            ++wrong;
            break;
          }
        b.deallocate(p, static_cast<size_t>(n) * sizeof(float));
      }
    });
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(cuda_bytes_in_use(0), in_use);
}

TEST(CudaBackend, CountsLaunchesAndGemms) {
  SKIP_WITHOUT_GPU();
  Backend& b = gpu();
  DevBuf<float> x(random_vec<float>(64, 1)), y(random_vec<float>(64, 2)), c(64);
  const KernelStats s0 = b.stats();
  b.axpby(DType::Float32, 64, 2.0, x.get(), 1.0, y.get());
  EXPECT_EQ(b.stats().kernel_launches, s0.kernel_launches + 1);
  b.gemm(DType::Float32, false, false, 8, 8, 1, 1.0, x.get(), y.get(), 0.0, c.get());
  EXPECT_EQ(b.stats().gemm_calls, s0.gemm_calls + 1);
  EXPECT_EQ(b.stats().kernel_launches, s0.kernel_launches + 2);
  b.synchronize();
}

TEST(CudaBackend, Int64ThrowsDTypeErrorWhereUnsupported) {
  SKIP_WITHOUT_GPU();
  DevBuf<int64_t> a(std::vector<int64_t>(8, 1));
  EXPECT_THROW(
      gpu().binary(Binary::Add, Broadcast::None, DType::Int64, 2, 4, a.get(), a.get(), a.get()),
      clarena::DTypeError);
  EXPECT_THROW(gpu().gemm(DType::Int64, false, false, 2, 2, 2, 1.0, a.get(), a.get(), 0.0, a.get()),
               clarena::DTypeError);
}

TEST(CudaBackend, BadLabelThrowsValueErrorAtNextHostRead) {
  SKIP_WITHOUT_GPU();
  const int64_t rows = 5, cols = 7;
  std::vector<int64_t> labels = random_labels(rows, cols, 3);
  labels[3] = cols;  // out of range
  DevBuf<float> x(random_vec<float>(rows * cols, 4)), lse(rows), loss(1), dx(rows * cols);
  DevBuf<int64_t> lab(labels);
  DevBuf<float> g(std::vector<float>{1.0f});
  gpu().cross_entropy_forward(DType::Float32, rows, cols, x.get(), lab.get(), lse.get(),
                              loss.get());
  EXPECT_THROW(loss.download(), clarena::ValueError);
  EXPECT_NO_THROW(loss.download());  // reported once, then cleared
  gpu().cross_entropy_backward(DType::Float32, rows, cols, x.get(), lab.get(), lse.get(), g.get(),
                               dx.get());
  EXPECT_THROW(gpu().synchronize(), clarena::ValueError);
  labels[3] = -1;
  lab.upload(labels);
  gpu().cross_entropy_forward(DType::Float32, rows, cols, x.get(), lab.get(), lse.get(),
                              loss.get());
  try {
    loss.download();
    ADD_FAILURE() << "no ValueError for label -1";
  } catch (const clarena::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("label -1 at row 3"), std::string::npos) << e.what();
  }
}

TEST(CudaBackend, TimeMsFromSeveralThreads) {
  SKIP_WITHOUT_GPU();
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      DevBuf<float> x(1 << 20);
      for (int i = 0; i < 10; ++i) {
        const double ms = gpu().time_ms([&] { gpu().fill(DType::Float32, 1 << 20, 1.0, x.get()); });
        if (!(ms >= 0 && ms < 1e4)) ++bad;
      }
    });
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(bad, 0);
}

// ---------------------------------------------------------------------------------------------
// [rows, cols] kernels. Each check is a template run for float32 by the parameterised tests and
// for float64 by CudaFloat64.

using Rc = std::tuple<int64_t, int64_t>;
class RowsCols : public ::testing::TestWithParam<Rc> {};

// {40000, 10} and {2200, 1100} are larger than one wave of row groups on a 132-SM card (4224
// warp-mode blocks of 8 rows, 2112 block-mode blocks), so every grid-stride row loop iterates.
const std::vector<Rc> kRowsCols = {{1, 1},      {1, 7},      {3, 1},      {7, 33},   {33, 100},
                                   {128, 10},   {65, 1000},  {5, 1025},   {3, 5000}, {1025, 257},
                                   {4096, 512}, {40000, 10}, {2200, 1100}};

std::string rc_name(const ::testing::TestParamInfo<Rc>& info) {
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "r" + std::to_string(...).
  std::string name = "r";
  name += std::to_string(std::get<0>(info.param));
  name += "_c";
  name += std::to_string(std::get<1>(info.param));
  return name;
}

template <typename T>
void check_fill_copy(int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  DevBuf<T> y(n);
  y.poison();
  gpu().fill(dtype_of<T>(), n, 1.25, y.get());
  expect_equal(std::vector<T>(n, T(1.25)), y.download(), "fill");

  const std::vector<T> x = random_vec<T>(n, seed_of(rows, cols, 1));
  DevBuf<T> dx(x), dy(n);
  dy.poison();
  gpu().copy(dy.get(), dx.get(), n * sizeof(T));
  expect_equal(x, dy.download(), "copy");
  // Overlapping copies have memmove semantics, in both directions.
  for (int64_t shift : {int64_t{1}, int64_t{-1}, n / 3, -(n / 3)}) {
    if (shift == 0 || std::abs(shift) >= n) continue;
    const int64_t len = n - std::abs(shift);
    const int64_t from = shift > 0 ? 0 : -shift, to = shift > 0 ? shift : 0;
    std::vector<T> ref = x;
    std::memmove(ref.data() + to, ref.data() + from, len * sizeof(T));
    dx.upload(x);
    gpu().copy(dx.get() + to, dx.get() + from, len * sizeof(T));
    expect_equal(ref, dx.download(), "overlapping copy, shift " + std::to_string(shift));
  }
}

template <typename T>
void check_copy_block(int64_t rows, int64_t cols) {
  // A [rows, cols] block at column offset 2 of a [rows, cols + 5] source into a [rows, cols + 3]
  // destination at column offset 1.
  const int64_t src_ld = cols + 5, dst_ld = cols + 3;
  const auto src = random_vec<T>(rows * src_ld, seed_of(rows, cols, 31));
  const auto dst0 = random_vec<T>(rows * dst_ld, seed_of(rows, cols, 32));
  std::vector<T> ref = dst0;
  cpu().copy_block(dtype_of<T>(), rows, cols, src.data() + 2, src_ld, ref.data() + 1, dst_ld);
  DevBuf<T> ds(src), dd(dst0);
  gpu().copy_block(dtype_of<T>(), rows, cols, ds.get() + 2, src_ld, dd.get() + 1, dst_ld);
  expect_equal(ref, dd.download(), "copy_block");
}

TEST_P(RowsCols, CopyBlock) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_copy_block<float>(rows, cols);
}

TEST_P(RowsCols, FillAndCopy) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_fill_copy<float>(rows, cols);
  const int64_t n = rows * cols;
  DevBuf<int64_t> li(n);
  li.poison();
  gpu().fill(DType::Int64, n, 7.0, li.get());
  expect_equal(std::vector<int64_t>(n, 7), li.download(), "fill int64");
}

template <typename T>
void check_binary(int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  const double tol = tol_of<T>(1e-6, 1e-12);
  for (Binary op : {Binary::Add, Binary::Sub, Binary::Mul})
    for (Broadcast bc : {Broadcast::None, Broadcast::RowA, Broadcast::RowB}) {
      const std::string what =
          "binary op " + std::to_string(int(op)) + " bc " + std::to_string(int(bc));
      const auto a = random_vec<T>(bc == Broadcast::RowA ? cols : n, seed_of(rows, cols, 2));
      const auto b = random_vec<T>(bc == Broadcast::RowB ? cols : n, seed_of(rows, cols, 3));
      std::vector<T> ref(n);
      cpu().binary(op, bc, dtype_of<T>(), rows, cols, a.data(), b.data(), ref.data());
      DevBuf<T> da(a), db(b), out(n);
      out.poison();
      gpu().binary(op, bc, dtype_of<T>(), rows, cols, da.get(), db.get(), out.get());
      expect_close(ref, out.download(), tol, tol, what);
      // out aliasing a full-size operand
      T* full = bc == Broadcast::RowA ? db.get() : da.get();
      gpu().binary(op, bc, dtype_of<T>(), rows, cols, da.get(), db.get(), full);
      expect_close(ref, bc == Broadcast::RowA ? db.download() : da.download(), tol, tol,
                   what + " (aliased)");
    }
  // Misaligned operands (one element past an aligned start) take the element-wise path.
  if (n > 2) {
    const auto a = random_vec<T>(n, seed_of(rows, cols, 40));
    const auto b = random_vec<T>(n, seed_of(rows, cols, 41));
    std::vector<T> ref(n - 1);
    cpu().binary(Binary::Add, Broadcast::None, dtype_of<T>(), 1, n - 1, a.data() + 1, b.data() + 1,
                 ref.data());
    DevBuf<T> da(a), db(b), out(n);
    out.poison();
    gpu().binary(Binary::Add, Broadcast::None, dtype_of<T>(), 1, n - 1, da.get() + 1, db.get() + 1,
                 out.get() + 1);
    std::vector<T> got = out.download();
    got.erase(got.begin());
    expect_close(ref, got, tol, tol, "binary, misaligned");
  }
}

TEST_P(RowsCols, Binary) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_binary<float>(rows, cols);
}

template <typename T>
void check_axpby(int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  const double tol = tol_of<T>(1e-6, 1e-14);
  const auto x = random_vec<T>(n, seed_of(rows, cols, 4));
  const auto y0 = random_vec<T>(n, seed_of(rows, cols, 5));
  DevBuf<T> dx(x), dy(n);
  // beta == 0 overwrites: a NaN-poisoned y must not leak through.
  std::vector<T> ref(n, T(0));
  cpu().axpby(dtype_of<T>(), n, 1.5, x.data(), 0.0, ref.data());
  dy.poison();
  gpu().axpby(dtype_of<T>(), n, 1.5, dx.get(), 0.0, dy.get());
  expect_close(ref, dy.download(), tol, tol, "axpby beta=0");
  ref = y0;
  cpu().axpby(dtype_of<T>(), n, -0.5, x.data(), 0.75, ref.data());
  dy.upload(y0);
  gpu().axpby(dtype_of<T>(), n, -0.5, dx.get(), 0.75, dy.get());
  expect_close(ref, dy.download(), tol, tol, "axpby");
}

TEST_P(RowsCols, Axpby) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_axpby<float>(rows, cols);
}

template <typename T>
void check_unary(int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  const double atol = tol_of<T>(1e-6, 1e-14), rtol = tol_of<T>(1e-5, 1e-13);
  const auto x = random_vec<T>(n, seed_of(rows, cols, 6), -3, 3);
  const auto dy = random_vec<T>(n, seed_of(rows, cols, 7));
  for (Unary f : {Unary::Relu, Unary::Tanh, Unary::Sigmoid, Unary::Exp}) {
    const std::string what = "unary " + std::to_string(int(f));
    std::vector<T> y(n), dxr(n);
    cpu().unary_forward(f, dtype_of<T>(), n, x.data(), y.data());
    DevBuf<T> dx_in(x), dy_out(n);
    dy_out.poison();
    gpu().unary_forward(f, dtype_of<T>(), n, dx_in.get(), dy_out.get());
    expect_close(y, dy_out.download(), atol, rtol, what + " forward");

    cpu().unary_backward(f, dtype_of<T>(), n, y.data(), dy.data(), dxr.data());
    DevBuf<T> y_in(y), g_in(dy), g_out(n);
    g_out.poison();
    gpu().unary_backward(f, dtype_of<T>(), n, y_in.get(), g_in.get(), g_out.get());
    expect_close(dxr, g_out.download(), atol, rtol, what + " backward");
  }
}

TEST_P(RowsCols, UnaryForwardBackward) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_unary<float>(rows, cols);
}

template <typename T>
void check_bias_relu(int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  const auto bias = random_vec<T>(cols, seed_of(rows, cols, 8));
  auto y = random_vec<T>(n, seed_of(rows, cols, 9));
  DevBuf<T> db(bias), dy(y);
  cpu().bias_relu(dtype_of<T>(), rows, cols, bias.data(), y.data());
  gpu().bias_relu(dtype_of<T>(), rows, cols, db.get(), dy.get());
  expect_close(y, dy.download(), tol_of<T>(1e-6, 1e-14), tol_of<T>(1e-6, 1e-14), "bias_relu");
}

TEST_P(RowsCols, BiasRelu) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_bias_relu<float>(rows, cols);
}

template <typename T>
void check_log_softmax(int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  const double tol = tol_of<T>(2e-5, 1e-11);
  const auto x = random_vec<T>(n, seed_of(rows, cols, 10), -5, 5);
  std::vector<T> y(n);
  cpu().log_softmax_forward(dtype_of<T>(), rows, cols, x.data(), y.data());
  DevBuf<T> dx(x), dy(n);
  dy.poison();
  gpu().log_softmax_forward(dtype_of<T>(), rows, cols, dx.get(), dy.get());
  expect_close(y, dy.download(), tol, tol, "log_softmax forward");

  const auto g = random_vec<T>(n, seed_of(rows, cols, 11));
  std::vector<T> ref(n);
  cpu().log_softmax_backward(dtype_of<T>(), rows, cols, y.data(), g.data(), ref.data());
  DevBuf<T> yd(y), gd(g), out(n);
  out.poison();
  gpu().log_softmax_backward(dtype_of<T>(), rows, cols, yd.get(), gd.get(), out.get());
  expect_close(ref, out.download(), tol, 10 * tol, "log_softmax backward");
}

TEST_P(RowsCols, LogSoftmax) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_log_softmax<float>(rows, cols);
}

/// Cross-entropy forward and backward on `x` against the CPU; NaN must match NaN.
template <typename T>
void check_cross_entropy_on(int64_t rows, int64_t cols, const std::vector<T>& x,
                            const std::vector<int64_t>& labels, double tol,
                            const std::string& what) {
  const int64_t n = rows * cols;
  std::vector<T> lse(rows), loss(1);
  cpu().cross_entropy_forward(dtype_of<T>(), rows, cols, x.data(), labels.data(), lse.data(),
                              loss.data());
  DevBuf<T> dx(x), dlse(rows), dloss(1);
  DevBuf<int64_t> dlab(labels);
  dlse.poison();
  dloss.poison();
  gpu().cross_entropy_forward(dtype_of<T>(), rows, cols, dx.get(), dlab.get(), dlse.get(),
                              dloss.get());
  expect_close_nan(lse, dlse.download(), tol, tol, what + ": lse");
  expect_close_nan(loss, dloss.download(), tol, tol, what + ": loss");

  const std::vector<T> grad_loss = {T(1.7)};
  std::vector<T> ref(n);
  cpu().cross_entropy_backward(dtype_of<T>(), rows, cols, x.data(), labels.data(), lse.data(),
                               grad_loss.data(), ref.data());
  DevBuf<T> dg(grad_loss), out(n);
  out.poison();
  gpu().cross_entropy_backward(dtype_of<T>(), rows, cols, dx.get(), dlab.get(), dlse.get(),
                               dg.get(), out.get());
  expect_close_nan(ref, out.download(), tol * 1e-2, 10 * tol, what + ": backward");
}

template <typename T>
void check_cross_entropy(int64_t rows, int64_t cols) {
  const auto x = random_vec<T>(rows * cols, seed_of(rows, cols, 12), -5, 5);
  const auto labels = random_labels(rows, cols, seed_of(rows, cols, 13));
  check_cross_entropy_on<T>(rows, cols, x, labels, tol_of<T>(2e-5, 1e-11), "cross_entropy");
}

TEST_P(RowsCols, CrossEntropy) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_cross_entropy<float>(rows, cols);
}

/// PyTorch's argmax: NaN is the maximum (the first NaN wins), ties go to the first index.
template <typename T>
std::vector<int64_t> argmax_reference(int64_t outer, int64_t reduce, int64_t inner,
                                      const std::vector<T>& x) {
  std::vector<int64_t> out(outer * inner);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      int64_t best = 0;
      for (int64_t r = 1; r < reduce; ++r) {
        const T v = x[(o * reduce + r) * inner + i], b = x[(o * reduce + best) * inner + i];
        if (std::isnan(b)) break;
        if (std::isnan(v) || v > b) best = r;
      }
      out[o * inner + i] = best;
    }
  return out;
}

template <typename T>
void check_argmax(int64_t rows, int64_t cols) {
  const auto x = random_vec<T>(rows * cols, seed_of(rows, cols, 14));
  DevBuf<T> dx(x);
  // Along the rows' columns ([rows, cols, 1]) and along the rows ([1, rows, cols]).
  for (auto [outer, reduce, inner] : {std::tuple<int64_t, int64_t, int64_t>{rows, cols, 1},
                                      std::tuple<int64_t, int64_t, int64_t>{1, rows, cols}}) {
    std::vector<int64_t> ref(outer * inner);
    cpu().argmax(dtype_of<T>(), outer, reduce, inner, x.data(), ref.data());
    DevBuf<int64_t> out(outer * inner);
    out.poison();
    gpu().argmax(dtype_of<T>(), outer, reduce, inner, dx.get(), out.get());
    expect_equal(ref, out.download(), "argmax inner=" + std::to_string(inner));
  }
}

TEST_P(RowsCols, Argmax) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_argmax<float>(rows, cols);
}

template <typename T>
void check_equal(int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  auto fa = random_vec<T>(n, seed_of(rows, cols, 17));
  auto fb = fa;
  for (int64_t i = 0; i < n; i += 3)
    fb[i] += T(1);
  std::vector<int64_t> ref(n);
  cpu().equal(dtype_of<T>(), n, fa.data(), fb.data(), ref.data());
  DevBuf<T> dfa(fa), dfb(fb);
  DevBuf<int64_t> out(n);
  out.poison();
  gpu().equal(dtype_of<T>(), n, dfa.get(), dfb.get(), out.get());
  expect_equal(ref, out.download(), "equal float");
}

TEST_P(RowsCols, EqualAndCountEqual) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  const int64_t n = rows * cols;
  const auto a = random_labels(n, 3, seed_of(rows, cols, 15));
  const auto b = random_labels(n, 3, seed_of(rows, cols, 16));
  std::vector<int64_t> ref(n);
  cpu().equal(DType::Int64, n, a.data(), b.data(), ref.data());
  DevBuf<int64_t> da(a), db(b), out(n);
  out.poison();
  gpu().equal(DType::Int64, n, da.get(), db.get(), out.get());
  expect_equal(ref, out.download(), "equal int64");
  EXPECT_EQ(cpu().count_equal(n, a.data(), b.data()), gpu().count_equal(n, da.get(), db.get()));
  check_equal<float>(rows, cols);
}

/// BatchNorm train, eval and backward on `x` ([rows, cols, inner]) against the CPU (which works
/// in double).
template <typename T>
void check_batch_norm_on(int64_t rows, int64_t cols, const std::vector<T>& x, double atol,
                         double rtol, const std::string& what, int64_t inner = 1) {
  const int64_t n = rows * cols * inner;
  const auto gamma = random_vec<T>(cols, seed_of(rows, cols, 19), 0.5, 1.5);
  const auto beta = random_vec<T>(cols, seed_of(rows, cols, 20));
  const auto rm0 = random_vec<T>(cols, seed_of(rows, cols, 21));
  const auto rv0 = random_vec<T>(cols, seed_of(rows, cols, 22), 0.5, 2);
  const double eps = 1e-5, momentum = 0.1;

  std::vector<T> y(n), mean(cols), invstd(cols), rm = rm0, rv = rv0;
  cpu().batch_norm_train(dtype_of<T>(), rows, cols, inner, x.data(), gamma.data(), beta.data(), eps,
                         momentum, rm.data(), rv.data(), y.data(), mean.data(), invstd.data());
  DevBuf<T> dx(x), dg(gamma), db(beta), drm(rm0), drv(rv0), dy(n), dmean(cols), dinv(cols);
  dy.poison();
  dmean.poison();
  dinv.poison();
  gpu().batch_norm_train(dtype_of<T>(), rows, cols, inner, dx.get(), dg.get(), db.get(), eps,
                         momentum, drm.get(), drv.get(), dy.get(), dmean.get(), dinv.get());
  expect_close(y, dy.download(), atol, rtol, what + ": train y");
  expect_close(mean, dmean.download(), atol, rtol, what + ": save_mean");
  expect_close(invstd, dinv.download(), atol, rtol, what + ": save_invstd");
  expect_close(rm, drm.download(), atol, rtol, what + ": running_mean");
  expect_close(rv, drv.download(), atol, rtol, what + ": running_var");

  std::vector<T> ye(n);
  cpu().batch_norm_eval(dtype_of<T>(), rows, cols, inner, x.data(), gamma.data(), beta.data(),
                        rm0.data(), rv0.data(), eps, ye.data());
  DevBuf<T> drm0(rm0), drv0(rv0);
  dy.poison();
  gpu().batch_norm_eval(dtype_of<T>(), rows, cols, inner, dx.get(), dg.get(), db.get(), drm0.get(),
                        drv0.get(), eps, dy.get());
  expect_close(ye, dy.download(), atol, rtol, what + ": eval");

  const auto g = random_vec<T>(n, seed_of(rows, cols, 23));
  std::vector<T> gx(n), ggamma(cols), gbeta(cols);
  cpu().batch_norm_backward(dtype_of<T>(), rows, cols, inner, x.data(), gamma.data(), mean.data(),
                            invstd.data(), g.data(), gx.data(), ggamma.data(), gbeta.data());
  DevBuf<T> dgrad(g), dgx(n), dggamma(cols), dgbeta(cols), dm(mean), di(invstd);
  dgx.poison();
  dggamma.poison();
  dgbeta.poison();
  gpu().batch_norm_backward(dtype_of<T>(), rows, cols, inner, dx.get(), dg.get(), dm.get(),
                            di.get(), dgrad.get(), dgx.get(), dggamma.get(), dgbeta.get());
  // rows == 1 makes dx a difference of equal terms (~0): the absolute tolerance covers it.
  const double sum_atol = atol * std::sqrt(static_cast<double>(rows * inner));
  expect_close(gx, dgx.download(), atol, 10 * rtol, what + ": backward dx");
  expect_close(ggamma, dggamma.download(), sum_atol, rtol, what + ": backward dgamma");
  expect_close(gbeta, dgbeta.download(), sum_atol, rtol, what + ": backward dbeta");
  // Optional outputs: null pointers are skipped, the others still written.
  dgx.poison();
  gpu().batch_norm_backward(dtype_of<T>(), rows, cols, inner, dx.get(), dg.get(), dm.get(),
                            di.get(), dgrad.get(), dgx.get(), nullptr, nullptr);
  expect_close(gx, dgx.download(), atol, 10 * rtol, what + ": backward dx only");
  dggamma.poison();
  dgbeta.poison();
  gpu().batch_norm_backward(dtype_of<T>(), rows, cols, inner, dx.get(), dg.get(), dm.get(),
                            di.get(), dgrad.get(), nullptr, dggamma.get(), dgbeta.get());
  expect_close(ggamma, dggamma.download(), sum_atol, rtol, what + ": backward dgamma only");
  expect_close(gbeta, dgbeta.download(), sum_atol, rtol, what + ": backward dbeta only");
}

template <typename T>
void check_batch_norm(int64_t rows, int64_t cols) {
  const auto x = random_vec<T>(rows * cols, seed_of(rows, cols, 18), -2, 3);
  check_batch_norm_on<T>(rows, cols, x, tol_of<T>(1e-5, 1e-12), tol_of<T>(1e-5, 1e-12),
                         "batch_norm");
}

TEST_P(RowsCols, BatchNorm) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_batch_norm<float>(rows, cols);
}

// [N, C, H·W] (BatchNorm2d): the planar statistics kernels, including chunks of a long channel.
TEST(CudaBatchNorm, FourDimensional) {
  SKIP_WITHOUT_GPU();
  const std::vector<std::array<int64_t, 3>> shapes = {{1, 1, 2},    {2, 3, 5},    {7, 16, 49},
                                                      {32, 64, 64}, {4, 3, 3000}, {128, 8, 1025}};
  for (const auto& [rows, cols, inner] : shapes) {
    const std::string what = "batch_norm [" + std::to_string(rows) + ", " + std::to_string(cols) +
                             ", " + std::to_string(inner) + "]";
    const auto xf = random_vec<float>(rows * cols * inner, seed_of(rows, cols, 60 + inner), -2, 3);
    check_batch_norm_on<float>(rows, cols, xf, 1e-5, 1e-5, what + " float", inner);
    const auto xd = random_vec<double>(rows * cols * inner, seed_of(rows, cols, 61 + inner), -2, 3);
    check_batch_norm_on<double>(rows, cols, xd, 1e-12, 1e-12, what + " double", inner);
  }
}

/// Max and average pooling, forward and backward, against the CPU: bit for bit (the same
/// arithmetic in the same order), indices included.
template <typename T>
void check_pool(const Pool2dShape& s, const std::string& what) {
  const int64_t in = s.planes * s.height * s.width, out = s.planes * s.out_h * s.out_w;
  const auto x = random_vec<T>(in, seed_of(in, out, 70));
  const auto g = random_vec<T>(out, seed_of(in, out, 71));
  const DType t = dtype_of<T>();
  std::vector<T> y(out), dx(in);
  std::vector<int64_t> idx(out);
  DevBuf<T> dev_x(x), dev_g(g), dev_y(out), dev_dx(in);
  DevBuf<int64_t> dev_idx(out);

  cpu().max_pool2d_forward(t, s, x.data(), y.data(), idx.data());
  dev_y.poison();
  dev_idx.poison();
  gpu().max_pool2d_forward(t, s, dev_x.get(), dev_y.get(), dev_idx.get());
  expect_bitwise(y, dev_y.download(), what + ": max y");
  EXPECT_EQ(idx, dev_idx.download()) << what << ": max indices";
  dev_y.poison();
  gpu().max_pool2d_forward(t, s, dev_x.get(), dev_y.get(), nullptr);  // the values alone
  expect_bitwise(y, dev_y.download(), what + ": max y without indices");
  cpu().max_pool2d_backward(t, s, idx.data(), g.data(), dx.data());
  dev_dx.poison();
  gpu().max_pool2d_backward(t, s, dev_idx.get(), dev_g.get(), dev_dx.get());
  expect_bitwise(dx, dev_dx.download(), what + ": max dx");

  cpu().avg_pool2d_forward(t, s, x.data(), y.data());
  dev_y.poison();
  gpu().avg_pool2d_forward(t, s, dev_x.get(), dev_y.get());
  expect_bitwise(y, dev_y.download(), what + ": avg y");
  cpu().avg_pool2d_backward(t, s, g.data(), dx.data());
  dev_dx.poison();
  gpu().avg_pool2d_backward(t, s, dev_g.get(), dev_dx.get());
  expect_bitwise(dx, dev_dx.download(), what + ": avg dx");
}

TEST(CudaPool, MaxAndAvgMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  // planes, H, W, kernel, stride, padding: stride = kernel, overlapping, padded, gaps, odd sizes.
  const std::vector<std::array<int64_t, 9>> cases = {
      {1, 4, 4, 2, 2, 2, 2, 0, 0},  {6, 5, 7, 3, 3, 2, 2, 1, 1},     {2, 7, 5, 3, 2, 1, 2, 1, 0},
      {3, 6, 6, 2, 3, 3, 1, 1, 1},  {512, 32, 32, 3, 3, 2, 2, 1, 1}, {64, 28, 28, 2, 2, 2, 2, 0, 0},
      {8, 33, 17, 5, 4, 1, 3, 2, 2}};
  for (const auto& c : cases) {
    Pool2dShape s;
    s.planes = c[0];
    s.height = c[1];
    s.width = c[2];
    s.kernel_h = c[3];
    s.kernel_w = c[4];
    s.stride_h = c[5];
    s.stride_w = c[6];
    s.pad_h = c[7];
    s.pad_w = c[8];
    s.out_h = (s.height + 2 * s.pad_h - s.kernel_h) / s.stride_h + 1;
    s.out_w = (s.width + 2 * s.pad_w - s.kernel_w) / s.stride_w + 1;
    std::string what = "pool";
    for (int64_t v : c) {
      what += ' ';  // not " " + std::string&&: GCC 12 warns falsely (-Wrestrict)
      what += std::to_string(v);
    }
    check_pool<float>(s, what + " float");
    check_pool<double>(s, what + " double");
  }
}

template <typename T>
void check_sgd(int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  const double atol = tol_of<T>(1e-7, 1e-15), rtol = tol_of<T>(1e-6, 1e-14);
  const auto p0 = random_vec<T>(n, seed_of(rows, cols, 24));
  const auto g = random_vec<T>(n, seed_of(rows, cols, 25));
  const auto b0 = random_vec<T>(n, seed_of(rows, cols, 26));
  std::vector<SGDParams> configs(5);
  configs[0].momentum = 0;
  configs[0].weight_decay = 0.01;
  configs[1].momentum = 0.9;
  configs[1].first_step = true;
  configs[2].momentum = 0.9;
  configs[2].first_step = false;
  configs[2].dampening = 0.1;
  configs[2].weight_decay = 1e-3;
  configs[3].momentum = 0.9;
  configs[3].first_step = false;
  configs[3].nesterov = true;
  configs[4].momentum = 0.5;
  configs[4].first_step = true;
  configs[4].nesterov = true;
  for (size_t k = 0; k < configs.size(); ++k) {
    configs[k].lr = 0.01;
    std::vector<T> p = p0, buf = b0;
    cpu().sgd_update(dtype_of<T>(), n, p.data(), g.data(), buf.data(), configs[k]);
    DevBuf<T> dp(p0), dg(g), dbuf(b0);
    gpu().sgd_update(dtype_of<T>(), n, dp.get(), dg.get(), dbuf.get(), configs[k]);
    expect_close(p, dp.download(), atol, rtol, "sgd param, config " + std::to_string(k));
    expect_close(buf, dbuf.download(), atol, rtol, "sgd buffer, config " + std::to_string(k));
  }
}

TEST_P(RowsCols, Sgd) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_sgd<float>(rows, cols);
}

template <typename T>
void check_adam(int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  const auto p0 = random_vec<T>(n, seed_of(rows, cols, 27));
  const auto g = random_vec<T>(n, seed_of(rows, cols, 28));
  const auto m0 = random_vec<T>(n, seed_of(rows, cols, 29), -0.1, 0.1);
  const auto v0 = random_vec<T>(n, seed_of(rows, cols, 30), 0.01, 0.2);
  for (int64_t step : {int64_t{1}, int64_t{7}}) {
    AdamParams o;
    const double host_step = static_cast<double>(step);  // the CPU reads it from host memory
    DevBuf<double> device_step(std::vector<double>{host_step});
    o.weight_decay = step == 7 ? 0.01 : 0.0;
    o.beta2 = step == 7 ? 0.9999 : 0.999;  // 1 - beta2 must be formed in double, as on the CPU
    std::vector<T> p = p0, m = m0, v = v0;
    o.step = &host_step;
    cpu().adam_update(dtype_of<T>(), n, p.data(), g.data(), m.data(), v.data(), o);
    DevBuf<T> dp(p0), dg(g), dm(m0), dv(v0);
    o.step = device_step.get();
    gpu().adam_update(dtype_of<T>(), n, dp.get(), dg.get(), dm.get(), dv.get(), o);
    const std::string what = "adam step " + std::to_string(step);
    expect_close(p, dp.download(), tol_of<T>(1e-6, 1e-14), tol_of<T>(1e-5, 1e-13), what + " param");
    expect_close(m, dm.download(), tol_of<T>(1e-7, 1e-15), tol_of<T>(1e-6, 1e-14),
                 what + " exp_avg");
    expect_close(v, dv.download(), tol_of<T>(1e-7, 1e-15), tol_of<T>(1e-6, 1e-14),
                 what + " exp_avg_sq");
  }
}

TEST_P(RowsCols, Adam) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_adam<float>(rows, cols);
}

INSTANTIATE_TEST_SUITE_P(Sizes, RowsCols, ::testing::ValuesIn(kRowsCols), rc_name);

// ---------------------------------------------------------------------------------------------
// Edge cases that a plausible but wrong kernel would get wrong.

constexpr float kNaNf = std::numeric_limits<float>::quiet_NaN();
constexpr float kInff = std::numeric_limits<float>::infinity();

TEST(CudaEdgeCases, ReluKeepsNaNAndItsBackwardUsesTheOutput) {
  SKIP_WITHOUT_GPU();
  // torch.relu: NaN stays NaN, -0 stays -0, only x < 0 becomes 0 (clamp_min).
  const std::vector<float> x = {kNaNf, -1.0f, 0.0f, -0.0f, 2.0f, kInff, -kInff, 1e-30f};
  const std::vector<float> y_ref = {kNaNf, 0.0f, 0.0f, -0.0f, 2.0f, kInff, 0.0f, 1e-30f};
  DevBuf<float> dx(x), dy(x.size());
  dy.poison();
  gpu().unary_forward(Unary::Relu, DType::Float32, static_cast<int64_t>(x.size()), dx.get(),
                      dy.get());
  const auto y = dy.download();
  expect_close_nan(y_ref, y, 0, 0, "relu forward");
  EXPECT_TRUE(std::signbit(y[3])) << "relu(-0) is -0";
  // threshold_backward on the output: y <= 0 gives 0, else dy (NaN <= 0 is false: passes).
  const std::vector<float> g = {5, 6, 7, 8, 9, 10, 11, 12};
  const std::vector<float> dx_ref = {5, 0, 0, 0, 9, 10, 0, 12};
  DevBuf<float> dg(g), dout(g.size());
  dout.poison();
  gpu().unary_backward(Unary::Relu, DType::Float32, static_cast<int64_t>(g.size()), dy.get(),
                       dg.get(), dout.get());
  expect_equal(dx_ref, dout.download(), "relu backward");
  // The fused bias + ReLU follows the same rule.
  const std::vector<float> bias = {0.0f, 1.0f, kNaNf, -3.0f};
  std::vector<float> yb = {kNaNf, -2.0f, 1.0f, 5.0f, -1.0f, 0.5f, 2.0f, 1.0f};
  const std::vector<float> yb_ref = {kNaNf, 0.0f, kNaNf, 2.0f, 0.0f, 1.5f, kNaNf, 0.0f};
  DevBuf<float> dbias(bias), dyb(yb);
  gpu().bias_relu(DType::Float32, 2, 4, dbias.get(), dyb.get());
  expect_close_nan(yb_ref, dyb.download(), 0, 0, "bias_relu with NaN");
}

/// Rows a softmax without max-subtraction, a wrong NaN policy or a float-rounded logsumexp gets
/// wrong: +-1000 offsets, -inf entries, +inf, NaN, all -inf, all equal.
template <typename T>
std::vector<T> hard_logits(int64_t rows, int64_t cols, uint64_t seed) {
  auto x = random_vec<T>(rows * cols, seed, -5, 5);
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  for (int64_t r = 0; r < rows; ++r) {
    T* row = x.data() + r * cols;
    switch (r % 9) {
      case 0:
        for (int64_t c = 0; c < cols; ++c)
          row[c] += T(1000);
        break;
      case 1:
        for (int64_t c = 0; c < cols; ++c)
          row[c] -= T(1000);
        break;
      case 2:
        row[(r * 7) % cols] = -inf;  // one impossible class; the rest finite
        if (cols > 2) row[(r * 7 + 1) % cols] = -inf;
        break;
      case 3:
        row[(r * 5) % cols] = inf;
        break;
      case 4:
        row[(r * 3) % cols] = nan;
        break;
      case 5:
        for (int64_t c = 0; c < cols; ++c)
          row[c] = -inf;
        break;
      case 6:
        for (int64_t c = 0; c < cols; ++c)
          row[c] = T(0.25);
        break;
      case 7:  // a confident row: loss near 0, where float rounding of lse shows
        row[r % cols] = T(30);
        break;
      default:
        break;
    }
  }
  return x;
}

template <typename T>
void check_softmax_edges(int64_t rows, int64_t cols) {
  const std::string size = " [" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
  const auto x = hard_logits<T>(rows, cols, seed_of(rows, cols, 50));
  auto labels = random_labels(rows, cols, seed_of(rows, cols, 51));
  const double tol = tol_of<T>(2e-5, 1e-11);
  // log_softmax forward, NaN where the CPU has NaN.
  std::vector<T> y(rows * cols);
  cpu().log_softmax_forward(dtype_of<T>(), rows, cols, x.data(), y.data());
  DevBuf<T> dx(x), dy(rows * cols);
  dy.poison();
  gpu().log_softmax_forward(dtype_of<T>(), rows, cols, dx.get(), dy.get());
  expect_close_nan(y, dy.download(), tol, tol, "log_softmax edges" + size);
  // Cross-entropy over every row (the loss is NaN: some rows are), then over the finite rows
  // only (kinds 0, 1, 2, 6, 7, 8), where the loss must be finite and match.
  check_cross_entropy_on<T>(rows, cols, x, labels, tol, "cross_entropy edges" + size);
  std::vector<T> finite;
  std::vector<int64_t> finite_labels;
  for (int64_t r = 0; r < rows; ++r) {
    const int kind = static_cast<int>(r % 9);
    if (kind == 3 || kind == 4 || kind == 5) continue;
    int64_t label = labels[r];
    if (kind == 2 && (label == (r * 7) % cols || label == (r * 7 + 1) % cols))
      label = (r * 7 + 2) % cols;  // a label on a -inf logit has an infinite loss
    if (kind == 7) label = r % cols;
    finite.insert(finite.end(), x.begin() + r * cols, x.begin() + (r + 1) * cols);
    finite_labels.push_back(label);
  }
  const auto frows = static_cast<int64_t>(finite_labels.size());
  if (frows > 0 && cols > 2)
    check_cross_entropy_on<T>(frows, cols, finite, finite_labels, tol,
                              "cross_entropy finite edges" + size);
  // All-equal rows: every loss term is exactly log(cols).
  std::vector<T> flat(rows * cols, T(-3.5));
  DevBuf<T> dflat(flat), dlse(rows), dloss(1);
  DevBuf<int64_t> dlab(labels);
  gpu().cross_entropy_forward(dtype_of<T>(), rows, cols, dflat.get(), dlab.get(), dlse.get(),
                              dloss.get());
  EXPECT_EQ(dloss.download()[0], static_cast<T>(std::log(static_cast<double>(cols))))
      << "all-equal rows" << size;
}

TEST(CudaEdgeCases, SoftmaxAndCrossEntropyOnHardRows) {
  SKIP_WITHOUT_GPU();
  for (auto [rows, cols] : {Rc{9, 10}, Rc{18, 33}, Rc{27, 1000}, Rc{9, 1500}, Rc{40000, 10}})
    check_softmax_edges<float>(rows, cols);
}

TEST(CudaEdgeCases, CrossEntropyOverAnEmptyBatchIsNaN) {
  SKIP_WITHOUT_GPU();
  std::vector<float> cpu_loss = {0.0f};
  cpu().cross_entropy_forward(DType::Float32, 0, 10, nullptr, nullptr, nullptr, cpu_loss.data());
  EXPECT_TRUE(std::isnan(cpu_loss[0]));
  DevBuf<float> loss(std::vector<float>{0.0f});
  gpu().cross_entropy_forward(DType::Float32, 0, 10, nullptr, nullptr, nullptr, loss.get());
  EXPECT_TRUE(std::isnan(loss.download()[0])) << "the mean over no rows is NaN, as on the CPU";
  DevBuf<double> loss64(std::vector<double>{0.0});
  gpu().cross_entropy_forward(DType::Float64, 0, 10, nullptr, nullptr, nullptr, loss64.get());
  EXPECT_TRUE(std::isnan(loss64.download()[0]));
}

TEST(CudaEdgeCases, ArgmaxTiesAndNaNInWarpAndBlockMode) {
  SKIP_WITHOUT_GPU();
  // cols <= 1024: a warp per row; > 1024: a block per row. Each row plants a case.
  for (int64_t cols : {int64_t{7}, int64_t{100}, int64_t{1024}, int64_t{1025}, int64_t{5000}}) {
    const int64_t rows = 12;
    auto x = random_vec<float>(rows * cols, seed_of(rows, cols, 60));
    auto at = [&](int64_t r, int64_t c) -> float& { return x[r * cols + c % cols]; };
    for (int64_t c = 0; c < cols; ++c) {
      at(0, c) = 1.0f;    // all equal: index 0
      at(1, c) = -kInff;  // all -inf: index 0
    }
    at(2, cols - 1) = 5.0f;  // a tie between the last column and an earlier one: the earlier
    at(2, cols / 2) = 5.0f;
    at(3, 3) = kNaNf;  // NaN beats a larger real maximum elsewhere
    at(3, 40) = 100.0f;
    at(4, 40) = kNaNf;  // two NaNs: the first
    at(4, 70) = kNaNf;
    at(4, 0) = 100.0f;
    at(5, 32) = kNaNf;  // NaN as the first element a thread sees (lane 0, second stride)
    at(5, 1) = 50.0f;
    at(6, 0) = kNaNf;         // NaN at index 0
    at(7, cols - 1) = kInff;  // +inf is the max unless there is a NaN
    at(8, cols - 1) = kNaNf;  // NaN at the very end
    at(8, 0) = kInff;
    for (int64_t c = 0; c < cols; c += 2)  // a tie spread over many threads and warps
      at(9, c) = 3.0f;
    at(10, cols - 1) = 7.0f;  // tie at both ends
    at(10, 0) = 7.0f;
    const auto ref = argmax_reference<float>(rows, cols, 1, x);
    DevBuf<float> dx(x);
    DevBuf<int64_t> out(rows);
    out.poison();
    gpu().argmax(DType::Float32, rows, cols, 1, dx.get(), out.get());
    expect_equal(ref, out.download(), "argmax rows, cols " + std::to_string(cols));
    // The same data along a strided axis: [1, cols, rows] after a transpose.
    std::vector<float> xt(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        xt[c * rows + r] = x[r * cols + c];
    DevBuf<float> dxt(xt);
    out.poison();
    gpu().argmax(DType::Float32, 1, cols, rows, dxt.get(), out.get());
    expect_equal(ref, out.download(), "argmax strided, cols " + std::to_string(cols));
  }
}

TEST(CudaEdgeCases, BatchNormLargeMeanTinyVarianceConstantColumnsAndManyColumns) {
  SKIP_WITHOUT_GPU();
  // x = 1000 + 1e-3 * noise: a float sum of the batch loses the variance entirely.
  {
    const int64_t rows = 4096, cols = 64;
    auto x = random_vec<float>(rows * cols, 70, -1, 1);
    for (auto& v : x)
      v = 1000.0f + 1e-3f * v;
    check_batch_norm_on<float>(rows, cols, x, 2e-4, 2e-4, "batch_norm large mean, tiny var");
  }
  // Constant columns: variance 0, y = beta exactly.
  {
    const int64_t rows = 300, cols = 40;
    auto x = random_vec<float>(rows * cols, 71, -2, 2);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; c += 3)
        x[r * cols + c] = 3.25f + static_cast<float>(c);
    check_batch_norm_on<float>(rows, cols, x, 1e-5, 1e-5, "batch_norm constant columns");
  }
  // More columns than one grid of column tiles covers (132 SMs * 16 * 32 = 67,584).
  {
    const int64_t rows = 5, cols = 70001;
    const auto x = random_vec<float>(rows * cols, 72, -2, 3);
    check_batch_norm_on<float>(rows, cols, x, 1e-5, 1e-5, "batch_norm 70001 columns");
  }
}

TEST(CudaEdgeCases, GemmWithGeneralBetaZeroAlphaAndEmptyK) {
  SKIP_WITHOUT_GPU();
  const int64_t m = 37, n = 29, k = 41;
  const auto a = random_vec<float>(m * k, 80), b = random_vec<float>(k * n, 81);
  const auto c0 = random_vec<float>(m * n, 82);
  DevBuf<float> da(a), db(b), dc(m * n);
  struct Case {
    double alpha, beta;
    int64_t k;
  };
  for (const Case& cs :
       {Case{1.5, 0.5, k}, Case{-0.75, -2.0, k}, Case{0.0, 0.5, k}, Case{0.0, 0.0, k},
        Case{1.0, 0.0, 0}, Case{1.0, 0.5, 0}, Case{2.0, 1.0, 0}}) {
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        std::vector<float> ref = c0;
        cpu().gemm(DType::Float32, ta, tb, m, n, cs.k, cs.alpha, a.data(), b.data(), cs.beta,
                   ref.data());
        if (cs.beta == 0.0)
          dc.poison();  // beta == 0 overwrites: a NaN in C must not survive
        else
          dc.upload(c0);
        gpu().gemm(DType::Float32, ta, tb, m, n, cs.k, cs.alpha, da.get(), db.get(), cs.beta,
                   dc.get());
        expect_close(ref, dc.download(), 1e-5, 1e-5,
                     "gemm alpha=" + std::to_string(cs.alpha) + " beta=" + std::to_string(cs.beta) +
                         " k=" + std::to_string(cs.k));
      }
  }
}

TEST(CudaEdgeCases, ReductionOverAnEmptyAxis) {
  SKIP_WITHOUT_GPU();
  for (auto [outer, inner] : {Rc{1, 1}, Rc{3, 1}, Rc{4, 7}}) {
    const auto out0 = random_vec<float>(outer * inner, 90);
    for (double beta : {0.0, 0.75}) {
      std::vector<float> ref = out0;
      cpu().reduce_sum(DType::Float32, outer, 0, inner, 1.0, nullptr, beta, ref.data());
      DevBuf<float> dout(out0);
      if (beta == 0.0) dout.poison();
      gpu().reduce_sum(DType::Float32, outer, 0, inner, 1.0, nullptr, beta, dout.get());
      expect_close(ref, dout.download(), 0, 0,
                   "sum over an empty axis, beta " + std::to_string(beta));
    }
  }
}

TEST(CudaEdgeCases, BitwiseSameResultsRunToRun) {
  SKIP_WITHOUT_GPU();
  auto twice = [](auto&& run) {
    auto a = run();
    auto b = run();
    return std::make_pair(a, b);
  };
  {  // a whole-tensor sum split over the card (two passes through scratch)
    const int64_t n = int64_t{1} << 22;
    DevBuf<float> x(random_vec<float>(n, 100)), out(1);
    auto [a, b] = twice([&] {
      gpu().reduce_sum(DType::Float32, 1, n, 1, 1.0, x.get(), 0.0, out.get());
      return out.download();
    });
    expect_bitwise(a, b, "sum of 4M");
  }
  {  // column sums split along the reduced axis
    DevBuf<float> x(random_vec<float>(100000 * 3, 101)), out(3);
    auto [a, b] = twice([&] {
      gpu().reduce_sum(DType::Float32, 1, 100000, 3, 1.0, x.get(), 0.0, out.get());
      return out.download();
    });
    expect_bitwise(a, b, "column sums");
  }
  {  // cross-entropy loss (row losses reduced by one block) and its gradient
    const int64_t rows = 40000, cols = 10;
    DevBuf<float> x(random_vec<float>(rows * cols, 102, -5, 5)), lse(rows), loss(1),
        g(std::vector<float>{1.0f}), dx(rows * cols);
    DevBuf<int64_t> lab(random_labels(rows, cols, 103));
    auto [a, b] = twice([&] {
      gpu().cross_entropy_forward(DType::Float32, rows, cols, x.get(), lab.get(), lse.get(),
                                  loss.get());
      gpu().cross_entropy_backward(DType::Float32, rows, cols, x.get(), lab.get(), lse.get(),
                                   g.get(), dx.get());
      auto l = loss.download();
      auto d = dx.download();
      l.insert(l.end(), d.begin(), d.end());
      return l;
    });
    expect_bitwise(a, b, "cross_entropy");
  }
  {  // batch norm statistics split over rows and columns
    const int64_t rows = 4096, cols = 256;
    DevBuf<float> x(random_vec<float>(rows * cols, 104)), y(rows * cols), m(cols), is(cols);
    auto [a, b] = twice([&] {
      gpu().batch_norm_train(DType::Float32, rows, cols, 1, x.get(), nullptr, nullptr, 1e-5, 0.1,
                             nullptr, nullptr, y.get(), m.get(), is.get());
      auto out = y.download();
      auto s = is.download();
      out.insert(out.end(), s.begin(), s.end());
      return out;
    });
    expect_bitwise(a, b, "batch_norm");
  }
}

TEST(CudaEdgeCases, KernelsFromSeveralThreadsMatchOneThread) {
  SKIP_WITHOUT_GPU();
  // Each thread runs ops that share the backend's scratch (split sums, cross-entropy) and its
  // cuBLAS handle on buffers of its own; results must equal a single-threaded run bit for bit.
  constexpr int kThreads = 6;
  const int64_t n = int64_t{1} << 20, rows = 3000, cols = 10, m = 64;
  auto run = [&](int t) {
    DevBuf<float> x(random_vec<float>(n, 200 + t)), s(1), lse(rows), loss(1);
    DevBuf<float> logits(random_vec<float>(rows * cols, 300 + t, -5, 5));
    DevBuf<int64_t> lab(random_labels(rows, cols, 400 + t));
    DevBuf<float> a(random_vec<float>(m * m, 500 + t)), c(m * m);
    std::vector<float> out;
    for (int i = 0; i < 5; ++i) {
      gpu().reduce_sum(DType::Float32, 1, n, 1, 1.0, x.get(), 0.0, s.get());
      gpu().cross_entropy_forward(DType::Float32, rows, cols, logits.get(), lab.get(), lse.get(),
                                  loss.get());
      gpu().gemm(DType::Float32, false, true, m, m, m, 1.0, a.get(), a.get(), 0.0, c.get());
    }
    out = s.download();
    for (float v : loss.download())
      out.push_back(v);
    for (float v : c.download())
      out.push_back(v);
    return out;
  };
  std::vector<std::vector<float>> expected(kThreads), got(kThreads);
  for (int t = 0; t < kThreads; ++t)
    expected[t] = run(t);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] { got[t] = run(t); });
  for (auto& th : threads)
    th.join();
  for (int t = 0; t < kThreads; ++t)
    expect_bitwise(expected[t], got[t], "thread " + std::to_string(t));
}

TEST(CudaEdgeCases, HugeTensorOfMoreThan2Pow31Elements) {
  SKIP_WITHOUT_GPU();
  const int64_t n = (int64_t{1} << 31) + 37;  // odd tail, past every 32-bit index
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess || free_bytes < 2 * bytes + (4u << 30))
    GTEST_SKIP() << "needs " << 2 * bytes + (4u << 30) << " bytes of free device memory";
  {
    DevBuf<float> x(static_cast<size_t>(n)), out(static_cast<size_t>(n));
    gpu().fill(DType::Float32, n, 1.0, x.get());
    const float two = 2.0f;
    const int64_t marked = n - 3;
    gpu().copy_from_host(x.get() + marked, &two, sizeof(float));
    // Sum: n - 1 ones and one two, exact in double, then rounded to float as on the CPU.
    DevBuf<float> s(1);
    gpu().reduce_sum(DType::Float32, 1, n, 1, 1.0, x.get(), 0.0, s.get());
    EXPECT_EQ(s.download()[0], static_cast<float>(static_cast<double>(n) + 1.0));
    DevBuf<int64_t> idx(1);
    gpu().argmax(DType::Float32, 1, n, 1, x.get(), idx.get());
    EXPECT_EQ(idx.download()[0], marked);
    // Flat and row-broadcast element-wise kernels over the whole range.
    gpu().binary(Binary::Add, Broadcast::None, DType::Float32, 1, n, x.get(), x.get(), out.get());
    DevBuf<float> row(std::vector<float>{0.5f});
    gpu().binary(Binary::Mul, Broadcast::RowB, DType::Float32, n, 1, out.get(), row.get(),
                 out.get());
    std::vector<float> tail(8);
    gpu().copy_to_host(tail.data(), out.get() + (n - 8), 8 * sizeof(float));
    for (int64_t i = 0; i < 8; ++i)
      EXPECT_EQ(tail[i], n - 8 + i == marked ? 2.0f : 1.0f) << "element " << n - 8 + i;
    gpu().expand(DType::Float32, 1, n, 1, 3.0, row.get(), out.get());
    gpu().copy_to_host(tail.data(), out.get() + (n - 8), 8 * sizeof(float));
    for (float v : tail)
      EXPECT_EQ(v, 1.5f);
  }
  cuda_empty_cache();
}

// ---------------------------------------------------------------------------------------------
// Reductions over [outer, reduce, inner].

using Ori = std::tuple<int64_t, int64_t, int64_t>;
class Reduce : public ::testing::TestWithParam<Ori> {};

std::string ori_name(const ::testing::TestParamInfo<Ori>& info) {
  std::string name = "o";
  name += std::to_string(std::get<0>(info.param));
  name += "_r";
  name += std::to_string(std::get<1>(info.param));
  name += "_i";
  name += std::to_string(std::get<2>(info.param));
  return name;
}

template <typename T>
void check_reduce(int64_t outer, int64_t reduce, int64_t inner) {
  const int64_t n = outer * reduce * inner, m = outer * inner;
  // Both backends sum in double: only the final rounding differs.
  const double eps = tol_of<T>(1e-6, 1e-14);
  const double atol = eps * std::sqrt(static_cast<double>(reduce)) + eps, rtol = 4 * eps;
  const auto x = random_vec<T>(n, seed_of(outer, reduce, inner));
  const auto out0 = random_vec<T>(m, seed_of(outer, reduce, inner + 1));
  DevBuf<T> dx(x), dout(m);
  for (double beta : {0.0, 0.75}) {
    std::vector<T> ref = out0;
    cpu().reduce_sum(dtype_of<T>(), outer, reduce, inner, 0.5, x.data(), beta, ref.data());
    if (beta == 0.0)
      dout.poison();
    else
      dout.upload(out0);
    gpu().reduce_sum(dtype_of<T>(), outer, reduce, inner, 0.5, dx.get(), beta, dout.get());
    expect_close(ref, dout.download(), atol, rtol, "reduce_sum beta " + std::to_string(beta));
  }
  // expand: the backward of reduce_sum
  const auto g = random_vec<T>(m, seed_of(outer, reduce, inner + 2));
  std::vector<T> ref(n);
  cpu().expand(dtype_of<T>(), outer, reduce, inner, -1.5, g.data(), ref.data());
  DevBuf<T> dg(g), de(n);
  de.poison();
  gpu().expand(dtype_of<T>(), outer, reduce, inner, -1.5, dg.get(), de.get());
  expect_close(ref, de.download(), 0, 0, "expand");
}

TEST_P(Reduce, SumAndExpand) {
  SKIP_WITHOUT_GPU();
  const auto [outer, reduce, inner] = GetParam();
  check_reduce<float>(outer, reduce, inner);
}

INSTANTIATE_TEST_SUITE_P(Sizes, Reduce,
                         ::testing::Values(Ori{1, 1, 1}, Ori{1, 7, 1}, Ori{3, 1, 5}, Ori{7, 33, 1},
                                           Ori{1, 1000, 1}, Ori{1000, 3, 1}, Ori{1, 4096, 256},
                                           Ori{3, 1000, 17}, Ori{5, 7, 1025}, Ori{2, 100000, 3},
                                           Ori{4, 300000, 1}, Ori{1, 1 << 22, 1},
                                           Ori{1, 1025, 2049}, Ori{4096, 8, 1}, Ori{6, 4, 8}),
                         ori_name);

// ---------------------------------------------------------------------------------------------
// GEMM through cuBLAS, every transpose combination, overwrite and accumulate.

class Gemm : public ::testing::TestWithParam<Ori> {};

template <typename T>
void check_gemm(int64_t m, int64_t n, int64_t k, double rtol_scale = 1.0) {
  const double eps = tol_of<T>(1e-6, 1e-14);
  const double atol = 100 * eps * std::sqrt(static_cast<double>(k)) * rtol_scale,
               rtol = 100 * eps * rtol_scale;
  const auto a = random_vec<T>(m * k, seed_of(m, n, k));
  const auto b = random_vec<T>(k * n, seed_of(m, n, k + 1));
  const auto c0 = random_vec<T>(m * n, seed_of(m, n, k + 2));
  DevBuf<T> da(a), db(b), dc(m * n);
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (double beta : {0.0, 1.0, 0.5}) {
        std::vector<T> ref = c0;
        cpu().gemm(dtype_of<T>(), ta, tb, m, n, k, 1.5, a.data(), b.data(), beta, ref.data());
        if (beta == 0.0)
          dc.poison();
        else
          dc.upload(c0);
        gpu().gemm(dtype_of<T>(), ta, tb, m, n, k, 1.5, da.get(), db.get(), beta, dc.get());
        expect_close(ref, dc.download(), atol, rtol,
                     "gemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) +
                         " beta=" + std::to_string(beta));
      }
}

TEST_P(Gemm, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const auto [m, n, k] = GetParam();
  check_gemm<float>(m, n, k);
}

TEST_P(Gemm, Tf32OptIn) {
  SKIP_WITHOUT_GPU();
  const auto [m, n, k] = GetParam();
  Tf32Guard tf32(true);                // restored even if a check throws
  check_gemm<float>(m, n, k, 2000.0);  // TF32 keeps 10 mantissa bits
}

INSTANTIATE_TEST_SUITE_P(Sizes, Gemm,
                         ::testing::Values(Ori{1, 1, 1}, Ori{1, 7, 3}, Ori{3, 5, 7},
                                           Ori{33, 17, 65}, Ori{128, 256, 784}, Ori{257, 129, 1000},
                                           Ori{1, 100, 4096}, Ori{4096, 10, 256}, Ori{1000, 1, 33}),
                         ori_name);

// ---------------------------------------------------------------------------------------------
// im2col / col2im (conv2d), batched over images into columns of a leading dimension wider than
// the images' columns, and transpose_outer. All move or add the same values in the same order
// on the two backends (col2im sums each image element's entries over (i, j) from 0), so they
// must agree bitwise, float32 and float64.

struct ConvGeo {
  int64_t images, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw;
};

class Im2col : public ::testing::TestWithParam<ConvGeo> {};

std::string conv_geo_name(const ::testing::TestParamInfo<ConvGeo>& info) {
  const ConvGeo& g = info.param;
  std::string name = "n";
  for (int64_t v : {g.images, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw}) {
    name += std::to_string(v);
    name += "_";
  }
  name.pop_back();
  return name;
}

template <typename T>
void check_im2col_col2im(const ConvGeo& g) {
  const int64_t oh = (g.h + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  const int64_t ow = (g.w + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  // Image n's columns at column n * plane of a [rows, ld] matrix, 5 columns to spare.
  const int64_t plane = oh * ow, ld = g.images * plane + 5;
  const int64_t images = g.images * g.c * g.h * g.w, cols = g.c * g.kh * g.kw * ld;
  const DType t = dtype_of<T>();
  const auto x = random_vec<T>(images, seed_of(g.c, g.h, g.w));
  // The spare columns keep their values on both backends: start both from the same buffer.
  const auto cols0 = random_vec<T>(cols, seed_of(g.images, g.c, 77));
  std::vector<T> ref_cols = cols0;
  cpu().im2col(t, g.images, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, x.data(),
               ld, ref_cols.data());
  DevBuf<T> dx(x), dcols(cols0);
  gpu().im2col(t, g.images, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, dx.get(),
               ld, dcols.get());
  expect_equal(ref_cols, dcols.download(), "im2col");

  const auto c = random_vec<T>(cols, seed_of(g.kh, g.sh, g.dh));
  std::vector<T> ref_images(images);
  cpu().col2im(t, g.images, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, c.data(),
               ld, ref_images.data());
  dcols.upload(c);
  dx.poison();  // col2im writes every element, those no column entry reaches included
  gpu().col2im(t, g.images, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw,
               dcols.get(), ld, dx.get());
  expect_equal(ref_images, dx.download(), "col2im");
}

TEST_P(Im2col, MatchesCpuBitwise) {
  SKIP_WITHOUT_GPU();
  check_im2col_col2im<float>(GetParam());
  check_im2col_col2im<double>(GetParam());
}

// ResNet-18's and the small CNN's shapes on 28×28 inputs (batches of their small planes), odd
// sizes, stride 2 with padding, dilation 2, 1×1 kernels with stride 2 (image elements no entry
// reaches), asymmetric options, one image.
INSTANTIATE_TEST_SUITE_P(Shapes, Im2col,
                         ::testing::Values(ConvGeo{3, 1, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1},
                                           ConvGeo{2, 64, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1},
                                           ConvGeo{4, 64, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1},
                                           ConvGeo{32, 128, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1},
                                           ConvGeo{33, 256, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1},
                                           ConvGeo{5, 3, 7, 5, 3, 3, 1, 1, 2, 2, 2, 2},
                                           ConvGeo{3, 5, 9, 8, 1, 1, 2, 2, 0, 0, 1, 1},
                                           ConvGeo{2, 2, 6, 7, 2, 3, 2, 1, 0, 1, 1, 2},
                                           ConvGeo{7, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1},
                                           ConvGeo{1, 3, 300, 301, 5, 5, 3, 3, 2, 2, 1, 1}),
                         conv_geo_name);

template <typename T>
void check_transpose_outer(int64_t a, int64_t b, int64_t inner) {
  const int64_t n = a * b * inner;
  const auto src = random_vec<T>(n, seed_of(a, b, inner));
  std::vector<T> ref(n);
  cpu().transpose_outer(dtype_of<T>(), a, b, inner, src.data(), ref.data());
  DevBuf<T> ds(src), dd(n);
  dd.poison();
  gpu().transpose_outer(dtype_of<T>(), a, b, inner, ds.get(), dd.get());
  expect_equal(ref, dd.download(), "transpose_outer");
}

TEST(TransposeOuter, MatchesCpuBitwise) {
  SKIP_WITHOUT_GPU();
  struct Dims {
    int64_t a, b, inner;
  };
  // conv2d's moves ([C_out, N, plane] <-> [N, C_out, plane]) at ResNet's planes, odd sizes,
  // inner 1, one block.
  for (const Dims& d : {Dims{64, 32, 196}, Dims{32, 512, 1}, Dims{256, 33, 4}, Dims{3, 5, 7},
                        Dims{1, 1, 1}, Dims{1, 17, 49}, Dims{1000, 3, 1}}) {
    check_transpose_outer<float>(d.a, d.b, d.inner);
    check_transpose_outer<double>(d.a, d.b, d.inner);
  }
  // int64 moves as well.
  const std::vector<int64_t> src = {1, 2, 3, 4, 5, 6};
  DevBuf<int64_t> ds(src), dd(6);
  gpu().transpose_outer(DType::Int64, 2, 3, 1, ds.get(), dd.get());
  expect_equal(std::vector<int64_t>{1, 4, 2, 5, 3, 6}, dd.download(), "transpose_outer int64");
}

/// conv2d as a whole on the GPU against the CPU: output and the three gradients, on 28×28, 4×4
/// and 2×2 planes, groups, stride, dilation and the 1×1 path, with batches cut into several
/// chunks with a remainder: on the GPU (columns budget 2^22: 5×5 over 32×32, 819,200 column
/// entries per image, 5 + 5 + 1; 1×1 over 256 × 64×64, 4 + 1) and on the CPU (budget 2^20:
/// 3×3 over 64 × 8×8, 28 + 28 + 4), the other device taking other chunks.
TEST(CudaConv2d, OpForwardAndBackwardMatchCpu) {
  SKIP_WITHOUT_GPU();
  using clarena::Conv2dOptions;
  using clarena::Tensor;
  struct Case {
    int64_t n, c, h, w, c_out, k, stride, pad, dilation, groups;
  };
  const clarena::Device gpu_device = clarena::Device::cuda(0), cpu_device = clarena::Device::cpu();
  for (const Case& k :
       {Case{4, 3, 28, 28, 8, 3, 1, 1, 1, 1}, Case{18, 16, 4, 4, 32, 3, 1, 1, 1, 2},
        Case{33, 32, 2, 2, 16, 3, 1, 1, 1, 1}, Case{5, 4, 9, 9, 6, 3, 2, 2, 2, 2},
        Case{7, 8, 5, 5, 12, 1, 1, 0, 1, 4}, Case{11, 32, 32, 32, 8, 5, 1, 2, 1, 1},
        Case{60, 64, 8, 8, 8, 3, 1, 1, 1, 1}, Case{5, 256, 64, 64, 4, 1, 1, 0, 1, 2}}) {
    const clarena::Shape xs{k.n, k.c, k.h, k.w}, ws{k.c_out, k.c / k.groups, k.k, k.k};
    const auto x = random_vec<float>(clarena::shape_numel(xs), seed_of(k.n, k.c, 1));
    const auto w = random_vec<float>(clarena::shape_numel(ws), seed_of(k.n, k.c, 2));
    const auto b = random_vec<float>(k.c_out, seed_of(k.n, k.c, 3));
    const Conv2dOptions o{{k.stride, k.stride}, {k.pad, k.pad}, {k.dilation, k.dilation}, k.groups};
    std::vector<std::vector<float>> results[2];
    for (int d = 0; d < 2; ++d) {
      const clarena::Device dev = d == 0 ? cpu_device : gpu_device;
      Tensor xd = Tensor::from_vector(x, xs, dev), wd = Tensor::from_vector(w, ws, dev);
      Tensor bd = Tensor::from_vector(b, {k.c_out}, dev);
      xd.requires_grad_(true);
      wd.requires_grad_(true);
      bd.requires_grad_(true);
      Tensor y = clarena::conv2d(xd, wd, bd, o);
      clarena::Generator gy(5);
      y.backward(Tensor::normal(y.shape(), 0, 1, gy, DType::Float32, dev));
      for (const Tensor& t : {y, xd.grad(), wd.grad(), bd.grad()})
        results[d].push_back(t.to(cpu_device).to_vector<float>());
    }
    const char* names[] = {"y", "dx", "dw", "db"};
    for (size_t i = 0; i < 4; ++i) {
      std::string what = "conv2d ";  // appended piece by piece (GCC 12's false -Wrestrict)
      what += names[i];
      what += " n";
      what += std::to_string(k.n);
      what += " h";
      what += std::to_string(k.h);
      expect_close(results[0][i], results[1][i], 1e-3, 1e-3, what);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Float64: every kernel that has a float64 version, at a few sizes.

TEST(CudaFloat64, KernelsMatchCpu) {
  SKIP_WITHOUT_GPU();
  for (auto [rows, cols] : {Rc{1, 1}, Rc{33, 100}, Rc{5, 1025}, Rc{2200, 1100}}) {
    check_fill_copy<double>(rows, cols);
    check_copy_block<double>(rows, cols);
    check_binary<double>(rows, cols);
    check_axpby<double>(rows, cols);
    check_unary<double>(rows, cols);
    check_bias_relu<double>(rows, cols);
    check_log_softmax<double>(rows, cols);
    check_cross_entropy<double>(rows, cols);
    check_argmax<double>(rows, cols);
    check_equal<double>(rows, cols);
    check_batch_norm<double>(rows, cols);
    check_sgd<double>(rows, cols);
    check_adam<double>(rows, cols);
  }
  check_softmax_edges<double>(18, 33);
  check_reduce<double>(3, 1000, 17);
  check_reduce<double>(2, 100000, 1);
  check_reduce<double>(1, 4096, 256);
  check_gemm<double>(33, 17, 65);
}

}  // namespace
