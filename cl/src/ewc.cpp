// EWC: a quadratic penalty, weighted by the diagonal Fisher information, that holds the
// backbone near its values after each earlier task.
#include "clarena/cl/algorithms.h"
#include "clarena/core/autograd.h"
#include "clarena/core/ops.h"

namespace clarena::cl {

/// Per task, a child "<task>" holding the Fisher information and the values θ* of every
/// backbone parameter as buffers ("<name>.fisher", "<name>.theta"): checkpointed with the model.
class EWC::Anchors : public nn::Module {
 public:
  struct Task : nn::Module {
    std::vector<Tensor> fisher, theta;  // in the backbone's parameter order
    Tensor forward(const Tensor&) override { throw ValueError("EWC anchors are not a layer"); }
    void add(const std::string& name, const Tensor& param) {
      auto zeros = [&] { return Tensor::zeros(param.shape(), param.dtype(), param.device()); };
      fisher.push_back(register_buffer(name + ".fisher", zeros()));
      theta.push_back(register_buffer(name + ".theta", zeros()));
    }
  };
  std::vector<std::shared_ptr<Task>> tasks;

  Tensor forward(const Tensor&) override { throw ValueError("EWC anchors are not a layer"); }
  void add_task(int task, const nn::NamedTensors& params) {
    auto slot = std::make_shared<Task>();
    for (const auto& [name, param] : params)
      slot->add(name, param);
    tasks.push_back(register_module(std::to_string(task), slot));
  }
};

EWC::EWC(BackboneFactory make_backbone, std::shared_ptr<Heads> heads,
         OptimizerFactory make_optimizer, double parameter_change_reg_factor)
    : Finetuning(std::move(make_backbone), std::move(heads), std::move(make_optimizer)),
      factor_(parameter_change_reg_factor),
      anchors_(std::make_shared<Anchors>()) {}

void EWC::register_networks() {
  CLAlgorithm::register_networks();
  model_->add("ewc", anchors_);
}

void EWC::setup_task(int task, int64_t num_classes) {
  CLAlgorithm::setup_task(task, num_classes);
  anchors_->add_task(task, backbone_->named_parameters());  // filled when the task ends
}

Tensor EWC::loss(const Batch& batch, const Tensor& logits) {
  Tensor classification = CLAlgorithm::loss(batch, logits);
  return task() == 1 ? classification : classification + penalty();
}

Tensor EWC::penalty() const {
  const nn::NamedTensors params = backbone_->named_parameters();
  std::vector<Tensor> terms;
  for (int t = 1; t < task(); ++t) {
    const Anchors::Task& anchor = *anchors_->tasks.at(static_cast<size_t>(t - 1));
    for (size_t i = 0; i < params.size(); ++i)
      terms.push_back(sum(mul(anchor.fisher[i], square(params[i].second - anchor.theta[i]))));
  }
  if (terms.empty())
    return Tensor::zeros({}, params.front().second.dtype(), params.front().second.device());
  return sum(terms) * (factor_ / 2);
}

void EWC::on_task_end(const TrainBatches& train_batches) {
  Anchors::Task& anchor = *anchors_->tasks.at(static_cast<size_t>(task() - 1));
  const nn::NamedTensors params = backbone_->named_parameters();
  // F = (1/N) Σ_batches batch_size · grad² of the batch's mean cross-entropy, in eval mode.
  model_->eval();
  int64_t samples = 0;
  train_batches([&](const Batch& batch) {
    model_->zero_grad();
    cross_entropy(forward(batch.x, task()), batch.y).backward();
    const double batch_size = static_cast<double>(batch.y.numel());
    autograd::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].second.grad().defined())
        anchor.fisher[i].copy_(anchor.fisher[i] + square(params[i].second.grad()) * batch_size);
    samples += batch.y.numel();
  });
  model_->zero_grad();
  autograd::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    if (samples > 0)
      anchor.fisher[i].copy_(anchor.fisher[i] * (1.0 / static_cast<double>(samples)));
    anchor.theta[i].copy_(params[i].second);
  }
}

}  // namespace clarena::cl
