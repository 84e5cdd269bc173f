// XXH64 (Yann Collet's xxHash, 64-bit variant), streaming, and the
// little-endian loads and stores it and the checkpoint header use.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tfm::train {

uint64_t load_le64(const unsigned char* p);
uint32_t load_le32(const unsigned char* p);
void store_le64(unsigned char* p, uint64_t v);

// Feed bytes with update() in any pieces; digest() equals XXH64(seed) of
// their concatenation (tests/test_checkpoint.cpp checks reference vectors).
class Xxh64 {
 public:
  explicit Xxh64(uint64_t seed = 0);
  void update(const void* data, std::size_t n);
  uint64_t digest() const;

 private:
  static constexpr uint64_t kP1 = 0x9E3779B185EBCA87ULL, kP2 = 0xC2B2AE3D27D4EB4FULL, kP3 = 0x165667B19E3779F9ULL,
                            kP4 = 0x85EBCA77C2B2AE63ULL, kP5 = 0x27D4EB2F165667C5ULL;
  static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
  static uint64_t round(uint64_t acc, uint64_t in) { return rotl(acc + in * kP2, 31) * kP1; }
  void stripe(const unsigned char* p);
  uint64_t seed_;
  uint64_t v_[4];
  uint64_t total_ = 0;
  unsigned char buf_[32] = {};
  std::size_t buffered_ = 0;
};

}  // namespace tfm::train
