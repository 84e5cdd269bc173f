#include "chunked_attention.h"


#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/parallel.h"
#include "core/rng.h"

namespace tfm::layers::detail {

namespace {

using core::Tensor;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float* y, float a, const float* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// Per-thread scratch, allocated as tensors so core::memory_stats() counts it.
struct Scratch {
  Tensor f, i;  // f32 [threads, floats], i32 [threads, ints]
  int64_t floats, ints;
  Scratch(int threads, int64_t floats_, int64_t ints_)
      : f(core::empty({threads, floats_})), i(core::empty({threads, ints_}, core::DType::i32)),
        floats(floats_), ints(ints_) {}
  float* fl(int t) const { return f.data<float>() + t * floats; }
  int32_t* in(int t) const { return i.data<int32_t>() + t * ints; }
};

// Original positions of the usable keys that chunk `c` of a round sees: the
// previous chunk's (see the header for the wrap rule) then its own.
int64_t gather_chunk_keys(const ChunkedLayout& lay, const int32_t* ord, int64_t c, const float* key_ok,
                          int32_t* keys) {
  const int64_t n_chunks = lay.padded_length / lay.chunk;
  int64_t n = 0;
  auto add_chunk = [&](int64_t cc) {
    for (int64_t s = cc * lay.chunk; s < (cc + 1) * lay.chunk; ++s) {
      const int64_t t = ord ? ord[s] : s;
      if (t >= lay.length || (key_ok && key_ok[t] == 0.0f)) continue;
      keys[n++] = static_cast<int32_t>(t);
    }
  };
  const int64_t prev = c > 0 ? c - 1 : (lay.wrap ? n_chunks - 1 : -1);
  if (prev >= 0 && prev != c) add_chunk(prev);
  add_chunk(c);
  return n;
}

// Scores of query t (row qt) against keys[0, n): −inf where causally
// hidden, kSelfMaskScore for its own key under the self-mask. Returns the
// row maximum (−inf when nothing is visible).
float score_row(const ChunkedLayout& lay, const float* qt, int64_t t, const float* kb, const int32_t* keys,
                int64_t n, float scale, float* s) {
  float mx = kNegInf;
  for (int64_t j = 0; j < n; ++j) {
    const int64_t kj = keys[j];
    if (lay.causal && kj > t) {
      s[j] = kNegInf;
      continue;
    }
    s[j] = (lay.self_mask && kj == t) ? kSelfMaskScore : scale * dot(qt, kb + kj * lay.dim, lay.dim);
    mx = std::max(mx, s[j]);
  }
  return mx;
}

// The dropout multiplier of pair (round r, row bh, query t, key j): 0 or 1/(1 − p).
float dropout_multiplier(const ChunkedLayout& lay, int64_t r, int64_t bh, int64_t t, int64_t j) {
  const int64_t BH = lay.batch * lay.heads, T = lay.length;
  const uint64_t n = static_cast<uint64_t>(((r * BH + bh) * T + t) * T + j);
  const uint32_t bits = core::philox4x32(lay.dropout_seed, lay.dropout_first + n / 4)[n % 4];
  return core::bits_to_unit_float(bits) >= lay.dropout ? 1.0f / (1.0f - lay.dropout) : 0.0f;
}

void check_layout(const ChunkedLayout& lay, const Tensor& q, const Tensor& k, const Tensor& v,
                  const Tensor& order) {
  const core::Shape want{lay.batch, lay.heads, lay.length, lay.dim};
  TFM_CHECK(q.shape() == want && k.shape() == want && v.shape() == want && q.is_contiguous() &&
                k.is_contiguous() && v.is_contiguous(),
            "chunked attention: internal layout mismatch");
  TFM_CHECK(lay.chunk > 0 && lay.padded_length % lay.chunk == 0 && lay.padded_length >= lay.length,
            "chunked attention: internal chunking mismatch");
  TFM_CHECK(order.defined() || lay.rounds == 1, "chunked attention: several rounds need an order");
  TFM_CHECK(lay.dropout >= 0.0f && lay.dropout < 1.0f, "attention dropout must be in [0, 1), got ", lay.dropout);
}

}  // namespace

uint64_t chunked_dropout_counters(const ChunkedLayout& lay) {
  const uint64_t pairs = static_cast<uint64_t>(lay.rounds * lay.batch * lay.heads) *
                         static_cast<uint64_t>(lay.length) * static_cast<uint64_t>(lay.length);
  return (pairs + 3) / 4;
}

void set_dropout(ChunkedLayout& lay, float p, core::Generator* gen, const char* op) {
  TFM_CHECK(p >= 0.0f && p < 1.0f, op, ": dropout_p must be in [0, 1), got ", p);
  lay.dropout = p;
  if (p == 0.0f) return;
  TFM_CHECK(gen != nullptr, op, ": dropout_p > 0 needs a generator");
  lay.dropout_seed = gen->seed();
  lay.dropout_first = gen->reserve(chunked_dropout_counters(lay));
}

Tensor chunked_attention_forward(const ChunkedLayout& lay, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& order, const Tensor& key_ok, float scale, Tensor& stats) {
  check_layout(lay, q, k, v, order);
  const int64_t T = lay.length, Tp = lay.padded_length, D = lay.dim, BH = lay.batch * lay.heads;
  Tensor out = core::zeros({lay.batch, lay.heads, T, D});
  stats = core::empty({lay.batch, lay.heads, T, 2});
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(core::num_threads(), BH)));
  Scratch scratch(threads, 2 * T + 2 * lay.chunk, 2 * lay.chunk);
  const float *qp = q.data<float>(), *kp = k.data<float>(), *vp = v.data<float>();
  const int32_t* op = order.defined() ? order.data<int32_t>() : nullptr;
  const float* okp = key_ok.defined() ? key_ok.data<float>() : nullptr;
  float *outp = out.data<float>(), *statp = stats.data<float>();

  const bool parallel = threads > 1 && !core::in_parallel();
  const bool dropping = lay.dropout > 0.0f;
  core::parallel_for_dynamic(BH, parallel ? threads : 1, [&](int64_t bh, int tid) {
    float* m = scratch.fl(tid);  // running max per query
    float* l = m + T;             // running Σ exp(s − m)
    float* s = l + T;
    int32_t* keys = scratch.in(tid);
    std::fill(m, m + T, kNegInf);
    std::fill(l, l + T, 0.0f);
    const float *qb = qp + bh * T * D, *kb = kp + bh * T * D, *vb = vp + bh * T * D;
    const float* ok = okp ? okp + (bh / lay.heads) * T : nullptr;
    float* ob = outp + bh * T * D;
    for (int64_t r = 0; r < lay.rounds; ++r) {
      const int32_t* ord = op ? op + (bh * lay.rounds + r) * Tp : nullptr;
      for (int64_t c = 0; c < Tp / lay.chunk; ++c) {
        const int64_t n = gather_chunk_keys(lay, ord, c, ok, keys);
        for (int64_t si = c * lay.chunk; si < (c + 1) * lay.chunk; ++si) {
          const int64_t t = ord ? ord[si] : si;
          if (t >= T) continue;
          const float mx = score_row(lay, qb + t * D, t, kb, keys, n, scale, s);
          if (mx == kNegInf) continue;
          const float m_new = std::max(m[t], mx);
          float* ot = ob + t * D;
          if (m[t] != m_new) {  // rescale what earlier rounds accumulated
            const float f = m[t] == kNegInf ? 0.0f : std::exp(m[t] - m_new);
            for (int64_t d = 0; d < D; ++d) ot[d] *= f;
            l[t] *= f;
            m[t] = m_new;
          }
          for (int64_t j = 0; j < n; ++j) {
            if (s[j] == kNegInf) continue;
            const float p = std::exp(s[j] - m_new);
            l[t] += p;
            const float keep = dropping ? dropout_multiplier(lay, r, bh, t, keys[j]) : 1.0f;
            if (keep != 0.0f) axpy(ot, p * keep, vb + static_cast<int64_t>(keys[j]) * D, D);
          }
        }
      }
    }
    float* st = statp + bh * T * 2;
    for (int64_t t = 0; t < T; ++t) {
      if (l[t] > 0.0f) {
        const float inv = 1.0f / l[t];
        for (int64_t d = 0; d < D; ++d) ob[t * D + d] *= inv;
      }  // else no visible key: zero output
      st[2 * t] = m[t], st[2 * t + 1] = l[t];
    }
  });
  return out;
}

ChunkedGrads chunked_attention_backward(const ChunkedLayout& lay, const Tensor& q, const Tensor& k, const Tensor& v,
                                        const Tensor& order, const Tensor& key_ok, float scale, const Tensor& out,
                                        const Tensor& stats, const Tensor& grad_out) {
  check_layout(lay, q, k, v, order);
  TFM_CHECK(grad_out.shape() == q.shape() && grad_out.is_contiguous() && out.is_contiguous() && stats.is_contiguous(),
            "chunked attention backward: internal layout mismatch");
  const int64_t T = lay.length, Tp = lay.padded_length, D = lay.dim, BH = lay.batch * lay.heads;
  ChunkedGrads g{core::zeros(q.shape()), core::zeros(k.shape()), core::zeros(v.shape())};
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(core::num_threads(), BH)));
  Scratch scratch(threads, T + 2 * lay.chunk, 2 * lay.chunk);
  const float *qp = q.data<float>(), *kp = k.data<float>(), *vp = v.data<float>();
  const float *outp = out.data<float>(), *statp = stats.data<float>(), *gop = grad_out.data<float>();
  const int32_t* op = order.defined() ? order.data<int32_t>() : nullptr;
  const float* okp = key_ok.defined() ? key_ok.data<float>() : nullptr;
  float *dqp = g.dq.data<float>(), *dkp = g.dk.data<float>(), *dvp = g.dv.data<float>();

  const bool parallel = threads > 1 && !core::in_parallel();
  const bool dropping = lay.dropout > 0.0f;
  core::parallel_for_dynamic(BH, parallel ? threads : 1, [&](int64_t bh, int tid) {
    float* delta = scratch.fl(tid);  // Δ_t = dO_t · O_t
    float* s = delta + T;
    int32_t* keys = scratch.in(tid);
    const int64_t base = bh * T * D;
    const float *qb = qp + base, *kb = kp + base, *vb = vp + base, *ob = outp + base, *gob = gop + base;
    const float* st = statp + bh * T * 2;
    const float* ok = okp ? okp + (bh / lay.heads) * T : nullptr;
    float *dqb = dqp + base, *dkb = dkp + base, *dvb = dvp + base;
    for (int64_t t = 0; t < T; ++t) delta[t] = dot(gob + t * D, ob + t * D, D);
    for (int64_t r = 0; r < lay.rounds; ++r) {
      const int32_t* ord = op ? op + (bh * lay.rounds + r) * Tp : nullptr;
      for (int64_t c = 0; c < Tp / lay.chunk; ++c) {
        const int64_t n = gather_chunk_keys(lay, ord, c, ok, keys);
        for (int64_t si = c * lay.chunk; si < (c + 1) * lay.chunk; ++si) {
          const int64_t t = ord ? ord[si] : si;
          if (t >= T || st[2 * t + 1] == 0.0f) continue;
          score_row(lay, qb + t * D, t, kb, keys, n, scale, s);
          const float mt = st[2 * t], inv_l = 1.0f / st[2 * t + 1];
          const float *go = gob + t * D, *qt = qb + t * D;
          float* dqt = dqb + t * D;
          for (int64_t j = 0; j < n; ++j) {
            if (s[j] == kNegInf) continue;
            const int64_t kj = keys[j];
            const float p = std::exp(s[j] - mt) * inv_l;
            const float keep = dropping ? dropout_multiplier(lay, r, bh, t, kj) : 1.0f;
            if (keep != 0.0f) axpy(dvb + kj * D, p * keep, go, D);
            if (lay.self_mask && kj == t) continue;  // a constant score: no gradient to q or k
            const float dp = keep != 0.0f ? keep * dot(go, vb + kj * D, D) : 0.0f;
            const float ds = scale * p * (dp - delta[t]);
            axpy(dqt, ds, kb + kj * D, D);
            axpy(dkb + kj * D, ds, qt, D);
          }
        }
      }
    }
  });
  return g;
}

}  // namespace tfm::layers::detail
