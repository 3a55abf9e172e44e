// Shared by the CL tests: a temporary folder per test and a small synthetic MNIST-format
// dataset written into it with write_idx, plus a config that runs a short experiment on it.
// Messages are matched with gmock (::testing::HasSubstr, ThrowsMessage<E>(HasSubstr(...))).
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "clarena/cl/config.h"
#include "clarena/cl/idx.h"
#include "clarena/core/random.h"

namespace cl_fixture {

namespace fs = std::filesystem;

/// A fresh folder named after the running test (and the process), removed on destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    for (char& c : name)
      if (c == '/') c = '_';
    path_ =
        fs::temp_directory_path() / ("clarena_cltest_" + std::to_string(::getpid()) + "_" + name);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline constexpr int64_t kSide = 28;
inline constexpr int64_t kClasses = 10;

/// Writes train-/t10k- image and label IDX files (uncompressed) into `dir`: `train` and
/// `test` images of 28x28, labels cycling through the 10 classes. Every pixel is uniform
/// noise; each class brightens its own fixed random set of pixels, so the classes can be
/// learned well above chance but not perfectly (accuracies that can move between tasks).
inline void write_synthetic_mnist(const fs::path& dir, int64_t train = 600, int64_t test = 200,
                                  uint64_t seed = 7) {
  fs::create_directories(dir);
  constexpr int64_t pixels = kSide * kSide;
  constexpr int kSignalPixels = 40, kSignal = 45;
  clarena::Generator rng(seed);  // the library's own generator: the same data everywhere
  auto any_pixel = [&] { return static_cast<size_t>(rng.below(pixels)); };
  auto noise = [&] { return static_cast<int>(rng.below(201)); };
  std::vector<std::vector<int>> boost(kClasses, std::vector<int>(pixels, 0));
  for (auto& b : boost)
    for (int k = 0; k < kSignalPixels; ++k)
      b[any_pixel()] = kSignal;

  auto make = [&](const std::string& prefix, int64_t n) {
    std::vector<uint8_t> images(static_cast<size_t>(n * pixels)), labels(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t label = i % kClasses;
      labels[static_cast<size_t>(i)] = static_cast<uint8_t>(label);
      for (int64_t k = 0; k < pixels; ++k)
        images[static_cast<size_t>(i * pixels + k)] = static_cast<uint8_t>(
            noise() + boost[static_cast<size_t>(label)][static_cast<size_t>(k)]);
    }
    clarena::cl::write_idx(dir / (prefix + "-images-idx3-ubyte"), {n, kSide, kSide}, images, false);
    clarena::cl::write_idx(dir / (prefix + "-labels-idx1-ubyte"), {n}, labels, false);
  };
  make("train", train);
  make("t10k", test);
}

/// Writes the synthetic dataset into <root>/data and returns a validated config for a short
/// Split run on it (5 tasks of 2 classes, TIL, Finetuning) with its output in <root>/out.
inline clarena::cl::ExperimentConfig synthetic_config(const fs::path& root) {
  write_synthetic_mnist(root / "data");
  clarena::cl::ExperimentConfig cfg;
  cfg.experiment_name = "synthetic";
  cfg.dataset = clarena::cl::Dataset::Mnist;
  cfg.data_dir = (root / "data").string();
  cfg.hidden_dims = {32, 32};
  cfg.epochs = 2;
  cfg.batch_size = 32;
  cfg.progress = false;
  cfg.output_dir = (root / "out").string();
  clarena::cl::validate(cfg);
  return cfg;
}

/// The whole content of a file as bytes (empty when it cannot be read).
inline std::string read_file(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// `s` quoted for the shell.
inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s)
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// Every entry under `dir`, relative, recursively.
inline std::set<std::string> tree(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    out.insert(fs::relative(e.path(), dir).string());
  return out;
}

}  // namespace cl_fixture
