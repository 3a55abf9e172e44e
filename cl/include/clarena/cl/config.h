// Experiment configuration: YAML files, Hydra-style `key=value` overrides, validation.
#pragma once

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clarena/core/errors.h"

namespace clarena::cl {

/// A refused configuration: the message names the key and value at fault and lists the
/// valid keys, choices, type or range.
class ConfigError : public ValueError {
 public:
  using ValueError::ValueError;
};

/// Every setting of a run. settings_help() lists keys, types, defaults and choices.
struct ExperimentConfig {
  std::string experiment_name = "split_fmnist";
  std::string benchmark = "split";        // split | permuted
  std::string dataset = "fashion_mnist";  // fashion_mnist | mnist
  std::string data_dir;                   // empty: kFashionMnistDir for fashion_mnist
  int num_tasks = 5;
  std::vector<int64_t> class_order;      // empty: label order (split only)
  std::string scenario = "til";          // til | cil
  std::string algorithm = "finetuning";  // finetuning | fix | independent | random
  bool freeze_heads = false;
  int epochs = 2;
  int batch_size = 64;
  std::string optimizer = "sgd";  // sgd | adam
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 0.0;
  std::vector<int64_t> hidden_dims = {256, 256};
  bool batch_norm = false;
  double val_fraction = 0.1;
  uint64_t seed = 42;
  std::string device = "cpu";              // cpu | cuda | cuda:N
  std::string output_dir;                  // empty: outputs/<experiment_name>_<stamp>
  int64_t max_train_samples_per_task = 0;  // 0: all
  bool progress = true;
};

/// Reads a YAML mapping of settings over the defaults, then validates. Unknown keys, keys
/// that are lists or mappings, bad values, YAML syntax errors, files over 1 MiB and nesting
/// deeper than 32 levels (checked before parsing) throw ConfigError naming the file (and
/// line); a missing or unreadable file throws clarena::IOError.
ExperimentConfig load_config(const std::filesystem::path& yaml_file);

/// Applies one `key=value` override (lists as `[256,128]`), checking the value's type and
/// range (strings must be UTF-8 without control characters). Cross-key rules are left to
/// validate().
void apply_override(ExperimentConfig& cfg, const std::string& key_eq_value);

/// Checks every value and the rules that tie keys together (including a cap of 2^30 model
/// parameters); throws ConfigError.
void validate(const ExperimentConfig& cfg);

/// All settings as a JSON object keyed like the YAML file.
nlohmann::json to_json(const ExperimentConfig& cfg);

/// A table of every key: type, default, and choices or range.
std::string settings_help();

/// data_dir, or Debian's Fashion-MNIST folder when it is empty and dataset=fashion_mnist.
std::filesystem::path resolved_data_dir(const ExperimentConfig& cfg);

/// Throws clarena::IOError naming the path when `dir` cannot be a run's output folder: it or
/// a parent is a file, it lies under /proc or /sys, or the folder (or its nearest existing
/// parent) is not writable (read-only mount, no permission). Creates nothing.
void check_output_dir(const std::filesystem::path& dir);

/// output_dir, or outputs/<experiment_name>_<YYYYmmdd-HHMMSS> (local time `now`).
std::filesystem::path resolved_output_dir(const ExperimentConfig& cfg, std::time_t now);

}  // namespace clarena::cl
