// The oneDNN backend: the only place that talks to oneDNN.
//
// Matrix products run as oneDNN matmul primitives. Creating a primitive
// costs 40-600 µs, running a small one a few µs, so primitives are cached by
// (shapes, strides, bias) together with their memory objects; a cache hit
// only swaps data pointers. The cache keeps the 1024 most recently used.
// fpmath mode stays strict (no implicit bf16/tf32).
//
// A product large enough to share runs as one part per thread of tfm's
// team (parallel.h): a range of its batches, else of the rows or the
// columns of dst, whichever side is longer, each part a single-threaded
// oneDNN primitive. So no product waits for OpenMP to wake a sleeping
// worker, and the same primitive serves both halves of an even split.
#pragma once

#include <cstdint>

namespace tfm::core::onednn {

// Describes one operand: logical dims (rank 2 or 3: [batch,] rows, cols)
// and strides in elements. A batch of 1 with stride 0 broadcasts.
struct MatDesc {
  int64_t batch = 1, rows = 0, cols = 0;
  int64_t batch_stride = 0, row_stride = 0, col_stride = 1;
};

// dst[b] = src[b] · wei[b] (+ bias broadcast over rows), fp32; with
// `accumulate`, dst[b] += the same (oneDNN's sum post-op: dst is read, not
// just written). src: [B|1, M, K], wei: [B|1, K, N], bias: [N] or null,
// dst: [B, M, N] contiguous. Each operand needs a unit stride in one of its
// last two dims.
void matmul(const MatDesc& src, const float* src_data, const MatDesc& wei, const float* wei_data,
            const float* bias, float* dst, int64_t batch, int64_t m, int64_t n, bool accumulate = false);

struct CacheStats {
  int64_t hits = 0;
  int64_t misses = 0;
  int64_t evictions = 0;  // least recently used primitives dropped at capacity
  int64_t size = 0;
};
// Capacity of the primitive cache (entries).
int64_t matmul_cache_capacity();
CacheStats matmul_cache_stats();
void clear_matmul_cache();

}  // namespace tfm::core::onednn
