// bench_step: one full training step of a backbone + linear head, trainable, frozen
// (requires_grad_(false) backbone: Fix after task 1) and forward-only (the floor a frozen
// step should approach), over a grid of models (MLPs; the cnn and resnet18 convnets) and batch
// sizes, on every available device. `FLOPs` is what the step's GEMMs multiply (the backend's
// count, 2·m·n·k each: convolutions are GEMMs here), `GFLOP/s` that over the step's time.
//
// Timing. On the GPU, steps run back to back as in PyTorch eager: each benchmark iteration is a
// group of kGroup steps between one pair of CUDA events, with no host synchronisation inside
// (the host enqueues ahead of the device, as torch does); the time reported per iteration is the
// group's time over kGroup. `median_ms` is the median over the groups, per step, the figure
// bench/torch_step.py prints for PyTorch. On the CPU a group is one step, timed with a steady
// clock around synchronisations. `bwd_share` (backward's share of a step) needs host syncs in
// the middle of the step, so it comes from a few extra steps outside the timed loop.
//
// Registered: the CPU grid (MLPs at batch 1 to 2048, convnets at 1, 32, 128), and on a GPU the
// configurations worth its time: models default and wide at batch 128 and 4096, resnet18 at
// 128, TF32 off (rows `cuda/...`, compared with torch_step.py) and on (rows `cuda_tf32/...`,
// trainable only).
//
// With CLARENA_REQUIRE_CUDA=1 and no usable device, prints the reason and exits with status 3.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "clarena/kernels/backend.h"
#ifdef CLARENA_HAS_CUDA
#include "clarena/kernels/cuda_backend.h"
#endif
#include "step_model.h"

namespace clarena::bench {

Tensor StepModel::step(double* backward_seconds) {
  if (mode_ == Mode::ForwardOnly) {
    autograd::NoGradGuard no_grad;
    return cross_entropy((*head_)(backbone_->forward(x_)), y_);
  }
  Tensor loss = cross_entropy((*head_)(backbone_->forward(x_)), y_);
  auto& backend = kernels::backend_for(loss.device());
  if (backward_seconds) backend.synchronize();
  auto start = std::chrono::steady_clock::now();
  loss.backward();
  if (backward_seconds) {
    backend.synchronize();
    *backward_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  sgd_->step();
  sgd_->zero_grad();
  return loss;
}

namespace {

constexpr int kGroup = 10;  // GPU steps per timed group

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
  std::unique_ptr<kernels::Tf32Guard> tf32;
  if (device.is_cuda()) tf32 = std::make_unique<kernels::Tf32Guard>(target.tf32);
#endif
  StepModel model(shape, batch, mode, device);
  auto& backend = kernels::backend_for(device);
  const int group = device.is_cpu() ? 1 : kGroup;
  for (int i = 0; i < (device.is_cpu() ? 1 : 3); ++i)
    model.step();  // warm up: first-touch allocations, optimizer state, cuBLAS heuristics
  backend.synchronize();
  autograd::reset_stats();
  const int64_t base_peak = backend.stats().bytes_in_use;
  backend.stats().peak_bytes_in_use = base_peak;
  const int64_t mallocs_before = backend.stats().device_mallocs;
  const int64_t flops_before = backend.stats().gemm_flops;
  std::vector<double> per_step;
  for (auto _ : state) {
    const double ms = backend.time_ms([&] {
      for (int i = 0; i < group; ++i)
        model.step();
    });
    per_step.push_back(ms / group);
    state.SetIterationTime(ms * 1e-3 / group);
  }
  const int64_t mallocs = backend.stats().device_mallocs - mallocs_before;
  const double steps = static_cast<double>(state.iterations()) * group;
  const double flops = static_cast<double>(backend.stats().gemm_flops - flops_before) / steps;
  const auto& graph = autograd::stats();
  const double nodes = static_cast<double>(graph.nodes_recorded) / steps;
  const double saved = static_cast<double>(graph.peak_saved_bytes);
  double backward_seconds = 0, total_seconds = 0;
  if (mode != Mode::ForwardOnly) {
    for (int i = 0; i < 3; ++i) {
      const auto start = std::chrono::steady_clock::now();
      model.step(&backward_seconds);
      backend.synchronize();
      total_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  }
  std::sort(per_step.begin(), per_step.end());
  state.counters["FLOPs"] = flops;
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9 * steps, benchmark::Counter::kIsRate);
  state.counters["median_ms"] = per_step.empty() ? 0 : per_step[per_step.size() / 2];
  state.counters["nodes"] = nodes;
  state.counters["saved_bytes"] = saved;
  state.counters["peak_mem"] = static_cast<double>(backend.stats().peak_bytes_in_use);
  state.counters["mallocs"] = static_cast<double>(mallocs);  // device mallocs in the timed loop
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
        const bool cpu = target.device.is_cpu();
        if (!cpu && (shape.name == "deep" || shape.name == "cnn")) continue;
        if (target.tf32 && mode != Mode::Trainable) continue;
        const std::string name =
            "BM_Step/" + target.name + "/" + shape.name + "/" + mode_name(mode);
        auto* b = benchmark::RegisterBenchmark(name.c_str(), run_step, shape, mode, target);
        b->UseManualTime()->Unit(benchmark::kMicrosecond);
        if (shape.is_conv()) {
          b->Unit(benchmark::kMillisecond);
          if (cpu) b->Arg(1)->Arg(32);
          b->Arg(128);
          continue;
        }
        if (!cpu) {
          b->Arg(128)->Arg(4096);
          continue;
        }
        // The CPU skips the wide model at 2048 (over a second per trainable step).
        for (int64_t batch : {1, 32, 128, 512, 2048}) {
          if (shape.name == "wide" && batch == 2048) continue;
          b->Arg(batch);
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
    std::printf("bench_step: no CUDA device (CLARENA_REQUIRE_CUDA=1): %s\n",
                kernels::cuda_probe().message.c_str());
#else
    std::printf("bench_step: no CUDA device (CLARENA_REQUIRE_CUDA=1): built without CUDA\n");
#endif
    return 3;
  }
  bench::register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
