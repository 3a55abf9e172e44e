// The CPU backend's class (private to kernels/): the Backend interface on Eigen and the thread
// pool. Each kernel is defined once, in the file of its family (gemm.cpp, elementwise.cpp,
// reduce.cpp, softmax_xent.cpp, batchnorm.cpp, optim.cpp; memory in cpu_backend.cpp), where it
// dispatches on the element type (../dispatch.h) straight into its typed loop.
#pragma once

#include "clarena/kernels/backend.h"

namespace clarena::kernels::cpu {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }

  // cpu_backend.cpp
  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, size_t bytes) override;
  void copy_from_host(void* dst, const void* host_src, size_t bytes) override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  void copy(void* dst, const void* src, size_t bytes) override;
  void fill(DType, int64_t n, double value, void* dst) override;
  void copy_block(DType, int64_t rows, int64_t cols, const void* src, int64_t src_ld, void* dst,
                  int64_t dst_ld) override;

  // gemm.cpp
  void gemm(DType, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, double alpha,
            const void* a, const void* b, double beta, void* c) override;
  void gemm_reusing_b(DType, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                      double alpha, const void* a, const void* b, double beta, void* c,
                      uint64_t b_version) override;
  /// Drops the packed copies of B that start at `ptr` (its memory is being freed).
  void forget_packed(const void* ptr);

  // elementwise.cpp
  void binary(Binary, Broadcast, DType, int64_t rows, int64_t cols, const void* a, const void* b,
              void* out) override;
  void axpby(DType, int64_t n, double alpha, const void* x, double beta, void* y) override;
  void unary_forward(Unary, DType, int64_t n, const void* x, void* y) override;
  void unary_backward(Unary, DType, int64_t n, const void* y, const void* dy, void* dx) override;
  void bias_relu(DType, int64_t rows, int64_t cols, const void* bias, void* y) override;

  // reduce.cpp
  void reduce_sum(DType, int64_t outer, int64_t reduce, int64_t inner, double scale, const void* x,
                  double beta, void* out) override;
  void expand(DType, int64_t outer, int64_t reduce, int64_t inner, double scale, const void* g,
              void* out) override;
  void argmax(DType, int64_t outer, int64_t reduce, int64_t inner, const void* x,
              int64_t* out) override;
  void equal(DType, int64_t n, const void* a, const void* b, int64_t* out) override;
  int64_t count_equal(int64_t n, const int64_t* a, const int64_t* b) override;

  // softmax_xent.cpp
  void log_softmax_forward(DType, int64_t rows, int64_t cols, const void* x, void* y) override;
  void log_softmax_backward(DType, int64_t rows, int64_t cols, const void* y, const void* dy,
                            void* dx) override;
  void cross_entropy_forward(DType, int64_t rows, int64_t cols, const void* logits,
                             const int64_t* labels, void* lse, void* loss) override;
  void cross_entropy_backward(DType, int64_t rows, int64_t cols, const void* logits,
                              const int64_t* labels, const void* lse, const void* grad_loss,
                              void* dlogits) override;

  // batchnorm.cpp
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

  // pool.cpp
  void max_pool2d_forward(DType, const Pool2dShape&, const void* x, void* y,
                          int64_t* indices) override;
  void max_pool2d_backward(DType, const Pool2dShape&, const int64_t* indices, const void* dy,
                           void* dx) override;
  void avg_pool2d_forward(DType, const Pool2dShape&, const void* x, void* y) override;
  void avg_pool2d_backward(DType, const Pool2dShape&, const void* dy, void* dx) override;

  // conv.cpp
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

  // optim.cpp
  void sgd_update(DType, int64_t n, void* param, const void* grad, void* momentum_buf,
                  const SGDParams&) override;
  void adam_update(DType, int64_t n, void* param, const void* grad, void* exp_avg, void* exp_avg_sq,
                   const AdamParams&) override;
};

}  // namespace clarena::kernels::cpu
