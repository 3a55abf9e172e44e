// End to end on the real Fashion-MNIST (Debian's dataset-fashion-mnist): a short Split
// schedule of Finetuning and Fix, checking that task 1 is learned and the structural facts
// of each algorithm (graph nodes per step; Fix never forgets under TIL).
#include <gtest/gtest.h>

#include <string>

#include "cl_fixture.h"
#include "clarena/cl/experiment.h"
#include "clarena/cl/idx.h"
#include "clarena/core/threads.h"

using namespace clarena::cl;
using cl_fixture::read_file;
using cl_fixture::TempDir;
namespace fs = std::filesystem;

namespace {

class FashionMnist : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(fs::path(kFashionMnistDir) / "train-images-idx3-ubyte.gz") &&
        !fs::exists(fs::path(kFashionMnistDir) / "train-images-idx3-ubyte"))
      GTEST_SKIP() << kFashionMnistDir << " missing (apt-get install dataset-fashion-mnist)";
  }

  RunResult run(const std::string& algorithm) {
    ExperimentConfig cfg;  // defaults: Split Fashion-MNIST, 5 tasks, TIL, 784-256-256
    apply_override(cfg, "algorithm=" + algorithm);
    cfg.epochs = 1;
    cfg.max_train_samples_per_task = 2000;
    cfg.progress = false;
    cfg.output_dir = (dir_.path() / algorithm).string();
    validate(cfg);
    return run_experiment(cfg, {});
  }

  TempDir dir_;
};

}  // namespace

TEST_F(FashionMnist, FinetuningAndFixShortSplitRun) {
  const RunResult ft = run("finetuning");
  const RunResult fix = run("fix");
  for (const RunResult* r : {&ft, &fix}) {
    SCOPED_TRACE(r->algorithm);
    ASSERT_EQ(r->accuracy.trained_tasks(), 5);
    ASSERT_EQ(r->costs.size(), 5u);
    EXPECT_GT(r->accuracy.at(1, 1), 0.8) << "2-class task, chance is 0.5";
    for (int t = 1; t <= 5; ++t)
      EXPECT_GT(r->accuracy.at(t, t), 0.6) << "task " << t;
    for (const auto& c : r->costs)
      EXPECT_EQ(c.steps, 2000 / 64 + 1) << "task " << c.task;
    EXPECT_FALSE(read_file(r->output_dir / "metrics.json").empty());
  }
  // The same seed and task 1 schedule: both algorithms are the same network until task 2.
  EXPECT_EQ(ft.accuracy.at(1, 1), fix.accuracy.at(1, 1));

  // Finetuning records the whole network every step: 2 fused linear_relu, head, loss.
  for (const auto& c : ft.costs)
    EXPECT_EQ(c.nodes_per_step, 4.0) << "task " << c.task;
  // Fix: the same on task 1, then only the head and the loss.
  EXPECT_EQ(fix.costs[0].nodes_per_step, 4.0);
  for (size_t i = 1; i < fix.costs.size(); ++i) {
    EXPECT_EQ(fix.costs[i].nodes_per_step, 2.0) << "task " << fix.costs[i].task;
    // Less than one input batch [64, 784] of floats, which the first layer would keep.
    EXPECT_LT(fix.costs[i].saved_bytes_per_step, 64.0 * 784 * 4) << "a backbone activation kept";
    EXPECT_GT(fix.costs[0].saved_bytes_per_step, 64.0 * 784 * 4);
  }

  // Fix under TIL cannot forget: task j's backbone and head never change after task j.
  bool ft_moved = false;
  for (int j = 1; j <= 5; ++j)
    for (int i = j + 1; i <= 5; ++i) {
      EXPECT_EQ(fix.accuracy.at(i, j), fix.accuracy.at(j, j)) << "acc(" << i << "," << j << ")";
      ft_moved |= ft.accuracy.at(i, j) != ft.accuracy.at(j, j);
    }
  EXPECT_TRUE(ft_moved) << "Finetuning's shared backbone changes every task's accuracy";
}

// LwF and EWC on the same trainer: every task learnt; from task 2 on LwF's step also runs the
// student's earlier heads and the distillation (the frozen teacher adds no node), EWC's adds
// the penalty over the backbone's four tensors.
TEST_F(FashionMnist, LwfAndEwcShortSplitRun) {
  const RunResult lwf = run("lwf");
  const RunResult ewc = run("ewc");
  for (const RunResult* r : {&lwf, &ewc}) {
    SCOPED_TRACE(r->algorithm);
    ASSERT_EQ(r->accuracy.trained_tasks(), 5);
    for (int t = 1; t <= 5; ++t)
      EXPECT_GT(r->accuracy.at(t, t), 0.6) << "task " << t;
    EXPECT_EQ(r->costs[0].nodes_per_step, 4.0) << "task 1 is Finetuning's";
    for (size_t i = 1; i < r->costs.size(); ++i)
      EXPECT_GT(r->costs[i].nodes_per_step, 4.0) << "task " << r->costs[i].task;
  }
  EXPECT_EQ(lwf.algorithm, "LwF");
  EXPECT_EQ(ewc.algorithm, "EWC");
}

TEST_F(FashionMnist, CnnBackboneShortSplitRun) {
  ExperimentConfig cfg;
  apply_override(cfg, "backbone=cnn");
  cfg.epochs = 1;
  cfg.max_train_samples_per_task = 500;
  cfg.progress = false;
  cfg.output_dir = (dir_.path() / "cnn").string();
  validate(cfg);
  const RunResult r = run_experiment(cfg, {});
  ASSERT_EQ(r.accuracy.trained_tasks(), 5);
  EXPECT_GT(r.accuracy.at(1, 1), 0.8) << "2-class task, chance is 0.5";
  for (int t = 1; t <= 5; ++t)
    EXPECT_GT(r.accuracy.at(t, t), 0.6) << "task " << t;
  for (const auto& c : r.costs)
    EXPECT_EQ(c.steps, 500 / 64 + 1) << "task " << c.task;
  EXPECT_NE(read_file(r.output_dir / "config.yaml").find("backbone: \"cnn\""), std::string::npos);
}

TEST_F(FashionMnist, SameResultsAtAnyThreadCount) {
  // Finetuning on two tasks at 1, 2, 3, 7 and 16 threads: the same losses and accuracies to the
  // last bit (the engine's tiles depend on the shape, never on the thread count).
  auto run_at = [&](int threads) {
    const int saved = clarena::num_threads();
    clarena::set_num_threads(threads);
    ExperimentConfig cfg;
    cfg.algorithm = Algorithm::Finetuning;
    cfg.num_tasks = 2;
    cfg.epochs = 1;
    cfg.max_train_samples_per_task = 700;
    cfg.progress = false;
    cfg.output_dir = (dir_.path() / ("threads" + std::to_string(threads))).string();
    validate(cfg);
    RunResult r = run_experiment(cfg, {});
    clarena::set_num_threads(saved);
    return r;
  };
  const RunResult one = run_at(1);
  for (int threads : {2, 3, 7, 16}) {
    const RunResult r = run_at(threads);
    ASSERT_EQ(r.curves.size(), one.curves.size());
    for (size_t i = 0; i < r.curves.size(); ++i) {
      EXPECT_EQ(r.curves[i].train_loss, one.curves[i].train_loss) << threads << " threads";
      EXPECT_EQ(r.curves[i].val_loss, one.curves[i].val_loss) << threads << " threads";
    }
    for (int i = 1; i <= 2; ++i)
      for (int j = 1; j <= i; ++j)
        EXPECT_EQ(r.accuracy.at(i, j), one.accuracy.at(i, j)) << threads << " threads";
    EXPECT_EQ(read_file(r.output_dir / "acc.csv"), read_file(one.output_dir / "acc.csv"));
  }
}
