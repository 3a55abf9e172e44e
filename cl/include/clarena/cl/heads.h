// Output heads, as CLArena's HeadsTIL and HeadsCIL: they turn backbone features into the
// logits of a task. A task's head is created when the task starts, initialised like a
// torch.nn.Linear from the task's own random stream.
#pragma once

#include <memory>
#include <vector>

#include "clarena/core/random.h"
#include "clarena/nn/layers.h"

namespace clarena::cl {

class Heads : public nn::Module {
 public:
  /// Heads over `input_dim` features on `device`; task t's draws come from stream t of `seed`.
  Heads(int64_t input_dim, uint64_t seed, Device device)
      : input_dim_(input_dim), seed_(seed), device_(device) {}

  /// Adds task `task`'s classes; tasks arrive in order 1, 2, ... (ValueError otherwise).
  virtual void setup_task(int task, int64_t num_classes) = 0;
  /// The logits a test of task `task` reads.
  virtual Tensor forward(const Tensor& features, int task) = 0;
  Tensor forward(const Tensor&) override;  // refuses: heads need a task id
  /// A copy with the same tasks and values (LwF's teacher), requiring grad as new heads do.
  virtual std::shared_ptr<Heads> clone() const = 0;

  int num_tasks() const { return static_cast<int>(classes_.size()); }
  /// Classes of tasks 1 .. task-1.
  int64_t classes_before(int task) const;

 protected:
  /// Task `task`'s head, new and on the device (ValueError unless `task` is the next task).
  std::shared_ptr<nn::Linear> new_head(int task, int64_t num_classes);
  void check_task(int task) const;
  /// `empty` (new heads of this kind) given this one's tasks and values: what clone returns.
  std::shared_ptr<Heads> copy_into(std::shared_ptr<Heads> empty) const;

  int64_t input_dim_;
  uint64_t seed_;
  Device device_;
  std::vector<int64_t> classes_;  // per task
};

/// Task-incremental: one Linear per task, named "<task>"; the task id picks it.
class HeadsTIL : public Heads {
 public:
  using Heads::Heads;
  void setup_task(int task, int64_t num_classes) override;
  Tensor forward(const Tensor& features, int task) override;
  std::shared_ptr<Heads> clone() const override;
  nn::Linear& head(int task);

 private:
  std::vector<std::shared_ptr<nn::Linear>> heads_;
};

/// Class-incremental: one wide head ("weight" [classes seen, in], "bias") whose outputs grow
/// by each task's classes; every test reads the logits of all classes seen so far. One GEMM
/// per step instead of a product per task and a concatenation.
class HeadsCIL : public Heads {
 public:
  using Heads::Heads;
  void setup_task(int task, int64_t num_classes) override;
  Tensor forward(const Tensor& features, int task) override;
  std::shared_ptr<Heads> clone() const override;

 private:
  Tensor weight_, bias_;
};

}  // namespace clarena::cl
