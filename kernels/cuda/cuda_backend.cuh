// The CUDA backend's class (private to kernels/): the Backend interface on one CUDA device.
//
// Each kernel is defined once, as a member, in the file of its family (`<family>.cu`: fill_copy,
// elementwise, reduce, softmax_xent, classify, batchnorm, optim); memory, copies, the cuBLAS
// GEMM and timing are in cuda_backend.cu. A member takes the backend's lock (`Lock`), then
// enqueues its kernels on the stream through the launch context `ctx_` without synchronizing,
// adding each kernel it launches to stats_.kernel_launches.
//
// One non-blocking stream per device carries every kernel, cuBLAS call and copy, so work is
// ordered without events and the caching allocator can hand a freed block out again at once. The
// host waits only in copy_to_host, count_equal and synchronize; those are also where a bad
// cross-entropy label recorded on the device is thrown as ValueError.
//
// Threads: one mutex per backend (`mu_`) guards what calls share on the host: the cuBLAS handle
// and its math mode, the scratch buffer (held for the whole op that uses it, so two ops never
// interleave their passes through it), the pool of timing events, the pinned counter of
// count_equal and the bad-label record. A call holds it while it enqueues, not while it waits
// for the stream (except count_equal, whose pinned result buffer is shared).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

#include "caching_allocator.h"
#include "check.h"
#include "clarena/kernels/backend.h"

namespace clarena::kernels::cuda {

/// Grow-only device scratch owned by the backend (stream-ordered, so one buffer serves all ops).
class Scratch {
 public:
  virtual ~Scratch() = default;
  virtual void* get(size_t bytes) = 0;
};

/// A device-side error record set by kernels that find bad input (labels out of range).
/// `flag` is 0 until the first report; the host reads `host_flag` (mapped pinned memory the
/// kernel writes through `host_flag_dev`) after its next synchronization.
struct LabelErrorRecord {
  unsigned int flag;
  long long row, label, cols;
};

/// What a kernel needs to report a bad label (both device-visible pointers).
struct LabelCheck {
  LabelErrorRecord* record = nullptr;  // device memory
  int* host_flag = nullptr;            // device alias of a mapped pinned int
};

/// What a launch needs: the stream, the SM count (grid sizes), the counters, the scratch and
/// the bad-label record.
struct Ctx {
  cudaStream_t stream = nullptr;
  int sm_count = 1;
  KernelStats* stats = nullptr;
  Scratch* scratch = nullptr;
  LabelCheck labels;
};

// Helpers of several families, enqueued on ctx's stream by a caller that holds the backend's lock
// (fill_copy.cu): fill (the body of CudaBackend::fill), and y = beta * y (beta == 0 writes zeros
// without reading y), the empty GEMM's result.
void fill_on_stream(const Ctx& ctx, DType t, int64_t n, double value, void* dst);
void scale_inplace(const Ctx& ctx, DType t, int64_t n, double beta, void* y);

/// Makes `device` current for the scope (restoring the previous one), cheap when it already is.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    CLARENA_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device)
      CLARENA_CUDA_CHECK(cudaSetDevice(device));
    else
      prev_ = -1;
  }
  ~DeviceGuard() {
    if (prev_ >= 0) (void)cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

class CudaBackend final : public Backend, private Scratch {
 public:
  explicit CudaBackend(int index);
  // Never destroyed (see cuda_backend()): tensors may outlive any static destruction order.

  Device device() const override { return Device::cuda(index_); }

  /// The device made current and the backend's mutex held, for one call's enqueueing.
  struct Lock {
    explicit Lock(CudaBackend& b) : guard(b.index_), lock(b.mu_) {}
    DeviceGuard guard;
    std::lock_guard<std::mutex> lock;
  };

  // cuda_backend.cu
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  void copy_from_host(void* dst, const void* host_src, size_t bytes) override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void copy_block(DType, int64_t rows, int64_t cols, const void* src, int64_t src_ld, void* dst,
                  int64_t dst_ld) override;
  void synchronize() override;
  double time_ms(const std::function<void()>& work) override;
  void gemm(DType, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
            const void* a, const void* b, double beta, void* c) override;

  // fill_copy.cu
  void fill(DType, int64_t n, double value, void* dst) override;

  // elementwise.cu
  void binary(Binary, Broadcast, DType, int64_t rows, int64_t cols, const void* a, const void* b,
              void* out) override;
  void axpby(DType, int64_t n, double alpha, const void* x, double beta, void* y) override;
  void unary_forward(Unary, DType, int64_t n, const void* x, void* y) override;
  void unary_backward(Unary, DType, int64_t n, const void* y, const void* dy, void* dx) override;
  void bias_relu(DType, int64_t rows, int64_t cols, const void* bias, void* y) override;

  // reduce.cu
  void reduce_sum(DType, int64_t outer, int64_t reduce, int64_t inner, double scale, const void* x,
                  double beta, void* out) override;
  void expand(DType, int64_t outer, int64_t reduce, int64_t inner, double scale, const void* g,
              void* out) override;

  // softmax_xent.cu
  void log_softmax_forward(DType, int64_t rows, int64_t cols, const void* x, void* y) override;
  void log_softmax_backward(DType, int64_t rows, int64_t cols, const void* y, const void* dy,
                            void* dx) override;
  void cross_entropy_forward(DType, int64_t rows, int64_t cols, const void* logits,
                             const int64_t* labels, void* lse, void* loss) override;
  void cross_entropy_backward(DType, int64_t rows, int64_t cols, const void* logits,
                              const int64_t* labels, const void* lse, const void* grad_loss,
                              void* dlogits) override;

  // classify.cu
  void argmax(DType, int64_t outer, int64_t reduce, int64_t inner, const void* x,
              int64_t* out) override;
  void equal(DType, int64_t n, const void* a, const void* b, int64_t* out) override;
  int64_t count_equal(int64_t n, const int64_t* a, const int64_t* b) override;

  // batchnorm.cu
  void batch_norm_train(DType, int64_t rows, int64_t cols, int64_t inner, const void* x,
                        const void* gamma, const void* beta, double eps, double momentum,
                        void* running_mean, void* running_var, void* y, void* save_mean,
                        void* save_invstd) override;
  void batch_norm_eval(DType, int64_t rows, int64_t cols, int64_t inner, const void* x,
                       const void* gamma, const void* beta, const void* running_mean,
                       const void* running_var, double eps, void* y) override;
  void batch_norm_backward(DType, int64_t rows, int64_t cols, int64_t inner, const void* x,
                           const void* gamma, const void* save_mean, const void* save_invstd,
                           const void* dy, void* dx, void* dgamma, void* dbeta) override;

  // pool.cu
  void max_pool2d_forward(DType, const Pool2dShape&, const void* x, void* y,
                          int64_t* indices) override;
  void max_pool2d_backward(DType, const Pool2dShape&, const int64_t* indices, const void* dy,
                           void* dx) override;
  void avg_pool2d_forward(DType, const Pool2dShape&, const void* x, void* y) override;
  void avg_pool2d_backward(DType, const Pool2dShape&, const void* dy, void* dx) override;

  // conv.cu
  void im2col(DType, int64_t images, int64_t channels, int64_t height, int64_t width,
              int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
              int64_t pad_w, int64_t dilation_h, int64_t dilation_w, const void* image,
              int64_t columns_ld, void* columns) override;
  void col2im(DType, int64_t images, int64_t channels, int64_t height, int64_t width,
              int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
              int64_t pad_w, int64_t dilation_h, int64_t dilation_w, const void* columns,
              int64_t columns_ld, void* image) override;
  void transpose_outer(DType, int64_t a, int64_t b, int64_t inner, const void* src,
                       void* dst) override;

  // optim.cu
  void sgd_update(DType, int64_t n, void* param, const void* grad, void* momentum_buf,
                  const SGDParams&) override;
  void adam_update(DType, int64_t n, void* param, const void* grad, void* exp_avg, void* exp_avg_sq,
                   const AdamParams&) override;

  // --- backend-specific (cuda_backend.cu) ---------------------------------------------------
  void empty_cache();
  AllocatorStats memory_stats() const { return alloc_.stats(); }

 private:
  /// Scratch for multi-pass kernels: grows, never shrinks; the old block goes back to the cache
  /// (safe: all its readers are earlier on the same stream). Called with mu_ held, which the
  /// calling op keeps until all its passes are enqueued.
  void* get(size_t bytes) override;

  /// Called with mu_ held after a stream synchronization: throws the first bad label a kernel
  /// recorded.
  void raise_label_error();

  int index_;
  cudaStream_t stream_ = nullptr;
  CachingAllocator alloc_;
  std::mutex mu_;
  std::vector<std::pair<cudaEvent_t, cudaEvent_t>> events_;  // for time_ms, made on first use
  cublasHandle_t cublas_ = nullptr;
  bool cublas_tf32_ = false;
  void* cublas_ws_ = nullptr;
  size_t cublas_ws_bytes_ = 0;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  LabelErrorRecord* label_record_ = nullptr;
  int* host_flag_ = nullptr;
  int* host_flag_dev_ = nullptr;
  unsigned long long* counter_dev_ = nullptr;
  unsigned long long* counter_host_ = nullptr;
  Ctx ctx_;
};

}  // namespace clarena::kernels::cuda
