// IDX reader on small files written here, and the benchmark index/label logic.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>

#include "clarena/cl/benchmark_mapping.h"
#include "clarena/cl/data.h"
#include "clarena/cl/idx.h"
#include "clarena/cl/metrics.h"
#include "clarena/cl/plots.h"
#include "clarena/core/errors.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace clarena::cl;
using clarena::IOError;
using clarena::ValueError;

namespace {

// Whether `text` contains `part`; the failure message shows both.
// A fresh folder per test, removed afterwards.
class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ =
        fs::temp_directory_path() / ("clarena_cl_" + std::to_string(getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path write_raw(const std::string& name, const std::vector<uint8_t>& bytes) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
    return p;
  }

  std::string read_raw_text(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  std::vector<uint8_t> read_raw(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }

  // Writes <prefix>-images/labels files with n images of 2x3 and the given labels.
  void write_split(const std::string& prefix, int64_t n_images, std::vector<uint8_t> labels,
                   bool gzip) {
    std::vector<uint8_t> px(static_cast<size_t>(n_images * 6));
    std::iota(px.begin(), px.end(), uint8_t{0});
    const std::string gz = gzip ? ".gz" : "";
    write_idx(dir_ / (prefix + "-images-idx3-ubyte" + gz), {n_images, 2, 3}, px, gzip);
    write_idx(dir_ / (prefix + "-labels-idx1-ubyte" + gz), {static_cast<int64_t>(labels.size())},
              labels, gzip);
  }

  // The message of the IOError `f` throws.
  template <typename F>
  std::string io_error(F f) {
    try {
      f();
    } catch (const IOError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no IOError thrown";
    return "";
  }

  fs::path dir_;
};

std::vector<uint8_t> iota_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  std::iota(v.begin(), v.end(), uint8_t{0});
  return v;
}

}  // namespace

// ---- IDX reader ----

TEST_F(IdxTest, PlainRoundTrip) {
  const auto data = iota_bytes(12);
  write_idx(dir_ / "a.idx", {3, 2, 2}, data, false);
  const IdxArray a = read_idx(dir_ / "a.idx");
  EXPECT_EQ(a.dims, (std::vector<int64_t>{3, 2, 2}));
  EXPECT_EQ(a.data, data);
  const auto raw = read_raw(dir_ / "a.idx");
  ASSERT_EQ(raw.size(), 4u + 12 + 12);
  EXPECT_EQ(raw[2], 0x08);
  EXPECT_EQ(raw[3], 3);
  EXPECT_EQ(raw[7], 3);  // big-endian first dim
}

TEST_F(IdxTest, GzipRoundTrip) {
  const auto data = iota_bytes(200);
  write_idx(dir_ / "a.idx.gz", {200}, data, true);
  const auto raw = read_raw(dir_ / "a.idx.gz");
  ASSERT_GE(raw.size(), 2u);
  EXPECT_EQ(raw[0], 0x1f);
  EXPECT_EQ(raw[1], 0x8b);
  const IdxArray a = read_idx(dir_ / "a.idx.gz");
  EXPECT_EQ(a.dims, (std::vector<int64_t>{200}));
  EXPECT_EQ(a.data, data);
}

TEST_F(IdxTest, MissingFileNamesIt) {
  const fs::path p = dir_ / "nope.idx";
  const std::string msg = io_error([&] { read_idx(p); });
  EXPECT_THAT(msg, HasSubstr(p.string()));
  EXPECT_THAT(msg, HasSubstr("cannot open"));
}

TEST_F(IdxTest, BadMagic) {
  const fs::path p = write_raw("bad.idx", {1, 0, 8, 1, 0, 0, 0, 1, 5});
  const std::string msg = io_error([&] { read_idx(p); });
  EXPECT_THAT(msg, HasSubstr(p.string()));
  EXPECT_THAT(msg, HasSubstr("bad magic at byte offset 0"));
}

TEST_F(IdxTest, WrongTypeRefused) {
  const fs::path p = write_raw("f32.idx", {0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0});
  const std::string msg = io_error([&] { read_idx(p); });
  EXPECT_THAT(msg, HasSubstr(p.string()));
  EXPECT_THAT(msg, HasSubstr("float32 (0x0D)"));
  EXPECT_THAT(msg, HasSubstr("only unsigned byte (0x08)"));
}

TEST_F(IdxTest, TruncatedHeader) {
  const fs::path p = write_raw("hdr.idx", {0, 0, 8, 3, 0, 0, 0, 1});
  const std::string msg = io_error([&] { read_idx(p); });
  EXPECT_THAT(msg, HasSubstr(p.string()));
  EXPECT_THAT(msg, HasSubstr("truncated header"));
}

TEST_F(IdxTest, TruncatedPayload) {
  const fs::path p = write_raw("short.idx", {0, 0, 8, 1, 0, 0, 0, 10, 1, 2, 3, 4, 5});
  const std::string msg = io_error([&] { read_idx(p); });
  EXPECT_THAT(msg, HasSubstr(p.string()));
  EXPECT_THAT(msg, HasSubstr("truncated payload"));
  EXPECT_THAT(msg, HasSubstr("need 10 bytes"));
  EXPECT_THAT(msg, HasSubstr("byte offset 13"));
}

TEST_F(IdxTest, ExtraBytes) {
  const fs::path p = write_raw("long.idx", {0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3});
  const std::string msg = io_error([&] { read_idx(p); });
  EXPECT_THAT(msg, HasSubstr(p.string()));
  EXPECT_THAT(msg, HasSubstr("1 extra bytes"));
  EXPECT_THAT(msg, HasSubstr("byte offset 10"));
}

TEST_F(IdxTest, TruncatedGzip) {
  write_idx(dir_ / "full.gz", {4000}, std::vector<uint8_t>(4000, 7), true);
  auto raw = read_raw(dir_ / "full.gz");
  raw.resize(raw.size() / 2);
  const fs::path p = write_raw("cut.gz", raw);
  const std::string msg = io_error([&] { read_idx(p); });
  EXPECT_THAT(msg, HasSubstr(p.string()));
  EXPECT_THAT(msg, HasSubstr("gzip"));
}

TEST_F(IdxTest, GzipPayloadErrorsCountDecompressedBytes) {
  const fs::path p = dir_ / "long.gz";
  const std::vector<uint8_t> bytes = {0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3};  // one byte too many
  gzFile f = gzopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), 11);
  ASSERT_EQ(gzclose(f), Z_OK);
  const std::string msg = io_error([&] { read_idx(p); });
  EXPECT_THAT(msg, HasSubstr(p.string()));
  EXPECT_THAT(msg, HasSubstr("byte offset 10 of the decompressed data"));
}

TEST_F(IdxTest, WriteIdxRefusesSizeMismatch) {
  EXPECT_THROW(write_idx(dir_ / "x", {2, 2}, {1, 2, 3}, false), ValueError);
}

TEST_F(IdxTest, LoadSplitPlainAndGzip) {
  write_split("train", 4, {0, 1, 9, 3}, true);
  write_split("t10k", 2, {5, 6}, false);
  const IdxDataset tr = load_idx_split(dir_, true);
  EXPECT_EQ(tr.num, 4);
  EXPECT_EQ(tr.rows, 2);
  EXPECT_EQ(tr.cols, 3);
  EXPECT_EQ(tr.images.size(), 24u);
  EXPECT_EQ(tr.labels, (std::vector<int64_t>{0, 1, 9, 3}));
  const IdxDataset te = load_idx_split(dir_, false);
  EXPECT_EQ(te.num, 2);
  EXPECT_EQ(te.labels, (std::vector<int64_t>{5, 6}));
}

TEST_F(IdxTest, LoadSplitCountMismatchNamesBothFiles) {
  write_split("train", 3, {0, 1}, false);
  const std::string msg = io_error([&] { load_idx_split(dir_, true); });
  EXPECT_THAT(msg, HasSubstr((dir_ / "train-images-idx3-ubyte").string()));
  EXPECT_THAT(msg, HasSubstr((dir_ / "train-labels-idx1-ubyte").string()));
  EXPECT_THAT(msg, HasSubstr("3 images"));
  EXPECT_THAT(msg, HasSubstr("2 labels"));
}

TEST_F(IdxTest, LoadSplitLabelOutOfRange) {
  write_split("train", 2, {3, 10}, false);
  const std::string msg = io_error([&] { load_idx_split(dir_, true); });
  EXPECT_THAT(msg, HasSubstr("train-labels-idx1-ubyte"));
  EXPECT_THAT(msg, HasSubstr("label 10 of item 1"));
  EXPECT_NO_THROW(load_idx_split(dir_, true, 11));
}

TEST_F(IdxTest, LoadSplitWrongRank) {
  write_idx(dir_ / "train-images-idx3-ubyte", {2, 6}, iota_bytes(12), false);
  write_idx(dir_ / "train-labels-idx1-ubyte", {2}, {0, 1}, false);
  const std::string msg = io_error([&] { load_idx_split(dir_, true); });
  EXPECT_THAT(msg, HasSubstr("train-images-idx3-ubyte"));
  EXPECT_THAT(msg, HasSubstr("3 dims"));
}

TEST_F(IdxTest, LoadSplitMissingFolderSaysHowToGetData) {
  const std::string msg = io_error([&] { load_idx_split(dir_ / "absent", true); });
  EXPECT_THAT(msg, HasSubstr((dir_ / "absent").string()));
  EXPECT_THAT(msg, HasSubstr("dataset-fashion-mnist"));
  EXPECT_THAT(msg, HasSubstr("/usr/share/datasets/fashion-mnist"));
  EXPECT_THAT(msg, HasSubstr("data_dir="));
}

TEST_F(IdxTest, LoadSplitMissingLabelsFile) {
  write_idx(dir_ / "t10k-images-idx3-ubyte.gz", {1, 2, 3}, iota_bytes(6), true);
  const std::string msg = io_error([&] { load_idx_split(dir_, false); });
  EXPECT_THAT(msg, HasSubstr("t10k-labels-idx1-ubyte"));
  EXPECT_THAT(msg, HasSubstr("dataset-fashion-mnist"));
}

TEST(IdxRealData, FashionMnistTestSplitIfInstalled) {
  if (!fs::exists(fs::path(kFashionMnistDir) / "t10k-labels-idx1-ubyte.gz")) {
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  }
  const IdxDataset te = load_idx_split(kFashionMnistDir, false);
  EXPECT_EQ(te.num, 10000);
  EXPECT_EQ(te.rows, 28);
  EXPECT_EQ(te.cols, 28);
  std::vector<int> count(10, 0);
  for (int64_t l : te.labels)
    ++count[static_cast<size_t>(l)];
  for (int c : count)
    EXPECT_EQ(c, 1000);
}

// ---- Permuted benchmark ----

TEST(Permutation, IsAPermutationAndDeterministic) {
  const auto p = task_permutation(42, 1, 784);
  ASSERT_EQ(p.size(), 784u);
  std::vector<int32_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int32_t i = 0; i < 784; ++i)
    EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_EQ(task_permutation(42, 1, 784), p);
  // Task 1 is permuted too (not the identity).
  std::vector<int32_t> identity(784);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_NE(p, identity);
}

TEST(Permutation, TasksAndSeedsDiffer) {
  std::set<uint64_t> hashes;
  for (int t = 1; t <= 10; ++t)
    hashes.insert(permutation_hash(task_permutation(42, t, 784)));
  EXPECT_EQ(hashes.size(), 10u);
  EXPECT_NE(task_permutation(42, 2, 784), task_permutation(43, 2, 784));
}

TEST(Permutation, GoldenValuesPinTheScheme) {
  // If this fails the permutations changed: every saved manifest and result moves with them.
  const auto p = task_permutation(42, 1, 784);
  EXPECT_EQ(std::vector<int32_t>(p.begin(), p.begin() + 5),
            (std::vector<int32_t>{615, 713, 494, 243, 604}));
  EXPECT_EQ(permutation_hash(p), 9284564064251636009ULL);
  EXPECT_EQ(train_val_split(20, 0.25).second, (std::vector<int64_t>{2, 6, 12, 16, 18}));
}

TEST(Permutation, RefusesBadArguments) {
  EXPECT_THROW(task_permutation(42, 0, 784), ValueError);
  EXPECT_THROW(task_permutation(42, 1, 0), ValueError);
}

TEST(Permutation, HashIsFnv1a) {
  EXPECT_EQ(permutation_hash({}), 0xcbf29ce484222325ULL);
  EXPECT_NE(permutation_hash({0, 1}), permutation_hash({1, 0}));
}

// ---- Split benchmark ----

TEST(Split, DefaultIsFiveTasksOfTwo) {
  const SplitSpec s = make_split();
  ASSERT_EQ(s.classes_per_task.size(), 5u);
  for (int t = 1; t <= 5; ++t) {
    EXPECT_EQ(s.classes_per_task[static_cast<size_t>(t - 1)],
              (std::vector<int64_t>{2 * t - 2, 2 * t - 1}));
    EXPECT_EQ(num_classes_of_task(s, t), 2);
    EXPECT_EQ(classes_before_task(s, t), 2 * (t - 1));
  }
}

TEST(Split, ClassOrderIsFollowed) {
  const SplitSpec s = make_split(10, 2, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0});
  EXPECT_EQ(s.classes_per_task[0], (std::vector<int64_t>{9, 8, 7, 6, 5}));
  EXPECT_EQ(s.classes_per_task[1], (std::vector<int64_t>{4, 3, 2, 1, 0}));
}

TEST(Split, RefusalsListValidValues) {
  try {
    make_split(10, 3);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("valid num_tasks: 1, 2, 5, 10"));
  }
  try {
    make_split(10, 5, {0, 1, 2, 3, 4, 5, 6, 7, 8, 8});
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("appears twice"));
  }
  try {
    make_split(10, 5, {0, 1, 2, 3, 4, 5, 6, 7, 8, 10});
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("valid classes: 0..9"));
  }
  EXPECT_THROW(make_split(10, 5, {0, 1, 2}), ValueError);
}

TEST(LabelMapping, SplitTilAndCil) {
  const SplitSpec s = make_split(10, 5, {9, 8, 7, 6, 5, 4, 3, 2, 1, 0});
  // Task 2 holds classes {7, 6}.
  EXPECT_EQ(split_train_label(s, Scenario::TIL, 2, 7), 0);
  EXPECT_EQ(split_train_label(s, Scenario::TIL, 2, 6), 1);
  EXPECT_EQ(split_train_label(s, Scenario::CIL, 2, 7), 2);
  EXPECT_EQ(split_train_label(s, Scenario::CIL, 2, 6), 3);
  EXPECT_EQ(split_train_label(s, Scenario::CIL, 5, 0), 9);
  EXPECT_EQ(split_label_offset(s, Scenario::TIL, 4), 0);
  EXPECT_EQ(split_label_offset(s, Scenario::CIL, 4), 6);
  EXPECT_EQ(task_of_class(s, 7), 2);
  EXPECT_THROW(split_train_label(s, Scenario::TIL, 2, 9), ValueError);
  EXPECT_THROW(num_classes_of_task(s, 6), ValueError);
  EXPECT_THROW(num_classes_of_task(s, 0), ValueError);
}

TEST(LabelMapping, PermutedTilAndCil) {
  EXPECT_EQ(permuted_train_label(Scenario::TIL, 3, 7), 7);
  EXPECT_EQ(permuted_train_label(Scenario::CIL, 1, 7), 7);
  EXPECT_EQ(permuted_train_label(Scenario::CIL, 3, 7), 27);
  EXPECT_EQ(permuted_label_offset(Scenario::CIL, 5), 40);
  EXPECT_EQ(permuted_label_offset(Scenario::TIL, 5), 0);
  EXPECT_THROW(permuted_train_label(Scenario::TIL, 1, 10), ValueError);
}

TEST(LabelMapping, ScenarioNames) {
  EXPECT_EQ(scenario_from_string("til"), Scenario::TIL);
  EXPECT_EQ(scenario_from_string("CIL"), Scenario::CIL);
  EXPECT_EQ(to_string(Scenario::CIL), "cil");
  try {
    scenario_from_string("dil");
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("valid: til, cil"));
  }
}

// ---- Data order ----

TEST(DataOrder, TrainValSplitDisjointAndCovering) {
  const auto [train, val] = train_val_split(1000);
  EXPECT_EQ(val.size(), 100u);
  EXPECT_EQ(train.size(), 900u);
  std::vector<int64_t> all = train;
  all.insert(all.end(), val.begin(), val.end());
  std::sort(all.begin(), all.end());
  for (int64_t i = 0; i < 1000; ++i)
    EXPECT_EQ(all[static_cast<size_t>(i)], i);
  EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));
  EXPECT_EQ(train_val_split(1000).second, val);          // fixed seed
  EXPECT_NE(train_val_split(1000, 0.1, 7).second, val);  // other split seed
  EXPECT_EQ(train_val_split(60000).second.size(), 6000u);
  EXPECT_TRUE(train_val_split(10, 0.0).second.empty());
  EXPECT_TRUE(train_val_split(0).first.empty());
  EXPECT_THROW(train_val_split(10, 1.0), ValueError);
  EXPECT_THROW(train_val_split(10, -0.1), ValueError);
}

TEST(DataOrder, EpochOrderIsSeededPerTaskAndEpoch) {
  const auto a = epoch_order(500, 42, 1, 0);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 500; ++i)
    EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_EQ(epoch_order(500, 42, 1, 0), a);
  EXPECT_NE(epoch_order(500, 42, 1, 1), a);
  EXPECT_NE(epoch_order(500, 42, 2, 0), a);
  EXPECT_NE(epoch_order(500, 43, 1, 0), a);
}

// ---- Data that cannot make every task, and outputs at many tasks (issue 8) ----

TEST_F(IdxTest, LoadSplitZeroImagesNamesFile) {
  write_split("train", 0, {}, false);
  const std::string msg = io_error([&] { load_idx_split(dir_, true); });
  EXPECT_THAT(msg, HasSubstr((dir_ / "train-images-idx3-ubyte").string()));
  EXPECT_THAT(msg, HasSubstr("holds no images (dims [0, 2, 3])"));
}

TEST_F(IdxTest, LoadSplitZeroPixelImages) {
  write_idx(dir_ / "train-images-idx3-ubyte", {4, 0, 3}, {}, false);
  write_idx(dir_ / "train-labels-idx1-ubyte", {4}, {0, 1, 2, 3}, false);
  EXPECT_THAT(io_error([&] { load_idx_split(dir_, true); }), HasSubstr("images of 0x3 pixels"));
}

TEST_F(IdxTest, LoadSplitDataDirIsAFile) {
  const fs::path file = write_raw("not_a_folder", {1, 2, 3});
  const std::string msg = io_error([&] { load_idx_split(file, true); });
  EXPECT_THAT(msg, HasSubstr("data folder '" + file.string() + "' is not a folder"));
}

namespace {

// A Split benchmark over 2x3-pixel images written by write_split into `dir`.
ExperimentConfig tiny_config(const fs::path& dir, int num_tasks = 5) {
  ExperimentConfig cfg;
  cfg.dataset = Dataset::Mnist;
  cfg.data_dir = dir.string();
  cfg.num_tasks = num_tasks;
  cfg.hidden_dims = {8};
  cfg.batch_size = 4;
  cfg.progress = false;
  validate(cfg);
  return cfg;
}

std::vector<uint8_t> cycling_labels(int64_t n, int classes) {
  std::vector<uint8_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    labels[static_cast<size_t>(i)] = static_cast<uint8_t>(i % classes);
  return labels;
}

}  // namespace

TEST_F(IdxTest, BenchmarkTaskWithoutTrainingImagesNamesFileAndTask) {
  write_split("train", 60, cycling_labels(60, 6), false);  // classes 6..9 missing
  write_split("t10k", 20, cycling_labels(20, 10), false);
  const std::string msg = io_error([&] { CLBenchmark bench(tiny_config(dir_)); });
  EXPECT_THAT(msg, HasSubstr((dir_ / "train-images-idx3-ubyte").string()));
  EXPECT_THAT(msg, HasSubstr("none of its 60 images is a training image of task 4 (classes 6, 7)"));
}

TEST_F(IdxTest, BenchmarkTaskWithoutTestImagesNamesFileAndTask) {
  write_split("train", 100, cycling_labels(100, 10), false);
  write_split("t10k", 5, cycling_labels(5, 10), false);  // a tiny test set: classes 0..4
  std::string msg = io_error([&] { CLBenchmark bench(tiny_config(dir_)); });
  EXPECT_THAT(msg, HasSubstr((dir_ / "t10k-images-idx3-ubyte").string()));
  EXPECT_THAT(msg, HasSubstr("none of its 5 images is a test image of task 4 (classes 6, 7)"));
  msg = io_error([&] { CLBenchmark bench(tiny_config(dir_, 10)); });
  EXPECT_THAT(msg, HasSubstr("test image of task 6 (class 5)"));
}

TEST_F(IdxTest, BenchmarkValFractionLeavingLessThanABatchRefused) {
  write_split("train", 100, cycling_labels(100, 10), false);  // 20 images per task
  write_split("t10k", 20, cycling_labels(20, 10), false);
  ExperimentConfig cfg = tiny_config(dir_);
  cfg.batch_size = 16;
  cfg.val_fraction = 0.5;
  std::string msg;
  try {
    CLBenchmark bench(cfg);
  } catch (const ConfigError& e) {
    msg = e.what();
  }
  EXPECT_THAT(msg,
              HasSubstr("config keys `val_fraction` / `batch_size`: val_fraction=0.5 leaves task 1 "
                        "(classes 0, 1) 10 of its 20 training images, fewer than one batch "
                        "(batch_size=16)"));
  cfg.val_fraction = 0.1;  // 18 training images: a batch and a bit
  EXPECT_NO_THROW(CLBenchmark{cfg});
  cfg.val_fraction = 0;  // a data set smaller than one batch is no val_fraction's doing
  cfg.batch_size = 64;
  EXPECT_NO_THROW(CLBenchmark{cfg});
}

TEST_F(IdxTest, HeatmapStaysSmallAtManyTasks) {
  auto filled = [](int n) {
    AccuracyMatrix m(n);
    for (int i = 1; i <= n; ++i)
      for (int j = 1; j <= i; ++j)
        m.set(i, j, ((i * 7 + j * 3) % 100) / 100.0);
    return m;
  };
  auto count = [](const std::string& s, const std::string& part) {
    size_t k = 0;
    for (size_t at = s.find(part); at != std::string::npos; at = s.find(part, at + 1))
      ++k;
    return k;
  };
  // Up to 50 tasks, a cell per pair of tasks, as before.
  write_heatmap_svg(dir_ / "h50.svg", filled(50), "Finetuning: accuracy");
  std::string s = read_raw_text(dir_ / "h50.svg");
  EXPECT_EQ(count(s, "<rect"), 50u * 51u / 2u + 3u);  // cells, background, frame, colour bar
  EXPECT_THAT(s, HasSubstr(">50</text>"));
  EXPECT_THAT(s, Not(HasSubstr("block")));
  EXPECT_LT(s.size(), 1'000'000u);
  // 300 tasks: blocks of 6 x 6 tasks, each the mean of its cells.
  write_heatmap_svg(dir_ / "h300.svg", filled(300), "Finetuning: accuracy");
  s = read_raw_text(dir_ / "h300.svg");
  EXPECT_LT(s.size(), 1'000'000u) << s.size() << " bytes";
  EXPECT_EQ(count(s, "<rect"), 50u * 51u / 2u + 3u);
  EXPECT_THAT(s, HasSubstr("each cell: mean over a block of 6 x 6 tasks (300 tasks)"));
  EXPECT_THAT(s, HasSubstr(">295-300</text>"));
  EXPECT_THAT(s, HasSubstr("</svg>\n"));
  AccuracyMatrix one(300);  // a single value: every non-empty block shows it
  one.set(1, 1, 0.25);
  write_heatmap_svg(dir_ / "one.svg", one, "t");
  EXPECT_EQ(count(read_raw_text(dir_ / "one.svg"), ">0.250<"), 1u);
  write_heatmap_svg(dir_ / "h1000.svg", filled(1000), "Finetuning: accuracy");
  EXPECT_LT(fs::file_size(dir_ / "h1000.svg"), 1'000'000u);
}
