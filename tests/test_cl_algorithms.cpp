// The CL algorithms driven step by step on synthetic data: what each one trains and what it
// leaves bitwise untouched, the graph a step records, and TIL vs CIL heads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cl_fixture.h"
#include "clarena/cl/algorithms.h"
#include "clarena/cl/data.h"
#include "clarena/core/autograd.h"

using namespace clarena;
using namespace clarena::cl;
using cl_fixture::TempDir;

namespace {

/// Every parameter and buffer of a module whose name starts with `prefix`, as float bits.
using Snapshot = std::map<std::string, std::vector<float>>;

Snapshot snapshot(const nn::Module& m, const std::string& prefix = "") {
  Snapshot out;
  for (const auto& [name, t] : m.named_parameters())
    if (name.starts_with(prefix)) out[name] = t.to_vector<float>();
  for (const auto& [name, t] : m.named_buffers())
    if (name.starts_with(prefix)) out[name] = t.to_vector<float>();
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

/// Asserts that both snapshots hold the same names with bitwise-equal values.
void expect_identical(const Snapshot& now, const Snapshot& before, const std::string& when) {
  ASSERT_EQ(now.size(), before.size()) << when;
  ASSERT_FALSE(now.empty()) << when;
  for (const auto& [name, values] : before) {
    ASSERT_TRUE(now.count(name)) << when << ": " << name << " disappeared";
    EXPECT_TRUE(same_bits(now.at(name), values)) << when << ": " << name << " changed";
  }
}

/// Whether `name` is the bias of a backbone Linear followed by batch norm: its gradient is
/// zero in exact arithmetic (batch norm subtracts the batch mean), so it need not move.
bool redundant_bias(const std::string& name) {
  return name.find("fc.") != std::string::npos && name.ends_with(".bias") &&
         name.find("fc_bn.") == std::string::npos;
}

/// Asserts that every tensor of `now` differs from its value in `before` (with batch norm,
/// the Linear biases it makes redundant excepted).
void expect_all_changed(const Snapshot& now, const Snapshot& before, const std::string& when,
                        bool batch_norm = false) {
  ASSERT_EQ(now.size(), before.size()) << when;
  ASSERT_FALSE(now.empty()) << when;
  for (const auto& [name, values] : before) {
    if (batch_norm && redundant_bias(name)) continue;
    EXPECT_FALSE(same_bits(now.at(name), values)) << when << ": " << name << " did not change";
  }
}

/// A benchmark and an algorithm on the synthetic data, driven like the task loop does.
struct Driver {
  explicit Driver(const ExperimentConfig& c)
      : cfg(c), bench(c), algo(make_algorithm(c, bench.input_dim())) {}

  void setup(int task) { algo->setup_task(task, bench.num_classes(task)); }

  /// The configured epochs on the current task, each followed by a validation pass (which
  /// leaves the model in eval mode, as in the real loop). Returns every step's stats.
  std::vector<StepStats> train() {
    const int task = algo->current_task();
    const auto& idx = bench.indices(Stage::Train, task);
    std::vector<StepStats> steps;
    for (int epoch = 1; epoch <= cfg.epochs; ++epoch) {
      algo->on_train_epoch_start();
      for (size_t start = 0; start < idx.size(); start += static_cast<size_t>(cfg.batch_size)) {
        const size_t n = std::min(idx.size() - start, static_cast<size_t>(cfg.batch_size));
        steps.push_back(algo->training_step(
            bench.batch(Stage::Train, task, std::span(idx).subspan(start, n), Device::cpu())));
      }
      const auto& val = bench.indices(Stage::Validation, task);
      algo->evaluation_step(bench.batch(Stage::Validation, task, val, Device::cpu()), task);
    }
    return steps;
  }

  Snapshot snap(const std::string& prefix = "") const { return snapshot(algo->model(), prefix); }

  ExperimentConfig cfg;
  CLBenchmark bench;
  std::unique_ptr<CLAlgorithm> algo;
};

std::string head(int task) {
  return "heads." + std::to_string(task) + ".";
}

/// The algorithm's forward made public, to look at the logits.
template <class A>
struct Probe : A {
  using A::A;
  Tensor logits(const Tensor& x, int task) {
    autograd::NoGradGuard no_grad;
    return this->forward(x, task);
  }
};

class AlgorithmTest : public ::testing::Test {
 protected:
  ExperimentConfig config(const std::string& algorithm, bool batch_norm = false) {
    ExperimentConfig cfg = cl_fixture::synthetic_config(dir_.path());
    cfg.algorithm = algorithm;
    cfg.batch_norm = batch_norm;
    validate(cfg);
    return cfg;
  }
  TempDir dir_;
};

class FixTest : public AlgorithmTest, public ::testing::WithParamInterface<bool> {};

}  // namespace

TEST_F(AlgorithmTest, MakeAlgorithmNames) {
  const std::map<std::string, std::string> names{{"finetuning", "Finetuning"},
                                                 {"fix", "Fix"},
                                                 {"independent", "Independent"},
                                                 {"random", "Random"}};
  for (const auto& [key, name] : names) {
    ExperimentConfig cfg = config(key);
    EXPECT_EQ(make_algorithm(cfg, 784)->name(), name);
  }
  ExperimentConfig cfg = config("fix");
  cfg.algorithm = "ewc";
  EXPECT_THROW(make_algorithm(cfg, 784), ConfigError);
}

// After task 1, Fix's backbone (parameters and batch-norm statistics) never changes again,
// each new head learns, earlier heads stay put (TIL), and a step records only head + loss.
TEST_P(FixTest, BackboneBitwiseFrozenAfterTask1) {
  const bool batch_norm = GetParam();
  Driver d(config("fix", batch_norm));
  const int64_t hidden = d.cfg.hidden_dims.back();

  d.setup(1);
  const Snapshot backbone_init = d.snap("backbone.");
  const Snapshot head1_init = d.snap(head(1));
  // Linear+BN+ReLU per layer with batch norm, one fused linear_relu per layer without,
  // then the head and the loss.
  const int64_t task1_nodes = batch_norm ? 3 * 2 + 2 : 2 + 2;
  int64_t task1_saved = 0;
  for (const StepStats& s : d.train()) {
    EXPECT_EQ(s.nodes, task1_nodes);
    task1_saved = std::max(task1_saved, s.saved_bytes);
  }
  const Snapshot after_task1 = d.snap("backbone.");
  expect_all_changed(after_task1, backbone_init, "task 1 (Fix trains its backbone there)",
                     batch_norm);
  if (batch_norm) {
    EXPECT_EQ(after_task1.count("backbone.fc_bn.0.running_mean"), 1u);
  }
  expect_all_changed(d.snap(head(1)), head1_init, "task 1 head");

  for (int task = 2; task <= d.bench.num_tasks(); ++task) {
    d.setup(task);
    const Snapshot head_init = d.snap(head(task));
    Snapshot earlier_heads;
    for (int t = 1; t < task; ++t)
      earlier_heads.merge(d.snap(head(t)));
    const std::vector<StepStats> steps = d.train();
    ASSERT_FALSE(steps.empty());
    for (const StepStats& s : steps) {
      EXPECT_EQ(s.nodes, 2) << "task " << task << ": only the head's linear and the loss";
      // What the head and the loss keep: its input features, the head's weights, the
      // logits/probabilities and labels. One saved backbone activation (the input
      // [B, 784], or another [B, hidden] layer output) would exceed this.
      const int64_t b = s.samples, c = d.bench.num_classes(task);
      const int64_t bound = 4 * b * hidden + 4 * (hidden * c + c) + 8 * b * c + 8 * b;
      EXPECT_GT(s.saved_bytes, 0);
      EXPECT_LE(s.saved_bytes, bound) << "task " << task;
      EXPECT_LT(s.saved_bytes, task1_saved);
      EXPECT_TRUE(std::isfinite(s.loss));
    }
    expect_identical(d.snap("backbone."), after_task1, "after task " + std::to_string(task));
    expect_all_changed(d.snap(head(task)), head_init, "head " + std::to_string(task));
    Snapshot earlier_now;
    for (int t = 1; t < task; ++t)
      earlier_now.merge(d.snap(head(t)));
    expect_identical(earlier_now, earlier_heads,
                     "earlier heads during task " + std::to_string(task));
  }
}

INSTANTIATE_TEST_SUITE_P(BatchNorm, FixTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "on" : "off"; });

// freeze_heads: nothing trains after task 1, not even the new heads.
TEST_F(AlgorithmTest, FixFreezeHeadsStopsAllTraining) {
  ExperimentConfig cfg = config("fix");
  cfg.freeze_heads = true;
  Driver d(cfg);
  d.setup(1);
  const Snapshot init = d.snap();
  d.train();
  expect_all_changed(d.snap(), init, "task 1 with freeze_heads");
  for (int task = 2; task <= d.bench.num_tasks(); ++task) {
    d.setup(task);
    const Snapshot before = d.snap();  // includes the new head's initial values
    ASSERT_EQ(before.count(head(task) + "weight"), 1u);
    for (const StepStats& s : d.train()) {
      EXPECT_EQ(s.nodes, 0) << "nothing requires grad";
      EXPECT_TRUE(std::isfinite(s.loss));
      EXPECT_GT(s.samples, 0);
    }
    expect_identical(d.snap(), before, "freeze_heads, task " + std::to_string(task));
  }
}

// Finetuning trains everything on every task: every backbone tensor moves each time.
TEST_F(AlgorithmTest, FinetuningChangesBackboneOnEveryTask) {
  for (bool batch_norm : {false, true}) {
    SCOPED_TRACE(batch_norm ? "batch_norm" : "no batch_norm");
    Driver d(config("finetuning", batch_norm));
    for (int task = 1; task <= d.bench.num_tasks(); ++task) {
      d.setup(task);
      const Snapshot before = d.snap("backbone.");
      for (const StepStats& s : d.train())
        EXPECT_EQ(s.nodes, batch_norm ? 8 : 4);
      expect_all_changed(d.snap("backbone."), before, "task " + std::to_string(task), batch_norm);
    }
  }
}

// Independent: backbone t (and head t) train during task t only.
TEST_F(AlgorithmTest, IndependentTrainsOnlyTheCurrentTasksBackbone) {
  Driver d(config("independent"));
  for (int task = 1; task <= d.bench.num_tasks(); ++task) {
    d.setup(task);
    const Snapshot before = d.snap();
    for (const StepStats& s : d.train())
      EXPECT_EQ(s.nodes, 4);
    const Snapshot after = d.snap();
    ASSERT_EQ(after.size(), before.size());
    const std::string current = "backbones." + std::to_string(task - 1) + ".";
    int changed = 0;
    for (const auto& [name, values] : before) {
      const bool trains = name.starts_with(current) || name.starts_with(head(task));
      EXPECT_EQ(!same_bits(after.at(name), values), trains) << "task " << task << ": " << name;
      changed += trains;
    }
    EXPECT_EQ(changed, 4 + 2) << "two backbone layers and one head, weight and bias each";
    EXPECT_EQ(after.count("backbones." + std::to_string(task) + ".fc.0.weight"), 0u);
  }
}

// Random trains nothing at all.
TEST_F(AlgorithmTest, RandomChangesNothing) {
  Driver d(config("random"));
  for (int task = 1; task <= d.bench.num_tasks(); ++task) {
    d.setup(task);
    const Snapshot before = d.snap();
    for (const StepStats& s : d.train()) {
      EXPECT_EQ(s.nodes, 0);
      EXPECT_GT(s.samples, 0);
    }
    expect_identical(d.snap(), before, "Random, task " + std::to_string(task));
  }
}

// CIL: the logits cover every class seen so far (2, 4, 6, ... on Split) whatever task a batch
// comes from, and labels are global; TIL: one task's classes, labels within the task.
TEST_F(AlgorithmTest, TilAndCilLogitsAndLabels) {
  for (const std::string scenario : {"til", "cil"}) {
    SCOPED_TRACE(scenario);
    ExperimentConfig cfg = config("finetuning");
    cfg.scenario = scenario;
    CLBenchmark bench(cfg);
    Probe<Finetuning> algo(cfg, bench.input_dim(), Device::cpu());
    const bool cil = scenario == "cil";
    for (int task = 1; task <= bench.num_tasks(); ++task) {
      algo.setup_task(task, bench.num_classes(task));
      EXPECT_EQ(bench.num_classes(task), 2);
      const auto& idx = bench.indices(Stage::Test, task);
      Batch batch = bench.batch(Stage::Test, task, idx, Device::cpu());
      const int64_t lo = cil ? 2 * (task - 1) : 0;
      std::vector<int64_t> labels = batch.y.to_vector<int64_t>();
      ASSERT_FALSE(labels.empty());
      for (int64_t y : labels) {
        EXPECT_GE(y, lo);
        EXPECT_LE(y, lo + 1);
      }
      EXPECT_NE(std::count(labels.begin(), labels.end(), lo), 0);
      EXPECT_NE(std::count(labels.begin(), labels.end(), lo + 1), 0);
      for (int seen = 1; seen <= task; ++seen) {
        const auto& seen_idx = bench.indices(Stage::Test, seen);
        Tensor logits =
            algo.logits(bench.batch(Stage::Test, seen, seen_idx, Device::cpu()).x, seen);
        EXPECT_EQ(logits.shape(),
                  (Shape{static_cast<int64_t>(seen_idx.size()), cil ? 2 * task : 2}))
            << "after setting up task " << task << ", a batch of task " << seen;
      }
      // One training step with the global labels works (cross-entropy checks the range).
      StepStats s = algo.training_step(
          bench.batch(Stage::Train, task, std::span(bench.indices(Stage::Train, task)).first(8),
                      Device::cpu()));
      EXPECT_EQ(s.samples, 8);
      EXPECT_EQ(s.nodes, cil && task > 1 ? 2 + task + 2 : 4);  // heads, concat, loss
    }
  }
}

// Permuted CIL: ten more classes per task.
TEST_F(AlgorithmTest, PermutedCilLogitsGrowByTen) {
  ExperimentConfig cfg = config("finetuning");
  cfg.benchmark = "permuted";
  cfg.scenario = "cil";
  cfg.num_tasks = 3;
  validate(cfg);
  CLBenchmark bench(cfg);
  Probe<Finetuning> algo(cfg, bench.input_dim(), Device::cpu());
  for (int task = 1; task <= 3; ++task) {
    algo.setup_task(task, bench.num_classes(task));
    const auto& idx = bench.indices(Stage::Test, task);
    Batch b = bench.batch(Stage::Test, task, idx, Device::cpu());
    EXPECT_EQ(algo.logits(b.x, task).size(1), 10 * task);
    for (int64_t y : b.y.to_vector<int64_t>()) {
      EXPECT_GE(y, 10 * (task - 1));
      EXPECT_LT(y, 10 * task);
    }
  }
}

// Fix under CIL: the backbone is frozen all the same; a step records the heads seen so far,
// their concatenation and the loss, and no backbone node.
TEST_F(AlgorithmTest, FixCilRecordsHeadsConcatAndLossOnly) {
  ExperimentConfig cfg = config("fix");
  cfg.scenario = "cil";
  cfg.epochs = 1;
  Driver d(cfg);
  d.setup(1);
  for (const StepStats& s : d.train())
    EXPECT_EQ(s.nodes, 4);
  const Snapshot after_task1 = d.snap("backbone.");
  for (int task = 2; task <= d.bench.num_tasks(); ++task) {
    d.setup(task);
    const Snapshot head_init = d.snap(head(task));
    for (const StepStats& s : d.train())
      EXPECT_EQ(s.nodes, task + 2) << "task " << task << ": " << task << " heads, concat, loss";
    expect_identical(d.snap("backbone."), after_task1, "CIL, task " + std::to_string(task));
    expect_all_changed(d.snap(head(task)), head_init, "CIL head " + std::to_string(task));
  }
}

// A NaN loss (here from NaN inputs) makes no update: the parameters stay bitwise as they
// were, and the step reports the non-finite loss for the task loop to stop on.
TEST_F(AlgorithmTest, NonFiniteLossMakesNoUpdate) {
  for (const char* algorithm : {"finetuning", "fix"}) {
    SCOPED_TRACE(algorithm);
    Driver d(config(algorithm));
    d.setup(1);
    d.train();  // momentum buffers hold something: a step would move the weights
    const Snapshot before = d.snap();
    const int64_t rows = 8;
    const Batch bad{Tensor::full({rows, d.bench.input_dim()}, std::nan("")),
                    Tensor::zeros({rows}, DType::Int64)};
    d.algo->on_train_epoch_start();
    const StepStats s = d.algo->training_step(bad);
    EXPECT_TRUE(std::isnan(s.loss));
    EXPECT_EQ(s.samples, rows);
    expect_identical(d.snap(), before, "after a NaN loss");
    // Training on finite data goes on as usual.
    const auto& idx = d.bench.indices(Stage::Train, 1);
    const StepStats ok = d.algo->training_step(
        d.bench.batch(Stage::Train, 1, std::span(idx).subspan(0, 8), Device::cpu()));
    EXPECT_TRUE(std::isfinite(ok.loss));
  }
}
