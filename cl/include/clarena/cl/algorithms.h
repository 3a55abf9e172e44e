// CL algorithms, shaped like CLArena's (and Lightning's): an algorithm owns its networks and
// overrides hooks; the one Trainer (trainer.h) runs forward → loss → backward → step for all.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "clarena/cl/config.h"
#include "clarena/cl/data.h"
#include "clarena/cl/heads.h"
#include "clarena/nn/layers.h"
#include "clarena/nn/optim.h"

namespace clarena::cl {

/// The backbone(s), heads and whatever an algorithm keeps (a teacher, Fisher information), as
/// one module so that a checkpoint is one file.
class CLModel : public nn::Module {
 public:
  Tensor forward(const Tensor& x) override;  // refuses: a CL model needs a task id
  void add(const std::string& name, std::shared_ptr<nn::Module> child) {
    register_module(name, std::move(child));
  }
};

/// A new optimizer over the given parameters (one per task, as CLArena makes).
using OptimizerFactory =
    std::function<std::unique_ptr<optim::Optimizer>(const std::vector<Tensor>& parameters)>;
/// A new backbone, like the run's; `stream` picks its initial values.
using BackboneFactory = std::function<std::shared_ptr<nn::Backbone>(uint64_t stream)>;
/// Calls its argument on every training batch of the task just trained, in dataset order.
using TrainBatches = std::function<void(const std::function<void(const Batch&)>&)>;

class CLAlgorithm {
 public:
  CLAlgorithm(BackboneFactory make_backbone, std::shared_ptr<Heads> heads,
              OptimizerFactory make_optimizer);
  virtual ~CLAlgorithm() = default;
  virtual std::string name() const = 0;

  /// Task `task` begins: setup_task, then a fresh optimizer over what requires grad.
  void begin_task(int task, int64_t num_classes);

  // --- hooks --------------------------------------------------------------------------
  /// Adds the task's head (and anything else the task needs: freezing, slots of state).
  virtual void setup_task(int task, int64_t num_classes);
  /// The train/eval modes of the modules while the current task trains (default: all train).
  virtual void train_mode();
  /// The logits of task `task`'s test on a batch.
  virtual Tensor forward(const Tensor& x, int task);
  /// The training loss of a batch of the current task (default: cross-entropy).
  virtual Tensor loss(const Batch& batch, const Tensor& logits);
  /// The current task finished training (a teacher to keep, a Fisher to estimate).
  virtual void on_task_end(const TrainBatches&) {}

  CLModel& model() { return *model_; }
  optim::Optimizer& optimizer() { return *optimizer_; }
  int task() const { return task_; }

 protected:
  /// Adds the networks to model() on the first task, in checkpoint order.
  virtual void register_networks();
  /// Every parameter that requires grad: what the new task's optimizer updates.
  std::vector<Tensor> trainable_parameters() const;

  BackboneFactory make_backbone_;
  std::shared_ptr<nn::Backbone> backbone_;
  std::shared_ptr<Heads> heads_;
  std::shared_ptr<CLModel> model_ = std::make_shared<CLModel>();

 private:
  OptimizerFactory make_optimizer_;
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
  Fix(BackboneFactory make_backbone, std::shared_ptr<Heads> heads, OptimizerFactory make_optimizer,
      bool freeze_heads);
  std::string name() const override { return "Fix"; }
  void setup_task(int task, int64_t num_classes) override;
  void train_mode() override;

 private:
  bool freeze_heads_;
};

/// Independent: a fresh backbone and head per task, each trained on its task alone (the
/// reference for forward transfer). A class-incremental test reads every task's head on the
/// tested task's backbone.
class Independent : public Finetuning {
 public:
  Independent(BackboneFactory make_backbone, std::shared_ptr<HeadsTIL> heads,
              OptimizerFactory make_optimizer, Scenario scenario);
  std::string name() const override { return "Independent"; }
  void setup_task(int task, int64_t num_classes) override;
  Tensor forward(const Tensor& x, int task) override;

 protected:
  void register_networks() override;

 private:
  Scenario scenario_;
  std::shared_ptr<HeadsTIL> til_heads_;
  std::vector<std::shared_ptr<nn::Backbone>> per_task_;
  std::shared_ptr<nn::Sequential> backbones_ = std::make_shared<nn::Sequential>();
};

/// Random: no training at all (the chance-level reference): everything frozen, in eval mode.
class Random : public CLAlgorithm {
 public:
  using CLAlgorithm::CLAlgorithm;
  std::string name() const override { return "Random"; }
  void setup_task(int task, int64_t num_classes) override;
  void train_mode() override;
};

/// LwF (Li & Hoiem 2017, as CLArena's lwf.py): after each task a frozen copy of backbone and
/// heads is kept; later tasks add, per earlier task (TIL) or over the earlier classes (CIL),
/// factor · mean_batch(−Σ softmax(teacher/T) · log_softmax(student/T)). The teacher requires
/// no grad, so its forward records no graph node and saves nothing.
class LwF : public Finetuning {
 public:
  struct Options {
    double distillation_reg_factor = 1.0, distillation_reg_temperature = 2.0;
  };
  LwF(BackboneFactory make_backbone, std::shared_ptr<Heads> heads, OptimizerFactory make_optimizer,
      Scenario scenario, Options options);
  std::string name() const override { return "LwF"; }
  void setup_task(int task, int64_t num_classes) override;
  void train_mode() override;
  Tensor forward(const Tensor& x, int task) override;
  Tensor loss(const Batch& batch, const Tensor& logits) override;
  void on_task_end(const TrainBatches&) override;
  /// The distillation term of a batch of the current task (0-d; zero on task 1).
  Tensor distillation(const Tensor& x, const Tensor& features, const Tensor& logits);
  nn::Backbone& teacher_backbone() { return *teacher_backbone_; }
  Heads& teacher_heads() { return *teacher_heads_; }

 protected:
  void register_networks() override;

 private:
  Scenario scenario_;
  Options options_;
  std::shared_ptr<nn::Backbone> teacher_backbone_;
  std::shared_ptr<Heads> teacher_heads_;
  std::shared_ptr<CLModel> teacher_ = std::make_shared<CLModel>();
  Tensor features_;  // the backbone's output of the batch being trained on
};

/// EWC (Kirkpatrick et al. 2017, as CLArena's ewc.py): after each task the diagonal Fisher
/// information F = mean over the task's training data of the squared gradients of the
/// cross-entropy (summed per batch as batch_size · grad², eval mode) and the backbone's
/// parameters θ* are kept; later tasks add factor/2 · Σ_tasks Σ F·(θ − θ*)² over the backbone.
class EWC : public Finetuning {
 public:
  EWC(BackboneFactory make_backbone, std::shared_ptr<Heads> heads, OptimizerFactory make_optimizer,
      double parameter_change_reg_factor);
  std::string name() const override { return "EWC"; }
  void setup_task(int task, int64_t num_classes) override;
  Tensor loss(const Batch& batch, const Tensor& logits) override;
  void on_task_end(const TrainBatches& train_batches) override;
  /// factor/2 · Σ over finished tasks of Σ F·(θ − θ*)² (0-d; zero before task 2).
  Tensor penalty() const;

 protected:
  void register_networks() override;

 private:
  double factor_;
  class Anchors;  // per task: Fisher and θ* of every backbone parameter, as buffers
  std::shared_ptr<Anchors> anchors_;
};

/// The width of the features the backbone cfg describes: the heads' input width.
int64_t backbone_output_dim(const ExperimentConfig& cfg);

/// The backbone cfg describes (cfg.backbone), for 1-channel square images of `input_dim`
/// pixels (the MLP takes any `input_dim`), initialised from `gen`, on cfg.device. Throws
/// ConfigError when a convolutional backbone gets inputs that are no square image.
std::shared_ptr<nn::Backbone> make_backbone(const ExperimentConfig& cfg, int64_t input_dim,
                                            Generator& gen);

/// The algorithm and networks cfg describes (cfg validated), for inputs of `input_dim`
/// pixels (batches [B, 1, H, W] with H·W = input_dim).
std::unique_ptr<CLAlgorithm> make_algorithm(const ExperimentConfig& cfg, int64_t input_dim);

}  // namespace clarena::cl
