#include "lsh_attention.h"


#include <cmath>
#include <limits>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/reversible.h"
#include "layers/chunked_attention.h"

namespace tfm::layers {

namespace {

constexpr float kNormEps = 1e-6f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void check_qk_v(const Tensor& qk, const Tensor& v, const core::AttentionMask& mask) {
  TFM_CHECK(qk.defined() && v.defined() && qk.dim() == 4 && qk.shape() == v.shape(), "lsh_attention: qk ",
            qk.defined() ? core::shape_str(qk.shape()) : "undefined", " and v ",
            v.defined() ? core::shape_str(v.shape()) : "undefined", " must both be [B, H, T, D]");
  TFM_CHECK(qk.dtype() == core::DType::f32 && v.dtype() == core::DType::f32, "lsh_attention: qk and v must be f32");
  TFM_CHECK(qk.size(2) > 0 && qk.size(3) > 0, "lsh_attention: empty length or head dim in ",
            core::shape_str(qk.shape()));
  TFM_CHECK(mask.q_offset == 0, "lsh_attention: mask.q_offset must be 0 (got ", mask.q_offset,
            "); for cached generation use shared_qk_attention");
  if (mask.key_padding.defined()) {
    const Tensor& kp = mask.key_padding;
    TFM_CHECK(kp.dim() == 2 && kp.size(0) == qk.size(0) && kp.size(1) == qk.size(2), "lsh_attention: key_padding ",
              core::shape_str(kp.shape()), " is not [B, T] = [", qk.size(0), ", ", qk.size(2), "]");
  }
}

// f32 [B, T]: 1 for a usable key, 0 for a padded one (undefined: no padding).
Tensor key_usable(const core::AttentionMask& mask) {
  if (!mask.key_padding.defined()) return Tensor();
  std::vector<float> flags = mask.key_padding.to_vector();
  for (float& f : flags) f = f != 0.0f ? 0.0f : 1.0f;
  return core::from_vector(flags, mask.key_padding.shape());
}

// k̂ = x · (mean(x²) + eps)^−½ over the last dim; x contiguous [..., D].
Tensor normalize_keys(const Tensor& x) {
  Tensor out = core::empty(x.shape());
  const int64_t D = x.size(-1), rows = x.numel() / D;
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  core::parallel_for(rows, core::should_parallelize(x.numel()), [&](int64_t r) {
    const float* xr = xp + r * D;
    double ss = 0;
    for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(xr[d]) * xr[d];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / D + kNormEps));
    for (int64_t d = 0; d < D; ++d) op[r * D + d] = xr[d] * inv;
  });
  return out;
}

// dL/dx given dL/dk̂ for k̂ = normalize_keys(x): ρ·g − x·ρ³·(x·g)/D with
// ρ = (mean(x²) + eps)^−½.
Tensor normalize_keys_backward(const Tensor& x, const Tensor& grad) {
  Tensor out = core::empty(x.shape());
  const int64_t D = x.size(-1), rows = x.numel() / D;
  const float *xp = x.data<float>(), *gp = grad.data<float>();
  float* op = out.data<float>();
  core::parallel_for(rows, core::should_parallelize(x.numel()), [&](int64_t r) {
    const float *xr = xp + r * D, *gr = gp + r * D;
    double ss = 0, xg = 0;
    for (int64_t d = 0; d < D; ++d) {
      ss += static_cast<double>(xr[d]) * xr[d];
      xg += static_cast<double>(xr[d]) * gr[d];
    }
    const double rho = 1.0 / std::sqrt(ss / D + kNormEps);
    const float a = static_cast<float>(rho), b = static_cast<float>(rho * rho * rho * xg / D);
    for (int64_t d = 0; d < D; ++d) op[r * D + d] = a * gr[d] - b * xr[d];
  });
  return out;
}

int64_t rotation_width(const std::vector<int64_t>& factors) {
  int64_t w = 0;
  for (int64_t f : factors) {
    TFM_CHECK(f >= 2 && f % 2 == 0, "lsh_attention: bucket factor ", f, " must be even and >= 2");
    w += f / 2;
  }
  return w;
}

}  // namespace

int64_t lsh_padded_length(int64_t length, int64_t chunk_length) {
  TFM_CHECK(chunk_length >= 1, "lsh_attention: chunk_length must be >= 1 (got ", chunk_length, ")");
  return (length + chunk_length - 1) / chunk_length * chunk_length;
}

std::vector<int64_t> lsh_bucket_factors(const LshOptions& opt, int64_t padded_length) {
  if (opt.n_buckets != 0) {
    TFM_CHECK(opt.n_buckets >= 2 && opt.n_buckets % 2 == 0, "lsh_attention: n_buckets must be even and >= 2 (got ",
              opt.n_buckets, "), or 0 to derive it");
    return {opt.n_buckets};
  }
  TFM_CHECK(opt.chunk_length >= 1, "lsh_attention: chunk_length must be >= 1 (got ", opt.chunk_length, ")");
  const int64_t chunks = std::max<int64_t>(1, padded_length / opt.chunk_length);
  int p = 1;
  while ((int64_t{1} << (p + 1)) <= 2 * chunks) ++p;
  const int64_t n = int64_t{1} << p;
  const int64_t limit = 2 * std::max<int64_t>(opt.chunk_length, static_cast<int64_t>(std::sqrt(double(chunks))));
  if (n > limit) return {int64_t{1} << (p / 2), int64_t{1} << (p - p / 2)};
  return {n};
}

Tensor lsh_random_rotations(int64_t heads, int64_t dim, int64_t n_hashes, const std::vector<int64_t>& factors,
                            core::Generator& gen) {
  TFM_CHECK(heads >= 1 && dim >= 1 && n_hashes >= 1, "lsh_attention: heads ", heads, ", dim ", dim, " and n_hashes ",
            n_hashes, " must be >= 1");
  return core::randn({heads, dim, n_hashes, rotation_width(factors)}, gen);
}

LshHashing lsh_hash(const Tensor& qk, const core::AttentionMask& mask, int64_t chunk_length, const Tensor& rotations,
                    const std::vector<int64_t>& factors) {
  check_qk_v(qk, qk, mask);
  const int64_t B = qk.size(0), H = qk.size(1), T = qk.size(2), D = qk.size(3);
  const int64_t W = rotation_width(factors);
  TFM_CHECK(rotations.defined() && rotations.dim() == 4 && rotations.size(0) == H && rotations.size(1) == D &&
                rotations.size(3) == W,
            "lsh_attention: rotations ", rotations.defined() ? core::shape_str(rotations.shape()) : "undefined",
            " are not [H, D, n_hashes, Σ factors/2] = [", H, ", ", D, ", n_hashes, ", W, "]");
  LshHashing h;
  h.length = T;
  h.padded_length = lsh_padded_length(T, chunk_length);
  h.chunk_length = chunk_length;
  h.n_hashes = rotations.size(2);
  h.bucket_factors = factors;
  h.n_buckets = 1;
  for (int64_t f : factors) h.n_buckets *= f;
  h.rotations = rotations;
  const int64_t R = h.n_hashes, Tp = h.padded_length, nb = h.n_buckets;
  h.buckets = core::empty({B, H, R, Tp}, core::DType::i32);
  const Tensor x = qk.detach().contiguous(), rot = rotations.detach().contiguous();
  const Tensor ok = key_usable(mask);
  const float *xp = x.data<float>(), *rp = rot.data<float>(), *okp = ok.defined() ? ok.data<float>() : nullptr;
  int32_t* bp = h.buckets.data<int32_t>();
  core::parallel_for(B * H * R, core::should_parallelize(B * H * R * T * D * W), [&](int64_t bhr) {
    const int64_t b = bhr / (H * R), hh = (bhr / R) % H, r = bhr % R;
    std::vector<float> y(W);
    int32_t* out = bp + bhr * Tp;
    for (int64_t t = 0; t < Tp; ++t) {
      if (t >= T || (okp && okp[b * T + t] == 0.0f)) {
        out[t] = static_cast<int32_t>(nb);
        continue;
      }
      const float* xt = xp + ((b * H + hh) * T + t) * D;
      std::fill(y.begin(), y.end(), 0.0f);
      for (int64_t d = 0; d < D; ++d) {
        const float* rrow = rp + ((hh * D + d) * R + r) * W;
        for (int64_t w = 0; w < W; ++w) y[w] += xt[d] * rrow[w];
      }
      // argmax over [y; −y] per factor, mixed-radix combined.
      int64_t bucket = 0, radix = 1, col = 0;
      for (int64_t f : factors) {
        const int64_t half = f / 2;
        int64_t best = 0;
        float best_v = y[col];
        for (int64_t j = 1; j < f; ++j) {
          const float val = j < half ? y[col + j] : -y[col + j - half];
          if (val > best_v) best_v = val, best = j;
        }
        bucket += radix * best;
        radix *= f;
        col += half;
      }
      out[t] = static_cast<int32_t>(bucket);
    }
  });
  h.order = lsh_sort_order(h.buckets, nb);
  return h;
}

Tensor lsh_sort_order(const Tensor& buckets, int64_t n_buckets) {
  TFM_CHECK(buckets.defined() && buckets.dtype() == core::DType::i32 && buckets.dim() == 4,
            "lsh_sort_order: buckets must be i32 [B, H, R, Tp]");
  const Tensor bk = buckets.contiguous();
  const int64_t rows = bk.numel() / bk.size(3), Tp = bk.size(3);
  Tensor order = core::empty(bk.shape(), core::DType::i32);
  const int32_t* bp = bk.data<int32_t>();
  int32_t* op = order.data<int32_t>();
  for (int64_t i = 0; i < bk.numel(); ++i)
    TFM_CHECK(bp[i] >= 0 && bp[i] <= n_buckets, "lsh_sort_order: bucket ", bp[i], " outside [0, ", n_buckets, "]");
  std::vector<int64_t> start(static_cast<size_t>(n_buckets + 2));
  for (int64_t row = 0; row < rows; ++row) {
    const int32_t* b = bp + row * Tp;
    std::fill(start.begin(), start.end(), 0);
    for (int64_t t = 0; t < Tp; ++t) ++start[b[t] + 1];
    for (int64_t k = 1; k < n_buckets + 2; ++k) start[k] += start[k - 1];
    for (int64_t t = 0; t < Tp; ++t) op[row * Tp + start[b[t]]++] = static_cast<int32_t>(t);  // stable
  }
  return order;
}

Tensor lsh_attention_hashed(const Tensor& qk, const Tensor& v, const core::AttentionMask& mask, float scale,
                            const LshHashing& hashing, float dropout_p, core::Generator* gen) {
  check_qk_v(qk, v, mask);
  const int64_t B = qk.size(0), H = qk.size(1), T = qk.size(2), D = qk.size(3);
  const core::Shape order_shape{B, H, hashing.n_hashes, hashing.padded_length};
  TFM_CHECK(hashing.length == T && hashing.chunk_length >= 1 && hashing.padded_length % hashing.chunk_length == 0 &&
                hashing.padded_length >= T && hashing.order.defined() && hashing.order.shape() == order_shape &&
                hashing.order.dtype() == core::DType::i32,
            "lsh_attention: hashing (length ", hashing.length, ", order ",
            hashing.order.defined() ? core::shape_str(hashing.order.shape()) : "undefined",
            ") does not fit qk ", core::shape_str(qk.shape()));
  detail::ChunkedLayout lay;
  lay.batch = B, lay.heads = H, lay.length = T, lay.padded_length = hashing.padded_length, lay.dim = D;
  lay.chunk = hashing.chunk_length, lay.rounds = hashing.n_hashes;
  lay.wrap = true, lay.self_mask = true, lay.causal = mask.causal;
  detail::set_dropout(lay, dropout_p, gen, "lsh_attention");

  const Tensor qkc = qk.detach().contiguous(), vc = v.detach().contiguous();
  const Tensor order = hashing.order.contiguous(), ok = key_usable(mask);
  Tensor stats;
  Tensor out = detail::chunked_attention_forward(lay, qkc, normalize_keys(qkc), vc, order, ok, scale, stats);
  if (core::needs_grad({&qk, &v})) {
    const Tensor saved_out = out.detach();
    core::record(out, "lsh_attention", {qk, v}, [=](const Tensor& grad_out) {
      const Tensor go = grad_out.contiguous();
      auto g = detail::chunked_attention_backward(lay, qkc, normalize_keys(qkc), vc, order, ok, scale, saved_out,
                                                  stats, go);
      g.dq.add_(normalize_keys_backward(qkc, g.dk));
      return std::vector<Tensor>{g.dq, g.dv};
    });
  }
  return out;
}

Tensor lsh_attention(const Tensor& qk, const Tensor& v, const core::AttentionMask& mask, float scale,
                     const LshOptions& opt, core::Generator& gen, LshHashing* trace, float dropout_p) {
  check_qk_v(qk, v, mask);
  TFM_CHECK(opt.n_hashes >= 1, "lsh_attention: n_hashes must be >= 1 (got ", opt.n_hashes, ")");
  const int64_t Tp = lsh_padded_length(qk.size(2), opt.chunk_length);
  const std::vector<int64_t> factors = lsh_bucket_factors(opt, Tp);
  const Tensor rotations = lsh_random_rotations(qk.size(1), qk.size(3), opt.n_hashes, factors, gen);
  LshHashing h = lsh_hash(qk, mask, opt.chunk_length, rotations, factors);
  Tensor out = lsh_attention_hashed(qk, v, mask, scale, h, dropout_p, &gen);
  if (trace) *trace = std::move(h);
  return out;
}

Tensor shared_qk_attention(const Tensor& qk_q, const Tensor& qk, const Tensor& v, const core::AttentionMask& mask,
                           float scale) {
  TFM_CHECK(v.defined() && qk.defined() && qk.shape() == v.shape(),
            "shared_qk_attention: queries [B, H, Tq, D] and keys/values [B, H, Tk, D] do not match");
  return core::matmul(shared_qk_probabilities(qk_q, qk, mask, scale), v);
}

Tensor shared_qk_probabilities(const Tensor& qk_q, const Tensor& qk, const core::AttentionMask& mask, float scale) {
  TFM_CHECK(qk_q.defined() && qk.defined() && qk_q.dim() == 4 && qk.dim() == 4 && qk_q.size(0) == qk.size(0) &&
                qk_q.size(1) == qk.size(1) && qk_q.size(3) == qk.size(3),
            "shared_qk_attention: queries [B, H, Tq, D] and keys/values [B, H, Tk, D] do not match");
  const int64_t B = qk.size(0), Tq = qk_q.size(2), Tk = qk.size(2);
  const Tensor khat = core::mul(qk, core::rsqrt(core::add(core::mean(core::mul(qk, qk), {-1}, true), kNormEps)));
  Tensor scores = core::matmul(core::mul(qk_q, scale), khat, false, true);  // [B, H, Tq, Tk]
  std::vector<float> self(static_cast<size_t>(Tq * Tk), 0.0f), bias(static_cast<size_t>(Tq * Tk), 0.0f);
  for (int64_t i = 0; i < Tq; ++i)
    for (int64_t j = 0; j < Tk; ++j) {
      if (j == mask.q_offset + i) self[i * Tk + j] = 1.0f;
      if (mask.causal && j > mask.q_offset + i) bias[i * Tk + j] = kNegInf;
    }
  scores = core::where(core::from_vector(self, {Tq, Tk}), core::scalar_tensor(detail::kSelfMaskScore), scores);
  if (mask.causal) scores = core::add(scores, core::from_vector(bias, {Tq, Tk}));
  if (mask.key_padding.defined()) {
    TFM_CHECK(mask.key_padding.dim() == 2 && mask.key_padding.size(0) == B && mask.key_padding.size(1) == Tk,
              "shared_qk_attention: key_padding ", core::shape_str(mask.key_padding.shape()), " is not [B, Tk] = [",
              B, ", ", Tk, "]");
    std::vector<float> pad = mask.key_padding.to_vector();
    for (float& f : pad) f = f != 0.0f ? kNegInf : 0.0f;
    scores = core::add(scores, core::from_vector(pad, {B, 1, 1, Tk}));
  }
  return core::softmax(scores, -1);
}

Tensor lsh_attention_probabilities(const Tensor& qk, const core::AttentionMask& mask, float scale,
                                   const LshHashing& h) {
  check_qk_v(qk, qk, mask);
  const int64_t B = qk.size(0), H = qk.size(1), T = qk.size(2), D = qk.size(3);
  const int64_t R = h.n_hashes, Tp = h.padded_length, C = h.chunk_length;
  TFM_CHECK(h.length == T && C >= 1 && Tp % C == 0 && h.order.defined() &&
                h.order.shape() == core::Shape({B, H, R, Tp}),
            "lsh_attention_probabilities: hashing does not fit qk ", core::shape_str(qk.shape()));
  const Tensor x = qk.detach().contiguous(), khat = normalize_keys(x), order = h.order.contiguous();
  const Tensor ok = key_usable(mask);
  const float *xp = x.data<float>(), *kp = khat.data<float>(), *okp = ok.defined() ? ok.data<float>() : nullptr;
  const int32_t* op = order.data<int32_t>();
  Tensor P = core::zeros({B, H, T, T});
  float* pp = P.data<float>();
  const int64_t n_chunks = Tp / C;
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const int64_t b = bh / H;
    // Every (round, query, key) pair computed, with its score.
    struct Pair {
      int64_t key;
      double score;
    };
    std::vector<std::vector<Pair>> pairs(static_cast<size_t>(T));
    for (int64_t r = 0; r < R; ++r) {
      const int32_t* ord = op + (bh * R + r) * Tp;
      for (int64_t s = 0; s < Tp; ++s) {
        const int64_t i = ord[s];
        if (i >= T) continue;
        const int64_t c = s / C;
        std::vector<int64_t> chunks{c};
        const int64_t prev = c > 0 ? c - 1 : n_chunks - 1;  // wrap-around
        if (n_chunks > 1) chunks.push_back(prev);
        for (int64_t cc : chunks)
          for (int64_t s2 = cc * C; s2 < (cc + 1) * C; ++s2) {
            const int64_t j = ord[s2];
            if (j >= T || (okp && okp[b * T + j] == 0.0f) || (mask.causal && j > i)) continue;
            double dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += double(xp[(bh * T + i) * D + d]) * kp[(bh * T + j) * D + d];
            pairs[i].push_back({j, j == i ? double(detail::kSelfMaskScore) : scale * dot});
          }
      }
    }
    for (int64_t i = 0; i < T; ++i) {
      if (pairs[i].empty()) continue;
      double m = -std::numeric_limits<double>::infinity(), l = 0;
      for (const Pair& p : pairs[i]) m = std::max(m, p.score);
      for (const Pair& p : pairs[i]) l += std::exp(p.score - m);
      for (const Pair& p : pairs[i]) pp[(bh * T + i) * T + p.key] += static_cast<float>(std::exp(p.score - m) / l);
    }
  }
  return P;
}

namespace {

// lsh_attention inside a reversible stack's tape scope (core/reversible.h):
// the forward records its hashing and the generator position after the
// rotations; the recomputation attends with them instead of re-hashing the
// reconstructed input (which may differ in the last bits and flip a bucket).
Tensor lsh_taped_attention(const Tensor& qk, const Tensor& v, const core::AttentionMask& mask, float scale,
                           float dropout_p, core::Generator& gen, const LshOptions& opt) {
  if (core::tape_replaying()) {
    const auto* saved = std::any_cast<LshTapeEntry>(&core::tape_replay());
    TFM_CHECK(saved && saved->hashing.length == qk.size(2),
              "lsh attention: the recomputation does not match the hashing its forward recorded");
    gen.set_state(saved->after_rotations);
    return lsh_attention_hashed(qk, v, mask, scale, saved->hashing, dropout_p, &gen);
  }
  check_qk_v(qk, v, mask);
  const int64_t Tp = lsh_padded_length(qk.size(2), opt.chunk_length);
  const std::vector<int64_t> factors = lsh_bucket_factors(opt, Tp);
  LshTapeEntry entry;
  const Tensor rotations = lsh_random_rotations(qk.size(1), qk.size(3), opt.n_hashes, factors, gen);
  entry.after_rotations = gen.state();
  entry.hashing = lsh_hash(qk, mask, opt.chunk_length, rotations, factors);
  Tensor out = lsh_attention_hashed(qk, v, mask, scale, entry.hashing, dropout_p, &gen);
  core::tape_record(std::move(entry));
  return out;
}

}  // namespace

Tensor lsh_backend_attend(const Tensor& q, const Tensor& k, const Tensor& v, const core::AttentionMask& mask,
                          float scale, float dropout_p, bool training, core::Generator& gen, const LshOptions& opt,
                          Tensor* probabilities) {
  TFM_CHECK(q.defined() && k.defined(), "lsh attention: q and k must be defined");
  if (mask.q_offset != 0 || q.dim() != 4 || k.dim() != 4 || q.size(2) != k.size(2)) {
    if (probabilities) {
      core::NoGradGuard no_grad;
      *probabilities = shared_qk_probabilities(q, k, mask, scale);
    }
    return shared_qk_attention(q, k, v, mask, scale);
  }
  bool same = q.impl() == k.impl() || (q.shares_storage(k) && q.offset() == k.offset() &&
                                       q.shape() == k.shape() && q.strides() == k.strides());
  if (!same && q.shape() == k.shape()) {  // e.g. a prompt step: k is the cache's copy of q
    core::NoGradGuard no_grad;
    same = core::max(core::abs(core::sub(q, k))).item() == 0.0f;
  }
  TFM_CHECK(same, "lsh attention needs the shared query/key projection (q and k must hold the same values)");
  if (core::tape_active()) return lsh_taped_attention(q, v, mask, scale, training ? dropout_p : 0.0f, gen, opt);
  if (!probabilities) return lsh_attention(q, v, mask, scale, opt, gen, nullptr, training ? dropout_p : 0.0f);
  LshHashing hashing;
  Tensor out = lsh_attention(q, v, mask, scale, opt, gen, &hashing, training ? dropout_p : 0.0f);
  core::NoGradGuard no_grad;
  *probabilities = lsh_attention_probabilities(q, mask, scale, hashing);
  return out;
}

namespace {

class LshBackend final : public AttentionBackend {
 public:
  explicit LshBackend(LshOptions opt) : opt_(opt) {}
  const char* name() const override { return "lsh"; }
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& a) const override {
    TFM_CHECK(a.gen != nullptr, "lsh attention: needs a generator (AttentionArgs::gen) for its random rotations");
    return lsh_backend_attend(q, k, v, a.mask, a.scale, a.dropout_p, a.training, *a.gen, opt_, a.probabilities);
  }

 private:
  LshOptions opt_;
};

}  // namespace

AttentionBackendInfo lsh_attention_backend() {
  AttentionBackendInfo info;
  info.name = "lsh";
  info.help =
      "Reformer LSH: shared q/k, model.attention_n_hashes rounds of random-rotation buckets sorted into chunks of "
      "model.attention_chunk_length, a chunk sees itself and the previous one; generation with the KV cache "
      "attends each new token densely to all cached positions (full shared-QK attention), which differs from the "
      "bucketed training forward";
  info.supports.causal = info.supports.key_padding = info.supports.kv_cache = info.supports.dropout = true;
  info.shared_qk = true;
  info.reads = {"chunk_length", "n_hashes", "n_buckets"};
  info.make = [](const AttentionBackendOptions& o) {
    TFM_CHECK(o.n_buckets == 0 || (o.n_buckets >= 2 && o.n_buckets % 2 == 0), "model.attention_n_buckets = ",
              o.n_buckets, " is not allowed with model.attention = lsh (expected 0, to derive it, or an even number "
              ">= 2)");
    LshOptions opt;
    opt.chunk_length = o.chunk_length;
    opt.n_hashes = o.n_hashes;
    opt.n_buckets = o.n_buckets;
    return std::make_shared<LshBackend>(opt);
  };
  return info;
}

}  // namespace tfm::layers
