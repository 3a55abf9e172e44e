#include "clarena/cl/config.h"

#include <unistd.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <set>

#include "clarena/cl/benchmark_mapping.h"
#include "clarena/cl/idx.h"
#include "text_format.h"

// yaml-cpp's typed conversions (node.as<T>()) for the enum settings and the device, by their
// config spellings.
namespace YAML {
template <typename E>
struct ConfigEnumConvert {
  static Node encode(E e) { return Node(clarena::cl::to_string(e)); }
  static bool decode(const Node& node, E& out) {
    if (!node.IsScalar()) return false;
    const std::optional<E> e = clarena::cl::enum_from_string<E>(node.Scalar());
    if (e) out = *e;
    return e.has_value();
  }
};
template <>
struct convert<clarena::cl::Benchmark> : ConfigEnumConvert<clarena::cl::Benchmark> {};
template <>
struct convert<clarena::cl::Scenario> : ConfigEnumConvert<clarena::cl::Scenario> {};
template <>
struct convert<clarena::cl::Algorithm> : ConfigEnumConvert<clarena::cl::Algorithm> {};
template <>
struct convert<clarena::cl::OptimizerKind> : ConfigEnumConvert<clarena::cl::OptimizerKind> {};
template <>
struct convert<clarena::cl::Dataset> : ConfigEnumConvert<clarena::cl::Dataset> {};
template <>
struct convert<clarena::cl::BackboneKind> : ConfigEnumConvert<clarena::cl::BackboneKind> {};

/// "cpu", "cuda" (device 0) or "cuda:N" (Device::parse's spellings) with N of 1 to 3 digits.
template <>
struct convert<clarena::Device> {
  static Node encode(const clarena::Device& d) { return Node(d.str()); }
  static bool decode(const Node& node, clarena::Device& out) {
    if (!node.IsScalar() || node.Scalar().size() > std::string_view("cuda:999").size())
      return false;
    try {
      out = clarena::Device::parse(node.Scalar());
      return true;
    } catch (const clarena::ValueError&) {
      return false;
    }
  }
};
}  // namespace YAML

namespace clarena::cl {
namespace {

namespace fs = std::filesystem;

// A config is a few dozen `key: value` lines: bigger or deeper files are refused before
// yaml-cpp (whose parser recurses once per level) sees them.
constexpr size_t kMaxConfigBytes = size_t{1} << 20;
constexpr int kMaxYamlDepth = 32;
// The largest model the config may ask for: 2^30 float32 parameters (4 GiB).
constexpr double kMaxParameters = double(int64_t{1} << 30);
constexpr int64_t kNominalInputs = 28 * 28;  // MNIST-format images
constexpr int64_t kClassesPerDataset = 10;
// Parameters of the fixed conv backbones on 1-channel 28x28 images (tests/test_conv_modules.cpp
// checks them against the modules).
constexpr double kCnnParameters = 406512;
constexpr double kResNet18Parameters = 11170240;

template <typename T>
using Member = T ExperimentConfig::*;

// One setting: how to read it from a YAML value, check it, and show it.
struct Field {
  std::string key, type, rule, help;
  // Reads a value of the file, or an override's value parsed as YAML, with yaml-cpp's typed
  // conversions; `text` is the value as written (bad bytes escaped), for messages. Type
  // errors only.
  std::function<void(ExperimentConfig&, const YAML::Node&, const std::string& text)> read;
  std::function<void(const ExperimentConfig&)> check;  // range / choices
  std::function<nlohmann::json(const ExperimentConfig&)> get;
};

[[noreturn]] void refuse(const std::string& key, const std::string& what) {
  throw ConfigError("config key `" + key + "`: " + what);
}

// A refused command-line argument that is no config key (compare's `algorithms=`).
[[noreturn]] void refuse_argument(const std::string& key, const std::string& what) {
  throw ConfigError("`" + key + "`: " + what);
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

// Offset of the first byte of `s` that is not well-formed UTF-8 (overlong forms, surrogates
// and code points past U+10FFFF included), or npos when all of it is.
size_t invalid_utf8_at(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1Fu, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0Fu, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07u, min = 0x10000;
    } else {
      return i;
    }
    if (i + len > s.size()) return i;
    for (size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string::npos;
}

// `s` with control bytes and bytes that break UTF-8 shown as \xNN, for messages.
std::string printable(const std::string& s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    const size_t bad = invalid_utf8_at(s.substr(i));
    const size_t good = bad == std::string::npos ? s.size() - i : bad;
    for (size_t k = i; k < i + good; ++k) {
      const auto c = static_cast<unsigned char>(s[k]);
      if (c < 0x20 || c == 0x7F) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "\\x%02x", c);
        out += hex;
      } else {
        out += s[k];
      }
    }
    i += good;
    if (i < s.size()) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", static_cast<unsigned char>(s[i]));
      out += hex;
      ++i;
    }
  }
  return out;
}

// String settings end up in paths, JSON files and messages: refuse bytes that are not UTF-8
// (JSON cannot hold them) and control characters (a NUL would cut a path short).
void check_text(const std::string& key, const std::string& value) {
  const size_t bad = invalid_utf8_at(value);
  if (bad != std::string::npos) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(value[bad]));
    refuse(key, "value `" + printable(value) + "` is not valid UTF-8 (byte " + hex + " at offset " +
                    std::to_string(bad) + "); use a UTF-8 text or path");
  }
  for (size_t i = 0; i < value.size(); ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c < 0x20 || c == 0x7F) {
      refuse(key, "value `" + printable(value) + "` holds a control character at offset " +
                      std::to_string(i) + "; use printable text");
    }
  }
}

// A YAML value as written, near enough for a message: scalars as they are, lists as [a,b].
std::string shown(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  if (node.IsSequence()) {
    std::vector<std::string> items;
    for (const auto& item : node)
      items.push_back(shown(item));
    return std::string("[").append(join(items, ",")).append("]");
  }
  if (node.IsMap()) return "{...}";
  return "";  // null: `key:` with nothing after it
}

// What a refused value is, for "expected ..., got <this>": `text`, or a mapping `text`.
std::string got(const YAML::Node& node, const std::string& text) {
  return (node.IsMap() ? "a mapping `" : "`") + text + "`";
}

// `node` through yaml-cpp's typed conversion to T (YAML::convert<T>); nullopt when it is
// not a plain value or does not convert (a fraction for an integer, an overflow, ...).
template <typename T>
std::optional<T> typed(const YAML::Node& node) {
  if (!node.IsScalar()) return std::nullopt;
  try {
    return node.as<T>();
  } catch (const YAML::BadConversion&) {
    return std::nullopt;
  }
}

template <typename T>
Field int_field(std::string key, Member<T> m, T lo, T hi, std::string help) {
  const std::string rule = "integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  auto check = [=](const ExperimentConfig& c) {
    if (c.*m < lo || c.*m > hi)
      refuse(key, "expected an " + rule + ", got " + std::to_string(c.*m));
  };
  auto read = [=](ExperimentConfig& c, const YAML::Node& node, const std::string& text) {
    const std::optional<T> x = typed<T>(node);
    if (!x) refuse(key, "expected an " + rule + ", got " + got(node, text));
    c.*m = *x;
  };
  return {key, "int", rule, help, read, check, [m](const ExperimentConfig& c) {
            return nlohmann::json(c.*m);
          }};
}

// A number in the interval between lo and hi (open or closed ends); hi = infinity: no bound.
Field float_field(std::string key, Member<double> m, double lo, bool lo_open, double hi,
                  bool hi_open, std::string help) {
  auto bound = [](double b) { return detail::format_repr(b); };
  const std::string rule =
      std::isinf(hi) ? std::string("finite number ") + (lo_open ? "> " : ">= ") + bound(lo)
                     : std::string("number in ") + (lo_open ? "(" : "[") + bound(lo) + ", " +
                           bound(hi) + (hi_open ? ")" : "]");
  auto check = [=](const ExperimentConfig& c) {
    const double x = c.*m;
    const bool ok =
        std::isfinite(x) && (lo_open ? x > lo : x >= lo) && (hi_open ? x < hi : x <= hi);
    if (!ok) refuse(key, "expected a " + rule + ", got " + detail::format_repr(x));
  };
  auto read = [=](ExperimentConfig& c, const YAML::Node& node, const std::string& text) {
    const std::optional<double> x = typed<double>(node);
    if (!x || !std::isfinite(*x)) refuse(key, "expected a " + rule + ", got " + got(node, text));
    c.*m = *x;
  };
  return {key, "float", rule, help, read, check, [m](const ExperimentConfig& c) {
            return nlohmann::json(c.*m);
          }};
}

Field bool_field(std::string key, Member<bool> m, std::string help) {
  auto read = [=](ExperimentConfig& c, const YAML::Node& node, const std::string& text) {
    const std::optional<bool> x = typed<bool>(node);  // true/false, yes/no, on/off
    if (!x) refuse(key, "expected a boolean (true or false), got " + got(node, text));
    c.*m = *x;
  };
  return {key,
          "bool",
          "true | false",
          help,
          read,
          [](const ExperimentConfig&) {},
          [m](const ExperimentConfig& c) { return nlohmann::json(c.*m); }};
}

Field string_field(std::string key, Member<std::string> m, std::string rule, std::string help,
                   std::function<void(const ExperimentConfig&)> check) {
  auto checked = [key, m, check](const ExperimentConfig& c) {
    check_text(key, c.*m);
    check(c);
  };
  auto read = [key, m, rule](ExperimentConfig& c, const YAML::Node& node, const std::string& text) {
    if (node.IsNull()) {  // `key:` or `key=`: the empty text
      c.*m = "";
      return;
    }
    const std::optional<std::string> x = typed<std::string>(node);
    if (!x) refuse(key, "expected a text (" + rule + "), got " + got(node, text));
    check_text(key, *x);
    c.*m = *x;
  };
  return {key, "string", rule, help, read, checked, [m](const ExperimentConfig& c) {
            return nlohmann::json(c.*m);
          }};
}

template <typename E>
std::vector<std::string> spellings() {
  std::vector<std::string> out;
  for (E e : enum_values<E>())
    out.push_back(to_string(e));
  return out;
}

// An enum setting, read through YAML::convert<E> (its config spellings).
template <typename E>
Field choice_field(std::string key, Member<E> m, std::string help) {
  const std::vector<std::string> choices = spellings<E>();
  auto read = [=](ExperimentConfig& c, const YAML::Node& node, const std::string& text) {
    const std::optional<E> x = typed<E>(node);
    if (!x) refuse(key, "unknown value `" + text + "`; valid choices: " + join(choices));
    c.*m = *x;
  };
  auto check = [=](const ExperimentConfig& c) {  // an enum set in code to no named value
    const auto values = enum_values<E>();
    if (std::find(values.begin(), values.end(), c.*m) == values.end()) {
      refuse(key, "holds no valid value (" + std::to_string(static_cast<int>(c.*m)) +
                      "); valid choices: " + join(choices));
    }
  };
  return {key, "string", join(choices, " | "), help, read, check, [m](const ExperimentConfig& c) {
            return nlohmann::json(to_string(c.*m));
          }};
}

Field list_field(std::string key, Member<std::vector<int64_t>> m, int64_t lo, int64_t hi,
                 bool allow_empty, size_t max_len, const std::string& example, std::string help) {
  const std::string rule = std::string(allow_empty ? "" : "non-empty ") + "list of integers in [" +
                           std::to_string(lo) + ", " + std::to_string(hi) + "] (at most " +
                           std::to_string(max_len) + "), like " + example;
  auto check = [=](const ExperimentConfig& c) {
    if (!allow_empty && (c.*m).empty()) refuse(key, "expected a " + rule + ", got []");
    if ((c.*m).size() > max_len) {
      refuse(key, "got " + std::to_string((c.*m).size()) + " elements; expected a " + rule);
    }
    for (int64_t x : c.*m) {
      if (x < lo || x > hi) {
        refuse(key, "element " + std::to_string(x) + " out of range; expected a " + rule);
      }
    }
  };
  auto read = [=](ExperimentConfig& c, const YAML::Node& node, const std::string& text) {
    if (!node.IsSequence()) refuse(key, "expected a " + rule + ", got " + got(node, text));
    std::vector<int64_t> out;
    for (const auto& item : node) {
      if (item.IsSequence() || item.IsMap()) {
        refuse(key, "list elements must be plain values; expected a " + rule);
      }
      const std::optional<int64_t> x = typed<int64_t>(item);
      if (!x) {
        refuse(key, "element `" + shown(item) + "` of `" + text +
                        "` is not an integer; expected a " + rule);
      }
      out.push_back(*x);
    }
    c.*m = std::move(out);
  };
  return {key, "list[int]", rule, help, read, check, [m](const ExperimentConfig& c) {
            return nlohmann::json(c.*m);
          }};
}

const char* const kDeviceChoices = "valid: cpu, cuda, cuda:N (N = 0, 1, ...)";

Field device_field(std::string key, Member<Device> m, std::string help) {
  auto read = [=](ExperimentConfig& c, const YAML::Node& node, const std::string& text) {
    const std::optional<Device> x = typed<Device>(node);
    if (!x) refuse(key, "unknown device `" + text + "`; " + kDeviceChoices);
    c.*m = *x;
  };
  auto check = [=](const ExperimentConfig& c) {
    const Device& d = c.*m;
    const bool ok = d.is_cpu() ? d.index == 0 : d.is_cuda() && d.index >= 0 && d.index <= 999;
    if (!ok) refuse(key, "unknown device `" + d.str() + "`; " + kDeviceChoices);
  };
  return {key, "string", "cpu | cuda | cuda:N", help, read, check, [m](const ExperimentConfig& c) {
            return nlohmann::json((c.*m).str());
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

const std::vector<Field>& fields() {
  using C = ExperimentConfig;
  constexpr int64_t kBig = 1 << 30;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  static const std::vector<Field> table = {
      string_field("experiment_name", &C::experiment_name, "letters, digits, _ - .",
                   "name of the run, used in the default output folder", check_name),
      choice_field("benchmark", &C::benchmark,
                   "split: classes divided among tasks; permuted: a pixel permutation per task"),
      choice_field("dataset", &C::dataset, "source dataset"),
      string_field("data_dir", &C::data_dir, "folder path",
                   "folder of IDX files; empty = /usr/share/datasets/fashion-mnist "
                   "(fashion_mnist only)",
                   [](const C&) {}),
      int_field<int>("num_tasks", &C::num_tasks, 1, 1000,
                     "number of tasks (split: must divide the 10 classes)"),
      list_field("class_order", &C::class_order, 0, 9, true, 10, "[9,8,7,6,5,4,3,2,1,0]",
                 "order of classes before splitting into tasks; [] = label order (split only)"),
      choice_field("scenario", &C::scenario,
                   "til: a head per task; cil: one head over all classes seen"),
      choice_field("algorithm", &C::algorithm, "CL algorithm"),
      bool_field(
          "freeze_heads", &C::freeze_heads,
          "Fix only: stop all training after task 1 (heads too), as CLArena's newest Fix does"),
      float_field("distillation_reg_factor", &C::distillation_reg_factor, 0.0, false, kInf, true,
                  "LwF only: weight of the distillation loss on the previous model's outputs"),
      float_field("distillation_reg_temperature", &C::distillation_reg_temperature, 0.0, true, kInf,
                  true, "LwF only: temperature of the distillation softmax"),
      float_field("parameter_change_reg_factor", &C::parameter_change_reg_factor, 0.0, false, kInf,
                  true, "EWC only: weight of the Fisher-weighted parameter change penalty"),
      int_field<int>("epochs", &C::epochs, 1, 100000, "training epochs per task"),
      int_field<int>("batch_size", &C::batch_size, 1, 1 << 20, "mini-batch size"),
      choice_field("optimizer", &C::optimizer, "optimizer"),
      float_field("lr", &C::lr, 0.0, true, 10.0, false, "learning rate"),
      float_field("momentum", &C::momentum, 0.0, false, 1.0, true, "SGD momentum"),
      float_field("weight_decay", &C::weight_decay, 0.0, false, 1.0, false, "L2 weight decay"),
      choice_field("backbone", &C::backbone,
                   "mlp: CLArena's MLP (hidden_dims, batch_norm); cnn: 2 conv layers and a linear "
                   "layer to 256 features; resnet18: ResNet-18 on 1 channel, 512 features"),
      list_field("hidden_dims", &C::hidden_dims, 1, 1 << 20, false, 64, "[256,128]",
                 "MLP backbone hidden sizes (backbone=mlp only)"),
      bool_field(
          "batch_norm", &C::batch_norm,
          "batch norm after each hidden layer (backbone=mlp only; cnn and resnet18 have it)"),
      float_field("val_fraction", &C::val_fraction, 0.0, false, 1.0, true,
                  "share of each task's training data held out for validation"),
      int_field<uint64_t>("seed", &C::seed, 0, std::numeric_limits<uint64_t>::max(),
                          "run seed: initialisation, data order, permutations"),
      device_field("device", &C::device, "where to train"),
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
  throw ConfigError("unknown config key `" + printable(key) + "`; valid keys: " + join(keys()));
}

// Reads `node`, the value of `key` (`text` as written), into cfg through the key's field.
void set_value(ExperimentConfig& cfg, const std::string& key, const YAML::Node& node,
               const std::string& text) {
  const Field& f = find_field(key);
  f.read(cfg, node, printable(text));
  f.check(cfg);
}

std::string node_kind(const YAML::Node& node) {
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  if (node.IsNull()) return "an empty (null) key";
  return "a node that is not a plain value";
}

[[noreturn]] void too_deep(const std::string& name, int depth, size_t line, size_t column) {
  throw ConfigError("config file '" + name + "': nesting deeper than " + std::to_string(depth) +
                    " levels at line " + std::to_string(line) + ", column " +
                    std::to_string(column) +
                    "; a config holds `key: value` lines whose values are plain values or "
                    "lists of them");
}

// Refuses YAML nested deeper than kMaxYamlDepth before the (recursive) parser sees it. The
// depth of a line is its open block indentation levels, its compact entries ("- - x") and
// the flow brackets open at that point, quoted text and comments left out: an upper bound
// that only a file far from a config (which needs 2 levels) can reach.
// `fail(line, column)` throws at the first place too deep.
void check_nesting(const std::string& text, const std::function<void(size_t, size_t)>& fail) {
  std::vector<size_t> indents;  // indentation of the block levels open at this line
  int flow = 0;                 // open [ and {
  char quote = 0;               // ' or " inside a quoted scalar (which may span lines)
  size_t line_no = 1;
  for (size_t pos = 0; pos <= text.size(); ++line_no) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t i = 0;
    int block = static_cast<int>(indents.size());
    const size_t indent = line.find_first_not_of(' ');
    if (flow == 0 && quote == 0 && indent != std::string_view::npos && line[indent] != '#') {
      while (!indents.empty() && indents.back() >= indent)
        indents.pop_back();
      indents.push_back(indent);
      block = static_cast<int>(indents.size());
      i = indent;
      while (i < line.size() && (line[i] == '-' || line[i] == '?') &&
             (i + 1 == line.size() || line[i + 1] == ' ' || line[i + 1] == '\t')) {
        ++block;
        i = std::min(line.size(), line.find_first_not_of(" \t", i + 1));
      }
    }
    if (block + flow > kMaxYamlDepth) fail(line_no, i + 1);
    for (; i < line.size(); ++i) {
      const char ch = line[i];
      if (quote) {
        if (quote == '"' && ch == '\\') {
          ++i;
        } else if (ch == quote) {
          if (quote == '\'' && i + 1 < line.size() && line[i + 1] == '\'') {
            ++i;
          } else {
            quote = 0;
          }
        }
        continue;
      }
      const char before = i == 0 ? ' ' : line[i - 1];
      const bool token_start = before == ' ' || before == '\t' || before == '[' || before == '{' ||
                               before == ',' || before == ':';
      if (ch == '#' && (before == ' ' || before == '\t')) break;
      if ((ch == '"' || ch == '\'') && token_start) {
        quote = ch;
      } else if (ch == '[' || ch == '{') {
        if (block + ++flow > kMaxYamlDepth) fail(line_no, i + 1);
      } else if ((ch == ']' || ch == '}') && flow > 0) {
        --flow;
      }
    }
  }
}

std::string read_config_text(const fs::path& file) {
  const std::string name = file.string();
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) {
    throw IOError("config file '" + name + "' does not exist or is not a file");
  }
  auto too_big = [&](uintmax_t bytes) {
    throw ConfigError("config file '" + name + "' holds " + std::to_string(bytes) +
                      " bytes; a config file is at most " + std::to_string(kMaxConfigBytes) +
                      " bytes of `key: value` lines");
  };
  const uintmax_t size = fs::file_size(file, ec);
  if (!ec && size > kMaxConfigBytes) too_big(size);
  std::ifstream in(file, std::ios::binary);
  if (!in) throw IOError("config file '" + name + "' cannot be read: " + std::strerror(errno));
  std::string text;
  char buf[1 << 14];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxConfigBytes) too_big(text.size());
  }
  if (in.bad()) throw IOError("config file '" + name + "': read error");
  return text;
}

// Parameters of the largest model `cfg` builds: a backbone (one per task for Independent)
// on MNIST-sized inputs and heads over every class of every task.
double model_parameters(const ExperimentConfig& cfg) {
  double backbone = 0;
  double in = static_cast<double>(kNominalInputs);
  switch (cfg.backbone) {
    case BackboneKind::MLP:
      for (int64_t h : cfg.hidden_dims) {
        backbone += in * static_cast<double>(h) + static_cast<double>(h);
        in = static_cast<double>(h);
      }
      break;
    case BackboneKind::CNN:  // fixed layouts (nn/backbones.h; docs/algorithms.md)
      backbone = kCnnParameters;
      in = 256;
      break;
    case BackboneKind::ResNet18:
      backbone = kResNet18Parameters;
      in = 512;
      break;
  }
  const double classes = static_cast<double>(kClassesPerDataset) *
                         (cfg.benchmark == Benchmark::Permuted ? cfg.num_tasks : 1);
  const double heads = classes * (in + 1);
  switch (cfg.algorithm) {
    case Algorithm::Independent:  // a backbone per task
      return backbone * cfg.num_tasks + heads;
    case Algorithm::LwF:  // and the teacher, a copy of both
      return 2 * (backbone + heads);
    case Algorithm::EWC:  // and per task a Fisher and θ* of the backbone
      return backbone * (1 + 2.0 * cfg.num_tasks) + heads;
    default:
      return backbone + heads;
  }
}

}  // namespace

// ---- enum spellings ----

namespace {
constexpr Benchmark kBenchmarks[] = {Benchmark::Split, Benchmark::Permuted};
constexpr Scenario kScenarios[] = {Scenario::TIL, Scenario::CIL};
constexpr Algorithm kAlgorithms[] = {Algorithm::Finetuning, Algorithm::Fix, Algorithm::Independent,
                                     Algorithm::Random,     Algorithm::LwF, Algorithm::EWC};
constexpr OptimizerKind kOptimizers[] = {OptimizerKind::SGD, OptimizerKind::Adam};
constexpr Dataset kDatasets[] = {Dataset::FashionMnist, Dataset::Mnist};
constexpr BackboneKind kBackbones[] = {BackboneKind::MLP, BackboneKind::CNN,
                                       BackboneKind::ResNet18};
}  // namespace

template <>
std::span<const Benchmark> enum_values<Benchmark>() {
  return kBenchmarks;
}
template <>
std::span<const Scenario> enum_values<Scenario>() {
  return kScenarios;
}
template <>
std::span<const Algorithm> enum_values<Algorithm>() {
  return kAlgorithms;
}
template <>
std::span<const OptimizerKind> enum_values<OptimizerKind>() {
  return kOptimizers;
}
template <>
std::span<const Dataset> enum_values<Dataset>() {
  return kDatasets;
}
template <>
std::span<const BackboneKind> enum_values<BackboneKind>() {
  return kBackbones;
}

std::string to_string(Benchmark b) {
  switch (b) {
    case Benchmark::Split:
      return "split";
    case Benchmark::Permuted:
      return "permuted";
  }
  return "?";
}

std::string to_string(Scenario s) {
  switch (s) {
    case Scenario::TIL:
      return "til";
    case Scenario::CIL:
      return "cil";
  }
  return "?";
}

std::string to_string(Algorithm a) {
  switch (a) {
    case Algorithm::Finetuning:
      return "finetuning";
    case Algorithm::Fix:
      return "fix";
    case Algorithm::Independent:
      return "independent";
    case Algorithm::Random:
      return "random";
    case Algorithm::LwF:
      return "lwf";
    case Algorithm::EWC:
      return "ewc";
  }
  return "?";
}

std::string to_string(OptimizerKind o) {
  switch (o) {
    case OptimizerKind::SGD:
      return "sgd";
    case OptimizerKind::Adam:
      return "adam";
  }
  return "?";
}

std::string to_string(Dataset d) {
  switch (d) {
    case Dataset::FashionMnist:
      return "fashion_mnist";
    case Dataset::Mnist:
      return "mnist";
  }
  return "?";
}

std::string to_string(BackboneKind b) {
  switch (b) {
    case BackboneKind::MLP:
      return "mlp";
    case BackboneKind::CNN:
      return "cnn";
    case BackboneKind::ResNet18:
      return "resnet18";
  }
  return "?";
}

std::string algorithm_name(Algorithm a) {
  switch (a) {
    case Algorithm::Finetuning:
      return "Finetuning";
    case Algorithm::Fix:
      return "Fix";
    case Algorithm::Independent:
      return "Independent";
    case Algorithm::Random:
      return "Random";
    case Algorithm::LwF:
      return "LwF";
    case Algorithm::EWC:
      return "EWC";
  }
  return "?";
}

// ---- loading ----

ExperimentConfig load_config(const std::filesystem::path& yaml_file) {
  const std::string name = yaml_file.string();
  const std::string text = read_config_text(yaml_file);
  check_nesting(text,
                [&](size_t line, size_t column) { too_deep(name, kMaxYamlDepth, line, column); });
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::DeepRecursion& e) {  // not reached after check_nesting; kept as a guard
    too_deep(name, e.depth() - 1, static_cast<size_t>(e.mark.line + 1),
             static_cast<size_t>(e.mark.column + 1));
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
    const YAML::Mark mark = kv.first.Mark().is_null() ? kv.second.Mark() : kv.first.Mark();
    const std::string where = "config file '" + name + "', line " +
                              (mark.is_null() ? "?" : std::to_string(mark.line + 1)) + ": ";
    if (!kv.first.IsScalar()) {
      throw ConfigError(where + "a key must be a plain name such as `epochs`, got " +
                        node_kind(kv.first) + "; valid keys: " + join(keys()));
    }
    const std::string key = kv.first.Scalar();
    try {
      if (!seen.insert(key).second) refuse(key, "given twice");
      set_value(cfg, key, kv.second, shown(kv.second));
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
  const std::string key = trim(key_eq_value.substr(0, eq));
  const std::string value = key_eq_value.substr(eq + 1);
  const Field& f = find_field(key);
  // The same limits as a file's, checked before yaml-cpp parses the value.
  check_text(key, value);
  if (value.size() > kMaxConfigBytes) {
    refuse(key, "value of " + std::to_string(value.size()) + " bytes; at most " +
                    std::to_string(kMaxConfigBytes) + " are read");
  }
  check_nesting(value, [&](size_t, size_t column) {
    refuse(key, "value nested deeper than " + std::to_string(kMaxYamlDepth) + " levels at column " +
                    std::to_string(column) + "; expected " + f.rule);
  });
  YAML::Node node;
  try {
    node = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    const std::string at =
        e.mark.is_null() ? "" : " at column " + std::to_string(e.mark.column + 1);
    refuse(key,
           "value `" + value + "` is not a YAML value (" + e.msg + at + "); expected " + f.rule);
  }
  set_value(cfg, key, node, trim(value));
}

std::vector<Algorithm> parse_algorithm_list(const std::string& key, const std::string& text) {
  const std::string rule = "non-empty list of algorithms, like [finetuning,fix,lwf,ewc]; valid: " +
                           join(spellings<Algorithm>());
  try {
    check_text(key, text);
  } catch (const ConfigError&) {
    refuse_argument(key,
                    "value `" + printable(text) + "` is not UTF-8 text without control characters");
  }
  check_nesting(text, [&](size_t, size_t column) {
    refuse_argument(key, "value nested deeper than " + std::to_string(kMaxYamlDepth) +
                             " levels at column " + std::to_string(column) + "; expected a " +
                             rule);
  });
  YAML::Node node;
  try {
    node = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    refuse_argument(key,
                    "value `" + text + "` is not a YAML value (" + e.msg + "); expected a " + rule);
  }
  if (!node.IsSequence() || node.size() == 0)
    refuse_argument(key, "expected a " + rule + ", got `" + printable(trim(text)) + "`");
  std::vector<Algorithm> out;
  for (const auto& item : node) {
    const std::optional<Algorithm> a = typed<Algorithm>(item);
    if (!a)
      refuse_argument(key,
                      "unknown algorithm `" + printable(shown(item)) + "`; expected a " + rule);
    if (std::find(out.begin(), out.end(), *a) != out.end())
      refuse_argument(key, "`" + to_string(*a) + "` is listed twice");
    out.push_back(*a);
  }
  return out;
}

void validate(const ExperimentConfig& cfg) {
  for (const Field& f : fields())
    f.check(cfg);
  if (cfg.dataset == Dataset::Mnist && cfg.data_dir.empty()) {
    refuse("data_dir",
           "dataset=mnist has no default location; set data_dir= to a folder of "
           "MNIST-format IDX files (train-images-idx3-ubyte[.gz], ...)");
  }
  if (cfg.benchmark == Benchmark::Split) {
    try {
      make_split(10, cfg.num_tasks, cfg.class_order);
    } catch (const ConfigError&) {
      throw;
    } catch (const ValueError& e) {
      throw ConfigError("config keys `num_tasks` / `class_order` (benchmark=split): " +
                        std::string(e.what()));
    }
  } else if (!cfg.class_order.empty()) {
    refuse("class_order", "applies only to benchmark=split; leave it [] for benchmark=" +
                              to_string(cfg.benchmark));
  }
  // The MLP's keys mean nothing to the fixed convolutional layouts: a value other than the
  // default would be ignored without a word, so it is refused.
  if (cfg.backbone != BackboneKind::MLP) {
    const ExperimentConfig defaults;
    if (cfg.hidden_dims != defaults.hidden_dims)
      refuse("hidden_dims", "applies only to backbone=mlp; backbone=" + to_string(cfg.backbone) +
                                " has a fixed layout (leave hidden_dims at its default)");
    if (cfg.batch_norm != defaults.batch_norm)
      refuse("batch_norm", "applies only to backbone=mlp; backbone=" + to_string(cfg.backbone) +
                               " always has batch norm (leave batch_norm at its default)");
  }
  const double parameters = model_parameters(cfg);
  if (parameters > kMaxParameters) {
    char count[32];
    std::snprintf(count, sizeof count, "%.3g", parameters);
    const bool mlp = cfg.backbone == BackboneKind::MLP;
    std::string msg = mlp ? "[" : to_string(cfg.backbone);
    for (size_t i = 0; mlp && i < cfg.hidden_dims.size(); ++i)
      msg.append(i ? "," : "").append(std::to_string(cfg.hidden_dims[i]));
    msg.append(mlp ? "] with algorithm=" : " with algorithm=")
        .append(to_string(cfg.algorithm))
        .append(", benchmark=");
    msg.append(to_string(cfg.benchmark))
        .append(", num_tasks=")
        .append(std::to_string(cfg.num_tasks));
    msg.append(" makes a model of about ").append(count).append(" parameters on 28x28 images; ");
    msg.append("at most ").append(std::to_string(static_cast<int64_t>(kMaxParameters)));
    refuse(mlp ? "hidden_dims" : "backbone", msg.append(" (4 GiB of float32) are allowed"));
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

void check_output_dir(const std::filesystem::path& dir) {
  const std::string name = dir.string();
  auto fail = [&](const std::string& what) -> void {
    throw IOError("output_dir '" + name + "' " + what);
  };
  if (dir.empty()) fail("is empty");
  std::error_code ec;
  fs::path abs = fs::absolute(dir, ec);
  if (!ec) abs = fs::weakly_canonical(abs, ec);  // symbolic links of existing parts resolved
  if (ec) fail("cannot be resolved: " + ec.message());
  auto part = abs.begin();
  if (part != abs.end()) ++part;  // past the root
  if (part != abs.end() && (*part == "proc" || *part == "sys")) {
    const std::string resolved = abs == dir ? "" : " (as '" + abs.string() + "')";
    fail("lies under /" + part->string() + resolved +
         ", a kernel file system that cannot hold results; choose a folder on a disk");
  }
  // The deepest part that exists: the folder itself, or the parent its folders go under.
  fs::path existing = abs;
  while (!fs::exists(fs::status(existing, ec)) && existing.has_relative_path())
    existing = existing.parent_path();
  if (!fs::is_directory(fs::status(existing, ec))) {
    if (existing == abs) fail("is a file, not a folder");
    fail("cannot be created: '" + existing.string() + "' is a file, not a folder");
  }
  if (::access(existing.c_str(), W_OK | X_OK) != 0) {
    const std::string why = std::strerror(errno);
    if (existing == abs) fail("cannot be written: " + why);
    fail("cannot be created in '" + existing.string() + "': " + why);
  }
  if (existing == abs) {
    const fs::path checkpoint = abs / "checkpoint";
    const auto st = fs::status(checkpoint, ec);
    if (fs::exists(st) && !fs::is_directory(st)) {
      fail("holds a file '" + checkpoint.string() + "' where the checkpoint folder goes");
    }
  }
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
