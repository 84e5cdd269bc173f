#include "onednn.h"

#include <dnnl.hpp>
#include <omp.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

#include "error.h"
#include "parallel.h"

namespace tfm::core::onednn {

namespace {

using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;

// One product on one thread: dst = src · wei (+ bias), every operand with
// its own dims and strides (dst's col stride is 1).
struct Gemm {
  MatDesc src, wei, dst;
  const float *a, *w, *bias;
  float* c;
  bool accumulate;  // c += product
};

// Everything that decides the primitive: shapes, strides, bias presence,
// accumulation.
struct Key {
  std::array<int64_t, 16> v;
  bool operator==(const Key& o) const { return v == o.v; }
};
struct KeyHash {
  std::size_t operator()(const Key& k) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the words
    for (int64_t x : k.v) h = (h ^ static_cast<uint64_t>(x)) * 1099511628211ull;
    return static_cast<std::size_t>(h);
  }
};

Key key_of(const Gemm& g) {
  return Key{{g.src.batch, g.src.rows, g.src.cols, g.src.batch_stride, g.src.row_stride, g.src.col_stride, g.wei.batch,
              g.wei.cols, g.wei.batch_stride, g.wei.row_stride, g.wei.col_stride, g.dst.batch, g.dst.batch_stride,
              g.dst.row_stride, g.bias ? 1 : 0, g.accumulate ? 1 : 0}};
}

// The memory objects one thread binds its pointers to (a primitive may run
// on several threads at once, each with its own).
struct Mems {
  dnnl::memory src, wei, bias, dst, scratch;
  std::unordered_map<int, dnnl::memory> args;
};

struct Entry {
  dnnl::matmul prim;
  dnnl::memory::desc src_md, wei_md, bias_md, dst_md, scratch_md;
  std::vector<std::unique_ptr<Mems>> per_thread;  // by thread_slot()
  std::list<Key>::iterator lru;                   // position in Backend::order
};

// Least-recently-used cache of at most kCapacity primitives. A fixed-shape
// model (GPT training) uses a few dozen; variable batch shapes (translation)
// would otherwise keep one JIT-compiled primitive per shape ever seen, which
// grew a process by gigabytes over a training run. Entries are shared: one
// evicted while another thread runs it lives until that run ends.
constexpr std::size_t kCapacity = 1024;

struct Backend {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::mutex mu;
  std::unordered_map<Key, std::shared_ptr<Entry>, KeyHash> cache;
  std::list<Key> order;  // most recently used first
  CacheStats stats;
};

Backend& backend() {
  static Backend* b = new Backend();  // leaked on purpose: outlives static destructors
  return *b;
}

// A small number per thread that has run a product, for Entry::per_thread.
int thread_slot() {
  static std::atomic<int> next{0};
  thread_local const int slot = next.fetch_add(1);
  return slot;
}

dnnl::memory::desc desc_of(const MatDesc& d) {
  return dnnl::memory::desc(dims{d.batch, d.rows, d.cols}, dt::f32,
                            dims{d.batch_stride, d.row_stride, d.col_stride});
}

std::shared_ptr<Entry> make_entry(Backend& be, const Gemm& g) {
  auto e = std::make_shared<Entry>();
  e->src_md = desc_of(g.src);
  e->wei_md = desc_of(g.wei);
  e->dst_md = desc_of(g.dst);
  const int64_t n = g.dst.cols;
  if (g.bias) e->bias_md = dnnl::memory::desc(dims{1, 1, n}, dt::f32, dims{n, n, 1});
  // The scratchpad is the caller's: with oneDNN's own (library mode) two
  // threads running one primitive at once share it and corrupt each other's
  // results (seen: 110 of 6000 concurrent products differed).
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (g.accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  const auto pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(e->src_md, e->wei_md, e->bias_md, e->dst_md),
                                               attr, be.engine);
  e->scratch_md = pd.scratchpad_desc();
  e->prim = dnnl::matmul(pd);
  return e;
}

// This thread's memory objects of `e` (created on first use); be.mu held.
Mems& mems_of(Backend& be, Entry& e, bool has_bias) {
  const auto slot = static_cast<std::size_t>(thread_slot());
  if (e.per_thread.size() <= slot) e.per_thread.resize(slot + 1);
  std::unique_ptr<Mems>& m = e.per_thread[slot];
  if (!m) {
    m = std::make_unique<Mems>();
    m->src = dnnl::memory(e.src_md, be.engine, DNNL_MEMORY_NONE);
    m->wei = dnnl::memory(e.wei_md, be.engine, DNNL_MEMORY_NONE);
    m->dst = dnnl::memory(e.dst_md, be.engine, DNNL_MEMORY_NONE);
    m->args = {{DNNL_ARG_SRC, m->src}, {DNNL_ARG_WEIGHTS, m->wei}, {DNNL_ARG_DST, m->dst}};
    if (e.scratch_md.get_size() > 0) {  // bound to this thread's buffer at each run
      m->scratch = dnnl::memory(e.scratch_md, be.engine, DNNL_MEMORY_NONE);
      m->args[DNNL_ARG_SCRATCHPAD] = m->scratch;
    }
    if (has_bias) {
      m->bias = dnnl::memory(e.bias_md, be.engine, DNNL_MEMORY_NONE);
      m->args[DNNL_ARG_BIAS] = m->bias;
    }
  }
  return *m;
}

// This thread's scratchpad, at least `bytes` long: one buffer per thread,
// grown to the largest a primitive has asked for (as oneDNN's own global
// scratchpad grows), so that cached primitives do not each hold one.
void* thread_scratch(std::size_t bytes) {
  struct Buffer {
    void* p = nullptr;
    std::size_t size = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer buf;
  if (buf.size < bytes) {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    std::free(buf.p);
    buf.p = p;
    buf.size = bytes;
  }
  return buf.p;
}

// oneDNN sizes a primitive's thread team from omp_get_max_threads() when it
// is created and opens an OpenMP region of that size when it runs; tfm's
// products always run on the calling thread (threads come from the team in
// parallel.h, one part of the product each).
struct OneOpenMPThread {
  int saved = omp_get_max_threads();
  OneOpenMPThread() {
    if (saved != 1) omp_set_num_threads(1);
  }
  ~OneOpenMPThread() {
    if (saved != 1) omp_set_num_threads(saved);
  }
};

void run_on_this_thread(const Gemm& g) {
  OneOpenMPThread one;
  Backend& be = backend();
  const Key key = key_of(g);
  std::shared_ptr<Entry> entry;
  Mems* m = nullptr;
  {
    std::lock_guard<std::mutex> lock(be.mu);
    auto it = be.cache.find(key);
    if (it == be.cache.end()) {
      be.stats.misses++;
      try {
        it = be.cache.emplace(key, make_entry(be, g)).first;
      } catch (const dnnl::error& err) {
        detail::throw_error("matmul: oneDNN rejected [", g.src.batch, ", ", g.src.rows, ", ", g.src.cols, "] x [",
                            g.wei.batch, ", ", g.wei.rows, ", ", g.wei.cols, "]: ", err.what());
      }
      be.order.push_front(key);
      it->second->lru = be.order.begin();
      if (be.cache.size() > kCapacity) {
        be.cache.erase(be.order.back());
        be.order.pop_back();
        be.stats.evictions++;
      }
      be.stats.size = static_cast<int64_t>(be.cache.size());
    } else {
      be.stats.hits++;
      be.order.splice(be.order.begin(), be.order, it->second->lru);
    }
    entry = it->second;
    m = &mems_of(be, *entry, g.bias != nullptr);
  }
  m->src.set_data_handle(const_cast<float*>(g.a));
  m->wei.set_data_handle(const_cast<float*>(g.w));
  m->dst.set_data_handle(g.c);
  if (g.bias) m->bias.set_data_handle(const_cast<float*>(g.bias));
  if (m->scratch) m->scratch.set_data_handle(thread_scratch(entry->scratch_md.get_size()));
  thread_local dnnl::stream stream(be.engine);
  entry->prim.execute(stream, m->args);
  stream.wait();
}

// Products below this many multiply-adds run on one thread: a part of a
// smaller one takes about as long as handing it to a worker.
constexpr int64_t kParallelMacs = 1 << 17;

enum class Axis { batch, rows, cols };

// Part t of n of g along `axis`: a contiguous range of batches, of dst rows
// (src rows), or of dst columns (wei columns, bias), in blocks of `align`.
Gemm part_of(const Gemm& g, Axis axis, int t, int n) {
  Gemm p = g;
  auto range = [&](int64_t extent, int64_t align) {
    const auto [u0, u1] = static_share((extent + align - 1) / align, t, n);
    return std::pair<int64_t, int64_t>{u0 * align, std::min(extent, u1 * align)};
  };
  if (axis == Axis::batch) {
    const auto [b0, b1] = range(g.dst.batch, 1);
    p.dst.batch = b1 - b0;
    p.c += b0 * g.dst.batch_stride;
    if (g.src.batch > 1) p.src.batch = b1 - b0, p.a += b0 * g.src.batch_stride;
    if (g.wei.batch > 1) p.wei.batch = b1 - b0, p.w += b0 * g.wei.batch_stride;
  } else if (axis == Axis::rows) {
    const auto [r0, r1] = range(g.dst.rows, 8);
    p.dst.rows = p.src.rows = r1 - r0;
    p.c += r0 * g.dst.row_stride;
    p.a += r0 * g.src.row_stride;
  } else {
    const auto [c0, c1] = range(g.dst.cols, 16);
    p.dst.cols = p.wei.cols = c1 - c0;
    p.c += c0;
    p.w += c0 * g.wei.col_stride;
    if (g.bias) p.bias += c0;
  }
  return p;
}

}  // namespace

void matmul(const MatDesc& src, const float* src_data, const MatDesc& wei, const float* wei_data, const float* bias,
            float* dst, int64_t batch, int64_t m, int64_t n, bool accumulate) {
  const Gemm g{{src.batch, m, src.cols, src.batch_stride, src.row_stride, src.col_stride},
               {wei.batch, wei.rows, n, wei.batch_stride, wei.row_stride, wei.col_stride},
               {batch, m, n, m * n, n, 1},
               src_data,
               wei_data,
               bias,
               dst,
               accumulate};
  const int threads = batch * m * n * src.cols >= kParallelMacs ? num_threads() : 1;
  if (threads <= 1 || in_parallel()) {
    run_on_this_thread(g);
    return;
  }
  // Batches when there are enough to go round, else the longer side of dst.
  const Axis axis = batch >= threads ? Axis::batch : m >= n ? Axis::rows : Axis::cols;
  parallel_region(threads, [&](int t, int nt) {
    const Gemm p = part_of(g, axis, t, nt);
    if (p.dst.batch > 0 && p.dst.rows > 0 && p.dst.cols > 0) run_on_this_thread(p);
  });
}

CacheStats matmul_cache_stats() {
  Backend& be = backend();
  std::lock_guard<std::mutex> lock(be.mu);
  return be.stats;
}

int64_t matmul_cache_capacity() { return static_cast<int64_t>(kCapacity); }

void clear_matmul_cache() {
  Backend& be = backend();
  std::lock_guard<std::mutex> lock(be.mu);
  be.cache.clear();
  be.order.clear();
  be.stats = CacheStats{};
}

}  // namespace tfm::core::onednn
