// Reformer LSH self-attention (Kitaev, Kaiser, Levskaya, ICLR 2020) as a
// fused kernel with a hand-written backward.
//
// Shapes: B batch, H heads, T length, D head dim. Queries and keys share
// one projection qk [B, H, T, D]; the keys are the RMS-normalised qk,
// k̂ = qk · (mean(qk²) + 1e-6)^−½, and a score is scale · qk_i · k̂_j. With
// scale = 1/√D that is qk_i · qk_j/‖qk_j‖, the score of trax and HF (whose
// keys are RMS-normalised and divided by √D, i.e. unit length).
//
// Algorithm (one call):
//  1. T is padded internally to Tp, the next multiple of chunk_length (the
//     caller never picks lengths to please the kernel).
//  2. Hashing, per round r: a fresh random rotation R_r [D, n/2] per head
//     (shared by the batch) from the generator; bucket = argmax([xR; −xR])
//     of the raw qk. With factors {n1, n2} (large derived bucket counts, as
//     trax/HF) the rotation has n1/2 + n2/2 columns and
//     bucket = argmax over the first part + n1 · argmax over the second.
//     Padding (internal, or key_padding != 0) goes to the extra bucket
//     n_buckets, so it sorts to the end and never moves a valid token.
//  3. Per round, a stable sort by (bucket, position); the sorted round is cut
//     into chunks of chunk_length; a chunk attends to itself and the previous
//     chunk of the same round (chunk 0 looks back at the round's last chunk,
//     the wrap-around of paper Eq. 5, HF and trax; with one chunk only to
//     itself).
//  4. Masks by original positions: causal (keys after the query excluded),
//     key padding excluded, and the self-mask: a query's own key scores
//     −1e5 instead of its dot product, so it sees itself only when nothing
//     else is visible. A query that sees nothing gets 0.
//  5. Rounds are combined by their log-sum-exps, o = Σ_r softmax_r(lse_r)·o_r
//     (duplicate pairs across rounds are not de-counted, as current trax/HF).
//
// Memory: the node saves qk, v, the output, the softmax statistics
// [B, H, T, 2] (row max and sum) and the sort order i32 [B, H, n_hashes, Tp];
// the backward recomputes scores chunk by chunk.
// Peak memory is O(T · (D + n_hashes)) per head, never T². The backward is
// exact for the buckets chosen in the forward (the order is saved).
//
// Generation (KV cache, one new position per step): sorting is global over
// the sequence, so an incremental step cannot reproduce the training
// neighbourhoods cheaply. The fallback (used by the "lsh" backend) is
// shared_qk_attention() below: full shared-QK attention of the new
// positions over the cached (un-normalised) qk and v, with normalised keys,
// the self-mask and the causal/padding mask. It costs O(T) per step. (The
// other option, re-hashing the whole growing sequence every step with
// lsh_attention, costs O(T · chunk) per step and still draws fresh
// rotations, so it matches training no better.)
//
// Recomputation (reversible layers, activation checkpointing): replay with
// lsh_attention_hashed and the LshHashing of the first forward (and, with
// dropout, a generator restored to the state it had) instead of hashing
// again: reconstructed inputs differ by rounding, which can flip a bucket
// (trax and HF cache the buckets for the same reason).
//
// Causality: given the buckets, the causal mask is exact (no output depends
// on a later token's qk or v). The bucket assignment itself is global: a
// later token's qk decides its bucket and so can shift which earlier keys
// share an earlier query's chunk (inherent in sort-and-chunk LSH, as in
// trax/HF). Changing a later token's v never changes earlier outputs.
#pragma once

#include <cstdint>
#include <vector>

#include "core/attention_mask.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "layers/attention_backend.h"

namespace tfm::layers {

using core::Tensor;

struct LshOptions {
  int64_t chunk_length = 64;
  int64_t n_hashes = 1;
  // Even, >= 2. 0: derived from the padded length Tp: 2^⌊log2(2·Tp/chunk)⌋
  // (at least 2), factorised into {2^⌊p/2⌋, 2^⌈p/2⌉} when it exceeds
  // 2·max(chunk, √(Tp/chunk)) (HF's _set_num_buckets rule).
  int64_t n_buckets = 0;
};

// Everything one call chose, enough to replay it exactly (tests, the
// reversible-layer recomputation, inspection).
struct LshHashing {
  int64_t length = 0;         // T
  int64_t padded_length = 0;  // Tp, a multiple of chunk_length
  int64_t chunk_length = 0;
  int64_t n_hashes = 0;
  int64_t n_buckets = 0;                // product of bucket_factors; also the padding bucket's id
  std::vector<int64_t> bucket_factors;  // {n} or {n1, n2}
  Tensor rotations;  // f32 [H, D, n_hashes, Σ factors / 2]
  Tensor buckets;    // i32 [B, H, n_hashes, Tp], padding = n_buckets
  Tensor order;      // i32 [B, H, n_hashes, Tp]: sorted slot s -> original position (>= T: internal padding)
};

// T rounded up to a multiple of chunk_length.
int64_t lsh_padded_length(int64_t length, int64_t chunk_length);
// The bucket factors for a padded length (see LshOptions::n_buckets).
std::vector<int64_t> lsh_bucket_factors(const LshOptions& opt, int64_t padded_length);

// Draws the random rotations [H, D, n_hashes, Σ factors / 2] (standard
// normal) from gen; replaying the generator state replays them.
Tensor lsh_random_rotations(int64_t heads, int64_t dim, int64_t n_hashes, const std::vector<int64_t>& factors,
                            core::Generator& gen);

// Buckets and stable sort order for qk [B, H, T, D] under given rotations.
// mask.key_padding (if any) sends padded tokens to the padding bucket.
LshHashing lsh_hash(const Tensor& qk, const core::AttentionMask& mask, int64_t chunk_length, const Tensor& rotations,
                    const std::vector<int64_t>& factors);

// Stable counting sort of each round of buckets i32 [B, H, R, Tp] (values
// in [0, n_buckets]) by (bucket, position): i32 [B, H, R, Tp] of positions.
Tensor lsh_sort_order(const Tensor& buckets, int64_t n_buckets);

// LSH attention with the hashing fixed (e.g. replayed from a trace).
// qk, v [B, H, T, D] -> [B, H, T, D]; gradients flow to qk and v.
// mask.q_offset must be 0 (this is self-attention over the whole sequence).
// dropout_p in [0, 1): dropout on the attention probabilities (pass 0 when
// not training), its mask from gen's counter stream (required when
// dropout_p > 0); layers/chunked_attention.h gives the counter layout.
Tensor lsh_attention_hashed(const Tensor& qk, const Tensor& v, const core::AttentionMask& mask, float scale,
                            const LshHashing& hashing, float dropout_p = 0.0f, core::Generator* gen = nullptr);

// The whole layer: draws rotations from gen, hashes, sorts and attends
// (dropout, if any, draws its counters from gen after the rotations).
// When trace is non-null it receives the hashing used.
Tensor lsh_attention(const Tensor& qk, const Tensor& v, const core::AttentionMask& mask, float scale,
                     const LshOptions& opt, core::Generator& gen, LshHashing* trace = nullptr,
                     float dropout_p = 0.0f);

// Full shared-QK attention (the generation fallback, composed from core
// ops, differentiable): queries qk_q [B, H, Tq, D] at positions
// q_offset + i, keys/values from qk, v [B, H, Tk, D] (keys normalised as
// above); the key at the query's own position scores −1e5; causal and key
// padding as in AttentionMask. -> [B, H, Tq, D].
Tensor shared_qk_attention(const Tensor& qk_q, const Tensor& qk, const Tensor& v, const core::AttentionMask& mask,
                           float scale);
// Its probabilities [B, H, Tq, Tk] (shared_qk_attention = these · v).
Tensor shared_qk_probabilities(const Tensor& qk_q, const Tensor& qk, const core::AttentionMask& mask, float scale);

// The dense reconstruction of what lsh_attention_hashed applies: P [B, H,
// T, T] with P[i, j] = Σ over the rounds in which query i saw key j of
// its weight in the softmax over all its (round, key) pairs (so a pair seen
// in two rounds counts twice), zero where the pair was never computed. A
// plain loop over the chunk neighbourhoods, independent of the kernel:
// lsh_attention_hashed(qk, v, ...) = P · v (without dropout). For
// inspection; O(T²) memory.
Tensor lsh_attention_probabilities(const Tensor& qk, const core::AttentionMask& mask, float scale,
                                   const LshHashing& hashing);

// Adapter with the attention backend's attend() arguments, for a module
// with the shared query/key projection (q and k must hold the same,
// un-normalised values: the same tensor, or e.g. a KV cache's copy of it): lsh_attention (dropout_p applied when training, rotations
// and mask from gen) when the call covers the whole sequence (q_offset = 0,
// Tq = Tk), else the generation fallback shared_qk_attention over the
// cached qk (no dropout).
//
// Recomputation hook (core/reversible.h): inside a recording tape scope the
// adapter records an LshTapeEntry (the hashing and the generator position
// after the rotations); inside a replaying scope it attends with the
// recorded hashing (lsh_attention_hashed, dropout from the same counters)
// instead of hashing the reconstructed input again.
// When `probabilities` is non-null it receives the weights applied, [B, H,
// Tq, Tk] (lsh_attention_probabilities of the hashing drawn, or
// shared_qk_probabilities on the fallback), before dropout.
Tensor lsh_backend_attend(const Tensor& q, const Tensor& k, const Tensor& v, const core::AttentionMask& mask,
                          float scale, float dropout_p, bool training, core::Generator& gen, const LshOptions& opt,
                          Tensor* probabilities = nullptr);

// The registry entry "lsh" (layers/attention_backend.h): shared query/key,
// causal and key-padding masks, dropout, reads chunk_length, n_hashes and
// n_buckets; self-attention only. kv_cache: a cached call (q_offset > 0 or
// Tq != Tk) uses the generation fallback shared_qk_attention (full
// shared-QK attention over everything cached), which differs from the
// bucketed forward used for training and for the prompt; equal to it when
// one chunk covers the context (chunk_length >= T). Rotations and dropout
// come from AttentionArgs::gen (required). The probe gets the dense
// reconstruction (zero where a pair was not computed).
AttentionBackendInfo lsh_attention_backend();

// What lsh_backend_attend keeps on a reversible stack's tape.
struct LshTapeEntry {
  LshHashing hashing;
  core::RngState after_rotations;
};

}  // namespace tfm::layers
