// Fused attention in FlashAttention-2 order (Dao, arXiv 2307.08691) for CPUs:
// softmax(scale·q·kᵀ + mask)·v without materialising the [Tq, Tk] scores.
//
// Shapes: B batch, H heads, Tq queries, Tk keys, D head dim.
//   q [B, H, Tq, D], k [B, H, Tk, D], v [B, H, Tk, D]  ->  o [B, H, Tq, D]
//   L (row log-sum-exp of the masked, scaled scores) [B, H, Tq]
// Any strides are accepted (non-contiguous inputs are copied once).
//
// Forward: one OpenMP work item per (batch·head, query tile of opt.q_tile
// rows). For each key tile of opt.kv_tile keys the score tile is computed,
// the running row maximum and sum are updated and the accumulator rescaled;
// O = acc / sum at the end. Only O and L are kept for backward. With a
// causal mask, key tiles wholly above the diagonal are never visited, and
// the products of a tile the diagonal cuts run in blocks of 12 rows (or
// keys), each over its part that is not all zero (forward and backward).
//
// Backward: D = rowsum(dO ∘ O); per tile P = exp(S − L) is recomputed, then
// dV += Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP − D), dQ += scale·dS K,
// dK += scale·dSᵀ Q. One thread owns a whole (batch, head), so nothing is
// accumulated by two threads: results are bitwise the same for every run and
// every thread count (the forward too: each output row is computed by one
// work item in a fixed order).
//
// Masking follows core/attention_mask.h exactly (causal: query i sees keys
// j <= q_offset + i; key_padding f32 [B, Tk] or [1, Tk] for the whole
// batch, non-zero = padded). A query
// with no visible key gets O = 0, L = -inf, and zero gradients.
//
// Dropout (training && dropout_p > 0) drops attention probabilities with the
// same mask core::dropout draws for the naive backend's [B, H, Tq, Tk]
// probability tensor: the generator reserves (B·H·Tq·Tk + 3) / 4 counters
// and element idx = ((b·H + h)·Tq + i)·Tk + j is kept when the uniform from
// word idx % 4 of philox4x32(seed, first + idx / 4) is >= dropout_p (kept
// values scaled by 1 / (1 − p)). The mask is regenerated in backward, never
// stored, so flash and naive agree for the same generator state.
//
// Memory: saves q, k, v (contiguous handles; no copy when already
// contiguous), O and L, i.e. O(T·D) per head. Transient: the forward
// transposes every key tile once ([B·H, Tk / kv_tile, D, ~kv_tile], about
// the size of k), and per-thread scratch (std::vector, not tensor memory)
// holds about 2·kv_tile·D + 3·q_tile·kv_tile + q_tile·D floats (~350 KB at
// the defaults and D = 64: well inside a 2 MiB L2).
//
// Tile products run through a register-blocked AVX-512 kernel in
// flash_attention.cpp (plain loops without AVX-512). core::matmul is not
// used inside the parallel region: the oneDNN backend serialises calls.
#pragma once

#include <cstdint>

#include "attention_mask.h"
#include "rng.h"
#include "tensor.h"

namespace tfm::core {

struct FlashOptions {
  int64_t q_tile = 64;    // query rows per work item, in [1, 1024]
  int64_t kv_tile = 256;  // keys per score tile, in [1, 4096]
};

struct FlashResult {
  Tensor out;  // [B, H, Tq, D]
  Tensor lse;  // [B, H, Tq]; -inf for a query with no visible key
};

// The attention backend entry point: o = dropout(softmax(scale·q·kᵀ + mask))·v.
// Differentiable in q, k and v (hand-written backward, see above).
Tensor flash_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask, float scale,
                       float dropout_p, bool training, Generator& gen, const FlashOptions& opt = {});

// Self-attention on a fused projection: qkv [B, T, 3·H·D] holds q, k and v
// in that order along its last dim, each laid out [H, D]. The same result
// (and bits, dropout stream included) as flash_attention on the three parts
// viewed as [B, H, T, D], but differentiable in qkv as one tensor: the
// backward writes dq, dk and dv straight into one [B, T, 3·H·D] gradient.
Tensor flash_attention_packed(const Tensor& qkv, int64_t heads, const AttentionMask& mask, float scale,
                              float dropout_p, bool training, Generator& gen, const FlashOptions& opt = {});

// The same, also returning L (for tests). `out` is differentiable, `lse` is not.
FlashResult flash_attention_with_lse(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                                     float scale, float dropout_p, bool training, Generator& gen,
                                     const FlashOptions& opt = {});

// The dropout stream of one call: keep (i, j) of head bh when the uniform
// of linear index (bh·Tq + i)·Tk + j from counter `first` on is >= p.
struct FlashDropout {
  float p = 0.0f;
  uint64_t seed = 0;
  uint64_t first = 0;
  bool active() const { return p > 0.0f; }
};

// The kernels on f32 [B, H, T, D] tensors with a unit stride in D and any
// other strides (no autograd). Results (out, dq, dk, dv) are [B, H, T, D]
// views of [B, T, H, D] storage. key_padding is undefined or contiguous [B, Tk].
FlashResult flash_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& mask,
                                    float scale, const FlashDropout& drop, const FlashOptions& opt);

struct FlashGrads {
  Tensor dq, dk, dv;  // shapes of q, k, v
};
// o, lse: the forward's outputs; dout [B, H, Tq, D] with a unit stride in D.
FlashGrads flash_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                                    const Tensor& lse, const Tensor& dout, const AttentionMask& mask, float scale,
                                    const FlashDropout& drop, const FlashOptions& opt);

}  // namespace tfm::core
