#include "clarena/cl/algorithms.h"

#include <cmath>

#include "clarena/core/ops.h"
#include "clarena/nn/backbones.h"

namespace clarena::cl {

Tensor CLModel::forward(const Tensor&) {
  throw ValueError("CL model: forward needs a task id; use the algorithm's forward(x, task)");
}

CLAlgorithm::CLAlgorithm(BackboneFactory make_backbone, std::shared_ptr<Heads> heads,
                         OptimizerFactory make_optimizer)
    : make_backbone_(std::move(make_backbone)),
      backbone_(make_backbone_(0)),
      heads_(std::move(heads)),
      make_optimizer_(std::move(make_optimizer)) {}

void CLAlgorithm::begin_task(int task, int64_t num_classes) {
  if (!registered_) {
    register_networks();
    registered_ = true;
  }
  task_ = task;
  setup_task(task, num_classes);
  optimizer_ = make_optimizer_(trainable_parameters());
}

void CLAlgorithm::register_networks() {
  model_->add("backbone", backbone_);
  model_->add("heads", heads_);
}

void CLAlgorithm::setup_task(int task, int64_t num_classes) {
  heads_->setup_task(task, num_classes);
}

void CLAlgorithm::train_mode() {
  model_->train();
}

Tensor CLAlgorithm::forward(const Tensor& x, int task) {
  return heads_->forward((*backbone_)(x), task);
}

Tensor CLAlgorithm::loss(const Batch& batch, const Tensor& logits) {
  return cross_entropy(logits, batch.y);
}

std::vector<Tensor> CLAlgorithm::trainable_parameters() const {
  std::vector<Tensor> out;
  for (const Tensor& p : model_->parameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}

// --- Fix ------------------------------------------------------------------------------------

Fix::Fix(BackboneFactory make_backbone, std::shared_ptr<Heads> heads,
         OptimizerFactory make_optimizer, bool freeze_heads)
    : Finetuning(std::move(make_backbone), std::move(heads), std::move(make_optimizer)),
      freeze_heads_(freeze_heads) {}

void Fix::setup_task(int task, int64_t num_classes) {
  CLAlgorithm::setup_task(task, num_classes);
  if (task == 1) return;
  backbone_->requires_grad_(false);
  if (freeze_heads_) heads_->requires_grad_(false);
}

void Fix::train_mode() {
  CLAlgorithm::train_mode();
  if (task() > 1) backbone_->eval();
}

// --- Independent ----------------------------------------------------------------------------

Independent::Independent(BackboneFactory make_backbone, std::shared_ptr<HeadsTIL> heads,
                         OptimizerFactory make_optimizer, Scenario scenario)
    : Finetuning(std::move(make_backbone), heads, std::move(make_optimizer)),
      scenario_(scenario),
      til_heads_(std::move(heads)) {
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
  heads_->requires_grad_(false);
  per_task_.push_back(make_backbone_(static_cast<uint64_t>(task)));
  backbones_->push_back(per_task_.back());
  CLAlgorithm::setup_task(task, num_classes);
}

Tensor Independent::forward(const Tensor& x, int task) {
  Tensor features = (*per_task_.at(static_cast<size_t>(task - 1)))(x);
  if (scenario_ == Scenario::TIL) return heads_->forward(features, task);
  std::vector<Tensor> logits;  // CIL: every task's classes
  for (int t = 1; t <= heads_->num_tasks(); ++t)
    logits.push_back(til_heads_->forward(features, t));
  return logits.size() == 1 ? logits.front() : concat(logits, 1);
}

// --- Random ---------------------------------------------------------------------------------

void Random::setup_task(int task, int64_t num_classes) {
  CLAlgorithm::setup_task(task, num_classes);
  model_->requires_grad_(false);
}

void Random::train_mode() {
  model_->eval();
}

// --- from the config ------------------------------------------------------------------------

int64_t backbone_output_dim(const ExperimentConfig& cfg) {
  switch (cfg.backbone) {
    case BackboneKind::MLP:
      return cfg.hidden_dims.back();
    case BackboneKind::CNN:
      return nn::CNNOptions{}.output_dim;
    case BackboneKind::ResNet18:
      return 512;
  }
  throw ConfigError("config key `backbone`: unknown backbone");
}

std::shared_ptr<nn::Backbone> make_backbone(const ExperimentConfig& cfg, int64_t input_dim,
                                            Generator& gen) {
  std::shared_ptr<nn::Backbone> backbone;
  switch (cfg.backbone) {
    case BackboneKind::MLP:
      backbone = std::make_shared<nn::MLP>(input_dim, cfg.hidden_dims, gen,
                                           nn::MLPOptions{.batch_norm = cfg.batch_norm});
      break;
    case BackboneKind::CNN:
    case BackboneKind::ResNet18: {
      // 1-channel square images (MNIST-format IDX files hold one channel).
      const auto side = static_cast<int64_t>(std::llround(std::sqrt(double(input_dim))));
      if (side * side != input_dim || side < 4)
        throw ConfigError("config key `backbone`: backbone=" + to_string(cfg.backbone) +
                          " needs square images of at least 4x4 pixels, got " +
                          std::to_string(input_dim) + " pixels");
      if (cfg.backbone == BackboneKind::CNN)
        backbone = std::make_shared<nn::CNN>(1, side, side, gen);
      else
        backbone = std::make_shared<nn::ResNet18>(1, gen);
      break;
    }
  }
  if (!backbone) throw ConfigError("config key `backbone`: unknown backbone");
  backbone->to(cfg.device);
  return backbone;
}

std::unique_ptr<CLAlgorithm> make_algorithm(const ExperimentConfig& cfg, int64_t input_dim) {
  const Device device = cfg.device;
  const int64_t features = backbone_output_dim(cfg);
  BackboneFactory backbone = [cfg, input_dim](uint64_t stream) {
    constexpr uint64_t kBackboneStream = 2;  // Generator::derive stream of the backbones' draws
    Generator gen(Generator::derive(cfg.seed, kBackboneStream, stream));
    return make_backbone(cfg, input_dim, gen);
  };
  OptimizerFactory optimizer =
      [cfg](const std::vector<Tensor>& params) -> std::unique_ptr<optim::Optimizer> {
    if (cfg.optimizer == OptimizerKind::Adam)
      return std::make_unique<optim::Adam>(
          params, optim::AdamOptions{.lr = cfg.lr, .weight_decay = cfg.weight_decay});
    return std::make_unique<optim::SGD>(
        params, optim::SGDOptions{
                    .lr = cfg.lr, .momentum = cfg.momentum, .weight_decay = cfg.weight_decay});
  };
  auto til_heads = [&] { return std::make_shared<HeadsTIL>(features, cfg.seed, device); };
  std::shared_ptr<Heads> heads;
  if (cfg.scenario == Scenario::TIL)
    heads = til_heads();
  else
    heads = std::make_shared<HeadsCIL>(features, cfg.seed, device);

  switch (cfg.algorithm) {
    case Algorithm::Finetuning:
      return std::make_unique<Finetuning>(backbone, heads, optimizer);
    case Algorithm::Fix:
      return std::make_unique<Fix>(backbone, heads, optimizer, cfg.freeze_heads);
    case Algorithm::Independent:
      return std::make_unique<Independent>(backbone, til_heads(), optimizer, cfg.scenario);
    case Algorithm::Random:
      return std::make_unique<Random>(backbone, heads, optimizer);
    case Algorithm::LwF:
      return std::make_unique<LwF>(
          backbone, heads, optimizer, cfg.scenario,
          LwF::Options{.distillation_reg_factor = cfg.distillation_reg_factor,
                       .distillation_reg_temperature = cfg.distillation_reg_temperature});
    case Algorithm::EWC:
      return std::make_unique<EWC>(backbone, heads, optimizer, cfg.parameter_change_reg_factor);
  }
  throw ConfigError("config key `algorithm`: unknown algorithm");
}

}  // namespace clarena::cl
