// bench_heads: the class-incremental heads, forward and backward as Finetuning trains them
// (features that require grad), after T tasks of 10 classes on 256 features:
//   wide   - HeadsCIL, one [10T, 256] linear (what clarena uses)
//   concat - a Linear per task and a concatenation of the T logits (the design it replaced).
// Compare medians of the two rows of one run: bench_heads --benchmark_repetitions=10
#include <benchmark/benchmark.h>

#include <vector>

#include "clarena/cl/heads.h"
#include "clarena/core/ops.h"

namespace {

using namespace clarena;

void run(benchmark::State& state, bool wide) {
  const int tasks = static_cast<int>(state.range(0));
  const int64_t batch = state.range(1), features = 256, classes = 10;
  cl::HeadsCIL cil(features, 1, Device::cpu());
  cl::HeadsTIL til(features, 1, Device::cpu());
  for (int t = 1; t <= tasks; ++t) {
    cil.setup_task(t, classes);
    til.setup_task(t, classes);
  }
  Generator gen(2);
  Tensor x = Tensor::normal({batch, features}, 0, 1, gen).requires_grad_();
  std::vector<int64_t> labels(static_cast<size_t>(batch));
  for (auto& y : labels)
    y = static_cast<int64_t>(gen.below(static_cast<uint64_t>(classes * tasks)));
  Tensor y = Tensor::from_vector(labels, {batch});
  for (auto _ : state) {
    Tensor logits;
    if (wide) {
      logits = cil.forward(x, tasks);
    } else {
      std::vector<Tensor> parts;
      for (int t = 1; t <= tasks; ++t)
        parts.push_back(til.forward(x, t));
      logits = parts.size() == 1 ? parts.front() : concat(parts, 1);
    }
    cross_entropy(logits, y).backward();
    x.zero_grad();
    cil.zero_grad();
    til.zero_grad();
  }
}

void args(benchmark::internal::Benchmark* b) {
  for (int64_t tasks : {2, 5, 10})
    for (int64_t batch : {64, 256})
      b->Args({tasks, batch});
  b->ArgNames({"tasks", "batch"})->Unit(benchmark::kMicrosecond);
}

BENCHMARK_CAPTURE(run, wide, true)->Apply(args);
BENCHMARK_CAPTURE(run, concat, false)->Apply(args);

}  // namespace

BENCHMARK_MAIN();
