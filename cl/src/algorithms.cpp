#include "clarena/cl/algorithms.h"

#include <chrono>
#include <cmath>

#include "clarena/core/autograd.h"
#include "clarena/core/ops.h"
#include "clarena/kernels/backend.h"

namespace clarena::cl {
namespace {

using Clock = std::chrono::steady_clock;

/// Seconds since `start`, after the device finished what was queued (GPU work is async).
double seconds_since(Clock::time_point start, Device device) {
  kernels::backend_for(device).synchronize();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Stream tags for Generator::derive: each kind of random draw gets its own stream.
constexpr uint64_t kHeadStream = 1, kBackboneStream = 2;

}  // namespace

Tensor CLModel::forward(const Tensor&) {
  throw ValueError("CL model: forward needs a task id; use the algorithm's steps");
}

CLAlgorithm::CLAlgorithm(const ExperimentConfig& cfg, int64_t input_dim, Device device)
    : cfg_(cfg), input_dim_(input_dim), device_(device), model_(std::make_shared<CLModel>()) {
  backbone_ = make_backbone(Generator::derive(cfg.seed, kBackboneStream, 0));
  heads_ = make_heads(scenario_from_string(cfg.scenario), cfg.hidden_dims.back());
}

std::shared_ptr<nn::MLP> CLAlgorithm::make_backbone(uint64_t seed) const {
  Generator gen(seed);
  auto mlp = std::make_shared<nn::MLP>(input_dim_, cfg_.hidden_dims, gen,
                                       nn::MLPOptions{.batch_norm = cfg_.batch_norm});
  mlp->to(device_);
  return mlp;
}

nn::MLP& CLAlgorithm::backbone_for(int) {
  return *backbone_;
}

void CLAlgorithm::register_networks() {
  model_->add("backbone", backbone_);
  model_->add("heads", heads_);
}

void CLAlgorithm::setup_task(int task, int64_t num_classes) {
  if (!registered_) {
    register_networks();
    registered_ = true;
  }
  Generator gen(Generator::derive(cfg_.seed, kHeadStream, static_cast<uint64_t>(task)));
  heads_->setup_task(task, num_classes, gen, device_);
  task_ = task;
  make_optimizer();
}

void CLAlgorithm::make_optimizer() {
  std::vector<Tensor> params = trainable_parameters();
  if (cfg_.optimizer == "adam")
    optimizer_ = std::make_unique<optim::Adam>(
        params, optim::AdamOptions{.lr = cfg_.lr, .weight_decay = cfg_.weight_decay});
  else
    optimizer_ = std::make_unique<optim::SGD>(
        params, optim::SGDOptions{
                    .lr = cfg_.lr, .momentum = cfg_.momentum, .weight_decay = cfg_.weight_decay});
}

std::vector<Tensor> CLAlgorithm::trainable_parameters() const {
  std::vector<Tensor> out;
  for (const Tensor& p : model_->parameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}

void CLAlgorithm::on_train_epoch_start() {
  model_->train();
}

StepStats CLAlgorithm::training_step(const Batch& batch) {
  StepStats s;
  autograd::reset_stats();
  auto start = Clock::now();
  Tensor logits = forward(batch.x, task_);
  Tensor loss = cross_entropy(logits, batch.y);
  s.forward_s = seconds_since(start, device_);
  s.nodes = autograd::stats().nodes_recorded;
  s.loss = loss.item();
  // No gradient when nothing trains (Fix with freeze_heads). A NaN or infinite loss (a
  // diverged run) must not reach the parameters either: no update, and the task loop stops
  // the run on the non-finite s.loss.
  if (loss.requires_grad() && std::isfinite(s.loss)) {
    start = Clock::now();
    optimizer_->zero_grad();
    loss.backward();
    s.backward_s = seconds_since(start, device_);
    start = Clock::now();
    optimizer_->step();
    s.optimizer_s = seconds_since(start, device_);
  }
  s.saved_bytes = autograd::stats().peak_saved_bytes;
  s.correct = count_correct(logits, batch.y);
  s.samples = batch.y.numel();
  return s;
}

StepStats CLAlgorithm::evaluation_step(const Batch& batch, int task) {
  autograd::NoGradGuard no_grad;
  model_->eval();
  Tensor logits = forward(batch.x, task);
  StepStats s;
  s.loss = cross_entropy(logits, batch.y).item();
  s.correct = count_correct(logits, batch.y);
  s.samples = batch.y.numel();
  return s;
}

void Fix::setup_task(int task, int64_t num_classes) {
  if (task > 1) backbone_->requires_grad_(false);
  CLAlgorithm::setup_task(task, num_classes);
  if (task > 1 && cfg_.freeze_heads) {
    heads_->requires_grad_(false);
    make_optimizer();  // now over no parameter at all
  }
}

void Fix::on_train_epoch_start() {
  CLAlgorithm::on_train_epoch_start();
  if (task_ > 1) backbone_->eval();
}

Independent::Independent(const ExperimentConfig& cfg, int64_t input_dim, Device device)
    : Finetuning(cfg, input_dim, device) {
  backbone_.reset();  // one backbone per task instead, made as each task starts
}

void Independent::register_networks() {
  model_->add("backbones", backbones_);
  model_->add("heads", heads_);
}

void Independent::setup_task(int task, int64_t num_classes) {
  // Earlier tasks' networks are done: freezing them keeps them out of the new optimizer.
  for (auto& earlier : per_task_)
    earlier->requires_grad_(false);
  for (int t = 1; t < task; ++t)
    heads_->head(t).requires_grad_(false);
  per_task_.push_back(make_backbone(Generator::derive(cfg_.seed, kBackboneStream, task)));
  backbones_->push_back(per_task_.back());
  CLAlgorithm::setup_task(task, num_classes);
}

nn::MLP& Independent::backbone_for(int task) {
  return *per_task_.at(static_cast<size_t>(task - 1));
}

StepStats Random::training_step(const Batch& batch) {
  return evaluation_step(batch, task_);
}

std::unique_ptr<CLAlgorithm> make_algorithm(const ExperimentConfig& cfg, int64_t input_dim) {
  const Device device = Device::parse(cfg.device);
  if (cfg.algorithm == "finetuning") return std::make_unique<Finetuning>(cfg, input_dim, device);
  if (cfg.algorithm == "fix") return std::make_unique<Fix>(cfg, input_dim, device);
  if (cfg.algorithm == "independent") return std::make_unique<Independent>(cfg, input_dim, device);
  if (cfg.algorithm == "random") return std::make_unique<Random>(cfg, input_dim, device);
  throw ConfigError("config key `algorithm`: unknown algorithm `" + cfg.algorithm +
                    "`, expected one of: finetuning, fix, independent, random");
}

}  // namespace clarena::cl
