// Element types and devices: the two tags every tensor carries. Part of the base, the headers
// every layer may include (kernels/ included); it knows nothing of the layers above it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace clarena {

enum class DType : uint8_t { Float32, Float64, Int64 };

inline constexpr size_t itemsize(DType t) {
  return t == DType::Float32 ? 4 : 8;
}
inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32:
      return "float32";
    case DType::Float64:
      return "float64";
    case DType::Int64:
      return "int64";
  }
  return "?";
}

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;

  static constexpr Device cpu() { return {DeviceType::CPU, 0}; }
  static constexpr Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device&) const = default;

  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
  /// Parses "cpu", "cuda" or "cuda:N"; throws ValueError otherwise.
  static Device parse(const std::string& text);
};

}  // namespace clarena
