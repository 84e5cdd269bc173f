#include "allocator.h"

#include "core/error.h"

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include <sys/mman.h>

namespace tfm::core {
namespace {

constexpr std::size_t kAlignment = 64;
// The cache may always hold this much, however small the live set.
constexpr int64_t kMinCacheLimit = int64_t{256} << 20;

// Rounds up so that only the three bits below the leading one may be set
// (classes 8, 9, ..., 15, 16, 18, 20, ... times a power of two): at most
// 12.5% waste, and nearby sizes share a free list. Minimum 64 bytes.
std::size_t size_class(std::size_t bytes) {
  if (bytes <= kAlignment) return kAlignment;
  int lead = 63 - __builtin_clzll(bytes);
  std::size_t step = lead >= 3 ? (std::size_t{1} << (lead - 3)) : 1;
  std::size_t rounded = (bytes + step - 1) / step * step;
  return (rounded + kAlignment - 1) / kAlignment * kAlignment;
}

// Each block carries its size class in a header just before the pointer
// handed out, so a block can serve a smaller request and still go back to
// its own list.
constexpr std::size_t kHeader = kAlignment;

std::size_t& header_of(void* p) { return *reinterpret_cast<std::size_t*>(static_cast<char*>(p) - kHeader); }

struct Cache {
  std::mutex mu;
  std::map<std::size_t, std::vector<void*>> free_lists;  // by block size; no empty lists
  MemoryStats stats;
  int64_t max_live = 0;  // largest current_bytes ever (not reset by reset_peak_memory)
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked on purpose: outlives static tensors
  return *c;
}

// Blocks from 1 MiB up are mapped directly, one page in front holding the
// header: unmapping gives them back to the OS at once. Through malloc they
// would raise glibc's dynamic mmap threshold and end up on its heap, where
// freed memory stays resident (a long translation run grew by >1 GB so).
constexpr std::size_t kMapMin = std::size_t{1} << 20;
constexpr std::size_t kPage = 4096;

void* os_alloc(std::size_t cls) {
  if (cls >= kMapMin) {
    void* base = ::mmap(nullptr, cls + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return base == MAP_FAILED ? nullptr : static_cast<char*>(base) + kPage;
  }
  void* raw = std::aligned_alloc(kAlignment, cls + kHeader);
  return raw ? static_cast<char*>(raw) + kHeader : nullptr;
}

void os_free(void* p, std::size_t cls) {
  if (cls >= kMapMin) {
    ::munmap(static_cast<char*>(p) - kPage, cls + kPage);
  } else {
    std::free(static_cast<char*>(p) - kHeader);
  }
}

// Reserved memory a miss may not take the total past (see allocator.h).
int64_t reserved_limit(const Cache& c) { return std::max<int64_t>(2 * c.max_live, kMinCacheLimit); }

void free_block(Cache& c, std::map<std::size_t, std::vector<void*>>::iterator it) {
  void* p = it->second.back();
  it->second.pop_back();
  c.stats.reserved_bytes -= static_cast<int64_t>(it->first);
  c.stats.cached_bytes -= static_cast<int64_t>(it->first);
  c.stats.released_blocks++;
  c.stats.os_frees++;
  os_free(p, it->first);
  if (it->second.empty()) c.free_lists.erase(it);
}

}  // namespace

void* allocate(std::size_t bytes) {
  const std::size_t cls = size_class(bytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.allocations++;
  c.stats.current_bytes += static_cast<int64_t>(bytes);
  c.stats.peak_bytes = std::max(c.stats.peak_bytes, c.stats.current_bytes);
  c.max_live = std::max(c.max_live, c.stats.current_bytes);
  // Best fit: the smallest cached block that holds the request and is less
  // than twice its size (a larger one stays for a larger request).
  auto it = c.free_lists.lower_bound(cls);
  if (it != c.free_lists.end() && it->first < 2 * cls) {
    void* p = it->second.back();
    it->second.pop_back();
    c.stats.cached_bytes -= static_cast<int64_t>(it->first);
    if (it->second.empty()) c.free_lists.erase(it);
    c.stats.cache_hits++;
    return p;
  }
  // A miss. Keep the cache from growing without bound when shapes vary
  // (translation batches): before taking more from the OS, give back the
  // largest cached blocks while the total would pass twice the largest
  // live set seen so far.
  const int64_t limit = c.stats.reserved_limit = reserved_limit(c);
  while (!c.free_lists.empty() && c.stats.reserved_bytes + static_cast<int64_t>(cls) > limit)
    free_block(c, std::prev(c.free_lists.end()));
  void* p = os_alloc(cls);
  if (!p && !c.free_lists.empty()) {  // out of memory: give back the whole cache and try once more
    while (!c.free_lists.empty()) free_block(c, c.free_lists.begin());
    p = os_alloc(cls);
  }
  if (!p) {
    c.stats.current_bytes -= static_cast<int64_t>(bytes);
    detail::throw_error("out of memory: allocating ", bytes, " bytes (", static_cast<double>(bytes) / (1 << 30), " GiB) for a tensor failed");
  }
  header_of(p) = cls;
  c.stats.os_allocs++;
  c.stats.reserved_bytes += static_cast<int64_t>(cls);
  return p;
}

void release(void* ptr, std::size_t bytes) {
  if (!ptr) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  const std::size_t cls = header_of(ptr);
  c.stats.current_bytes -= static_cast<int64_t>(bytes);
  c.stats.cached_bytes += static_cast<int64_t>(cls);
  c.free_lists[cls].push_back(ptr);
}

MemoryStats memory_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.reserved_limit = reserved_limit(c);
  return c.stats;
}

void reset_peak_memory() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.peak_bytes = c.stats.current_bytes;
}

void empty_cache() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  while (!c.free_lists.empty()) free_block(c, c.free_lists.begin());
}

}  // namespace tfm::core
