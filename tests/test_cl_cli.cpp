// The `clarena` binary: refusals (exit code 2, the valid choices listed, nothing written),
// --help, and a short `train` whose every file lands in output_dir.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "cl_fixture.h"

#ifndef CLARENA_BIN
#error "CLARENA_BIN (the path of the built clarena binary) must be defined"
#endif

using cl_fixture::quote;
using cl_fixture::read_file;
using cl_fixture::TempDir;
using cl_fixture::tree;
namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Value;

namespace {

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cfg_ = cl_fixture::synthetic_config(dir_.path());
    cwd_ = dir_.path() / "cwd";
    logs_ = dir_.path() / "logs";
    fs::create_directories(cwd_);
    fs::create_directories(logs_);
  }

  struct Result {
    int code;
    std::string out, err;
  };

  /// Runs clarena with `args` in an empty working folder; stdout and stderr captured.
  Result clarena(const std::vector<std::string>& args) {
    std::string cmd = "cd " + quote(cwd_.string()) + " && " + quote(CLARENA_BIN);
    for (const auto& a : args)
      cmd += " " + quote(a);
    cmd += " >" + quote((logs_ / "out").string()) + " 2>" + quote((logs_ / "err").string());
    const int status = std::system(cmd.c_str());
    EXPECT_TRUE(WIFEXITED(status)) << cmd;
    return {WEXITSTATUS(status), read_file(logs_ / "out"), read_file(logs_ / "err")};
  }

  /// The overrides that point a run at the synthetic data and output_dir.
  std::vector<std::string> data_args(const std::string& command) {
    return {command,         "dataset=mnist",  "data_dir=" + cfg_.data_dir,   "hidden_dims=[32,32]",
            "batch_size=32", "progress=false", "output_dir=" + out().string()};
  }

  fs::path out() const { return cwd_ / "run"; }

  /// A refusal: exit code 2, a message on stderr, nothing written anywhere.
  Result expect_refused(std::vector<std::string> args) {
    Result r = clarena(args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_FALSE(r.err.empty());
    EXPECT_TRUE(fs::is_empty(cwd_)) << "a refused run must write nothing";
    return r;
  }

  /// Exit `code`, a message holding every one of `parts`, and nothing written anywhere.
  void expect_failure(const std::vector<std::string>& args, int code,
                      const std::vector<std::string>& parts) {
    Result r = clarena(args);
    EXPECT_EQ(r.code, code) << r.err;
    for (const auto& part : parts)
      EXPECT_THAT(r.err, HasSubstr(part));
    EXPECT_TRUE(fs::is_empty(cwd_)) << "a refused run must write nothing";
  }

  TempDir dir_;
  clarena::cl::ExperimentConfig cfg_;
  fs::path cwd_, logs_;
};

}  // namespace

TEST_F(CliTest, UnknownKeyListsValidKeys) {
  auto args = data_args("train");
  args.push_back("epochz=1");
  Result r = expect_refused(args);
  EXPECT_THAT(r.err, HasSubstr("epochz"));
  for (const char* key : {"epochs", "algorithm", "hidden_dims", "freeze_heads", "output_dir"})
    EXPECT_THAT(r.err, HasSubstr(key));
}

TEST_F(CliTest, UnknownAlgorithmListsAlgorithms) {
  auto args = data_args("train");
  args.push_back("algorithm=si");
  Result r = expect_refused(args);
  EXPECT_THAT(r.err, HasSubstr("unknown value `si`"));
  for (const char* name : {"finetuning", "fix", "independent", "random", "lwf", "ewc"})
    EXPECT_THAT(r.err, HasSubstr(name));
}

TEST_F(CliTest, CompareRefusesABadAlgorithmList) {
  for (const auto& [list, part] : std::vector<std::pair<std::string, std::string>>{
           {"algorithms=[finetuning,si]", "unknown algorithm `si`"},
           {"algorithms=fix", "expected a non-empty list of algorithms"},
           {"algorithms=[]", "expected a non-empty list of algorithms"},
           {"algorithms=[fix,fix]", "`fix` is listed twice"}}) {
    SCOPED_TRACE(list);
    auto args = data_args("compare");
    args.push_back(list);
    Result r = expect_refused(args);
    EXPECT_THAT(r.err, HasSubstr("`algorithms`: " + part));
  }
  auto args = data_args("compare");
  args.insert(args.end(), {"algorithms=[fix]", "algorithms=[lwf]"});
  EXPECT_THAT(expect_refused(args).err, HasSubstr("`algorithms`: given twice"));
  // Not a setting of a single run.
  args = data_args("train");
  args.push_back("algorithms=[fix]");
  EXPECT_THAT(expect_refused(args).err, HasSubstr("unknown config key `algorithms`"));
}

TEST_F(CliTest, BadValuesRefused) {
  for (const std::string bad : {"epochs=abc", "epochs=0", "batch_norm=maybe", "lr=-1"}) {
    SCOPED_TRACE(bad);
    auto args = data_args("train");
    args.push_back(bad);
    Result r = expect_refused(args);
    EXPECT_THAT(r.err, HasSubstr(bad.substr(0, bad.find('='))));
  }
  // The same refusal for `compare`, and for an argument that is neither file nor override.
  auto args = data_args("compare");
  args.push_back("epochs=abc");
  expect_refused(args);
  expect_refused({"train", "not_an_override"});
}

TEST_F(CliTest, HelpListsSettings) {
  Result r = clarena({"--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* word : {"train", "compare", "resume", "eval", "epochs", "algorithm",
                           "freeze_heads", "max_train_samples_per_task", "data_dir"})
    EXPECT_THAT(r.out, HasSubstr(word));
  EXPECT_TRUE(fs::is_empty(cwd_));
}

TEST_F(CliTest, TrainWritesEverythingIntoOutputDir) {
  auto args = data_args("train");
  args.insert(args.end(),
              {"algorithm=fix", "epochs=1", "num_tasks=2", "class_order=[0,1,2,3,4,5,6,7,8,9]"});
  const std::set<std::string> data_before = tree(cfg_.data_dir);
  Result r = clarena(args);
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_THAT(r.out, HasSubstr("Fix"));

  EXPECT_EQ(tree(cwd_).count("run"), 1u);
  for (const auto& entry : tree(cwd_))
    EXPECT_TRUE(entry == "run" || entry.starts_with("run/")) << entry << " written outside";
  EXPECT_EQ(tree(cfg_.data_dir), data_before);
  const std::set<std::string> expected{"acc.csv",
                                       "metrics.json",
                                       "curves.csv",
                                       "costs.csv",
                                       "acc_heatmap.svg",
                                       "average_accuracy.svg",
                                       "manifest.json",
                                       "config.yaml",
                                       "checkpoint",
                                       "checkpoint/model.params",
                                       "checkpoint/state.json"};
  EXPECT_EQ(tree(out()), expected) << "no stray (e.g. .tmp) files";
  const std::string acc = read_file(out() / "acc.csv");
  EXPECT_TRUE(acc.starts_with("after_training_task,average_accuracy,test_on_task_1,test_on_task_2"))
      << acc;
  EXPECT_EQ(std::count(acc.begin(), acc.end(), '\n'), 3);
  EXPECT_THAT(read_file(out() / "acc_heatmap.svg"), HasSubstr("<svg"));
  const clarena::cl::ExperimentConfig written = clarena::cl::load_config(out() / "config.yaml");
  EXPECT_EQ(written.algorithm, clarena::cl::Algorithm::Fix);
  EXPECT_EQ(written.num_tasks, 2);
  EXPECT_EQ(written.output_dir, out().string());
  EXPECT_THAT(read_file(out() / "manifest.json"), HasSubstr("\"seed\""));

  // eval of the checkpoint prints one line per task; resume of a finished run has no task
  // left and changes no result.
  Result e = clarena({"eval", out().string()});
  EXPECT_EQ(e.code, 0) << e.err;
  EXPECT_THAT(e.out, HasSubstr("test on task 2"));
  Result again = clarena({"resume", out().string()});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(read_file(out() / "acc.csv"), acc);
}

TEST_F(CliTest, ResumeOrEvalWithoutCheckpointFails) {
  for (const char* command : {"resume", "eval"}) {
    Result r = clarena({command, (cwd_ / "nothing").string()});
    EXPECT_EQ(r.code, 1) << command;
    EXPECT_THAT(r.err, HasSubstr("state.json")) << command;
    EXPECT_TRUE(fs::is_empty(cwd_)) << command;
  }
}

// ---- Bad input of every kind: a typed error, a clear message, exit 1 (I/O, a diverged run)
// or 2 (config), and no output folder left behind (issue 8) ----

TEST_F(CliTest, NonUtf8StringsRefused) {
  for (const std::string key : {"output_dir", "data_dir", "experiment_name"}) {
    SCOPED_TRACE(key);
    auto args = data_args("train");
    args.push_back(key + "=" + (cwd_ / "run\xff").string());
    expect_failure((args), 2, {"config key `" + key + "`", "not valid UTF-8"});
  }
  auto args = data_args("compare");
  args.push_back("output_dir=run\xfe");
  expect_failure((args), 2, {"config key `output_dir`"});
  const fs::path yaml = logs_ / "utf8.yaml";
  std::ofstream(yaml) << "output_dir: run\xff\n";
  args = data_args("train");
  args.erase(args.end() - 1);  // output_dir from the file
  args.insert(args.begin() + 1, yaml.string());
  expect_failure((args), 2, {"line 1", "config key `output_dir`"});
}

TEST_F(CliTest, YamlKeysThatAreListsOrMapsRefused) {
  for (const std::string text : {"[a, b]: 1\n", "{a: 1}: 2\n", "[]:\n"}) {
    SCOPED_TRACE(text);
    const fs::path yaml = logs_ / "keys.yaml";
    std::ofstream(yaml) << text;
    auto args = data_args("train");
    args.insert(args.begin() + 1, yaml.string());
    expect_failure((args), 2, {yaml.string(), "line 1", "a key must be a plain name"});
  }
}

TEST_F(CliTest, DeeplyNestedYamlRefused) {
  const fs::path yaml = logs_ / "deep.yaml";
  std::ofstream(yaml) << "epochs: " << std::string(100000, '[') << std::string(100000, ']') << "\n";
  auto args = data_args("train");
  args.insert(args.begin() + 1, yaml.string());
  expect_failure((args), 2, {"nesting deeper than 32 levels at line 1"});
}

TEST_F(CliTest, OutputDirThatCannotBeWrittenRefused) {
  const fs::path file = logs_ / "a_file";
  std::ofstream(file) << "x";
  for (const auto& [dir, why] : std::vector<std::pair<std::string, std::string>>{
           {file.string(), "is a file, not a folder"},
           {(file / "run").string(), "cannot be created"},
           {"/proc/clarena_cli_test", "lies under /proc"},
           {"/sys/clarena_cli_test", "lies under /sys"}}) {
    for (const char* command : {"train", "compare"}) {
      SCOPED_TRACE(dir + " " + command);
      auto args = data_args(command);
      args.back() = "output_dir=" + dir;
      expect_failure((args), 1, {"output_dir '" + dir + "'", why});
    }
  }
  EXPECT_EQ(read_file(file), "x");
  if (::geteuid() != 0) {  // as root only a read-only mount refuses, and tests mount nothing
    const fs::path locked = logs_ / "locked";
    fs::create_directories(locked);
    fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
    auto args = data_args("train");
    args.back() = "output_dir=" + (locked / "run").string();
    expect_failure((args), 1, {(locked / "run").string(), "cannot be created in"});
    fs::permissions(locked, fs::perms::owner_all);
  }
}

TEST_F(CliTest, DataThatCannotMakeEveryTaskRefused) {
  auto with_data = [&](const fs::path& data) {
    auto args = data_args("train");
    args[2] = "data_dir=" + data.string();
    return args;
  };
  // No images at all.
  const fs::path empty = dir_.path() / "empty";
  fs::create_directories(empty);
  for (const char* prefix : {"train", "t10k"}) {
    clarena::cl::write_idx(empty / (std::string(prefix) + "-images-idx3-ubyte"), {0, 28, 28}, {},
                           false);
    clarena::cl::write_idx(empty / (std::string(prefix) + "-labels-idx1-ubyte"), {0}, {}, false);
  }
  expect_failure((with_data(empty)), 1,
                 {(empty / "train-images-idx3-ubyte").string(), "holds no images"});
  // A tiny test set of classes 0..4: task 4 is the first without a test image.
  const fs::path tiny = dir_.path() / "tiny";
  cl_fixture::write_synthetic_mnist(tiny, 600, 5);
  expect_failure((with_data(tiny)), 1,
                 {(tiny / "t10k-images-idx3-ubyte").string(), "task 4 (classes 6, 7)"});
}

TEST_F(CliTest, ValFractionLeavingLessThanABatchRefused) {
  auto args = data_args("train");
  args.push_back("val_fraction=0.9");
  expect_failure((args), 2, {"val_fraction=0.9", "batch_size=32", "fewer than one batch"});
}

TEST_F(CliTest, OutOfRangeAndHugeValuesRefused) {
  for (const std::string bad :
       {"epochs=-1", "batch_size=0", "epochs=1e20", "batch_size=100000000000000000000",
        "num_tasks=20", "num_tasks=1000000", "hidden_dims=[1048576,1048576]", "lr=1e400"}) {
    SCOPED_TRACE(bad);
    auto args = data_args("train");
    args.push_back(bad);
    expect_failure((args), 2, {bad.substr(0, bad.find('='))});
  }
}

TEST_F(CliTest, DivergingRunStopsWithTaskEpochStep) {
  // With one hidden layer, SGD at lr=10 blows up to a NaN loss within a few epochs (task 2 of
  // the synthetic data); with two, dead ReLUs keep it finite.
  auto args = data_args("train");
  args.insert(args.end(), {"lr=10", "epochs=5", "hidden_dims=[32]"});
  Result r = clarena(args);
  EXPECT_EQ(r.code, 1) << r.err;
  for (const char* part : {"training diverged: the loss is nan at task ", ", epoch ", ", step ",
                           "(optimizer sgd, lr=10.0)"})
    EXPECT_THAT(r.err, HasSubstr(part));
  // The last checkpoint is kept: `eval` tests it, `resume` would start from it.
  EXPECT_TRUE(fs::exists(out() / "checkpoint" / "state.json"));
  EXPECT_THAT(read_file(out() / "curves.csv"), Not(HasSubstr("nan")));
  if (!Value(r.err, HasSubstr("at task 1,"))) {
    Result e = clarena({"eval", out().string()});
    EXPECT_EQ(e.code, 0) << e.err;
    EXPECT_THAT(e.out, HasSubstr("test on task 1"));
  }
}
