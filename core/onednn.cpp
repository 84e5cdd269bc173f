#include "onednn.h"

#include <dnnl.hpp>

#include <array>
#include <list>
#include <mutex>
#include <unordered_map>

#include "error.h"

namespace tfm::core::onednn {

namespace {

using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;

// Everything that decides the primitive: shapes, strides, bias presence.
struct Key {
  std::array<int64_t, 12> v;
  bool operator==(const Key& o) const { return v == o.v; }
};
struct KeyHash {
  std::size_t operator()(const Key& k) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a over the words
    for (int64_t x : k.v) h = (h ^ static_cast<uint64_t>(x)) * 1099511628211ull;
    return static_cast<std::size_t>(h);
  }
};

struct Entry {
  dnnl::matmul prim;
  dnnl::memory src, wei, bias, dst;
  std::unordered_map<int, dnnl::memory> args;
  std::list<Key>::iterator lru;  // position in Backend::order
};

// Least-recently-used cache of at most kCapacity primitives. A fixed-shape
// model (GPT training) uses a few dozen; variable batch shapes (translation)
// would otherwise keep one JIT-compiled primitive per shape ever seen, which
// grew a process by gigabytes over a training run.
constexpr std::size_t kCapacity = 1024;

struct Backend {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mu;
  std::unordered_map<Key, Entry, KeyHash> cache;
  std::list<Key> order;  // most recently used first
  CacheStats stats;
};

Backend& backend() {
  static Backend* b = new Backend();  // leaked on purpose: outlives static destructors
  return *b;
}

dnnl::memory::desc desc_of(const MatDesc& d) {
  return dnnl::memory::desc(dims{d.batch, d.rows, d.cols}, dt::f32,
                            dims{d.batch_stride, d.row_stride, d.col_stride});
}

Entry make_entry(Backend& be, const MatDesc& src, const MatDesc& wei, bool has_bias, int64_t batch, int64_t m,
                 int64_t n) {
  const auto src_md = desc_of(src), wei_md = desc_of(wei);
  const auto dst_md = dnnl::memory::desc(dims{batch, m, n}, dt::f32, dims{m * n, n, 1});
  const auto bias_md = has_bias ? dnnl::memory::desc(dims{1, 1, n}, dt::f32, dims{n, n, 1}) : dnnl::memory::desc();
  const auto pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_md, bias_md, dst_md), be.engine);
  Entry e{dnnl::matmul(pd),
          dnnl::memory(src_md, be.engine, DNNL_MEMORY_NONE),
          dnnl::memory(wei_md, be.engine, DNNL_MEMORY_NONE),
          has_bias ? dnnl::memory(bias_md, be.engine, DNNL_MEMORY_NONE) : dnnl::memory(),
          dnnl::memory(dst_md, be.engine, DNNL_MEMORY_NONE),
          {},
          {}};
  e.args = {{DNNL_ARG_SRC, e.src}, {DNNL_ARG_WEIGHTS, e.wei}, {DNNL_ARG_DST, e.dst}};
  if (has_bias) e.args[DNNL_ARG_BIAS] = e.bias;
  return e;
}

}  // namespace

void matmul(const MatDesc& src, const float* src_data, const MatDesc& wei, const float* wei_data, const float* bias,
            float* dst, int64_t batch, int64_t m, int64_t n) {
  Backend& be = backend();
  const Key key{{src.batch, m, src.cols, src.batch_stride, src.row_stride, src.col_stride, wei.batch, n,
                 wei.batch_stride, wei.row_stride, wei.col_stride, bias ? batch : -batch}};
  std::lock_guard<std::mutex> lock(be.mu);
  auto it = be.cache.find(key);
  if (it == be.cache.end()) {
    be.stats.misses++;
    try {
      it = be.cache.emplace(key, make_entry(be, src, wei, bias != nullptr, batch, m, n)).first;
    } catch (const dnnl::error& err) {
      detail::throw_error("matmul: oneDNN rejected [", src.batch, ", ", m, ", ", src.cols, "] x [", wei.batch,
                          ", ", wei.rows, ", ", n, "]: ", err.what());
    }
    be.order.push_front(key);
    it->second.lru = be.order.begin();
    if (be.cache.size() > kCapacity) {
      be.cache.erase(be.order.back());
      be.order.pop_back();
      be.stats.evictions++;
    }
    be.stats.size = static_cast<int64_t>(be.cache.size());
  } else {
    be.stats.hits++;
    be.order.splice(be.order.begin(), be.order, it->second.lru);
  }
  Entry& e = it->second;
  e.src.set_data_handle(const_cast<float*>(src_data));
  e.wei.set_data_handle(const_cast<float*>(wei_data));
  e.dst.set_data_handle(dst);
  if (bias) e.bias.set_data_handle(const_cast<float*>(bias));
  e.prim.execute(be.stream, e.args);
  be.stream.wait();
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
