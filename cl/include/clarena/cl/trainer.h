// The one training loop: forward → loss → backward → step for every algorithm, which only
// overrides hooks (algorithms.h). Nothing in an epoch waits for the device except a timing
// sample every kTimingEvery steps: losses and correct counts stay on the device and are read
// once per epoch.
#pragma once

#include <functional>
#include <vector>

#include "clarena/cl/algorithms.h"
#include "clarena/cl/data.h"
#include "clarena/cl/experiment.h"

namespace clarena::cl {

class Progress;

/// A stage of a task, summed: the mean loss over samples and the exact correct count.
struct Evaluation {
  double loss = 0;
  int64_t correct = 0, samples = 0;
  double accuracy() const {
    return samples ? static_cast<double>(correct) / static_cast<double>(samples) : 0;
  }
};

class Trainer {
 public:
  /// One step in this many is timed phase by phase (device events, one synchronisation each).
  static constexpr int64_t kTimingEvery = 25;

  Trainer(const CLBenchmark& bench, const ExperimentConfig& cfg, Progress* progress = nullptr);

  /// What one training step left: its loss and logits (still on the device, unread), the graph
  /// nodes its forward recorded and the peak bytes its saved tensors held; with `timed`, the
  /// device milliseconds of each phase (three synchronisations), else zeros.
  struct Step {
    Tensor loss, logits;
    int64_t nodes = 0, saved_bytes = 0;
    double forward_ms = 0, backward_ms = 0, optimizer_ms = 0;
  };
  /// forward → loss → backward → optimizer step of the algorithm's current task on a batch;
  /// when nothing requires grad (Fix with freeze_heads, Random) only the forward and the loss.
  Step train_step(CLAlgorithm& algo, const Batch& batch, bool timed = false) const;

  /// Trains the algorithm's current task for cfg.epochs (validating after each, appending to
  /// `curves`), then calls its on_task_end; returns the task's cost. A NaN or infinite loss
  /// throws ValueError naming task, epoch and step.
  TaskCost fit(CLAlgorithm& algo, std::vector<EpochRecord>& curves);
  /// Tests on a stage of a task: eval mode, no graph, batches of 1000.
  Evaluation test(CLAlgorithm& algo, Stage stage, int task);
  /// Calls `fn` on every training batch of `task`, in dataset order.
  void for_each_train_batch(int task, const std::function<void(const Batch&)>& fn) const;

 private:
  const CLBenchmark& bench_;
  const ExperimentConfig& cfg_;
  Progress* progress_;
};

}  // namespace clarena::cl
