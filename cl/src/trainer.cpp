#include "clarena/cl/trainer.h"

#include <cmath>

#include "clarena/core/autograd.h"
#include "clarena/core/ops.h"
#include "clarena/core/runtime.h"
#include "progress.h"
#include "text_format.h"

namespace clarena::cl {
namespace {

constexpr int64_t kEvalBatch = 1000;

/// Each step's loss and each sample's hit, kept on the device as the steps run and read in
/// one transfer (one synchronisation) when asked.
class Tally {
 public:
  void add(const Tensor& loss, const Tensor& logits, const Tensor& labels) {
    losses_.push_back(loss.detach().reshape({1, 1}));
    hits_.push_back(eq(argmax(logits.detach(), 1), labels).reshape({1, -1}));
    samples_.push_back(labels.numel());
  }
  /// Per-step losses, as double.
  std::vector<double> losses() const {
    if (losses_.empty()) return {};
    Tensor all = concat(losses_, 1);
    if (all.dtype() == DType::Float64) return all.to_vector<double>();
    std::vector<float> values = all.to_vector<float>();
    return {values.begin(), values.end()};
  }
  int64_t correct() const {
    int64_t total = 0;
    if (!hits_.empty())
      for (int64_t hit : concat(hits_, 1).to_vector<int64_t>())
        total += hit;
    return total;
  }
  /// Loss averaged over samples (each step weighted by its batch) and the correct count.
  Evaluation read() const {
    Evaluation e{.correct = correct()};
    double loss_sum = 0;
    const std::vector<double> step_losses = losses();
    for (size_t i = 0; i < step_losses.size(); ++i) {
      loss_sum += step_losses[i] * static_cast<double>(samples_[i]);
      e.samples += samples_[i];
    }
    e.loss = e.samples ? loss_sum / static_cast<double>(e.samples) : 0;
    return e;
  }

 private:
  std::vector<Tensor> losses_, hits_;
  std::vector<int64_t> samples_;
};

[[noreturn]] void throw_diverged(const ExperimentConfig& cfg, int task, int epoch, int64_t step,
                                 int64_t steps, double loss) {
  throw ValueError("training diverged: the loss is " + detail::format_repr(loss) + " at task " +
                   std::to_string(task) + ", epoch " + std::to_string(epoch) + ", step " +
                   std::to_string(step) + " of " + std::to_string(steps) + " (optimizer " +
                   to_string(cfg.optimizer) + ", lr=" + detail::format_repr(cfg.lr) +
                   "); the run stopped, the checkpoint of the last finished task is kept; "
                   "try a smaller lr");
}

/// Stops the run at the first non-finite loss among the steps so far.
void check_finite(const Tally& tally, const ExperimentConfig& cfg, int task, int epoch,
                  int64_t steps) {
  const std::vector<double> losses = tally.losses();
  for (size_t i = 0; i < losses.size(); ++i)
    if (!std::isfinite(losses[i]))
      throw_diverged(cfg, task, epoch, static_cast<int64_t>(i) + 1, steps, losses[i]);
}

}  // namespace

Trainer::Trainer(const CLBenchmark& bench, const ExperimentConfig& cfg, Progress* progress)
    : bench_(bench), cfg_(cfg), progress_(progress) {}

TaskCost Trainer::fit(CLAlgorithm& algo, std::vector<EpochRecord>& curves) {
  const int task = algo.task();
  const Device device = cfg_.device;
  TaskCost cost{.task = task};
  const auto& train = bench_.indices(Stage::Train, task);
  const int64_t n = static_cast<int64_t>(train.size());
  const int64_t steps = (n + cfg_.batch_size - 1) / cfg_.batch_size;
  // The timed step of each block of kTimingEvery: mid-block, past the first step's warm-up.
  const int64_t timed_offset = std::min<int64_t>(kTimingEvery / 2, steps - 1);
  int64_t timed_steps = 0;
  for (int epoch = 1; epoch <= cfg_.epochs; ++epoch) {
    algo.train_mode();
    std::vector<int64_t> order = epoch_order(n, cfg_.seed, task, epoch);
    for (auto& i : order)
      i = train[static_cast<size_t>(i)];
    Tally tally;
    for (int64_t step = 0; step < steps; ++step) {
      const int64_t start = step * cfg_.batch_size;
      const int64_t size = std::min<int64_t>(cfg_.batch_size, n - start);
      Batch batch = bench_.batch(Stage::Train, task, std::span(order).subspan(start, size), device);
      const bool timed = step % kTimingEvery == timed_offset;
      const Step s = train_step(algo, batch, timed);
      cost.forward_ms += s.forward_ms;
      cost.backward_ms += s.backward_ms;
      cost.optimizer_ms += s.optimizer_ms;
      timed_steps += timed;
      cost.nodes_per_step += static_cast<double>(s.nodes);
      cost.saved_bytes_per_step += static_cast<double>(s.saved_bytes);
      ++cost.steps;
      tally.add(s.loss, s.logits, batch.y);
      if (timed) {  // the device is idle now: reading costs no extra synchronisation
        check_finite(tally, cfg_, task, epoch, steps);
        if (progress_)
          progress_->step(task, epoch, step + 1, steps, s.loss.item(), accuracy(s.logits, batch.y));
      }
    }
    check_finite(tally, cfg_, task, epoch, steps);
    const Evaluation train_eval = tally.read();
    const Evaluation val = test(algo, Stage::Validation, task);
    curves.push_back(
        {task, epoch, train_eval.loss, train_eval.accuracy(), val.loss, val.accuracy()});
    if (progress_) progress_->epoch_done(curves.back());
  }
  const double timed = static_cast<double>(std::max<int64_t>(timed_steps, 1));
  cost.forward_ms /= timed;
  cost.backward_ms /= timed;
  cost.optimizer_ms /= timed;
  const double all = static_cast<double>(std::max<int64_t>(cost.steps, 1));
  cost.nodes_per_step /= all;
  cost.saved_bytes_per_step /= all;
  algo.on_task_end(
      [&](const std::function<void(const Batch&)>& fn) { for_each_train_batch(task, fn); });
  return cost;
}

Trainer::Step Trainer::train_step(CLAlgorithm& algo, const Batch& batch, bool timed) const {
  Step s;
  autograd::reset_stats();
  auto forward = [&] { s.loss = algo.loss(batch, s.logits = algo.forward(batch.x, algo.task())); };
  auto backward = [&] {
    if (!s.loss.requires_grad()) return;
    algo.optimizer().zero_grad();
    s.loss.backward();
  };
  auto update = [&] {
    if (s.loss.requires_grad()) algo.optimizer().step();
  };
  if (timed) {
    s.forward_ms = time_ms(cfg_.device, forward);
    s.nodes = autograd::stats().nodes_recorded;
    s.backward_ms = time_ms(cfg_.device, backward);
    s.optimizer_ms = time_ms(cfg_.device, update);
  } else {
    forward();
    s.nodes = autograd::stats().nodes_recorded;
    backward();
    update();
  }
  s.saved_bytes = autograd::stats().peak_saved_bytes;
  return s;
}

Evaluation Trainer::test(CLAlgorithm& algo, Stage stage, int task) {
  autograd::NoGradGuard no_grad;
  algo.model().eval();
  const auto& all = bench_.indices(stage, task);
  Tally tally;
  for (size_t start = 0; start < all.size(); start += kEvalBatch) {
    const size_t n = std::min<size_t>(kEvalBatch, all.size() - start);
    Batch batch = bench_.batch(stage, task, std::span(all).subspan(start, n), cfg_.device);
    Tensor logits = algo.forward(batch.x, task);
    tally.add(cross_entropy(logits, batch.y), logits, batch.y);
  }
  return tally.read();
}

void Trainer::for_each_train_batch(int task, const std::function<void(const Batch&)>& fn) const {
  const auto& train = bench_.indices(Stage::Train, task);
  for (size_t start = 0; start < train.size(); start += static_cast<size_t>(cfg_.batch_size)) {
    const size_t n = std::min(static_cast<size_t>(cfg_.batch_size), train.size() - start);
    fn(bench_.batch(Stage::Train, task, std::span(train).subspan(start, n), cfg_.device));
  }
}

}  // namespace clarena::cl
