// Output heads: one Linear per task, created when the task starts (CLArena's HeadsTIL and
// HeadsCIL). Parameters are named "<task>.weight", "<task>.bias".
#pragma once

#include <memory>
#include <vector>

#include "clarena/cl/benchmark_mapping.h"
#include "clarena/nn/layers.h"

namespace clarena::cl {

class Heads : public nn::Module {
 public:
  Heads(Scenario scenario, int64_t input_dim) : scenario_(scenario), input_dim_(input_dim) {}

  /// Adds task `task`'s head (tasks arrive in order 1, 2, ...), on `device`.
  void setup_task(int task, int64_t num_classes, Generator& gen, Device device);
  /// TIL: the logits of `task`'s head. CIL: the logits of every head up to the latest one
  /// created, concatenated (classes seen so far), whatever the task.
  Tensor forward(const Tensor& features, int task);
  Tensor forward(const Tensor&) override;  // refuses: heads need a task id
  int num_heads() const { return static_cast<int>(heads_.size()); }
  nn::Linear& head(int task);

 private:
  Scenario scenario_;
  int64_t input_dim_;
  std::vector<std::shared_ptr<nn::Linear>> heads_;
};

/// CLArena's HeadsTIL: a head per task, the task id picks it at test time.
class HeadsTIL : public Heads {
 public:
  explicit HeadsTIL(int64_t input_dim) : Heads(Scenario::TIL, input_dim) {}
};

/// CLArena's HeadsCIL: a head per task, logits concatenated over every class seen so far.
class HeadsCIL : public Heads {
 public:
  explicit HeadsCIL(int64_t input_dim) : Heads(Scenario::CIL, input_dim) {}
};

/// The heads of a scenario.
inline std::shared_ptr<Heads> make_heads(Scenario scenario, int64_t input_dim) {
  if (scenario == Scenario::TIL) return std::make_shared<HeadsTIL>(input_dim);
  return std::make_shared<HeadsCIL>(input_dim);
}

}  // namespace clarena::cl
