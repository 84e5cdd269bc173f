// Counter-based random numbers (Philox-4x32-10, Salmon et al., SC'11).
//
// A Generator is just (seed, offset). A consumer reserves a range of
// counters and derives value i from (seed, first + i) alone, so results do
// not depend on thread count or scheduling, and replaying a range (dropout
// in backward, recomputation in reversible layers) gives the same numbers.
// The state is two integers, which checkpoints store exactly.
//
// Replaying a stream (recomputing a forward in backward):
//   const RngState start = gen.state();   // before the forward
//   ... forward draws from gen ...
//   { RngReplayGuard replay(gen, start);   // later, e.g. inside backward
//     ... the recomputation draws the very same numbers ... }
//   // gen is back where it was before the guard
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

// A generator's position: value i of a consumer's range depends only on
// (seed, counter), so these two integers replay everything drawn after them.
struct RngState {
  uint64_t seed = 0;
  uint64_t offset = 0;
  bool operator==(const RngState&) const = default;
};

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t offset() const { return offset_; }
  void set_state(uint64_t seed, uint64_t offset) { seed_ = seed; offset_ = offset; }
  RngState state() const { return {seed_, offset_}; }
  void set_state(const RngState& s) { set_state(s.seed, s.offset); }
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

// Sets `gen` to a captured state for a scope (the recomputation draws the
// same numbers as the original forward did from that state) and, on exit,
// also when unwinding, puts it back to the state it had when the guard was
// made, so draws after the original forward are not disturbed. Guards of one
// generator must nest (each restores what it found).
class RngReplayGuard {
 public:
  RngReplayGuard(Generator& gen, const RngState& replay_from) : gen_(gen), resume_(gen.state()) {
    gen_.set_state(replay_from);
  }
  ~RngReplayGuard() { gen_.set_state(resume_); }
  RngReplayGuard(const RngReplayGuard&) = delete;
  RngReplayGuard& operator=(const RngReplayGuard&) = delete;
  // Where the generator goes back to on exit.
  const RngState& resume_state() const { return resume_; }

 private:
  Generator& gen_;
  RngState resume_;
};

}  // namespace tfm::core
