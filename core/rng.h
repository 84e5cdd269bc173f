// Counter-based random numbers (Philox-4x32-10, Salmon et al., SC'11).
//
// A Generator is just (seed, offset). A consumer reserves a range of
// counters and derives value i from (seed, first + i) alone, so results do
// not depend on thread count or scheduling, and replaying a range (dropout
// in backward, recomputation in reversible layers) gives the same numbers.
// The state is two integers, which checkpoints store exactly.
#pragma once

#include <array>
#include <cstdint>

namespace tfm::core {

// Four 32-bit random words for a (key, counter) pair.
std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter);

// The words of `blocks` consecutive counters: out[4·i + k] is word k of
// philox4x32(key, first + i). Vectorised; the bulk form for kernels.
void philox4x32_fill(uint64_t key, uint64_t first, int64_t blocks, uint32_t* out);

// Uniform float in [0, 1) from 32 random bits (24-bit mantissa precision).
inline float bits_to_unit_float(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  // Reserves `n` counter values and returns the first.
  uint64_t reserve(uint64_t n) { uint64_t first = offset_; offset_ += n; return first; }
  // One uniform float in [0, 1) (consumes one counter).
  float next_uniform();
  // One 64-bit integer (consumes one counter).
  uint64_t next_u64();

 private:
  uint64_t seed_;
  uint64_t offset_ = 0;
};

}  // namespace tfm::core
