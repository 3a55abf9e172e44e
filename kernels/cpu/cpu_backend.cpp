// The CPU backend: Eigen for products, plain loops (which the compiler vectorises) for the rest.
// Every kernel is a template on the element type; the class below dispatches on DType.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "../dispatch.h"
#include "clarena/core/errors.h"
#include "clarena/kernels/backend.h"
#include "thread_pool.h"

namespace clarena::kernels {
namespace {

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMatMap = Eigen::Map<const RowMatrix<T>, Eigen::Unaligned>;

template <typename T, typename OpA, typename OpB, typename OutBlock>
void gemm_block(const OpA& a, const OpB& b, OutBlock c, T alpha, T beta) {
  if (beta == T(0)) {
    c.noalias() = alpha * a * b;
  } else {
    if (beta != T(1)) c *= beta;
    c.noalias() += alpha * a * b;
  }
}

/// Products this small run on the calling thread: waking workers would cost more.
constexpr double kParallelGemmFlops = 2e6;
constexpr int64_t kGemmGrain = 16;  // split points stay on 16-element (one AVX-512 vector) bounds

/// C = alpha op(A) op(B) + beta C with Eigen, the output split into column (or, for tall
/// outputs, row) blocks that the thread pool computes side by side. Eigen itself stays
/// single-threaded: one pool for the whole library, and no OpenMP teams spinning.
template <typename T, bool kTa, bool kTb>
void gemm(int64_t m, int64_t n, int64_t k, T alpha, const T* a, const T* b, T beta, T* c) {
  ConstMatMap<T> A(a, kTa ? k : m, kTa ? m : k);
  ConstMatMap<T> B(b, kTb ? n : k, kTb ? k : n);
  Eigen::Map<RowMatrix<T>> C(c, m, n);
  auto rows_of_a = [&](int64_t lo, int64_t len) {
    if constexpr (kTa)
      return A.middleCols(lo, len).transpose();
    else
      return A.middleRows(lo, len);
  };
  auto cols_of_b = [&](int64_t lo, int64_t len) {
    if constexpr (kTb)
      return B.middleRows(lo, len).transpose();
    else
      return B.middleCols(lo, len);
  };
  if (k == 1) {
    // An outer product (a weight gradient at batch 1): Eigen writes it in one pass, where the
    // GEMM path would first zero C and then accumulate into it.
    auto a_col = rows_of_a(0, m).col(0);
    auto b_row = cols_of_b(0, n).row(0);
    if (beta == T(0))
      C.noalias() = (alpha * a_col) * b_row;
    else
      gemm_block(a_col, b_row, C, alpha, beta);
    return;
  }
  ThreadPool& pool = ThreadPool::global();
  const bool split_rows = m > n;
  const int64_t extent = split_rows ? m : n;
  const double flops =
      2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const int64_t blocks =
      flops < kParallelGemmFlops ? 1 : std::min<int64_t>(pool.size(), extent / kGemmGrain);
  if (blocks <= 1) {
    gemm_block(rows_of_a(0, m), cols_of_b(0, n), C, alpha, beta);
    return;
  }
  const int64_t step = (extent / blocks + kGemmGrain - 1) / kGemmGrain * kGemmGrain;
  pool.run(static_cast<int>(blocks), [&](int i) {
    const int64_t lo = i * step, len = std::min(extent, lo + step) - lo;
    if (len <= 0) return;
    if (split_rows)
      gemm_block(rows_of_a(lo, len), cols_of_b(0, n), C.middleRows(lo, len), alpha, beta);
    else
      gemm_block(rows_of_a(0, m), cols_of_b(lo, len), C.middleCols(lo, len), alpha, beta);
  });
}

template <typename T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* a, const T* b,
          T beta, T* c) {
  if (ta && tb)
    gemm<T, true, true>(m, n, k, alpha, a, b, beta, c);
  else if (ta)
    gemm<T, true, false>(m, n, k, alpha, a, b, beta, c);
  else if (tb)
    gemm<T, false, true>(m, n, k, alpha, a, b, beta, c);
  else
    gemm<T, false, false>(m, n, k, alpha, a, b, beta, c);
}

template <typename T>
void binary(Binary op, Broadcast bc, int64_t rows, int64_t cols, const T* a, const T* b, T* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* ar = bc == Broadcast::RowA ? a : a + r * cols;
    const T* br = bc == Broadcast::RowB ? b : b + r * cols;
    T* o = out + r * cols;
    switch (op) {
      case Binary::Add:
        for (int64_t c = 0; c < cols; ++c)
          o[c] = ar[c] + br[c];
        break;
      case Binary::Sub:
        for (int64_t c = 0; c < cols; ++c)
          o[c] = ar[c] - br[c];
        break;
      case Binary::Mul:
        for (int64_t c = 0; c < cols; ++c)
          o[c] = ar[c] * br[c];
        break;
    }
  }
}

template <typename T>
void axpby(int64_t n, T alpha, const T* x, T beta, T* y) {
  if (beta == T(0)) {
    for (int64_t i = 0; i < n; ++i)
      y[i] = alpha * x[i];
  } else {
    for (int64_t i = 0; i < n; ++i)
      y[i] = alpha * x[i] + beta * y[i];
  }
}

template <typename T>
void unary_forward(Unary f, int64_t n, const T* x, T* y) {
  switch (f) {
    case Unary::Relu:
      for (int64_t i = 0; i < n; ++i)
        y[i] = x[i] > T(0) ? x[i] : T(0);
      break;
    case Unary::Tanh:
      for (int64_t i = 0; i < n; ++i)
        y[i] = std::tanh(x[i]);
      break;
    case Unary::Sigmoid:
      for (int64_t i = 0; i < n; ++i)
        y[i] = T(1) / (T(1) + std::exp(-x[i]));
      break;
  }
}

template <typename T>
void unary_backward(Unary f, int64_t n, const T* y, const T* dy, T* dx) {
  switch (f) {
    case Unary::Relu:
      for (int64_t i = 0; i < n; ++i)
        dx[i] = y[i] > T(0) ? dy[i] : T(0);
      break;
    case Unary::Tanh:
      for (int64_t i = 0; i < n; ++i)
        dx[i] = dy[i] * (T(1) - y[i] * y[i]);
      break;
    case Unary::Sigmoid:
      for (int64_t i = 0; i < n; ++i)
        dx[i] = dy[i] * y[i] * (T(1) - y[i]);
      break;
  }
}

template <typename T>
void bias_relu(int64_t rows, int64_t cols, const T* bias, T* y) {
  for (int64_t r = 0; r < rows; ++r) {
    T* yr = y + r * cols;
    for (int64_t c = 0; c < cols; ++c)
      yr[c] = std::max(yr[c] + bias[c], T(0));
  }
}

/// Sum of a contiguous run, in double with eight independent lanes (vectorisable, and no long
/// dependency chain through one accumulator).
template <typename T>
double contiguous_sum(const T* x, int64_t n) {
  double lanes[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j)
      lanes[j] += x[i + j];
  for (; i < n; ++i)
    lanes[0] += x[i];
  double total = 0;
  for (double lane : lanes)
    total += lane;
  return total;
}

template <typename T>
void reduce_sum(int64_t outer, int64_t reduce, int64_t inner, T scale, const T* x, T beta, T* out) {
  // Accumulate in double for float too: sums over a batch must not drift with its size.
  auto store = [&](T* slot, double sum) {
    const T value = scale * static_cast<T>(sum);
    *slot = beta == T(0) ? value : value + beta * *slot;
  };
  if (inner == 1) {
    for (int64_t o = 0; o < outer; ++o)
      store(out + o, contiguous_sum(x + o * reduce, reduce));
    return;
  }
  std::vector<double> acc(static_cast<size_t>(inner));
  for (int64_t o = 0; o < outer; ++o) {
    std::fill(acc.begin(), acc.end(), 0.0);
    const T* xo = x + o * reduce * inner;
    for (int64_t r = 0; r < reduce; ++r) {
      const T* row = xo + r * inner;
      for (int64_t i = 0; i < inner; ++i)
        acc[i] += row[i];
    }
    for (int64_t i = 0; i < inner; ++i)
      store(out + o * inner + i, acc[i]);
  }
}

template <typename T>
void expand(int64_t outer, int64_t reduce, int64_t inner, T scale, const T* g, T* out) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t r = 0; r < reduce; ++r) {
      T* row = out + (o * reduce + r) * inner;
      for (int64_t i = 0; i < inner; ++i)
        row[i] = scale * g[o * inner + i];
    }
}

template <typename T>
using ConstArrayMap = Eigen::Map<const Eigen::Array<T, Eigen::Dynamic, 1>>;
template <typename T>
using ArrayMap = Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>>;

/// log(sum(exp(x))) of one row, stable for large values; Eigen vectorises the exp.
template <typename T>
T row_logsumexp(const T* x, int64_t cols) {
  ConstArrayMap<T> row(x, cols);
  const T mx = row.maxCoeff();
  if (!std::isfinite(mx)) return mx;  // -inf or nan rows propagate honestly
  return mx + std::log((row - mx).exp().sum());
}

template <typename T>
void log_softmax_forward(int64_t rows, int64_t cols, const T* x, T* y) {
  for (int64_t r = 0; r < rows; ++r) {
    T lse = row_logsumexp(x + r * cols, cols);
    for (int64_t c = 0; c < cols; ++c)
      y[r * cols + c] = x[r * cols + c] - lse;
  }
}

template <typename T>
void log_softmax_backward(int64_t rows, int64_t cols, const T* y, const T* dy, T* dx) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* yr = y + r * cols;
    const T* dyr = dy + r * cols;
    T s = 0;
    for (int64_t c = 0; c < cols; ++c)
      s += dyr[c];
    ArrayMap<T>(dx + r * cols, cols) =
        ConstArrayMap<T>(dyr, cols) - ConstArrayMap<T>(yr, cols).exp() * s;
  }
}

void check_labels(int64_t rows, int64_t cols, const int64_t* labels) {
  for (int64_t r = 0; r < rows; ++r)
    if (labels[r] < 0 || labels[r] >= cols)
      throw ValueError("cross_entropy: label " + std::to_string(labels[r]) + " at row " +
                       std::to_string(r) + " is outside [0, " + std::to_string(cols) + ")");
}

template <typename T>
void cross_entropy_forward(int64_t rows, int64_t cols, const T* x, const int64_t* labels, T* lse,
                           T* loss) {
  check_labels(rows, cols, labels);
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    lse[r] = row_logsumexp(x + r * cols, cols);
    total += lse[r] - x[r * cols + labels[r]];
  }
  loss[0] = static_cast<T>(total / static_cast<double>(rows));
}

template <typename T>
void cross_entropy_backward(int64_t rows, int64_t cols, const T* x, const int64_t* labels,
                            const T* lse, const T* grad_loss, T* dx) {
  const T scale = grad_loss[0] / static_cast<T>(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* dr = dx + r * cols;
    ArrayMap<T>(dr, cols) = scale * (ConstArrayMap<T>(xr, cols) - lse[r]).exp();
    dr[labels[r]] -= scale;
  }
}

template <typename T>
void argmax(int64_t outer, int64_t reduce, int64_t inner, const T* x, int64_t* out) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const T* base = x + o * reduce * inner + i;
      int64_t best = 0;
      for (int64_t r = 1; r < reduce; ++r)
        if (base[r * inner] > base[best * inner]) best = r;
      out[o * inner + i] = best;
    }
}

template <typename T>
void equal(int64_t n, const T* a, const T* b, int64_t* out) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = a[i] == b[i] ? 1 : 0;
}

template <typename T>
void batch_norm_train(int64_t rows, int64_t cols, const T* x, const T* gamma, const T* beta,
                      double eps, double momentum, T* running_mean, T* running_var, T* y,
                      T* save_mean, T* save_invstd) {
  for (int64_t c = 0; c < cols; ++c) {
    double mean = 0, sq = 0;
    for (int64_t r = 0; r < rows; ++r)
      mean += x[r * cols + c];
    mean /= static_cast<double>(rows);
    for (int64_t r = 0; r < rows; ++r) {
      double d = x[r * cols + c] - mean;
      sq += d * d;
    }
    double var = sq / static_cast<double>(rows);
    double invstd = 1.0 / std::sqrt(var + eps);
    save_mean[c] = static_cast<T>(mean);
    save_invstd[c] = static_cast<T>(invstd);
    double unbiased = rows > 1 ? sq / static_cast<double>(rows - 1) : var;
    running_mean[c] = static_cast<T>((1 - momentum) * running_mean[c] + momentum * mean);
    running_var[c] = static_cast<T>((1 - momentum) * running_var[c] + momentum * unbiased);
    for (int64_t r = 0; r < rows; ++r)
      y[r * cols + c] = static_cast<T>((x[r * cols + c] - mean) * invstd * gamma[c] + beta[c]);
  }
}

template <typename T>
void batch_norm_eval(int64_t rows, int64_t cols, const T* x, const T* gamma, const T* beta,
                     const T* running_mean, const T* running_var, double eps, T* y) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      T invstd = static_cast<T>(1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps));
      y[r * cols + c] = (x[r * cols + c] - running_mean[c]) * invstd * gamma[c] + beta[c];
    }
}

template <typename T>
void batch_norm_backward(int64_t rows, int64_t cols, const T* x, const T* gamma, const T* mean,
                         const T* invstd, const T* dy, T* dx, T* dgamma, T* dbeta) {
  for (int64_t c = 0; c < cols; ++c) {
    double sum_dy = 0, sum_dy_xhat = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double xhat = (x[r * cols + c] - mean[c]) * invstd[c];
      sum_dy += dy[r * cols + c];
      sum_dy_xhat += dy[r * cols + c] * xhat;
    }
    if (dgamma) dgamma[c] = static_cast<T>(sum_dy_xhat);
    if (dbeta) dbeta[c] = static_cast<T>(sum_dy);
    if (!dx) continue;
    const double n = static_cast<double>(rows), k = gamma[c] * invstd[c] / n;
    for (int64_t r = 0; r < rows; ++r) {
      double xhat = (x[r * cols + c] - mean[c]) * invstd[c];
      dx[r * cols + c] = static_cast<T>(k * (n * dy[r * cols + c] - sum_dy - xhat * sum_dy_xhat));
    }
  }
}

/// torch.optim.SGD for one parameter, with the branches hoisted out of the loop so that each
/// variant is a straight vectorisable pass.
template <typename T, bool kNesterov, bool kFirstStep>
void sgd_momentum(int64_t n, T* p, const T* g, T* buf, T lr, T wd, T mom, T damp) {
  for (int64_t i = 0; i < n; ++i) {
    const T d = g[i] + wd * p[i];
    const T b = kFirstStep ? d : mom * buf[i] + (T(1) - damp) * d;
    buf[i] = b;
    p[i] -= lr * (kNesterov ? d + mom * b : b);
  }
}

/// Runs fn(begin, end) over [0, n) in pool-sized chunks when n is large enough to pay for it.
template <typename Fn>
void parallel_range(int64_t n, Fn&& fn) {
  constexpr int64_t kMinChunk = 1 << 15;
  ThreadPool& pool = ThreadPool::global();
  const int64_t chunks = std::min<int64_t>(pool.size(), n / kMinChunk);
  if (chunks <= 1) return fn(int64_t(0), n);
  const int64_t step = (n / chunks + 15) / 16 * 16;
  pool.run(static_cast<int>(chunks), [&](int i) {
    const int64_t lo = i * step;
    if (lo < n) fn(lo, std::min(n, lo + step));
  });
}

template <typename T>
void sgd_update(int64_t n, T* p, const T* g, T* buf, const SGDParams& o) {
  const T lr = T(o.lr), wd = T(o.weight_decay), mom = T(o.momentum), damp = T(o.dampening);
  parallel_range(n, [&](int64_t lo, int64_t hi) {
    const int64_t len = hi - lo;
    T *pp = p + lo, *bb = buf ? buf + lo : nullptr;
    const T* gg = g + lo;
    if (mom == T(0)) {
      for (int64_t i = 0; i < len; ++i)
        pp[i] -= lr * (gg[i] + wd * pp[i]);
    } else if (o.first_step) {
      (o.nesterov ? sgd_momentum<T, true, true> : sgd_momentum<T, false, true>)(len, pp, gg, bb, lr,
                                                                                wd, mom, damp);
    } else {
      (o.nesterov ? sgd_momentum<T, true, false>
                  : sgd_momentum<T, false, false>)(len, pp, gg, bb, lr, wd, mom, damp);
    }
  });
}

template <typename T>
void adam_update(int64_t n, T* p, const T* g, T* m, T* v, const AdamParams& o) {
  const T b1 = T(o.beta1), b2 = T(o.beta2), wd = T(o.weight_decay);
  const T bc1 = T(1 - std::pow(o.beta1, static_cast<double>(o.step)));
  const T bc2_sqrt = T(std::sqrt(1 - std::pow(o.beta2, static_cast<double>(o.step))));
  const T step_size = T(o.lr) / bc1, eps = T(o.eps);
  parallel_range(n, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      T d = g[i] + wd * p[i];
      m[i] = b1 * m[i] + (T(1) - b1) * d;
      v[i] = b2 * v[i] + (T(1) - b2) * d * d;
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
    }
  });
}

#define CLARENA_TYPED(ptr) static_cast<T*>(ptr)
#define CLARENA_CTYPED(ptr) static_cast<const T*>(ptr)

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
      kernels::gemm<T>(ta, tb, m, n, k, T(alpha), CLARENA_CTYPED(a), CLARENA_CTYPED(b), T(beta),
                       CLARENA_TYPED(c));
    });
  }

  void binary(Binary op, Broadcast bc, DType t, int64_t rows, int64_t cols, const void* a,
              const void* b, void* out) override {
    dispatch_float(t, "binary", [&]<typename T>(T*) {
      kernels::binary<T>(op, bc, rows, cols, CLARENA_CTYPED(a), CLARENA_CTYPED(b),
                         CLARENA_TYPED(out));
    });
  }
  void axpby(DType t, int64_t n, double alpha, const void* x, double beta, void* y) override {
    dispatch_float(t, "axpby", [&]<typename T>(T*) {
      kernels::axpby<T>(n, T(alpha), CLARENA_CTYPED(x), T(beta), CLARENA_TYPED(y));
    });
  }
  void unary_forward(Unary f, DType t, int64_t n, const void* x, void* y) override {
    dispatch_float(t, "unary", [&]<typename T>(T*) {
      kernels::unary_forward<T>(f, n, CLARENA_CTYPED(x), CLARENA_TYPED(y));
    });
  }
  void unary_backward(Unary f, DType t, int64_t n, const void* y, const void* dy,
                      void* dx) override {
    dispatch_float(t, "unary_backward", [&]<typename T>(T*) {
      kernels::unary_backward<T>(f, n, CLARENA_CTYPED(y), CLARENA_CTYPED(dy), CLARENA_TYPED(dx));
    });
  }
  void bias_relu(DType t, int64_t rows, int64_t cols, const void* bias, void* y) override {
    dispatch_float(t, "bias_relu", [&]<typename T>(T*) {
      kernels::bias_relu<T>(rows, cols, CLARENA_CTYPED(bias), CLARENA_TYPED(y));
    });
  }

  void reduce_sum(DType t, int64_t outer, int64_t reduce, int64_t inner, double scale,
                  const void* x, double beta, void* out) override {
    dispatch_float(t, "sum", [&]<typename T>(T*) {
      kernels::reduce_sum<T>(outer, reduce, inner, T(scale), CLARENA_CTYPED(x), T(beta),
                             CLARENA_TYPED(out));
    });
  }
  void expand(DType t, int64_t outer, int64_t reduce, int64_t inner, double scale, const void* g,
              void* out) override {
    dispatch_float(t, "expand", [&]<typename T>(T*) {
      kernels::expand<T>(outer, reduce, inner, T(scale), CLARENA_CTYPED(g), CLARENA_TYPED(out));
    });
  }

  void log_softmax_forward(DType t, int64_t rows, int64_t cols, const void* x, void* y) override {
    dispatch_float(t, "log_softmax", [&]<typename T>(T*) {
      kernels::log_softmax_forward<T>(rows, cols, CLARENA_CTYPED(x), CLARENA_TYPED(y));
    });
  }
  void log_softmax_backward(DType t, int64_t rows, int64_t cols, const void* y, const void* dy,
                            void* dx) override {
    dispatch_float(t, "log_softmax_backward", [&]<typename T>(T*) {
      kernels::log_softmax_backward<T>(rows, cols, CLARENA_CTYPED(y), CLARENA_CTYPED(dy),
                                       CLARENA_TYPED(dx));
    });
  }
  void cross_entropy_forward(DType t, int64_t rows, int64_t cols, const void* logits,
                             const int64_t* labels, void* lse, void* loss) override {
    dispatch_float(t, "cross_entropy", [&]<typename T>(T*) {
      kernels::cross_entropy_forward<T>(rows, cols, CLARENA_CTYPED(logits), labels,
                                        CLARENA_TYPED(lse), CLARENA_TYPED(loss));
    });
  }
  void cross_entropy_backward(DType t, int64_t rows, int64_t cols, const void* logits,
                              const int64_t* labels, const void* lse, const void* grad_loss,
                              void* dlogits) override {
    dispatch_float(t, "cross_entropy_backward", [&]<typename T>(T*) {
      kernels::cross_entropy_backward<T>(rows, cols, CLARENA_CTYPED(logits), labels,
                                         CLARENA_CTYPED(lse), CLARENA_CTYPED(grad_loss),
                                         CLARENA_TYPED(dlogits));
    });
  }

  void argmax(DType t, int64_t outer, int64_t reduce, int64_t inner, const void* x,
              int64_t* out) override {
    dispatch_float(t, "argmax", [&]<typename T>(T*) {
      kernels::argmax<T>(outer, reduce, inner, CLARENA_CTYPED(x), out);
    });
  }
  void equal(DType t, int64_t n, const void* a, const void* b, int64_t* out) override {
    if (t == DType::Int64) {
      kernels::equal<int64_t>(n, static_cast<const int64_t*>(a), static_cast<const int64_t*>(b),
                              out);
      return;
    }
    dispatch_float(t, "equal", [&]<typename T>(T*) {
      kernels::equal<T>(n, CLARENA_CTYPED(a), CLARENA_CTYPED(b), out);
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
      kernels::batch_norm_train<T>(rows, cols, CLARENA_CTYPED(x), CLARENA_CTYPED(gamma),
                                   CLARENA_CTYPED(beta), eps, momentum, CLARENA_TYPED(running_mean),
                                   CLARENA_TYPED(running_var), CLARENA_TYPED(y),
                                   CLARENA_TYPED(save_mean), CLARENA_TYPED(save_invstd));
    });
  }
  void batch_norm_eval(DType t, int64_t rows, int64_t cols, const void* x, const void* gamma,
                       const void* beta, const void* running_mean, const void* running_var,
                       double eps, void* y) override {
    dispatch_float(t, "batch_norm", [&]<typename T>(T*) {
      kernels::batch_norm_eval<T>(rows, cols, CLARENA_CTYPED(x), CLARENA_CTYPED(gamma),
                                  CLARENA_CTYPED(beta), CLARENA_CTYPED(running_mean),
                                  CLARENA_CTYPED(running_var), eps, CLARENA_TYPED(y));
    });
  }
  void batch_norm_backward(DType t, int64_t rows, int64_t cols, const void* x, const void* gamma,
                           const void* save_mean, const void* save_invstd, const void* dy, void* dx,
                           void* dgamma, void* dbeta) override {
    dispatch_float(t, "batch_norm_backward", [&]<typename T>(T*) {
      kernels::batch_norm_backward<T>(rows, cols, CLARENA_CTYPED(x), CLARENA_CTYPED(gamma),
                                      CLARENA_CTYPED(save_mean), CLARENA_CTYPED(save_invstd),
                                      CLARENA_CTYPED(dy), CLARENA_TYPED(dx), CLARENA_TYPED(dgamma),
                                      CLARENA_TYPED(dbeta));
    });
  }

  void sgd_update(DType t, int64_t n, void* param, const void* grad, void* momentum_buf,
                  const SGDParams& o) override {
    dispatch_float(t, "sgd", [&]<typename T>(T*) {
      kernels::sgd_update<T>(n, CLARENA_TYPED(param), CLARENA_CTYPED(grad),
                             CLARENA_TYPED(momentum_buf), o);
    });
  }
  void adam_update(DType t, int64_t n, void* param, const void* grad, void* exp_avg,
                   void* exp_avg_sq, const AdamParams& o) override {
    dispatch_float(t, "adam", [&]<typename T>(T*) {
      kernels::adam_update<T>(n, CLARENA_TYPED(param), CLARENA_CTYPED(grad), CLARENA_TYPED(exp_avg),
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
