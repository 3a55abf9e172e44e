#include "clarena/cl/heads.h"

#include "clarena/core/autograd.h"
#include "clarena/core/ops.h"

namespace clarena::cl {
namespace {

constexpr uint64_t kHeadStream = 1;  // Generator::derive stream of the heads' draws

}  // namespace

Tensor Heads::forward(const Tensor&) {
  throw ValueError("heads: forward needs a task id, call forward(features, task)");
}

int64_t Heads::classes_before(int task) const {
  check_task(task);
  int64_t total = 0;
  for (int t = 1; t < task; ++t)
    total += classes_[static_cast<size_t>(t - 1)];
  return total;
}

std::shared_ptr<Heads> Heads::copy_into(std::shared_ptr<Heads> empty) const {
  for (int t = 1; t <= num_tasks(); ++t)
    empty->setup_task(t, classes_[static_cast<size_t>(t - 1)]);
  empty->copy_state_from(*this);
  return empty;
}

void Heads::check_task(int task) const {
  if (task < 1 || task > num_tasks())
    throw ValueError("heads: no head for task " + std::to_string(task) + " (" +
                     std::to_string(num_tasks()) + " created)");
}

std::shared_ptr<nn::Linear> Heads::new_head(int task, int64_t num_classes) {
  if (task != num_tasks() + 1)
    throw ValueError("heads: task " + std::to_string(task) + " set up after " +
                     std::to_string(num_tasks()) + " heads; tasks must arrive in order");
  Generator gen(Generator::derive(seed_, kHeadStream, static_cast<uint64_t>(task)));
  auto head = std::make_shared<nn::Linear>(input_dim_, num_classes, gen);
  head->to(device_);
  classes_.push_back(num_classes);
  return head;
}

void HeadsTIL::setup_task(int task, int64_t num_classes) {
  heads_.push_back(register_module(std::to_string(task), new_head(task, num_classes)));
}

nn::Linear& HeadsTIL::head(int task) {
  check_task(task);
  return *heads_[static_cast<size_t>(task - 1)];
}

Tensor HeadsTIL::forward(const Tensor& features, int task) {
  return head(task)(features);
}

std::shared_ptr<Heads> HeadsTIL::clone() const {
  return copy_into(std::make_shared<HeadsTIL>(input_dim_, seed_, device_));
}

void HeadsCIL::setup_task(int task, int64_t num_classes) {
  auto head = new_head(task, num_classes);
  const Tensor weight = head->weight().detach(), bias = head->bias().detach();
  if (task == 1) {
    weight_ = register_parameter("weight", weight);
    bias_ = register_parameter("bias", bias);
    return;
  }
  // The new classes' rows go below the old ones; the handles (and a frozen flag) stay.
  autograd::NoGradGuard no_grad;
  weight_.set_data(concat({weight_.detach(), weight}, 0));
  const int64_t old = bias_.numel();
  bias_.set_data(
      concat({bias_.detach().reshape({1, old}), bias.reshape({1, num_classes})}, 1).reshape({-1}));
}

Tensor HeadsCIL::forward(const Tensor& features, int task) {
  check_task(task);
  return linear(features, weight_, bias_);
}

std::shared_ptr<Heads> HeadsCIL::clone() const {
  return copy_into(std::make_shared<HeadsCIL>(input_dim_, seed_, device_));
}

}  // namespace clarena::cl
