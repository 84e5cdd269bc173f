// The caching allocator: block splitting and merging, alignment, small
// requests served from the large pool, the statistics, the reserved limit, a
// randomised alloc/free sequence that checks no block overlaps another or
// has its contents clobbered, and a steady state of varying shapes that
// takes nothing more from the OS.
#include "core/allocator.h"
#include "core/error.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <vector>

using namespace tfm::core;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

// A live block with the byte pattern it was filled with.
struct Held {
  unsigned char* p = nullptr;
  std::size_t bytes = 0;
  unsigned char seed = 0;
};

void fill(const Held& h) {
  for (std::size_t i = 0; i < h.bytes; ++i) h.p[i] = static_cast<unsigned char>(h.seed + i * 131 + (i >> 9));
}

bool intact(const Held& h) {
  for (std::size_t i = 0; i < h.bytes; ++i)
    if (h.p[i] != static_cast<unsigned char>(h.seed + i * 131 + (i >> 9))) return false;
  return true;
}

}  // namespace

TEST_CASE("the allocator splits a free block for smaller requests and merges the pieces back", "[memory][allocator]") {
  empty_cache();
  // 64 MiB gets a segment of its own; freed, it is the only free large block that big.
  void* a = allocate(64 * kMiB);
  const MemoryStats s0 = memory_stats();
  release(a, 64 * kMiB);
  void* b = allocate(30 * kMiB);  // best fit: the front of the 64 MiB block
  void* c = allocate(30 * kMiB);  // the next 30 MiB of the rest
  const MemoryStats s1 = memory_stats();
  CHECK(b == a);
  CHECK(static_cast<char*>(c) == static_cast<char*>(a) + 30 * kMiB);
  CHECK(s1.os_allocs == s0.os_allocs);
  CHECK(s1.segments == s0.segments);
  CHECK(s1.reserved_bytes == s0.reserved_bytes);
  CHECK(s1.splits >= s0.splits + 2);
  CHECK(s1.cache_hits == s0.cache_hits + 2);
  check_allocator();
  release(b, 30 * kMiB);
  release(c, 30 * kMiB);  // merges with b's block and with the 4 MiB rest
  const MemoryStats s2 = memory_stats();
  CHECK(s2.merges >= s1.merges + 2);
  check_allocator();
  void* d = allocate(64 * kMiB);  // the merged block serves the original size again
  CHECK(d == a);
  CHECK(memory_stats().os_allocs == s0.os_allocs);
  release(d, 64 * kMiB);
  empty_cache();
  CHECK(memory_stats().os_frees > s0.os_frees);
  check_allocator();
}

TEST_CASE("small requests share a segment, neighbours do not overlap, and every block is aligned", "[memory][allocator]") {
  empty_cache();
  std::vector<std::pair<char*, std::size_t>> blocks;
  const int64_t os_before = memory_stats().os_allocs;
  for (std::size_t bytes : {0, 1, 63, 64, 65, 511, 512, 513, 1000, 4096, 100000, 700000}) {
    char* p = static_cast<char*>(allocate(bytes));
    CHECK(reinterpret_cast<std::uintptr_t>(p) % 512 == 0);
    blocks.emplace_back(p, std::max<std::size_t>(bytes, 1));
  }
  // 12 requests adding up to < 1 MiB: at most one new 2 MiB small-pool segment.
  CHECK(memory_stats().os_allocs - os_before <= 1);
  std::sort(blocks.begin(), blocks.end());
  for (std::size_t i = 1; i < blocks.size(); ++i) CHECK(blocks[i - 1].first + blocks[i - 1].second <= blocks[i].first);
  check_allocator();
  for (std::size_t bytes : {0, 1, 63, 64, 65, 511, 512, 513, 1000, 4096, 100000, 700000}) {
    auto it = std::find_if(blocks.begin(), blocks.end(), [&](auto& b) { return b.second == std::max<std::size_t>(bytes, 1); });
    REQUIRE(it != blocks.end());
    release(it->first, bytes);
    blocks.erase(it);
  }
  check_allocator();
}

TEST_CASE("small requests the small pool cannot hold take free large-pool memory before the OS", "[memory][allocator]") {
  empty_cache();
  void* big = allocate(64 * kMiB);  // a segment of its own, then free
  release(big, 64 * kMiB);
  const MemoryStats s0 = memory_stats();
  // 60 blocks of 900 KiB (52.7 MiB): the small pool has nothing free (empty_cache
  // gave back its segments) and would map 2 MiB segments for them, one per two blocks.
  std::vector<Held> held;
  for (int i = 0; i < 60; ++i) {
    Held h{static_cast<unsigned char*>(allocate(900 * 1024)), 900 * 1024, static_cast<unsigned char>(i)};
    fill(h);
    held.push_back(h);
  }
  const MemoryStats s1 = memory_stats();
  CHECK(s1.os_allocs == s0.os_allocs);
  CHECK(s1.reserved_bytes == s0.reserved_bytes);
  CHECK(s1.cache_hits == s0.cache_hits + 60);
  // Most come from the freed 64 MiB block (a few may fit in small segments
  // that other live blocks keep mapped).
  int in_big = 0;
  for (const Held& h : held)
    in_big += h.p >= static_cast<unsigned char*>(big) && h.p + h.bytes <= static_cast<unsigned char*>(big) + 64 * kMiB;
  CHECK(in_big >= 40);
  check_allocator();
  for (const Held& h : held) CHECK(intact(h));
  for (const Held& h : held) release(h.p, h.bytes);
  check_allocator();
  void* again = allocate(64 * kMiB);  // the pieces merged back into the whole block
  CHECK(again == big);
  CHECK(memory_stats().os_allocs == s0.os_allocs);
  release(again, 64 * kMiB);
  empty_cache();
}

TEST_CASE("allocator statistics follow allocations, hits and the OS", "[memory][allocator]") {
  empty_cache();
  const MemoryStats s0 = memory_stats();
  void* p = allocate(3 * kMiB);  // a miss: one 20 MiB segment
  const MemoryStats s1 = memory_stats();
  CHECK(s1.allocations == s0.allocations + 1);
  CHECK(s1.current_bytes == s0.current_bytes + static_cast<int64_t>(3 * kMiB));
  CHECK(s1.peak_bytes >= s1.current_bytes);
  CHECK(s1.os_allocs == s0.os_allocs + 1);
  CHECK(s1.segments == s0.segments + 1);
  CHECK(s1.reserved_bytes == s0.reserved_bytes + static_cast<int64_t>(20 * kMiB));
  CHECK(s1.cached_bytes == s0.cached_bytes + static_cast<int64_t>(17 * kMiB));
  CHECK(s1.peak_reserved_bytes >= s1.reserved_bytes);
  release(p, 3 * kMiB);
  const MemoryStats s2 = memory_stats();
  CHECK(s2.current_bytes == s0.current_bytes);
  CHECK(s2.cached_bytes == s0.cached_bytes + static_cast<int64_t>(20 * kMiB));
  CHECK(s2.reserved_bytes == s1.reserved_bytes);  // kept for reuse
  void* q = allocate(5 * kMiB);                   // served from the cached segment
  CHECK(q == p);
  CHECK(memory_stats().cache_hits == s2.cache_hits + 1);
  CHECK(memory_stats().os_allocs == s1.os_allocs);
  release(q, 5 * kMiB);
  empty_cache();
  const MemoryStats s3 = memory_stats();
  CHECK(s3.os_frees == s2.os_frees + 1);
  CHECK(s3.reserved_bytes == s0.reserved_bytes);
  CHECK(s3.segments == s0.segments);
  REQUIRE_THROWS_AS(set_cache_limit(-1), tfm::Error);
  check_allocator();
}

TEST_CASE("a randomised alloc/free sequence never overlaps or clobbers a live block", "[memory][allocator]") {
  empty_cache();
  set_cache_limit(64 * kMiB);  // low floor: segments are also given back and remapped on the way
  std::mt19937_64 gen(20261201);
  std::vector<Held> live;
  std::size_t live_bytes = 0;
  for (int op = 0; op < 3000; ++op) {
    const bool do_alloc = live.empty() || (live.size() < 120 && gen() % 100 < 55);
    if (do_alloc) {
      // Log-uniform sizes from 1 byte to 4 MiB: both pools, splits of every kind.
      const double e = std::uniform_real_distribution<double>(0.0, 22.0)(gen);
      std::size_t bytes = static_cast<std::size_t>(std::exp2(e));
      if (live_bytes + bytes > 200 * kMiB) bytes = 4096;
      Held h{static_cast<unsigned char*>(allocate(bytes)), bytes, static_cast<unsigned char>(gen())};
      REQUIRE(reinterpret_cast<std::uintptr_t>(h.p) % 512 == 0);
      fill(h);
      live.push_back(h);
      live_bytes += bytes;
    } else {
      const std::size_t i = gen() % live.size();
      REQUIRE(intact(live[i]));
      release(live[i].p, live[i].bytes);
      live_bytes -= live[i].bytes;
      live[i] = live.back();
      live.pop_back();
    }
    if (op % 250 == 0) {
      check_allocator();
      std::map<unsigned char*, std::size_t> ranges;
      for (const Held& h : live) ranges[h.p] = std::max<std::size_t>(h.bytes, 1);
      unsigned char* end = nullptr;
      for (auto& [p, n] : ranges) {
        REQUIRE(p >= end);
        end = p + n;
      }
    }
  }
  for (const Held& h : live) {
    REQUIRE(intact(h));
    release(h.p, h.bytes);
  }
  check_allocator();
  set_cache_limit(0);
  empty_cache();
}

TEST_CASE("the reserved limit gives whole free segments back instead of growing", "[memory][allocator]") {
  empty_cache();
  // One block at a time, each larger than the last (freed) one's segment, so
  // none can be reused: without the limit (twice the largest live set, at
  // least 256 MiB) reserved memory would grow to the sum of all requests.
  const int64_t os_frees = memory_stats().os_frees;
  int64_t requested = 0;
  std::size_t block = static_cast<std::size_t>(memory_stats().reserved_limit / 8);
  for (int round = 0; round < 10; ++round, block = block * 6 / 5) {
    void* p = allocate(block);
    requested += static_cast<int64_t>(block);
    const MemoryStats s = memory_stats();
    CHECK(s.reserved_bytes <= s.reserved_limit + static_cast<int64_t>(block + 2 * kMiB));
    release(p, block);
  }
  CHECK(requested > 2 * memory_stats().reserved_limit);
  CHECK(memory_stats().os_frees > os_frees);
  check_allocator();
  empty_cache();
}

TEST_CASE("training-like steps of varying shapes take nothing new from the OS after warm-up", "[memory][allocator]") {
  empty_cache();
  // Each step allocates activations proportional to a batch's token count
  // (as a translation batch of varying shape does), frees most of them in
  // reverse order as backward does, with some parameter-gradient-sized
  // blocks living across the step. The warm-up sees the largest batch.
  std::mt19937_64 gen(7);
  const std::vector<std::size_t> per_token = {1024, 4096, 1024, 16384, 1024, 4096, 32768, 1024};  // bytes per token
  auto step = [&](std::size_t tokens) {
    std::vector<std::pair<void*, std::size_t>> acts;
    for (int layer = 0; layer < 6; ++layer)
      for (std::size_t pt : per_token) acts.emplace_back(allocate(pt * tokens), pt * tokens);
    std::vector<std::pair<void*, std::size_t>> grads;
    for (int i = 0; i < 8; ++i) grads.emplace_back(allocate(256 * 1024 + 4096 * i), 256 * 1024 + 4096 * i);
    for (auto it = acts.rbegin(); it != acts.rend(); ++it) release(it->first, it->second);
    for (auto& g : grads) release(g.first, g.second);
  };
  // Best fit leaves a little fragmentation the first time shapes mix (here
  // two more segments within the first 100 steps), then none.
  for (std::size_t tokens : {64, 128, 192, 256}) step(tokens);
  for (int i = 0; i < 100; ++i) step(std::uniform_int_distribution<std::size_t>(16, 256)(gen));
  const MemoryStats warm = memory_stats();
  for (int i = 0; i < 1000; ++i) step(std::uniform_int_distribution<std::size_t>(16, 256)(gen));
  const MemoryStats end = memory_stats();
  CHECK(end.os_allocs == warm.os_allocs);
  CHECK(end.os_frees == warm.os_frees);
  CHECK(end.reserved_bytes == warm.reserved_bytes);
  CHECK(end.cache_hits - warm.cache_hits == end.allocations - warm.allocations);
  check_allocator();
  empty_cache();
}
