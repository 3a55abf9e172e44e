// The one atomic-write helper and the one checksum (core/atomic_file.h). Kills and full disks
// in the middle of a run are tested on the `clarena` binary in test_cl_kill.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "clarena/core/atomic_file.h"
#include "clarena/core/errors.h"

using namespace clarena;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class AtomicFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("clarena_atomic_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

}  // namespace

TEST(Checksum, Fnv1a64ReferenceValues) {
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ull);
  EXPECT_EQ(fnv1a64("bar", fnv1a64("foo")), fnv1a64("foobar")) << "continues a hash";
}

TEST_F(AtomicFileTest, WritesAndReplacesWithoutTemporary) {
  const fs::path file = dir_ / "a.csv";
  write_file_atomic(file, "one\n");
  EXPECT_EQ(slurp(file), "one\n");
  write_file_atomic(file, std::string("two\0three", 9));
  EXPECT_EQ(slurp(file), std::string("two\0three", 9));
  write_file_atomic(file, "");
  EXPECT_TRUE(fs::exists(file));
  EXPECT_EQ(fs::file_size(file), 0u);
  EXPECT_FALSE(fs::exists(temp_path(file)));
  EXPECT_EQ(temp_path(file), dir_ / "a.csv.tmp");
}

TEST_F(AtomicFileTest, FailureNamesTheFileAndLeavesTheOldOne) {
  const fs::path missing = dir_ / "no" / "such" / "a.csv";
  try {
    write_file_atomic(missing, "x");
    FAIL() << "a folder that does not exist must throw";
  } catch (const IOError& e) {
    EXPECT_NE(std::string(e.what()).find(missing.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos);
  }
  // A folder in the way of the rename: the old content stays, no temporary is left.
  const fs::path file = dir_ / "b";
  fs::create_directories(file / "child");
  EXPECT_THROW(write_file_atomic(file, "new"), IOError);
  EXPECT_TRUE(fs::is_directory(file / "child"));
  EXPECT_FALSE(fs::exists(temp_path(file)));
}

TEST_F(AtomicFileTest, PlantedTemporaryLinkIsReplacedNotFollowed) {
  const fs::path file = dir_ / "c.json";
  const fs::path victim = dir_ / "victim";
  std::ofstream(victim) << "keep";
  fs::create_symlink(victim, temp_path(file));
  write_file_atomic(file, "{}\n");
  EXPECT_EQ(slurp(file), "{}\n");
  EXPECT_EQ(slurp(victim), "keep");
  EXPECT_FALSE(fs::is_symlink(file));
}

TEST_F(AtomicFileTest, ReplaceDirSwapsWholeFolders) {
  const fs::path target = dir_ / "checkpoint", staged = dir_ / "checkpoint.tmp";
  fs::create_directories(staged);
  write_file_atomic(staged / "x", "1");
  replace_dir_atomic(staged, target);  // no previous folder
  EXPECT_EQ(slurp(target / "x"), "1");
  EXPECT_FALSE(fs::exists(staged));

  fs::create_directories(staged);
  write_file_atomic(staged / "y", "2");
  replace_dir_atomic(staged, target);  // over the previous one
  EXPECT_FALSE(fs::exists(target / "x")) << "nothing of the previous folder is kept";
  EXPECT_EQ(slurp(target / "y"), "2");
  EXPECT_FALSE(fs::exists(staged));
  EXPECT_FALSE(fs::exists(old_dir_path(target)));
  EXPECT_EQ(recover_dir(target), target);
}

TEST_F(AtomicFileTest, RecoverDirFindsTheParkedPreviousFolder) {
  // What replace_dir_atomic leaves when killed between its two renames, where the file system
  // cannot exchange folders: the previous folder parked, the new one not yet in place.
  const fs::path target = dir_ / "checkpoint";
  fs::create_directories(old_dir_path(target));
  EXPECT_EQ(recover_dir(target), old_dir_path(target));
  fs::create_directories(target);
  EXPECT_EQ(recover_dir(target), target);
}
