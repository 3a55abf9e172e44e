// bench_kernels: the backend's kernels on their own. GEMM at the training step's exact shapes
// (GFLOP/s, next to Eigen's GEMM called directly on the CPU), and the element-wise, reduction
// and cross-entropy kernels in GB/s next to a plain copy of the same bytes (the bandwidth
// ceiling), on every available device.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <chrono>
#include <functional>
#include <string>

#include "clarena/clarena.h"
#include "clarena/kernels/backend.h"

namespace clarena::bench {
namespace {

using kernels::Backend;

/// Times `body` per iteration on `device`, synchronising so GPU time is counted.
void timed(benchmark::State& state, Backend& be, const std::function<void()>& body) {
  body();
  be.synchronize();
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    body();
    be.synchronize();
    state.SetIterationTime(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
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
  timed(state, be, [&] {
    be.gemm(DType::Float32, s.ta, s.tb, s.m, s.n, s.k, 1.0, a.raw(), b.raw(), 0.0, c.raw());
  });
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * s.m * s.n * s.k * 1e-9 * state.iterations(),
                                                 benchmark::Counter::kIsRate);
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
}

/// A memory-bound kernel over n floats moving `bytes_per_element` per element.
void streaming(benchmark::State& state, Device device, const std::string& kernel) {
  const int64_t n = state.range(0), cols = 1024, rows = n / cols;
  Backend& be = kernels::backend_for(device);
  Tensor x = random({rows, cols}, device, 1), y = random({rows, cols}, device, 2);
  Tensor out = Tensor::empty({rows, cols}, DType::Float32, device);
  Tensor row = random({cols}, device, 3), lse = Tensor::empty({rows}, DType::Float32, device);
  Tensor loss = Tensor::empty({}, DType::Float32, device),
         one = Tensor::ones({}, DType::Float32, device);
  std::vector<int64_t> label_values(static_cast<size_t>(rows), 3);
  Tensor labels = Tensor::from_vector(label_values, {rows}, device);
  Tensor momentum = Tensor::zeros({rows, cols}, DType::Float32, device);
  double moved = 0;  // bytes read + written per call
  std::function<void()> body;
  const double f = 4.0 * static_cast<double>(n);
  if (kernel == "copy") {
    body = [&] { be.copy(out.raw(), x.raw(), x.nbytes()); };
    moved = 2 * f;
  } else if (kernel == "add") {
    body = [&] {
      be.binary(kernels::Binary::Add, kernels::Broadcast::None, DType::Float32, 1, n, x.raw(),
                y.raw(), out.raw());
    };
    moved = 3 * f;
  } else if (kernel == "bias_relu") {
    body = [&] { be.bias_relu(DType::Float32, rows, cols, row.raw(), out.raw()); };
    moved = 2 * f;
  } else if (kernel == "relu_backward") {
    body = [&] {
      be.unary_backward(kernels::Unary::Relu, DType::Float32, n, x.raw(), y.raw(), out.raw());
    };
    moved = 3 * f;
  } else if (kernel == "sum_rows") {  // the bias-gradient column reduction
    body = [&] { be.reduce_sum(DType::Float32, 1, rows, cols, 1.0, x.raw(), 0.0, row.raw()); };
    moved = f;
  } else if (kernel == "sum_all") {
    body = [&] { be.reduce_sum(DType::Float32, 1, n, 1, 1.0, x.raw(), 0.0, loss.raw()); };
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
  } else if (kernel == "sgd_momentum") {
    kernels::SGDParams p{.lr = 0.01, .momentum = 0.9, .first_step = false};
    body = [&] { be.sgd_update(DType::Float32, n, out.raw(), x.raw(), momentum.raw(), p); };
    moved = 5 * f;
  }
  timed(state, be, body);
  state.SetBytesProcessed(static_cast<int64_t>(moved) * state.iterations());
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
    // 64M elements on the GPU (the size), 4M on the CPU (past its caches, quick).
    const int64_t n = device.is_cpu() ? (int64_t(1) << 22) : (int64_t(1) << 26);
    for (const char* kernel : {"copy", "add", "bias_relu", "relu_backward", "sum_rows", "sum_all",
                               "xent_forward", "xent_backward", "sgd_momentum"})
      benchmark::RegisterBenchmark(("BM_Stream/" + dev + "/" + kernel).c_str(), streaming, device,
                                   std::string(kernel))
          ->Arg(n)
          ->UseManualTime();
  }
}

}  // namespace
}  // namespace clarena::bench

int main(int argc, char** argv) {
  clarena::bench::register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
