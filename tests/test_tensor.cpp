// Tensor basics: factories, views and strides, printing, in-place updates,
// the caching allocator and memory tracker, and the counter-based RNG.
#include <catch2/catch.hpp>

#include <cmath>
#include <set>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/rng.h"
#include "core/tensor.h"

using namespace tfm::core;
using Catch::Matchers::Contains;

TEST_CASE("factories fill shapes and values", "[tensor]") {
  Tensor z = zeros({2, 3});
  CHECK(z.shape() == Shape{2, 3});
  CHECK(z.strides() == Shape{3, 1});
  CHECK(z.numel() == 6);
  for (float v : z.to_vector()) CHECK(v == 0.0f);
  for (float v : ones({4}).to_vector()) CHECK(v == 1.0f);
  for (float v : full({2, 2}, 2.5f).to_vector()) CHECK(v == 2.5f);
  CHECK(arange(4).to_vector() == std::vector<float>{0, 1, 2, 3});
  CHECK(arange(1.0, 2.0, 0.25).to_vector() == std::vector<float>{1.0f, 1.25f, 1.5f, 1.75f});
  Tensor v = from_vector({1, 2, 3, 4, 5, 6}, {3, 2});
  CHECK(v.at({2, 1}) == 6.0f);
  Tensor iv = from_vector(std::vector<int32_t>{7, 8}, {2});
  CHECK(iv.dtype() == DType::i32);
  CHECK(iv.to_int_vector() == std::vector<int32_t>{7, 8});
  CHECK(scalar_tensor(3.0f).item() == 3.0f);
  CHECK(scalar_tensor(3.0f).dim() == 0);
}

TEST_CASE("storage is 64-byte aligned", "[tensor]") {
  for (int64_t n : {1, 7, 100, 1000, 123457}) {
    Tensor t = empty({n});
    CHECK(reinterpret_cast<uintptr_t>(t.data<float>()) % 64 == 0);
  }
}

TEST_CASE("bad factory arguments throw", "[tensor]") {
  REQUIRE_THROWS_WITH(from_vector({1, 2, 3}, {2, 2}), Contains("from_vector") && Contains("[2, 2]"));
  REQUIRE_THROWS_WITH(empty({2, -1}), Contains("negative"));
  REQUIRE_THROWS_WITH(arange(0.0, 1.0, 0.0), Contains("step"));
  REQUIRE_THROWS_WITH(ones({2}).item(), Contains("item") && Contains("[2]"));
  REQUIRE_THROWS_WITH(from_vector(std::vector<int32_t>{1}, {1}).data<float>(), Contains("f32"));
}

TEST_CASE("views share storage and use strides", "[tensor]") {
  Tensor x = from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor t = x.transpose(0, 1);
  CHECK(t.shape() == Shape{3, 2});
  CHECK(t.strides() == Shape{1, 3});
  CHECK_FALSE(t.is_contiguous());
  CHECK(t.shares_storage(x));
  CHECK(t.to_vector() == std::vector<float>{0, 3, 1, 4, 2, 5});
  Tensor c = t.contiguous();
  CHECK(c.is_contiguous());
  CHECK_FALSE(c.shares_storage(x));
  CHECK(c.to_vector() == t.to_vector());
  Tensor s = x.slice(1, 1, 3);
  CHECK(s.offset() == 1);
  CHECK(s.to_vector() == std::vector<float>{1, 2, 4, 5});
  Tensor e = from_vector({1, 2}, {2, 1}).expand({2, 3});
  CHECK(e.strides()[1] == 0);
  CHECK(e.to_vector() == std::vector<float>{1, 1, 1, 2, 2, 2});
  // Writing through a view changes the base.
  s.fill_(9.0f);
  CHECK(x.to_vector() == std::vector<float>{0, 9, 9, 3, 9, 9});
}

TEST_CASE("printing is readable and truncates", "[tensor]") {
  Tensor x = from_vector({1, 2, 3, 4}, {2, 2});
  const std::string s = to_string(x);
  CHECK_THAT(s, Contains("tensor(") && Contains("shape=[2, 2]") && Contains("f32"));
  const std::string big = to_string(arange(100));
  CHECK_THAT(big, Contains("..."));
  CHECK_THAT(to_string(arange(100), true), !Contains("..."));
  Tensor p = ones({2});
  p.set_requires_grad();
  CHECK_THAT(to_string(p), Contains("requires_grad"));
}

TEST_CASE("in-place updates respect grad mode", "[tensor]") {
  Tensor w = ones({3});
  w.set_requires_grad();
  REQUIRE_THROWS_WITH(w.add_(ones({3})), Contains("add_") && Contains("NoGradGuard"));
  {
    NoGradGuard g;
    w.add_(full({3}, 2.0f), 0.5f);
    w.mul_(2.0f);
  }
  CHECK(w.to_vector() == std::vector<float>{4, 4, 4});
  Tensor a = zeros({2, 3});
  a.copy_(from_vector({1, 2, 3}, {3}));  // broadcast copy
  CHECK(a.to_vector() == std::vector<float>{1, 2, 3, 1, 2, 3});
  REQUIRE_THROWS_WITH(a.copy_(ones({4})), Contains("copy"));
}

TEST_CASE("caching allocator reuses blocks and tracks bytes", "[tensor][memory]") {
  const MemoryStats before = memory_stats();
  {
    Tensor a = empty({1000, 1000});  // 4 MB
    const MemoryStats during = memory_stats();
    CHECK(during.current_bytes - before.current_bytes == 4000000);
    CHECK(during.peak_bytes >= during.current_bytes);
  }
  const MemoryStats after_free = memory_stats();
  CHECK(after_free.current_bytes == before.current_bytes);
  CHECK(after_free.cached_bytes >= 4000000);
  // The same size class is served from the free list.
  const int64_t hits = memory_stats().cache_hits;
  void* p1 = nullptr;
  {
    Tensor b = empty({1000, 999});
    p1 = b.data<float>();
    CHECK(memory_stats().cache_hits == hits + 1);
  }
  {
    Tensor c = empty({1000, 999});
    CHECK(c.data<float>() == p1);
  }
  reset_peak_memory();
  CHECK(memory_stats().peak_bytes == memory_stats().current_bytes);
  empty_cache();
  CHECK(memory_stats().cached_bytes == 0);
}

TEST_CASE("philox matches the published known-answer vectors", "[rng]") {
  // Random123 kat_vectors: philox4x32-10 with counter = 0, key = 0.
  auto r = philox4x32(0, 0);
  CHECK(r[0] == 0x6627e8d5u);
  CHECK(r[1] == 0xe169c58du);
  CHECK(r[2] == 0xbc57ac4cu);
  CHECK(r[3] == 0x9b00dbd8u);
}

TEST_CASE("the bulk philox fill equals one call per counter", "[rng]") {
  // Lengths around the 16-lane batches, counters crossing the 32-bit boundary.
  for (const int64_t blocks : {1, 15, 16, 17, 40}) {
    for (const uint64_t first : {uint64_t{0}, uint64_t{0xFFFFFFF8u}}) {
      std::vector<uint32_t> out(static_cast<std::size_t>(4 * blocks + 1), 0xABCDu);
      philox4x32_fill(0x1234567890ull, first, blocks, out.data());
      for (int64_t i = 0; i < blocks; ++i) {
        const auto r = philox4x32(0x1234567890ull, first + static_cast<uint64_t>(i));
        for (int k = 0; k < 4; ++k) REQUIRE(out[static_cast<std::size_t>(4 * i + k)] == r[static_cast<std::size_t>(k)]);
      }
      CHECK(out.back() == 0xABCDu);  // nothing written past the end
    }
  }
}

TEST_CASE("generators are reproducible and thread-count independent", "[rng]") {
  Generator g1(42), g2(42);
  Tensor a = randn({1000}, g1), b = randn({1000}, g2);
  CHECK(a.to_vector() == b.to_vector());
  CHECK(g1.offset() == 250);
  Tensor c = randn({1000}, g1);  // continues the stream
  CHECK(c.to_vector() != a.to_vector());
  const int saved = num_threads();
  set_num_threads(1);
  Generator h1(7);
  Tensor one = uniform({200000}, h1);
  set_num_threads(2);
  Generator h2(7);
  Tensor two = uniform({200000}, h2);
  set_num_threads(saved);
  CHECK(one.to_vector() == two.to_vector());
}

TEST_CASE("randn and uniform have the right moments", "[rng]") {
  Generator g(3);
  const auto n = randn({200000}, g, 1.0f, 2.0f).to_vector();
  double m = 0, v = 0;
  for (float x : n) m += x;
  m /= n.size();
  for (float x : n) v += (x - m) * (x - m);
  v /= n.size();
  CHECK(m == Approx(1.0).margin(0.02));
  CHECK(std::sqrt(v) == Approx(2.0).margin(0.02));
  const auto u = uniform({200000}, g, -1.0f, 3.0f).to_vector();
  double mu = 0;
  float lo = 1e9f, hi = -1e9f;
  for (float x : u) {
    mu += x;
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  CHECK(mu / u.size() == Approx(1.0).margin(0.02));
  CHECK(lo >= -1.0f);
  CHECK(hi < 3.0f);
}

TEST_CASE("in-place ops reject destinations whose elements share memory", "[tensor]") {
  Tensor row = from_vector({1, 2, 3}, {1, 3});
  Tensor wide = row.expand({4, 3});  // stride 0 over 4 rows: one row in memory
  REQUIRE_THROWS_WITH(wide.fill_(0.0f), Contains("fill_") && Contains("share memory") && Contains("[4, 3]"));
  REQUIRE_THROWS_WITH(wide.copy_(ones({4, 3})), Contains("copy_") && Contains("share memory"));
  REQUIRE_THROWS_WITH(wide.add_(ones({4, 3})), Contains("add_") && Contains("share memory"));
  REQUIRE_THROWS_WITH(wide.mul_(2.0f), Contains("mul_") && Contains("share memory"));
  CHECK(row.to_vector() == std::vector<float>{1, 2, 3});  // nothing was written
  // Interleaving strides overlap too: [3, 2] over strides [1, 1].
  Tensor base = arange(8);
  auto impl = std::make_shared<TensorImpl>(*base.impl());
  impl->shape = {3, 2};
  impl->strides = {1, 1};
  REQUIRE_THROWS_WITH(Tensor(impl).fill_(0.0f), Contains("share memory"));
  // Views whose elements are distinct are fine: slices, transposes, steps,
  // and size-1 dims with any stride.
  Tensor m = zeros({4, 6});
  m.slice(1, 1, 5, 2).fill_(1.0f);
  m.transpose(0, 1).slice(0, 0, 1).add_(ones({1, 4}));
  m.slice(0, 2, 3).mul_(3.0f);
  m.unsqueeze(0).expand({1, 4, 6}).add_(ones({4, 6}));
  CHECK(m.at({0, 0}) == 2.0f);
  CHECK(m.at({0, 1}) == 2.0f);
  CHECK(m.at({2, 3}) == 4.0f);  // (1 · 3) + 1
  CHECK(m.at({3, 4}) == 1.0f);
}
