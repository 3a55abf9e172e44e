// bench_kernels: the backend's kernels on their own. GEMM at the training step's exact shapes
// (GFLOP/s, next to Eigen's GEMM called directly on the CPU), and the element-wise, reduction,
// optimizer and cross-entropy kernels in GB/s next to a plain copy of the same bytes (the
// bandwidth ceiling), on every available device.
//
// Timing: Backend::time_ms, i.e. CUDA events around the work on the GPU (no host clock), a
// steady clock around synchronisations on the CPU. Each iteration runs the kernel `reps` times
// back to back between one pair of events. Streaming rows report (on the device's clock, not
// the CPU time benchmark also prints):
//   GB/s       bytes read + written per second (the bytes each kernel must move, counted below)
//   pct_copy   that over the device-to-device copy bandwidth measured at start-up, in %
//   pct_4800   (CUDA) that over the H200's datasheet bandwidth of 4.8 TB/s, in %
// CPU GEMM rows (ours and Eigen's) also report
//   peak_frac  GFLOP/s over this machine's float32 FMA peak on clarena::num_threads() threads,
//              measured at start-up (printed to stderr), as a fraction: the yardstick the
//              issue uses (Eigen's GEMM reaches ~60% of FMA peak, MKL's ~72%)
//
// With CLARENA_REQUIRE_CUDA=1 and no usable device, prints the reason and exits with status 3
// (bench/gpu_check.sh treats that as "no device").
#include <benchmark/benchmark.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif
#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "clarena/clarena.h"
#include "clarena/core/threads.h"
#include "clarena/kernels/backend.h"
#ifdef CLARENA_HAS_CUDA
#include "clarena/kernels/cuda_backend.h"
#endif

namespace clarena::bench {
namespace {

using kernels::Backend;

constexpr double kH200Bandwidth = 4.8e12;  // bytes/s, datasheet

/// Measured device-copy bandwidth (bytes read + written per second), per device type; set in
/// main before the benchmarks run.
double& copy_bandwidth(Device device) {
  static double measured[2] = {0, 0};
  return measured[device.is_cpu() ? 0 : 1];
}

/// Times `body` (run `reps` times back to back) per iteration on the backend's clock; returns
/// the mean seconds per call.
double timed(benchmark::State& state, Backend& be, const std::function<void()>& body,
             int reps = 1) {
  body();  // warm-up: first-touch allocations, module load
  be.synchronize();
  double total = 0;
  int64_t calls = 0;
  for (auto _ : state) {
    const double ms = be.time_ms([&] {
      for (int r = 0; r < reps; ++r)
        body();
    });
    state.SetIterationTime(ms * 1e-3 / reps);
    total += ms * 1e-3;
    calls += reps;
  }
  return calls > 0 ? total / static_cast<double>(calls) : 0;
}

// ---- float32 FMA peak ---------------------------------------------------------------------
// kChains independent FMA chains on the widest vector the build targets: enough chains to
// cover the FMA latency (4 cycles) times the FMA ports (2), so the loop is throughput-bound.
constexpr int kChains = 12;
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr const char* kFmaIsa = "AVX-512";
#elif defined(__AVX2__) && defined(__FMA__)
constexpr int kLanes = 8;
constexpr const char* kFmaIsa = "AVX2+FMA";
#else
constexpr int kLanes = 1;
constexpr const char* kFmaIsa = "scalar";
#endif

/// Runs `iters` rounds of kChains FMAs (2 FLOPs per lane each); returns a sum so the work
/// stays live.
float fma_chains(int64_t iters) {
#if defined(__AVX512F__)
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c)
    acc[c] = _mm512_set1_ps(static_cast<float>(c));
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c)
      acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  for (int c = 1; c < kChains; ++c)
    acc[0] = _mm512_add_ps(acc[0], acc[c]);
  // (Not _mm512_reduce_add_ps: GCC 12's header trips -Wuninitialized.)
  alignas(64) float out[16];
  _mm512_store_ps(out, acc[0]);
  float sum = 0;
  for (float v : out)
    sum += v;
  return sum;
#elif defined(__AVX2__) && defined(__FMA__)
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  __m256 acc[kChains];
  for (int c = 0; c < kChains; ++c)
    acc[c] = _mm256_set1_ps(static_cast<float>(c));
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c)
      acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  for (int c = 1; c < kChains; ++c)
    acc[0] = _mm256_add_ps(acc[0], acc[c]);
  alignas(32) float out[8];
  _mm256_store_ps(out, acc[0]);
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
#else
  float acc[kChains];
  for (int c = 0; c < kChains; ++c)
    acc[c] = static_cast<float>(c);
  for (int64_t i = 0; i < iters; ++i)
    for (int c = 0; c < kChains; ++c)
      acc[c] = acc[c] * 0.999999f + 1e-7f;
  float sum = 0;
  for (float v : acc)
    sum += v;
  return sum;
#endif
}

struct FmaPeak {
  double per_thread = 0;  // FLOP/s on one thread
  double all = 0;         // FLOP/s on `threads` threads at once
  int threads = 1;
};

/// Set in main before the benchmarks run.
FmaPeak& fma_peak() {
  static FmaPeak peak;
  return peak;
}

/// Best of 3 runs (~0.2 s each) of fma_chains on `threads` threads at once, in FLOP/s.
double measure_fma(int threads, int64_t iters) {
  using clock = std::chrono::steady_clock;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<float> sink(static_cast<size_t>(threads));
    std::vector<std::thread> pool;
    const auto start = clock::now();
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&sink, t, iters] { sink[static_cast<size_t>(t)] = fma_chains(iters); });
    for (std::thread& th : pool)
      th.join();
    const double s = std::chrono::duration<double>(clock::now() - start).count();
    benchmark::DoNotOptimize(sink.data());
    const double flops = 2.0 * kLanes * kChains * static_cast<double>(iters) * threads;
    if (flops / s > best) best = flops / s;
  }
  return best;
}

FmaPeak measure_fma_peak() {
  // Calibrate the iteration count to ~0.2 s on one thread.
  const int64_t probe = int64_t{1} << 20;
  const auto start = std::chrono::steady_clock::now();
  benchmark::DoNotOptimize(fma_chains(probe));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t iters = std::max<int64_t>(probe, static_cast<int64_t>(probe * 0.2 / s));
  FmaPeak peak;
  peak.threads = std::max(1, num_threads());
  peak.per_thread = measure_fma(1, iters);
  peak.all = measure_fma(peak.threads, iters);
  return peak;
}

/// GEMM rows on the CPU: the row's GFLOP/s over the N-thread FMA peak (a rate counter, so
/// benchmark divides by the time the same way it does for GFLOP/s).
void set_peak_frac(benchmark::State& state, double flops_per_iter) {
  if (fma_peak().all > 0)
    state.counters["peak_frac"] = benchmark::Counter(
        flops_per_iter * static_cast<double>(state.iterations()) / fma_peak().all,
        benchmark::Counter::kIsRate);
}

Tensor random(const Shape& shape, Device device, uint64_t seed = 1) {
  Generator gen(seed);
  return Tensor::uniform(shape, -1, 1, gen, DType::Float32, device);
}

struct GemmShape {
  const char* name;
  bool ta, tb;
  int64_t m, n, k;
};

/// Every product of one step of the default model (784→256→256 + 256→10) at batch B. A
/// trainable step runs all eight; a frozen one the three forwards and dW_head; bench/report.py
/// sums Eigen's times over these sets to get each mode's GEMM floor.
std::vector<GemmShape> step_gemms(int64_t b) {
  return {{"fwd_784x256", false, true, b, 256, 784}, {"fwd_256x256", false, true, b, 256, 256},
          {"fwd_256x10", false, true, b, 10, 256},   {"dW_784x256", true, false, 256, 784, b},
          {"dW_256x256", true, false, 256, 256, b},  {"dW_head", true, false, 10, 256, b},
          {"dX_256x256", false, false, b, 256, 256}, {"dX_head", false, false, b, 256, 10}};
}

void gemm_ours(benchmark::State& state, GemmShape s, Device device) {
  Backend& be = kernels::backend_for(device);
  Tensor a = random({s.ta ? s.k : s.m, s.ta ? s.m : s.k}, device, 1);
  Tensor b = random({s.tb ? s.n : s.k, s.tb ? s.k : s.n}, device, 2);
  Tensor c = Tensor::empty({s.m, s.n}, DType::Float32, device);
  timed(
      state, be,
      [&] {
        be.gemm(DType::Float32, s.ta, s.tb, s.m, s.n, s.k, 1.0, a.raw(), b.raw(), 0.0, c.raw());
      },
      device.is_cpu() ? 1 : 20);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * s.m * s.n * s.k * 1e-9 * state.iterations(),
                                                 benchmark::Counter::kIsRate);
  if (device.is_cpu()) set_peak_frac(state, 2.0 * s.m * s.n * s.k);
}

/// Eigen's own GEMM on the same row-major buffers: the floor our CPU wrapper must reach.
void gemm_eigen(benchmark::State& state, GemmShape s) {
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  M a = M::Random(s.ta ? s.k : s.m, s.ta ? s.m : s.k),
    b = M::Random(s.tb ? s.n : s.k, s.tb ? s.k : s.n);
  M c(s.m, s.n);
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    if (s.ta)
      c.noalias() = a.transpose() * b;
    else if (s.tb)
      c.noalias() = a * b.transpose();
    else
      c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * s.m * s.n * s.k * 1e-9 * state.iterations(),
                                                 benchmark::Counter::kIsRate);
  set_peak_frac(state, 2.0 * s.m * s.n * s.k);
}

struct ConvShape {
  const char* name;
  int64_t batch, c_in, c_out, size, kernel, stride, padding;
};

/// The small CNN's and ResNet-18's convolutions on 28×28 inputs (batch 32).
std::vector<ConvShape> conv_shapes() {
  return {
      {"cnn_1x32_28", 32, 1, 32, 28, 3, 1, 1},      {"cnn_32x64_14", 32, 32, 64, 14, 3, 1, 1},
      {"r18_64x64_14", 32, 64, 64, 14, 3, 1, 1},    {"r18_64x128_s2", 32, 64, 128, 14, 3, 2, 1},
      {"r18_64x64_7", 32, 64, 64, 7, 3, 1, 1},      {"r18_128x128_4", 32, 128, 128, 4, 3, 1, 1},
      {"r18_256x256_2", 32, 256, 256, 2, 3, 1, 1},  {"r18_1x1_64x128", 32, 64, 128, 14, 1, 2, 0},
      {"r18_256x512_s2", 32, 256, 512, 2, 3, 2, 1}, {"r18_512x512_1", 32, 512, 512, 1, 3, 1, 1}};
}

/// conv2d (im2col + GEMM) forward alone, or forward and the full backward (dx, dW, db: three
/// times the forward's FLOPs), in GFLOP/s of what its GEMMs multiply.
void conv(benchmark::State& state, ConvShape s, Device device, bool backward) {
  Backend& be = kernels::backend_for(device);
  Tensor x = random({s.batch, s.c_in, s.size, s.size}, device, 1);
  Tensor w = random({s.c_out, s.c_in, s.kernel, s.kernel}, device, 2);
  Tensor b = random({s.c_out}, device, 3);
  const Conv2dOptions o{{s.stride, s.stride}, {s.padding, s.padding}, {1, 1}, 1};
  const int64_t out = (s.size + 2 * s.padding - s.kernel) / s.stride + 1;
  x.requires_grad_(backward);
  w.requires_grad_(backward);
  b.requires_grad_(backward);
  Tensor dy = random({s.batch, s.c_out, out, out}, device, 4);
  timed(state, be, [&] {
    Tensor y = conv2d(x, w, b, o);
    if (backward) {
      y.backward(dy);
      x.zero_grad();
      w.zero_grad();
      b.zero_grad();
    }
  });
  // What the GEMMs multiply (taps that only read padding are not: see conv2d), per call.
  const int64_t flops_before = be.stats().gemm_flops;
  Tensor y = conv2d(x, w, b, o);
  if (backward) y.backward(dy);
  const double flops = static_cast<double>(be.stats().gemm_flops - flops_before);
  state.counters["FLOPs"] = flops;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
}

/// The convnets' memory-bound layers at their shapes in a batch-128 step: max pooling and
/// training-mode batch norm (BatchNorm2d), the forward alone or with its backward.
struct LayerShape {
  const char* name;
  int64_t channels, size;
  int64_t pool;  // 2: the cnn's 2x2 max pool; 3: resnet18's 3x3, stride 2, padding 1
};

void layer(benchmark::State& state, const std::string& op, LayerShape s, Device device,
           bool backward) {
  Backend& be = kernels::backend_for(device);
  Tensor x = random({128, s.channels, s.size, s.size}, device, 1);
  Tensor gamma = random({s.channels}, device, 2), beta = random({s.channels}, device, 3);
  Tensor mean = Tensor::zeros({s.channels}, DType::Float32, device);
  Tensor var = Tensor::ones({s.channels}, DType::Float32, device);
  x.requires_grad_(backward);
  gamma.requires_grad_(backward);
  beta.requires_grad_(backward);
  auto forward = [&] {
    if (op == "bn2d") return batch_norm(x, gamma, beta, mean, var, true);
    if (s.pool == 2) return max_pool2d(x, {2, 2});
    return max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
  };
  Tensor dy = forward().detach();
  timed(state, be, [&] {
    Tensor y = forward();
    if (backward) {
      y.backward(dy);
      x.zero_grad();
      gamma.zero_grad();
      beta.zero_grad();
    }
  });
  state.SetBytesProcessed(x.nbytes() * state.iterations());
}

/// A memory-bound kernel over n floats laid out [n / cols, cols], moving the bytes counted in
/// `moved` (each input read once, each output written once).
void streaming(benchmark::State& state, Device device, const std::string& kernel, int64_t cols) {
  const int64_t n = state.range(0), rows = n / cols;
  Backend& be = kernels::backend_for(device);
  Tensor x = random({rows, cols}, device, 1), y = random({rows, cols}, device, 2);
  Tensor out = random({rows, cols}, device, 4);
  Tensor row = random({cols}, device, 3), lse = Tensor::empty({rows}, DType::Float32, device);
  Tensor loss = Tensor::empty({}, DType::Float32, device),
         one = Tensor::ones({}, DType::Float32, device);
  std::vector<int64_t> label_values(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    label_values[static_cast<size_t>(r)] = (r * 7) % cols;
  Tensor labels = Tensor::from_vector(label_values, {rows}, device);
  Tensor m1 = Tensor::zeros({rows, cols}, DType::Float32, device);
  Tensor m2 = Tensor::ones({rows, cols}, DType::Float32, device);
  double moved = 0;  // bytes read + written per call
  std::function<void()> body;
  const double f = 4.0 * static_cast<double>(rows * cols);
  if (kernel == "copy") {
    body = [&] { be.copy(out.raw(), x.raw(), x.nbytes()); };
    moved = 2 * f;
  } else if (kernel == "fill") {
    body = [&] { be.fill(DType::Float32, rows * cols, 0.5, out.raw()); };
    moved = f;
  } else if (kernel == "add") {
    body = [&] {
      be.binary(kernels::Binary::Add, kernels::Broadcast::None, DType::Float32, 1, rows * cols,
                x.raw(), y.raw(), out.raw());
    };
    moved = 3 * f;
  } else if (kernel == "add_row") {  // [rows, cols] + [cols]
    body = [&] {
      be.binary(kernels::Binary::Add, kernels::Broadcast::RowB, DType::Float32, rows, cols, x.raw(),
                row.raw(), out.raw());
    };
    moved = 2 * f;
  } else if (kernel == "axpby") {
    body = [&] { be.axpby(DType::Float32, rows * cols, 0.5, x.raw(), 0.9, out.raw()); };
    moved = 3 * f;
  } else if (kernel == "relu_forward") {
    body = [&] {
      be.unary_forward(kernels::Unary::Relu, DType::Float32, rows * cols, x.raw(), out.raw());
    };
    moved = 2 * f;
  } else if (kernel == "bias_relu") {
    body = [&] { be.bias_relu(DType::Float32, rows, cols, row.raw(), out.raw()); };
    moved = 2 * f;
  } else if (kernel == "relu_backward") {
    body = [&] {
      be.unary_backward(kernels::Unary::Relu, DType::Float32, rows * cols, x.raw(), y.raw(),
                        out.raw());
    };
    moved = 3 * f;
  } else if (kernel == "sum_rows") {  // the bias-gradient column reduction
    body = [&] { be.reduce_sum(DType::Float32, 1, rows, cols, 1.0, x.raw(), 0.0, row.raw()); };
    moved = f;
  } else if (kernel == "sum_all") {
    body = [&] { be.reduce_sum(DType::Float32, 1, rows * cols, 1, 1.0, x.raw(), 0.0, loss.raw()); };
    moved = f;
  } else if (kernel == "expand_rows") {  // the backward of sum_rows
    body = [&] { be.expand(DType::Float32, 1, rows, cols, 1.0, row.raw(), out.raw()); };
    moved = f;
  } else if (kernel == "xent_forward") {
    body = [&] {
      be.cross_entropy_forward(DType::Float32, rows, cols, x.raw(), labels.data<int64_t>(),
                               lse.raw(), loss.raw());
    };
    moved = f;
  } else if (kernel == "xent_backward") {
    body = [&] {
      be.cross_entropy_backward(DType::Float32, rows, cols, x.raw(), labels.data<int64_t>(),
                                lse.raw(), one.raw(), out.raw());
    };
    moved = 2 * f;
  } else if (kernel == "xent_fwd_bwd") {  // the fused pair of a training step
    body = [&] {
      be.cross_entropy_forward(DType::Float32, rows, cols, x.raw(), labels.data<int64_t>(),
                               lse.raw(), loss.raw());
      be.cross_entropy_backward(DType::Float32, rows, cols, x.raw(), labels.data<int64_t>(),
                                lse.raw(), loss.raw(), out.raw());
    };
    moved = 3 * f;  // the logits read by each, the gradient written
  } else if (kernel == "batch_norm_train") {
    body = [&] {
      be.batch_norm_train(DType::Float32, rows, cols, 1, x.raw(), nullptr, nullptr, 1e-5, 0.1,
                          nullptr, nullptr, out.raw(), row.raw(), lse.raw());
    };
    moved = 2 * f;
  } else if (kernel == "sgd_momentum") {
    kernels::SGDParams p{.lr = 0.01, .momentum = 0.9, .first_step = false};
    body = [&, p] { be.sgd_update(DType::Float32, rows * cols, out.raw(), x.raw(), m1.raw(), p); };
    moved = 5 * f;
  } else if (kernel == "adam") {
    const Tensor step = Tensor::full({1}, 3.0, DType::Float64, device);  // lives on the device
    const kernels::AdamParams p{.step = static_cast<const double*>(step.raw())};
    body = [&, p, step] {
      be.adam_update(DType::Float32, rows * cols, out.raw(), x.raw(), m1.raw(), m2.raw(), p);
    };
    moved = 7 * f;
  } else {
    state.SkipWithError(("unknown kernel " + kernel).c_str());
    return;
  }
  const double seconds = timed(state, be, body, device.is_cpu() ? 1 : 10);
  state.SetBytesProcessed(static_cast<int64_t>(moved) * state.iterations());
  if (seconds <= 0) return;
  const double rate = moved / seconds;  // bytes per second, on the device's clock
  state.counters["GB/s"] = rate * 1e-9;
  if (copy_bandwidth(device) > 0)
    state.counters["pct_copy"] = 100.0 * rate / copy_bandwidth(device);
  if (device.is_cuda()) state.counters["pct_4800"] = 100.0 * rate / kH200Bandwidth;
}

/// Measures the device's copy bandwidth once (bytes read + written per second).
double measure_copy_bandwidth(Device device, int64_t n) {
  Backend& be = kernels::backend_for(device);
  Tensor a = random({n}, device, 1), b = Tensor::empty({n}, DType::Float32, device);
  be.copy(b.raw(), a.raw(), a.nbytes());
  be.synchronize();
  double best = 0;
  for (int i = 0; i < 5; ++i) {
    const double ms = be.time_ms([&] {
      for (int r = 0; r < 10; ++r)
        be.copy(b.raw(), a.raw(), a.nbytes());
    });
    const double bw = 2.0 * static_cast<double>(a.nbytes()) * 10 / (ms * 1e-3);
    if (bw > best) best = bw;
  }
  return best;
}

void register_all() {
  std::vector<Device> devices{Device::cpu()};
  if (cuda_is_available()) devices.push_back(Device::cuda(0));
  for (Device device : devices) {
    const std::string dev = device.is_cpu() ? "cpu" : "cuda";
    for (int64_t batch : {1, 32, 128, 512, 2048})
      for (const GemmShape& s : step_gemms(batch)) {
        const std::string name = "BM_Gemm/" + dev + "/" + s.name + "/" + std::to_string(batch);
        benchmark::RegisterBenchmark(name.c_str(), gemm_ours, s, device)->UseManualTime();
        if (device.is_cpu())
          benchmark::RegisterBenchmark(
              ("BM_Gemm/eigen/" + std::string(s.name) + "/" + std::to_string(batch)).c_str(),
              gemm_eigen, s)
              ->UseManualTime();
      }
    for (const ConvShape& s : conv_shapes())
      for (bool backward : {false, true}) {
        const std::string name = "BM_Conv/" + dev + "/" + s.name + (backward ? "/fwd_bwd" : "/fwd");
        benchmark::RegisterBenchmark(name.c_str(), conv, s, device, backward)
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
    for (const std::string op : {"maxpool", "bn2d"})
      for (const LayerShape& s : {LayerShape{"c16x28", 16, 28, 2}, LayerShape{"c32x14", 32, 14, 2},
                                  LayerShape{"c64x14", 64, 14, 3}})
        for (bool backward : {false, true}) {
          const std::string name =
              "BM_Layer/" + dev + "/" + op + "/" + s.name + (backward ? "/fwd_bwd" : "/fwd");
          benchmark::RegisterBenchmark(name.c_str(), layer, op, s, device, backward)
              ->UseManualTime()
              ->Unit(benchmark::kMicrosecond);
        }
    // 64M elements on the GPU (256 MB per buffer: far past the 60 MB L2), 4M on the CPU.
    const int64_t n = device.is_cpu() ? (int64_t(1) << 22) : (int64_t(1) << 26);
    struct Kernel {
      const char* name;
      int64_t cols;
    };
    for (const Kernel& k :
         {Kernel{"copy", 1024},      {"fill", 1024},         {"add", 1024},
          {"add_row", 1024},         {"add_row", 10},        {"axpby", 1024},
          {"relu_forward", 1024},    {"bias_relu", 1024},    {"bias_relu", 10},
          {"relu_backward", 1024},   {"sum_rows", 1024},     {"sum_rows", 10},
          {"sum_all", 1024},         {"expand_rows", 1024},  {"xent_forward", 1024},
          {"xent_backward", 1024},   {"xent_fwd_bwd", 1024}, {"xent_fwd_bwd", 10},
          {"batch_norm_train", 256}, {"sgd_momentum", 1024}, {"adam", 1024}}) {
      const std::string name = "BM_Stream/" + dev + "/" + k.name + "/c" + std::to_string(k.cols);
      benchmark::RegisterBenchmark(name.c_str(), streaming, device, std::string(k.name), k.cols)
          ->Arg(n / k.cols * k.cols)
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

bool require_cuda() {
  const char* v = std::getenv("CLARENA_REQUIRE_CUDA");
  return v && *v && std::strcmp(v, "0") != 0;
}

}  // namespace
}  // namespace clarena::bench

int main(int argc, char** argv) {
  using namespace clarena;
  if (bench::require_cuda() && !cuda_is_available()) {
#ifdef CLARENA_HAS_CUDA
    std::printf("bench_kernels: no CUDA device (CLARENA_REQUIRE_CUDA=1): %s\n",
                kernels::cuda_probe().message.c_str());
#else
    std::printf("bench_kernels: no CUDA device (CLARENA_REQUIRE_CUDA=1): built without CUDA\n");
#endif
    return 3;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  bench::register_all();
  // The copy ceilings, measured once: 64M floats on the GPU, 4M on the CPU.
  bench::copy_bandwidth(Device::cpu()) = bench::measure_copy_bandwidth(Device::cpu(), 1 << 22);
  if (cuda_is_available()) {
    bench::copy_bandwidth(Device::cuda(0)) =
        bench::measure_copy_bandwidth(Device::cuda(0), int64_t{1} << 26);
    std::printf("measured device copy: %.1f GB/s (read + write), %.1f%% of 4.8 TB/s\n",
                bench::copy_bandwidth(Device::cuda(0)) * 1e-9,
                100.0 * bench::copy_bandwidth(Device::cuda(0)) / bench::kH200Bandwidth);
  }
  std::printf("measured cpu copy: %.1f GB/s (read + write)\n",
              bench::copy_bandwidth(Device::cpu()) * 1e-9);
  // The FMA peak, measured once, for the CPU GEMM rows' peak_frac.
  bench::fma_peak() = bench::measure_fma_peak();
  std::fprintf(stderr, "FMA peak: %.1f GFLOP/s per thread, %.1f on %d threads, %s\n",
               bench::fma_peak().per_thread * 1e-9, bench::fma_peak().all * 1e-9,
               bench::fma_peak().threads, bench::kFmaIsa);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
