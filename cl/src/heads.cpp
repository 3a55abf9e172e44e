#include "clarena/cl/heads.h"

#include "clarena/core/ops.h"

namespace clarena::cl {

void Heads::setup_task(int task, int64_t num_classes, Generator& gen, Device device) {
  if (task != num_heads() + 1)
    throw ValueError("heads: task " + std::to_string(task) + " set up after " +
                     std::to_string(num_heads()) + " heads; tasks must arrive in order");
  auto head = std::make_shared<nn::Linear>(input_dim_, num_classes, gen);
  head->to(device);
  heads_.push_back(register_module(std::to_string(task), head));
}

nn::Linear& Heads::head(int task) {
  if (task < 1 || task > num_heads())
    throw ValueError("heads: no head for task " + std::to_string(task) + " (" +
                     std::to_string(num_heads()) + " created)");
  return *heads_[static_cast<size_t>(task - 1)];
}

Tensor Heads::forward(const Tensor& features, int task) {
  if (scenario_ == Scenario::TIL) return head(task)(features);
  head(task);  // checks the task exists
  std::vector<Tensor> logits;
  for (auto& h : heads_)
    logits.push_back((*h)(features));
  return logits.size() == 1 ? logits.front() : concat(logits, 1);
}

Tensor Heads::forward(const Tensor&) {
  throw ValueError("heads: forward needs a task id, call forward(features, task)");
}

}  // namespace clarena::cl
