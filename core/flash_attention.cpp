// Fused attention: forward and hand-written backward (see flash_attention.h).
//
// Tile products go through gemm() below: C (+)= A·B on row-major tiles with
// an AVX-512 register-blocked kernel (plain loops without AVX-512). Score
// tiles need q·kᵀ, so each key (and, in backward, value) tile is first
// transposed into a [D, kv_tile] scratch; the products with a transposed left
// operand (Pᵀ·dO, dSᵀ·Q) read A with strides.
#include "flash_attention.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "autograd.h"
#include "error.h"
#include "parallel.h"
#include "profile.h"
#include "vmath.h"

namespace tfm::core {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------- tile products
//
// gemm(m, n, k, A, ars, acs, B, ldb, C, ldc, accumulate):
//   C[m × n] (+)= A[m × k]·B[k × n]; B and C row-major with leading dims ldb,
//   ldc; A(i, k) = A[i·ars + k·acs] (so a transposed A is just other strides).
// Every C element is one fused multiply-add chain over k in increasing order,
// whatever its position in the tile, so the same product gives the same bits
// in forward and backward (and rowsum(dO ∘ O) below sums the same way).
//
// With AVX-512 the kernel holds an MR × 16·NV block of C in zmm registers
// (6 × 64, 8 × 48, 12 × 32 or 14 × 16: at most 24 accumulators) and masks
// the last vector of a row; measured on a 2-core AVX-512 machine of this
// class (one thread) it ran the tile shapes of this file at 60–78 GFLOP/s,
// on par with oneDNN's dnnl_sgemm (63–75) and twice the plain loops below
// (31–45), which remain as the portable fallback. In a whole fwd+bwd call it
// reaches ~80% of the machine's 2-thread oneDNN GEMM peak
// (bench/bench_attention prints the fraction).

#if defined(__AVX512F__)

template <int MR, int NV>
inline void gemm_block(int64_t kdim, const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb, float* c,
                       int64_t ldc, bool accumulate, __mmask16 tail) {
  __m512 acc[MR][NV];
  _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
    _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v)
      acc[r][v] = accumulate ? _mm512_maskz_loadu_ps(v == NV - 1 ? tail : 0xFFFF, c + r * ldc + 16 * v)
                             : _mm512_setzero_ps();
  for (int64_t k = 0; k < kdim; ++k) {
    const float* bk = b + k * ldb;
    __m512 bv[NV];
    _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v)
      bv[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? tail : 0xFFFF, bk + 16 * v);
    const float* ak = a + k * acs;
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(ak[r * ars]);
      _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
    _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v)
      _mm512_mask_storeu_ps(c + r * ldc + 16 * v, v == NV - 1 ? tail : 0xFFFF, acc[r][v]);
}

template <int NV>
void gemm_column_panel(int64_t m, int64_t kdim, const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb,
                       float* c, int64_t ldc, bool accumulate, __mmask16 tail) {
  constexpr int MR = NV == 4 ? 6 : NV == 3 ? 8 : NV == 2 ? 12 : 14;
  int64_t i = 0;
  for (; i + MR <= m; i += MR)
    gemm_block<MR, NV>(kdim, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc, accumulate, tail);
  if constexpr (MR > 4) {  // 64 = 10·6 + 4 rows: the remainder in one block, not two
    for (; i + 4 <= m; i += 4)
      gemm_block<4, NV>(kdim, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc, accumulate, tail);
  }
  for (; i + 2 <= m; i += 2)
    gemm_block<2, NV>(kdim, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc, accumulate, tail);
  for (; i < m; ++i) gemm_block<1, NV>(kdim, a + i * ars, ars, acs, b, ldb, c + i * ldc, ldc, accumulate, tail);
}

void gemm(int64_t m, int64_t n, int64_t kdim, const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb,
          float* c, int64_t ldc, bool accumulate) {
  int64_t j = 0;
  for (; j + 64 <= n; j += 64)
    gemm_column_panel<4>(m, kdim, a, ars, acs, b + j, ldb, c + j, ldc, accumulate, 0xFFFF);
  const int64_t rest = n - j;
  if (rest == 0) return;
  const int nv = static_cast<int>((rest + 15) / 16);
  const int last = static_cast<int>(rest - 16 * (nv - 1));  // 1 .. 16 columns in the last vector
  const auto tail = static_cast<__mmask16>((1u << last) - 1u);
  b += j, c += j;
  switch (nv) {
    case 1: gemm_column_panel<1>(m, kdim, a, ars, acs, b, ldb, c, ldc, accumulate, tail); break;
    case 2: gemm_column_panel<2>(m, kdim, a, ars, acs, b, ldb, c, ldc, accumulate, tail); break;
    case 3: gemm_column_panel<3>(m, kdim, a, ars, acs, b, ldb, c, ldc, accumulate, tail); break;
    default: gemm_column_panel<4>(m, kdim, a, ars, acs, b, ldb, c, ldc, accumulate, tail); break;
  }
}

#else  // portable fallback: plain loops the compiler vectorises

constexpr int kMR = 4;  // rows per register block

template <int MR, int NR>
inline void gemm_block(int64_t kdim, const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb, float* c,
                       int64_t ldc, int n, bool accumulate) {
  float acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < n; ++j) acc[r][j] = accumulate ? c[r * ldc + j] : 0.0f;
  for (int64_t k = 0; k < kdim; ++k) {
    const float* bk = b + k * ldb;
    for (int r = 0; r < MR; ++r) {
      const float av = a[r * ars + k * acs];
      for (int j = 0; j < n; ++j) acc[r][j] = std::fma(av, bk[j], acc[r][j]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < n; ++j) c[r * ldc + j] = acc[r][j];
}

void gemm(int64_t m, int64_t n, int64_t kdim, const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb,
          float* c, int64_t ldc, bool accumulate) {
  for (int64_t j = 0; j < n; j += 16) {
    const int cols = static_cast<int>(std::min<int64_t>(16, n - j));
    int64_t i = 0;
    for (; i + kMR <= m; i += kMR)
      gemm_block<kMR, 16>(kdim, a + i * ars, ars, acs, b + j, ldb, c + i * ldc + j, ldc, cols, accumulate);
    for (; i < m; ++i)
      gemm_block<1, 16>(kdim, a + i * ars, ars, acs, b + j, ldb, c + i * ldc + j, ldc, cols, accumulate);
  }
}

#endif

// dst[d · ld + r] = src[r · rs + d] for r < rows: a [rows, dim] tile (row
// stride rs) as [dim, rows]. Contiguous stores (strided scalar stores a
// whole tile apart made this the largest cost of the forward).
// Blocks of 16 rows: a column pass over a whole 256-row tile touched 256
// source lines per d and reloaded them from L2 for every d (a quarter of
// the backward's own time at T = 256, D = 64, rows 1152 floats apart).
void transpose_tile(const float* src, int64_t rows, int64_t dim, int64_t rs, float* dst, int64_t ld) {
  constexpr int64_t kBlock = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t nr = std::min(kBlock, rows - r0);
    const float* sb = src + r0 * rs;
    float* db = dst + r0;
    for (int64_t d = 0; d < dim; ++d)
      for (int64_t r = 0; r < nr; ++r) db[d * ld + r] = sb[r * rs + d];
  }
}

// A [B, H, T, D] operand with unit stride in D and any other strides (the
// attention layer's q, k, v are views into one [B, T, 3·C] projection, and
// the outputs are laid out [B, T, H, D] so that merging the heads back is a
// view): head bh's row i starts at head(bh) + i·rs.
template <class T>
struct Heads {
  T* base;
  int64_t bs, hs, rs, heads;
  T* head(int64_t bh) const { return base + (bh / heads) * bs + (bh % heads) * hs; }
};
template <class T>
Heads<T> heads_of(const Tensor& t) {
  return {t.data<float>(), t.stride(0), t.stride(1), t.stride(2), t.size(1)};
}

// ---------------------------------------------------------------- masks and dropout

// What one call sees: sizes, the mask and the dropout stream.
struct Problem {
  int64_t batch, heads, tq, tk, dim;
  float scale;
  bool causal;
  int64_t q_offset;
  const float* padding;  // [B, Tk] (or [1, Tk], shared by the batch) or null
  int64_t padding_batch_stride;  // Tk, or 0 for [1, Tk]
  FlashDropout drop;
  float keep_scale;  // 1 / (1 − p), 0 when p == 1 (as core::dropout)
  int64_t q_tile, kv_tile;
  // Row stride of score-sized scratch and transposed key tiles: kv_tile
  // rounded up to kLanes, plus kLanes so that consecutive rows do not fall
  // into the same cache sets (a 1 KiB stride for kv_tile 256 cost ~20%).
  int64_t ld;
};

// Row loops run over whole groups of kLanes columns (scratch rows are padded
// to ld) and reduce into kLanes partial results, so that they vectorise.
constexpr int kLanes = 16;

int64_t round_up_lanes(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// Additive bias of the keys of batch b: 0 visible, -inf padded; kLanes
// extra zeros at the end so row loops may read past the last key.
void padding_bias(const Problem& pb, int64_t b, float* bias) {
  for (int64_t j = 0; j < pb.tk; ++j)
    bias[j] = pb.padding && pb.padding[b * pb.padding_batch_stride + j] != 0.0f ? kNegInf : 0.0f;
  std::fill(bias + pb.tk, bias + pb.tk + kLanes, 0.0f);
}

// sr[c] = scale·sr[c] + bias[c] for c < lim, -inf for lim <= c < n (n a
// multiple of kLanes); returns the row maximum.
float mask_scores_row(float* sr, const float* bias, int64_t lim, int64_t n, float scale) {
  float part[kLanes];
  std::fill(part, part + kLanes, kNegInf);
  for (int64_t c0 = 0; c0 < n; c0 += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const int64_t c = c0 + l;
      const float x = c < lim ? sr[c] * scale + bias[c] : kNegInf;
      sr[c] = x;
      part[l] = part[l] < x ? x : part[l];
    }
  float mx = kNegInf;
  for (int l = 0; l < kLanes; ++l) mx = std::max(mx, part[l]);
  return mx;
}

// sr[c] = exp(sr[c] − m) (0 for -inf) over c < n; returns the row sum.
float exp_row(float* sr, int64_t n, float m) {
  float part[kLanes] = {};
  for (int64_t c0 = 0; c0 < n; c0 += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float x = sr[c0 + l];
      const float e = x == kNegInf ? 0.0f : vmath::vexp(x - m);
      sr[c0 + l] = e;
      part[l] += e;
    }
  float sum = 0.0f;
  for (int l = 0; l < kLanes; ++l) sum += part[l];
  return sum;
}

// Keys j0 .. j0 + result − 1 of a tile are causally visible to query i.
int64_t visible_in_tile(const Problem& pb, int64_t i, int64_t j0, int64_t cols) {
  if (!pb.causal) return cols;
  return std::clamp<int64_t>(pb.q_offset + i - j0 + 1, 0, cols);
}

// A causal tile on the diagonal: each row sees a prefix of the tile's keys
// that grows with the row, so its products run in blocks of kCausalBlock
// rows (or keys), each only over the part that is not all zero (rows:
// the keys its last row sees; keys: the rows from the first that sees its
// first key). Skipped terms are exact zeros of P or dS. A tile every row
// sees whole is one block.
constexpr int64_t kCausalBlock = 12;  // whole register blocks of the 64- and 32-wide products (6 and 12 rows)

bool whole_tile(const Problem& pb, int64_t i0, int64_t j0, int64_t cols) {
  return visible_in_tile(pb, i0, j0, cols) == cols;
}

// f(r0, r1, c): rows r0 .. r1 − 1 of the tile (rows at query i0, keys at
// j0) over its first c keys.
template <class F>
void row_blocks(const Problem& pb, int64_t i0, int64_t rows, int64_t j0, int64_t cols, F f) {
  if (whole_tile(pb, i0, j0, cols)) return f(int64_t{0}, rows, cols);
  for (int64_t r0 = 0; r0 < rows; r0 += kCausalBlock) {
    const int64_t r1 = std::min(rows, r0 + kCausalBlock), c = visible_in_tile(pb, i0 + r1 - 1, j0, cols);
    if (c > 0) f(r0, r1, c);
  }
}

// f(c0, c1, r): keys c0 .. c1 − 1 of the tile over its rows from r on.
template <class F>
void key_blocks(const Problem& pb, int64_t i0, int64_t rows, int64_t j0, int64_t cols, F f) {
  if (whole_tile(pb, i0, j0, cols)) return f(int64_t{0}, cols, int64_t{0});
  for (int64_t c0 = 0; c0 < cols; c0 += kCausalBlock) {
    const int64_t r = std::clamp<int64_t>(j0 + c0 - pb.q_offset - i0, 0, rows);  // first row that sees key c0
    if (r < rows) f(c0, std::min(cols, c0 + kCausalBlock), r);
  }
}

// Dropout factors for row i of head bh over keys j0 .. j0 + cols − 1:
// z[c] = keep_scale when the element is kept, else 0. `bits` holds at least
// cols + 8 words.
void dropout_row(const Problem& pb, int64_t bh, int64_t i, int64_t j0, int64_t cols, uint32_t* bits, float* z) {
  const uint64_t idx0 = static_cast<uint64_t>((bh * pb.tq + i) * pb.tk + j0);
  const uint64_t block0 = idx0 / 4, block1 = (idx0 + static_cast<uint64_t>(cols) - 1) / 4;
  philox4x32_fill(pb.drop.seed, pb.drop.first + block0, static_cast<int64_t>(block1 - block0 + 1), bits);
  const uint32_t* w = bits + (idx0 - 4 * block0);
  const float p = pb.drop.p, s = pb.keep_scale;
  for (int64_t c = 0; c < cols; ++c) z[c] = bits_to_unit_float(w[c]) >= p ? s : 0.0f;
}

// Per-thread scratch of the kernels.
struct Scratch {
  std::vector<float> kt, vt, s, dp, z, acc, row_max, row_sum, bias, dsum;
  std::vector<uint32_t> bits;
  Scratch(const Problem& pb, bool backward) {
    const auto d = static_cast<std::size_t>(pb.dim), bq = static_cast<std::size_t>(pb.q_tile),
               bk = static_cast<std::size_t>(pb.ld);
    s.resize(bq * bk);
    bias.resize(static_cast<std::size_t>(pb.tk + kLanes));
    bits.resize(bk + 8);  // dropout_row: cols + 8 words
    if (pb.drop.active()) z.resize(bq * bk);
    if (backward) {
      kt.resize(d * bk);
      vt.resize(d * bk);
      dp.resize(bq * bk);
      dsum.resize(static_cast<std::size_t>(pb.tq));
    } else {
      acc.resize(bq * d);
      row_max.resize(bq);
      row_sum.resize(bq);
    }
  }
};

// Runs body(item, scratch) for item in [0, items), one Scratch per thread.
template <class Body>
void parallel_items(const Problem& pb, bool backward, int64_t items, Body body) {
  std::atomic<int64_t> next{0};
  parallel_region(threads_for(items, true), [&](int, int) {
    Scratch scratch(pb, backward);
    for (int64_t it = next.fetch_add(1, std::memory_order_relaxed); it < items;
         it = next.fetch_add(1, std::memory_order_relaxed))
      body(it, scratch);
  });
}

// ---------------------------------------------------------------- forward

// Rows i0 .. i0 + rows − 1 of head bh: O and L.
// kt: this head's key tiles transposed, tile t at kt + t·D·ld (see
// transpose_key_tiles).
void forward_query_tile(const Problem& pb, int64_t bh, int64_t i0, int64_t rows, const float* q, int64_t qs,
                        const float* kt, const float* v, int64_t vs, float* o, int64_t os, float* lse, Scratch& sc) {
  const int64_t D = pb.dim, bc = pb.kv_tile, ld = pb.ld;
  const float* qt = q + i0 * qs;
  float* acc = sc.acc.data();
  float* s = sc.s.data();
  std::fill(acc, acc + rows * D, 0.0f);
  std::fill(sc.row_max.begin(), sc.row_max.end(), kNegInf);
  std::fill(sc.row_sum.begin(), sc.row_sum.end(), 0.0f);
  padding_bias(pb, bh / pb.heads, sc.bias.data());
  // Keys past the last row's causal limit are never visited.
  const int64_t kv_end = pb.causal ? std::clamp<int64_t>(pb.q_offset + i0 + rows, 0, pb.tk) : pb.tk;
  for (int64_t j0 = 0; j0 < kv_end; j0 += bc) {
    const int64_t cols = std::min(bc, kv_end - j0), n = round_up_lanes(cols);
    const float* ktile = kt + (j0 / bc) * D * ld;
    row_blocks(pb, i0, rows, j0, cols, [&](int64_t r0, int64_t r1, int64_t c) {  // S = q·kᵀ
      gemm(r1 - r0, c, D, qt + r0 * qs, qs, 1, ktile, ld, s + r0 * ld, ld, false);
    });
    const float* bias = sc.bias.data() + j0;
    for (int64_t r = 0; r < rows; ++r) {
      float* sr = s + r * ld;
      // Row ops and dropout bits cover the row's visible keys only (rounded
      // up to whole vectors); the causally hidden rest of the tile is zero.
      const int64_t lim = visible_in_tile(pb, i0 + r, j0, cols), nr = std::min(round_up_lanes(lim), n);
      std::fill(sr + nr, sr + n, 0.0f);
      const float mx = mask_scores_row(sr, bias, lim, nr, pb.scale);
      const float m_old = sc.row_max[r], m_new = std::max(m_old, mx);
      if (m_new == kNegInf) {  // nothing visible yet: the row contributes nothing
        std::fill(sr, sr + nr, 0.0f);
        continue;
      }
      const float sum = exp_row(sr, nr, m_new);
      const float alpha = m_old == kNegInf ? 0.0f : vmath::vexp(m_old - m_new);
      sc.row_sum[r] = sc.row_sum[r] * alpha + sum;
      sc.row_max[r] = m_new;
      if (alpha != 1.0f) {
        float* ar = acc + r * D;
        for (int64_t d = 0; d < D; ++d) ar[d] *= alpha;
      }
      if (pb.drop.active() && lim > 0) {
        float* z = sc.z.data();
        dropout_row(pb, bh, i0 + r, j0, lim, sc.bits.data(), z);
        for (int64_t c = 0; c < lim; ++c) sr[c] *= z[c];
      }
    }
    row_blocks(pb, i0, rows, j0, cols, [&](int64_t r0, int64_t r1, int64_t c) {  // acc += P·v
      gemm(r1 - r0, D, c, s + r0 * ld, ld, 1, v + j0 * vs, vs, acc + r0 * D, D, true);
    });
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float l = sc.row_sum[r];
    float* orow = o + (i0 + r) * os;
    const float* ar = acc + r * D;
    if (l > 0.0f) {
      const float inv = 1.0f / l;
      for (int64_t d = 0; d < D; ++d) orow[d] = ar[d] * inv;
      lse[i0 + r] = sc.row_max[r] + std::log(l);
    } else {
      std::fill(orow, orow + D, 0.0f);
      lse[i0 + r] = kNegInf;
    }
  }
}

// Every key tile of every head transposed once per call (the forward's
// work items share them): [B·H, tiles, D, ld], tile t of head bh at
// ((bh · tiles + t) · D) · ld; linear in Tk like k itself.
Tensor transpose_key_tiles(const Problem& pb, const Heads<const float>& k) {
  const int64_t D = pb.dim, bc = pb.kv_tile, tiles = (pb.tk + bc - 1) / bc, bhs = pb.batch * pb.heads;
  Tensor out = empty({bhs, tiles, D, pb.ld});
  float* op = out.data<float>();
  parallel_for(bhs * tiles, should_parallelize(bhs * pb.tk * D), [&](int64_t it) {
    const int64_t bh = it / tiles, j0 = (it % tiles) * bc;
    transpose_tile(k.head(bh) + j0 * k.rs, std::min(bc, pb.tk - j0), D, k.rs, op + it * D * pb.ld, pb.ld);
  });
  return out;
}

// ---------------------------------------------------------------- backward

// The backward's operands: the forward's inputs and outputs, dO, and the
// gradients it writes.
struct BackwardArgs {
  Heads<const float> q, k, v, o, dout;
  const float* lse;  // [B·H, Tq]
  Heads<float> dq, dk, dv;
};

// All gradients of head bh (one thread owns them: no shared accumulation).
void backward_head(const Problem& pb, int64_t bh, const BackwardArgs& a, Scratch& sc) {
  const int64_t D = pb.dim, bc = pb.kv_tile, br = pb.q_tile, tq = pb.tq, ld = pb.ld;
  const float *q = a.q.head(bh), *k = a.k.head(bh), *v = a.v.head(bh), *o = a.o.head(bh), *dout = a.dout.head(bh);
  const float* lse = a.lse + bh * tq;
  float *dq = a.dq.head(bh), *dk = a.dk.head(bh), *dv = a.dv.head(bh);
  const int64_t qs = a.q.rs, ks = a.k.rs, vs = a.v.rs, os = a.o.rs, dos = a.dout.rs, dqs = a.dq.rs, dks = a.dk.rs,
                dvs = a.dv.rs;
  float* s = sc.s.data();
  float* dp = sc.dp.data();
  float* z = sc.z.data();
  float* dsum = sc.dsum.data();
  for (int64_t i = 0; i < tq; ++i) std::fill(dq + i * dqs, dq + i * dqs + D, 0.0f);
  for (int64_t j = 0; j < pb.tk; ++j) {
    std::fill(dk + j * dks, dk + j * dks + D, 0.0f);
    std::fill(dv + j * dvs, dv + j * dvs + D, 0.0f);
  }
  // D_i = rowsum(dO ∘ O), each one FMA chain over d in order (as gemm()
  // sums); kChains rows at once so the chains' latencies overlap (one row
  // at a time was latency-bound, the largest part of this function's own time).
  constexpr int64_t kChains = 8;
  for (int64_t i0 = 0; i0 < tq; i0 += kChains) {
    const int64_t nr = std::min(kChains, tq - i0);
    float acc[kChains] = {};
    for (int64_t d = 0; d < D; ++d)
      for (int64_t r = 0; r < nr; ++r)
        acc[r] = std::fma(dout[(i0 + r) * dos + d], o[(i0 + r) * os + d], acc[r]);
    for (int64_t r = 0; r < nr; ++r) dsum[i0 + r] = acc[r];
  }
  padding_bias(pb, bh / pb.heads, sc.bias.data());
  for (int64_t j0 = 0; j0 < pb.tk; j0 += bc) {
    const int64_t tile_cols = std::min(bc, pb.tk - j0);
    // Query q_offset + i >= j0 is the first to see key j0.
    const int64_t i_start = pb.causal ? std::clamp<int64_t>(j0 - pb.q_offset, 0, tq) : 0;
    if (i_start >= tq) continue;
    transpose_tile(k + j0 * ks, tile_cols, D, ks, sc.kt.data(), ld);
    transpose_tile(v + j0 * vs, tile_cols, D, vs, sc.vt.data(), ld);
    const float* bias = sc.bias.data() + j0;
    for (int64_t i0 = i_start; i0 < tq; i0 += br) {
      const int64_t rows = std::min(br, tq - i0);
      // Causal: keys past the last row's limit are invisible to the whole
      // query tile, so it skips them (as the forward does); at T <= kv_tile
      // this halves the backward's work.
      const int64_t cols = pb.causal ? std::min(tile_cols, pb.q_offset + i0 + rows - j0) : tile_cols;
      const int64_t n = round_up_lanes(cols);
      const float* qt = q + i0 * qs;
      const float* dot = dout + i0 * dos;
      row_blocks(pb, i0, rows, j0, cols, [&](int64_t r0, int64_t r1, int64_t c) {  // S = q·kᵀ
        gemm(r1 - r0, c, D, qt + r0 * qs, qs, 1, sc.kt.data(), ld, s + r0 * ld, ld, false);
      });
      for (int64_t r = 0; r < rows; ++r) {  // P = exp(scale·S + bias − L), visible keys only (as forward)
        float* sr = s + r * ld;
        const float l = lse[i0 + r];
        const int64_t lim = l == kNegInf ? 0 : visible_in_tile(pb, i0 + r, j0, cols);
        const int64_t nr = std::min(round_up_lanes(lim), n);
        for (int64_t c = 0; c < nr; ++c) {
          const float x = sr[c] * pb.scale + bias[c];
          sr[c] = c < lim && x != kNegInf ? vmath::vexp(x - l) : 0.0f;
        }
        std::fill(sr + nr, sr + n, 0.0f);
        if (pb.drop.active()) {  // Z past the visible keys multiplies P = 0; keep it finite
          float* zr = z + r * ld;
          if (lim > 0) dropout_row(pb, bh, i0 + r, j0, lim, sc.bits.data(), zr);
          std::fill(zr + lim, zr + cols, 0.0f);
        }
      }
      if (pb.drop.active()) {  // P ∘ Z
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c) dp[r * ld + c] = s[r * ld + c] * z[r * ld + c];
      }
      const float* pz = pb.drop.active() ? dp : s;
      key_blocks(pb, i0, rows, j0, cols, [&](int64_t c0, int64_t c1, int64_t r) {  // dV += (P ∘ Z)ᵀ·dO
        gemm(c1 - c0, D, rows - r, pz + r * ld + c0, 1, ld, dot + r * dos, dos, dv + (j0 + c0) * dvs, dvs, true);
      });
      row_blocks(pb, i0, rows, j0, cols, [&](int64_t r0, int64_t r1, int64_t c) {  // dP = dO·vᵀ
        gemm(r1 - r0, c, D, dot + r0 * dos, dos, 1, sc.vt.data(), ld, dp + r0 * ld, ld, false);
      });
      for (int64_t r = 0; r < rows; ++r) {  // dS = scale · P ∘ (dP ∘ Z − D_i), into s (0 where P is)
        float* sr = s + r * ld;
        const float* dpr = dp + r * ld;
        const float di = dsum[i0 + r];
        const int64_t lim = visible_in_tile(pb, i0 + r, j0, cols);
        if (pb.drop.active()) {
          const float* zr = z + r * ld;
          for (int64_t c = 0; c < lim; ++c) sr[c] = pb.scale * sr[c] * (dpr[c] * zr[c] - di);
        } else {
          for (int64_t c = 0; c < lim; ++c) sr[c] = pb.scale * sr[c] * (dpr[c] - di);
        }
      }
      row_blocks(pb, i0, rows, j0, cols, [&](int64_t r0, int64_t r1, int64_t c) {  // dQ += dS·k
        gemm(r1 - r0, D, c, s + r0 * ld, ld, 1, k + j0 * ks, ks, dq + (i0 + r0) * dqs, dqs, true);
      });
      key_blocks(pb, i0, rows, j0, cols, [&](int64_t c0, int64_t c1, int64_t r) {  // dK += dSᵀ·q
        gemm(c1 - c0, D, rows - r, s + r * ld + c0, 1, ld, qt + r * qs, qs, dk + (j0 + c0) * dks, dks, true);
      });
    }
  }
}

// ---------------------------------------------------------------- argument checks

void check_input(const Tensor& t, const char* what) {
  TFM_CHECK(t.defined(), "flash_attention: ", what, " is undefined");
  TFM_CHECK(t.dtype() == DType::f32, "flash_attention: ", what, " must be f32, got ", dtype_name(t.dtype()));
  TFM_CHECK(t.dim() == 4, "flash_attention: ", what, " ", shape_str(t.shape()), " must be [B, H, T, D]");
}

void check_options(const FlashOptions& opt) {
  TFM_CHECK(opt.q_tile >= 1 && opt.q_tile <= 1024, "flash_attention: q_tile must be in [1, 1024], got ",
            opt.q_tile);
  TFM_CHECK(opt.kv_tile >= 1 && opt.kv_tile <= 4096, "flash_attention: kv_tile must be in [1, 4096], got ",
            opt.kv_tile);
}

Problem make_problem(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask, float scale,
                     const FlashDropout& drop, const FlashOptions& opt) {
  check_input(q, "q");
  check_input(k, "k");
  check_input(v, "v");
  check_options(opt);
  const Shape& qs = q.shape();
  TFM_CHECK(k.shape() == v.shape(), "flash_attention: k ", shape_str(k.shape()), " and v ", shape_str(v.shape()),
            " must have the same shape");
  TFM_CHECK(k.size(0) == qs[0] && k.size(1) == qs[1] && k.size(3) == qs[3], "flash_attention: q ", shape_str(qs),
            " and k ", shape_str(k.shape()), " must agree in B, H and D");
  TFM_CHECK(qs[3] >= 1, "flash_attention: head dim must be >= 1, got ", qs[3]);
  TFM_CHECK(drop.p >= 0.0f && drop.p <= 1.0f, "flash_attention: dropout_p must be in [0, 1], got ", drop.p);
  Problem pb{qs[0], qs[1], qs[2], k.size(2), qs[3], scale, mask.causal, mask.q_offset, nullptr, 0, drop,
             drop.p < 1.0f ? 1.0f / (1.0f - drop.p) : 0.0f,
             // Tiles no longer than the sequences: the same tiling, smaller scratch.
             std::min(opt.q_tile, std::max<int64_t>(qs[2], 1)), std::min(opt.kv_tile, std::max<int64_t>(k.size(2), 1)),
             0};
  pb.ld = round_up_lanes(pb.kv_tile) + kLanes;
  if (mask.key_padding.defined()) {
    const Tensor& kp = mask.key_padding;
    TFM_CHECK(kp.dtype() == DType::f32 && kp.dim() == 2 && (kp.size(0) == pb.batch || kp.size(0) == 1) &&
                  kp.size(1) == pb.tk,
              "flash_attention: key_padding ", shape_str(kp.shape()), " must be f32 [", pb.batch, ", ", pb.tk,
              "] (or [1, ", pb.tk, "])");
    TFM_CHECK(kp.is_contiguous(), "flash_attention: key_padding must be contiguous");
    pb.padding = kp.data<float>();
    pb.padding_batch_stride = kp.size(0) == 1 ? 0 : pb.tk;
  }
  return pb;
}

// The kernels read rows through strides but each row's D values in a run.
bool unit_stride_rows(const Tensor& t) { return t.size(3) == 1 || t.stride(3) == 1; }

// `t` without history, copied only when its rows are not unit-stride (the
// layer's q, k, v slices and dO are read in place).
Tensor with_unit_rows(const Tensor& t) { return unit_stride_rows(t) ? t.detach() : t.detach().contiguous(); }

void check_rows(const Tensor& t, const char* what) {
  TFM_CHECK(unit_stride_rows(t) || t.numel() == 0, "flash_attention: ", what, " ", shape_str(t.shape()),
            " needs a unit stride in its last dim (strides ", shape_str(t.strides()), ")");
}

// A [B, H, T, D] result laid out [B, T, H, D]: its heads merge back into
// [B, T, H·D] as a view.
Tensor empty_heads(const Shape& s) { return empty({s[0], s[2], s[1], s[3]}).permute({0, 2, 1, 3}); }

}  // namespace

// ---------------------------------------------------------------- kernels

FlashResult flash_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                                    float scale, const FlashDropout& drop, const FlashOptions& opt) {
  const Problem pb = make_problem(q, k, v, mask, scale, drop, opt);
  check_rows(q, "q");
  check_rows(k, "k");
  check_rows(v, "v");
  FlashResult res{empty_heads(q.shape()), empty({pb.batch, pb.heads, pb.tq})};
  if (q.numel() == 0 || k.numel() == 0) {
    res.out.fill_(0.0f);
    res.lse.fill_(kNegInf);
    return res;
  }
  const auto qh = heads_of<const float>(q), kh = heads_of<const float>(k), vh = heads_of<const float>(v);
  const auto oh = heads_of<float>(res.out);
  float* lp = res.lse.data<float>();
  const int64_t tiles = (pb.tq + pb.q_tile - 1) / pb.q_tile;
  const Tensor kt = transpose_key_tiles(pb, kh);
  const float* ktp = kt.data<float>();
  const int64_t kt_head = kt.numel() / std::max<int64_t>(1, pb.batch * pb.heads);
  parallel_items(pb, false, pb.batch * pb.heads * tiles, [&](int64_t it, Scratch& sc) {
    const int64_t bh = it / tiles, i0 = (it % tiles) * pb.q_tile;
    forward_query_tile(pb, bh, i0, std::min(pb.q_tile, pb.tq - i0), qh.head(bh), qh.rs, ktp + bh * kt_head,
                       vh.head(bh), vh.rs, oh.head(bh), oh.rs, lp + bh * pb.tq, sc);
  });
  return res;
}

namespace {

// The backward into caller-provided gradients (shapes of q, k, v, unit
// stride in D; views are fine: every row is written).
void backward_into(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, const Tensor& lse,
                   const Tensor& dout, const AttentionMask& mask, float scale, const FlashDropout& drop,
                   const FlashOptions& opt, const FlashGrads& g) {
  const Problem pb = make_problem(q, k, v, mask, scale, drop, opt);
  for (const auto& [t, what] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}, {&o, "o"}, {&dout, "dout"}})
    check_rows(*t, what);
  TFM_CHECK(o.shape() == q.shape() && dout.shape() == q.shape(), "flash_attention backward: o ",
            shape_str(o.shape()), " and dout ", shape_str(dout.shape()), " must be ", shape_str(q.shape()));
  TFM_CHECK(lse.is_contiguous() && lse.shape() == Shape({pb.batch, pb.heads, pb.tq}),
            "flash_attention backward: lse ", shape_str(lse.shape()), " must be contiguous [B, H, Tq]");
  if (q.numel() == 0 || k.numel() == 0) {
    for (const Tensor* t : {&g.dq, &g.dk, &g.dv}) t->detach().fill_(0.0f);
    return;
  }
  const BackwardArgs args{heads_of<const float>(q),    heads_of<const float>(k), heads_of<const float>(v),
                          heads_of<const float>(o),    heads_of<const float>(dout), lse.data<float>(),
                          heads_of<float>(g.dq),       heads_of<float>(g.dk),    heads_of<float>(g.dv)};
  parallel_items(pb, true, pb.batch * pb.heads, [&](int64_t bh, Scratch& sc) { backward_head(pb, bh, args, sc); });
}

}  // namespace

FlashGrads flash_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                                    const Tensor& lse, const Tensor& dout, const AttentionMask& mask, float scale,
                                    const FlashDropout& drop, const FlashOptions& opt) {
  FlashGrads g{empty_heads(q.shape()), empty_heads(k.shape()), empty_heads(v.shape())};
  backward_into(q, k, v, o, lse, dout, mask, scale, drop, opt, g);
  return g;
}

// ---------------------------------------------------------------- autograd op

namespace {

// One call's inputs as the kernels take them (history-free, unit-stride
// rows, contiguous padding) and its dropout stream, reserved from `gen`
// after the arguments were checked (a rejected call leaves it as it was).
struct Call {
  Tensor q, k, v;
  AttentionMask mask;
  FlashDropout drop;
};

Call prepare_call(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask, float scale,
                  float dropout_p, bool training, Generator& gen, const FlashOptions& opt) {
  check_input(q, "q");
  check_input(k, "k");
  check_input(v, "v");
  TFM_CHECK(dropout_p >= 0.0f && dropout_p <= 1.0f, "flash_attention: dropout_p must be in [0, 1], got ", dropout_p);
  Call c{with_unit_rows(q), with_unit_rows(k), with_unit_rows(v), mask, {}};
  if (c.mask.key_padding.defined()) c.mask.key_padding = c.mask.key_padding.detach().contiguous();
  if (training && dropout_p > 0.0f) {
    const uint64_t n = static_cast<uint64_t>(q.size(0) * q.size(1) * q.size(2) * k.size(2));
    c.drop = FlashDropout{dropout_p, gen.seed(), 0};
    make_problem(c.q, c.k, c.v, c.mask, scale, c.drop, opt);
    c.drop.first = gen.reserve((n + 3) / 4);
  }
  return c;
}

// Part `i` (0 q, 1 k, 2 v) of a packed [B, T, 3·H·D] tensor as [B, H, T, D].
Tensor packed_part(const Tensor& qkv, int64_t heads, int64_t i) {
  const int64_t B = qkv.size(0), T = qkv.size(1), C = qkv.size(2) / 3;
  return qkv.slice(2, i * C, (i + 1) * C).reshape({B, T, heads, C / heads}).permute({0, 2, 1, 3});
}

}  // namespace

FlashResult flash_attention_with_lse(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                                     float scale, float dropout_p, bool training, Generator& gen,
                                     const FlashOptions& opt) {
  const Call c = prepare_call(q, k, v, mask, scale, dropout_p, training, gen, opt);
  FlashResult res = flash_attention_forward(c.q, c.k, c.v, c.mask, scale, c.drop, opt);
  if (needs_grad({&q, &k, &v})) {
    const Tensor o = res.out.detach(), lse = res.lse;
    record(res.out, "flash_attention", {q, k, v}, [c, o, lse, scale, opt](const Tensor& g) {
      FlashGrads gr = flash_attention_backward(c.q, c.k, c.v, o, lse, with_unit_rows(g), c.mask, scale, c.drop, opt);
      return std::vector<Tensor>{gr.dq, gr.dk, gr.dv};
    });
  }
  return res;
}

Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask, float scale,
                       float dropout_p, bool training, Generator& gen, const FlashOptions& opt) {
  profile::OpScope prof(profile::Kind::attention);
  return flash_attention_with_lse(q, k, v, mask, scale, dropout_p, training, gen, opt).out;
}

Tensor flash_attention_packed(const Tensor& qkv, int64_t heads, const AttentionMask& mask, float scale,
                              float dropout_p, bool training, Generator& gen, const FlashOptions& opt) {
  profile::OpScope prof(profile::Kind::attention);
  TFM_CHECK(qkv.defined() && qkv.dtype() == DType::f32 && qkv.dim() == 3, "flash_attention_packed: qkv must be f32 ",
            "[B, T, 3·H·D]", qkv.defined() ? ", got " + shape_str(qkv.shape()) : std::string());
  TFM_CHECK(heads >= 1 && qkv.size(2) % (3 * heads) == 0 && qkv.size(2) > 0, "flash_attention_packed: last dim ",
            qkv.size(2), " of qkv ", shape_str(qkv.shape()), " must be a positive multiple of 3 · heads (heads = ",
            heads, ")");
  const Tensor x = qkv.detach();
  const Call c = prepare_call(packed_part(x, heads, 0), packed_part(x, heads, 1), packed_part(x, heads, 2), mask,
                              scale, dropout_p, training, gen, opt);
  FlashResult res = flash_attention_forward(c.q, c.k, c.v, c.mask, scale, c.drop, opt);
  if (needs_grad({&qkv})) {
    // One gradient for the whole projection, each part written in place by
    // the backward (which sets every row): no zero-filled [B, T, 3·H·D] and
    // no slice-by-slice accumulation.
    const Tensor o = res.out.detach(), lse = res.lse;
    record(res.out, "flash_attention", {qkv}, [c, o, lse, scale, opt, heads, shape = qkv.shape()](const Tensor& g) {
      Tensor gx = empty(shape);
      backward_into(c.q, c.k, c.v, o, lse, with_unit_rows(g), c.mask, scale, c.drop, opt,
                    {packed_part(gx, heads, 0), packed_part(gx, heads, 1), packed_part(gx, heads, 2)});
      return std::vector<Tensor>{gx};
    });
  }
  return res.out;
}

}  // namespace tfm::core
