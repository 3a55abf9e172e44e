// The task loop: for each task set up the head and optimizer, train for E epochs with
// validation after each, then test on every task seen so far. Writes every result, and a
// checkpoint after each task, into one output folder.
#pragma once

#include <filesystem>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "clarena/cl/config.h"
#include "clarena/cl/metrics.h"

namespace clarena::cl {

/// Averages over one task's training steps.
struct TaskCost {
  int task = 0;
  int64_t steps = 0;
  double forward_ms = 0, backward_ms = 0, optimizer_ms = 0;  // per step
  double nodes_per_step = 0, saved_bytes_per_step = 0;
};

struct EpochRecord {
  int task = 0, epoch = 0;
  double train_loss = 0, train_accuracy = 0, val_loss = 0, val_accuracy = 0;
};

struct RunResult {
  std::string algorithm;
  AccuracyMatrix accuracy{1};
  std::vector<TaskCost> costs;
  std::vector<EpochRecord> curves;
  std::filesystem::path output_dir;
  double wall_seconds = 0;
};

struct RunOptions {
  bool resume = false;          // continue from output_dir's last checkpoint
  int stop_after_task = 0;      // > 0: stop once this task is checkpointed (tests use it)
  std::ostream* log = nullptr;  // progress and tables; null: silent
};

/// (Re)writes output_dir/metrics.json; with the diagonal of a reference run (Independent, as
/// CLArena uses) it includes forward transfer.
void write_metrics(const std::filesystem::path& output_dir, const AccuracyMatrix& accuracy,
                   const std::optional<std::vector<double>>& reference_diagonal = {});

/// Runs one experiment (cfg must be validated). With resume, cfg comes from the checkpoint.
RunResult run_experiment(const ExperimentConfig& cfg, const RunOptions& options);
/// The config a checkpointed run was started with (output_dir/checkpoint/state.json).
ExperimentConfig checkpoint_config(const std::filesystem::path& output_dir);
/// Tests a checkpoint on every task it has seen; returns the accuracies in task order.
std::vector<double> evaluate_checkpoint(const std::filesystem::path& output_dir, std::ostream* log);

}  // namespace clarena::cl
