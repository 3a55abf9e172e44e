// Kills and full disks: the built `clarena` binary is killed (or meets a full disk) at every
// durable file operation of a run, in turn (CLARENA_FAULT_AT, core/atomic_file.h); `clarena
// resume` must then finish the run with the same results, byte for byte, as an uninterrupted
// one, and leave no temporary behind. A real full disk (a tiny tmpfs) where the system allows.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cl_fixture.h"

#ifndef CLARENA_BIN
#error "CLARENA_BIN (the path of the built clarena binary) must be defined"
#endif

using cl_fixture::quote;
using cl_fixture::read_file;
using cl_fixture::TempDir;
using cl_fixture::tree;
namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::AnyOf;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Value;

namespace {

/// Runs go to /dev/shm where there is one: a run fsyncs ~135 times, and these tests make
/// hundreds of runs; on tmpfs an fsync costs nothing, on a busy disk it costs milliseconds.
fs::path fast_scratch(const fs::path& fallback) {
  std::error_code ec;
  const fs::path shm = "/dev/shm";
  if (!fs::is_directory(shm, ec) || ::access(shm.c_str(), W_OK) != 0) return fallback;
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return shm / ("clarena_killtest_" + std::to_string(::getpid()) + "_" + info->name());
}

class KillTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cl_fixture::write_synthetic_mnist(dir_.path() / "data", 200, 60);
    logs_ = dir_.path() / "logs";
    fs::create_directories(logs_);
    scratch_ = fast_scratch(dir_.path() / "scratch");
    fs::remove_all(scratch_);
    fs::create_directories(scratch_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(scratch_, ec);
  }

  struct Result {
    bool killed;
    int code;  // exit code when not killed
    std::string err;
  };

  /// Runs clarena with `args`, CLARENA_FAULT_AT=`fault` when not empty; stderr captured.
  Result clarena(const std::vector<std::string>& args, const std::string& fault = "") {
    // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string.
    std::string cmd;
    if (!fault.empty()) cmd.append("CLARENA_FAULT_AT=").append(quote(fault)).append(" ");
    cmd.append("exec ").append(quote(CLARENA_BIN));
    for (const auto& a : args)
      cmd.append(" ").append(quote(a));
    cmd.append(" >/dev/null 2>").append(quote((logs_ / "err").string()));
    const int status = std::system(cmd.c_str());
    Result r{false, -1, read_file(logs_ / "err")};
    if (WIFSIGNALED(status)) {
      EXPECT_EQ(WTERMSIG(status), SIGKILL) << cmd;
      r.killed = true;
    } else if (WIFEXITED(status)) {
      r.code = WEXITSTATUS(status);
      r.killed = r.code == 128 + SIGKILL;  // a shell that reports its child's death
    }
    return r;
  }

  /// train: 3 permuted tasks, 1 epoch, a small MLP, into `out`.
  std::vector<std::string> train_args(const fs::path& out) const {
    return {"train",
            "benchmark=permuted",
            "dataset=mnist",
            "data_dir=" + (dir_.path() / "data").string(),
            "num_tasks=3",
            "epochs=1",
            "hidden_dims=[16]",
            "batch_size=50",
            "progress=false",
            "output_dir=" + out.string()};
  }

  /// What must not depend on kills: every result file except the timings (costs.csv, the
  /// manifest's wall times), and the checkpoint with its state minus the per-step milliseconds.
  static std::string fingerprint(const fs::path& out) {
    std::string all;
    for (const char* file : {"acc.csv", "metrics.json", "curves.csv", "acc_heatmap.svg",
                             "average_accuracy.svg", "config.yaml", "checkpoint/model.params"})
      all += std::string("== ") + file + "\n" + read_file(out / file);
    json state = json::parse(read_file(out / "checkpoint" / "state.json"));
    for (auto& cost : state["costs"])
      for (const char* ms : {"forward_ms", "backward_ms", "optimizer_ms"})
        cost.at(ms) = 0;
    all += "== state.json\n" + state.dump() + "\n== costs.csv rows: ";
    const std::string costs = read_file(out / "costs.csv");
    all += std::to_string(std::count(costs.begin(), costs.end(), '\n'));
    json manifest = json::parse(read_file(out / "manifest.json"));
    all += "\n== manifest config\n" + manifest["config"].dump() + manifest["benchmark"].dump();
    return all;
  }

  TempDir dir_;
  fs::path logs_, scratch_;
};

}  // namespace

// A kill at the N-th write, fsync or rename of a run, for every N until the run gets through
// untouched; each time `resume` (itself killed once at the same step, then run to the end)
// finishes the run exactly as an uninterrupted run does.
TEST_F(KillTest, KillAtEveryDurableStepThenResumeMatchesUninterruptedRun) {
  const fs::path out = scratch_ / "out";
  Result whole = clarena(train_args(out));
  ASSERT_FALSE(whole.killed);
  ASSERT_EQ(whole.code, 0) << whole.err;
  const std::string expected = fingerprint(out);
  const std::set<std::string> files = tree(out);
  ASSERT_TRUE(files.count("checkpoint/state.json"));

  int n = 1;
  for (;; ++n) {
    SCOPED_TRACE("killed at durable step " + std::to_string(n));
    fs::remove_all(out);
    Result r = clarena(train_args(out), std::to_string(n));
    if (!r.killed) {
      ASSERT_EQ(r.code, 0) << r.err;
      break;  // n is past the run's last durable step
    }
    // Whatever the kill left must be resumable, or (killed before the first checkpoint)
    // refused without harm; a resume killed at the same step number must not change that.
    bool resumable = true;
    for (int attempt = 0; attempt < 3; ++attempt) {
      Result again = clarena({"resume", out.string()}, attempt == 0 ? std::to_string(n) : "");
      if (again.killed) continue;
      if (again.code == 1 && Value(again.err, HasSubstr("no checkpoint at")) &&
          !fs::exists(out / "checkpoint")) {
        resumable = false;
        break;
      }
      ASSERT_EQ(again.code, 0) << again.err;
      break;
    }
    if (!resumable) {
      Result fresh = clarena(train_args(out));
      ASSERT_EQ(fresh.code, 0) << fresh.err;
    }
    ASSERT_EQ(fingerprint(out), expected);
    ASSERT_EQ(tree(out), files) << "no stray temporaries";
  }
  EXPECT_GT(n, 30) << "a 3-task run makes dozens of durable writes";
  std::printf("durable steps: %d\n", n - 1);
}

// A full disk at the N-th durable step, for every N: exit code 1, an IOError naming the file,
// no temporary left to hold the space; once there is room again `resume` finishes the run.
TEST_F(KillTest, FullDiskAtEveryDurableStepFailsCleanlyAndResumes) {
  const fs::path out = scratch_ / "out";
  ASSERT_EQ(clarena(train_args(out)).code, 0);
  const std::string expected = fingerprint(out);
  const std::set<std::string> files = tree(out);

  std::set<std::string> named;
  int n = 1;
  for (;; ++n) {
    SCOPED_TRACE("full disk at durable step " + std::to_string(n));
    fs::remove_all(out);
    Result r = clarena(train_args(out), std::to_string(n) + ":enospc");
    ASSERT_FALSE(r.killed);
    if (r.code == 0) break;
    ASSERT_EQ(r.code, 1) << r.err;
    EXPECT_THAT(r.err, HasSubstr("No space left on device"));
    EXPECT_THAT(r.err, AnyOf(HasSubstr("cannot write " + out.string() + "/"),
                             HasSubstr("cannot replace folder " + out.string() + "/checkpoint")));
    for (const auto& entry : tree(out))
      EXPECT_FALSE(entry.ends_with(".tmp") || entry.find(".tmp/") != std::string::npos)
          << entry << " left behind";
    for (const char* file :
         {"acc.csv", "metrics.json", "curves.csv", "costs.csv", "acc_heatmap.svg",
          "average_accuracy.svg", "manifest.json", "model.params", "state.json"})
      if (Value(r.err, HasSubstr(std::string("/") + file + ":"))) named.insert(file);

    Result resumed = clarena({"resume", out.string()});
    if (resumed.code != 0) {
      ASSERT_THAT(resumed.err, HasSubstr("no checkpoint at")) << resumed.err;
      ASSERT_EQ(clarena(train_args(out)).code, 0);
    }
    ASSERT_EQ(fingerprint(out), expected);
    ASSERT_EQ(tree(out), files);
  }
  EXPECT_GT(n, 30);
  std::printf("durable steps: %d\n", n - 1);
  EXPECT_EQ(named.size(), 9u) << "every result file met the full disk once";
}

// A real full disk: a 64 KiB tmpfs (in a private mount namespace, where `unshare` allows
// one) fills up during the run. The run fails with exit code 1 and an IOError naming the file,
// leaves no temporary holding space, and once the disk has room `resume` finishes the run.
TEST_F(KillTest, RealFullDiskFailsCleanlyAndResumeFinishes) {
  if (std::system("unshare -rm true >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "no private mount namespace here (unshare -rm)";
  const fs::path mnt = scratch_ / "mnt";
  fs::create_directories(mnt);
  const fs::path run = mnt / "run";
  std::string train;
  for (const auto& a : train_args(run))
    train.append(" ").append(quote(a));
  const std::string bin = quote(CLARENA_BIN), log = logs_.string() + "/";
  const std::string script =
      "mount -t tmpfs -o size=64k tmpfs " + quote(mnt.string()) + " || exit 99\n" + bin + train +
      " >/dev/null 2>" + log + "err1; echo $? >" + log + "rc1\n" + "find " + quote(run.string()) +
      " >" + log + "tree1\n" + "mount -o remount,size=8m " + quote(mnt.string()) + "\n" + bin +
      " resume " + quote(run.string()) + " >/dev/null 2>" + log + "err2; echo $? >" + log +
      "rc2\n" + "cat " + quote((run / "acc.csv").string()) + " >" + log + "acc\n";
  const int status = std::system(("unshare -rm sh -c " + quote(script)).c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 99) GTEST_SKIP() << "cannot mount a tmpfs";
  const std::string err1 = read_file(logs_ / "err1");
  EXPECT_EQ(read_file(logs_ / "rc1"), "1\n") << err1;
  EXPECT_THAT(err1, HasSubstr("No space left on device"));
  EXPECT_THAT(err1, HasSubstr("cannot write " + run.string() + "/"));
  const std::string tree1 = read_file(logs_ / "tree1");
  EXPECT_THAT(tree1, Not(HasSubstr(".tmp"))) << "a failed write must not keep its temporary:\n"
                                             << tree1;
  EXPECT_EQ(read_file(logs_ / "rc2"), "0\n") << read_file(logs_ / "err2");
  const std::string acc = read_file(logs_ / "acc");
  EXPECT_EQ(std::count(acc.begin(), acc.end(), '\n'), 4) << acc;
  std::printf("full disk: %s", err1.c_str());
}
