// The `clarena` command: run, compare, resume and evaluate continual-learning experiments.
#include <CLI/CLI.hpp>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clarena/cl/config.h"
#include "clarena/cl/experiment.h"
#include "clarena/cl/metrics.h"
#include "clarena/cl/plots.h"

namespace {
using namespace clarena;
using namespace clarena::cl;

// Exit codes: 0 done, 1 a failure (I/O, device, a diverged run), 2 a refused config or usage.
constexpr int kFailure = 1;
constexpr int kUsageError = 2;

/// A YAML file (any argument ending in .yaml/.yml) followed by key=value overrides.
ExperimentConfig resolve_config(const std::vector<std::string>& args) {
  ExperimentConfig cfg;
  for (const std::string& arg : args) {
    const bool is_yaml = arg.ends_with(".yaml") || arg.ends_with(".yml");
    if (is_yaml && arg.find('=') == std::string::npos)
      cfg = load_config(arg);
    else if (arg.find('=') != std::string::npos)
      apply_override(cfg, arg);
    else
      throw ConfigError("argument `" + arg +
                        "` is neither a .yaml config file nor a key=value override; "
                        "see `clarena --help` for the settings");
  }
  validate(cfg);
  return cfg;
}

void print_summary(const std::vector<RunResult>& runs, const std::vector<double>& reference) {
  std::printf("\n%-24s", "summary");
  for (const auto& r : runs)
    std::printf("%14s", r.algorithm.c_str());
  auto row = [&](const char* name, auto value) {
    std::printf("\n%-24s", name);
    for (const auto& r : runs)
      std::printf("%14.4f", value(r));
  };
  auto last = [](const RunResult& r) { return r.accuracy.trained_tasks(); };
  row("average accuracy",
      [&](const RunResult& r) { return average_accuracy(r.accuracy, last(r)); });
  row("backward transfer",
      [&](const RunResult& r) { return backward_transfer(r.accuracy, last(r)); });
  row("forgetting", [&](const RunResult& r) { return average_forgetting(r.accuracy, last(r)); });
  row("forward transfer", [&](const RunResult& r) {
    return last(r) > 1 ? forward_transfer(r.accuracy, reference, last(r)) : 0.0;
  });
  row("backward ms/step, t=1", [](const RunResult& r) { return r.costs.front().backward_ms; });
  row("backward ms/step, t>1", [](const RunResult& r) {
    double sum = 0;
    for (size_t i = 1; i < r.costs.size(); ++i)
      sum += r.costs[i].backward_ms;
    return r.costs.size() > 1 ? sum / static_cast<double>(r.costs.size() - 1) : 0.0;
  });
  row("graph nodes/step, t>1", [](const RunResult& r) { return r.costs.back().nodes_per_step; });
  row("wall seconds", [](const RunResult& r) { return r.wall_seconds; });
  std::printf("\n");
}

/// The algorithms `compare` runs when no `algorithms=[...]` is given.
const std::vector<Algorithm> kDefaultCompared = {Algorithm::Finetuning, Algorithm::Fix};

/// compare's arguments: `algorithms=[finetuning,fix,lwf,ewc]` (at most once), then the config
/// file and overrides.
struct CompareArgs {
  std::vector<Algorithm> algorithms = kDefaultCompared;
  std::vector<std::string> config_args;
};

CompareArgs split_compare_args(const std::vector<std::string>& args) {
  CompareArgs out;
  bool listed = false;
  for (const std::string& arg : args) {
    const size_t eq = arg.find('=');
    if (eq == std::string::npos || arg.substr(0, eq) != "algorithms") {
      out.config_args.push_back(arg);
      continue;
    }
    if (listed) throw ConfigError("`algorithms`: given twice");
    out.algorithms = parse_algorithm_list("algorithms", arg.substr(eq + 1));
    listed = true;
  }
  return out;
}

/// The listed algorithms with the same settings, each in output_dir/<algorithm>, then
/// Independent (unless listed) as the reference their forward transfer is measured against
/// (CLArena's definition); a summary side by side.
int run_compare(ExperimentConfig cfg, const std::vector<Algorithm>& algorithms) {
  const auto root = resolved_output_dir(cfg, std::time(nullptr));
  check_output_dir(root);
  std::vector<Algorithm> to_run = algorithms;
  const auto listed = std::find(to_run.begin(), to_run.end(), Algorithm::Independent);
  const size_t reference_at = static_cast<size_t>(listed - to_run.begin());
  if (listed == to_run.end()) to_run.push_back(Algorithm::Independent);
  // Every run's config is checked before the first one starts.
  std::vector<ExperimentConfig> configs;
  for (Algorithm algorithm : to_run) {
    ExperimentConfig one = cfg;
    one.algorithm = algorithm;
    one.output_dir = (root / to_string(algorithm)).string();
    validate(one);
    configs.push_back(one);
  }
  std::vector<RunResult> runs;
  for (const ExperimentConfig& one : configs)
    runs.push_back(run_experiment(one, {.log = &std::cout}));
  const std::vector<double> reference = diagonal(runs[reference_at].accuracy);
  runs.resize(algorithms.size());  // the reference run alone is not shown
  for (const auto& r : runs)
    write_metrics(r.output_dir, r.accuracy, reference);
  print_summary(runs, reference);
  std::vector<Series> curves;
  std::string title;
  for (const auto& r : runs) {
    std::vector<double> avg;
    for (int t = 1; t <= r.accuracy.trained_tasks(); ++t)
      avg.push_back(average_accuracy(r.accuracy, t));
    curves.emplace_back(r.algorithm, avg);
    title += (title.empty() ? "" : " vs ") + r.algorithm;
  }
  write_curve_svg(root / "average_accuracy.svg", curves, title, "after training task",
                  "average accuracy");
  std::printf("results in %s\n", root.c_str());
  return 0;
}

/// glibc serves blocks past its (adaptive) mmap threshold with fresh pages and trims its heap
/// top eagerly, so a training step that frees and re-allocates the same buffers every step
/// paid page faults on some runs and not others (batch 1: 55 or 200 µs per step; batch 512:
/// 2.0 or 3.3 ms, by malloc's history). Fixed thresholds keep those buffers in the heap. This
/// program opts in for itself; the library never touches its host's allocator. Left alone when
/// the user tuned malloc (GLIBC_TUNABLES, MALLOC_*_ environment variables).
void keep_buffers_in_the_heap() {
#ifdef __GLIBC__
  if (std::getenv("GLIBC_TUNABLES") || std::getenv("MALLOC_MMAP_THRESHOLD_") ||
      std::getenv("MALLOC_TRIM_THRESHOLD_"))
    return;
  mallopt(M_MMAP_THRESHOLD, 64 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

int run(int argc, char** argv) {
  CLI::App app{
      "clarena: continual learning (Finetuning, Fix, ...) on a from-scratch C++ engine.\n"
      "Without a command it runs the built-in default: `compare` on Split Fashion-MNIST."};
  app.footer("SETTINGS (key=value after the config file):\n" + settings_help());
  std::vector<std::string> args;
  auto* train = app.add_subcommand("train", "run one experiment: [config.yaml] [key=value ...]");
  train->add_option("args", args, "config file and overrides");
  auto* compare = app.add_subcommand(
      "compare",
      "run several algorithms with the same settings: [algorithms=[finetuning,fix,lwf,ewc]] "
      "[config.yaml] [key=value ...] (default algorithms=[finetuning,fix]), and Independent, "
      "the reference for forward transfer");
  compare->add_option("args", args, "algorithms=[...], config file and overrides");
  std::string dir;
  auto* resume = app.add_subcommand("resume", "continue a killed run from its last checkpoint");
  resume->add_option("output_dir", dir, "the run's output folder")->required();
  auto* eval = app.add_subcommand("eval", "test a checkpoint on every task it has seen");
  eval->add_option("output_dir", dir, "the run's output folder")->required();
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kUsageError;
  }

  if (*train) {
    run_experiment(resolve_config(args), {.log = &std::cout});
  } else if (*resume) {
    ExperimentConfig cfg = checkpoint_config(dir);
    cfg.output_dir = dir;
    validate(cfg);  // the folder name is a string setting too (UTF-8, no control characters)
    run_experiment(cfg, {.resume = true, .log = &std::cout});
  } else if (*eval) {
    evaluate_checkpoint(dir, &std::cout);
  } else {
    const CompareArgs compared = split_compare_args(args);
    return run_compare(resolve_config(compared.config_args), compared.algorithms);
  }
  return 0;
}

}  // namespace

// Every error ends here as a message and an exit code: nothing escapes as an abort.
int main(int argc, char** argv) {
  keep_buffers_in_the_heap();
  auto fail = [](int code, const std::string& what) {
    std::cout << std::flush;
    std::cerr << "clarena: " << what << "\n";
    return code;
  };
  try {
    return run(argc, argv);
  } catch (const ConfigError& e) {
    return fail(kUsageError, e.what());
  } catch (const Error& e) {
    return fail(kFailure, e.what());
  } catch (const std::filesystem::filesystem_error& e) {
    return fail(kFailure, std::string("file system error: ") + e.what());
  } catch (const nlohmann::json::exception& e) {
    return fail(kFailure, std::string("JSON error: ") + e.what());
  } catch (const std::bad_alloc&) {
    return fail(kFailure, "out of host memory");
  } catch (const std::exception& e) {
    return fail(kFailure, std::string("internal error: ") + e.what());
  } catch (...) {
    return fail(kFailure, "internal error: unknown exception");
  }
}
