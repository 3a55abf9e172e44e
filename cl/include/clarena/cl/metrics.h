// CL test metrics: the lower-triangular accuracy matrix and the summary numbers computed
// from it, following CLArena's definitions (see metrics.cpp for the sources).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace clarena::cl {

/// acc(i, j): test accuracy on task j after training task i, 1-based, j <= i. Cells not
/// yet tested are empty (std::nullopt).
class AccuracyMatrix {
 public:
  explicit AccuracyMatrix(int num_tasks);

  int num_tasks() const { return n_; }
  /// Records acc(after_task, test_task); needs 1 <= test_task <= after_task <= num_tasks
  /// and acc in [0, 1], else throws clarena::ValueError.
  void set(int after_task, int test_task, double acc);
  std::optional<double> get(int after_task, int test_task) const;
  /// acc(i, j), throwing clarena::ValueError naming the cell when it is empty.
  double at(int after_task, int test_task) const;
  /// Whether row i holds all of acc(i, 1..i).
  bool row_complete(int after_task) const;
  /// The largest T such that rows 1..T are complete (0 before any full row).
  int trained_tasks() const;

 private:
  size_t index(int after_task, int test_task) const;
  int n_;
  std::vector<std::optional<double>> cells_;
};

/// Average accuracy after task i: mean of acc(i, j) over j = 1..i.
double average_accuracy(const AccuracyMatrix& m, int after_task);

/// Backward transfer after task T (>= 2): mean over j < T of acc(T, j) - acc(j, j).
double backward_transfer(const AccuracyMatrix& m, int after_task);

/// Forgetting of each task j < T after task T: max over i in [j, T-1] of acc(i, j) minus
/// acc(T, j). Element j-1 is task j; T-1 elements (empty for T = 1).
std::vector<double> forgetting_per_task(const AccuracyMatrix& m, int after_task);
/// Mean of forgetting_per_task (needs T >= 2).
double average_forgetting(const AccuracyMatrix& m, int after_task);

/// Forward transfer after task T (>= 2) against a reference run (CLArena: Independent):
/// mean over t = 2..T of acc(t, t) - reference_diag[t-1], where reference_diag[t-1] is the
/// reference's accuracy on task t right after training it.
double forward_transfer(const AccuracyMatrix& m, const std::vector<double>& reference_diag,
                        int after_task);
/// The diagonal acc(t, t), t = 1..trained_tasks(), of a (reference) matrix.
std::vector<double> diagonal(const AccuracyMatrix& m);

/// Writes CLArena's acc.csv layout: header
/// `after_training_task,average_accuracy,test_on_task_1,...,test_on_task_N`, one row per
/// complete row, empty cells for tasks not yet seen, numbers as Python's repr writes them.
void write_acc_csv(const std::filesystem::path& path, const AccuracyMatrix& m);

/// Summary for trained_tasks() = T: matrix rows, average accuracy per task, BWT and
/// forgetting (null when T < 2), and FWT when a reference diagonal is given.
nlohmann::json metrics_json(const AccuracyMatrix& m,
                            const std::optional<std::vector<double>>& fwt_reference = {});

/// The matrix as an aligned text table for the terminal, with a title line.
std::string format_matrix(const AccuracyMatrix& m, const std::string& title);

}  // namespace clarena::cl
