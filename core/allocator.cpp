#include "allocator.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace tfm::core {
namespace {

constexpr std::size_t kAlignment = 64;

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

struct Cache {
  std::mutex mu;
  std::unordered_map<std::size_t, std::vector<void*>> free_lists;
  MemoryStats stats;
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked on purpose: outlives static tensors
  return *c;
}

}  // namespace

void* allocate(std::size_t bytes) {
  const std::size_t cls = size_class(bytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.allocations++;
  c.stats.current_bytes += static_cast<int64_t>(bytes);
  if (c.stats.current_bytes > c.stats.peak_bytes) c.stats.peak_bytes = c.stats.current_bytes;
  auto it = c.free_lists.find(cls);
  if (it != c.free_lists.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    c.stats.cached_bytes -= static_cast<int64_t>(cls);
    c.stats.cache_hits++;
    return p;
  }
  void* p = std::aligned_alloc(kAlignment, cls);
  if (!p) {
    c.stats.current_bytes -= static_cast<int64_t>(bytes);
    throw std::bad_alloc();
  }
  c.stats.reserved_bytes += static_cast<int64_t>(cls);
  return p;
}

void release(void* ptr, std::size_t bytes) {
  if (!ptr) return;
  const std::size_t cls = size_class(bytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.stats.current_bytes -= static_cast<int64_t>(bytes);
  c.stats.cached_bytes += static_cast<int64_t>(cls);
  c.free_lists[cls].push_back(ptr);
}

MemoryStats memory_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
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
  for (auto& [cls, list] : c.free_lists) {
    for (void* p : list) std::free(p);
    c.stats.reserved_bytes -= static_cast<int64_t>(cls * list.size());
    c.stats.cached_bytes -= static_cast<int64_t>(cls * list.size());
  }
  c.free_lists.clear();
}

}  // namespace tfm::core
