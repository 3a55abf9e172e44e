// libFuzzer harness: the config parser (cl/src/config.cpp). The input is a YAML file, then
// optionally a line `%%` and one `key=value` override per line (as on the command line).
// A config that validates must read back unchanged from the YAML the run writes next to its
// results (config_yaml) and from its JSON form (config_from_json).
#include <string>
#include <vector>

#include "clarena/cl/config.h"
#include "fuzz_common.h"
#include "results_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace clarena;
  const std::string_view text = fuzz::as_text(data, size);
  const size_t split = text.find("\n%%\n");
  const std::string_view yaml = text.substr(0, split);
  std::vector<std::string> overrides;
  if (split != std::string_view::npos) {
    std::string_view rest = text.substr(split + 4);
    while (!rest.empty()) {
      const size_t eol = rest.find('\n');
      overrides.emplace_back(rest.substr(0, eol));
      rest = eol == std::string_view::npos ? std::string_view() : rest.substr(eol + 1);
    }
  }
  cl::ExperimentConfig cfg;
  try {
    cfg = cl::load_config(fuzz::write_file("config.yaml", yaml));
  } catch (const Error&) {
  }
  for (const std::string& o : overrides) {
    try {
      cl::apply_override(cfg, o);
    } catch (const Error&) {
    }
  }
  try {
    cl::validate(cfg);
  } catch (const Error&) {
    return 0;
  }
  const nlohmann::json j = cl::to_json(cfg);
  (void)j.dump();  // throws on invalid UTF-8 in a string setting: that is a finding too
  const cl::ExperimentConfig from_yaml =
      cl::load_config(fuzz::write_file("again.yaml", cl::config_yaml(cfg)));
  if (cl::to_json(from_yaml) != j) fuzz::violated("config_yaml did not read back unchanged");
  if (cl::to_json(cl::config_from_json(j)) != j)
    fuzz::violated("config_from_json did not read back unchanged");
  return 0;
}
