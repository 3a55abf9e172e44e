// CL benchmarks on real images: Split and Permuted, built from an MNIST-format IDX folder.
#pragma once

#include <array>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clarena/cl/benchmark_mapping.h"
#include "clarena/cl/config.h"
#include "clarena/cl/idx.h"
#include "clarena/core/tensor.h"

namespace clarena::cl {

struct Batch {
  Tensor x;  // float32 [B, 1, H, W] (one channel), normalised (and permuted), on the run's device
  Tensor y;  // int64 [B], training labels (TIL: within the task; CIL: global)
};

enum class Stage { Train, Validation, Test };

/// The tasks of one benchmark: which samples each task holds in each stage and how they
/// become batches. Images stay as bytes; a batch is normalised and permuted as it is built.
/// The constructor throws clarena::IOError naming the file and task when a task has no
/// training or no test image, and ConfigError when val_fraction leaves a task fewer
/// training images than one batch.
class CLBenchmark {
 public:
  explicit CLBenchmark(const ExperimentConfig& cfg);

  int num_tasks() const { return num_tasks_; }
  int64_t input_dim() const { return train_.rows * train_.cols; }
  /// The shape of one image in a batch: {channels = 1, height, width}.
  std::array<int64_t, 3> image_shape() const { return {1, train_.rows, train_.cols}; }
  /// Output width of task `task`'s head.
  int64_t num_classes(int task) const;
  /// Sample indices of a task in a stage (training set capped by max_train_samples_per_task).
  const std::vector<int64_t>& indices(Stage stage, int task) const;
  /// The batch of samples `which` (indices into the stage's dataset) of `task`.
  Batch batch(Stage stage, int task, std::span<const int64_t> which, Device device) const;
  /// Normalisation, class split or permutation hashes: what the manifest records.
  nlohmann::json describe() const;

 private:
  const IdxDataset& dataset(Stage stage) const { return stage == Stage::Test ? test_ : train_; }
  int64_t train_label(int task, int64_t original) const;
  std::string task_name(int task) const;  // "task 3 (classes 4, 5)"
  void check_task(const ExperimentConfig& cfg, int task, size_t pool,
                  const std::array<std::vector<int64_t>, 3>& stages) const;

  bool permuted_;
  Scenario scenario_;
  int num_tasks_;
  IdxDataset train_, test_;
  double mean_ = 0, std_ = 1;
  SplitSpec split_;
  std::vector<std::vector<int32_t>> permutations_;            // per task, Permuted only
  std::vector<std::array<std::vector<int64_t>, 3>> indices_;  // per task, per stage
};

}  // namespace clarena::cl
