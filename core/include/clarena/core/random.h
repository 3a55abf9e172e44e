// A seeded, platform-independent generator (xoshiro256** seeded through SplitMix64), used for
// every random draw of the library: initialisation, data order, permutations. The standard
// library's distributions and std::shuffle differ between implementations; these do not.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace clarena {

class Generator {
 public:
  /// State filled from SplitMix64(seed).
  explicit Generator(uint64_t seed = 0);
  /// A raw xoshiro256** state (not all zero), e.g. to check against reference outputs.
  explicit Generator(const std::array<uint64_t, 4>& state);

  uint64_t next_u64();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Standard normal (Box–Muller; both values of each pair are used).
  double normal();
  /// Uniform integer in [0, n), unbiased (rejection sampling); n must be > 0.
  uint64_t below(uint64_t n);

  /// Fisher–Yates shuffle in place.
  template <typename T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i)
      std::swap(v[i - 1], v[static_cast<size_t>(below(i))]);
  }

  /// An independent seed for one stream of draws (`stream` tags its use, a and b index it),
  /// e.g. (run seed, head stream, task) or (run seed, epoch stream, task, epoch).
  static uint64_t derive(uint64_t seed, uint64_t stream, uint64_t a = 0, uint64_t b = 0);

 private:
  uint64_t s_[4];
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace clarena
