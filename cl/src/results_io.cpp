#include "results_io.h"

#include <fstream>
#include <sstream>

#include "clarena/core/device.h"
#include "clarena/core/errors.h"

#ifndef CLARENA_VERSION
#define CLARENA_VERSION "unknown"
#endif
#ifndef CLARENA_BUILD_TYPE
#define CLARENA_BUILD_TYPE "unknown"
#endif

namespace clarena::cl {
namespace fs = std::filesystem;

void write_text_atomic(const fs::path& file, const std::string& text) {
  fs::path tmp = file;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw IOError("cannot write " + tmp.string());
  }
  std::error_code ec;
  fs::rename(tmp, file, ec);
  if (ec)
    throw IOError("cannot rename " + tmp.string() + " to " + file.string() + ": " + ec.message());
}

void write_curves_csv(const fs::path& file, const std::vector<EpochRecord>& curves) {
  std::ostringstream out;
  out.precision(6);
  out << std::fixed << "task,epoch,train_loss,train_accuracy,val_loss,val_accuracy\n";
  for (const auto& r : curves)
    out << r.task << ',' << r.epoch << ',' << r.train_loss << ',' << r.train_accuracy << ','
        << r.val_loss << ',' << r.val_accuracy << '\n';
  write_text_atomic(file, out.str());
}

void write_costs_csv(const fs::path& file, const std::vector<TaskCost>& costs) {
  std::ostringstream out;
  out.precision(4);
  out << std::fixed
      << "task,steps,forward_ms_per_step,backward_ms_per_step,optimizer_ms_per_step,"
         "graph_nodes_per_step,saved_bytes_per_step\n";
  for (const auto& c : costs)
    out << c.task << ',' << c.steps << ',' << c.forward_ms << ',' << c.backward_ms << ','
        << c.optimizer_ms << ',' << c.nodes_per_step << ',' << c.saved_bytes_per_step << '\n';
  write_text_atomic(file, out.str());
}

void write_manifest(const fs::path& file, const ExperimentConfig& cfg,
                    const nlohmann::json& benchmark, double wall_seconds, bool resumed) {
  nlohmann::json j{{"version", CLARENA_VERSION},
                   {"build_type", CLARENA_BUILD_TYPE},
                   {"device", cfg.device},
                   {"cuda_devices_visible", cuda_device_count()},
                   {"seed", cfg.seed},
                   {"config", to_json(cfg)},
                   {"benchmark", benchmark},
                   {"resumed", resumed},
                   {"wall_seconds", wall_seconds}};
  write_text_atomic(file, j.dump(2) + "\n");
}

std::string config_yaml(const ExperimentConfig& cfg) {
  std::string out;
  const nlohmann::json settings = to_json(cfg);
  for (const auto& [key, value] : settings.items())
    out += key + ": " + value.dump() + "\n";
  return out;
}

ExperimentConfig config_from_json(const nlohmann::json& j) {
  ExperimentConfig cfg;
  for (const auto& [key, value] : j.items())
    apply_override(cfg, key + "=" + (value.is_string() ? value.get<std::string>() : value.dump()));
  validate(cfg);
  return cfg;
}

namespace {
nlohmann::json to_json(const AccuracyMatrix& m) {
  nlohmann::json rows = nlohmann::json::array();
  for (int i = 1; i <= m.trained_tasks(); ++i) {
    nlohmann::json row = nlohmann::json::array();
    for (int j = 1; j <= i; ++j)
      row.push_back(m.at(i, j));
    rows.push_back(row);
  }
  return rows;
}
}  // namespace

void write_checkpoint_state(const fs::path& dir, const CheckpointState& s) {
  nlohmann::json j{{"config", to_json(s.config)},
                   {"tasks_done", s.tasks_done},
                   {"accuracy", to_json(s.accuracy)}};
  for (const auto& c : s.costs)
    j["costs"].push_back({c.task, c.steps, c.forward_ms, c.backward_ms, c.optimizer_ms,
                          c.nodes_per_step, c.saved_bytes_per_step});
  for (const auto& r : s.curves)
    j["curves"].push_back(
        {r.task, r.epoch, r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy});
  write_text_atomic(dir / "state.json", j.dump() + "\n");
}

CheckpointState read_checkpoint_state(const fs::path& dir) {
  const fs::path file = dir / "state.json";
  std::ifstream in(file);
  if (!in)
    throw IOError("no checkpoint at " + file.string() +
                  ": resume needs the output folder of a run that finished at least one task");
  try {
    const nlohmann::json j = nlohmann::json::parse(in);
    CheckpointState s;
    s.config = config_from_json(j.at("config"));
    s.tasks_done = j.at("tasks_done").get<int>();
    s.accuracy = AccuracyMatrix(s.config.num_tasks);
    const auto& rows = j.at("accuracy");
    for (size_t i = 0; i < rows.size(); ++i)
      for (size_t k = 0; k < rows[i].size(); ++k)
        s.accuracy.set(static_cast<int>(i + 1), static_cast<int>(k + 1), rows[i][k].get<double>());
    for (const auto& c : j.value("costs", nlohmann::json::array()))
      s.costs.push_back({c[0].get<int>(), c[1].get<int64_t>(), c[2].get<double>(),
                         c[3].get<double>(), c[4].get<double>(), c[5].get<double>(),
                         c[6].get<double>()});
    for (const auto& r : j.value("curves", nlohmann::json::array()))
      s.curves.push_back({r[0].get<int>(), r[1].get<int>(), r[2].get<double>(), r[3].get<double>(),
                          r[4].get<double>(), r[5].get<double>()});
    return s;
  } catch (const nlohmann::json::exception& e) {
    throw IOError("checkpoint state " + file.string() + " is malformed: " + e.what());
  }
}

}  // namespace clarena::cl
