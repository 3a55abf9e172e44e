#include "clarena/cl/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <functional>
#include <limits>
#include <set>

#include "clarena/cl/benchmark_mapping.h"
#include "clarena/cl/idx.h"
#include "text_format.h"

namespace clarena::cl {
namespace {

template <typename T>
using Member = T ExperimentConfig::*;

// One setting: how to parse it from text, check it, and show it.
struct Field {
  std::string key, type, rule, help;
  std::function<void(ExperimentConfig&, const std::string&)> parse;  // type errors only
  std::function<void(const ExperimentConfig&)> check;                // range / choices
  std::function<nlohmann::json(const ExperimentConfig&)> get;
};

[[noreturn]] void refuse(const std::string& key, const std::string& what) {
  throw ConfigError("config key `" + key + "`: " + what);
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string out;
  for (const auto& s : v)
    out += (out.empty() ? "" : sep) + s;
  return out;
}

template <typename T>
bool parse_number(std::string text, T& out) {
  text = trim(text);
  if (!text.empty() && text[0] == '+') text.erase(0, 1);
  const char* end = text.data() + text.size();
  const auto r = std::from_chars(text.data(), end, out);
  return !text.empty() && r.ec == std::errc() && r.ptr == end;
}

template <typename T>
Field int_field(std::string key, Member<T> m, T lo, T hi, std::string help) {
  const std::string rule = "integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  auto check = [=](const ExperimentConfig& c) {
    if (c.*m < lo || c.*m > hi)
      refuse(key, "expected an " + rule + ", got " + std::to_string(c.*m));
  };
  auto parse = [=](ExperimentConfig& c, const std::string& v) {
    T x{};
    if (!parse_number(v, x)) refuse(key, "expected an " + rule + ", got `" + v + "`");
    c.*m = x;
  };
  return {key, "int", rule, help, parse, check, [m](const ExperimentConfig& c) {
            return nlohmann::json(c.*m);
          }};
}

Field float_field(std::string key, Member<double> m, double lo, bool lo_open, double hi,
                  bool hi_open, std::string help) {
  auto bound = [](double b) { return detail::format_repr(b); };
  const std::string rule = std::string("number in ") + (lo_open ? "(" : "[") + bound(lo) + ", " +
                           bound(hi) + (hi_open ? ")" : "]");
  auto check = [=](const ExperimentConfig& c) {
    const double x = c.*m;
    const bool ok =
        std::isfinite(x) && (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
    if (!ok) refuse(key, "expected a " + rule + ", got " + detail::format_repr(x));
  };
  auto parse = [=](ExperimentConfig& c, const std::string& v) {
    double x = 0;
    if (!parse_number(v, x) || !std::isfinite(x)) {
      refuse(key, "expected a " + rule + ", got `" + v + "`");
    }
    c.*m = x;
  };
  return {key, "float", rule, help, parse, check, [m](const ExperimentConfig& c) {
            return nlohmann::json(c.*m);
          }};
}

Field bool_field(std::string key, Member<bool> m, std::string help) {
  auto parse = [=](ExperimentConfig& c, const std::string& v) {
    std::string s = trim(v);
    for (char& ch : s)
      ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (s == "true" || s == "yes" || s == "on" || s == "1") {
      c.*m = true;
    } else if (s == "false" || s == "no" || s == "off" || s == "0") {
      c.*m = false;
    } else {
      refuse(key, "expected a boolean (true or false), got `" + v + "`");
    }
  };
  return {key,
          "bool",
          "true | false",
          help,
          parse,
          [](const ExperimentConfig&) {},
          [m](const ExperimentConfig& c) { return nlohmann::json(c.*m); }};
}

Field string_field(std::string key, Member<std::string> m, std::string rule, std::string help,
                   std::function<void(const ExperimentConfig&)> check) {
  return {key,
          "string",
          rule,
          help,
          [m](ExperimentConfig& c, const std::string& v) { c.*m = trim(v); },
          check,
          [m](const ExperimentConfig& c) { return nlohmann::json(c.*m); }};
}

Field choice_field(std::string key, Member<std::string> m, std::vector<std::string> choices,
                   std::string help) {
  const std::string rule = join(choices, " | ");
  auto check = [=](const ExperimentConfig& c) {
    if (std::find(choices.begin(), choices.end(), c.*m) == choices.end()) {
      refuse(key, "unknown value `" + c.*m + "`; valid choices: " + join(choices));
    }
  };
  return string_field(key, m, rule, help, check);
}

Field list_field(std::string key, Member<std::vector<int64_t>> m, int64_t lo, int64_t hi,
                 bool allow_empty, const std::string& example, std::string help) {
  const std::string rule = std::string(allow_empty ? "" : "non-empty ") + "list of integers in [" +
                           std::to_string(lo) + ", " + std::to_string(hi) + "], like " + example;
  auto check = [=](const ExperimentConfig& c) {
    if (!allow_empty && (c.*m).empty()) refuse(key, "expected a " + rule + ", got []");
    for (int64_t x : c.*m) {
      if (x < lo || x > hi) {
        refuse(key, "element " + std::to_string(x) + " out of range; expected a " + rule);
      }
    }
  };
  auto parse = [=](ExperimentConfig& c, const std::string& v) {
    const std::string s = trim(v);
    if (s.size() < 2 || s.front() != '[' || s.back() != ']') {
      refuse(key, "expected a " + rule + ", got `" + v + "`");
    }
    std::vector<int64_t> out;
    const std::string body = trim(s.substr(1, s.size() - 2));
    size_t start = 0;
    while (!body.empty() && start <= body.size()) {
      const size_t comma = std::min(body.find(',', start), body.size());
      const std::string item = body.substr(start, comma - start);
      int64_t x = 0;
      if (!parse_number(item, x)) {
        refuse(key,
               "element `" + trim(item) + "` of `" + v + "` is not an integer; expected a " + rule);
      }
      out.push_back(x);
      start = comma + 1;
    }
    c.*m = std::move(out);
  };
  return {key, "list[int]", rule, help, parse, check, [m](const ExperimentConfig& c) {
            return nlohmann::json(c.*m);
          }};
}

void check_name(const ExperimentConfig& c) {
  const auto bad = [](char ch) {
    return !(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.');
  };
  if (c.experiment_name.empty() ||
      std::any_of(c.experiment_name.begin(), c.experiment_name.end(), bad)) {
    refuse("experiment_name",
           "`" + c.experiment_name + "` is not a valid name; use letters, digits, '_', '-' or '.'");
  }
}

void check_device(const ExperimentConfig& c) {
  const std::string& d = c.device;
  bool ok = d == "cpu" || d == "cuda";
  if (!ok && d.rfind("cuda:", 0) == 0 && d.size() > 5) {
    const std::string n = d.substr(5);
    ok = std::all_of(n.begin(), n.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) &&
         n.size() <= 3;
  }
  if (!ok) refuse("device", "unknown device `" + d + "`; valid: cpu, cuda, cuda:N (N = 0, 1, ...)");
}

const std::vector<Field>& fields() {
  using C = ExperimentConfig;
  constexpr int64_t kBig = 1 << 30;
  static const std::vector<Field> table = {
      string_field("experiment_name", &C::experiment_name, "letters, digits, _ - .",
                   "name of the run, used in the default output folder", check_name),
      choice_field("benchmark", &C::benchmark, {"split", "permuted"},
                   "split: classes divided among tasks; permuted: a pixel permutation per task"),
      choice_field("dataset", &C::dataset, {"fashion_mnist", "mnist"}, "source dataset"),
      string_field("data_dir", &C::data_dir, "folder path",
                   "folder of IDX files; empty = /usr/share/datasets/fashion-mnist "
                   "(fashion_mnist only)",
                   [](const C&) {}),
      int_field<int>("num_tasks", &C::num_tasks, 1, 1000,
                     "number of tasks (split: must divide the 10 classes)"),
      list_field("class_order", &C::class_order, 0, 9, true, "[9,8,7,6,5,4,3,2,1,0]",
                 "order of classes before splitting into tasks; [] = label order (split only)"),
      choice_field("scenario", &C::scenario, {"til", "cil"},
                   "til: a head per task; cil: one head over all classes seen"),
      choice_field("algorithm", &C::algorithm, {"finetuning", "fix", "independent", "random"},
                   "CL algorithm"),
      bool_field(
          "freeze_heads", &C::freeze_heads,
          "Fix only: stop all training after task 1 (heads too), as CLArena's newest Fix does"),
      int_field<int>("epochs", &C::epochs, 1, 100000, "training epochs per task"),
      int_field<int>("batch_size", &C::batch_size, 1, 1 << 20, "mini-batch size"),
      choice_field("optimizer", &C::optimizer, {"sgd", "adam"}, "optimizer"),
      float_field("lr", &C::lr, 0.0, true, 10.0, false, "learning rate"),
      float_field("momentum", &C::momentum, 0.0, false, 1.0, true, "SGD momentum"),
      float_field("weight_decay", &C::weight_decay, 0.0, false, 1.0, false, "L2 weight decay"),
      list_field("hidden_dims", &C::hidden_dims, 1, 1 << 20, false, "[256,128]",
                 "MLP backbone hidden sizes"),
      bool_field("batch_norm", &C::batch_norm, "batch norm after each hidden layer"),
      float_field("val_fraction", &C::val_fraction, 0.0, false, 1.0, true,
                  "share of each task's training data held out for validation"),
      int_field<uint64_t>("seed", &C::seed, 0, std::numeric_limits<uint64_t>::max(),
                          "run seed: initialisation, data order, permutations"),
      string_field("device", &C::device, "cpu | cuda | cuda:N", "where to train", check_device),
      string_field("output_dir", &C::output_dir, "folder path",
                   "empty = outputs/<experiment_name>_<YYYYmmdd-HHMMSS>", [](const C&) {}),
      int_field<int64_t>("max_train_samples_per_task", &C::max_train_samples_per_task, 0, kBig,
                         "cap on training samples per task; 0 = all"),
      bool_field("progress", &C::progress, "show progress while training"),
  };
  return table;
}

std::vector<std::string> keys() {
  std::vector<std::string> k;
  for (const Field& f : fields())
    k.push_back(f.key);
  return k;
}

const Field& find_field(const std::string& key) {
  for (const Field& f : fields()) {
    if (f.key == key) return f;
  }
  throw ConfigError("unknown config key `" + key + "`; valid keys: " + join(keys()));
}

void set_value(ExperimentConfig& cfg, const std::string& key, const std::string& value) {
  const Field& f = find_field(key);
  f.parse(cfg, value);
  f.check(cfg);
}

// A YAML value as override text: scalars as written, sequences as "[a,b]".
std::string node_text(const std::string& key, const YAML::Node& node) {
  if (node.IsNull()) return "";
  if (node.IsScalar()) return node.Scalar();
  if (node.IsSequence()) {
    std::vector<std::string> items;
    for (const auto& item : node) {
      if (!item.IsScalar()) refuse(key, "list elements must be plain values");
      items.push_back(item.Scalar());
    }
    return std::string("[").append(join(items, ",")).append("]");
  }
  refuse(key, "expected a value or a list, got a mapping");
}

}  // namespace

ExperimentConfig load_config(const std::filesystem::path& yaml_file) {
  const std::string name = yaml_file.string();
  if (!std::filesystem::is_regular_file(yaml_file)) {
    throw IOError("config file '" + name + "' does not exist or is not a file");
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(name);
  } catch (const YAML::BadFile&) {
    throw IOError("config file '" + name + "' cannot be read");
  } catch (const YAML::Exception& e) {
    throw ConfigError("config file '" + name + "': YAML error at line " +
                      std::to_string(e.mark.line + 1) + ", column " +
                      std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  ExperimentConfig cfg;
  if (root.IsNull()) return cfg;
  if (!root.IsMap()) {
    throw ConfigError("config file '" + name + "': expected a mapping of `key: value` lines");
  }
  std::set<std::string> seen;
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    const std::string where =
        "config file '" + name + "', line " + std::to_string(kv.first.Mark().line + 1) + ": ";
    try {
      if (!seen.insert(key).second) refuse(key, "given twice");
      set_value(cfg, key, node_text(key, kv.second));
    } catch (const ConfigError& e) {
      throw ConfigError(where + e.what());
    }
  }
  try {
    validate(cfg);
  } catch (const ConfigError& e) {
    throw ConfigError("config file '" + name + "': " + e.what());
  }
  return cfg;
}

void apply_override(ExperimentConfig& cfg, const std::string& key_eq_value) {
  const size_t eq = key_eq_value.find('=');
  if (eq == std::string::npos) {
    throw ConfigError("override `" + key_eq_value +
                      "` is not of the form key=value; valid keys: " + join(keys()));
  }
  set_value(cfg, trim(key_eq_value.substr(0, eq)), key_eq_value.substr(eq + 1));
}

void validate(const ExperimentConfig& cfg) {
  for (const Field& f : fields())
    f.check(cfg);
  if (cfg.dataset == "mnist" && cfg.data_dir.empty()) {
    refuse("data_dir",
           "dataset=mnist has no default location; set data_dir= to a folder of "
           "MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...)");
  }
  if (cfg.benchmark == "split") {
    try {
      make_split(10, cfg.num_tasks, cfg.class_order);
    } catch (const ConfigError&) {
      throw;
    } catch (const ValueError& e) {
      throw ConfigError("config keys `num_tasks` / `class_order` (benchmark=split): " +
                        std::string(e.what()));
    }
  } else if (!cfg.class_order.empty()) {
    refuse("class_order",
           "applies only to benchmark=split; leave it [] for benchmark=" + cfg.benchmark);
  }
}

nlohmann::json to_json(const ExperimentConfig& cfg) {
  nlohmann::json j = nlohmann::json::object();
  for (const Field& f : fields())
    j[f.key] = f.get(cfg);
  return j;
}

std::string settings_help() {
  const ExperimentConfig defaults;
  std::vector<std::vector<std::string>> rows = {{"key", "type", "default", "valid values"}};
  for (const Field& f : fields())
    rows.push_back({f.key, f.type, f.get(defaults).dump(), f.rule});
  std::vector<size_t> width(4, 0);
  for (const auto& r : rows) {
    for (size_t c = 0; c < 4; ++c)
      width[c] = std::max(width[c], r[c].size());
  }
  std::string out = "Settings (YAML `key: value` or override `key=value`):\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    std::string line = "  ";
    for (size_t c = 0; c < 4; ++c) {
      line += rows[i][c] + (c < 3 ? std::string(width[c] - rows[i][c].size() + 2, ' ') : "");
    }
    out += line + "\n";
    if (i > 0) out += "      " + fields()[i - 1].help + "\n";
  }
  return out;
}

std::filesystem::path resolved_data_dir(const ExperimentConfig& cfg) {
  if (!cfg.data_dir.empty()) return cfg.data_dir;
  return kFashionMnistDir;
}

std::filesystem::path resolved_output_dir(const ExperimentConfig& cfg, std::time_t now) {
  if (!cfg.output_dir.empty()) return cfg.output_dir;
  std::tm tm{};
  localtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
  return std::filesystem::path("outputs") / (cfg.experiment_name + "_" + stamp);
}

}  // namespace clarena::cl
