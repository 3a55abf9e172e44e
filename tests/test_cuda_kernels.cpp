// The CUDA backend against the CPU backend, kernel by kernel.
//
// Every kernel runs on fresh random inputs (never zeros) over a grid of sizes including 1, odd,
// non-power-of-two and one large size; device outputs are poisoned (NaN, or a sentinel for int64)
// before the run so an element the kernel forgot to write fails; results must satisfy
// |gpu - cpu| <= atol + rtol * |cpu|, which NaN never does. Every GPU test skips cleanly when no
// CUDA device is visible; the bad-device-index and TF32-switch tests run without one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "clarena/core/errors.h"
#include "clarena/kernels/backend.h"
#include "clarena/kernels/cuda_backend.h"

namespace {

using clarena::DType;
using namespace clarena::kernels;

#define SKIP_WITHOUT_GPU() \
  if (clarena::kernels::cuda_device_count_impl() == 0) GTEST_SKIP() << "no CUDA device"

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

template <typename T>
void expect_close(const std::vector<T>& ref, const std::vector<T>& got, double atol, double rtol,
                  const std::string& what) {
  ASSERT_EQ(ref.size(), got.size()) << what;
  size_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double r = static_cast<double>(ref[i]), g = static_cast<double>(got[i]);
    if (!(std::abs(g - r) <= atol + rtol * std::abs(r))) {  // NaN fails here
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

// ---------------------------------------------------------------------------------------------
// Tests that need no device.

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

// ---------------------------------------------------------------------------------------------
// Allocator, counters, error paths.

TEST(CudaAllocator, FreedBlockIsReusedWithoutMalloc) {
  SKIP_WITHOUT_GPU();
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

TEST(CudaAllocator, OutOfMemoryThrowsAfterFlush) {
  SKIP_WITHOUT_GPU();
  Backend& b = gpu();
  EXPECT_THROW(b.allocate(size_t{1} << 50), clarena::OutOfMemory);
  void* p = b.allocate(256);  // still usable afterwards
  EXPECT_NE(p, nullptr);
  b.deallocate(p, 256);
  cuda_empty_cache();
  EXPECT_EQ(cuda_bytes_cached(0), 0);
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

// ---------------------------------------------------------------------------------------------
// [rows, cols] kernels.

using Rc = std::tuple<int64_t, int64_t>;
class RowsCols : public ::testing::TestWithParam<Rc> {};

const std::vector<Rc> kRowsCols = {{1, 1},    {1, 7},      {3, 1},     {7, 33},
                                   {33, 100}, {128, 10},   {65, 1000}, {5, 1025},
                                   {3, 5000}, {1025, 257}, {4096, 512}};

std::string rc_name(const ::testing::TestParamInfo<Rc>& info) {
  return "r" + std::to_string(std::get<0>(info.param)) + "_c" +
         std::to_string(std::get<1>(info.param));
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
  if (n > 1) {  // overlapping copy has memmove semantics
    std::vector<T> ref = x;
    std::memmove(ref.data() + 1, ref.data(), (n - 1) * sizeof(T));
    gpu().copy(dx.get() + 1, dx.get(), (n - 1) * sizeof(T));
    expect_equal(ref, dx.download(), "overlapping copy");
  }
}

TEST_P(RowsCols, CopyBlock) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  // A [rows, cols] block at column offset 2 of a [rows, cols + 5] source into a [rows, cols + 3]
  // destination at column offset 1.
  const int64_t src_ld = cols + 5, dst_ld = cols + 3;
  const auto src = random_vec<float>(rows * src_ld, seed_of(rows, cols, 31));
  const auto dst0 = random_vec<float>(rows * dst_ld, seed_of(rows, cols, 32));
  std::vector<float> ref = dst0;
  cpu().copy_block(DType::Float32, rows, cols, src.data() + 2, src_ld, ref.data() + 1, dst_ld);
  DevBuf<float> ds(src), dd(dst0);
  gpu().copy_block(DType::Float32, rows, cols, ds.get() + 2, src_ld, dd.get() + 1, dst_ld);
  expect_equal(ref, dd.download(), "copy_block");
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
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-12;
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
}

TEST_P(RowsCols, Binary) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_binary<float>(rows, cols);
}

TEST_P(RowsCols, Axpby) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  const int64_t n = rows * cols;
  const auto x = random_vec<float>(n, seed_of(rows, cols, 4));
  const auto y0 = random_vec<float>(n, seed_of(rows, cols, 5));
  DevBuf<float> dx(x), dy(n);
  // beta == 0 overwrites: a NaN-poisoned y must not leak through.
  std::vector<float> ref(n, 0.0f);
  cpu().axpby(DType::Float32, n, 1.5, x.data(), 0.0, ref.data());
  dy.poison();
  gpu().axpby(DType::Float32, n, 1.5, dx.get(), 0.0, dy.get());
  expect_close(ref, dy.download(), 1e-6, 1e-6, "axpby beta=0");
  ref = y0;
  cpu().axpby(DType::Float32, n, -0.5, x.data(), 0.75, ref.data());
  dy.upload(y0);
  gpu().axpby(DType::Float32, n, -0.5, dx.get(), 0.75, dy.get());
  expect_close(ref, dy.download(), 1e-6, 1e-6, "axpby");
}

TEST_P(RowsCols, UnaryForwardBackward) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  const int64_t n = rows * cols;
  const auto x = random_vec<float>(n, seed_of(rows, cols, 6), -3, 3);
  const auto dy = random_vec<float>(n, seed_of(rows, cols, 7));
  for (Unary f : {Unary::Relu, Unary::Tanh, Unary::Sigmoid}) {
    const std::string what = "unary " + std::to_string(int(f));
    std::vector<float> y(n), dxr(n);
    cpu().unary_forward(f, DType::Float32, n, x.data(), y.data());
    DevBuf<float> dx_in(x), dy_out(n);
    dy_out.poison();
    gpu().unary_forward(f, DType::Float32, n, dx_in.get(), dy_out.get());
    expect_close(y, dy_out.download(), 1e-6, 1e-5, what + " forward");

    cpu().unary_backward(f, DType::Float32, n, y.data(), dy.data(), dxr.data());
    DevBuf<float> y_in(y), g_in(dy), g_out(n);
    g_out.poison();
    gpu().unary_backward(f, DType::Float32, n, y_in.get(), g_in.get(), g_out.get());
    expect_close(dxr, g_out.download(), 1e-6, 1e-5, what + " backward");
  }
}

TEST_P(RowsCols, BiasRelu) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  const int64_t n = rows * cols;
  const auto bias = random_vec<float>(cols, seed_of(rows, cols, 8));
  auto y = random_vec<float>(n, seed_of(rows, cols, 9));
  DevBuf<float> db(bias), dy(y);
  cpu().bias_relu(DType::Float32, rows, cols, bias.data(), y.data());
  gpu().bias_relu(DType::Float32, rows, cols, db.get(), dy.get());
  expect_close(y, dy.download(), 1e-6, 1e-6, "bias_relu");
}

template <typename T>
void check_log_softmax(int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-11;
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

template <typename T>
void check_cross_entropy(int64_t rows, int64_t cols) {
  const int64_t n = rows * cols;
  const double tol = std::is_same_v<T, float> ? 2e-5 : 1e-11;
  const auto x = random_vec<T>(n, seed_of(rows, cols, 12), -5, 5);
  const auto labels = random_labels(rows, cols, seed_of(rows, cols, 13));
  std::vector<T> lse(rows), loss(1);
  cpu().cross_entropy_forward(dtype_of<T>(), rows, cols, x.data(), labels.data(), lse.data(),
                              loss.data());
  DevBuf<T> dx(x), dlse(rows), dloss(1);
  DevBuf<int64_t> dlab(labels);
  dlse.poison();
  dloss.poison();
  gpu().cross_entropy_forward(dtype_of<T>(), rows, cols, dx.get(), dlab.get(), dlse.get(),
                              dloss.get());
  expect_close(lse, dlse.download(), tol, tol, "cross_entropy lse");
  expect_close(loss, dloss.download(), tol, tol, "cross_entropy loss");

  const std::vector<T> grad_loss = {T(1.7)};
  std::vector<T> ref(n);
  cpu().cross_entropy_backward(dtype_of<T>(), rows, cols, x.data(), labels.data(), lse.data(),
                               grad_loss.data(), ref.data());
  DevBuf<T> dg(grad_loss), out(n);
  out.poison();
  gpu().cross_entropy_backward(dtype_of<T>(), rows, cols, dx.get(), dlab.get(), dlse.get(),
                               dg.get(), out.get());
  expect_close(ref, out.download(), tol * 1e-2, 10 * tol, "cross_entropy backward");
}

TEST_P(RowsCols, CrossEntropy) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  check_cross_entropy<float>(rows, cols);
}

TEST_P(RowsCols, Argmax) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  const auto x = random_vec<float>(rows * cols, seed_of(rows, cols, 14));
  DevBuf<float> dx(x);
  // Along the rows' columns ([rows, cols, 1]) and along the rows ([1, rows, cols]).
  for (auto [outer, reduce, inner] : {std::tuple<int64_t, int64_t, int64_t>{rows, cols, 1},
                                      std::tuple<int64_t, int64_t, int64_t>{1, rows, cols}}) {
    std::vector<int64_t> ref(outer * inner);
    cpu().argmax(DType::Float32, outer, reduce, inner, x.data(), ref.data());
    DevBuf<int64_t> out(outer * inner);
    out.poison();
    gpu().argmax(DType::Float32, outer, reduce, inner, dx.get(), out.get());
    expect_equal(ref, out.download(), "argmax inner=" + std::to_string(inner));
  }
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

  auto fa = random_vec<float>(n, seed_of(rows, cols, 17));
  auto fb = fa;
  for (int64_t i = 0; i < n; i += 3)
    fb[i] += 1.0f;
  cpu().equal(DType::Float32, n, fa.data(), fb.data(), ref.data());
  DevBuf<float> dfa(fa), dfb(fb);
  out.poison();
  gpu().equal(DType::Float32, n, dfa.get(), dfb.get(), out.get());
  expect_equal(ref, out.download(), "equal float32");
}

TEST_P(RowsCols, BatchNorm) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  const int64_t n = rows * cols;
  const auto x = random_vec<float>(n, seed_of(rows, cols, 18), -2, 3);
  const auto gamma = random_vec<float>(cols, seed_of(rows, cols, 19), 0.5, 1.5);
  const auto beta = random_vec<float>(cols, seed_of(rows, cols, 20));
  const auto rm0 = random_vec<float>(cols, seed_of(rows, cols, 21));
  const auto rv0 = random_vec<float>(cols, seed_of(rows, cols, 22), 0.5, 2);
  const double eps = 1e-5, momentum = 0.1;
  const double atol = 1e-4 * std::sqrt(static_cast<double>(rows)), rtol = 1e-4;

  std::vector<float> y(n), mean(cols), invstd(cols), rm = rm0, rv = rv0;
  cpu().batch_norm_train(DType::Float32, rows, cols, x.data(), gamma.data(), beta.data(), eps,
                         momentum, rm.data(), rv.data(), y.data(), mean.data(), invstd.data());
  DevBuf<float> dx(x), dg(gamma), db(beta), drm(rm0), drv(rv0), dy(n), dmean(cols), dinv(cols);
  dy.poison();
  dmean.poison();
  dinv.poison();
  gpu().batch_norm_train(DType::Float32, rows, cols, dx.get(), dg.get(), db.get(), eps, momentum,
                         drm.get(), drv.get(), dy.get(), dmean.get(), dinv.get());
  expect_close(y, dy.download(), atol, rtol, "batch_norm train y");
  expect_close(mean, dmean.download(), 1e-5, 1e-5, "batch_norm save_mean");
  expect_close(invstd, dinv.download(), 1e-4, 1e-4, "batch_norm save_invstd");
  expect_close(rm, drm.download(), 1e-5, 1e-5, "batch_norm running_mean");
  expect_close(rv, drv.download(), 1e-5, 1e-4, "batch_norm running_var");

  std::vector<float> ye(n);
  cpu().batch_norm_eval(DType::Float32, rows, cols, x.data(), gamma.data(), beta.data(), rm0.data(),
                        rv0.data(), eps, ye.data());
  DevBuf<float> drm0(rm0), drv0(rv0);
  dy.poison();
  gpu().batch_norm_eval(DType::Float32, rows, cols, dx.get(), dg.get(), db.get(), drm0.get(),
                        drv0.get(), eps, dy.get());
  expect_close(ye, dy.download(), 1e-5, 1e-5, "batch_norm eval");

  const auto g = random_vec<float>(n, seed_of(rows, cols, 23));
  std::vector<float> gx(n), ggamma(cols), gbeta(cols);
  cpu().batch_norm_backward(DType::Float32, rows, cols, x.data(), gamma.data(), mean.data(),
                            invstd.data(), g.data(), gx.data(), ggamma.data(), gbeta.data());
  DevBuf<float> dgrad(g), dgx(n), dggamma(cols), dgbeta(cols), dm(mean), di(invstd);
  dgx.poison();
  dggamma.poison();
  dgbeta.poison();
  gpu().batch_norm_backward(DType::Float32, rows, cols, dx.get(), dg.get(), dm.get(), di.get(),
                            dgrad.get(), dgx.get(), dggamma.get(), dgbeta.get());
  // rows == 1 makes dx a difference of equal terms (~0): absolute tolerance covers it.
  expect_close(gx, dgx.download(), 1e-4, 1e-3, "batch_norm backward dx");
  expect_close(ggamma, dggamma.download(), atol, rtol, "batch_norm backward dgamma");
  expect_close(gbeta, dgbeta.download(), atol, rtol, "batch_norm backward dbeta");
  // Optional outputs: null pointers are skipped, the others still written.
  dgx.poison();
  gpu().batch_norm_backward(DType::Float32, rows, cols, dx.get(), dg.get(), dm.get(), di.get(),
                            dgrad.get(), dgx.get(), nullptr, nullptr);
  expect_close(gx, dgx.download(), 1e-4, 1e-3, "batch_norm backward dx only");
  dggamma.poison();
  dgbeta.poison();
  gpu().batch_norm_backward(DType::Float32, rows, cols, dx.get(), dg.get(), dm.get(), di.get(),
                            dgrad.get(), nullptr, dggamma.get(), dgbeta.get());
  expect_close(ggamma, dggamma.download(), atol, rtol, "batch_norm backward dgamma only");
  expect_close(gbeta, dgbeta.download(), atol, rtol, "batch_norm backward dbeta only");
}

TEST_P(RowsCols, Sgd) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  const int64_t n = rows * cols;
  const auto p0 = random_vec<float>(n, seed_of(rows, cols, 24));
  const auto g = random_vec<float>(n, seed_of(rows, cols, 25));
  const auto b0 = random_vec<float>(n, seed_of(rows, cols, 26));
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
    std::vector<float> p = p0, buf = b0;
    cpu().sgd_update(DType::Float32, n, p.data(), g.data(), buf.data(), configs[k]);
    DevBuf<float> dp(p0), dg(g), dbuf(b0);
    gpu().sgd_update(DType::Float32, n, dp.get(), dg.get(), dbuf.get(), configs[k]);
    expect_close(p, dp.download(), 1e-7, 1e-6, "sgd param, config " + std::to_string(k));
    expect_close(buf, dbuf.download(), 1e-7, 1e-6, "sgd buffer, config " + std::to_string(k));
  }
}

TEST_P(RowsCols, Adam) {
  SKIP_WITHOUT_GPU();
  const auto [rows, cols] = GetParam();
  const int64_t n = rows * cols;
  const auto p0 = random_vec<float>(n, seed_of(rows, cols, 27));
  const auto g = random_vec<float>(n, seed_of(rows, cols, 28));
  const auto m0 = random_vec<float>(n, seed_of(rows, cols, 29), -0.1, 0.1);
  const auto v0 = random_vec<float>(n, seed_of(rows, cols, 30), 0.01, 0.2);
  for (int64_t step : {int64_t{1}, int64_t{7}}) {
    AdamParams o;
    o.step = step;
    o.weight_decay = step == 7 ? 0.01 : 0.0;
    std::vector<float> p = p0, m = m0, v = v0;
    cpu().adam_update(DType::Float32, n, p.data(), g.data(), m.data(), v.data(), o);
    DevBuf<float> dp(p0), dg(g), dm(m0), dv(v0);
    gpu().adam_update(DType::Float32, n, dp.get(), dg.get(), dm.get(), dv.get(), o);
    const std::string what = "adam step " + std::to_string(step);
    expect_close(p, dp.download(), 1e-6, 1e-5, what + " param");
    expect_close(m, dm.download(), 1e-7, 1e-6, what + " exp_avg");
    expect_close(v, dv.download(), 1e-7, 1e-6, what + " exp_avg_sq");
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, RowsCols, ::testing::ValuesIn(kRowsCols), rc_name);

// ---------------------------------------------------------------------------------------------
// Reductions over [outer, reduce, inner].

using Ori = std::tuple<int64_t, int64_t, int64_t>;
class Reduce : public ::testing::TestWithParam<Ori> {};

std::string ori_name(const ::testing::TestParamInfo<Ori>& info) {
  return "o" + std::to_string(std::get<0>(info.param)) + "_r" +
         std::to_string(std::get<1>(info.param)) + "_i" + std::to_string(std::get<2>(info.param));
}

template <typename T>
void check_reduce(int64_t outer, int64_t reduce, int64_t inner) {
  const int64_t n = outer * reduce * inner, m = outer * inner;
  const double eps = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  const double atol = 20 * eps * std::sqrt(static_cast<double>(reduce)) + eps, rtol = 10 * eps;
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
  expect_close(ref, de.download(), eps, eps, "expand");
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
                                           Ori{1, 1025, 2049}),
                         ori_name);

// ---------------------------------------------------------------------------------------------
// GEMM through cuBLAS, every transpose combination, overwrite and accumulate.

class Gemm : public ::testing::TestWithParam<Ori> {};

template <typename T>
void check_gemm(int64_t m, int64_t n, int64_t k, double rtol_scale = 1.0) {
  const double eps = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  const double atol = 100 * eps * std::sqrt(static_cast<double>(k)) * rtol_scale,
               rtol = 100 * eps * rtol_scale;
  const auto a = random_vec<T>(m * k, seed_of(m, n, k));
  const auto b = random_vec<T>(k * n, seed_of(m, n, k + 1));
  const auto c0 = random_vec<T>(m * n, seed_of(m, n, k + 2));
  DevBuf<T> da(a), db(b), dc(m * n);
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (double beta : {0.0, 1.0}) {
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
  set_tf32_enabled(true);
  check_gemm<float>(m, n, k, 2000.0);  // TF32 keeps 10 mantissa bits
  set_tf32_enabled(false);
}

INSTANTIATE_TEST_SUITE_P(Sizes, Gemm,
                         ::testing::Values(Ori{1, 1, 1}, Ori{1, 7, 3}, Ori{3, 5, 7},
                                           Ori{33, 17, 65}, Ori{128, 256, 784}, Ori{257, 129, 1000},
                                           Ori{1, 100, 4096}, Ori{4096, 10, 256}, Ori{1000, 1, 33}),
                         ori_name);

// ---------------------------------------------------------------------------------------------
// Float64: the same kernels instantiated for double, at a few sizes.

TEST(CudaFloat64, KernelsMatchCpu) {
  SKIP_WITHOUT_GPU();
  for (auto [rows, cols] : {Rc{1, 1}, Rc{33, 100}, Rc{5, 1025}}) {
    check_fill_copy<double>(rows, cols);
    check_binary<double>(rows, cols);
    check_log_softmax<double>(rows, cols);
    check_cross_entropy<double>(rows, cols);
  }
  check_reduce<double>(3, 1000, 17);
  check_reduce<double>(2, 100000, 1);
  check_gemm<double>(33, 17, 65);
}

}  // namespace
