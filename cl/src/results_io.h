// Files a run writes besides the metrics: curves, costs, manifest, checkpoint state.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clarena/cl/config.h"
#include "clarena/cl/experiment.h"
#include "clarena/cl/metrics.h"

namespace clarena::cl {

/// Writes through a temporary file and a rename, so a reader never sees half a file.
void write_text_atomic(const std::filesystem::path& file, const std::string& text);

void write_curves_csv(const std::filesystem::path& file, const std::vector<EpochRecord>& curves);
void write_costs_csv(const std::filesystem::path& file, const std::vector<TaskCost>& costs);
void write_manifest(const std::filesystem::path& file, const ExperimentConfig& cfg,
                    const nlohmann::json& benchmark, double wall_seconds, bool resumed);

/// The config as YAML that load_config reads back (written into every output folder).
std::string config_yaml(const ExperimentConfig& cfg);
/// A config from its to_json form, through the same checks as command-line overrides.
ExperimentConfig config_from_json(const nlohmann::json& j);

/// What a checkpoint holds besides the parameters: enough to continue a run exactly.
struct CheckpointState {
  ExperimentConfig config;
  int tasks_done = 0;
  AccuracyMatrix accuracy{1};
  std::vector<TaskCost> costs;
  std::vector<EpochRecord> curves;
};
void write_checkpoint_state(const std::filesystem::path& dir, const CheckpointState& state);
/// Throws IOError naming the file when it is missing or malformed.
CheckpointState read_checkpoint_state(const std::filesystem::path& dir);

}  // namespace clarena::cl
