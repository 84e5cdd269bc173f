// Caching allocator for tensor storage and the tensor-memory tracker.
//
// Freed blocks go back to a per-size free list and are handed out again
// instead of being returned to the OS: on these machines a page fault costs
// about 10 µs per 4 KiB, more than the arithmetic of a small training step.
// Sizes are rounded to classes (at most 1/8 waste) so that blocks of
// slightly different sizes share a list, and a request takes the smallest
// cached block that fits if it is less than twice its size. The cache is
// bounded: when a miss would take the reserved total past twice the largest
// live set seen (or 256 MiB), the largest cached blocks go back to the OS
// first. Every block is 64-byte aligned.
//
// Thread safety: allocate/release take a mutex; they may be called from any
// thread, but tensors are normally created on the main thread only.
#pragma once

#include <cstddef>
#include <cstdint>

namespace tfm::core {

struct MemoryStats {
  int64_t current_bytes = 0;  // bytes held by live tensor storages (requested sizes)
  int64_t peak_bytes = 0;     // maximum of current_bytes since start or reset_peak_memory()
  int64_t cached_bytes = 0;   // bytes in free lists, ready for reuse
  int64_t reserved_bytes = 0; // all bytes obtained from the OS and not yet released
  int64_t allocations = 0;    // number of allocate() calls
  int64_t cache_hits = 0;     // allocate() calls served from a free list
  int64_t released_blocks = 0; // cached blocks given back to the OS (limit or empty_cache)
  int64_t os_allocs = 0;      // blocks obtained from the OS (mmap or malloc)
  int64_t os_frees = 0;       // blocks given back to the OS
  int64_t reserved_limit = 0; // a miss frees cached blocks rather than pass this (plus the new block)
};

// Returns a 64-byte-aligned block of at least `bytes` bytes (bytes may be 0).
void* allocate(std::size_t bytes);
// Gives back a block from allocate(); `bytes` must be the size it was asked for.
void release(void* ptr, std::size_t bytes);

MemoryStats memory_stats();
void reset_peak_memory();
// Returns all cached (free) blocks to the OS.
void empty_cache();

}  // namespace tfm::core
