// A seeded, platform-independent generator (xoshiro256** seeded through SplitMix64).
// The standard library's distributions differ between implementations; these do not.
#pragma once

#include <cstdint>

namespace clarena {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) { seed_(seed); }

  uint64_t next_u64();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform();
  /// Standard normal (Box–Muller; both values of each pair are used).
  double normal();
  /// Uniform integer in [0, n) without modulo bias.
  uint64_t below(uint64_t n);

  /// Mixes several values into one seed, e.g. (run seed, task, epoch).
  static uint64_t derive(uint64_t seed, uint64_t a, uint64_t b = 0);

 private:
  void seed_(uint64_t seed);
  uint64_t s_[4];
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace clarena
