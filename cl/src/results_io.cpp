#include "results_io.h"

#include <algorithm>
#include <cmath>
#include <concepts>
#include <ctime>
#include <fstream>
#include <limits>
#include <sstream>
#include <type_traits>

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
                {"device", cfg.device.str()},
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
  // Each value as JSON text, which YAML reads as the same value (strings double-quoted).
  for (const auto& [key, value] : j.items())
    apply_override(cfg, key + "=" + value.dump());
  validate(cfg);
  return cfg;
}

// --- checkpoint records ----------------------------------------------------------------------

StateFieldError::StateFieldError(std::string field, std::string why)
    : IOError("field '" + field + "' " + why), field_(std::move(field)), why_(std::move(why)) {}

namespace {

std::string show(const json& v) {
  std::string s = v.dump();
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

[[noreturn]] void bad_field(const std::string& field, const std::string& why) {
  throw StateFieldError(field, why);
}

const json& member(const json& object, const std::string& key) {
  auto it = object.find(key);
  if (it == object.end()) bad_field(key, "is missing");
  return *it;
}

const json& list(const json& v, const std::string& field, size_t size,
                 const std::string& why_size) {
  if (!v.is_array()) bad_field(field, "is " + show(v) + ", expected a list");
  if (v.size() != size)
    bad_field(field, "has " + std::to_string(v.size()) + " entries, expected " +
                         std::to_string(size) + " (" + why_size + ")");
  return v;
}

int64_t integer(const json& v, const std::string& field, int64_t lo, int64_t hi) {
  const std::string range = "an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
  if (v.is_number_unsigned()) {
    if (v.get<uint64_t>() > static_cast<uint64_t>(hi))
      bad_field(field, "is " + show(v) + ", expected " + range);
    return static_cast<int64_t>(v.get<uint64_t>());
  }
  if (!v.is_number_integer()) bad_field(field, "is " + show(v) + ", expected " + range);
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) bad_field(field, "is " + show(v) + ", expected " + range);
  return x;
}

/// A finite number in [lo, hi]; with allow_null, null (how JSON writes a NaN) reads as NaN.
double number(const json& v, const std::string& field, double lo, double hi,
              bool allow_null = false) {
  if (allow_null && v.is_null()) return std::numeric_limits<double>::quiet_NaN();
  const std::string range = "a number in [" + show(json(lo)) + ", " + show(json(hi)) + "]";
  if (!v.is_number()) bad_field(field, "is " + show(v) + ", expected " + range);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad_field(field, "is " + show(v) + ", expected " + range);
  return x;
}

/// Writes the fields a describe() names into a JSON object.
class RecordWriter {
 public:
  explicit RecordWriter(json& j) : j_(j) { j_ = json::object(); }
  template <typename T>
  void integer(const char* name, const T& v, int64_t /*lo*/, int64_t /*hi*/) {
    j_[name] = v;
  }
  void number(const char* name, double v, double /*lo*/, double /*hi*/, bool /*nan*/ = false) {
    j_[name] = v;  // a NaN is written as null
  }

 private:
  json& j_;
};

/// Reads the fields a describe() names from a JSON object, each checked for type and range;
/// a field missing or out of range, or a member that names no field, is a StateFieldError.
class RecordReader {
 public:
  RecordReader(const json& j, const char* what) : j_(j) {
    if (!j.is_object()) bad_field("", "is " + show(j) + ", expected an object of " + what);
  }
  template <typename T>
  void integer(const char* name, T& out, int64_t lo, int64_t hi) {
    out = static_cast<T>(::clarena::cl::integer(field(name), name, lo, hi));
  }
  void number(const char* name, double& out, double lo, double hi, bool nan = false) {
    out = ::clarena::cl::number(field(name), name, lo, hi, nan);
  }
  /// After the last field: every member must have been one.
  void finish() const {
    for (const auto& [key, value] : j_.items()) {
      if (std::find(names_.begin(), names_.end(), key) == names_.end()) {
        std::string all;
        for (const auto& n : names_)
          all += (all.empty() ? "" : ", ") + n;
        bad_field(key, "is not a field of this record (" + all + ")");
      }
    }
  }

 private:
  const json& field(const char* name) {
    names_.emplace_back(name);
    return member(j_, name);
  }
  const json& j_;
  std::vector<std::string> names_;
};

constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();
constexpr double kBig = std::numeric_limits<double>::max();
constexpr int64_t kMaxTask = 1000, kMaxEpoch = 100000;  // the config's bounds

// The named fields of each record in state.json, with the range each must lie in: to_json
// writes them, from_json reads and checks them. A new field is one line here.
template <typename Io, typename Cost>
requires std::same_as<std::remove_const_t<Cost>, TaskCost>
void describe(Io& io, Cost& c) {
  io.integer("task", c.task, 1, kMaxTask);
  io.integer("steps", c.steps, 0, kMaxInt);
  io.number("forward_ms", c.forward_ms, 0, kBig);
  io.number("backward_ms", c.backward_ms, 0, kBig);
  io.number("optimizer_ms", c.optimizer_ms, 0, kBig);
  io.number("nodes_per_step", c.nodes_per_step, 0, kBig);
  io.number("saved_bytes_per_step", c.saved_bytes_per_step, 0, kBig);
}

template <typename Io, typename Record>
requires std::same_as<std::remove_const_t<Record>, EpochRecord>
void describe(Io& io, Record& r) {
  io.integer("task", r.task, 1, kMaxTask);
  io.integer("epoch", r.epoch, 1, kMaxEpoch);
  io.number("train_loss", r.train_loss, 0, kBig, /*nan=*/true);  // a diverged step: NaN
  io.number("train_accuracy", r.train_accuracy, 0, 1);
  io.number("val_loss", r.val_loss, 0, kBig, /*nan=*/true);
  io.number("val_accuracy", r.val_accuracy, 0, 1);
}

}  // namespace

void to_json(json& j, const TaskCost& c) {
  RecordWriter w(j);
  describe(w, c);
}

void from_json(const json& j, TaskCost& c) {
  RecordReader r(j, "task costs");
  describe(r, c);
  r.finish();
}

void to_json(json& j, const EpochRecord& e) {
  RecordWriter w(j);
  describe(w, e);
}

void from_json(const json& j, EpochRecord& e) {
  RecordReader r(j, "epoch curves");
  describe(r, e);
  r.finish();
}

// --- checkpoint ------------------------------------------------------------------------------

namespace {

constexpr const char* kCheckpoint = "checkpoint";
constexpr const char* kState = "state.json";
constexpr const char* kParams = "model.params";
// 1 (no `version` field): costs and curves as positional lists. 2: named fields.
constexpr int kStateVersion = 2;

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

std::string at(const char* list, size_t i) {
  return std::string(list) + "[" + std::to_string(i) + "]";
}

/// Reads entry i of a list of records; a fault names the record: "costs[1].steps".
template <typename T>
T record(const json& entries, const char* list, size_t i) {
  try {
    return entries[i].get<T>();
  } catch (const StateFieldError& e) {
    bad_field(at(list, i) + (e.field().empty() ? "" : "." + e.field()), e.why());
  }
}

CheckpointState read_state(const json& j) {
  for (const auto& [key, value] : j.items())
    if (key != "version" && key != "config" && key != "tasks_done" && key != "accuracy" &&
        key != "costs" && key != "curves")
      bad_field(key,
                "is not a checkpoint field (version, config, tasks_done, accuracy, costs, curves)");

  CheckpointState s;
  const json& config = member(j, "config");
  if (!config.is_object()) bad_field("config", "is not a mapping of settings");
  try {
    s.config = config_from_json(config);
  } catch (const Error& e) {
    bad_field("config", std::string("holds a setting that is refused: ") + e.what());
  }
  const int n = s.config.num_tasks;
  s.tasks_done = static_cast<int>(integer(member(j, "tasks_done"), "tasks_done", 0, n));
  const int done = s.tasks_done;
  const std::string per_task = "one per finished task, tasks_done is " + std::to_string(done);

  s.accuracy = AccuracyMatrix(n);
  const json& rows = list(member(j, "accuracy"), "accuracy", static_cast<size_t>(done), per_task);
  for (int i = 1; i <= done; ++i) {
    const std::string field = at("accuracy", static_cast<size_t>(i - 1));
    const json& row = list(rows[static_cast<size_t>(i - 1)], field, static_cast<size_t>(i),
                           "row i holds tasks 1..i");
    for (int k = 1; k <= i; ++k)
      s.accuracy.set(
          i, k,
          number(row[static_cast<size_t>(k - 1)], field + "[" + std::to_string(k - 1) + "]", 0, 1));
  }

  const json& costs = list(member(j, "costs"), "costs", static_cast<size_t>(done), per_task);
  for (size_t i = 0; i < costs.size(); ++i) {
    s.costs.push_back(record<TaskCost>(costs, "costs", i));
    const auto task = static_cast<int64_t>(i + 1);
    integer(costs[i]["task"], at("costs", i) + ".task", task, task);
  }

  const int epochs = s.config.epochs;
  const json& curves = list(member(j, "curves"), "curves", static_cast<size_t>(done) * epochs,
                            "one per epoch of each finished task: " + std::to_string(done) + " x " +
                                std::to_string(epochs) + " epochs");
  for (size_t i = 0; i < curves.size(); ++i) {
    s.curves.push_back(record<EpochRecord>(curves, "curves", i));
    const auto task = static_cast<int64_t>(i) / epochs + 1;
    const auto epoch = static_cast<int64_t>(i) % epochs + 1;
    integer(curves[i]["task"], at("curves", i) + ".task", task, task);
    integer(curves[i]["epoch"], at("curves", i) + ".epoch", epoch, epoch);
  }
  return s;
}

}  // namespace

fs::path checkpoint_dir(const fs::path& output_dir) {
  return recover_dir(output_dir / kCheckpoint);
}

void write_checkpoint(const fs::path& output_dir, const nn::Module& model,
                      const CheckpointState& s) {
  const json j{{"version", kStateVersion},   {"config", to_json(s.config)},
               {"tasks_done", s.tasks_done}, {"accuracy", accuracy_rows(s.accuracy, s.tasks_done)},
               {"costs", s.costs},           {"curves", s.curves}};

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
  const std::string name = "checkpoint state " + file.string();
  std::ifstream in(file);
  if (!in)
    throw IOError("no checkpoint at " + file.string() +
                  ": resume needs the output folder of a run that was started with `train`");
  const json j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw IOError(name + " is malformed: not valid JSON");
  if (!j.is_object()) throw IOError(name + " is not a JSON object");
  if (!j.contains("version"))
    throw IOError(name +
                  " has no field 'version': it was written by an older clarena (costs and "
                  "curves as positional lists), which this one cannot resume; start the "
                  "run again, or resume it with the clarena that wrote it");
  if (j["version"] != kStateVersion)
    throw IOError(name + ": field 'version' is " + show(j["version"]) + ", this clarena reads " +
                  "version " + std::to_string(kStateVersion) + " only");
  try {
    return read_state(j);
  } catch (const StateFieldError& e) {
    throw IOError(name + ": " + e.what());
  }
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
