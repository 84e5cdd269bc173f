// Flash attention (core/flash_attention.h) against independent references:
// O, L, dQ, dK, dV from plain loops in double; the fp32 error of naive
// attention composed from core ops (matmul, softmax, matmul + autograd) sets
// the tolerance (flash error <= 3 × naive error + 1e-6, the criterion of the
// flash-attn test suite); finite differences at tiny sizes; tile-size and
// thread-count invariance; dropout against core::dropout's mask.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/flash_attention.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "layers/positions.h"
#include "tests/gradcheck.h"

namespace {

namespace core = tfm::core;
using core::AttentionMask;
using core::FlashOptions;
using core::Shape;
using core::Tensor;
using Catch::Matchers::Contains;
using tfm::test::check_gradients;
using tfm::test::max_abs_diff;
using tfm::test::random_tensor;

constexpr double kInfD = std::numeric_limits<double>::infinity();
constexpr float kInf = std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------- references

bool visible(const AttentionMask& m, const std::vector<float>& pad, int64_t b, int64_t tk, int64_t i, int64_t j) {
  if (m.causal && j > m.q_offset + i) return false;
  return pad.empty() || pad[b * tk + j] == 0.0f;
}

struct Reference {
  std::vector<double> o, lse, dq, dk, dv;
};

// Everything in double with plain loops: S = scale·q·kᵀ, P = softmax over
// visible keys (rows without any give P = 0, L = -inf), O = P·v and the
// textbook gradients for the seed dO.
Reference reference_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& m, float scale,
                              const Tensor& dout) {
  const int64_t B = q.size(0), H = q.size(1), tq = q.size(2), tk = k.size(2), D = q.size(3);
  const std::vector<float> qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector(), gv = dout.to_vector();
  const std::vector<float> pad = m.key_padding.defined() ? m.key_padding.to_vector() : std::vector<float>{};
  Reference r;
  r.o.assign(qv.size(), 0.0);
  r.dq.assign(qv.size(), 0.0);
  r.dk.assign(kv.size(), 0.0);
  r.dv.assign(vv.size(), 0.0);
  r.lse.assign(static_cast<std::size_t>(B * H * tq), -kInfD);
  std::vector<double> p(static_cast<std::size_t>(tk)), dp(static_cast<std::size_t>(tk));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t bh = b * H + h;
      const float *Q = &qv[bh * tq * D], *K = &kv[bh * tk * D], *V = &vv[bh * tk * D], *G = &gv[bh * tq * D];
      double *O = &r.o[bh * tq * D], *dQ = &r.dq[bh * tq * D], *dK = &r.dk[bh * tk * D], *dV = &r.dv[bh * tk * D];
      for (int64_t i = 0; i < tq; ++i) {
        double mx = -kInfD;
        for (int64_t j = 0; j < tk; ++j) {
          double s = 0;
          for (int64_t d = 0; d < D; ++d) s += static_cast<double>(Q[i * D + d]) * K[j * D + d];
          p[j] = visible(m, pad, b, tk, i, j) ? s * scale : -kInfD;
          mx = std::max(mx, p[j]);
        }
        if (mx == -kInfD) continue;  // no visible key: zeros everywhere
        double z = 0;
        for (int64_t j = 0; j < tk; ++j) z += p[j] = p[j] == -kInfD ? 0.0 : std::exp(p[j] - mx);
        r.lse[bh * tq + i] = mx + std::log(z);
        for (int64_t j = 0; j < tk; ++j) p[j] /= z;
        for (int64_t j = 0; j < tk; ++j)
          if (p[j] != 0)
            for (int64_t d = 0; d < D; ++d) O[i * D + d] += p[j] * V[j * D + d];
        double di = 0;  // rowsum(dO ∘ O)
        for (int64_t d = 0; d < D; ++d) di += G[i * D + d] * O[i * D + d];
        for (int64_t j = 0; j < tk; ++j) {
          if (p[j] == 0) continue;
          double g = 0;
          for (int64_t d = 0; d < D; ++d) g += static_cast<double>(G[i * D + d]) * V[j * D + d];
          const double ds = p[j] * (g - di) * scale;
          for (int64_t d = 0; d < D; ++d) {
            dV[j * D + d] += p[j] * G[i * D + d];
            dQ[i * D + d] += ds * K[j * D + d];
            dK[j * D + d] += ds * Q[i * D + d];
          }
        }
      }
    }
  return r;
}

// [B, 1, Tq, Tk] additive bias (0 or -inf) for the naive composition, or undefined.
Tensor dense_bias(const AttentionMask& m, int64_t B, int64_t tq, int64_t tk) {
  if (!m.causal && !m.key_padding.defined()) return Tensor();
  const std::vector<float> pad = m.key_padding.defined() ? m.key_padding.to_vector() : std::vector<float>{};
  Tensor bias = core::zeros({B, 1, tq, tk});
  float* p = bias.data<float>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < tq; ++i)
      for (int64_t j = 0; j < tk; ++j)
        if (!visible(m, pad, b, tk, i, j)) p[(b * tq + i) * tk + j] = -kInf;
  return bias;
}

// Naive attention from core ops: softmax(scale·q·kᵀ + bias) (then core::dropout) · v.
Tensor naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionMask& m, float scale,
                       float p_drop = 0.0f, core::Generator* gen = nullptr) {
  Tensor s = core::matmul(core::mul(q, scale), k, false, true);
  const Tensor bias = dense_bias(m, q.size(0), q.size(2), k.size(2));
  if (bias.defined()) s = core::add(s, bias);
  Tensor p = core::softmax(s, -1);
  if (p_drop > 0.0f) p = core::dropout(p, p_drop, true, *gen);
  return core::matmul(p, v);
}

// Row log-sum-exp of the naive fp32 scores (core ops; -inf for empty rows).
Tensor naive_lse(const Tensor& q, const Tensor& k, const AttentionMask& m, float scale) {
  core::NoGradGuard ng;
  Tensor s = core::matmul(core::mul(q, scale), k, false, true);
  const Tensor bias = dense_bias(m, q.size(0), q.size(2), k.size(2));
  if (bias.defined()) s = core::add(s, bias);
  Tensor mx = core::max(s, {-1}, true);
  mx = core::where(core::eq(mx, core::full({1}, -kInf)), core::zeros({1}), mx);
  return core::squeeze(core::add(core::log(core::sum(core::exp(core::sub(s, mx)), {-1}, true)), mx), -1);
}

// Max |got − want| over the entries; -inf entries of `want` must be -inf in `got`.
double max_err(const Tensor& got, const std::vector<double>& want) {
  const std::vector<float> g = got.to_vector();
  REQUIRE(g.size() == want.size());
  double e = 0;
  for (std::size_t i = 0; i < g.size(); ++i) {
    if (want[i] == -kInfD) {
      if (g[i] != -kInf) return kInfD;
      continue;
    }
    if (!std::isfinite(g[i])) return kInfD;
    e = std::max(e, std::fabs(g[i] - want[i]));
  }
  return e;
}

struct Case {
  int64_t tq, tk, d;
  bool causal = false;
  bool pad = false;    // B = 2 with different padding per sequence
  float mult = 1.0f;   // inputs scaled (×5 sharpens the softmax)
  int64_t heads = 1;
};

void check_against_reference(const Case& c, uint64_t seed) {
  const int64_t B = c.pad ? 2 : 1, H = c.heads;
  INFO("Tq " << c.tq << " Tk " << c.tk << " d " << c.d << " causal " << c.causal << " pad " << c.pad << " x"
             << c.mult);
  Tensor q = random_tensor({B, H, c.tq, c.d}, seed, c.mult, true);
  Tensor k = random_tensor({B, H, c.tk, c.d}, seed + 1, c.mult, true);
  Tensor v = random_tensor({B, H, c.tk, c.d}, seed + 2, 1.0f, true);
  const Tensor dout = random_tensor({B, H, c.tq, c.d}, seed + 3);
  AttentionMask m;
  m.causal = c.causal;
  if (c.pad) {
    std::vector<float> pad(static_cast<std::size_t>(B * c.tk), 0.0f);
    for (int64_t j = 0; j < c.tk; ++j) {
      pad[j] = j % 7 == 3 ? 1.0f : 0.0f;                 // holes in sequence 0
      pad[c.tk + j] = j >= (c.tk + 1) / 2 ? 1.0f : 0.0f;  // sequence 1 padded at the end
    }
    m.key_padding = core::from_vector(pad, {B, c.tk});
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.d));
  const Reference ref = reference_attention(q, k, v, m, scale, dout);

  core::Generator gen(0);
  const core::FlashResult fr = core::flash_attention_with_lse(q, k, v, m, scale, 0.0f, true, gen);
  fr.out.backward(dout);
  const Tensor fdq = q.grad(), fdk = k.grad(), fdv = v.grad();
  q.zero_grad(), k.zero_grad(), v.zero_grad();
  const Tensor no = naive_attention(q, k, v, m, scale);
  no.backward(dout);
  const Tensor nl = naive_lse(q, k, m, scale);

  const struct {
    const char* what;
    Tensor flash, naive;
    const std::vector<double>& ref;
  } rows[] = {{"O", fr.out, no, ref.o},         {"L", fr.lse, nl, ref.lse},     {"dQ", fdq, q.grad(), ref.dq},
              {"dK", fdk, k.grad(), ref.dk},    {"dV", fdv, v.grad(), ref.dv}};
  for (const auto& r : rows) {
    const double ef = max_err(r.flash, r.ref), en = max_err(r.naive, r.ref);
    INFO(r.what << ": flash error " << ef << ", naive fp32 error " << en);
    CHECK(ef <= 3.0 * en + 1e-6);
  }
}

}  // namespace

// ---------------------------------------------------------------- accuracy

TEST_CASE("flash attention matches a double reference within 3x the naive fp32 error (d = 64)", "[flash]") {
  const std::vector<int64_t> ts{1, 17, 113, 511, 1023, 1024, 1025};
  uint64_t seed = 100;
  for (const bool causal : {false, true}) {
    for (const int64_t t : ts) check_against_reference({t, t, 64, causal, false, 1.0f, t < 600 ? 2 : 1}, seed += 4);
    // Cross-attention shapes (Tq != Tk), including the odd pairs flash-attn's suite uses.
    const std::vector<std::pair<int64_t, int64_t>> pairs{{1, 1025}, {1025, 1}, {17, 113}, {113, 17},
                                                         {511, 1024}, {1024, 511}, {1023, 1025}, {1025, 1023}};
    for (const auto& [tq, tk] : pairs) check_against_reference({tq, tk, 64, causal}, seed += 4);
    // Padding masks (holes; half the keys padded) and inputs scaled ×5.
    for (const auto& [tq, tk] : std::vector<std::pair<int64_t, int64_t>>{{113, 113}, {511, 1023}, {17, 1025}})
      check_against_reference({tq, tk, 64, causal, true}, seed += 4);
    for (const auto& [tq, tk] : std::vector<std::pair<int64_t, int64_t>>{{113, 511}, {1024, 1024}, {1025, 1023}})
      check_against_reference({tq, tk, 64, causal, false, 5.0f}, seed += 4);
  }
}

TEST_CASE("flash attention matches a double reference for head dims 16, 40 and 128", "[flash]") {
  uint64_t seed = 300;
  for (const int64_t d : {16, 40, 128}) {
    check_against_reference({113, 113, d, false, true}, seed += 4);
    check_against_reference({511, 1023, d, true}, seed += 4);
    check_against_reference({1025, 1024, d, true, true, 5.0f}, seed += 4);
    check_against_reference({17, 1, d, false, false, 5.0f}, seed += 4);
  }
}

// ---------------------------------------------------------------- masks

TEST_CASE("flash attention: fully masked rows give zero output, -inf L and zero gradients", "[flash]") {
  const int64_t B = 2, H = 2, T = 37, D = 16;
  Tensor q = random_tensor({B, H, T, D}, 1, 1.0f, true), k = random_tensor({B, H, T, D}, 2, 1.0f, true),
         v = random_tensor({B, H, T, D}, 3, 1.0f, true);
  std::vector<float> pad(B * T, 0.0f);
  pad[0] = 1.0f;                                        // sequence 0: key 0 padded, so causal query 0 sees nothing
  for (int64_t j = 0; j < T; ++j) pad[T + j] = 1.0f;  // sequence 1: every key padded
  AttentionMask m;
  m.causal = true;
  m.key_padding = core::from_vector(pad, {B, T});
  core::Generator gen(0);
  const FlashOptions opt{8, 16};
  const core::FlashResult r = core::flash_attention_with_lse(q, k, v, m, 0.25f, 0.0f, false, gen, opt);
  const Tensor dout = random_tensor({B, H, T, D}, 4);
  r.out.backward(dout);
  for (const Tensor& t : {r.out, q.grad(), k.grad(), v.grad()})
    for (float x : t.to_vector()) REQUIRE(std::isfinite(x));
  for (int64_t h = 0; h < H; ++h) {
    CHECK(r.lse.at({0, h, 0}) == -kInf);
    CHECK(std::isfinite(r.lse.at({0, h, 1})));
    for (int64_t d = 0; d < D; ++d) {
      CHECK(r.out.at({0, h, 0, d}) == 0.0f);
      CHECK(q.grad().at({0, h, 0, d}) == 0.0f);
      CHECK(k.grad().at({0, h, 0, d}) == 0.0f);  // a padded key gets no gradient
      CHECK(v.grad().at({0, h, 0, d}) == 0.0f);
    }
    for (int64_t i = 0; i < T; ++i) CHECK(r.lse.at({1, h, i}) == -kInf);
  }
  for (const Tensor& t : {r.out, q.grad(), k.grad(), v.grad()}) CHECK(max_abs_diff(t.slice(0, 1, 2), core::zeros({1, H, T, D})) == 0.0f);
  // No keys at all.
  const Tensor e = core::flash_attention(q.detach(), core::zeros({B, H, 0, D}), core::zeros({B, H, 0, D}), {}, 1.0f,
                                         0.0f, false, gen);
  CHECK(max_abs_diff(e, core::zeros({B, H, T, D})) == 0.0f);
}

TEST_CASE("flash attention: causal alignment is top-left shifted by q_offset, also for Tq != Tk", "[flash]") {
  // Query i must equal non-causal attention over keys 0 .. q_offset + i only.
  const int64_t H = 2, D = 8, tk = 23;
  const Tensor k = random_tensor({1, H, tk, D}, 11), v = random_tensor({1, H, tk, D}, 12);
  core::Generator gen(0);
  for (const auto& [tq, off] : std::vector<std::pair<int64_t, int64_t>>{{23, 0}, {5, 0}, {5, 18}, {9, 7}, {1, 22}}) {
    INFO("Tq " << tq << " q_offset " << off);
    const Tensor q = random_tensor({1, H, tq, D}, 13 + tq);
    AttentionMask m;
    m.causal = true;
    m.q_offset = off;
    const Tensor o = core::flash_attention(q, k, v, m, 0.3f, 0.0f, false, gen, {4, 6});
    for (int64_t i = 0; i < tq; ++i) {
      const int64_t n = std::min(tk, off + i + 1);
      const Tensor oi = core::flash_attention(q.slice(2, i, i + 1), k.slice(2, 0, n), v.slice(2, 0, n), {}, 0.3f,
                                              0.0f, false, gen);
      CHECK(max_abs_diff(o.slice(2, i, i + 1), oi) <= 1e-6f);
    }
  }
}

TEST_CASE("flash attention: a [1, Tk] key_padding applies to every sequence, as in naive", "[flash]") {
  const int64_t B = 3, H = 2, tq = 6, tk = 11, D = 8;
  const Tensor q = random_tensor({B, H, tq, D}, 81), k = random_tensor({B, H, tk, D}, 82),
               v = random_tensor({B, H, tk, D}, 83);
  std::vector<float> pad(tk, 0.0f);
  pad[1] = pad[7] = pad[10] = 1.0f;
  AttentionMask shared, full;
  shared.key_padding = core::from_vector(pad, {1, tk});
  std::vector<float> all;
  for (int64_t b = 0; b < B; ++b) all.insert(all.end(), pad.begin(), pad.end());
  full.key_padding = core::from_vector(all, {B, tk});
  core::Generator gen(0);
  const Tensor a = core::flash_attention(q, k, v, shared, 0.4f, 0.0f, false, gen, {4, 4});
  const Tensor b = core::flash_attention(q, k, v, full, 0.4f, 0.0f, false, gen, {4, 4});
  CHECK(max_abs_diff(a, b) == 0.0f);
  CHECK(max_abs_diff(a, naive_attention(q, k, v, full, 0.4f)) <= 1e-6f);
}

// ---------------------------------------------------------------- gradients

TEST_CASE("flash attention: finite-difference gradients at tiny sizes", "[flash]") {
  const int64_t B = 2, H = 2, tq = 5, tk = 7, D = 3;
  std::vector<float> pad(B * tk, 0.0f);
  pad[2] = pad[tk + 5] = pad[tk + 6] = 1.0f;
  for (const bool causal : {false, true})
    for (const bool padded : {false, true}) {
      INFO("causal " << causal << " padded " << padded);
      AttentionMask m;
      m.causal = causal;
      m.q_offset = causal ? 2 : 0;
      if (padded) m.key_padding = core::from_vector(pad, {B, tk});
      std::vector<Tensor> in{random_tensor({B, H, tq, D}, 21, 1.0f, true), random_tensor({B, H, tk, D}, 22, 1.0f, true),
                             random_tensor({B, H, tk, D}, 23, 1.0f, true)};
      check_gradients(
          [&](const std::vector<Tensor>& x) {
            core::Generator gen(0);
            return core::flash_attention(x[0], x[1], x[2], m, 0.7f, 0.0f, false, gen, {2, 3});
          },
          in);
    }
}

TEST_CASE("flash attention accepts strided views (rotated or transposed q/k/v)", "[flash]") {
  // [B, T, H, D] storage viewed as [B, H, T, D], as the attention module produces.
  Tensor q = random_tensor({2, 9, 3, 8}, 31, 1.0f, true), k = random_tensor({2, 11, 3, 8}, 32, 1.0f, true),
         v = random_tensor({2, 11, 3, 8}, 33, 1.0f, true);
  core::Generator gen(0);
  check_gradients(
      [&](const std::vector<Tensor>& x) {
        return core::flash_attention(x[0].permute({0, 2, 1, 3}), x[1].permute({0, 2, 1, 3}),
                                     x[2].permute({0, 2, 1, 3}), {}, 0.5f, 0.0f, false, gen, {4, 4});
      },
      {q, k, v});
}

TEST_CASE("flash attention reads views of a fused QKV projection in place, bit for bit as contiguous copies",
          "[flash]") {
  // The attention layer's layout: one [B, T, 3·H·D] projection, split and
  // viewed as [B, H, T, D] (row stride 3·H·D). The kernels read it through
  // strides; the results must be the bits of the same call on copies.
  const int64_t B = 2, T = 37, H = 3, D = 8, C = H * D;
  for (const float p_drop : {0.0f, 0.3f}) {
    INFO("dropout " << p_drop);
    const Tensor dout = random_tensor({B, H, T, D}, 42);
    AttentionMask m;
    m.causal = true;
    auto heads = [&](const Tensor& x, int64_t part) {
      return x.slice(2, part * C, (part + 1) * C).reshape({B, T, H, D}).permute({0, 2, 1, 3});
    };
    Tensor qkv = random_tensor({B, T, 3 * C}, 41, 1.0f, true);
    core::Generator g1(5);
    const core::FlashResult strided =
        core::flash_attention_with_lse(heads(qkv, 0), heads(qkv, 1), heads(qkv, 2), m, 0.3f, p_drop, true, g1, {16, 16});
    REQUIRE_FALSE(heads(qkv, 0).is_contiguous());
    strided.out.backward(dout);
    // The output is laid out [B, T, H, D], so merging the heads is a view.
    CHECK(strided.out.permute({0, 2, 1, 3}).is_contiguous());

    std::vector<Tensor> parts;
    for (int64_t part = 0; part < 3; ++part) {
      parts.push_back(heads(qkv.detach(), part).contiguous());
      parts.back().set_requires_grad(true);
    }
    core::Generator g2(5);
    const core::FlashResult copied =
        core::flash_attention_with_lse(parts[0], parts[1], parts[2], m, 0.3f, p_drop, true, g2, {16, 16});
    copied.out.backward(dout);
    CHECK(strided.out.to_vector() == copied.out.to_vector());
    CHECK(strided.lse.to_vector() == copied.lse.to_vector());
    const Tensor dqkv = qkv.grad();
    for (int64_t part = 0; part < 3; ++part) {
      INFO("part " << part);
      CHECK(heads(dqkv, part).to_vector() == parts[part].grad().to_vector());
    }
  }
  // A unit stride in T instead of D (a transposed view) takes the copy path.
  Tensor qt = random_tensor({1, 2, 8, 5}, 43, 1.0f);
  const Tensor q_view = qt.transpose(2, 3);  // [1, 2, 5, 8] with stride 1 along T
  core::Generator g3(0);
  const Tensor a = core::flash_attention(q_view, q_view, q_view, {}, 0.5f, 0.0f, false, g3);
  const Tensor qc = q_view.contiguous();
  const Tensor b = core::flash_attention(qc, qc, qc, {}, 0.5f, 0.0f, false, g3);
  CHECK(a.to_vector() == b.to_vector());
}

TEST_CASE("flash_attention_packed equals flash attention on the three parts, bit for bit, gradient included",
          "[flash]") {
  // The packed entry point reads q, k, v from one [B, T, 3·H·D] tensor and
  // returns one gradient for it, written by the backward in place (no
  // zero-filled buffer): every element of it must be the slices' result.
  const int64_t B = 3, T = 29, H = 2, D = 8, C = H * D;
  auto heads = [&](const Tensor& x, int64_t part) {
    return x.slice(2, part * C, (part + 1) * C).reshape({B, T, H, D}).permute({0, 2, 1, 3});
  };
  Tensor padding = core::zeros({B, T});
  for (int64_t j = T - 5; j < T; ++j) padding.data<float>()[2 * T + j] = 1.0f;  // batch 2: last 5 keys padded
  for (const float p_drop : {0.0f, 0.25f})
    for (const bool causal : {false, true}) {
      INFO("dropout " << p_drop << ", causal " << causal);
      AttentionMask m;
      m.causal = causal;
      m.key_padding = padding;
      const Tensor dout = random_tensor({B, H, T, D}, 52);
      Tensor a = random_tensor({B, T, 3 * C}, 51, 1.0f, true);
      Tensor b = a.detach().contiguous();
      b.set_requires_grad(true);
      core::Generator g1(9), g2(9);
      const Tensor packed = core::flash_attention_packed(a, H, m, 0.35f, p_drop, true, g1, {8, 16});
      const Tensor split =
          core::flash_attention(heads(b, 0), heads(b, 1), heads(b, 2), m, 0.35f, p_drop, true, g2, {8, 16});
      CHECK(g1.offset() == g2.offset());  // the same dropout draw
      CHECK(packed.shape() == split.shape());
      CHECK(packed.to_vector() == split.to_vector());
      packed.backward(dout);
      split.backward(dout);
      CHECK(a.grad().shape() == Shape({B, T, 3 * C}));
      CHECK(a.grad().to_vector() == b.grad().to_vector());
    }
  core::Generator g(0);
  CHECK_THROWS_WITH(core::flash_attention_packed(random_tensor({2, 5, 20}, 1), 3, {}, 1.0f, 0.0f, false, g),
                    Catch::Contains("multiple of 3 · heads"));
  CHECK_THROWS_WITH(core::flash_attention_packed(random_tensor({5, 24}, 1), 2, {}, 1.0f, 0.0f, false, g),
                    Catch::Contains("[B, T, 3·H·D]"));
}

TEST_CASE("flash attention on rotary-rotated q/k equals the naive composition, gradients included", "[flash]") {
  // What the attention module hands a backend: heads split from [B, T, H, D]
  // by a permute, rotary positions applied at an offset, a causal KV-cache step.
  const int64_t B = 2, T = 45, H = 3, D = 16, off = 7;
  const tfm::layers::RotaryEmbedding rope(D, 128);
  Tensor xq = random_tensor({B, T, H, D}, 35, 1.0f, true), xk = random_tensor({B, T + off, H, D}, 36, 1.0f, true),
         xv = random_tensor({B, T + off, H, D}, 37, 1.0f, true);
  AttentionMask m;
  m.causal = true;
  m.q_offset = off;
  auto run = [&](bool flash) {
    xq.zero_grad(), xk.zero_grad(), xv.zero_grad();
    const Tensor q = rope.apply(xq.permute({0, 2, 1, 3}), off), k = rope.apply(xk.permute({0, 2, 1, 3}), 0),
                 v = xv.permute({0, 2, 1, 3});
    core::Generator gen(0);
    const Tensor o = flash ? core::flash_attention(q, k, v, m, 0.25f, 0.0f, false, gen, {8, 16})
                           : naive_attention(q, k, v, m, 0.25f);
    core::sum(core::mul(o, o)).backward();
    return std::vector<Tensor>{o, xq.grad(), xk.grad(), xv.grad()};
  };
  const auto f = run(true), n = run(false);
  for (std::size_t i = 0; i < f.size(); ++i) {
    INFO("output " << i);
    CHECK(max_abs_diff(f[i], n[i]) <= 1e-5f);
  }
}

// ---------------------------------------------------------------- tiles and determinism

TEST_CASE("flash attention: tile sizes change results only within rounding; runs are bitwise repeatable",
          "[flash]") {
  const int64_t B = 1, H = 3, tq = 300, tk = 421, D = 40;
  const Tensor q = random_tensor({B, H, tq, D}, 41, 2.0f), k = random_tensor({B, H, tk, D}, 42, 2.0f),
               v = random_tensor({B, H, tk, D}, 43), dout = random_tensor({B, H, tq, D}, 44);
  AttentionMask m;
  m.causal = true;
  m.q_offset = 121;
  std::vector<float> pad(static_cast<std::size_t>(tk), 0.0f);
  for (int64_t j = 0; j < tk; j += 5) pad[j] = 1.0f;
  m.key_padding = core::from_vector(pad, {B, tk});
  struct Run {
    Tensor o, lse, dq, dk, dv;
  };
  auto run = [&](const FlashOptions& opt, float p_drop) {
    Tensor qq = q.clone().set_requires_grad(), kk = k.clone().set_requires_grad(), vv = v.clone().set_requires_grad();
    core::Generator gen(9);
    const core::FlashResult r = core::flash_attention_with_lse(qq, kk, vv, m, 0.2f, p_drop, true, gen, opt);
    r.out.backward(dout);
    return Run{r.out, r.lse, qq.grad(), kk.grad(), vv.grad()};
  };
  auto bitwise_equal = [](const Tensor& a, const Tensor& b) {
    const auto x = a.to_vector(), y = b.to_vector();
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
  };
  for (const float p_drop : {0.0f, 0.2f}) {
    INFO("dropout " << p_drop);
    const Run base = run({}, p_drop);
    for (const FlashOptions& opt : {FlashOptions{1, 1}, FlashOptions{7, 13}, FlashOptions{32, 64},
                                    FlashOptions{128, 512}, FlashOptions{512, 4096}}) {
      INFO("tiles " << opt.q_tile << " x " << opt.kv_tile);
      const Run r = run(opt, p_drop);
      const float eo = max_abs_diff(r.o, base.o), el = max_abs_diff(r.lse, base.lse),
                  eq = max_abs_diff(r.dq, base.dq), ek = max_abs_diff(r.dk, base.dk), ev = max_abs_diff(r.dv, base.dv);
      INFO("max differences: O " << eo << " L " << el << " dQ " << eq << " dK " << ek << " dV " << ev);
      // Rounding only (|O| <= 3, |dQ|, |dK|, |dV| up to ~10 here): a wrong
      // tile boundary or mask would show up as errors of order 1e-2 or more.
      CHECK(eo <= 1e-5f);
      CHECK(el <= 1e-5f);
      CHECK(eq <= 5e-5f);
      CHECK(ek <= 5e-5f);
      CHECK(ev <= 5e-5f);
    }
    const Run again = run({}, p_drop);
    CHECK(bitwise_equal(again.o, base.o));
    CHECK(bitwise_equal(again.lse, base.lse));
    CHECK(bitwise_equal(again.dq, base.dq));
    CHECK(bitwise_equal(again.dk, base.dk));
    CHECK(bitwise_equal(again.dv, base.dv));
    // One thread gives the same bits as the default team (each row and each
    // head's gradients are computed by one thread in a fixed order).
    const int threads = core::num_threads();
    core::set_num_threads(1);
    const Run single = run({}, p_drop);
    core::set_num_threads(threads);
    CHECK(bitwise_equal(single.o, base.o));
    CHECK(bitwise_equal(single.dq, base.dq));
    CHECK(bitwise_equal(single.dk, base.dk));
    CHECK(bitwise_equal(single.dv, base.dv));
  }
}

// ---------------------------------------------------------------- dropout

TEST_CASE("flash attention dropout equals naive attention with core::dropout for the same generator", "[flash]") {
  const int64_t B = 2, H = 2, tq = 67, tk = 131, D = 16;
  for (const bool causal : {false, true}) {
    INFO("causal " << causal);
    AttentionMask m;
    m.causal = causal;
    std::vector<float> pad(B * tk, 0.0f);
    for (int64_t j = 100; j < tk; ++j) pad[tk + j] = 1.0f;
    m.key_padding = core::from_vector(pad, {B, tk});
    Tensor q = random_tensor({B, H, tq, D}, 51, 1.0f, true), k = random_tensor({B, H, tk, D}, 52, 1.0f, true),
           v = random_tensor({B, H, tk, D}, 53, 1.0f, true);
    const Tensor dout = random_tensor({B, H, tq, D}, 54);
    core::Generator gf(77), gn(77);
    gf.reserve(5), gn.reserve(5);  // a generator that has been used before
    const Tensor of = core::flash_attention(q, k, v, m, 0.25f, 0.3f, true, gf, {16, 32});
    of.backward(dout);
    const Tensor dq = q.grad(), dk = k.grad(), dv = v.grad();
    q.zero_grad(), k.zero_grad(), v.zero_grad();
    const Tensor on = naive_attention(q, k, v, m, 0.25f, 0.3f, &gn);
    on.backward(dout);
    CHECK(gf.offset() == gn.offset());
    CHECK(max_abs_diff(of, on) <= 2e-6f);
    CHECK(max_abs_diff(dq, q.grad()) <= 2e-5f);
    CHECK(max_abs_diff(dk, k.grad()) <= 2e-5f);
    CHECK(max_abs_diff(dv, v.grad()) <= 2e-5f);
  }
}

TEST_CASE("flash attention dropout: backward uses the forward's mask (finite differences)", "[flash]") {
  std::vector<Tensor> in{random_tensor({1, 2, 6, 4}, 61, 1.0f, true), random_tensor({1, 2, 9, 4}, 62, 1.0f, true),
                         random_tensor({1, 2, 9, 4}, 63, 1.0f, true)};
  AttentionMask m;
  m.causal = true;
  m.q_offset = 3;
  check_gradients(
      [&](const std::vector<Tensor>& x) {
        core::Generator gen(5);  // the same mask on every evaluation
        return core::flash_attention(x[0], x[1], x[2], m, 0.5f, 0.4f, true, gen, {4, 4});
      },
      in);
}

TEST_CASE("flash attention dropout keeps a fraction 1 - p of the probabilities", "[flash]") {
  // q = k = 0 makes P uniform (1/Tk); with v = 1 every output entry is
  // (kept keys of the row) / (Tk·(1 − p)).
  const int64_t B = 1, H = 2, T = 512, D = 16;
  const Tensor z = core::zeros({B, H, T, D}), ones = core::ones({B, H, T, D});
  for (const float p : {0.1f, 0.5f}) {
    core::Generator gen(3);
    const Tensor o = core::flash_attention(z, z, ones, {}, 1.0f, p, true, gen);
    const double kept = core::mean(o).item() * (1.0 - p);
    INFO("p " << p << " kept " << kept);
    CHECK(std::fabs(kept - (1.0 - p)) <= 0.01);
  }
  // Not training, or p = 0: no dropout and the generator does not move.
  core::Generator gen(3);
  const Tensor o = core::flash_attention(z, z, ones, {}, 1.0f, 0.5f, false, gen);
  CHECK(gen.offset() == 0);
  CHECK(max_abs_diff(o, ones) <= 1e-6f);
}

// ---------------------------------------------------------------- memory and errors

TEST_CASE("flash attention memory grows linearly in T", "[flash]") {
  auto peak = [](int64_t t) {
    const int64_t H = 2, D = 32;
    Tensor q = random_tensor({1, H, t, D}, 71, 1.0f, true), k = random_tensor({1, H, t, D}, 72, 1.0f, true),
           v = random_tensor({1, H, t, D}, 73, 1.0f, true);
    const Tensor dout = random_tensor({1, H, t, D}, 74);
    AttentionMask m;
    m.causal = true;
    core::Generator gen(0);
    const int64_t before = core::memory_stats().current_bytes;
    core::reset_peak_memory();
    core::flash_attention(q, k, v, m, 0.2f, 0.1f, true, gen).backward(dout);
    return core::memory_stats().peak_bytes - before;
  };
  const int64_t p1 = peak(1024), p2 = peak(2048);
  INFO("extra peak bytes: T=1024 " << p1 << ", T=2048 " << p2);
  // Linear: O, L, dQ, dK, dV and the seed — about 6 · T·H·D floats.
  CHECK(p2 <= 2 * p1 + 4096);
  CHECK(p2 <= 8 * 2048 * 2 * 32 * 4);
}

TEST_CASE("flash attention rejects bad arguments naming what is allowed", "[flash]") {
  core::Generator gen(0);
  const Tensor q = core::zeros({1, 2, 3, 4}), k = core::zeros({1, 2, 5, 4});
  REQUIRE_THROWS_WITH(core::flash_attention(core::zeros({2, 3, 4}), k, k, {}, 1.0f, 0.0f, false, gen),
                      Contains("flash_attention") && Contains("[B, H, T, D]"));
  REQUIRE_THROWS_WITH(core::flash_attention(q, core::zeros({1, 2, 5, 8}), core::zeros({1, 2, 5, 8}), {}, 1.0f, 0.0f,
                                            false, gen),
                      Contains("B, H and D"));
  REQUIRE_THROWS_WITH(core::flash_attention(q, k, core::zeros({1, 2, 6, 4}), {}, 1.0f, 0.0f, false, gen),
                      Contains("same shape"));
  AttentionMask m;
  m.key_padding = core::zeros({1, 4});
  REQUIRE_THROWS_WITH(core::flash_attention(q, k, k, m, 1.0f, 0.0f, false, gen), Contains("key_padding"));
  m.key_padding = core::zeros({2, 5});
  REQUIRE_THROWS_WITH(core::flash_attention(q, k, k, m, 1.0f, 0.0f, false, gen), Contains("key_padding"));
  REQUIRE_THROWS_WITH(core::flash_attention(q, k, k, {}, 1.0f, 1.5f, true, gen), Contains("dropout_p"));
  REQUIRE_THROWS_WITH(core::flash_attention(q, k, k, {}, 1.0f, 0.0f, false, gen, {0, 64}), Contains("q_tile"));
  REQUIRE_THROWS_WITH(core::flash_attention(q, k, k, {}, 1.0f, 0.0f, false, gen, {64, 5000}), Contains("kv_tile"));
  CHECK(gen.offset() == 0);
}
