// Pure index and label logic of the CL benchmarks (Permuted, Split), the TIL/CIL label
// mappings, and seeded data orders. Tasks are 1-based, as in CLArena.
//
// Randomness comes from clarena::Generator (xoshiro256**) and its Fisher-Yates shuffle, never
// std::shuffle or std distributions, so a seed gives the same numbers on every platform.
#pragma once

#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "clarena/cl/config.h"

namespace clarena::cl {

// ---- Permuted benchmark ----

/// The pixel permutation of task `task_id` (>= 1; task 1 is permuted too): out[k] is the
/// source pixel of output pixel k. Drawn from a generator seeded by (seed, task_id).
std::vector<int32_t> task_permutation(uint64_t seed, int task_id, int num_pixels);

/// FNV-1a 64 over the little-endian bytes of the permutation, for the run manifest.
uint64_t permutation_hash(const std::vector<int32_t>& perm);

// ---- Split benchmark ----

/// Which original classes each task holds: classes_per_task[t-1] for task t.
struct SplitSpec {
  std::vector<std::vector<int64_t>> classes_per_task;
};

/// Splits `num_classes` classes into `num_tasks` tasks of equal size, in `class_order`
/// (empty = label order 0..num_classes-1). Throws clarena::ValueError when the classes do
/// not divide evenly or class_order is not a permutation of 0..num_classes-1.
SplitSpec make_split(int num_classes = 10, int num_tasks = 5,
                     std::vector<int64_t> class_order = {});

// ---- Label mapping ----

// Scenario (TIL, CIL) and its to_string are declared with the other settings in config.h.

/// "til" / "cil" (case-insensitive); throws clarena::ValueError listing both otherwise.
Scenario scenario_from_string(std::string_view s);

/// Number of classes of task `task_id` in the split.
int num_classes_of_task(const SplitSpec& spec, int task_id);
/// Number of classes of all tasks before `task_id` (the CIL offset of its labels).
int64_t classes_before_task(const SplitSpec& spec, int task_id);
/// Offset added to local labels of task `task_id`: 0 for TIL, classes_before_task for CIL.
int64_t split_label_offset(const SplitSpec& spec, Scenario scenario, int task_id);
/// Training label of `original_label` in task `task_id`: its index inside the task (TIL) or
/// that plus classes_before_task (CIL). Throws clarena::ValueError if the task lacks it.
int64_t split_train_label(const SplitSpec& spec, Scenario scenario, int task_id,
                          int64_t original_label);
/// Task (1-based) holding `original_label`; throws clarena::ValueError if none does.
int task_of_class(const SplitSpec& spec, int64_t original_label);

/// Offset of permuted task `task_id`'s labels: 0 for TIL, (task_id-1)*num_classes for CIL.
int64_t permuted_label_offset(Scenario scenario, int task_id, int num_classes = 10);
/// Training label in permuted task `task_id`: label (TIL) or (task_id-1)*num_classes+label.
int64_t permuted_train_label(Scenario scenario, int task_id, int64_t original_label,
                             int num_classes = 10);

// ---- Data order ----

/// Fixed seed of the train/validation split, independent of the run seed so every run sees
/// the same validation set (CLArena fixes torch.Generator().manual_seed(42) likewise).
inline constexpr uint64_t kDefaultSplitSeed = 42;

/// Splits indices 0..n-1 into (train, val), both sorted ascending; val holds
/// floor(n * val_fraction) indices drawn by a shuffle seeded by split_seed.
/// Throws clarena::ValueError unless n >= 0 and 0 <= val_fraction < 1.
std::pair<std::vector<int64_t>, std::vector<int64_t>> train_val_split(
    int64_t n, double val_fraction = 0.1, uint64_t split_seed = kDefaultSplitSeed);

/// A shuffle of 0..n-1 for epoch `epoch` of task `task`, seeded from the run seed.
std::vector<int64_t> epoch_order(int64_t n, uint64_t seed, int task, int epoch);

}  // namespace clarena::cl
