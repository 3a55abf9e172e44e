// Files a run writes besides the metrics: curves, costs, manifest, checkpoint. Every file goes
// through write_file_atomic (core/atomic_file.h): a kill or a full disk leaves the previous
// file or the whole new one, and a failed write is an IOError naming the file.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "clarena/cl/config.h"
#include "clarena/cl/experiment.h"
#include "clarena/cl/metrics.h"
#include "clarena/core/errors.h"
#include "clarena/nn/module.h"

namespace clarena::cl {

void write_curves_csv(const std::filesystem::path& file, const std::vector<EpochRecord>& curves);
void write_costs_csv(const std::filesystem::path& file, const std::vector<TaskCost>& costs);

/// manifest.json: settings, machine (build, device, CPU threads) and wall times. A new run
/// starts it; a resume keeps the first run's record and appends itself to `resumes`. Each
/// update() rewrites the file with the progress of this invocation.
class Manifest {
 public:
  Manifest(std::filesystem::path file, const ExperimentConfig& cfg, const nlohmann::json& benchmark,
           bool resume, int tasks_done);
  void update(int tasks_done, double wall_seconds);

 private:
  std::filesystem::path file_;
  nlohmann::json doc_;
  bool resume_;
};

/// The config as YAML that load_config reads back (written into every output folder).
std::string config_yaml(const ExperimentConfig& cfg);
/// A config from its to_json form, through the same checks as command-line overrides.
ExperimentConfig config_from_json(const nlohmann::json& j);

/// A field of a checkpoint record that is missing, of the wrong type or out of range: field()
/// names it within the record ("steps"; empty: the record itself), why() says what is wrong.
/// read_checkpoint_state names the file and where the record lies ("costs[1].steps").
class StateFieldError : public IOError {
 public:
  StateFieldError(std::string field, std::string why);
  const std::string& field() const { return field_; }
  const std::string& why() const { return why_; }

 private:
  std::string field_, why_;
};

/// The records of state.json as JSON objects with one named member per field ("task",
/// "steps", "forward_ms", ...; a NaN loss as null). from_json checks every field's type and
/// range and refuses members that are no field: StateFieldError.
void to_json(nlohmann::json& j, const TaskCost& c);
void from_json(const nlohmann::json& j, TaskCost& c);
void to_json(nlohmann::json& j, const EpochRecord& e);
void from_json(const nlohmann::json& j, EpochRecord& e);

/// What a checkpoint holds besides the parameters: enough to continue a run exactly.
struct CheckpointState {
  ExperimentConfig config;
  int tasks_done = 0;
  AccuracyMatrix accuracy{1};
  std::vector<TaskCost> costs;
  std::vector<EpochRecord> curves;
};

/// A run's checkpoint folder, output_dir/checkpoint, holding model.params and state.json.
/// After a kill halfway through replacing it on a file system that cannot exchange folders
/// atomically, this is the complete previous checkpoint instead.
std::filesystem::path checkpoint_dir(const std::filesystem::path& output_dir);

/// Writes the parameters and the state into output_dir/checkpoint.tmp, makes them durable,
/// then puts that folder in the place of output_dir/checkpoint in one atomic step: a kill at
/// any instant leaves the previous checkpoint or this one, both whole.
void write_checkpoint(const std::filesystem::path& output_dir, const nn::Module& model,
                      const CheckpointState& state);

/// Reads dir/state.json and checks every field (type, range, row lengths): IOError naming the
/// file and the field when it is missing or malformed, or when the file has no `version` 2
/// (older files held costs and curves as positional lists).
CheckpointState read_checkpoint_state(const std::filesystem::path& dir);

/// Removes what a killed or failed run left behind in output_dir: the temporaries of its
/// result files, a half-written checkpoint.tmp folder, a parked checkpoint.old (put back as
/// the checkpoint when the new one never arrived). Only names the run itself writes.
void remove_stale_temps(const std::filesystem::path& output_dir);

}  // namespace clarena::cl
