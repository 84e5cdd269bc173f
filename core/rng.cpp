#include "rng.h"

#include <algorithm>

namespace tfm::core {

std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n1 = static_cast<uint32_t>(p1);
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    const uint32_t n3 = static_cast<uint32_t>(p0);
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += kW0;
    k1 += kW1;
  }
  return {c0, c1, c2, c3};
}

void philox4x32_fill(uint64_t key, uint64_t first, int64_t blocks, uint32_t* out) {
  // The same rounds as philox4x32 on kLanes counters at once, kept in
  // separate arrays (structure of arrays) so the compiler vectorises the
  // 32×32→64-bit products across counters.
  constexpr int kLanes = 16;
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int64_t base = 0; base < blocks; base += kLanes) {
    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, blocks - base));
    uint32_t c0[kLanes], c1[kLanes], c2[kLanes] = {}, c3[kLanes] = {};
    for (int i = 0; i < kLanes; ++i) {
      const uint64_t counter = first + static_cast<uint64_t>(base + i);
      c0[i] = static_cast<uint32_t>(counter);
      c1[i] = static_cast<uint32_t>(counter >> 32);
    }
    uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
    for (int round = 0; round < 10; ++round) {
#pragma omp simd
      for (int i = 0; i < kLanes; ++i) {
        const uint64_t p0 = static_cast<uint64_t>(kM0) * c0[i];
        const uint64_t p1 = static_cast<uint64_t>(kM1) * c2[i];
        c0[i] = static_cast<uint32_t>(p1 >> 32) ^ c1[i] ^ k0;
        c1[i] = static_cast<uint32_t>(p1);
        c2[i] = static_cast<uint32_t>(p0 >> 32) ^ c3[i] ^ k1;
        c3[i] = static_cast<uint32_t>(p0);
      }
      k0 += kW0;
      k1 += kW1;
    }
    uint32_t* o = out + 4 * base;
    for (int i = 0; i < lanes; ++i) {
      o[4 * i] = c0[i];
      o[4 * i + 1] = c1[i];
      o[4 * i + 2] = c2[i];
      o[4 * i + 3] = c3[i];
    }
  }
}

float Generator::next_uniform() { return bits_to_unit_float(philox4x32(seed_, reserve(1))[0]); }

uint64_t Generator::next_u64() {
  auto r = philox4x32(seed_, reserve(1));
  return (static_cast<uint64_t>(r[0]) << 32) | r[1];
}

}  // namespace tfm::core
