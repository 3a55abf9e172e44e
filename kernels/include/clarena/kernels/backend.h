// The backend interface: the primitive kernels the differentiable ops are built from.
//
// It knows nothing of tensors or autograd: every kernel takes an element type, sizes and
// raw pointers to contiguous row-major buffers on the backend's device. Adding a device means
// implementing this interface and nothing else. Scalars (alpha, lr...) travel as double and
// are converted to the element type inside the kernel.
//
// Threading contract. Every kernel may be called from several user threads at once, on
// different buffers (two threads writing one buffer is the caller's race, as with any
// container); each call is correct whatever else runs. The CPU backend spreads a kernel over
// one process-wide pool: a call that finds the pool busy runs its tiles on its own thread.
// Work is cut into tiles whose sizes depend on the shape alone and every sum is taken in a
// fixed order, so results are bitwise the same at any thread count (clarena::set_num_threads)
// on the same machine type. The statistics counters are atomic. A CUDA backend's calls from
// several threads are ordered on its one stream.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>

#include "clarena/base/device.h"

namespace clarena::kernels {

enum class Unary : uint8_t { Relu, Tanh, Sigmoid, Exp };
enum class Binary : uint8_t { Add, Sub, Mul };
/// Which operand of a [rows, cols] binary op is a single [cols] row repeated over the rows.
enum class Broadcast : uint8_t { None, RowA, RowB };

/// Defaults are torch.optim's (torch 2.x): SGD lr 1e-3, momentum/dampening/weight_decay 0,
/// no nesterov; Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.
struct SGDParams {
  double lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  /// torch.optim.SGD initialises the buffer to the gradient on a parameter's first step, a host
  /// decision as in torch: from the second step on the arguments are constant, so any later
  /// step can be captured and replayed (torch too captures after warm-up steps).
  bool first_step = true;
};

struct AdamParams {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  /// The 1-based step count for the bias corrections: one float64 in the backend's memory
  /// (device memory on a GPU), advanced by the caller before the update. It lives on the device,
  /// as torch's capturable Adam keeps it, so that a captured training step (a CUDA graph)
  /// replays with the right bias corrections; nothing about a step is baked into the launch.
  const double* step = nullptr;
};

/// A pooling window over [planes, height, width] (NCHW: planes = N·C) giving
/// [planes, out_h, out_w], out = (in + 2 * pad - kernel) / stride + 1; pad <= kernel / 2.
struct Pool2dShape {
  int64_t planes = 0, height = 0, width = 0, out_h = 0, out_w = 0;
  int64_t kernel_h = 1, kernel_w = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
};

/// A statistics counter that several threads may bump at once. Relaxed: it counts, it orders
/// nothing. Copies are snapshots.
class Counter {
 public:
  Counter(int64_t value = 0) : value_(value) {}
  Counter(const Counter& other) : value_(other.load()) {}
  Counter& operator=(const Counter& other) { return *this = other.load(); }
  Counter& operator=(int64_t value) {
    value_.store(value, std::memory_order_relaxed);
    return *this;
  }
  operator int64_t() const { return load(); }
  int64_t load() const { return value_.load(std::memory_order_relaxed); }
  /// Adds and returns the new value.
  int64_t operator+=(int64_t delta) {
    return value_.fetch_add(delta, std::memory_order_relaxed) + delta;
  }
  int64_t operator-=(int64_t delta) { return *this += -delta; }
  int64_t operator++() { return *this += 1; }
  /// Raises the value to at least `value`.
  void raise_to(int64_t value) {
    int64_t seen = load();
    while (seen < value && !value_.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
    }
  }

 private:
  std::atomic<int64_t> value_;
};

/// Device-side counters of work launched, read by tests and benchmarks.
struct KernelStats {
  Counter gemm_calls;
  Counter gemm_flops;       // 2·m·n·k of every GEMM: what a step multiplies, whatever its layers
  Counter packed_reuses;    // gemm_reusing_b calls served by a B packed on an earlier call
  Counter kernel_launches;  // every kernel, GEMMs included
  Counter device_mallocs;   // calls into the device's raw allocator (cudaMalloc)
  Counter bytes_in_use;     // tensor storage currently allocated on the device
  Counter peak_bytes_in_use;
  /// Calls that make the host wait for the device: reads into host memory (copy_to_host,
  /// count_equal), synchronize, and time_ms's closing wait. Counted on the CPU too, where they
  /// cost nothing, so that a CPU test can check a loop that must not stall a GPU.
  Counter host_waits;
  void on_allocate(size_t bytes) {
    peak_bytes_in_use.raise_to(bytes_in_use += static_cast<int64_t>(bytes));
  }
  void on_deallocate(size_t bytes) { bytes_in_use -= static_cast<int64_t>(bytes); }
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;

  // --- memory -------------------------------------------------------------------------
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* ptr, size_t bytes) = 0;
  virtual void copy_from_host(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill(DType, int64_t n, double value, void* dst) = 0;
  /// Copies a [rows, cols] block between row-major matrices of leading dimensions src_ld and
  /// dst_ld: dst[r * dst_ld + c] = src[r * src_ld + c] (pointers already at the block start).
  virtual void copy_block(DType, int64_t rows, int64_t cols, const void* src, int64_t src_ld,
                          void* dst, int64_t dst_ld) = 0;
  virtual void synchronize() { ++stats_.host_waits; }
  /// Runs `work` (which launches kernels on this backend) and returns the device time it took,
  /// in milliseconds: CUDA events on the GPU, a steady clock around synchronisations elsewhere.
  virtual double time_ms(const std::function<void()>& work);

  // --- products -----------------------------------------------------------------------
  /// C[m,n] = alpha * op(A) op(B) + beta * C, row-major contiguous; op(A) is [m,k], op(B) [k,n].
  /// beta == 0 overwrites C (never reads it, so C may hold garbage).
  virtual void gemm(DType, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                    double alpha, const void* a, const void* b, double beta, void* c) = 0;
  /// gemm whose B is unchanged for as long as `b_version` is (its tensor's version, unique
  /// across tensors): a backend may keep B packed from one call to the next, until the version
  /// moves or B's memory is freed. The same result bits as gemm.
  virtual void gemm_reusing_b(DType t, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                              double alpha, const void* a, const void* b, double beta, void* c,
                              uint64_t b_version) {
    (void)b_version;
    gemm(t, trans_a, trans_b, m, n, k, alpha, a, b, beta, c);
  }

  // --- element-wise -------------------------------------------------------------------
  /// out = a (op) b over [rows, cols]; with RowA/RowB that operand is [cols]. out may alias a or b.
  virtual void binary(Binary, Broadcast, DType, int64_t rows, int64_t cols, const void* a,
                      const void* b, void* out) = 0;
  /// y = alpha * x + beta * y (beta == 0 overwrites y).
  virtual void axpby(DType, int64_t n, double alpha, const void* x, double beta, void* y) = 0;
  virtual void unary_forward(Unary, DType, int64_t n, const void* x, void* y) = 0;
  /// dx = dy * f'(x), written from the forward's output y (all three functions allow it).
  virtual void unary_backward(Unary, DType, int64_t n, const void* y, const void* dy, void* dx) = 0;
  /// y = relu(y + bias) over [rows, cols] in one pass (a linear layer's epilogue).
  virtual void bias_relu(DType, int64_t rows, int64_t cols, const void* bias, void* y) = 0;

  // --- reductions over the middle axis of a [outer, reduce, inner] view ------------------
  /// out[o, i] = scale * sum_r x[o, r, i] + beta * out[o, i].
  virtual void reduce_sum(DType, int64_t outer, int64_t reduce, int64_t inner, double scale,
                          const void* x, double beta, void* out) = 0;
  /// out[o, r, i] = scale * g[o, i]: the backward of reduce_sum.
  virtual void expand(DType, int64_t outer, int64_t reduce, int64_t inner, double scale,
                      const void* g, void* out) = 0;

  // --- softmax family over the rows of [rows, cols] --------------------------------------
  virtual void log_softmax_forward(DType, int64_t rows, int64_t cols, const void* x, void* y) = 0;
  /// dx = dy - exp(y) * sum(dy) per row.
  virtual void log_softmax_backward(DType, int64_t rows, int64_t cols, const void* y,
                                    const void* dy, void* dx) = 0;
  /// loss[0] = mean_r (logsumexp(x_r) - x_r[label_r]); lse[r] is kept for the backward.
  /// Labels outside [0, cols) throw ValueError (on the GPU, when the loss is next read).
  virtual void cross_entropy_forward(DType, int64_t rows, int64_t cols, const void* logits,
                                     const int64_t* labels, void* lse, void* loss) = 0;
  /// dlogits = grad_loss[0] / rows * (softmax(x) - onehot(label)); grad_loss lives on device.
  /// softmax is exp(x - lse) divided by its own sum (so lse's rounding cancels) and the label's
  /// entry is -(sum - e_label) / sum in double (no cancellation when the loss is near 0).
  virtual void cross_entropy_backward(DType, int64_t rows, int64_t cols, const void* logits,
                                      const int64_t* labels, const void* lse, const void* grad_loss,
                                      void* dlogits) = 0;

  // --- classification -----------------------------------------------------------------
  /// out[r] = index of the first maximum of row r (of [outer, reduce, inner], along reduce).
  virtual void argmax(DType, int64_t outer, int64_t reduce, int64_t inner, const void* x,
                      int64_t* out) = 0;
  /// out[i] = (a[i] == b[i]) as 0/1 int64.
  virtual void equal(DType, int64_t n, const void* a, const void* b, int64_t* out) = 0;
  /// Number of i with a[i] == b[i], returned to the host.
  virtual int64_t count_equal(int64_t n, const int64_t* a, const int64_t* b) = 0;

  // --- batch norm per column of [rows, cols, inner] -------------------------------------
  /// x is [rows, cols, inner] (BatchNorm1d: [B, C] with inner 1; BatchNorm2d: [N, C, H·W]);
  /// the statistics of column c are over its rows·inner values.
  /// Training mode: batch statistics; saves mean and 1/sqrt(var+eps) per column and updates
  /// the running statistics (unbiased variance) with the given momentum. gamma and beta may be
  /// null (1 and 0: no affine), running_mean/var null (not tracked), as torch's flags allow.
  virtual void batch_norm_train(DType, int64_t rows, int64_t cols, int64_t inner, const void* x,
                                const void* gamma, const void* beta, double eps, double momentum,
                                void* running_mean, void* running_var, void* y, void* save_mean,
                                void* save_invstd) = 0;
  virtual void batch_norm_eval(DType, int64_t rows, int64_t cols, int64_t inner, const void* x,
                               const void* gamma, const void* beta, const void* running_mean,
                               const void* running_var, double eps, void* y) = 0;
  /// Any of dx, dgamma, dbeta may be null when that gradient is not needed.
  virtual void batch_norm_backward(DType, int64_t rows, int64_t cols, int64_t inner, const void* x,
                                   const void* gamma, const void* save_mean,
                                   const void* save_invstd, const void* dy, void* dx, void* dgamma,
                                   void* dbeta) = 0;

  // --- convolution: im2col and its adjoint, over a batch of NCHW images ------------------
  /// `images` consecutive [channels, height, width] images (image n at image + n * channels *
  /// height * width) into one columns matrix of leading dimension columns_ld >= images * out_h *
  /// out_w, image n's columns at column offset n * out_h * out_w: row (c, i, j), column
  /// n * out_h * out_w + y * out_w + x holds image n's [c, y * stride_h - pad_h + i * dilation_h,
  /// x * stride_w - pad_w + j * dilation_w], 0 outside the image (zero padding), where out_h =
  /// (height + 2 pad_h - dilation_h (kernel_h - 1) - 1) / stride_h + 1 (out_w likewise). Rows
  /// are channels * kernel_h * kernel_w; the columns past images * out_h * out_w are not touched.
  /// The caller checks the sizes (out_h, out_w >= 1).
  virtual void im2col(DType, int64_t images, int64_t channels, int64_t height, int64_t width,
                      int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                      int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                      const void* image, int64_t columns_ld, void* columns) = 0;
  /// The adjoint of im2col: image n's [c, y, x] = the sum of the column entries im2col would
  /// take from it, 0 where there is none. Writes every element of the `images` images (no need
  /// to zero them); each element's sum is taken in the order (i, j), on every backend (no
  /// atomics).
  virtual void col2im(DType, int64_t images, int64_t channels, int64_t height, int64_t width,
                      int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                      int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                      const void* columns, int64_t columns_ld, void* image) = 0;
  /// Swaps the two outer axes of a contiguous [a, b, inner] array into [b, a, inner]:
  /// dst[j][i][p] = src[i][j][p] (conv2d moves [C, N·H·W] matrices to NCHW and back with it).
  /// src and dst must not overlap.
  virtual void transpose_outer(DType, int64_t a, int64_t b, int64_t inner, const void* src,
                               void* dst) = 0;

  // --- 2-D pooling over the planes of [planes, height, width] -----------------------------
  /// Max pooling: y = the window's maximum (padding is -inf), indices = its position h * width + w
  /// in the plane, the first maximum in row-major order (a NaN wins, as in torch). indices may be
  /// null: the values alone (no gradient to route).
  virtual void max_pool2d_forward(DType, const Pool2dShape&, const void* x, void* y,
                                  int64_t* indices) = 0;
  /// dx = the sum of dy over the outputs whose index is that element (deterministic).
  virtual void max_pool2d_backward(DType, const Pool2dShape&, const int64_t* indices,
                                   const void* dy, void* dx) = 0;
  /// Average pooling, the divisor counting padding (count_include_pad).
  virtual void avg_pool2d_forward(DType, const Pool2dShape&, const void* x, void* y) = 0;
  virtual void avg_pool2d_backward(DType, const Pool2dShape&, const void* dy, void* dx) = 0;

  // --- optimizers, fused over one parameter ----------------------------------------------
  /// momentum_buf may be null when momentum == 0.
  virtual void sgd_update(DType, int64_t n, void* param, const void* grad, void* momentum_buf,
                          const SGDParams&) = 0;
  virtual void adam_update(DType, int64_t n, void* param, const void* grad, void* exp_avg,
                           void* exp_avg_sq, const AdamParams&) = 0;

  // --- instrumentation ----------------------------------------------------------------
  KernelStats& stats() { return stats_; }

 protected:
  KernelStats stats_;
};

/// The backend of a device. Throws DeviceError when the build or the machine has no such device.
Backend& backend_for(Device device);

/// The CPU backend (always present); `cuda_backend` exists only in CUDA builds.
Backend& cpu_backend();

/// Threads of the CPU backend's pool, the calling thread included (clarena::num_threads).
int cpu_num_threads();
/// Resizes the CPU backend's pool (n >= 1, else ValueError).
void set_cpu_num_threads(int n);

}  // namespace clarena::kernels
