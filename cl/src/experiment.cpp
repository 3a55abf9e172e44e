#include "clarena/cl/experiment.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <ostream>

#include "clarena/cl/algorithms.h"
#include "clarena/cl/data.h"
#include "clarena/cl/plots.h"
#include "clarena/core/atomic_file.h"
#include "clarena/nn/serialize.h"
#include "progress.h"
#include "results_io.h"
#include "text_format.h"

namespace clarena::cl {
namespace fs = std::filesystem;
namespace {

constexpr int64_t kEvalBatch = 1000;

/// Sums a stage of a task in batches: loss weighted by samples, exact correct counts.
StepStats evaluate(CLAlgorithm& algo, const CLBenchmark& bench, Stage stage, int task,
                   Device device) {
  const auto& all = bench.indices(stage, task);
  StepStats total;
  double loss_sum = 0;
  for (size_t start = 0; start < all.size(); start += kEvalBatch) {
    const size_t n = std::min<size_t>(kEvalBatch, all.size() - start);
    StepStats s = algo.evaluation_step(
        bench.batch(stage, task, std::span(all).subspan(start, n), device), task);
    loss_sum += s.loss * static_cast<double>(s.samples);
    total.correct += s.correct;
    total.samples += s.samples;
  }
  total.loss = total.samples ? loss_sum / static_cast<double>(total.samples) : 0;
  return total;
}

double accuracy_of(const StepStats& s) {
  return s.samples ? static_cast<double>(s.correct) / static_cast<double>(s.samples) : 0;
}

/// A NaN or infinite training loss stops the run; the checkpoint of the last finished task
/// stays as it is.
[[noreturn]] void throw_diverged(const ExperimentConfig& cfg, int task, int epoch, int64_t step,
                                 int64_t steps, double loss) {
  throw ValueError("training diverged: the loss is " + detail::format_repr(loss) + " at task " +
                   std::to_string(task) + ", epoch " + std::to_string(epoch) + ", step " +
                   std::to_string(step) + " of " + std::to_string(steps) + " (optimizer " +
                   cfg.optimizer + ", lr=" + detail::format_repr(cfg.lr) +
                   "); the run stopped, the checkpoint of the last finished task is kept; "
                   "try a smaller lr");
}

/// Trains the current task for the configured epochs; appends curves, returns its cost.
TaskCost train_task(CLAlgorithm& algo, const CLBenchmark& bench, const ExperimentConfig& cfg,
                    Device device, int task, std::vector<EpochRecord>& curves, Progress& progress) {
  TaskCost cost{.task = task};
  const auto& train = bench.indices(Stage::Train, task);
  const int64_t n = static_cast<int64_t>(train.size());
  const int64_t steps_per_epoch = (n + cfg.batch_size - 1) / cfg.batch_size;
  for (int epoch = 1; epoch <= cfg.epochs; ++epoch) {
    algo.on_train_epoch_start();
    std::vector<int64_t> order = epoch_order(n, cfg.seed, task, epoch);
    for (auto& i : order)
      i = train[static_cast<size_t>(i)];
    double loss_sum = 0;
    int64_t correct = 0, seen = 0;
    for (int64_t step = 0; step < steps_per_epoch; ++step) {
      const int64_t start = step * cfg.batch_size;
      const int64_t size = std::min<int64_t>(cfg.batch_size, n - start);
      Batch batch = bench.batch(Stage::Train, task, std::span(order).subspan(start, size), device);
      StepStats s = algo.training_step(batch);
      if (!std::isfinite(s.loss))
        throw_diverged(cfg, task, epoch, step + 1, steps_per_epoch, s.loss);
      loss_sum += s.loss * static_cast<double>(s.samples);
      correct += s.correct;
      seen += s.samples;
      cost.forward_ms += s.forward_s * 1e3;
      cost.backward_ms += s.backward_s * 1e3;
      cost.optimizer_ms += s.optimizer_s * 1e3;
      cost.nodes_per_step += static_cast<double>(s.nodes);
      cost.saved_bytes_per_step += static_cast<double>(s.saved_bytes);
      ++cost.steps;
      progress.step(task, epoch, step + 1, steps_per_epoch, s.loss,
                    static_cast<double>(correct) / static_cast<double>(seen));
    }
    StepStats val = evaluate(algo, bench, Stage::Validation, task, device);
    curves.push_back({task, epoch, loss_sum / static_cast<double>(seen),
                      static_cast<double>(correct) / static_cast<double>(seen), val.loss,
                      accuracy_of(val)});
    progress.epoch_done(curves.back());
  }
  const double steps = static_cast<double>(std::max<int64_t>(cost.steps, 1));
  for (double* v : {&cost.forward_ms, &cost.backward_ms, &cost.optimizer_ms, &cost.nodes_per_step,
                    &cost.saved_bytes_per_step})
    *v /= steps;
  return cost;
}

void write_results(const RunResult& r, int tasks_done) {
  write_acc_csv(r.output_dir / "acc.csv", r.accuracy);
  write_metrics(r.output_dir, r.accuracy);
  write_curves_csv(r.output_dir / "curves.csv", r.curves);
  write_costs_csv(r.output_dir / "costs.csv", r.costs);
  write_heatmap_svg(r.output_dir / "acc_heatmap.svg", r.accuracy, r.algorithm + ": accuracy");
  std::vector<double> average;
  for (int t = 1; t <= tasks_done; ++t)
    average.push_back(average_accuracy(r.accuracy, t));
  write_curve_svg(r.output_dir / "average_accuracy.svg", {{r.algorithm, average}},
                  r.algorithm + ": average accuracy", "after training task", "average accuracy");
}

}  // namespace

void write_metrics(const fs::path& output_dir, const AccuracyMatrix& accuracy,
                   const std::optional<std::vector<double>>& reference_diagonal) {
  write_file_atomic(output_dir / "metrics.json",
                    metrics_json(accuracy, reference_diagonal).dump(2) + "\n");
}

RunResult run_experiment(const ExperimentConfig& cfg, const RunOptions& options) {
  const auto wall_start = std::chrono::steady_clock::now();
  auto seconds = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count();
  };
  const Device device = Device::parse(cfg.device);
  CLBenchmark bench(cfg);
  auto algo = make_algorithm(cfg, bench.input_dim());

  RunResult result;
  result.algorithm = algo->name();
  result.accuracy = AccuracyMatrix(cfg.num_tasks);
  result.output_dir = resolved_output_dir(cfg, std::time(nullptr));
  check_output_dir(result.output_dir);  // IOError naming the path, before anything is written
  int tasks_done = 0;
  if (options.resume) {
    // Read and check everything before writing anything: a refused resume changes nothing.
    const fs::path checkpoint = checkpoint_dir(result.output_dir);
    CheckpointState state = read_checkpoint_state(checkpoint);
    for (int t = 1; t <= state.tasks_done; ++t)
      algo->setup_task(t, bench.num_classes(t));
    nn::load(algo->model(), checkpoint / "model.params");
    result.accuracy = state.accuracy;
    result.costs = state.costs;
    result.curves = state.curves;
    tasks_done = state.tasks_done;
  }
  fs::create_directories(result.output_dir);
  remove_stale_temps(result.output_dir);
  if (!options.resume || !fs::exists(result.output_dir / "config.yaml"))
    write_file_atomic(result.output_dir / "config.yaml", config_yaml(cfg));
  Manifest manifest(result.output_dir / "manifest.json", cfg, bench.describe(), options.resume,
                    tasks_done);
  // Checkpoint 0, before any training: from here on `resume` can finish the run.
  if (!options.resume)
    write_checkpoint(result.output_dir, algo->model(), {cfg, 0, result.accuracy, {}, {}});

  Progress progress(options.log, algo->name(), cfg.num_tasks, cfg.epochs,
                    cfg.progress && ::isatty(STDOUT_FILENO));
  const int first_task = tasks_done + 1;
  for (int task = first_task; task <= cfg.num_tasks; ++task) {
    algo->setup_task(task, bench.num_classes(task));
    result.costs.push_back(train_task(*algo, bench, cfg, device, task, result.curves, progress));
    for (int seen = 1; seen <= task; ++seen)
      result.accuracy.set(task, seen,
                          accuracy_of(evaluate(*algo, bench, Stage::Test, seen, device)));
    // Results first, then the checkpoint: a kill in between redoes this task on resume and
    // rewrites the same results.
    write_results(result, task);
    write_checkpoint(result.output_dir, algo->model(),
                     {cfg, task, result.accuracy, result.costs, result.curves});
    tasks_done = task;
    manifest.update(tasks_done, seconds());
    progress.task_done(task, result.accuracy);
    if (options.stop_after_task > 0 && task >= options.stop_after_task) break;
  }
  result.wall_seconds = seconds();
  if (first_task > cfg.num_tasks) manifest.update(tasks_done, result.wall_seconds);
  if (options.log) *options.log << format_matrix(result.accuracy, algo->name()) << std::flush;
  return result;
}

ExperimentConfig checkpoint_config(const fs::path& output_dir) {
  return read_checkpoint_state(checkpoint_dir(output_dir)).config;
}

std::vector<double> evaluate_checkpoint(const fs::path& output_dir, std::ostream* log) {
  const fs::path checkpoint = checkpoint_dir(output_dir);
  CheckpointState state = read_checkpoint_state(checkpoint);
  const ExperimentConfig& cfg = state.config;
  const Device device = Device::parse(cfg.device);
  CLBenchmark bench(cfg);
  auto algo = make_algorithm(cfg, bench.input_dim());
  for (int t = 1; t <= state.tasks_done; ++t)
    algo->setup_task(t, bench.num_classes(t));
  nn::load(algo->model(), checkpoint / "model.params");
  std::vector<double> accuracies;
  for (int t = 1; t <= state.tasks_done; ++t) {
    accuracies.push_back(accuracy_of(evaluate(*algo, bench, Stage::Test, t, device)));
    if (log) {
      char line[96];
      std::snprintf(line, sizeof(line), "test on task %d: %.4f\n", t, accuracies.back());
      *log << line;
    }
  }
  return accuracies;
}

}  // namespace clarena::cl
