// CL algorithms, shaped like CLArena's: a base class with the steps every algorithm has, and
// each algorithm a few lines on top of it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "clarena/cl/config.h"
#include "clarena/cl/data.h"
#include "clarena/cl/heads.h"
#include "clarena/nn/layers.h"
#include "clarena/nn/optim.h"

namespace clarena::cl {

/// What one training step cost, for the per-task cost table.
struct StepStats {
  double loss = 0;
  int64_t correct = 0, samples = 0;
  double forward_s = 0, backward_s = 0, optimizer_s = 0;
  int64_t nodes = 0;        // graph nodes the step recorded
  int64_t saved_bytes = 0;  // peak bytes held by saved tensors during the step
};

/// The backbone(s) and heads of a run, as one module so that a checkpoint is one file.
class CLModel : public nn::Module {
 public:
  Tensor forward(const Tensor& x) override;  // refuses: a CL model needs a task id
  void add(const std::string& name, std::shared_ptr<nn::Module> child) {
    register_module(name, std::move(child));
  }
};

/// Base class: trains the current task's head and whatever else requires grad with
/// cross-entropy, one fresh optimizer per task (as CLArena does).
class CLAlgorithm {
 public:
  CLAlgorithm(const ExperimentConfig& cfg, int64_t input_dim, Device device);
  virtual ~CLAlgorithm() = default;
  virtual std::string name() const = 0;

  /// Task `task` begins: create its head (and anything else), then a new optimizer.
  virtual void setup_task(int task, int64_t num_classes);
  /// Sets train/eval modes before a training epoch.
  virtual void on_train_epoch_start();
  /// One optimisation step on a batch of the current task.
  virtual StepStats training_step(const Batch& batch);
  /// Loss and correct count on a batch of any seen task, eval mode, no graph.
  StepStats evaluation_step(const Batch& batch, int task);

  CLModel& model() { return *model_; }
  int current_task() const { return task_; }

 protected:
  virtual nn::MLP& backbone_for(int task);
  /// Adds the networks to model() on the first task, in checkpoint order.
  virtual void register_networks();
  /// A new optimizer over trainable_parameters().
  void make_optimizer();
  Tensor forward(const Tensor& x, int task) { return heads_->forward(backbone_for(task)(x), task); }
  /// Every parameter that requires grad: what the new task's optimizer updates.
  std::vector<Tensor> trainable_parameters() const;
  std::shared_ptr<nn::MLP> make_backbone(uint64_t seed) const;

  ExperimentConfig cfg_;
  int64_t input_dim_;
  Device device_;
  std::shared_ptr<CLModel> model_;
  std::shared_ptr<nn::MLP> backbone_;
  std::shared_ptr<Heads> heads_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  int task_ = 0;
  bool registered_ = false;
};

/// Finetuning: trains the backbone and the heads on every task (the lower bound CL methods
/// are compared against: it forgets).
class Finetuning : public CLAlgorithm {
 public:
  using CLAlgorithm::CLAlgorithm;
  std::string name() const override { return "Finetuning"; }
};

/// Fix: trains the backbone on task 1 only; from task 2 on the backbone is frozen by
/// requires_grad_(false) and kept in eval mode (batch-norm statistics frozen too), so its
/// backward costs nothing and only each new head learns. `freeze_heads` stops all training
/// after task 1, as CLArena's newest code does.
class Fix : public Finetuning {
 public:
  using Finetuning::Finetuning;
  std::string name() const override { return "Fix"; }
  void setup_task(int task, int64_t num_classes) override;
  void on_train_epoch_start() override;
};

/// Independent: a fresh backbone per task, each trained on its task alone (the reference for
/// forward transfer).
class Independent : public Finetuning {
 public:
  Independent(const ExperimentConfig& cfg, int64_t input_dim, Device device);
  std::string name() const override { return "Independent"; }
  void setup_task(int task, int64_t num_classes) override;

 protected:
  nn::MLP& backbone_for(int task) override;
  void register_networks() override;

 private:
  std::vector<std::shared_ptr<nn::MLP>> per_task_;
  std::shared_ptr<nn::Sequential> backbones_ = std::make_shared<nn::Sequential>();
};

/// Random: no training at all (the chance-level reference).
class Random : public CLAlgorithm {
 public:
  using CLAlgorithm::CLAlgorithm;
  std::string name() const override { return "Random"; }
  StepStats training_step(const Batch& batch) override;
};

/// The algorithm named by cfg.algorithm (validated by the config).
std::unique_ptr<CLAlgorithm> make_algorithm(const ExperimentConfig& cfg, int64_t input_dim);

}  // namespace clarena::cl
