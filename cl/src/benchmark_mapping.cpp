#include "clarena/cl/benchmark_mapping.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>
#include <optional>
#include <string>

#include "clarena/core/atomic_file.h"
#include "clarena/core/errors.h"
#include "clarena/core/random.h"

namespace clarena::cl {
namespace {

// Stream tags keep the seeds of different uses apart even for equal indices.
constexpr uint64_t kTagPermutation = 0x5045524d55544154ULL;  // "PERMUTAT"
constexpr uint64_t kTagEpoch = 0x45504f43484f5244ULL;        // "EPOCHORD"
constexpr uint64_t kTagSplit = 0x54524e56414c5350ULL;        // "TRNVALSP"

std::string list_str(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i)
    s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

void check_task(const SplitSpec& spec, int task_id) {
  const int n = static_cast<int>(spec.classes_per_task.size());
  if (task_id < 1 || task_id > n) {
    throw ValueError("task_id " + std::to_string(task_id) +
                     " out of range: valid task ids are 1.." + std::to_string(n));
  }
}

}  // namespace

std::vector<int32_t> task_permutation(uint64_t seed, int task_id, int num_pixels) {
  if (task_id < 1) {
    throw ValueError("task_permutation: task_id must be >= 1 (tasks are 1-based), got " +
                     std::to_string(task_id));
  }
  if (num_pixels < 1) {
    throw ValueError("task_permutation: num_pixels must be >= 1, got " +
                     std::to_string(num_pixels));
  }
  // CLArena seeds task t with permutation_seeds[t-1]; we derive that seed from the run seed.
  Generator rng(Generator::derive(seed, kTagPermutation, static_cast<uint64_t>(task_id)));
  std::vector<int32_t> perm(static_cast<size_t>(num_pixels));
  std::iota(perm.begin(), perm.end(), 0);
  rng.shuffle(perm);
  return perm;
}

uint64_t permutation_hash(const std::vector<int32_t>& perm) {
  std::string bytes;
  bytes.reserve(perm.size() * 4);
  for (int32_t v : perm) {
    const auto u = static_cast<uint32_t>(v);
    for (int k = 0; k < 4; ++k)
      bytes += static_cast<char>((u >> (8 * k)) & 0xffu);
  }
  return fnv1a64(bytes);
}

SplitSpec make_split(int num_classes, int num_tasks, std::vector<int64_t> class_order) {
  if (num_classes < 1) {
    throw ValueError("make_split: num_classes must be >= 1, got " + std::to_string(num_classes));
  }
  if (num_tasks < 1 || num_classes % num_tasks != 0) {
    std::string valid;
    for (int t = 1; t <= num_classes; ++t) {
      if (num_classes % t == 0) valid += (valid.empty() ? "" : ", ") + std::to_string(t);
    }
    throw ValueError("make_split: num_tasks=" + std::to_string(num_tasks) + " does not divide " +
                     std::to_string(num_classes) + " classes evenly; valid num_tasks: " + valid);
  }
  const std::string range = "0.." + std::to_string(num_classes - 1);
  if (class_order.empty()) {
    class_order.resize(static_cast<size_t>(num_classes));
    std::iota(class_order.begin(), class_order.end(), 0);
  }
  if (class_order.size() != static_cast<size_t>(num_classes)) {
    throw ValueError("make_split: class_order " + list_str(class_order) + " has " +
                     std::to_string(class_order.size()) + " entries; it must list each class " +
                     range + " exactly once");
  }
  std::vector<bool> seen(static_cast<size_t>(num_classes), false);
  for (int64_t c : class_order) {
    if (c < 0 || c >= num_classes) {
      throw ValueError("make_split: class " + std::to_string(c) + " in class_order " +
                       list_str(class_order) + " is out of range; valid classes: " + range);
    }
    if (seen[static_cast<size_t>(c)]) {
      throw ValueError("make_split: class " + std::to_string(c) + " appears twice in class_order " +
                       list_str(class_order) + "; each class " + range + " must appear once");
    }
    seen[static_cast<size_t>(c)] = true;
  }
  const size_t per_task = static_cast<size_t>(num_classes / num_tasks);
  SplitSpec spec;
  for (size_t t = 0; t < static_cast<size_t>(num_tasks); ++t) {
    const auto first = class_order.begin() + static_cast<std::ptrdiff_t>(t * per_task);
    spec.classes_per_task.emplace_back(first, first + static_cast<std::ptrdiff_t>(per_task));
  }
  return spec;
}

Scenario scenario_from_string(std::string_view s) {
  std::string lower(s);
  for (char& c : lower)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (const std::optional<Scenario> scenario = enum_from_string<Scenario>(lower)) return *scenario;
  throw ValueError("unknown scenario '" + std::string(s) + "'; valid: til, cil");
}

int num_classes_of_task(const SplitSpec& spec, int task_id) {
  check_task(spec, task_id);
  return static_cast<int>(spec.classes_per_task[static_cast<size_t>(task_id - 1)].size());
}

int64_t classes_before_task(const SplitSpec& spec, int task_id) {
  check_task(spec, task_id);
  int64_t sum = 0;
  for (int t = 1; t < task_id; ++t)
    sum += num_classes_of_task(spec, t);
  return sum;
}

int64_t split_label_offset(const SplitSpec& spec, Scenario scenario, int task_id) {
  check_task(spec, task_id);
  return scenario == Scenario::TIL ? 0 : classes_before_task(spec, task_id);
}

int64_t split_train_label(const SplitSpec& spec, Scenario scenario, int task_id,
                          int64_t original_label) {
  check_task(spec, task_id);
  const auto& classes = spec.classes_per_task[static_cast<size_t>(task_id - 1)];
  const auto it = std::find(classes.begin(), classes.end(), original_label);
  if (it == classes.end()) {
    throw ValueError("split_train_label: class " + std::to_string(original_label) +
                     " is not in task " + std::to_string(task_id) + ", whose classes are " +
                     list_str(classes));
  }
  return split_label_offset(spec, scenario, task_id) + (it - classes.begin());
}

int task_of_class(const SplitSpec& spec, int64_t original_label) {
  for (size_t t = 0; t < spec.classes_per_task.size(); ++t) {
    const auto& c = spec.classes_per_task[t];
    if (std::find(c.begin(), c.end(), original_label) != c.end()) return static_cast<int>(t + 1);
  }
  throw ValueError("task_of_class: class " + std::to_string(original_label) +
                   " belongs to no task of the split");
}

int64_t permuted_label_offset(Scenario scenario, int task_id, int num_classes) {
  if (task_id < 1) {
    throw ValueError("permuted_label_offset: task_id must be >= 1, got " + std::to_string(task_id));
  }
  return scenario == Scenario::TIL ? 0 : int64_t{task_id - 1} * num_classes;
}

int64_t permuted_train_label(Scenario scenario, int task_id, int64_t original_label,
                             int num_classes) {
  if (original_label < 0 || original_label >= num_classes) {
    throw ValueError("permuted_train_label: label " + std::to_string(original_label) +
                     " out of range 0.." + std::to_string(num_classes - 1));
  }
  return permuted_label_offset(scenario, task_id, num_classes) + original_label;
}

std::pair<std::vector<int64_t>, std::vector<int64_t>> train_val_split(int64_t n,
                                                                      double val_fraction,
                                                                      uint64_t split_seed) {
  if (n < 0) throw ValueError("train_val_split: n must be >= 0, got " + std::to_string(n));
  if (!(val_fraction >= 0.0 && val_fraction < 1.0)) {
    throw ValueError("train_val_split: val_fraction must be in [0, 1), got " +
                     std::to_string(val_fraction));
  }
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  Generator rng(Generator::derive(split_seed, kTagSplit, 0));
  rng.shuffle(order);
  // floor, like torch.utils.data.random_split with fractional lengths gives val.
  const auto n_val = static_cast<size_t>(std::floor(static_cast<double>(n) * val_fraction));
  std::vector<int64_t> val(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n_val));
  std::vector<int64_t> train(order.begin() + static_cast<std::ptrdiff_t>(n_val), order.end());
  std::sort(val.begin(), val.end());
  std::sort(train.begin(), train.end());
  return {std::move(train), std::move(val)};
}

std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int task, int epoch) {
  if (n < 0) throw ValueError("epoch_order: n must be >= 0, got " + std::to_string(n));
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  Generator rng(Generator::derive(seed, kTagEpoch, static_cast<uint64_t>(task),
                                  static_cast<uint64_t>(epoch)));
  rng.shuffle(order);
  return order;
}

}  // namespace clarena::cl
