#include "results_io.h"

#include <cmath>
#include <ctime>
#include <fstream>
#include <limits>
#include <sstream>

#include "clarena/core/atomic_file.h"
#include "clarena/core/device.h"
#include "clarena/core/errors.h"
#include "clarena/core/threads.h"
#include "clarena/nn/serialize.h"

#ifndef CLARENA_VERSION
#define CLARENA_VERSION "unknown"
#endif
#ifndef CLARENA_BUILD_TYPE
#define CLARENA_BUILD_TYPE "unknown"
#endif

namespace clarena::cl {
namespace fs = std::filesystem;
using nlohmann::json;

void write_curves_csv(const fs::path& file, const std::vector<EpochRecord>& curves) {
  std::ostringstream out;
  out.precision(6);
  out << std::fixed << "task,epoch,train_loss,train_accuracy,val_loss,val_accuracy\n";
  for (const auto& r : curves)
    out << r.task << ',' << r.epoch << ',' << r.train_loss << ',' << r.train_accuracy << ','
        << r.val_loss << ',' << r.val_accuracy << '\n';
  write_file_atomic(file, out.str());
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
  write_file_atomic(file, out.str());
}

// --- manifest --------------------------------------------------------------------------------

namespace {

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

json read_manifest(const fs::path& file) {
  std::ifstream in(file);
  if (!in) return nullptr;
  json doc = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || (doc.contains("resumes") && !doc["resumes"].is_array()))
    throw IOError("manifest " + file.string() +
                  " is malformed (not a JSON object with a `resumes` list); a resume appends "
                  "itself to it: move the file away to start a new one");
  return doc;
}

}  // namespace

Manifest::Manifest(fs::path file, const ExperimentConfig& cfg, const json& benchmark, bool resume,
                   int tasks_done)
    : file_(std::move(file)), resume_(resume) {
  if (resume) doc_ = read_manifest(file_);
  if (doc_.is_null()) {
    // A new run, or a resume that finds no manifest (its first run's record is then unknown).
    doc_ = json{{"version", CLARENA_VERSION},
                {"build_type", CLARENA_BUILD_TYPE},
                {"device", cfg.device},
                {"cuda_devices_visible", cuda_device_count()},
                {"threads", resume ? json(nullptr) : json(num_threads())},
                {"seed", cfg.seed},
                {"config", to_json(cfg)},
                {"benchmark", benchmark},
                {"started_at", resume ? json(nullptr) : json(utc_now())},
                {"tasks_done", resume ? json(nullptr) : json(tasks_done)},
                {"wall_seconds", resume ? json(nullptr) : json(0.0)},
                {"resumed", false},
                {"resumes", json::array()}};
  }
  if (resume) {
    doc_["resumed"] = true;
    doc_["resumes"].push_back({{"started_at", utc_now()},
                               {"threads", num_threads()},
                               {"from_task", tasks_done + 1},
                               {"tasks_done", tasks_done},
                               {"wall_seconds", 0.0}});
  }
  write_file_atomic(file_, doc_.dump(2) + "\n");
}

void Manifest::update(int tasks_done, double wall_seconds) {
  json& run = resume_ ? doc_["resumes"].back() : doc_;
  run["tasks_done"] = tasks_done;
  run["wall_seconds"] = wall_seconds;
  write_file_atomic(file_, doc_.dump(2) + "\n");
}

// --- config ----------------------------------------------------------------------------------

std::string config_yaml(const ExperimentConfig& cfg) {
  std::string out;
  const json settings = to_json(cfg);
  for (const auto& [key, value] : settings.items())
    out += key + ": " + value.dump() + "\n";
  return out;
}

ExperimentConfig config_from_json(const json& j) {
  ExperimentConfig cfg;
  for (const auto& [key, value] : j.items())
    apply_override(cfg, key + "=" + (value.is_string() ? value.get<std::string>() : value.dump()));
  validate(cfg);
  return cfg;
}

// --- checkpoint ------------------------------------------------------------------------------

namespace {

constexpr const char* kCheckpoint = "checkpoint";
constexpr const char* kState = "state.json";
constexpr const char* kParams = "model.params";

json accuracy_rows(const AccuracyMatrix& m, int tasks_done) {
  json rows = json::array();
  for (int i = 1; i <= tasks_done; ++i) {
    json row = json::array();
    for (int j = 1; j <= i; ++j)
      row.push_back(m.at(i, j));
    rows.push_back(row);
  }
  return rows;
}

/// Reads state.json's fields, each checked for type and range; errors name file and field.
class StateReader {
 public:
  explicit StateReader(const fs::path& file) : file_(file) {}

  [[noreturn]] void fail(const std::string& field, const std::string& why) const {
    throw IOError("checkpoint state " + file_.string() + ": field '" + field + "' " + why);
  }

  const json& member(const json& object, const std::string& key) const {
    auto it = object.find(key);
    if (it == object.end()) fail(key, "is missing");
    return *it;
  }

  const json& array(const json& v, const std::string& field, size_t size,
                    const std::string& why_size) const {
    if (!v.is_array()) fail(field, "is " + show(v) + ", expected a list");
    if (v.size() != size)
      fail(field, "has " + std::to_string(v.size()) + " entries, expected " + std::to_string(size) +
                      " (" + why_size + ")");
    return v;
  }

  int64_t integer(const json& v, const std::string& field, int64_t lo, int64_t hi) const {
    const std::string range = "an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
    if (v.is_number_unsigned()) {
      if (v.get<uint64_t>() > static_cast<uint64_t>(hi))
        fail(field, "is " + show(v) + ", expected " + range);
      return static_cast<int64_t>(v.get<uint64_t>());
    }
    if (!v.is_number_integer()) fail(field, "is " + show(v) + ", expected " + range);
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) fail(field, "is " + show(v) + ", expected " + range);
    return x;
  }

  /// A finite number in [lo, hi]; with allow_null, null (how JSON writes a NaN) reads as NaN.
  double number(const json& v, const std::string& field, double lo, double hi,
                bool allow_null = false) const {
    if (allow_null && v.is_null()) return std::numeric_limits<double>::quiet_NaN();
    const std::string range = "a number in [" + show(json(lo)) + ", " + show(json(hi)) + "]";
    if (!v.is_number()) fail(field, "is " + show(v) + ", expected " + range);
    const double x = v.get<double>();
    if (!std::isfinite(x) || x < lo || x > hi) fail(field, "is " + show(v) + ", expected " + range);
    return x;
  }

 private:
  static std::string show(const json& v) {
    std::string s = v.dump();
    return s.size() > 40 ? s.substr(0, 37) + "..." : s;
  }
  const fs::path& file_;
};

std::string at(const char* list, size_t i) {
  return std::string(list) + "[" + std::to_string(i) + "]";
}

}  // namespace

fs::path checkpoint_dir(const fs::path& output_dir) {
  return recover_dir(output_dir / kCheckpoint);
}

void write_checkpoint(const fs::path& output_dir, const nn::Module& model,
                      const CheckpointState& s) {
  json costs = json::array(), curves = json::array();
  for (const auto& c : s.costs)
    costs.push_back({c.task, c.steps, c.forward_ms, c.backward_ms, c.optimizer_ms, c.nodes_per_step,
                     c.saved_bytes_per_step});
  for (const auto& r : s.curves)
    curves.push_back({r.task, r.epoch, r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy});
  const json j{{"config", to_json(s.config)},
               {"tasks_done", s.tasks_done},
               {"accuracy", accuracy_rows(s.accuracy, s.tasks_done)},
               {"costs", costs},
               {"curves", curves}};

  const fs::path target = output_dir / kCheckpoint;
  fs::path staged = target;
  staged += ".tmp";
  std::error_code ec;
  fs::remove_all(staged, ec);
  if (!fs::create_directory(staged, ec) || ec)
    throw IOError("cannot create checkpoint folder " + staged.string() + ": " + ec.message());
  try {
    nn::save(model, staged / kParams);
    write_file_atomic(staged / kState, j.dump() + "\n");
    replace_dir_atomic(staged, target);
  } catch (const Error&) {
    fs::remove_all(staged, ec);  // a failed checkpoint must not hold the space it took
    throw;
  }
}

CheckpointState read_checkpoint_state(const fs::path& dir) {
  const fs::path file = dir / kState;
  std::ifstream in(file);
  if (!in)
    throw IOError("no checkpoint at " + file.string() +
                  ": resume needs the output folder of a run that was started with `train`");
  const json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    throw IOError("checkpoint state " + file.string() + " is malformed: not valid JSON");
  const StateReader r(file);
  if (!j.is_object()) throw IOError("checkpoint state " + file.string() + " is not a JSON object");
  for (const auto& [key, value] : j.items())
    if (key != "config" && key != "tasks_done" && key != "accuracy" && key != "costs" &&
        key != "curves")
      r.fail(key, "is not a checkpoint field (config, tasks_done, accuracy, costs, curves)");

  CheckpointState s;
  const json& config = r.member(j, "config");
  if (!config.is_object()) r.fail("config", "is not a mapping of settings");
  try {
    s.config = config_from_json(config);
  } catch (const Error& e) {
    r.fail("config", std::string("holds a setting that is refused: ") + e.what());
  }
  const int n = s.config.num_tasks;
  s.tasks_done = static_cast<int>(r.integer(r.member(j, "tasks_done"), "tasks_done", 0, n));
  const int done = s.tasks_done;
  const std::string per_task = "one per finished task, tasks_done is " + std::to_string(done);

  s.accuracy = AccuracyMatrix(n);
  const json& rows =
      r.array(r.member(j, "accuracy"), "accuracy", static_cast<size_t>(done), per_task);
  for (int i = 1; i <= done; ++i) {
    const std::string field = at("accuracy", static_cast<size_t>(i - 1));
    const json& row = r.array(rows[static_cast<size_t>(i - 1)], field, static_cast<size_t>(i),
                              "row i holds tasks 1..i");
    for (int k = 1; k <= i; ++k)
      s.accuracy.set(i, k,
                     r.number(row[static_cast<size_t>(k - 1)],
                              field + "[" + std::to_string(k - 1) + "]", 0, 1));
  }

  const double big = std::numeric_limits<double>::max();
  const json& costs = r.array(r.member(j, "costs"), "costs", static_cast<size_t>(done), per_task);
  for (size_t i = 0; i < costs.size(); ++i) {
    const std::string field = at("costs", i);
    const json& c = r.array(costs[i], field, 7,
                            "task, steps, forward, backward and optimizer ms, nodes, bytes");
    auto cell = [&](size_t k) { return field + "[" + std::to_string(k) + "]"; };
    const auto task = static_cast<int>(i + 1);
    s.costs.push_back({static_cast<int>(r.integer(c[0], cell(0), task, task)),
                       r.integer(c[1], cell(1), 0, std::numeric_limits<int64_t>::max()),
                       r.number(c[2], cell(2), 0, big), r.number(c[3], cell(3), 0, big),
                       r.number(c[4], cell(4), 0, big), r.number(c[5], cell(5), 0, big),
                       r.number(c[6], cell(6), 0, big)});
  }

  const int epochs = s.config.epochs;
  const json& curves = r.array(r.member(j, "curves"), "curves", static_cast<size_t>(done) * epochs,
                               "one per epoch of each finished task: " + std::to_string(done) +
                                   " x " + std::to_string(epochs) + " epochs");
  for (size_t i = 0; i < curves.size(); ++i) {
    const std::string field = at("curves", i);
    const json& c = r.array(curves[i], field, 6,
                            "task, epoch, train loss and accuracy, validation loss and accuracy");
    auto cell = [&](size_t k) { return field + "[" + std::to_string(k) + "]"; };
    const auto task = static_cast<int64_t>(i) / epochs + 1;
    const auto epoch = static_cast<int64_t>(i) % epochs + 1;
    s.curves.push_back({static_cast<int>(r.integer(c[0], cell(0), task, task)),
                        static_cast<int>(r.integer(c[1], cell(1), epoch, epoch)),
                        r.number(c[2], cell(2), 0, big, true), r.number(c[3], cell(3), 0, 1),
                        r.number(c[4], cell(4), 0, big, true), r.number(c[5], cell(5), 0, 1)});
  }
  return s;
}

void remove_stale_temps(const fs::path& output_dir) {
  std::error_code ec;
  for (const char* name : {"acc.csv", "metrics.json", "curves.csv", "costs.csv", "acc_heatmap.svg",
                           "average_accuracy.svg", "manifest.json", "config.yaml"})
    fs::remove(temp_path(output_dir / name), ec);
  const fs::path target = output_dir / kCheckpoint;
  fs::path staged = target;
  staged += ".tmp";
  fs::remove_all(staged, ec);
  const fs::path parked = old_dir_path(target);
  if (fs::exists(parked, ec)) {
    if (recover_dir(target) == parked) {
      fs::rename(parked, target, ec);  // the new checkpoint never arrived: the previous is it
      if (ec) throw IOError("cannot restore " + parked.string() + ": " + ec.message());
      fsync_dir(output_dir);
    } else {
      fs::remove_all(parked, ec);
    }
  }
  for (const char* name : {kParams, kState})
    fs::remove(temp_path(target / name), ec);
}

}  // namespace clarena::cl
