// Host entry points of the CUDA kernels, one group per op family (`<family>.cu`).
//
// Every function takes the launch context (stream, SM count, counters, scratch, error flag), the
// element type and raw device pointers, enqueues its kernels on the stream without synchronizing,
// and adds each kernel it launches to ctx.stats->kernel_launches. Semantics are those of the
// matching Backend method (kernels/include/clarena/kernels/backend.h). Float32 and float64 are
// supported everywhere; int64 where the Backend says so (fill, equal); otherwise DTypeError.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

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

struct Ctx {
  cudaStream_t stream = nullptr;
  int sm_count = 1;
  KernelStats* stats = nullptr;
  Scratch* scratch = nullptr;
  LabelCheck labels;
};

// fill_copy.cu
void fill(const Ctx&, DType, int64_t n, double value, void* dst);
void scale_inplace(const Ctx&, DType, int64_t n, double beta, void* y);  // y = beta*y (0 => zero)

// elementwise.cu
void binary(const Ctx&, Binary, Broadcast, DType, int64_t rows, int64_t cols, const void* a,
            const void* b, void* out);
void axpby(const Ctx&, DType, int64_t n, double alpha, const void* x, double beta, void* y);
void unary_forward(const Ctx&, Unary, DType, int64_t n, const void* x, void* y);
void unary_backward(const Ctx&, Unary, DType, int64_t n, const void* y, const void* dy, void* dx);
void bias_relu(const Ctx&, DType, int64_t rows, int64_t cols, const void* bias, void* y);

// reduce.cu
void reduce_sum(const Ctx&, DType, int64_t outer, int64_t reduce, int64_t inner, double scale,
                const void* x, double beta, void* out);
void expand(const Ctx&, DType, int64_t outer, int64_t reduce, int64_t inner, double scale,
            const void* g, void* out);

// softmax_xent.cu
void log_softmax_forward(const Ctx&, DType, int64_t rows, int64_t cols, const void* x, void* y);
void log_softmax_backward(const Ctx&, DType, int64_t rows, int64_t cols, const void* y,
                          const void* dy, void* dx);
void cross_entropy_forward(const Ctx&, DType, int64_t rows, int64_t cols, const void* logits,
                           const int64_t* labels, void* lse, void* loss);
void cross_entropy_backward(const Ctx&, DType, int64_t rows, int64_t cols, const void* logits,
                            const int64_t* labels, const void* lse, const void* grad_loss,
                            void* dlogits);

// classify.cu
void argmax(const Ctx&, DType, int64_t outer, int64_t reduce, int64_t inner, const void* x,
            int64_t* out);
void equal(const Ctx&, DType, int64_t n, const void* a, const void* b, int64_t* out);
/// Enqueues the count of a[i] == b[i] into *counter_dev (an unsigned long long it zeroes first).
void count_equal(const Ctx&, int64_t n, const int64_t* a, const int64_t* b,
                 unsigned long long* counter_dev);

// batchnorm.cu
void batch_norm_train(const Ctx&, DType, int64_t rows, int64_t cols, const void* x,
                      const void* gamma, const void* beta, double eps, double momentum,
                      void* running_mean, void* running_var, void* y, void* save_mean,
                      void* save_invstd);
void batch_norm_eval(const Ctx&, DType, int64_t rows, int64_t cols, const void* x,
                     const void* gamma, const void* beta, const void* running_mean,
                     const void* running_var, double eps, void* y);
void batch_norm_backward(const Ctx&, DType, int64_t rows, int64_t cols, const void* x,
                         const void* gamma, const void* save_mean, const void* save_invstd,
                         const void* dy, void* dx, void* dgamma, void* dbeta);

// optim.cu
void sgd_update(const Ctx&, DType, int64_t n, void* param, const void* grad, void* momentum_buf,
                const SGDParams&);
void adam_update(const Ctx&, DType, int64_t n, void* param, const void* grad, void* exp_avg,
                 void* exp_avg_sq, const AdamParams&);

}  // namespace clarena::kernels::cuda
