// Checkpoints: a run stopped after task 2 and resumed ends exactly like an uninterrupted one;
// missing or corrupted checkpoints are refused; evaluate_checkpoint reproduces the last row.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "cl_fixture.h"
#include "clarena/cl/experiment.h"
#include "clarena/core/errors.h"

using namespace clarena;
using namespace clarena::cl;
using cl_fixture::Has;
using cl_fixture::read_file;
using cl_fixture::TempDir;
namespace fs = std::filesystem;

namespace {

int64_t count_lines(const std::string& text) {
  return std::count(text.begin(), text.end(), '\n');
}

struct ResumeCase {
  std::string name, algorithm, scenario;
  bool batch_norm;
};

void PrintTo(const ResumeCase& c, std::ostream* os) {
  *os << c.name;
}

class ResumeTest : public ::testing::TestWithParam<ResumeCase> {
 protected:
  ExperimentConfig config(const std::string& out) {
    ExperimentConfig cfg = cl_fixture::synthetic_config(dir_.path());
    cfg.algorithm = GetParam().algorithm;
    cfg.scenario = GetParam().scenario;
    cfg.batch_norm = GetParam().batch_norm;
    cfg.output_dir = (dir_.path() / out).string();
    validate(cfg);
    return cfg;
  }
  TempDir dir_;
};

}  // namespace

TEST_P(ResumeTest, StoppedAndResumedRunMatchesUninterruptedRun) {
  const ExperimentConfig whole_cfg = config("whole");
  const RunResult whole = run_experiment(whole_cfg, {});
  ASSERT_EQ(whole.accuracy.trained_tasks(), 5);

  const ExperimentConfig part_cfg = config("part");
  const fs::path part_dir = part_cfg.output_dir;
  const RunResult first = run_experiment(part_cfg, {.stop_after_task = 2});
  EXPECT_EQ(first.accuracy.trained_tasks(), 2);
  EXPECT_EQ(count_lines(read_file(part_dir / "acc.csv")), 1 + 2) << "header and two rows";
  EXPECT_NE(read_file(part_dir / "acc.csv"), read_file(whole.output_dir / "acc.csv"));

  ExperimentConfig resumed_cfg = checkpoint_config(part_dir);
  EXPECT_EQ(resumed_cfg.algorithm, whole_cfg.algorithm);
  EXPECT_EQ(resumed_cfg.seed, whole_cfg.seed);
  resumed_cfg.output_dir = part_dir.string();
  const RunResult resumed = run_experiment(resumed_cfg, {.resume = true});
  EXPECT_EQ(resumed.accuracy.trained_tasks(), 5);
  ASSERT_EQ(resumed.costs.size(), 5u);
  ASSERT_EQ(resumed.curves.size(), whole.curves.size());

  for (const char* file : {"acc.csv", "metrics.json", "curves.csv", "checkpoint/model.params"}) {
    const std::string expected = read_file(whole.output_dir / file);
    ASSERT_FALSE(expected.empty()) << file;
    EXPECT_EQ(read_file(part_dir / file), expected) << file << " differs after resume";
  }
  for (int i = 1; i <= 5; ++i)
    for (int j = 1; j <= i; ++j)
      EXPECT_EQ(resumed.accuracy.at(i, j), whole.accuracy.at(i, j));
}

INSTANTIATE_TEST_SUITE_P(Cases, ResumeTest,
                         ::testing::Values(ResumeCase{"finetuning_til", "finetuning", "til", false},
                                           ResumeCase{"fix_cil_batchnorm", "fix", "cil", true},
                                           ResumeCase{"independent_til", "independent", "til",
                                                      false}),
                         [](const auto& info) { return info.param.name; });

class CheckpointTest : public ::testing::Test {
 protected:
  ExperimentConfig config() { return cl_fixture::synthetic_config(dir_.path()); }
  TempDir dir_;
};

TEST_F(CheckpointTest, ResumeWithoutCheckpointNamesTheFile) {
  ExperimentConfig cfg = config();
  cfg.output_dir = (dir_.path() / "empty").string();
  fs::create_directories(cfg.output_dir);
  const std::string state = (fs::path(cfg.output_dir) / "checkpoint" / "state.json").string();
  try {
    run_experiment(cfg, {.resume = true});
    FAIL() << "resume without a checkpoint must throw";
  } catch (const IOError& e) {
    EXPECT_TRUE(Has(e.what(), state));
  }
  try {
    checkpoint_config(cfg.output_dir);
    FAIL() << "checkpoint_config without a checkpoint must throw";
  } catch (const IOError& e) {
    EXPECT_TRUE(Has(e.what(), state));
  }
  EXPECT_THROW(evaluate_checkpoint(cfg.output_dir, nullptr), IOError);
  EXPECT_TRUE(fs::is_empty(cfg.output_dir)) << "a refused resume writes nothing";
}

TEST_F(CheckpointTest, CorruptedParametersAreRefused) {
  ExperimentConfig cfg = config();
  cfg.epochs = 1;
  run_experiment(cfg, {.stop_after_task = 1});
  const fs::path params = fs::path(cfg.output_dir) / "checkpoint" / "model.params";
  std::string bytes = read_file(params);
  ASSERT_GT(bytes.size(), 100u);

  auto expect_refused = [&](const std::string& content, const char* what) {
    std::ofstream(params, std::ios::binary | std::ios::trunc) << content;
    ExperimentConfig again = checkpoint_config(cfg.output_dir);
    again.output_dir = cfg.output_dir;
    try {
      run_experiment(again, {.resume = true});
      ADD_FAILURE() << what << ": resume must throw";
    } catch (const IOError& e) {
      EXPECT_TRUE(Has(e.what(), "model.params")) << what;
    }
    EXPECT_THROW(evaluate_checkpoint(cfg.output_dir, nullptr), IOError) << what;
  };
  std::string flipped = bytes;
  flipped[bytes.size() / 2] = static_cast<char>(flipped[bytes.size() / 2] ^ 0x40);
  expect_refused(flipped, "one flipped byte");
  expect_refused(bytes.substr(0, bytes.size() - 9), "truncated");
  expect_refused("", "empty");
  // The results of the finished task are still there, untouched by the failed resumes.
  EXPECT_EQ(count_lines(read_file(fs::path(cfg.output_dir) / "acc.csv")), 2);
}

TEST_F(CheckpointTest, MalformedStateIsRefused) {
  ExperimentConfig cfg = config();
  cfg.epochs = 1;
  run_experiment(cfg, {.stop_after_task = 1});
  const fs::path state = fs::path(cfg.output_dir) / "checkpoint" / "state.json";
  std::ofstream(state, std::ios::trunc) << "{\"tasks_done\": ";
  try {
    checkpoint_config(cfg.output_dir);
    FAIL() << "a malformed state.json must throw";
  } catch (const IOError& e) {
    EXPECT_TRUE(Has(e.what(), state.string()));
  }
}

TEST_F(CheckpointTest, EvaluateCheckpointReproducesLastRow) {
  ExperimentConfig cfg = config();
  cfg.algorithm = "finetuning";
  cfg.batch_norm = true;  // eval mode must use the saved running statistics
  const RunResult stopped = run_experiment(cfg, {.stop_after_task = 3});
  std::ostringstream log;
  const std::vector<double> acc = evaluate_checkpoint(cfg.output_dir, &log);
  ASSERT_EQ(acc.size(), 3u);
  for (int j = 1; j <= 3; ++j)
    EXPECT_EQ(acc[static_cast<size_t>(j - 1)], stopped.accuracy.at(3, j));
  EXPECT_TRUE(Has(log.str(), "test on task 3"));
  // Not trivially equal: earlier rows differ from the last one (Finetuning forgets).
  bool differs = false;
  for (int j = 1; j <= 2; ++j)
    differs |= stopped.accuracy.at(j, j) != stopped.accuracy.at(3, j);
  EXPECT_TRUE(differs);
}
