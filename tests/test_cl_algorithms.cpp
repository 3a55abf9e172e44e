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
#include "clarena/cl/trainer.h"
#include "clarena/core/autograd.h"
#include "clarena/core/ops.h"
#include "clarena/core/runtime.h"

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

/// The snapshot with `prefix` taken off every name.
Snapshot without_prefix(const Snapshot& snap, const std::string& prefix) {
  Snapshot out;
  for (const auto& [name, values] : snap)
    out[name.substr(prefix.size())] = values;
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

/// What a test reads of one training step.
struct StepStats {
  double loss = 0;
  int64_t nodes = 0, saved_bytes = 0, samples = 0;
};

/// A benchmark and an algorithm on the synthetic data, driven like the task loop does, one
/// Trainer::train_step at a time.
struct Driver {
  explicit Driver(const ExperimentConfig& c)
      : cfg(c), bench(c), algo(make_algorithm(c, bench.input_dim())), trainer(bench, cfg) {}

  void setup(int task) { algo->begin_task(task, bench.num_classes(task)); }

  /// The configured epochs on the current task, each followed by a validation pass (which
  /// leaves the model in eval mode, as in the real loop), then the task's end. Returns every
  /// step's stats.
  std::vector<StepStats> train(bool end_task = true) {
    const int task = algo->task();
    const auto& idx = bench.indices(Stage::Train, task);
    std::vector<StepStats> steps;
    for (int epoch = 1; epoch <= cfg.epochs; ++epoch) {
      algo->train_mode();
      for (size_t start = 0; start < idx.size(); start += static_cast<size_t>(cfg.batch_size)) {
        const size_t n = std::min(idx.size() - start, static_cast<size_t>(cfg.batch_size));
        Batch batch =
            bench.batch(Stage::Train, task, std::span(idx).subspan(start, n), Device::cpu());
        const Trainer::Step s = trainer.train_step(*algo, batch);
        steps.push_back({s.loss.item(), s.nodes, s.saved_bytes, batch.y.numel()});
      }
      trainer.test(*algo, Stage::Validation, task);
    }
    if (end_task)
      algo->on_task_end([&](const auto& fn) { trainer.for_each_train_batch(task, fn); });
    return steps;
  }

  Snapshot snap(const std::string& prefix = "") const { return snapshot(algo->model(), prefix); }
  Tensor logits(const Tensor& x, int task) {
    autograd::NoGradGuard no_grad;
    algo->model().eval();
    return algo->forward(x, task);
  }

  ExperimentConfig cfg;
  CLBenchmark bench;
  std::unique_ptr<CLAlgorithm> algo;
  Trainer trainer;
};

std::string head(int task) {
  return "heads." + std::to_string(task) + ".";
}

class AlgorithmTest : public ::testing::Test {
 protected:
  ExperimentConfig config(const std::string& algorithm, bool batch_norm = false) {
    ExperimentConfig cfg = cl_fixture::synthetic_config(dir_.path());
    apply_override(cfg, "algorithm=" + algorithm);
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
  cfg.algorithm = static_cast<Algorithm>(42);
  EXPECT_THROW(make_algorithm(cfg, 784), ConfigError);
}

// Batches keep their image shape for every backbone; the MLP flattens them without a node.
TEST_F(AlgorithmTest, BatchesAreImagesAndTheMLPFlattensThem) {
  Driver d(config("finetuning"));
  d.setup(1);
  const auto& idx = d.bench.indices(Stage::Train, 1);
  Batch batch = d.bench.batch(Stage::Train, 1, std::span(idx).subspan(0, 5), Device::cpu());
  EXPECT_EQ(batch.x.shape(), (Shape{5, 1, 28, 28}));
  EXPECT_EQ(d.bench.image_shape(), (std::array<int64_t, 3>{1, 28, 28}));
  EXPECT_FALSE(batch.x.requires_grad());
  Tensor flat = batch.x.reshape({5, 784});
  // The same logits from the image batch and from its flattened rows.
  EXPECT_EQ(d.logits(batch.x, 1).to_vector<float>(), d.logits(flat, 1).to_vector<float>());
  EXPECT_EQ(backbone_output_dim(d.cfg), 32);
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

// Fix on the small CNN: the same contract as the MLP's. Task 1 trains every backbone tensor
// (batch-norm statistics included); afterwards the backbone is bitwise frozen, a step records
// only the head's linear and the loss, and no backbone activation is saved.
TEST_F(AlgorithmTest, FixWithCnnBackboneFrozenAfterTask1) {
  ExperimentConfig cfg = config("fix");
  apply_override(cfg, "backbone=cnn");
  cfg.hidden_dims = ExperimentConfig().hidden_dims;  // an MLP key: the CNN refuses another value
  cfg.num_tasks = 2;
  cfg.epochs = 1;
  cfg.max_train_samples_per_task = 64;
  validate(cfg);
  Driver d(cfg);
  d.setup(1);
  const Snapshot init = d.snap("backbone.");
  ASSERT_EQ(init.count("backbone.conv1.weight"), 1u);
  ASSERT_EQ(init.count("backbone.bn2.running_var"), 1u);
  int64_t task1_saved = 0;
  for (const StepStats& s : d.train()) {
    EXPECT_GT(s.nodes, 10);
    task1_saved = std::max(task1_saved, s.saved_bytes);
  }
  const Snapshot after_task1 = d.snap("backbone.");
  expect_all_changed(after_task1, init, "task 1 (Fix trains its backbone there)");
  d.setup(2);
  const Snapshot head_init = d.snap(head(2));
  const std::vector<StepStats> steps = d.train();
  ASSERT_FALSE(steps.empty());
  for (const StepStats& s : steps) {
    EXPECT_EQ(s.nodes, 2) << "only the head's linear and the loss";
    const int64_t b = s.samples, c = 2, f = 256;
    EXPECT_LE(s.saved_bytes, 4 * b * f + 4 * (f * c + c) + 8 * b * c + 8 * b);
    EXPECT_LT(s.saved_bytes, task1_saved);
  }
  expect_identical(d.snap("backbone."), after_task1, "after task 2");
  expect_all_changed(d.snap(head(2)), head_init, "head 2");
}

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
    apply_override(cfg, "scenario=" + scenario);
    Driver d(cfg);
    const CLBenchmark& bench = d.bench;
    const bool cil = scenario == "cil";
    for (int task = 1; task <= bench.num_tasks(); ++task) {
      d.setup(task);
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
        Tensor logits = d.logits(bench.batch(Stage::Test, seen, seen_idx, Device::cpu()).x, seen);
        EXPECT_EQ(logits.shape(),
                  (Shape{static_cast<int64_t>(seen_idx.size()), cil ? 2 * task : 2}))
            << "after setting up task " << task << ", a batch of task " << seen;
      }
      // One training step with the global labels works (cross-entropy checks the range); the
      // CIL head is one wide linear, so a step records the same nodes in both scenarios.
      d.algo->train_mode();
      const Trainer::Step s = d.trainer.train_step(
          *d.algo,
          bench.batch(Stage::Train, task, std::span(bench.indices(Stage::Train, task)).first(8),
                      Device::cpu()));
      EXPECT_EQ(s.logits.size(0), 8);
      EXPECT_EQ(s.nodes, 4);  // two fused linear+ReLU, the head, the loss
    }
  }
}

// The CIL head grows in place: after task t it holds the rows of tasks 1..t, each task's rows
// drawn from that task's stream (as the per-task heads were), earlier rows untouched by setup.
TEST_F(AlgorithmTest, CilHeadGrowsWithEachTasksOwnInitialRows) {
  ExperimentConfig til = config("finetuning"), cil = config("finetuning");
  cil.scenario = Scenario::CIL;
  Driver a(til), b(cil);
  for (int task = 1; task <= 3; ++task) {
    a.setup(task);
    const Snapshot before = b.snap("heads.");
    b.setup(task);
    const std::vector<float> wide = b.snap("heads.").at("heads.weight");
    const std::vector<float> own = a.snap(head(task)).at(head(task) + "weight");
    ASSERT_EQ(wide.size(), own.size() * static_cast<size_t>(task));
    EXPECT_TRUE(same_bits({wide.end() - static_cast<std::ptrdiff_t>(own.size()), wide.end()}, own));
    if (task > 1) {
      const std::vector<float>& old = before.at("heads.weight");
      EXPECT_TRUE(
          same_bits({wide.begin(), wide.begin() + static_cast<std::ptrdiff_t>(old.size())}, old));
    }
  }
}

// Permuted CIL: ten more classes per task.
TEST_F(AlgorithmTest, PermutedCilLogitsGrowByTen) {
  ExperimentConfig cfg = config("finetuning");
  cfg.benchmark = Benchmark::Permuted;
  cfg.scenario = Scenario::CIL;
  cfg.num_tasks = 3;
  validate(cfg);
  Driver d(cfg);
  for (int task = 1; task <= 3; ++task) {
    d.setup(task);
    const auto& idx = d.bench.indices(Stage::Test, task);
    Batch b = d.bench.batch(Stage::Test, task, idx, Device::cpu());
    EXPECT_EQ(d.logits(b.x, task).size(1), 10 * task);
    for (int64_t y : b.y.to_vector<int64_t>()) {
      EXPECT_GE(y, 10 * (task - 1));
      EXPECT_LT(y, 10 * task);
    }
  }
}

// Fix under CIL: the backbone is frozen all the same; a step records the wide head and the
// loss, and no backbone node.
TEST_F(AlgorithmTest, FixCilRecordsHeadAndLossOnly) {
  ExperimentConfig cfg = config("fix");
  cfg.scenario = Scenario::CIL;
  cfg.epochs = 1;
  Driver d(cfg);
  d.setup(1);
  for (const StepStats& s : d.train())
    EXPECT_EQ(s.nodes, 4);
  const Snapshot after_task1 = d.snap("backbone.");
  for (int task = 2; task <= d.bench.num_tasks(); ++task) {
    d.setup(task);
    const Snapshot head_init = d.snap("heads.");
    for (const StepStats& s : d.train())
      EXPECT_EQ(s.nodes, 2) << "task " << task << ": the head and the loss";
    expect_identical(d.snap("backbone."), after_task1, "CIL, task " + std::to_string(task));
    expect_all_changed(d.snap("heads."), head_init, "CIL head at task " + std::to_string(task));
  }
}

// A loss that turns NaN or infinite stops the task, naming task, epoch and the first bad step.
TEST_F(AlgorithmTest, NonFiniteLossStopsNamingTheStep) {
  ExperimentConfig cfg = config("finetuning");
  cfg.lr = 1e30;  // the first update overflows
  Driver d(cfg);
  d.setup(1);
  std::vector<EpochRecord> curves;
  try {
    d.trainer.fit(*d.algo, curves);
    FAIL() << "a diverging run went on";
  } catch (const ValueError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("training diverged"), std::string::npos) << message;
    EXPECT_NE(message.find("at task 1, epoch 1, step 2 of"), std::string::npos) << message;
  }
  EXPECT_TRUE(curves.empty());
}

// --- LwF ------------------------------------------------------------------------------------

// The teacher is frozen: its forward records no node and saves nothing, it does not move while
// the student trains, and the distillation term is the soft cross-entropy at temperature T.
TEST_F(AlgorithmTest, LwfTeacherRecordsNothingAndDistils) {
  for (const std::string scenario : {"til", "cil"}) {
    SCOPED_TRACE(scenario);
    ExperimentConfig cfg = config("lwf");
    apply_override(cfg, "scenario=" + scenario);
    apply_override(cfg, "distillation_reg_temperature=2");
    apply_override(cfg, "distillation_reg_factor=0.5");
    Driver d(cfg);
    auto& lwf = dynamic_cast<LwF&>(*d.algo);
    d.setup(1);
    d.train();
    d.setup(2);
    const Snapshot teacher = d.snap("teacher.");
    ASSERT_FALSE(teacher.empty());
    expect_identical(without_prefix(d.snap("teacher.backbone."), "teacher."), d.snap("backbone."),
                     "teacher after task 1");

    const auto& idx = d.bench.indices(Stage::Train, 2);
    Batch batch = d.bench.batch(Stage::Train, 2, std::span(idx).first(16), Device::cpu());
    d.algo->train_mode();
    autograd::reset_stats();
    Tensor teacher_logits = lwf.teacher_heads().forward(lwf.teacher_backbone()(batch.x), 1);
    EXPECT_EQ(autograd::stats().nodes_recorded, 0);
    EXPECT_EQ(autograd::stats().peak_saved_bytes, 0);
    EXPECT_FALSE(teacher_logits.requires_grad());

    // The term by hand, in double, from the student's and the teacher's logits of task 1's
    // classes (TIL: head 1; CIL: the first two columns of the wide head).
    Tensor student_logits = d.logits(batch.x, 1);
    if (scenario == "cil") {
      student_logits = narrow(student_logits, 1, 0, 2);
      teacher_logits = narrow(teacher_logits, 1, 0, 2);
    }
    const std::vector<float> s = student_logits.to_vector<float>(),
                             t = teacher_logits.to_vector<float>();
    double expected = 0;
    const double temperature = 2;
    for (size_t r = 0; r < 16; ++r) {
      double zs = 0, zt = 0;
      for (size_t c = 0; c < 2; ++c) {
        zs += std::exp(s[2 * r + c] / temperature);
        zt += std::exp(t[2 * r + c] / temperature);
      }
      for (size_t c = 0; c < 2; ++c)
        expected -=
            std::exp(t[2 * r + c] / temperature) / zt * (s[2 * r + c] / temperature - std::log(zs));
    }
    expected = 0.5 * expected / 16;
    d.algo->model().eval();
    Tensor features = d.algo->model().children().front().second->forward(batch.x);
    Tensor logits = d.algo->forward(batch.x, 2);
    EXPECT_NEAR(lwf.distillation(batch.x, features, logits).item(), expected, 1e-5);

    const Snapshot student = d.snap("backbone.");
    d.train(/*end_task=*/false);
    expect_identical(d.snap("teacher."), teacher, "teacher during task 2");
    expect_all_changed(d.snap("backbone."), student, "student during task 2");
    d.algo->on_task_end([&](const auto& fn) { d.trainer.for_each_train_batch(2, fn); });
    expect_identical(without_prefix(d.snap("teacher.backbone."), "teacher."), d.snap("backbone."),
                     "teacher after task 2");
  }
}

// --- EWC ------------------------------------------------------------------------------------

// The penalty is zero at θ = θ*, equals factor/2 · Σ F·(θ − θ*)² elsewhere, and its gradient
// matches central finite differences (in float64).
TEST_F(AlgorithmTest, EwcPenaltyZeroAtAnchorAndGradientMatchesFiniteDifferences) {
  ExperimentConfig cfg = config("ewc");
  apply_override(cfg, "parameter_change_reg_factor=3");
  Driver d(cfg);
  auto& ewc = dynamic_cast<EWC&>(*d.algo);
  d.setup(1);
  EXPECT_EQ(ewc.penalty().item(), 0.0);
  d.train();
  d.setup(2);
  EXPECT_EQ(ewc.penalty().item(), 0.0) << "θ = θ* right after task 1";
  const Snapshot fisher = d.snap("ewc.1.");
  double fisher_sum = 0;
  for (const auto& [name, values] : fisher)
    if (name.ends_with(".fisher"))
      for (float v : values) {
        EXPECT_GE(v, 0.0f);
        fisher_sum += v;
      }
  EXPECT_GT(fisher_sum, 0.0);

  d.algo->model().to(DType::Float64);
  Generator gen(7);
  nn::NamedTensors params;
  for (const auto& [name, p] : d.algo->model().named_parameters())
    if (name.starts_with("backbone.")) {
      p.detach().copy_(p.detach() + Tensor::normal(p.shape(), 0, 0.05, gen, DType::Float64));
      params.emplace_back(name, p);
    }
  // Closed form on the host.
  std::map<std::string, Tensor> buffers;
  for (const auto& [name, b] : d.algo->model().named_buffers())
    buffers[name] = b;
  double expected = 0;
  for (const auto& [name, p] : params) {
    const std::string key = "ewc.1." + name.substr(std::string("backbone.").size());
    const std::vector<double> f = buffers.at(key + ".fisher").to_vector<double>(),
                              anchor = buffers.at(key + ".theta").to_vector<double>(),
                              value = p.to_vector<double>();
    for (size_t i = 0; i < f.size(); ++i)
      expected += f[i] * (value[i] - anchor[i]) * (value[i] - anchor[i]);
  }
  expected *= 3.0 / 2;
  EXPECT_GT(expected, 0.0);
  EXPECT_NEAR(ewc.penalty().item(), expected, 1e-12 * expected);
  Tensor penalty = ewc.penalty();
  d.algo->model().zero_grad();
  penalty.backward();
  const double h = 1e-6;
  for (const auto& named : params) {
    const Tensor& p = named.second;  // a plain reference: lambdas below capture it
    SCOPED_TRACE(named.first);
    const std::vector<double> grad = p.grad().to_vector<double>();
    for (int64_t i : {int64_t{0}, p.numel() / 2, p.numel() - 1}) {
      std::vector<double> values = p.to_vector<double>();
      auto at = [&](double delta) {
        std::vector<double> moved = values;
        moved[static_cast<size_t>(i)] += delta;
        p.detach().copy_(Tensor::from_vector(moved, p.shape()));
        return ewc.penalty().item();
      };
      const double numeric = (at(h) - at(-h)) / (2 * h);
      p.detach().copy_(Tensor::from_vector(values, p.shape()));
      EXPECT_NEAR(grad[static_cast<size_t>(i)], numeric, 1e-6 * std::max(1.0, std::abs(numeric)));
    }
  }
}

// --- the training loop never waits for the device -------------------------------------------

// A training step (batch upload, forward, loss, backward, update) makes the host wait for the
// device nowhere, for every algorithm: on a GPU the epoch loop runs ahead of the device. The
// CPU backend counts the same calls a GPU would wait in (runtime.h's host_waits).
TEST_F(AlgorithmTest, TrainingStepsNeverWaitForTheDevice) {
  for (const char* algorithm : {"finetuning", "fix", "independent", "random", "lwf", "ewc"}) {
    SCOPED_TRACE(algorithm);
    Driver d(config(algorithm, /*batch_norm=*/true));
    d.setup(1);
    d.train();
    d.setup(2);
    d.algo->train_mode();
    const auto& idx = d.bench.indices(Stage::Train, 2);
    const int64_t before = host_waits(Device::cpu());
    for (size_t start = 0; start + 8 <= idx.size() && start < 80; start += 8)
      d.trainer.train_step(
          *d.algo, d.bench.batch(Stage::Train, 2, std::span(idx).subspan(start, 8), Device::cpu()));
    EXPECT_EQ(host_waits(Device::cpu()) - before, 0);
  }
}

// A whole task: the host waits only at the timing samples (one step in kTimingEvery) and at
// each epoch's end (its losses and counts, read once, and the validation pass), however many
// steps the epoch has.
TEST_F(AlgorithmTest, FitWaitsOnlyAtTimingSamplesAndEpochEnds) {
  ExperimentConfig cfg = config("finetuning");
  cfg.batch_size = 2;
  validate(cfg);
  Driver d(cfg);
  d.setup(1);
  const int64_t steps = (static_cast<int64_t>(d.bench.indices(Stage::Train, 1).size()) + 1) / 2;
  ASSERT_GT(steps, 2 * Trainer::kTimingEvery) << "the synthetic task is too small to tell";
  const int64_t samples_per_epoch = (steps + Trainer::kTimingEvery - 1) / Trainer::kTimingEvery;
  std::vector<EpochRecord> curves;
  const int64_t before = host_waits(Device::cpu());
  d.trainer.fit(*d.algo, curves);
  const int64_t waits = host_waits(Device::cpu()) - before;
  // Per timing sample: three time_ms (two synchronisations each on the CPU) and one read of
  // the losses so far; per epoch: the losses, the counts, the finite check, the validation.
  EXPECT_LE(waits, cfg.epochs * (samples_per_epoch * 7 + 5));
  EXPECT_LT(waits, steps) << "the host waited in (almost) every step";
  EXPECT_GT(waits, 0);
  RecordProperty("steps_per_epoch", std::to_string(steps));
  RecordProperty("host_waits", std::to_string(waits));
}
