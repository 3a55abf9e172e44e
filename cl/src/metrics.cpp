// Definitions follow CLArena (pengxiang-wang/continual-learning-arena):
// - average accuracy: clarena/utils/save.py `update_test_acc_to_csv`, mean of row i;
// - BWT: clarena/experiments/cl_full_metrics_calculation.py, BWT_N = 1/(N-1) *
//   sum_{t<N} (a_{N,t} - a_{t,t});
// - FWT: same file, FWT_N = 1/(N-1) * sum_{t=2..N} (a_{t,t} - a^I_{t,t}) with a^I the
//   reference independent-learning run;
// - forgetting: CLArena reports a forgetting *rate* against joint and random references
//   instead; we use the classic per-task forgetting of Chaudhry et al. 2018 (RWalk),
//   f_j = max_{i in [j, T-1]} a_{i,j} - a_{T,j}.
#include "clarena/cl/metrics.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "clarena/core/atomic_file.h"
#include "clarena/core/errors.h"
#include "text_format.h"

namespace clarena::cl {
namespace {

void check_after_task(const AccuracyMatrix& m, int after_task, int min, const char* what) {
  if (after_task < min || after_task > m.num_tasks()) {
    throw ValueError(std::string(what) + ": after_task " + std::to_string(after_task) +
                     " out of range " + std::to_string(min) + ".." + std::to_string(m.num_tasks()));
  }
}

std::string pad_left(const std::string& s, size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

}  // namespace

AccuracyMatrix::AccuracyMatrix(int num_tasks) : n_(num_tasks) {
  if (num_tasks < 1) {
    throw ValueError("AccuracyMatrix: num_tasks must be >= 1, got " + std::to_string(num_tasks));
  }
  cells_.resize(static_cast<size_t>(n_) * static_cast<size_t>(n_ + 1) / 2);
}

size_t AccuracyMatrix::index(int i, int j) const {
  if (i < 1 || i > n_ || j < 1 || j > i) {
    throw ValueError("AccuracyMatrix: cell (after task " + std::to_string(i) + ", test on task " +
                     std::to_string(j) + ") outside the lower triangle of a " + std::to_string(n_) +
                     "-task matrix (needs 1 <= j <= i <= " + std::to_string(n_) + ")");
  }
  return static_cast<size_t>(i - 1) * static_cast<size_t>(i) / 2 + static_cast<size_t>(j - 1);
}

void AccuracyMatrix::set(int after_task, int test_task, double acc) {
  const size_t k = index(after_task, test_task);
  if (!(acc >= 0.0 && acc <= 1.0)) {
    throw ValueError("AccuracyMatrix: accuracy " + std::to_string(acc) + " at (" +
                     std::to_string(after_task) + ", " + std::to_string(test_task) +
                     ") is not in [0, 1]");
  }
  cells_[k] = acc;
}

std::optional<double> AccuracyMatrix::get(int after_task, int test_task) const {
  return cells_[index(after_task, test_task)];
}

double AccuracyMatrix::at(int after_task, int test_task) const {
  const auto v = get(after_task, test_task);
  if (!v) {
    throw ValueError("AccuracyMatrix: no accuracy recorded on task " + std::to_string(test_task) +
                     " after training task " + std::to_string(after_task));
  }
  return *v;
}

bool AccuracyMatrix::row_complete(int after_task) const {
  for (int j = 1; j <= after_task; ++j) {
    if (!get(after_task, j)) return false;
  }
  return true;
}

int AccuracyMatrix::trained_tasks() const {
  int t = 0;
  while (t < n_ && row_complete(t + 1))
    ++t;
  return t;
}

double average_accuracy(const AccuracyMatrix& m, int after_task) {
  check_after_task(m, after_task, 1, "average_accuracy");
  double sum = 0.0;
  for (int j = 1; j <= after_task; ++j)
    sum += m.at(after_task, j);
  return sum / after_task;
}

double backward_transfer(const AccuracyMatrix& m, int after_task) {
  check_after_task(m, after_task, 2, "backward_transfer");
  double sum = 0.0;
  for (int j = 1; j < after_task; ++j)
    sum += m.at(after_task, j) - m.at(j, j);
  return sum / (after_task - 1);
}

std::vector<double> forgetting_per_task(const AccuracyMatrix& m, int after_task) {
  check_after_task(m, after_task, 1, "forgetting_per_task");
  std::vector<double> out;
  for (int j = 1; j < after_task; ++j) {
    double best = m.at(j, j);
    for (int i = j + 1; i < after_task; ++i)
      best = std::max(best, m.at(i, j));
    out.push_back(best - m.at(after_task, j));
  }
  return out;
}

double average_forgetting(const AccuracyMatrix& m, int after_task) {
  check_after_task(m, after_task, 2, "average_forgetting");
  const std::vector<double> f = forgetting_per_task(m, after_task);
  double sum = 0.0;
  for (double v : f)
    sum += v;
  return sum / static_cast<double>(f.size());
}

double forward_transfer(const AccuracyMatrix& m, const std::vector<double>& reference_diag,
                        int after_task) {
  check_after_task(m, after_task, 2, "forward_transfer");
  if (reference_diag.size() < static_cast<size_t>(after_task)) {
    throw ValueError("forward_transfer: the reference has accuracies for " +
                     std::to_string(reference_diag.size()) + " tasks, after_task " +
                     std::to_string(after_task) + " needs " + std::to_string(after_task));
  }
  double sum = 0.0;
  for (int t = 2; t <= after_task; ++t) {
    sum += m.at(t, t) - reference_diag[static_cast<size_t>(t - 1)];
  }
  return sum / (after_task - 1);
}

std::vector<double> diagonal(const AccuracyMatrix& m) {
  std::vector<double> d;
  for (int t = 1; t <= m.trained_tasks(); ++t)
    d.push_back(m.at(t, t));
  return d;
}

void write_acc_csv(const std::filesystem::path& path, const AccuracyMatrix& m) {
  std::ostringstream out;
  const int n = m.num_tasks();
  out << "after_training_task,average_accuracy";
  for (int j = 1; j <= n; ++j)
    out << ",test_on_task_" << j;
  out << '\n';
  for (int i = 1; i <= m.trained_tasks(); ++i) {
    out << i << ',' << detail::format_repr(average_accuracy(m, i));
    for (int j = 1; j <= n; ++j) {
      out << ',';
      if (j <= i) out << detail::format_repr(m.at(i, j));
    }
    out << '\n';
  }
  write_file_atomic(path, out.str());
}

nlohmann::json metrics_json(const AccuracyMatrix& m,
                            const std::optional<std::vector<double>>& fwt_reference) {
  const int t_end = m.trained_tasks();
  nlohmann::json j;
  j["num_tasks"] = m.num_tasks();
  j["trained_tasks"] = t_end;
  nlohmann::json rows = nlohmann::json::array();
  nlohmann::json avg = nlohmann::json::array();
  for (int i = 1; i <= t_end; ++i) {
    nlohmann::json row = nlohmann::json::array();
    for (int k = 1; k <= i; ++k)
      row.push_back(m.at(i, k));
    rows.push_back(row);
    avg.push_back(average_accuracy(m, i));
  }
  j["accuracy_matrix"] = rows;
  j["average_accuracy"] = avg;
  j["final_average_accuracy"] = t_end >= 1 ? nlohmann::json(average_accuracy(m, t_end)) : nullptr;
  const bool has_past = t_end >= 2;
  j["bwt"] = has_past ? nlohmann::json(backward_transfer(m, t_end)) : nullptr;
  j["forgetting"] = {
      {"per_task", t_end >= 1 ? forgetting_per_task(m, t_end) : std::vector<double>{}},
      {"mean", has_past ? nlohmann::json(average_forgetting(m, t_end)) : nullptr}};
  if (fwt_reference) {
    j["fwt"] = has_past ? nlohmann::json(forward_transfer(m, *fwt_reference, t_end)) : nullptr;
  }
  return j;
}

std::string format_matrix(const AccuracyMatrix& m, const std::string& title) {
  const int n = m.num_tasks();
  constexpr size_t kCol = 8;
  std::string s = title + "\n" + pad_left("after \\ test", 13);
  for (int j = 1; j <= n; ++j)
    s += pad_left(std::to_string(j), kCol);
  s += pad_left("avg", kCol) + "\n";
  int last = 0;  // rows after the last one holding any value are left out
  for (int i = 1; i <= n; ++i) {
    for (int j = 1; j <= i; ++j) {
      if (m.get(i, j)) last = i;
    }
  }
  for (int i = 1; i <= last; ++i) {
    s += pad_left("task " + std::to_string(i), 13);
    for (int j = 1; j <= n; ++j) {
      const auto v = j <= i ? m.get(i, j) : std::nullopt;
      s += pad_left(v ? detail::format_fixed(*v, 4) : (j <= i ? "?" : ""), kCol);
    }
    s += pad_left(m.row_complete(i) ? detail::format_fixed(average_accuracy(m, i), 4) : "", kCol);
    s += "\n";
  }
  return s;
}

}  // namespace clarena::cl
