// Local attention (layers/local_attention.h): forward against a plain double
// loop (full attention when the chunk covers T, the own-and-previous-chunk
// window otherwise), gradients against autograd through a dense masked
// reference, finite differences, padding, exact causality, linear memory.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "core/allocator.h"
#include "core/attention_mask.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "layers/local_attention.h"
#include "tests/attention_reference.h"
#include "tests/gradcheck.h"

namespace {

namespace core = tfm::core;
namespace layers = tfm::layers;
using core::AttentionMask;
using core::Tensor;
using Catch::Matchers::Contains;
using tfm::test::max_abs_diff;
using tfm::test::random_tensor;

Tensor tail_padding(int64_t T, const std::vector<int64_t>& pad) {
  std::vector<float> f(pad.size() * T, 0.0f);
  for (size_t b = 0; b < pad.size(); ++b)
    for (int64_t t = T - pad[b]; t < T; ++t) f[b * T + t] = 1.0f;
  return core::from_vector(f, {int64_t(pad.size()), T});
}

bool padded(const AttentionMask& m, int64_t b, int64_t j) {
  return m.key_padding.defined() && m.key_padding.at({b, j}) != 0.0f;
}

// The documented rule: query i sees key j iff ⌊j/C⌋ ∈ {⌊i/C⌋ − 1, ⌊i/C⌋},
// plus causality and key padding.
bool local_allowed(const AttentionMask& m, int64_t C, int64_t b, int64_t i, int64_t j) {
  const int64_t ci = i / C, cj = j / C;
  return (cj == ci || cj == ci - 1) && !(m.causal && j > i) && !padded(m, b, j);
}

Tensor valid_rows(const AttentionMask& mask, const core::Shape& s) {
  if (!mask.key_padding.defined()) return core::ones({1, 1, 1, 1});
  std::vector<float> keep = mask.key_padding.to_vector();
  for (float& f : keep) f = f != 0.0f ? 0.0f : 1.0f;
  return core::from_vector(keep, {s[0], 1, s[2], 1});
}

TEST_CASE("local: a chunk covering T equals full attention", "[local]") {
  const int64_t B = 2, H = 2, T = 19, D = 8;
  const float scale = 1.0f / std::sqrt(float(D));
  const Tensor q = random_tensor({B, H, T, D}, 1), k = random_tensor({B, H, T, D}, 2), v = random_tensor({B, H, T, D}, 3);
  for (bool causal : {false, true})
    for (bool pad : {false, true}) {
      AttentionMask mask;
      mask.causal = causal;
      if (pad) mask.key_padding = tail_padding(T, {0, 4});
      const auto ref = tfm::test::reference_attention_double(
          q, k, v, scale,
          [&](int64_t b, int64_t, int64_t i, int64_t j) { return !(causal && j > i) && !padded(mask, b, j); }, false);
      for (int64_t chunk : {19, 32}) {
        INFO("causal " << causal << " padding " << pad << " chunk " << chunk);
        CHECK(tfm::test::max_abs_diff_double(layers::local_attention(q, k, v, mask, scale, {chunk}), ref) < 1e-5);
      }
    }
}

TEST_CASE("local: smaller chunks equal the double-loop window, fully padded rows give 0", "[local]") {
  const int64_t B = 2, H = 1, T = 23, D = 5, C = 4;  // padded internally to 24
  const Tensor q = random_tensor({B, H, T, D}, 4), k = random_tensor({B, H, T, D}, 5), v = random_tensor({B, H, T, D}, 6);
  AttentionMask mask;
  mask.key_padding = tail_padding(T, {9, 0});  // batch 0: queries 20..22 see only padded keys
  for (bool causal : {false, true}) {
    mask.causal = causal;
    const auto ref = tfm::test::reference_attention_double(
        q, k, v, 0.5f, [&](int64_t b, int64_t, int64_t i, int64_t j) { return local_allowed(mask, C, b, i, j); },
        false);
    const Tensor out = layers::local_attention(q, k, v, mask, 0.5f, {C});
    CHECK(tfm::test::max_abs_diff_double(out, ref) < 1e-5);
    for (int64_t d = 0; d < D; ++d) CHECK(out.at({0, 0, 21, d}) == 0.0f);
  }
}

TEST_CASE("local: gradients equal autograd through a dense masked reference", "[local]") {
  const int64_t B = 2, H = 2, T = 29, D = 8, C = 6;
  const float scale = 1.0f / std::sqrt(float(D));
  AttentionMask mask;
  mask.causal = GENERATE(false, true);
  mask.key_padding = tail_padding(T, {0, 5});
  Tensor q = random_tensor({B, H, T, D}, 10, 1.0f, true), k = random_tensor({B, H, T, D}, 11, 1.0f, true);
  Tensor v = random_tensor({B, H, T, D}, 12, 1.0f, true);
  const Tensor keep = valid_rows(mask, {B, H, T, D});
  const Tensor w = core::mul(random_tensor({B, H, T, D}, 13), keep);
  const Tensor out = layers::local_attention(q, k, v, mask, scale, {C});
  core::sum(core::mul(out, w)).backward();
  const Tensor dq = q.grad(), dk = k.grad(), dv = v.grad();
  q.zero_grad(), k.zero_grad(), v.zero_grad();
  std::vector<float> a(static_cast<size_t>(B * H * T * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < T; ++i)
        for (int64_t j = 0; j < T; ++j) a[((b * H + h) * T + i) * T + j] = local_allowed(mask, C, b, i, j);
  const Tensor ref =
      tfm::test::dense_rounds_reference(q, k, v, {core::from_vector(a, {B, H, T, T})}, false, scale);
  core::sum(core::mul(ref, w)).backward();
  CHECK(max_abs_diff(core::mul(out, keep), core::mul(ref, keep).detach()) < 2e-5f);
  CHECK(max_abs_diff(dq, q.grad()) < 1e-4f);
  CHECK(max_abs_diff(dk, k.grad()) < 1e-4f);
  CHECK(max_abs_diff(dv, v.grad()) < 1e-4f);
}

TEST_CASE("local: finite-difference gradcheck at a tiny size", "[local]") {
  AttentionMask mask;
  mask.causal = GENERATE(false, true);
  mask.key_padding = tail_padding(7, {1});
  const Tensor q = random_tensor({1, 2, 7, 3}, 20, 1.0f, true), k = random_tensor({1, 2, 7, 3}, 21, 1.0f, true);
  const Tensor v = random_tensor({1, 2, 7, 3}, 22, 1.0f, true);
  tfm::test::check_gradients(
      [&](const std::vector<Tensor>& in) { return layers::local_attention(in[0], in[1], in[2], mask, 0.8f, {3}); },
      {q, k, v});
}

TEST_CASE("local: padded tokens do not change valid outputs; causality is exact", "[local]") {
  const int64_t B = 2, H = 2, T = 33, D = 6, C = 8;
  const Tensor q = random_tensor({B, H, T, D}, 30), k = random_tensor({B, H, T, D}, 31), v = random_tensor({B, H, T, D}, 32);
  AttentionMask mask;
  mask.key_padding = tail_padding(T, {6, 0});
  for (bool causal : {false, true}) {
    mask.causal = causal;
    const Tensor a = layers::local_attention(q, k, v, mask, 0.4f, {C});
    Tensor q2 = q.clone(), k2 = k.clone(), v2 = v.clone();
    for (Tensor* t : {&q2, &k2, &v2}) t->slice(0, 0, 1).slice(2, T - 6, T).copy_(random_tensor({1, H, 6, D}, 33, 3.0f));
    const Tensor b = layers::local_attention(q2, k2, v2, mask, 0.4f, {C});
    CHECK(max_abs_diff(a.slice(0, 0, 1).slice(2, 0, T - 6), b.slice(0, 0, 1).slice(2, 0, T - 6)) == 0.0f);
    CHECK(max_abs_diff(a.slice(0, 1, 2), b.slice(0, 1, 2)) == 0.0f);
  }
  mask = AttentionMask();
  mask.causal = true;
  const Tensor base = layers::local_attention(q, k, v, mask, 0.4f, {C});
  for (int64_t j : {0, 8, 15, 32}) {
    Tensor q2 = q.clone(), k2 = k.clone(), v2 = v.clone();
    for (Tensor* t : {&q2, &k2, &v2}) t->slice(2, j, j + 1).copy_(random_tensor({B, H, 1, D}, 40 + j, 2.0f));
    const Tensor out = layers::local_attention(q2, k2, v2, mask, 0.4f, {C});
    INFO("changed token " << j);
    if (j > 0) CHECK(max_abs_diff(out.slice(2, 0, j), base.slice(2, 0, j)) == 0.0f);
    CHECK(max_abs_diff(out.slice(2, j, T), base.slice(2, j, T)) > 0.0f);
  }
}

TEST_CASE("local: peak memory of forward and backward grows linearly in T", "[local]") {
  const int64_t H = 2, D = 16;
  AttentionMask mask;
  mask.causal = true;
  auto peak = [&](int64_t T) {
    const Tensor q = random_tensor({1, H, T, D}, 50, 1.0f, true), k = random_tensor({1, H, T, D}, 51, 1.0f, true);
    const Tensor v = random_tensor({1, H, T, D}, 52, 1.0f, true), w = random_tensor({1, H, T, D}, 53);
    const int64_t before = core::memory_stats().current_bytes;
    core::reset_peak_memory();
    core::sum(core::mul(layers::local_attention(q, k, v, mask, 0.25f, {64}), w)).backward();
    return core::memory_stats().peak_bytes - before;
  };
  const int64_t small = peak(1024), large = peak(4096);
  INFO("peak bytes: T=1024 " << small << ", T=4096 " << large);
  CHECK(double(large) / double(small) < 5.0);
  CHECK(large < 4096LL * 4096 * 4);
}

TEST_CASE("local: argument errors name the argument", "[local]") {
  const Tensor x = random_tensor({1, 1, 8, 4}, 60);
  CHECK_THROWS_WITH(layers::local_attention(x, x, x, {}, 1.0f, {0}), Contains("chunk_length must be >= 1"));
  CHECK_THROWS_WITH(layers::local_attention(x, random_tensor({1, 1, 7, 4}, 61), x, {}, 1.0f, {4}),
                    Contains("same [B, H, T, D]"));
  AttentionMask m;
  m.key_padding = core::zeros({2, 8});
  CHECK_THROWS_WITH(layers::local_attention(x, x, x, m, 1.0f, {4}), Contains("key_padding [2, 8]"));
  m = AttentionMask();
  m.q_offset = 1;
  CHECK_THROWS_WITH(layers::local_attention(x, x, x, m, 1.0f, {4}), Contains("q_offset must be 0"));
}

}  // namespace

namespace {

TEST_CASE("local: strided views and thread counts give the same results", "[local]") {
  const int64_t B = 2, H = 3, T = 45, D = 8;
  Tensor bq = random_tensor({B, T, H, D}, 70, 1.0f, true), bk = random_tensor({B, T, H, D}, 71, 1.0f, true);
  Tensor bv = random_tensor({B, T, H, D}, 72, 1.0f, true);
  AttentionMask mask;
  mask.causal = true;
  const Tensor w = random_tensor({B, H, T, D}, 73);
  auto run = [&](bool views, int threads) {
    bq.zero_grad(), bk.zero_grad(), bv.zero_grad();
    const int saved = core::num_threads();
    core::set_num_threads(threads);
    auto heads = [&](const Tensor& x) {
      return views ? x.permute({0, 2, 1, 3}) : x.permute({0, 2, 1, 3}).contiguous();
    };
    const Tensor out = layers::local_attention(heads(bq), heads(bk), heads(bv), mask, 0.35f, {8});
    core::sum(core::mul(out, w)).backward();
    core::set_num_threads(saved);
    return std::vector<Tensor>{out.detach(), bq.grad(), bk.grad(), bv.grad()};
  };
  const auto a = run(true, 2), b = run(false, 1);
  for (int i = 0; i < 4; ++i) CHECK(max_abs_diff(a[i], b[i]) == 0.0f);
}

}  // namespace

namespace {

TEST_CASE("local: attention dropout equals core::dropout on the dense windowed probabilities", "[local]") {
  const int64_t B = 2, H = 1, T = 22, D = 5, C = 6;
  const float scale = 0.5f, p = 0.25f;
  AttentionMask mask;
  mask.causal = GENERATE(false, true);
  Tensor q = random_tensor({B, H, T, D}, 80, 1.0f, true), k = random_tensor({B, H, T, D}, 81, 1.0f, true);
  Tensor v = random_tensor({B, H, T, D}, 82, 1.0f, true);
  const Tensor w = random_tensor({B, H, T, D}, 83);
  core::Generator gen(84);
  const uint64_t first = gen.offset();
  const Tensor out = layers::local_attention(q, k, v, mask, scale, {C}, p, &gen);
  core::sum(core::mul(out, w)).backward();
  const Tensor dq = q.grad(), dk = k.grad(), dv = v.grad();
  q.zero_grad(), k.zero_grad(), v.zero_grad();
  std::vector<float> a(static_cast<size_t>(B * H * T * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T; ++i)
      for (int64_t j = 0; j < T; ++j) a[(b * T + i) * T + j] = local_allowed(mask, C, b, i, j);
  const Tensor ref = tfm::test::dense_rounds_reference(q, k, v, {core::from_vector(a, {B, H, T, T})}, false, scale,
                                                       p, gen.seed(), first);
  core::sum(core::mul(ref, w)).backward();
  CHECK(max_abs_diff(out, ref.detach()) < 2e-5f);
  CHECK(max_abs_diff(dq, q.grad()) < 1e-4f);
  CHECK(max_abs_diff(dk, k.grad()) < 1e-4f);
  CHECK(max_abs_diff(dv, v.grad()) < 1e-4f);
  CHECK(max_abs_diff(out, layers::local_attention(q, k, v, mask, scale, {C})) > 0.01f);
}

}  // namespace

namespace {

TEST_CASE("local: cached decoding steps equal the rows of the chunked kernel", "[local]") {
  const int64_t B = 2, H = 2, T = 21, D = 6, C = 4;
  const Tensor q = random_tensor({B, H, T, D}, 90), k = random_tensor({B, H, T, D}, 91), v = random_tensor({B, H, T, D}, 92);
  AttentionMask mask;
  mask.causal = true;
  mask.key_padding = tail_padding(T, {0, 0});
  core::Generator gen(93);
  const Tensor full = layers::local_backend_attend(q, k, v, mask, 0.4f, 0.5f, false, gen, {C});
  CHECK(gen.offset() == 0);  // not training: no dropout drawn
  CHECK(max_abs_diff(full, layers::local_attention(q, k, v, mask, 0.4f, {C})) == 0.0f);
  CHECK(max_abs_diff(layers::local_attention_dense(q, k, v, mask, 0.4f, {C}), full) < 1e-5f);
  for (int64_t p = 0; p < T; ++p) {
    AttentionMask step;
    step.causal = true;
    step.q_offset = p;
    step.key_padding = mask.key_padding.slice(1, 0, p + 1);
    const Tensor o = layers::local_backend_attend(q.slice(2, p, p + 1), k.slice(2, 0, p + 1), v.slice(2, 0, p + 1),
                                                  step, 0.4f, 0.0f, false, gen, {C});
    INFO("step " << p);
    CHECK(max_abs_diff(o, full.slice(2, p, p + 1)) < 1e-5f);
  }
}

}  // namespace
