#include "clarena/cl/data.h"

#include <cmath>
#include <cstdio>

#include "text_format.h"

namespace clarena::cl {
namespace {
constexpr int kPermutedClasses = 10;

std::string hex(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(value));
  return text;
}
}  // namespace

CLBenchmark::CLBenchmark(const ExperimentConfig& cfg)
    : permuted_(cfg.benchmark == Benchmark::Permuted),
      scenario_(cfg.scenario),
      num_tasks_(cfg.num_tasks) {
  const auto dir = resolved_data_dir(cfg);
  train_ = load_idx_split(dir, true);
  test_ = load_idx_split(dir, false);
  if (test_.rows != train_.rows || test_.cols != train_.cols)
    throw IOError("IDX folder " + dir.string() + ": train images are " +
                  std::to_string(train_.rows) + "x" + std::to_string(train_.cols) +
                  " but test images are " + std::to_string(test_.rows) + "x" +
                  std::to_string(test_.cols));

  // The dataset's own mean and std over every training pixel, in [0, 1] units.
  double sum = 0, sum_sq = 0;
  for (uint8_t p : train_.images) {
    sum += p;
    sum_sq += static_cast<double>(p) * p;
  }
  const double n = static_cast<double>(train_.images.size()) * 255.0;
  mean_ = sum / n;
  std_ = std::sqrt(std::max(sum_sq / (n * 255.0) - mean_ * mean_, 1e-12));

  if (!permuted_) split_ = make_split(10, num_tasks_, cfg.class_order);
  for (int task = 1; task <= num_tasks_; ++task) {
    if (permuted_)
      permutations_.push_back(task_permutation(cfg.seed, task, static_cast<int>(input_dim())));
    auto in_task = [&](const IdxDataset& d) {
      std::vector<int64_t> out;
      for (int64_t i = 0; i < d.num; ++i)
        if (permuted_ || task_of_class(split_, d.labels[i]) == task) out.push_back(i);
      return out;
    };
    std::vector<int64_t> pool = in_task(train_);
    auto [train_pos, val_pos] =
        train_val_split(static_cast<int64_t>(pool.size()), cfg.val_fraction);
    std::array<std::vector<int64_t>, 3> stages;
    for (int64_t p : train_pos)
      stages[0].push_back(pool[p]);
    for (int64_t p : val_pos)
      stages[1].push_back(pool[p]);
    stages[2] = in_task(test_);
    check_task(cfg, task, pool.size(), stages);
    if (cfg.max_train_samples_per_task > 0 &&
        static_cast<int64_t>(stages[0].size()) > cfg.max_train_samples_per_task)
      stages[0].resize(static_cast<size_t>(cfg.max_train_samples_per_task));
    indices_.push_back(std::move(stages));
  }
}

std::string CLBenchmark::task_name(int task) const {
  std::string name = "task " + std::to_string(task);
  if (permuted_) return name;
  const auto& classes = split_.classes_per_task[static_cast<size_t>(task - 1)];
  name += classes.size() == 1 ? " (class " : " (classes ";
  for (size_t i = 0; i < classes.size(); ++i)
    name.append(i ? ", " : "").append(std::to_string(classes[i]));
  return name + ")";
}

void CLBenchmark::check_task(const ExperimentConfig& cfg, int task, size_t pool,
                             const std::array<std::vector<int64_t>, 3>& stages) const {
  if (pool == 0) {
    throw IOError("IDX file '" + train_.images_file.string() + "': none of its " +
                  std::to_string(train_.num) + " images is a training image of " + task_name(task) +
                  "; every task needs images of its classes");
  }
  if (stages[2].empty()) {
    throw IOError("IDX file '" + test_.images_file.string() + "': none of its " +
                  std::to_string(test_.num) + " images is a test image of " + task_name(task) +
                  "; every task needs images of its classes");
  }
  const size_t train = stages[0].size(), batch = static_cast<size_t>(cfg.batch_size);
  if (cfg.val_fraction > 0 && train < batch) {
    throw ConfigError("config keys `val_fraction` / `batch_size`: val_fraction=" +
                      detail::format_repr(cfg.val_fraction) + " leaves " + task_name(task) + " " +
                      std::to_string(train) + " of its " + std::to_string(pool) +
                      " training images, fewer than one batch (batch_size=" +
                      std::to_string(cfg.batch_size) + "); lower val_fraction or batch_size");
  }
}

int64_t CLBenchmark::num_classes(int task) const {
  if (permuted_) return kPermutedClasses;
  return num_classes_of_task(split_, task);
}

const std::vector<int64_t>& CLBenchmark::indices(Stage stage, int task) const {
  if (task < 1 || task > num_tasks_)
    throw ValueError("task " + std::to_string(task) + " outside 1.." + std::to_string(num_tasks_));
  return indices_[static_cast<size_t>(task - 1)][static_cast<size_t>(stage)];
}

int64_t CLBenchmark::train_label(int task, int64_t original) const {
  return permuted_ ? permuted_train_label(scenario_, task, original, kPermutedClasses)
                   : split_train_label(split_, scenario_, task, original);
}

Batch CLBenchmark::batch(Stage stage, int task, std::span<const int64_t> which,
                         Device device) const {
  const IdxDataset& d = dataset(stage);
  const int64_t pixels = input_dim(), rows = static_cast<int64_t>(which.size());
  Tensor x = Tensor::empty({rows, 1, train_.rows, train_.cols});  // NCHW, one channel
  Tensor y = Tensor::empty({rows}, DType::Int64);
  float* xp = x.data<float>();
  int64_t* yp = y.data<int64_t>();
  const float scale = static_cast<float>(1.0 / (255.0 * std_));
  const float shift = static_cast<float>(mean_ / std_);
  const int32_t* perm = permuted_ ? permutations_[static_cast<size_t>(task - 1)].data() : nullptr;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = which[static_cast<size_t>(r)];
    const uint8_t* image = d.images.data() + i * pixels;
    float* out = xp + r * pixels;
    for (int64_t k = 0; k < pixels; ++k)
      out[k] = image[perm ? perm[k] : k] * scale - shift;
    yp[r] = train_label(task, d.labels[static_cast<size_t>(i)]);
  }
  return {x.to(device), y.to(device)};
}

nlohmann::json CLBenchmark::describe() const {
  nlohmann::json j{{"normalisation", {{"mean", mean_}, {"std", std_}}},
                   {"train_samples", train_.num},
                   {"test_samples", test_.num}};
  for (int task = 1; task <= num_tasks_; ++task) {
    nlohmann::json t{{"task", task},
                     {"train", indices(Stage::Train, task).size()},
                     {"validation", indices(Stage::Validation, task).size()},
                     {"test", indices(Stage::Test, task).size()}};
    if (permuted_)
      t["permutation_fnv1a64"] = hex(permutation_hash(permutations_[task - 1]));
    else
      t["classes"] = split_.classes_per_task[static_cast<size_t>(task - 1)];
    j["tasks"].push_back(t);
  }
  return j;
}

}  // namespace clarena::cl
