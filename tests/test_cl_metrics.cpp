// Accuracy matrix, CL metrics on hand-computed cases, CSV/JSON/SVG writers.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "../cl/src/text_format.h"  // private helper, tested directly
#include "clarena/cl/metrics.h"
#include "clarena/cl/plots.h"
#include "clarena/core/errors.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using namespace clarena::cl;
using clarena::ValueError;

namespace {

size_t count(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1))
    ++n;
  return n;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// 4-task run stopped after task 3:
//   task 1: 0.90
//   task 2: 0.95 0.80
//   task 3: 0.50 0.70 0.95
AccuracyMatrix sample() {
  AccuracyMatrix m(4);
  m.set(1, 1, 0.9);
  m.set(2, 1, 0.95);
  m.set(2, 2, 0.8);
  m.set(3, 1, 0.5);
  m.set(3, 2, 0.7);
  m.set(3, 3, 0.95);
  return m;
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("clarena_metrics_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

}  // namespace

TEST(AccuracyMatrix, CellsAndTrainedTasks) {
  const AccuracyMatrix m = sample();
  EXPECT_EQ(m.num_tasks(), 4);
  EXPECT_EQ(m.trained_tasks(), 3);
  EXPECT_DOUBLE_EQ(m.at(3, 2), 0.7);
  EXPECT_FALSE(m.get(4, 1).has_value());
  EXPECT_FALSE(m.row_complete(4));
  AccuracyMatrix partial(3);
  partial.set(1, 1, 0.5);
  partial.set(2, 2, 0.5);  // row 2 lacks (2, 1)
  EXPECT_EQ(partial.trained_tasks(), 1);
}

TEST(AccuracyMatrix, RefusesBadCells) {
  AccuracyMatrix m(3);
  EXPECT_THROW(m.set(1, 2, 0.5), ValueError);  // upper triangle
  EXPECT_THROW(m.set(4, 1, 0.5), ValueError);
  EXPECT_THROW(m.set(0, 0, 0.5), ValueError);
  EXPECT_THROW(m.set(1, 1, 1.5), ValueError);
  EXPECT_THROW(m.set(1, 1, std::nan("")), ValueError);
  try {
    m.at(2, 1);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_THAT(e.what(), HasSubstr("on task 1 after training task 2"));
  }
  EXPECT_THROW(AccuracyMatrix(0), ValueError);
}

TEST(Metrics, AverageAccuracy) {
  const AccuracyMatrix m = sample();
  EXPECT_NEAR(average_accuracy(m, 1), 0.9, 1e-12);
  EXPECT_NEAR(average_accuracy(m, 2), 0.875, 1e-12);
  EXPECT_NEAR(average_accuracy(m, 3), 2.15 / 3, 1e-12);
  EXPECT_THROW(average_accuracy(m, 4), ValueError);  // row 4 not tested yet
}

TEST(Metrics, BackwardTransfer) {
  const AccuracyMatrix m = sample();
  EXPECT_NEAR(backward_transfer(m, 2), 0.95 - 0.9, 1e-12);
  EXPECT_NEAR(backward_transfer(m, 3), ((0.5 - 0.9) + (0.7 - 0.8)) / 2, 1e-12);  // -0.25
  EXPECT_THROW(backward_transfer(m, 1), ValueError);
}

TEST(Metrics, ForgettingUsesBestEarlierAccuracy) {
  const AccuracyMatrix m = sample();
  const auto f = forgetting_per_task(m, 3);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_NEAR(f[0], 0.95 - 0.5, 1e-12);  // task 1 peaked after task 2, not task 1
  EXPECT_NEAR(f[1], 0.8 - 0.7, 1e-12);
  EXPECT_NEAR(average_forgetting(m, 3), 0.275, 1e-12);
  EXPECT_TRUE(forgetting_per_task(m, 1).empty());
  EXPECT_THROW(average_forgetting(m, 1), ValueError);
}

TEST(Metrics, ForwardTransferAgainstReference) {
  const AccuracyMatrix m = sample();
  const std::vector<double> independent = {0.92, 0.9, 0.9};
  EXPECT_NEAR(forward_transfer(m, independent, 3), ((0.8 - 0.9) + (0.95 - 0.9)) / 2, 1e-12);
  EXPECT_NEAR(forward_transfer(m, independent, 2), 0.8 - 0.9, 1e-12);
  EXPECT_THROW(forward_transfer(m, {0.9, 0.9}, 3), ValueError);  // reference too short
  EXPECT_EQ(diagonal(m), (std::vector<double>{0.9, 0.8, 0.95}));
}

TEST(Format, PythonReprLayout) {
  using detail::format_repr;
  EXPECT_EQ(format_repr(1.0), "1.0");
  EXPECT_EQ(format_repr(0.0), "0.0");
  EXPECT_EQ(format_repr(0.875), "0.875");
  EXPECT_EQ(format_repr(2.15 / 3), "0.7166666666666667");
  EXPECT_EQ(format_repr(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(format_repr(1e-05), "1e-05");
  EXPECT_EQ(format_repr(0.0001), "0.0001");
  EXPECT_EQ(format_repr(2.5e-07), "2.5e-07");
  EXPECT_EQ(format_repr(1234.5), "1234.5");
  EXPECT_EQ(format_repr(-0.5), "-0.5");
  EXPECT_EQ(format_repr(1e15), "1000000000000000.0");
  EXPECT_EQ(format_repr(1e16), "1e+16");
  EXPECT_EQ(format_repr(123456789012345680.0), "1.2345678901234568e+17");
  EXPECT_EQ(detail::format_fixed(0.95, 3), "0.950");
}

TEST_F(TempDir, AccCsvLayoutIsByteExact) {
  write_acc_csv(dir_ / "acc.csv", sample());
  EXPECT_EQ(slurp(dir_ / "acc.csv"),
            "after_training_task,average_accuracy,test_on_task_1,test_on_task_2,"
            "test_on_task_3,test_on_task_4\n"
            "1,0.9,0.9,,,\n"
            "2,0.875,0.95,0.8,,\n"
            "3,0.7166666666666667,0.5,0.7,0.95,\n");
}

TEST_F(TempDir, AccCsvOfEmptyMatrixIsHeaderOnly) {
  write_acc_csv(dir_ / "acc.csv", AccuracyMatrix(2));
  EXPECT_EQ(slurp(dir_ / "acc.csv"),
            "after_training_task,average_accuracy,test_on_task_1,test_on_task_2\n");
}

TEST_F(TempDir, AccCsvUnwritablePathThrowsIOError) {
  EXPECT_THROW(write_acc_csv(dir_ / "no" / "such" / "acc.csv", sample()), clarena::IOError);
}

TEST(Metrics, JsonSummary) {
  const nlohmann::json j = metrics_json(sample(), std::vector<double>{0.92, 0.9, 0.9});
  EXPECT_EQ(j["num_tasks"], 4);
  EXPECT_EQ(j["trained_tasks"], 3);
  ASSERT_EQ(j["accuracy_matrix"].size(), 3u);
  EXPECT_EQ(j["accuracy_matrix"][1].size(), 2u);
  EXPECT_NEAR(j["final_average_accuracy"].get<double>(), 2.15 / 3, 1e-12);
  EXPECT_NEAR(j["bwt"].get<double>(), -0.25, 1e-12);
  EXPECT_EQ(j["forgetting"]["per_task"].size(), 2u);
  EXPECT_NEAR(j["forgetting"]["mean"].get<double>(), 0.275, 1e-12);
  EXPECT_NEAR(j["fwt"].get<double>(), -0.025, 1e-12);
  // Deterministic text, and no fwt without a reference.
  EXPECT_EQ(metrics_json(sample()).dump(), metrics_json(sample()).dump());
  EXPECT_FALSE(metrics_json(sample()).contains("fwt"));
}

TEST(Metrics, JsonAfterOneTaskHasNullTransfers) {
  AccuracyMatrix m(3);
  m.set(1, 1, 0.5);
  const nlohmann::json j = metrics_json(m, std::vector<double>{0.4});
  EXPECT_TRUE(j["bwt"].is_null());
  EXPECT_TRUE(j["forgetting"]["mean"].is_null());
  EXPECT_TRUE(j["forgetting"]["per_task"].empty());
  EXPECT_TRUE(j["fwt"].is_null());
}

TEST(Metrics, FormatMatrixForTerminal) {
  const std::string s = format_matrix(sample(), "Finetuning, split_fmnist");
  EXPECT_THAT(s, HasSubstr("Finetuning, split_fmnist\n"));
  EXPECT_THAT(s, HasSubstr("0.9500"));
  EXPECT_THAT(s, HasSubstr("0.8750"));  // average after task 2
  EXPECT_THAT(s, HasSubstr("task 3"));
  EXPECT_THAT(s, Not(HasSubstr("task 4")));  // untested rows are left out
}

TEST_F(TempDir, HeatmapSvg) {
  write_heatmap_svg(dir_ / "acc.svg", sample(), "Accuracy <Finetuning> & co");
  const std::string s = slurp(dir_ / "acc.svg");
  EXPECT_EQ(s.rfind("<?xml", 0), 0u);
  EXPECT_THAT(s, HasSubstr("<svg xmlns=\"http://www.w3.org/2000/svg\""));
  EXPECT_THAT(s, HasSubstr("</svg>\n"));
  EXPECT_THAT(s, HasSubstr("Accuracy &lt;Finetuning&gt; &amp; co"));
  EXPECT_THAT(s, HasSubstr("after training task i"));
  EXPECT_THAT(s, HasSubstr("test on task j"));
  EXPECT_THAT(s, HasSubstr(">0.950<"));
  EXPECT_EQ(count(s, "<text"), count(s, "</text>"));
  write_heatmap_svg(dir_ / "again.svg", sample(), "Accuracy <Finetuning> & co");
  EXPECT_EQ(slurp(dir_ / "again.svg"), s);
}

TEST_F(TempDir, CurveSvg) {
  const std::vector<Series> series = {{"Finetuning", {0.9, 0.875, 0.717}},
                                      {"Fix", {0.9, std::nan(""), 0.85}}};
  write_curve_svg(dir_ / "ave.svg", series, "Average accuracy", "after training task t",
                  "average accuracy");
  const std::string s = slurp(dir_ / "ave.svg");
  EXPECT_THAT(s, HasSubstr("<svg"));
  EXPECT_THAT(s, HasSubstr("</svg>\n"));
  EXPECT_THAT(s, HasSubstr(">Finetuning<"));
  EXPECT_THAT(s, HasSubstr(">Fix<"));
  EXPECT_EQ(count(s, "<polyline"), 3u);  // Fix is broken by its NaN
  EXPECT_EQ(count(s, "<circle"), 5u);
  EXPECT_THROW(write_curve_svg(dir_ / "no" / "x.svg", series, "", "", ""), clarena::IOError);
}
