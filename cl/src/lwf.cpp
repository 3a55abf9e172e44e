// LwF: distillation from a frozen copy of the model as it was after the previous task.
#include "clarena/cl/algorithms.h"
#include "clarena/core/ops.h"

namespace clarena::cl {

LwF::LwF(BackboneFactory make_backbone, std::shared_ptr<Heads> heads,
         OptimizerFactory make_optimizer, Scenario scenario, Options options)
    : Finetuning(std::move(make_backbone), std::move(heads), std::move(make_optimizer)),
      scenario_(scenario),
      options_(options),
      teacher_backbone_(make_backbone_(0)),
      teacher_heads_(heads_->clone()) {
  teacher_->add("backbone", teacher_backbone_);
  teacher_->add("heads", teacher_heads_);
  teacher_->requires_grad_(false);
}

void LwF::register_networks() {
  CLAlgorithm::register_networks();
  model_->add("teacher", teacher_);  // checkpointed, so that a resumed run distils the same
}

void LwF::setup_task(int task, int64_t num_classes) {
  CLAlgorithm::setup_task(task, num_classes);
  teacher_heads_->setup_task(task, num_classes);  // same structure; its values come at task end
  teacher_->requires_grad_(false);
}

void LwF::train_mode() {
  CLAlgorithm::train_mode();
  teacher_->eval();
}

Tensor LwF::forward(const Tensor& x, int task) {
  Tensor features = (*backbone_)(x);
  features_ = model_->is_training() ? features : Tensor();
  return heads_->forward(features, task);
}

Tensor LwF::loss(const Batch& batch, const Tensor& logits) {
  Tensor classification = CLAlgorithm::loss(batch, logits);
  if (task() == 1) return classification;
  return classification + distillation(batch.x, features_, logits);
}

Tensor LwF::distillation(const Tensor& x, const Tensor& features, const Tensor& logits) {
  const double temperature = options_.distillation_reg_temperature;
  // -mean over the batch of sum_c softmax(teacher/T)_c * log_softmax(student/T)_c.
  auto soft_cross_entropy = [temperature](const Tensor& student, const Tensor& teacher) {
    Tensor target = softmax(teacher, temperature);  // teacher: requires no grad, records nothing
    return mean(sum(mul(target, log_softmax(student, temperature)), 1)) * -1.0;
  };
  Tensor teacher_features = (*teacher_backbone_)(x);
  std::vector<Tensor> terms;
  if (scenario_ == Scenario::CIL) {  // one softmax over every earlier class
    const int64_t old = heads_->classes_before(task());
    terms.push_back(
        soft_cross_entropy(narrow(logits, 1, 0, old),
                           narrow(teacher_heads_->forward(teacher_features, task()), 1, 0, old)));
  } else {  // one term per earlier task's head, summed as CLArena does
    for (int t = 1; t < task(); ++t)
      terms.push_back(soft_cross_entropy(heads_->forward(features, t),
                                         teacher_heads_->forward(teacher_features, t)));
  }
  if (terms.empty()) return Tensor::zeros({}, logits.dtype(), logits.device());
  return sum(terms) * options_.distillation_reg_factor;
}

void LwF::on_task_end(const TrainBatches&) {
  // The teacher becomes the model as it is now.
  teacher_backbone_->copy_state_from(*backbone_);
  teacher_heads_->copy_state_from(*heads_);
}

}  // namespace clarena::cl
