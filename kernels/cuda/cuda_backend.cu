// CudaBackend (cuda_backend.cuh) on one CUDA device: construction, memory and copies, the
// products, timing, and the backends' registry. Products go to cuBLAS (row-major operands mapped
// onto column-major calls by computing C^T = op(B)^T op(A)^T, i.e. swapping the operands and
// m/n); every other kernel is a member defined in the `.cu` file of its family.
#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "clarena/kernels/cuda_backend.h"
#include "common.cuh"
#include "cuda_backend.cuh"

namespace clarena::kernels {
namespace {

std::atomic<bool> g_tf32{false};

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::strcmp(v, "0") != 0;
}

}  // namespace

namespace cuda {
namespace {

void check_int_range(const char* op, const char* what, int64_t v) {
  if (v > INT_MAX)
    throw ValueError(std::string(op) + " (cuda): " + what + " = " + std::to_string(v) +
                     " exceeds the cuBLAS limit of " + std::to_string(INT_MAX));
}

cudaStream_t make_stream(int index) {
  DeviceGuard guard(index);
  cudaStream_t s = nullptr;
  CLARENA_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

}  // namespace

CudaBackend::CudaBackend(int index)
    : index_(index),
      stream_(make_stream(index)),
      alloc_(index, cuda::cuda_device_memory(stream_), cuda_caching_enabled()) {
  DeviceGuard guard(index_);
  int sms = 1;
  CLARENA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, index_));
  CLARENA_CUBLAS_CHECK(cublasCreate(&cublas_));
  CLARENA_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
  CLARENA_CUBLAS_CHECK(cublasSetMathMode(cublas_, CUBLAS_DEFAULT_MATH));
  // Give cuBLAS its workspace from our allocator so it never allocates behind our back
  // (and so a captured step stays free of allocations). 32 MiB is NVIDIA's advice for Hopper.
  cublas_ws_bytes_ = size_t{32} << 20;
  cublas_ws_ = alloc_.allocate(cublas_ws_bytes_, &stats_.device_mallocs);
  CLARENA_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_ws_, cublas_ws_bytes_));

  label_record_ = static_cast<cuda::LabelErrorRecord*>(
      alloc_.allocate(sizeof(cuda::LabelErrorRecord), &stats_.device_mallocs));
  CLARENA_CUDA_CHECK(cudaMemsetAsync(label_record_, 0, sizeof(cuda::LabelErrorRecord), stream_));
  CLARENA_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_flag_), sizeof(int),
                                   cudaHostAllocMapped | cudaHostAllocPortable));
  *host_flag_ = 0;
  CLARENA_CUDA_CHECK(
      cudaHostGetDevicePointer(reinterpret_cast<void**>(&host_flag_dev_), host_flag_, 0));
  counter_dev_ = static_cast<unsigned long long*>(
      alloc_.allocate(sizeof(unsigned long long), &stats_.device_mallocs));
  CLARENA_CUDA_CHECK(
      cudaMallocHost(reinterpret_cast<void**>(&counter_host_), sizeof(unsigned long long)));
  CLARENA_CUDA_CHECK(cudaStreamSynchronize(stream_));

  ctx_.stream = stream_;
  ctx_.sm_count = sms > 0 ? sms : 1;
  ctx_.stats = &stats_;
  ctx_.scratch = this;
  ctx_.labels.record = label_record_;
  ctx_.labels.host_flag = host_flag_dev_;
}

// --- memory ---------------------------------------------------------------------------------
void* CudaBackend::allocate(size_t bytes) {
  DeviceGuard guard(index_);
  void* p = alloc_.allocate(bytes, &stats_.device_mallocs);
  stats_.on_allocate(bytes);
  return p;
}
void CudaBackend::deallocate(void* ptr, size_t bytes) {
  if (!ptr) return;
  alloc_.deallocate(ptr);
  stats_.on_deallocate(bytes);
}

// host_src is staged by the driver (pageable memory) before this returns, so the caller may
// reuse it at once; the device side completes in stream order.
void CudaBackend::copy_from_host(void* dst, const void* host_src, size_t bytes) {
  if (bytes == 0) return;
  DeviceGuard guard(index_);
  CLARENA_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, stream_));
}
void CudaBackend::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  ++stats_.host_waits;
  DeviceGuard guard(index_);
  if (bytes)
    CLARENA_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
  CLARENA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::lock_guard<std::mutex> lock(mu_);
  raise_label_error();
}
void CudaBackend::copy(void* dst, const void* src, size_t bytes) {
  if (bytes == 0 || dst == src) return;
  Lock lock(*this);
  const auto d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
  if (d < s + bytes && s < d + bytes) {  // overlapping: go through scratch (memmove semantics)
    void* tmp = get(bytes);
    CLARENA_CUDA_CHECK(cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, stream_));
    src = tmp;
  }
  CLARENA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
}
void CudaBackend::copy_block(DType t, int64_t rows, int64_t cols, const void* src, int64_t src_ld,
                             void* dst, int64_t dst_ld) {
  if (rows <= 0 || cols <= 0) return;
  if (src_ld < cols || dst_ld < cols)
    throw ValueError("copy_block (cuda): leading dimensions " + std::to_string(src_ld) + ", " +
                     std::to_string(dst_ld) + " are smaller than the block width " +
                     std::to_string(cols));
  Lock lock(*this);
  const size_t item = itemsize(t);
  CLARENA_CUDA_CHECK(cudaMemcpy2DAsync(dst, static_cast<size_t>(dst_ld) * item, src,
                                       static_cast<size_t>(src_ld) * item,
                                       static_cast<size_t>(cols) * item, static_cast<size_t>(rows),
                                       cudaMemcpyDeviceToDevice, stream_));
}
void CudaBackend::synchronize() {
  ++stats_.host_waits;
  DeviceGuard guard(index_);
  CLARENA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  std::lock_guard<std::mutex> lock(mu_);
  raise_label_error();
}

// --- products -------------------------------------------------------------------------------
void CudaBackend::gemm(DType t, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                       double alpha, const void* a, const void* b, double beta, void* c) {
  if (m <= 0 || n <= 0) return;
  Lock lock(*this);
  if (k <= 0) {  // empty product: C = beta * C
    cuda::scale_inplace(ctx_, t, m * n, beta, c);
    return;
  }
  check_int_range("gemm", "m", m);
  check_int_range("gemm", "n", n);
  check_int_range("gemm", "k", k);
  // Row-major C[m,n] is column-major C^T[n,m]; C^T = op(B)^T op(A)^T. Row-major B read as
  // column-major is B^T, so the column-major call takes B first with op = trans_b.
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
  const int ldb = static_cast<int>(trans_b ? k : n);
  const int lda = static_cast<int>(trans_a ? m : k);
  const int ldc = static_cast<int>(n);
  if (t == DType::Float32) {
    const bool tf32 = g_tf32.load(std::memory_order_relaxed);
    if (tf32 != cublas_tf32_) {
      CLARENA_CUBLAS_CHECK(
          cublasSetMathMode(cublas_, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
      cublas_tf32_ = tf32;
    }
    const float fa = static_cast<float>(alpha), fb = static_cast<float>(beta);
    CLARENA_CUBLAS_CHECK(
        cublasSgemm(cublas_, op_b, op_a, M, N, K, &fa, static_cast<const float*>(b), ldb,
                    static_cast<const float*>(a), lda, &fb, static_cast<float*>(c), ldc));
  } else if (t == DType::Float64) {
    CLARENA_CUBLAS_CHECK(
        cublasDgemm(cublas_, op_b, op_a, M, N, K, &alpha, static_cast<const double*>(b), ldb,
                    static_cast<const double*>(a), lda, &beta, static_cast<double*>(c), ldc));
  } else {
    throw DTypeError("gemm (cuda): int64 is not supported, expected float32 or float64");
  }
  ++stats_.gemm_calls;
  stats_.gemm_flops += 2 * m * n * k;
  ++stats_.kernel_launches;
}

/// Events bracket `work` on the stream; work itself runs without the backend's mutex (it calls
/// the backend). Each call takes its own pair of events from a pool, so concurrent calls from
/// several threads do not share one.
double CudaBackend::time_ms(const std::function<void()>& work) {
  ++stats_.host_waits;
  DeviceGuard guard(index_);
  std::pair<cudaEvent_t, cudaEvent_t> ev{};
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (events_.empty()) {
      CLARENA_CUDA_CHECK(cudaEventCreate(&ev.first));
      CLARENA_CUDA_CHECK(cudaEventCreate(&ev.second));
    } else {
      ev = events_.back();
      events_.pop_back();
    }
    CLARENA_CUDA_CHECK(cudaEventRecord(ev.first, stream_));
  }
  struct GiveBack {  // the pair returns to the pool however the call ends
    CudaBackend& b;
    std::pair<cudaEvent_t, cudaEvent_t> ev;
    ~GiveBack() {
      std::lock_guard<std::mutex> lock(b.mu_);
      b.events_.push_back(ev);
    }
  } give_back{*this, ev};
  work();
  CLARENA_CUDA_CHECK(cudaEventRecord(ev.second, stream_));
  CLARENA_CUDA_CHECK(cudaEventSynchronize(ev.second));
  {
    std::lock_guard<std::mutex> lock(mu_);
    raise_label_error();
  }
  float ms = 0;
  CLARENA_CUDA_CHECK(cudaEventElapsedTime(&ms, ev.first, ev.second));
  return static_cast<double>(ms);
}

// --- backend-specific -----------------------------------------------------------------------
void CudaBackend::empty_cache() {
  Lock lock(*this);
  CLARENA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  // The scratch buffer is cached memory too: hand it back so its segment can be released.
  alloc_.deallocate(scratch_);
  scratch_ = nullptr;
  scratch_bytes_ = 0;
  alloc_.empty_cache();
}
void* CudaBackend::get(size_t bytes) {
  if (bytes > scratch_bytes_) {
    alloc_.deallocate(scratch_);
    scratch_ = nullptr;
    scratch_bytes_ = 0;
    scratch_ = alloc_.allocate(bytes, &stats_.device_mallocs);
    scratch_bytes_ = bytes;
  }
  return scratch_;
}

void CudaBackend::raise_label_error() {
  if (*reinterpret_cast<volatile int*>(host_flag_) == 0) return;
  cuda::LabelErrorRecord rec{};
  CLARENA_CUDA_CHECK(
      cudaMemcpyAsync(&rec, label_record_, sizeof(rec), cudaMemcpyDeviceToHost, stream_));
  CLARENA_CUDA_CHECK(cudaMemsetAsync(label_record_, 0, sizeof(rec), stream_));
  CLARENA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  *reinterpret_cast<volatile int*>(host_flag_) = 0;
  throw ValueError("cross_entropy (cuda:" + std::to_string(index_) + "): label " +
                   std::to_string(rec.label) + " at row " + std::to_string(rec.row) +
                   " is outside [0, " + std::to_string(rec.cols) +
                   ") (found on the device, reported at the next host read)");
}

}  // namespace cuda

namespace {

using cuda::CudaBackend;

constexpr int kMaxDevices = 64;
std::atomic<CudaBackend*> g_backends[kMaxDevices];
std::mutex g_create_mu;

CudaBackend* created(int index) {
  return index >= 0 && index < kMaxDevices ? g_backends[index].load(std::memory_order_acquire)
                                           : nullptr;
}

}  // namespace

const CudaProbe& cuda_probe() noexcept {
  static const CudaProbe probe = [] {
    CudaProbe p;
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err == cudaSuccess) {
      p.count = n < 0 ? 0 : std::min(n, kMaxDevices);
      p.no_device = p.count == 0;
      if (p.no_device) p.message = "no CUDA device: cudaGetDeviceCount found none";
      return p;
    }
    (void)cudaGetLastError();  // not sticky, but leave nothing recorded
    p.error = static_cast<int>(err);
    const std::string what = std::string(cudaGetErrorName(err)) + " (" +
                             std::to_string(static_cast<int>(err)) +
                             "): " + cudaGetErrorString(err);
    // 100: no device; 35: no driver or one older than the runtime. Both mean "this machine has
    // no usable GPU", the normal case on a CPU-only machine. Anything else (999 unknown, 802
    // system not ready, 3 initialization error, 34 stub library...) is a GPU machine whose
    // driver is broken: say so once, loudly, since every GPU test would otherwise just skip.
    p.no_device = err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver;
    if (p.no_device) {
      p.message = "no CUDA device: cudaGetDeviceCount returned " + what;
    } else {
      p.message = "CUDA is present but unusable: cudaGetDeviceCount returned " + what;
      std::fprintf(stderr, "clarena: %s\n", p.message.c_str());
    }
    return p;
  }();
  return probe;
}

int cuda_device_count_impl() noexcept {
  return cuda_probe().count;
}

bool cuda_caching_enabled() {
  static const bool enabled = !env_flag("CLARENA_CUDA_NO_CACHE");
  return enabled;
}

Backend& cuda_backend(int index) {
  if (CudaBackend* b = created(index)) return *b;
  const int count = cuda_device_count_impl();
  if (index < 0 || index >= count)
    throw DeviceError("cuda:" + std::to_string(index) + " does not exist: " +
                      (count == 0
                           ? cuda_probe().message
                           : "this machine has " + std::to_string(count) +
                                 " CUDA device(s), indices 0.." + std::to_string(count - 1)));
  std::lock_guard<std::mutex> lock(g_create_mu);
  CudaBackend* b = g_backends[index].load(std::memory_order_acquire);
  if (!b) {
    b = new CudaBackend(index);  // intentionally leaked: outlives every tensor
    g_backends[index].store(b, std::memory_order_release);
  }
  return *b;
}

void set_tf32_enabled(bool enabled) {
  g_tf32.store(enabled, std::memory_order_relaxed);
}
bool tf32_enabled() {
  return g_tf32.load(std::memory_order_relaxed);
}

void cuda_empty_cache() {
  for (int i = 0; i < kMaxDevices; ++i)
    if (CudaBackend* b = created(i)) b->empty_cache();
}

CudaMemoryStats cuda_memory_stats(int index) {
  CudaMemoryStats out;
  if (CudaBackend* b = created(index)) {
    const cuda::AllocatorStats s = b->memory_stats();
    out.bytes_in_use = s.bytes_in_use;
    out.bytes_cached = s.bytes_cached;
    out.bytes_reserved = s.bytes_reserved;
    out.device_mallocs = s.device_mallocs;
    out.device_frees = s.device_frees;
  }
  return out;
}
int64_t cuda_bytes_in_use(int index) {
  return cuda_memory_stats(index).bytes_in_use;
}
int64_t cuda_bytes_cached(int index) {
  return cuda_memory_stats(index).bytes_cached;
}
int64_t cuda_malloc_count(int index) {
  return cuda_memory_stats(index).device_mallocs;
}

}  // namespace clarena::kernels
