// Experiment configuration: YAML files, Hydra-style `key=value` overrides, validation.
#pragma once

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "clarena/core/device.h"
#include "clarena/core/errors.h"

namespace clarena::cl {

/// A refused configuration: the message names the key and value at fault and lists the
/// valid keys, choices, type or range.
class ConfigError : public ValueError {
 public:
  using ValueError::ValueError;
};

// ---- The choices of the enum settings ----
// Each is parsed once, from its config spelling, into an enum; to_string gives the spelling
// back (what YAML files, overrides and state.json hold).

enum class Benchmark { Split, Permuted };
/// Task-incremental (a head per task) or class-incremental (one growing head).
enum class Scenario { TIL, CIL };
enum class Algorithm { Finetuning, Fix, Independent, Random, LwF, EWC };
enum class OptimizerKind { SGD, Adam };
enum class Dataset { FashionMnist, Mnist };
/// The backbone network: CLArena's MLP, a small convnet, or ResNet-18 (nn/backbones.h).
enum class BackboneKind { MLP, CNN, ResNet18 };

std::string to_string(Benchmark b);      // "split" | "permuted"
std::string to_string(Scenario s);       // "til" | "cil"
std::string to_string(Algorithm a);      // "finetuning" | "fix" | ... | "lwf" | "ewc"
std::string to_string(OptimizerKind o);  // "sgd" | "adam"
std::string to_string(Dataset d);        // "fashion_mnist" | "mnist"
std::string to_string(BackboneKind b);   // "mlp" | "cnn" | "resnet18"
/// The display name of an algorithm: "Finetuning", "Fix", "Independent", "Random", "LwF", "EWC".
std::string algorithm_name(Algorithm a);

/// Every value of an enum setting, in the order settings_help lists them.
template <typename E>
std::span<const E> enum_values();
template <>
std::span<const Benchmark> enum_values<Benchmark>();
template <>
std::span<const Scenario> enum_values<Scenario>();
template <>
std::span<const Algorithm> enum_values<Algorithm>();
template <>
std::span<const OptimizerKind> enum_values<OptimizerKind>();
template <>
std::span<const Dataset> enum_values<Dataset>();
template <>
std::span<const BackboneKind> enum_values<BackboneKind>();

/// The value whose config spelling is exactly `text` ("lwf" -> Algorithm::LwF); nullopt when
/// none is.
template <typename E>
std::optional<E> enum_from_string(std::string_view text) {
  for (E e : enum_values<E>()) {
    if (to_string(e) == text) return e;
  }
  return std::nullopt;
}

/// Every setting of a run. settings_help() lists keys, types, defaults and choices.
struct ExperimentConfig {
  std::string experiment_name = "split_fmnist";
  Benchmark benchmark = Benchmark::Split;
  Dataset dataset = Dataset::FashionMnist;
  std::string data_dir;  // empty: kFashionMnistDir for fashion_mnist
  int num_tasks = 5;
  std::vector<int64_t> class_order;  // empty: label order (split only)
  Scenario scenario = Scenario::TIL;
  Algorithm algorithm = Algorithm::Finetuning;
  bool freeze_heads = false;                  // Fix only
  double distillation_reg_factor = 1.0;       // LwF only
  double distillation_reg_temperature = 2.0;  // LwF only
  double parameter_change_reg_factor = 1.0;   // EWC only
  int epochs = 2;
  int batch_size = 64;
  OptimizerKind optimizer = OptimizerKind::SGD;
  double lr = 0.01;
  double momentum = 0.9;
  double weight_decay = 0.0;
  BackboneKind backbone = BackboneKind::MLP;
  std::vector<int64_t> hidden_dims = {256, 256};  // MLP only
  bool batch_norm = false;                        // MLP only
  double val_fraction = 0.1;
  uint64_t seed = 42;
  Device device = Device::cpu();           // config: cpu | cuda | cuda:N
  std::string output_dir;                  // empty: outputs/<experiment_name>_<stamp>
  int64_t max_train_samples_per_task = 0;  // 0: all
  bool progress = true;
};

/// Reads a YAML mapping of settings over the defaults, then validates. Unknown keys, keys
/// that are lists or mappings, bad values, YAML syntax errors, files over 1 MiB and nesting
/// deeper than 32 levels (checked before parsing) throw ConfigError naming the file (and
/// line); a missing or unreadable file throws clarena::IOError.
ExperimentConfig load_config(const std::filesystem::path& yaml_file);

/// Applies one `key=value` override, checking the value's type and range. The value is YAML,
/// read like a value of the file (`hidden_dims=[256,128]`, `output_dir="a: b"`); strings must
/// be UTF-8 without control characters. Cross-key rules are left to validate().
void apply_override(ExperimentConfig& cfg, const std::string& key_eq_value);

/// A list of algorithms given as `key=[finetuning,fix,lwf,ewc]` (`clarena compare`'s
/// `algorithms=`), read as YAML like a config value: ConfigError naming `key` and the element
/// that is no algorithm (listing the valid ones), an empty list or one given twice.
std::vector<Algorithm> parse_algorithm_list(const std::string& key, const std::string& text);

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
