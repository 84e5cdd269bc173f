#include "allocator.h"

#include "core/error.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include <sys/mman.h>

// Under AddressSanitizer, free blocks are poisoned: a kernel that reads or
// writes a tensor's storage after it was released is reported, although the
// memory stays mapped in the cache.
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define TFM_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define TFM_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define TFM_POISON(p, n) ((void)(p), (void)(n))
#define TFM_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace tfm::core {
namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kRound = 512;              // every block size is a multiple of this
constexpr std::size_t kSmallMax = kMiB;          // requests below this use the small pool
constexpr std::size_t kSmallSegment = 2 * kMiB;  // small-pool segment
constexpr std::size_t kMediumMax = 10 * kMiB;    // large requests below this share 20 MiB segments
constexpr std::size_t kMediumSegment = 20 * kMiB;
constexpr std::size_t kLargeRound = 2 * kMiB;    // larger requests: own segment, rounded to this
constexpr std::size_t kLargeSplitMin = kMiB;     // a large-pool block is split only if more than this remains
constexpr int64_t kDefaultCacheFloor = int64_t{256} << 20;

enum Pool { kSmall = 0, kLarge = 1 };

struct Segment;

struct Block;

// Free blocks ordered by (size, address): lower_bound gives the best fit.
struct BySize {
  bool operator()(const Block* a, const Block* b) const;
};
using FreeSet = std::set<Block*, BySize>;

// A contiguous piece of a segment, allocated or free. Blocks of a segment
// form a doubly linked list in address order. A block outside a free set
// holds its set node, so release() can file it again without allocating
// (it runs in destructors, where a bad_alloc would terminate the process).
struct Block {
  char* ptr = nullptr;
  std::size_t size = 0;
  bool allocated = false;
  Block* prev = nullptr;
  Block* next = nullptr;
  Segment* segment = nullptr;
  FreeSet::node_type node;
};

bool BySize::operator()(const Block* a, const Block* b) const {
  return a->size != b->size ? a->size < b->size : a->ptr < b->ptr;
}

struct Segment {
  char* base = nullptr;
  std::size_t size = 0;
  Pool pool = kSmall;
  Block* head = nullptr;  // the block at base; never deleted by a merge (merges keep the lower block)
};

// A new block outside any free set, with its set node allocated up front.
Block* make_block(char* ptr, std::size_t size, Block* prev, Block* next, Segment* segment) {
  auto b = std::make_unique<Block>(Block{ptr, size, false, prev, next, segment, {}});
  FreeSet one;
  one.insert(b.get());
  b->node = one.extract(one.begin());
  return b.release();
}

struct Cache {
  std::mutex mu;
  FreeSet free_blocks[2];
  std::unordered_map<void*, Block*> live;  // allocated blocks by pointer
  std::set<Segment*> segments;
  MemoryStats stats;
  int64_t max_live = 0;  // largest current_bytes ever (not reset by reset_peak_memory)
  int64_t cache_floor = kDefaultCacheFloor;
};

Cache& cache() {
  static Cache* c = new Cache();  // leaked on purpose: outlives static tensors
  return *c;
}

std::size_t round_up(std::size_t n, std::size_t m) { return (n + m - 1) / m * m; }

std::size_t block_size_for(std::size_t bytes) { return bytes == 0 ? kRound : round_up(bytes, kRound); }

Pool pool_for(std::size_t size) { return size < kSmallMax ? kSmall : kLarge; }

std::size_t segment_size_for(std::size_t size) {
  if (size < kSmallMax) return kSmallSegment;
  if (size < kMediumMax) return kMediumSegment;
  return round_up(size, kLargeRound);
}

int64_t reserved_limit(const Cache& c) { return std::max<int64_t>(2 * c.max_live, c.cache_floor); }

bool whole_segment(const Block* b) { return !b->prev && !b->next; }

// Unmaps the segment of `b`, an entirely free block (removed from its free set by the caller).
void unmap_segment(Cache& c, Block* b) {
  Segment* s = b->segment;
  TFM_UNPOISON(s->base, s->size);  // the address range may be mapped again later
  ::munmap(s->base, s->size);
  c.stats.reserved_bytes -= static_cast<int64_t>(s->size);
  c.stats.cached_bytes -= static_cast<int64_t>(s->size);
  c.stats.os_frees++;
  c.stats.segments--;
  c.segments.erase(s);
  delete b;
  delete s;
}

// Gives back entirely free segments, largest first, until `need` more bytes
// fit under `limit` (need < 0: all of them).
void release_free_segments(Cache& c, int64_t need, int64_t limit) {
  std::vector<Block*> candidates;
  for (auto& set : c.free_blocks)
    for (Block* b : set)
      if (whole_segment(b)) candidates.push_back(b);
  std::sort(candidates.begin(), candidates.end(), [](const Block* a, const Block* b) { return a->size > b->size; });
  for (Block* b : candidates) {
    if (need >= 0 && c.stats.reserved_bytes + need <= limit) break;
    c.free_blocks[b->segment->pool].erase(b);
    unmap_segment(c, b);
  }
}

char* map_memory(std::size_t size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<char*>(p);
}

// Maps a new segment for a block of `size` bytes; returns its single free
// block (not yet in a free set), or nullptr when the OS refuses.
Block* new_segment(Cache& c, std::size_t size) {
  const std::size_t seg_size = segment_size_for(size);
  const int64_t limit = c.stats.reserved_limit = reserved_limit(c);
  if (c.stats.reserved_bytes + static_cast<int64_t>(seg_size) > limit)
    release_free_segments(c, static_cast<int64_t>(seg_size), limit);
  char* base = map_memory(seg_size);
  if (!base) {  // out of memory: give back every free segment and try once more
    release_free_segments(c, -1, 0);
    base = map_memory(seg_size);
    if (!base) return nullptr;
  }
  TFM_POISON(base, seg_size);
  auto* s = new Segment{base, seg_size, pool_for(size), nullptr};
  Block* b = make_block(base, seg_size, nullptr, nullptr, s);
  s->head = b;
  c.segments.insert(s);
  c.stats.os_allocs++;
  c.stats.segments++;
  c.stats.reserved_bytes += static_cast<int64_t>(seg_size);
  c.stats.peak_reserved_bytes = std::max(c.stats.peak_reserved_bytes, c.stats.reserved_bytes);
  c.stats.cached_bytes += static_cast<int64_t>(seg_size);
  return b;
}

// Cuts `b` (free, in no free set) to `size` bytes when the rest is worth a
// block of its own; the rest goes to the free set.
void maybe_split(Cache& c, Block* b, std::size_t size) {
  const std::size_t rest = b->size - size;
  const bool worth = b->segment->pool == kSmall ? rest >= kRound : rest > kLargeSplitMin;
  if (!worth) return;
  Block* r = make_block(b->ptr + size, rest, b, b->next, b->segment);
  if (b->next) b->next->prev = r;
  b->next = r;
  b->size = size;
  c.free_blocks[b->segment->pool].insert(std::move(r->node));
  c.stats.splits++;
}

// Merges free `b` (in no free set) with its free neighbours; returns the merged block.
Block* merge_free(Cache& c, Block* b) {
  auto& set = c.free_blocks[b->segment->pool];
  if (Block* n = b->next; n && !n->allocated) {
    set.erase(n);
    b->size += n->size;
    b->next = n->next;
    if (n->next) n->next->prev = b;
    delete n;
    c.stats.merges++;
  }
  if (Block* p = b->prev; p && !p->allocated) {
    p->node = set.extract(p);  // p survives: it keeps its node to be filed again
    p->size += b->size;
    p->next = b->next;
    if (b->next) b->next->prev = p;
    delete b;
    b = p;
    c.stats.merges++;
  }
  return b;
}

[[noreturn]] void fail_release(const void* ptr) {
  // Not reachable from user input: a pointer that allocate() did not hand
  // out is a bug in tfm, and continuing would corrupt the heap.
  std::fprintf(stderr, "tfm: internal error: release() of %p, which the tensor allocator did not hand out\n", ptr);
  std::abort();
}

}  // namespace

void* allocate(std::size_t bytes) {
  const std::size_t size = block_size_for(bytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  Block probe;  // a search key: only the size (and a null address, before every real block) matter
  probe.size = size;
  Block* b = nullptr;
  // Best fit in the request's pool; a small request that finds nothing there
  // takes the best fit of the large pool before a new segment is mapped.
  for (int pool = pool_for(size); pool <= kLarge && !b; ++pool) {
    auto& set = c.free_blocks[pool];
    auto it = set.lower_bound(&probe);
    if (it == set.end()) continue;
    b = *it;
    b->node = set.extract(it);
    c.stats.cache_hits++;
  }
  if (!b) {
    b = new_segment(c, size);
    if (!b)
      detail::throw_error("out of memory: allocating ", bytes, " bytes (", static_cast<double>(bytes) / (1 << 30),
                          " GiB) for a tensor failed");
  }
  maybe_split(c, b, size);
  TFM_UNPOISON(b->ptr, b->size);
  b->allocated = true;
  c.live.emplace(b->ptr, b);
  c.stats.allocations++;
  c.stats.cached_bytes -= static_cast<int64_t>(b->size);
  c.stats.current_bytes += static_cast<int64_t>(bytes);
  c.stats.peak_bytes = std::max(c.stats.peak_bytes, c.stats.current_bytes);
  c.max_live = std::max(c.max_live, c.stats.current_bytes);
  return b->ptr;
}

void release(void* ptr, std::size_t bytes) {
  if (!ptr) return;
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  auto it = c.live.find(ptr);
  if (it == c.live.end()) fail_release(ptr);
  Block* b = it->second;
  c.live.erase(it);
  b->allocated = false;
  TFM_POISON(b->ptr, b->size);
  c.stats.current_bytes -= static_cast<int64_t>(bytes);
  c.stats.cached_bytes += static_cast<int64_t>(b->size);
  b = merge_free(c, b);
  c.free_blocks[b->segment->pool].insert(std::move(b->node));  // allocates nothing
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
  release_free_segments(c, -1, 0);
}

void set_cache_limit(int64_t bytes) {
  TFM_CHECK(bytes >= 0, "set_cache_limit: the limit must be >= 0 bytes (0 restores the default), got ", bytes);
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.cache_floor = bytes == 0 ? kDefaultCacheFloor : bytes;
}

std::string memory_summary() {
  const MemoryStats s = memory_stats();
  char buf[128];
  std::snprintf(buf, sizeof buf, "tensor memory in use: %.1f MiB (reserved %.1f MiB)",
                static_cast<double>(s.current_bytes) / kMiB, static_cast<double>(s.reserved_bytes) / kMiB);
  return buf;
}

void check_allocator() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  int64_t reserved = 0, free_bytes = 0, n_free = 0, n_live = 0;
  for (const Segment* s : c.segments) {
    reserved += static_cast<int64_t>(s->size);
    TFM_CHECK(s->head && s->head->ptr == s->base && !s->head->prev, "allocator: segment ", static_cast<const void*>(s->base),
              " does not start with its first block");
    const char* expect = s->base;
    for (const Block* b = s->head; b; b = b->next) {
      TFM_CHECK(b->segment == s, "allocator: block ", static_cast<const void*>(b->ptr), " names another segment");
      TFM_CHECK(b->ptr == expect, "allocator: block ", static_cast<const void*>(b->ptr), " is not where the previous one ends (",
                static_cast<const void*>(expect), ")");
      TFM_CHECK(b->size > 0 && b->size % kRound == 0 && reinterpret_cast<std::uintptr_t>(b->ptr) % kRound == 0,
                "allocator: block ", static_cast<const void*>(b->ptr), " of ", b->size, " bytes is not 512-byte aligned");
      TFM_CHECK(!b->next || b->next->prev == b, "allocator: broken neighbour links at ", static_cast<const void*>(b->ptr));
      if (b->allocated) {
        ++n_live;
        auto it = c.live.find(b->ptr);
        TFM_CHECK(it != c.live.end() && it->second == b, "allocator: allocated block ", static_cast<const void*>(b->ptr),
                  " is not in the live table");
      } else {
        ++n_free;
        free_bytes += static_cast<int64_t>(b->size);
        TFM_CHECK(!b->next || b->next->allocated, "allocator: free neighbours at ", static_cast<const void*>(b->ptr),
                  " were not merged");
        TFM_CHECK(c.free_blocks[s->pool].count(const_cast<Block*>(b)) == 1, "allocator: free block ",
                  static_cast<const void*>(b->ptr), " is missing from its pool");
      }
      expect = b->ptr + b->size;
    }
    TFM_CHECK(expect == s->base + s->size, "allocator: the blocks of segment ", static_cast<const void*>(s->base),
              " do not cover it exactly");
  }
  TFM_CHECK(n_free == static_cast<int64_t>(c.free_blocks[0].size() + c.free_blocks[1].size()),
            "allocator: the free sets hold blocks that are in no segment");
  TFM_CHECK(n_live == static_cast<int64_t>(c.live.size()), "allocator: the live table holds blocks that are in no segment");
  TFM_CHECK(reserved == c.stats.reserved_bytes, "allocator: reserved_bytes ", c.stats.reserved_bytes, " but segments hold ", reserved);
  TFM_CHECK(free_bytes == c.stats.cached_bytes, "allocator: cached_bytes ", c.stats.cached_bytes, " but free blocks hold ", free_bytes);
  TFM_CHECK(static_cast<int64_t>(c.segments.size()) == c.stats.segments, "allocator: segment count ", c.stats.segments,
            " but ", c.segments.size(), " are mapped");
}

}  // namespace tfm::core
