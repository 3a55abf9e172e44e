// The CPU backend: the Backend interface over the kernels of this folder (one header per op
// family, each a template on the element type), dispatching on DType.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "../dispatch.h"
#include "batchnorm.h"
#include "clarena/core/errors.h"
#include "clarena/kernels/backend.h"
#include "elementwise.h"
#include "gemm.h"
#include "optim.h"
#include "reduce.h"
#include "softmax_xent.h"

namespace clarena::kernels {
namespace {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }

  void* allocate(size_t bytes) override {
    // 64-byte alignment for AVX-512 loads; aligned_alloc needs a multiple of the alignment.
    size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) throw OutOfMemory("cpu: cannot allocate " + std::to_string(bytes) + " bytes");
    stats_.on_allocate(bytes);
    return p;
  }
  void deallocate(void* ptr, size_t bytes) override {
    stats_.on_deallocate(bytes);
    std::free(ptr);
  }
  void copy_from_host(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes && dst != src) std::memmove(dst, src, bytes);
  }
  void fill(DType t, int64_t n, double value, void* dst) override {
    if (t == DType::Int64) {
      std::fill_n(static_cast<int64_t*>(dst), n, static_cast<int64_t>(value));
      return;
    }
    dispatch_float(t, "fill", [&]<typename T>(T*) {
      std::fill_n(CLARENA_TYPED(dst), n, static_cast<T>(value));
    });
  }

  void copy_block(DType t, int64_t rows, int64_t cols, const void* src, int64_t src_ld, void* dst,
                  int64_t dst_ld) override {
    const size_t item = itemsize(t), row_bytes = static_cast<size_t>(cols) * item;
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(static_cast<char*>(dst) + r * dst_ld * item,
                  static_cast<const char*>(src) + r * src_ld * item, row_bytes);
  }

  void gemm(DType t, bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const void* a,
            const void* b, double beta, void* c) override {
    ++stats_.gemm_calls;
    dispatch_float(t, "gemm", [&]<typename T>(T*) {
      cpu::gemm<T>(ta, tb, m, n, k, T(alpha), CLARENA_CTYPED(a), CLARENA_CTYPED(b), T(beta),
                   CLARENA_TYPED(c));
    });
  }

  void binary(Binary op, Broadcast bc, DType t, int64_t rows, int64_t cols, const void* a,
              const void* b, void* out) override {
    dispatch_float(t, "binary", [&]<typename T>(T*) {
      cpu::binary<T>(op, bc, rows, cols, CLARENA_CTYPED(a), CLARENA_CTYPED(b), CLARENA_TYPED(out));
    });
  }
  void axpby(DType t, int64_t n, double alpha, const void* x, double beta, void* y) override {
    dispatch_float(t, "axpby", [&]<typename T>(T*) {
      cpu::axpby<T>(n, T(alpha), CLARENA_CTYPED(x), T(beta), CLARENA_TYPED(y));
    });
  }
  void unary_forward(Unary f, DType t, int64_t n, const void* x, void* y) override {
    dispatch_float(t, "unary", [&]<typename T>(T*) {
      cpu::unary_forward<T>(f, n, CLARENA_CTYPED(x), CLARENA_TYPED(y));
    });
  }
  void unary_backward(Unary f, DType t, int64_t n, const void* y, const void* dy,
                      void* dx) override {
    dispatch_float(t, "unary_backward", [&]<typename T>(T*) {
      cpu::unary_backward<T>(f, n, CLARENA_CTYPED(y), CLARENA_CTYPED(dy), CLARENA_TYPED(dx));
    });
  }
  void bias_relu(DType t, int64_t rows, int64_t cols, const void* bias, void* y) override {
    dispatch_float(t, "bias_relu", [&]<typename T>(T*) {
      cpu::bias_relu<T>(rows, cols, CLARENA_CTYPED(bias), CLARENA_TYPED(y));
    });
  }

  void reduce_sum(DType t, int64_t outer, int64_t reduce, int64_t inner, double scale,
                  const void* x, double beta, void* out) override {
    dispatch_float(t, "sum", [&]<typename T>(T*) {
      cpu::reduce_sum<T>(outer, reduce, inner, T(scale), CLARENA_CTYPED(x), T(beta),
                         CLARENA_TYPED(out));
    });
  }
  void expand(DType t, int64_t outer, int64_t reduce, int64_t inner, double scale, const void* g,
              void* out) override {
    dispatch_float(t, "expand", [&]<typename T>(T*) {
      cpu::expand<T>(outer, reduce, inner, T(scale), CLARENA_CTYPED(g), CLARENA_TYPED(out));
    });
  }

  void log_softmax_forward(DType t, int64_t rows, int64_t cols, const void* x, void* y) override {
    dispatch_float(t, "log_softmax", [&]<typename T>(T*) {
      cpu::log_softmax_forward<T>(rows, cols, CLARENA_CTYPED(x), CLARENA_TYPED(y));
    });
  }
  void log_softmax_backward(DType t, int64_t rows, int64_t cols, const void* y, const void* dy,
                            void* dx) override {
    dispatch_float(t, "log_softmax_backward", [&]<typename T>(T*) {
      cpu::log_softmax_backward<T>(rows, cols, CLARENA_CTYPED(y), CLARENA_CTYPED(dy),
                                   CLARENA_TYPED(dx));
    });
  }
  void cross_entropy_forward(DType t, int64_t rows, int64_t cols, const void* logits,
                             const int64_t* labels, void* lse, void* loss) override {
    dispatch_float(t, "cross_entropy", [&]<typename T>(T*) {
      cpu::cross_entropy_forward<T>(rows, cols, CLARENA_CTYPED(logits), labels, CLARENA_TYPED(lse),
                                    CLARENA_TYPED(loss));
    });
  }
  void cross_entropy_backward(DType t, int64_t rows, int64_t cols, const void* logits,
                              const int64_t* labels, const void* lse, const void* grad_loss,
                              void* dlogits) override {
    dispatch_float(t, "cross_entropy_backward", [&]<typename T>(T*) {
      cpu::cross_entropy_backward<T>(rows, cols, CLARENA_CTYPED(logits), labels,
                                     CLARENA_CTYPED(lse), CLARENA_CTYPED(grad_loss),
                                     CLARENA_TYPED(dlogits));
    });
  }

  void argmax(DType t, int64_t outer, int64_t reduce, int64_t inner, const void* x,
              int64_t* out) override {
    dispatch_float(t, "argmax", [&]<typename T>(T*) {
      cpu::argmax<T>(outer, reduce, inner, CLARENA_CTYPED(x), out);
    });
  }
  void equal(DType t, int64_t n, const void* a, const void* b, int64_t* out) override {
    if (t == DType::Int64) {
      cpu::equal<int64_t>(n, static_cast<const int64_t*>(a), static_cast<const int64_t*>(b), out);
      return;
    }
    dispatch_float(t, "equal", [&]<typename T>(T*) {
      cpu::equal<T>(n, CLARENA_CTYPED(a), CLARENA_CTYPED(b), out);
    });
  }
  int64_t count_equal(int64_t n, const int64_t* a, const int64_t* b) override {
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i)
      count += a[i] == b[i];
    return count;
  }

  void batch_norm_train(DType t, int64_t rows, int64_t cols, const void* x, const void* gamma,
                        const void* beta, double eps, double momentum, void* running_mean,
                        void* running_var, void* y, void* save_mean, void* save_invstd) override {
    dispatch_float(t, "batch_norm", [&]<typename T>(T*) {
      cpu::batch_norm_train<T>(rows, cols, CLARENA_CTYPED(x), CLARENA_CTYPED(gamma),
                               CLARENA_CTYPED(beta), eps, momentum, CLARENA_TYPED(running_mean),
                               CLARENA_TYPED(running_var), CLARENA_TYPED(y),
                               CLARENA_TYPED(save_mean), CLARENA_TYPED(save_invstd));
    });
  }
  void batch_norm_eval(DType t, int64_t rows, int64_t cols, const void* x, const void* gamma,
                       const void* beta, const void* running_mean, const void* running_var,
                       double eps, void* y) override {
    dispatch_float(t, "batch_norm", [&]<typename T>(T*) {
      cpu::batch_norm_eval<T>(rows, cols, CLARENA_CTYPED(x), CLARENA_CTYPED(gamma),
                              CLARENA_CTYPED(beta), CLARENA_CTYPED(running_mean),
                              CLARENA_CTYPED(running_var), eps, CLARENA_TYPED(y));
    });
  }
  void batch_norm_backward(DType t, int64_t rows, int64_t cols, const void* x, const void* gamma,
                           const void* save_mean, const void* save_invstd, const void* dy, void* dx,
                           void* dgamma, void* dbeta) override {
    dispatch_float(t, "batch_norm_backward", [&]<typename T>(T*) {
      cpu::batch_norm_backward<T>(rows, cols, CLARENA_CTYPED(x), CLARENA_CTYPED(gamma),
                                  CLARENA_CTYPED(save_mean), CLARENA_CTYPED(save_invstd),
                                  CLARENA_CTYPED(dy), CLARENA_TYPED(dx), CLARENA_TYPED(dgamma),
                                  CLARENA_TYPED(dbeta));
    });
  }

  void sgd_update(DType t, int64_t n, void* param, const void* grad, void* momentum_buf,
                  const SGDParams& o) override {
    dispatch_float(t, "sgd", [&]<typename T>(T*) {
      cpu::sgd_update<T>(n, CLARENA_TYPED(param), CLARENA_CTYPED(grad), CLARENA_TYPED(momentum_buf),
                         o);
    });
  }
  void adam_update(DType t, int64_t n, void* param, const void* grad, void* exp_avg,
                   void* exp_avg_sq, const AdamParams& o) override {
    dispatch_float(t, "adam", [&]<typename T>(T*) {
      cpu::adam_update<T>(n, CLARENA_TYPED(param), CLARENA_CTYPED(grad), CLARENA_TYPED(exp_avg),
                          CLARENA_TYPED(exp_avg_sq), o);
    });
  }
};

#undef CLARENA_TYPED
#undef CLARENA_CTYPED

}  // namespace

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace clarena::kernels
