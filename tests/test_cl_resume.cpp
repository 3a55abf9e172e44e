// Checkpoints: a run stopped after task 2 and resumed ends exactly like an uninterrupted one;
// missing, corrupted or damaged checkpoints are refused, naming the file and field;
// evaluate_checkpoint reproduces the last row; resume removes stale temporaries and records
// itself in the manifest. Kills at every write: test_cl_kill.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "cl_fixture.h"
#include "clarena/cl/experiment.h"
#include "clarena/core/errors.h"
#include "clarena/core/threads.h"

using namespace clarena;
using namespace clarena::cl;
using cl_fixture::read_file;
using cl_fixture::TempDir;
namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

namespace {

int64_t count_lines(const std::string& text) {
  return std::count(text.begin(), text.end(), '\n');
}

struct ResumeCase {
  std::string name;
  Algorithm algorithm;
  Scenario scenario;
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
  EXPECT_EQ(resumed_cfg.scenario, whole_cfg.scenario);
  EXPECT_EQ(resumed_cfg.dataset, whole_cfg.dataset);
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

INSTANTIATE_TEST_SUITE_P(
    Cases, ResumeTest,
    ::testing::Values(ResumeCase{"finetuning_til", Algorithm::Finetuning, Scenario::TIL, false},
                      ResumeCase{"fix_cil_batchnorm", Algorithm::Fix, Scenario::CIL, true},
                      ResumeCase{"independent_til", Algorithm::Independent, Scenario::TIL, false},
                      // The teacher and the Fisher information are in the checkpoint.
                      ResumeCase{"lwf_til", Algorithm::LwF, Scenario::TIL, false},
                      ResumeCase{"lwf_cil", Algorithm::LwF, Scenario::CIL, false},
                      ResumeCase{"ewc_cil_batchnorm", Algorithm::EWC, Scenario::CIL, true}),
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
  EXPECT_THAT([&] { run_experiment(cfg, {.resume = true}); },
              ThrowsMessage<IOError>(HasSubstr(state)));
  EXPECT_THAT([&] { checkpoint_config(cfg.output_dir); }, ThrowsMessage<IOError>(HasSubstr(state)));
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
      EXPECT_THAT(e.what(), HasSubstr("model.params")) << what;
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
    EXPECT_THAT(e.what(), HasSubstr(state.string()));
  }
}

TEST_F(CheckpointTest, EvaluateCheckpointReproducesLastRow) {
  ExperimentConfig cfg = config();
  cfg.algorithm = Algorithm::Finetuning;
  cfg.batch_norm = true;  // eval mode must use the saved running statistics
  const RunResult stopped = run_experiment(cfg, {.stop_after_task = 3});
  std::ostringstream log;
  const std::vector<double> acc = evaluate_checkpoint(cfg.output_dir, &log);
  ASSERT_EQ(acc.size(), 3u);
  for (int j = 1; j <= 3; ++j)
    EXPECT_EQ(acc[static_cast<size_t>(j - 1)], stopped.accuracy.at(3, j));
  EXPECT_THAT(log.str(), HasSubstr("test on task 3"));
  // Not trivially equal: earlier rows differ from the last one (Finetuning forgets).
  bool differs = false;
  for (int j = 1; j <= 2; ++j)
    differs |= stopped.accuracy.at(j, j) != stopped.accuracy.at(3, j);
  EXPECT_TRUE(differs);
}

// --- kills, full disks and damaged state (issue 8) ------------------------------------------

namespace {

nlohmann::json read_json(const fs::path& file) {
  return nlohmann::json::parse(read_file(file));
}

void write_text(const fs::path& file, const std::string& text) {
  std::ofstream(file, std::ios::binary | std::ios::trunc) << text;
}

}  // namespace

TEST_F(CheckpointTest, StaleTemporariesRemovedOnResume) {
  ExperimentConfig cfg = config();
  cfg.epochs = 1;
  run_experiment(cfg, {.stop_after_task = 1});
  const fs::path out = cfg.output_dir;
  // What a kill or a full disk leaves: a 634 KB temporary holding the space resume needs,
  // a half-written checkpoint folder, temporaries inside the checkpoint.
  write_text(out / "acc.csv.tmp", std::string(634 * 1024, 'x'));
  write_text(out / "manifest.json.tmp", "{");
  fs::create_directories(out / "checkpoint.tmp");
  write_text(out / "checkpoint.tmp" / "model.params", "half");
  write_text(out / "checkpoint" / "model.params.tmp", "half");
  write_text(out / "notes.tmp", "the user's own file");

  ExperimentConfig again = checkpoint_config(out);
  again.output_dir = out.string();
  const RunResult r = run_experiment(again, {.resume = true});
  EXPECT_EQ(r.accuracy.trained_tasks(), 5);
  for (const char* stale :
       {"acc.csv.tmp", "manifest.json.tmp", "checkpoint.tmp", "checkpoint/model.params.tmp"})
    EXPECT_FALSE(fs::exists(out / stale)) << stale << " left behind";
  EXPECT_EQ(read_file(out / "notes.tmp"), "the user's own file") << "only its own names";
}

TEST_F(CheckpointTest, ParkedPreviousCheckpointIsFoundAndPutBack) {
  // A kill between the two renames of replace_dir_atomic's fallback (file systems without an
  // atomic folder exchange): the previous checkpoint parked as checkpoint.old, the new one
  // still staged as checkpoint.tmp. Readers find the previous one; resume puts it back.
  ExperimentConfig cfg = config();
  cfg.epochs = 1;
  const RunResult stopped = run_experiment(cfg, {.stop_after_task = 2});
  const fs::path out = cfg.output_dir;
  fs::rename(out / "checkpoint", out / "checkpoint.old");
  fs::create_directories(out / "checkpoint.tmp");
  EXPECT_EQ(checkpoint_config(out).seed, cfg.seed);
  const std::vector<double> acc = evaluate_checkpoint(out, nullptr);
  ASSERT_EQ(acc.size(), 2u);
  EXPECT_EQ(acc[1], stopped.accuracy.at(2, 2));

  ExperimentConfig again = checkpoint_config(out);
  again.output_dir = out.string();
  EXPECT_EQ(run_experiment(again, {.resume = true}).accuracy.trained_tasks(), 5);
  EXPECT_TRUE(fs::exists(out / "checkpoint" / "state.json"));
  EXPECT_FALSE(fs::exists(out / "checkpoint.old"));
  EXPECT_FALSE(fs::exists(out / "checkpoint.tmp"));
}

TEST_F(CheckpointTest, EveryStateFieldIsCheckedAndNamed) {
  ExperimentConfig cfg = config();
  cfg.epochs = 1;
  run_experiment(cfg, {.stop_after_task = 2});
  const fs::path out = cfg.output_dir;
  const fs::path state = out / "checkpoint" / "state.json";
  const nlohmann::json good = read_json(state);
  ASSERT_EQ(good["tasks_done"], 2);
  // Records by named fields, settings by their config spellings, and a format version.
  EXPECT_EQ(good["version"], 2);
  EXPECT_EQ(good["costs"][1]["task"], 2);
  EXPECT_TRUE(good["costs"][1]["forward_ms"].is_number());
  EXPECT_EQ(good["curves"][1]["epoch"], 1);
  EXPECT_TRUE(good["curves"][1].contains("val_accuracy"));
  EXPECT_EQ(good["config"]["algorithm"], "finetuning");
  EXPECT_EQ(good["config"]["dataset"], "mnist");
  EXPECT_EQ(good["config"]["device"], "cpu");
  const std::string acc_before = read_file(out / "acc.csv");

  using Edit = std::function<void(nlohmann::json&)>;
  const std::vector<std::tuple<std::string, Edit, std::vector<std::string>>> cases{
      {"tasks_done 99", [](auto& j) { j["tasks_done"] = 99; }, {"'tasks_done'", "99", "0..5"}},
      {"tasks_done -3", [](auto& j) { j["tasks_done"] = -3; }, {"'tasks_done'", "-3"}},
      {"tasks_done 1e20", [](auto& j) { j["tasks_done"] = 1e20; }, {"'tasks_done'", "integer"}},
      {"tasks_done 2^64-1",
       [](auto& j) { j["tasks_done"] = std::numeric_limits<uint64_t>::max(); },
       {"'tasks_done'", "18446744073709551615"}},
      {"tasks_done 2.5", [](auto& j) { j["tasks_done"] = 2.5; }, {"'tasks_done'", "integer"}},
      {"tasks_done text", [](auto& j) { j["tasks_done"] = "2"; }, {"'tasks_done'", "\"2\""}},
      {"tasks_done 3 with two rows",
       [](auto& j) { j["tasks_done"] = 3; },
       {"'accuracy'", "has 2 entries, expected 3"}},
      {"costs record lacks a field",
       [](auto& j) { j["costs"][1].erase("forward_ms"); },
       {"'costs[1].forward_ms'", "is missing"}},
      {"curves record positional, as before version 2",
       [](auto& j) { j["curves"][0] = {1, 1, 0.5, 0.5, 0.5, 0.5}; },
       {"'curves[0]'", "[1,1,0.5", "expected an object of epoch curves"}},
      {"missing costs row",
       [](auto& j) { j["costs"].erase(1); },
       {"'costs'", "has 1 entries, expected 2"}},
      {"missing curves row",
       [](auto& j) { j["curves"].erase(1); },
       {"'curves'", "has 1 entries, expected 2"}},
      {"short accuracy row",
       [](auto& j) { j["accuracy"][1] = {0.5}; },
       {"'accuracy[1]'", "has 1 entries, expected 2"}},
      {"accuracy above 1", [](auto& j) { j["accuracy"][0][0] = 1.5; }, {"'accuracy[0][0]'", "1.5"}},
      {"accuracy text", [](auto& j) { j["accuracy"][0][0] = "x"; }, {"'accuracy[0][0]'"}},
      {"costs of another task",
       [](auto& j) { j["costs"][0]["task"] = 2; },
       {"'costs[0].task'", "is 2", "1..1"}},
      {"negative steps",
       [](auto& j) { j["costs"][0]["steps"] = -1; },
       {"'costs[0].steps'", "-1", "0..9223372036854775807"}},
      {"curves of another epoch",
       [](auto& j) { j["curves"][1]["epoch"] = 7; },
       {"'curves[1].epoch'", "is 7", "1..1"}},
      {"curves accuracy text",
       [](auto& j) { j["curves"][1]["val_accuracy"] = "0.5"; },
       {"'curves[1].val_accuracy'", "\"0.5\"", "[0.0, 1.0]"}},
      {"unknown record field",
       [](auto& j) { j["costs"][0]["oops"] = 1; },
       {"'costs[0].oops'", "is not a field of this record (task, steps, forward_ms"}},
      {"version missing",
       [](auto& j) { j.erase("version"); },
       {"no field 'version'", "older clarena", "positional"}},
      {"version from the future", [](auto& j) { j["version"] = 3; }, {"'version' is 3", "2 only"}},
      {"costs not a list", [](auto& j) { j["costs"] = 3; }, {"'costs'", "expected a list"}},
      {"curves missing", [](auto& j) { j.erase("curves"); }, {"'curves'", "missing"}},
      {"unknown field", [](auto& j) { j["oops"] = 1; }, {"'oops'"}},
      {"refused setting", [](auto& j) { j["config"]["epochs"] = 0; }, {"'config'", "epochs"}},
      {"algorithm by display name",
       [](auto& j) { j["config"]["algorithm"] = "Finetuning"; },
       {"'config'", "config key `algorithm`: unknown value `\"Finetuning\"`"}},
      {"config not a mapping", [](auto& j) { j["config"] = 3; }, {"'config'"}},
      {"not an object", [](auto& j) { j = nlohmann::json::array(); }, {"not a JSON object"}},
  };
  for (const auto& [what, edit, parts] : cases) {
    SCOPED_TRACE(what);
    nlohmann::json bad = good;
    edit(bad);
    write_text(state, bad.dump());
    try {
      checkpoint_config(out);
      ADD_FAILURE() << "must throw";
    } catch (const IOError& e) {
      EXPECT_THAT(e.what(), HasSubstr(state.string()));
      for (const auto& part : parts)
        EXPECT_THAT(e.what(), HasSubstr(part));
    }
    ExperimentConfig again = cfg;
    EXPECT_THROW(run_experiment(again, {.resume = true}), IOError);
    EXPECT_THROW(evaluate_checkpoint(out, nullptr), IOError);
    EXPECT_EQ(read_file(out / "acc.csv"), acc_before) << "a refused resume changes nothing";
  }
  write_text(state, "{\"tasks_done\": ");
  try {
    checkpoint_config(out);
    ADD_FAILURE() << "truncated JSON must throw";
  } catch (const IOError& e) {
    EXPECT_THAT(e.what(), HasSubstr(state.string()));
    EXPECT_THAT(e.what(), HasSubstr("not valid JSON"));
  }
  write_text(state, good.dump());
  EXPECT_EQ(checkpoint_config(out).seed, cfg.seed) << "the original still reads";
}

TEST_F(CheckpointTest, ResumeRecordsItselfInTheManifest) {
  ExperimentConfig cfg = config();
  cfg.epochs = 1;
  run_experiment(cfg, {.stop_after_task = 2});
  const fs::path manifest = fs::path(cfg.output_dir) / "manifest.json";
  const nlohmann::json first = read_json(manifest);
  EXPECT_EQ(first["threads"], clarena::num_threads());
  EXPECT_EQ(first["tasks_done"], 2);
  EXPECT_GT(first["wall_seconds"].get<double>(), 0.0);
  EXPECT_TRUE(first["started_at"].is_string());
  EXPECT_EQ(first["resumed"], false);
  EXPECT_TRUE(first["resumes"].empty());

  const int threads = clarena::num_threads();
  clarena::set_num_threads(threads == 2 ? 3 : 2);  // a resume may run on another machine
  ExperimentConfig again = checkpoint_config(cfg.output_dir);
  again.output_dir = cfg.output_dir;
  run_experiment(again, {.resume = true});
  const nlohmann::json second = read_json(manifest);
  for (const char* kept : {"threads", "tasks_done", "wall_seconds", "started_at", "config", "seed",
                           "benchmark", "build_type", "version", "device"})
    EXPECT_EQ(second[kept], first[kept]) << kept << " of the first run must be kept";
  EXPECT_EQ(second["resumed"], true);
  ASSERT_EQ(second["resumes"].size(), 1u);
  const nlohmann::json& resume = second["resumes"][0];
  EXPECT_EQ(resume["threads"], clarena::num_threads());
  EXPECT_NE(resume["threads"], first["threads"]);
  EXPECT_EQ(resume["from_task"], 3);
  EXPECT_EQ(resume["tasks_done"], 5);
  EXPECT_GT(resume["wall_seconds"].get<double>(), 0.0);
  EXPECT_TRUE(resume["started_at"].is_string());

  run_experiment(again, {.resume = true});  // nothing left to do, still recorded
  const nlohmann::json third = read_json(manifest);
  ASSERT_EQ(third["resumes"].size(), 2u);
  EXPECT_EQ(third["resumes"][0], second["resumes"][0]);
  EXPECT_EQ(third["resumes"][1]["from_task"], 6);
  EXPECT_EQ(third["wall_seconds"], first["wall_seconds"]);
  clarena::set_num_threads(threads);
}
