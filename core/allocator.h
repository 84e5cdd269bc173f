// Caching allocator for tensor storage and the tensor-memory tracker.
//
// Memory comes from the OS in segments (mmap) that are never handed back
// while training runs in steady state: on these machines a page fault costs
// about 10 µs per 4 KiB, more than the arithmetic of a small training step,
// and translation batches change shape at every step. As in PyTorch's CUDA
// caching allocator, a segment is cut into blocks:
//   - requests are rounded up to 512 bytes; those under 1 MiB (the small
//     pool) are carved from 2 MiB segments, larger ones (the large pool)
//     from 20 MiB segments when under 10 MiB, otherwise from a segment of
//     their own size rounded up to 2 MiB;
//   - a request takes the smallest free block of its pool that fits (best
//     fit), split in two when the rest is worth keeping (at least 512 bytes
//     in the small pool, more than 1 MiB in the large one); a small request
//     that finds no block in its pool takes the best fit of the large pool
//     (the translator's small tensors need more room for some batch shapes
//     while the large pool holds hundreds of free MiB between its peaks);
//   - a freed block is merged with its free neighbours in the segment, so a
//     later request of another shape finds the space again.
// Only a miss (no free block fits) maps a new segment. The cache is bounded:
// when a miss would take the reserved total past the limit (twice the
// largest live set seen, at least 256 MiB or set_cache_limit()), segments
// that are entirely free go back to the OS first, largest first. When the
// OS refuses, every free segment goes back and the mapping is tried once
// more before tfm::Error ("out of memory: allocating N bytes ...").
// Every block is 512-byte aligned (so at least the 64 bytes kernels need).
//
// Thread safety: allocate/release take a mutex; they may be called from any
// thread, but tensors are normally created on the main thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>

#include "core/error.h"

namespace tfm::core {

struct MemoryStats {
  int64_t current_bytes = 0;   // bytes held by live tensor storages (requested sizes)
  int64_t peak_bytes = 0;      // maximum of current_bytes since start or reset_peak_memory()
  int64_t cached_bytes = 0;    // bytes in free blocks, ready for reuse
  int64_t reserved_bytes = 0;  // all bytes in segments obtained from the OS and not yet released
  int64_t peak_reserved_bytes = 0;  // maximum of reserved_bytes since start
  int64_t allocations = 0;     // number of allocate() calls
  int64_t cache_hits = 0;      // allocate() calls served from a free block (no new segment)
  int64_t splits = 0;          // free blocks cut in two to serve a smaller request
  int64_t merges = 0;          // freed blocks merged with a free neighbour
  int64_t os_allocs = 0;       // segments obtained from the OS (mmap)
  int64_t os_frees = 0;        // segments given back to the OS (limit, out of memory or empty_cache)
  int64_t segments = 0;        // segments held now
  int64_t reserved_limit = 0;  // a miss frees whole free segments rather than pass this (plus the new segment)
};

// Returns a 512-byte-aligned block of at least `bytes` bytes (bytes may be 0).
// Throws tfm::Error naming the size when the OS refuses the memory.
void* allocate(std::size_t bytes);
// Gives back a block from allocate(); `bytes` must be the size it was asked for.
void release(void* ptr, std::size_t bytes);

MemoryStats memory_stats();
void reset_peak_memory();
// Returns all entirely free segments to the OS.
void empty_cache();
// Sets the floor of the reserved limit (default 256 MiB; 0 restores it).
// For tests and experiments that need to see the limit at work.
void set_cache_limit(int64_t bytes);
// Walks every segment and checks the allocator's bookkeeping: blocks tile
// their segment exactly, no two free blocks are neighbours, every free block
// is findable in its pool, and the byte counters match the blocks. Throws
// tfm::Error naming the first violation. For tests; O(number of blocks).
void check_allocator();

// "tensor memory in use: X MiB (reserved Y MiB)", for out-of-memory messages.
std::string memory_summary();

// Runs f() and turns a std::bad_alloc escaping it (memory outside tensor
// storage: a std::vector or std::string growing while reading data,
// training a tokenizer, decoding) into tfm::Error "out of memory while
// WHAT (...)". A tfm::Error thrown inside passes unchanged, so the innermost
// context, which names the allocation best, is the one reported.
template <class F>
decltype(auto) with_oom_context(const std::string& what, F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    detail::throw_error("out of memory while ", what, " (std::bad_alloc: the system refused memory outside tensor storage; ",
                        memory_summary(), ")");
  }
}

}  // namespace tfm::core
