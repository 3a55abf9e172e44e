// bench_conv_step: one training step of a convolutional backbone (nn::CNN, nn::ResNet18) with a
// Linear head on [B, 1, 28, 28] inputs, trainable, frozen (requires_grad_(false) + eval: Fix
// after task 1) and forward-only, on the CPU. The same steps as bench/torch_cpu_step.py's cnn and
// resnet18 rows: compare medians of one run of each, side by side.
//   CLARENA_NUM_THREADS=2 bench_conv_step --benchmark_repetitions=10
//   (with --benchmark_report_aggregates_only=true for the medians alone)
// Counters: `nodes` (graph nodes a step records) and `saved_kb` (peak saved-tensor bytes).
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "clarena/clarena.h"

namespace {

using namespace clarena;

enum class Mode { Trainable, Frozen, ForwardOnly };

std::shared_ptr<nn::Backbone> make(int kind, Generator& gen) {
  if (kind == 0) return std::make_shared<nn::CNN>(1, 28, 28, gen);
  return std::make_shared<nn::ResNet18>(1, gen);
}

void step(benchmark::State& state, int kind, Mode mode) {
  const int64_t batch = state.range(0);
  Generator gen(0);
  auto backbone = make(kind, gen);
  auto head = std::make_shared<nn::Linear>(backbone->output_dim(), 10, gen);
  Tensor x = Tensor::normal({batch, 1, 28, 28}, 0, 1, gen);
  std::vector<int64_t> labels(static_cast<size_t>(batch));
  for (auto& y : labels)
    y = static_cast<int64_t>(gen.below(10));
  Tensor y = Tensor::from_vector(labels, {batch});
  std::vector<Tensor> params = head->parameters();
  if (mode == Mode::Frozen) {
    backbone->requires_grad_(false);
    backbone->eval();
  } else {
    for (const Tensor& p : backbone->parameters())
      params.push_back(p);
  }
  optim::SGD sgd(params, {.lr = 0.01, .momentum = 0.9});
  // Training-mode batch norm needs two values per channel: batch 1 trains in eval mode.
  if (batch == 1) backbone->eval();
  for (auto _ : state) {
    autograd::reset_stats();
    if (mode == Mode::ForwardOnly) {
      autograd::NoGradGuard no_grad;
      benchmark::DoNotOptimize(cross_entropy((*head)((*backbone)(x)), y));
      continue;
    }
    Tensor loss = cross_entropy((*head)((*backbone)(x)), y);
    state.counters["nodes"] = static_cast<double>(autograd::stats().nodes_recorded);
    sgd.zero_grad();
    loss.backward();
    sgd.step();
    state.counters["saved_kb"] = static_cast<double>(autograd::stats().peak_saved_bytes) / 1024;
  }
}

void batches(benchmark::internal::Benchmark* b) {
  for (int64_t batch : {1, 32, 128})
    b->Arg(batch);
  b->ArgName("batch")->Unit(benchmark::kMillisecond)->MinTime(0.5);
}

BENCHMARK_CAPTURE(step, cnn / trainable, 0, Mode::Trainable)->Apply(batches);
BENCHMARK_CAPTURE(step, cnn / frozen, 0, Mode::Frozen)->Apply(batches);
BENCHMARK_CAPTURE(step, cnn / forward_only, 0, Mode::ForwardOnly)->Apply(batches);
BENCHMARK_CAPTURE(step, resnet18 / trainable, 1, Mode::Trainable)->Apply(batches);
BENCHMARK_CAPTURE(step, resnet18 / frozen, 1, Mode::Frozen)->Apply(batches);
BENCHMARK_CAPTURE(step, resnet18 / forward_only, 1, Mode::ForwardOnly)->Apply(batches);

}  // namespace

BENCHMARK_MAIN();
