// bench_step: one full training step of an MLP backbone + linear head, trainable, frozen
// (requires_grad_(false) backbone: Fix after task 1) and forward-only (the floor a frozen
// step should approach), over a grid of models and batch sizes, on every available device.
#include <benchmark/benchmark.h>

#include <chrono>

#include "clarena/kernels/backend.h"
#include "clarena/kernels/cuda_backend.h"
#include "step_model.h"

namespace clarena::bench {

Tensor StepModel::step(double* backward_seconds) {
  if (mode_ == Mode::ForwardOnly) {
    autograd::NoGradGuard no_grad;
    return cross_entropy((*head_)(backbone_->forward(x_)), y_);
  }
  Tensor loss = cross_entropy((*head_)(backbone_->forward(x_)), y_);
  auto start = std::chrono::steady_clock::now();
  loss.backward();
  if (backward_seconds) {
    kernels::backend_for(loss.device()).synchronize();
    *backward_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  sgd_->step();
  sgd_->zero_grad();
  return loss;
}

namespace {

/// Where a row runs: a device, and for CUDA whether float32 GEMMs may use TF32 tensor cores.
struct Target {
  std::string name;
  Device device;
  bool tf32 = false;
};

void run_step(benchmark::State& state, const ModelShape& shape, Mode mode, Target target) {
  const int64_t batch = state.range(0);
  const Device device = target.device;
#ifdef CLARENA_HAS_CUDA
  if (device.is_cuda()) kernels::set_tf32_enabled(target.tf32);
#endif
  StepModel model(shape, batch, mode, device);
  auto& backend = kernels::backend_for(device);
  model.step();  // warm up: first-touch allocations, optimizer state
  backend.synchronize();
  autograd::reset_stats();
  const int64_t base_peak = backend.stats().bytes_in_use;
  backend.stats().peak_bytes_in_use = base_peak;
  double backward_seconds = 0, total_seconds = 0;
  for (auto _ : state) {
    // Device time: CUDA events on the GPU, a steady clock around synchronisations on the CPU.
    const double seconds = backend.time_ms([&] { model.step(&backward_seconds); }) * 1e-3;
    total_seconds += seconds;
    state.SetIterationTime(seconds);
  }
  const double flops = step_flops(shape, batch, mode);
  const auto& graph = autograd::stats();
  const double iterations = static_cast<double>(state.iterations());
  state.counters["FLOPs"] = flops;
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9 * iterations, benchmark::Counter::kIsRate);
  state.counters["nodes"] = static_cast<double>(graph.nodes_recorded) / iterations;
  state.counters["saved_bytes"] = static_cast<double>(graph.peak_saved_bytes);
  state.counters["peak_mem"] = static_cast<double>(backend.stats().peak_bytes_in_use);
  state.counters["bwd_share"] = total_seconds > 0 ? backward_seconds / total_seconds : 0;
}

void register_all() {
  std::vector<Target> targets{{"cpu", Device::cpu()}};
  if (cuda_is_available()) {
    targets.push_back({"cuda", Device::cuda(0), false});
    targets.push_back({"cuda_tf32", Device::cuda(0), true});
  }
  for (const Target& target : targets)
    for (const ModelShape& shape : model_shapes())
      for (Mode mode : {Mode::Trainable, Mode::Frozen, Mode::ForwardOnly}) {
        const std::string name =
            "BM_Step/" + target.name + "/" + shape.name + "/" + mode_name(mode);
        auto* b = benchmark::RegisterBenchmark(name.c_str(), run_step, shape, mode, target);
        b->UseManualTime()->Unit(benchmark::kMicrosecond);
        // The GPU also runs batch 4096 (the size PyTorch eager is compared at); the CPU skips
        // the wide model at 2048 (over a second per trainable step).
        const bool cpu = target.device.is_cpu();
        for (int64_t batch : {1, 32, 128, 512, 2048, 4096}) {
          if (cpu && (batch == 4096 || (shape.name == "wide" && batch == 2048))) continue;
          b->Arg(batch);
        }
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
