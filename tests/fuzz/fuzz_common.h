// Shared by the libFuzzer harnesses: a scratch folder for the files the loaders read (they
// take paths), and the rule every harness enforces.
//
// The rule: on any input a loader returns or throws one of the library's typed errors
// (clarena::Error). Anything else is a finding: a crash or sanitizer report, a leak, a hang,
// an allocation beyond the fuzzer's limit, or another exception type escaping (std::
// length_error, nlohmann::json::exception, YAML::Exception...), which reaches
// std::terminate and aborts.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "clarena/core/errors.h"

namespace clarena::fuzz {

/// A private folder under $TMPDIR (or /tmp), made once per process and removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    namespace fs = std::filesystem;
    std::string tmpl = (fs::temp_directory_path() / "clarena_fuzz_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) std::abort();
    static std::string to_remove;
    to_remove = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(to_remove, ec);
    });
    return fs::path(tmpl);
  }();
  return dir;
}

/// Writes `bytes` to scratch_dir()/name (replacing it) and returns its path.
inline std::filesystem::path write_file(const std::string& name, std::string_view bytes) {
  const std::filesystem::path file = scratch_dir() / name;
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) std::abort();  // the harness itself failed: not a finding about the library
  return file;
}

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

/// Aborts with a message: a property of a loaded file did not hold (libFuzzer saves the input).
[[noreturn]] inline void violated(const char* what) {
  std::fprintf(stderr, "fuzz property violated: %s\n", what);
  std::abort();
}

}  // namespace clarena::fuzz
