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
#include "clarena/cl/trainer.h"
#include "clarena/core/atomic_file.h"
#include "clarena/nn/serialize.h"
#include "progress.h"
#include "results_io.h"
#include "text_format.h"

namespace clarena::cl {
namespace fs = std::filesystem;
namespace {

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
      algo->begin_task(t, bench.num_classes(t));
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
  Trainer trainer(bench, cfg, &progress);
  const int first_task = tasks_done + 1;
  for (int task = first_task; task <= cfg.num_tasks; ++task) {
    algo->begin_task(task, bench.num_classes(task));
    result.costs.push_back(trainer.fit(*algo, result.curves));
    for (int seen = 1; seen <= task; ++seen)
      result.accuracy.set(task, seen, trainer.test(*algo, Stage::Test, seen).accuracy());
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
  CLBenchmark bench(cfg);
  auto algo = make_algorithm(cfg, bench.input_dim());
  for (int t = 1; t <= state.tasks_done; ++t)
    algo->begin_task(t, bench.num_classes(t));
  nn::load(algo->model(), checkpoint / "model.params");
  Trainer trainer(bench, cfg);
  std::vector<double> accuracies;
  for (int t = 1; t <= state.tasks_done; ++t) {
    accuracies.push_back(trainer.test(*algo, Stage::Test, t).accuracy());
    if (log) {
      char line[96];
      std::snprintf(line, sizeof(line), "test on task %d: %.4f\n", t, accuracies.back());
      *log << line;
    }
  }
  return accuracies;
}

}  // namespace clarena::cl
