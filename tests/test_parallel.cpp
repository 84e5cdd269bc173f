// tfm's thread team (core/parallel.h): every share runs once, exceptions
// from any thread reach the caller, regions inside regions run serially,
// and matrix products split over the team (core/onednn.h) match a naive
// product on every split axis.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/onednn.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "gradcheck.h"

using namespace tfm::core;
using tfm::test::max_abs_diff;
using tfm::test::random_tensor;

namespace {

// Restores the thread count a test changes.
struct Threads {
  int saved = num_threads();
  explicit Threads(int n) { set_num_threads(n); }
  ~Threads() { set_num_threads(saved); }
};

// out[b, i, j] = Σ_q a[b, i, q] w[b, q, j] (+ bias[j]) in double, from the
// logical values (any strides).
std::vector<float> naive(const Tensor& a, const Tensor& w, const Tensor& bias = Tensor()) {
  const Tensor a3 = a.dim() == 2 ? a.unsqueeze(0) : a, w3 = w.dim() == 2 ? w.unsqueeze(0) : w;
  const int64_t B = std::max(a3.size(0), w3.size(0)), M = a3.size(1), K = a3.size(2), N = w3.size(2);
  const auto av = a3.expand({B, M, K}).contiguous().to_vector(), wv = w3.expand({B, K, N}).contiguous().to_vector();
  const auto bv = bias.defined() ? bias.to_vector() : std::vector<float>(N, 0.0f);
  std::vector<float> out(B * M * N);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = bv[j];
        for (int64_t q = 0; q < K; ++q) s += static_cast<double>(av[(b * M + i) * K + q]) * wv[(b * K + q) * N + j];
        out[(b * M + i) * N + j] = static_cast<float>(s);
      }
  return out;
}

float max_diff(const Tensor& got, const std::vector<float>& want) {
  const auto g = got.contiguous().to_vector();
  REQUIRE(g.size() == want.size());
  float d = 0;
  for (std::size_t i = 0; i < g.size(); ++i) d = std::max(d, std::abs(g[i] - want[i]));
  return d;
}

}  // namespace

TEST_CASE("a parallel region runs every share once, on distinct threads", "[parallel]") {
  Threads two(2);
  std::vector<int> seen(2, 0);
  std::vector<std::thread::id> ids(2);
  parallel_region(2, [&](int t, int n) {
    CHECK(n == 2);
    CHECK(in_parallel());
    seen[t]++;
    ids[t] = std::this_thread::get_id();
  });
  CHECK(seen == std::vector<int>{1, 1});
  CHECK(ids[0] == std::this_thread::get_id());
  CHECK(ids[1] != ids[0]);
  CHECK_FALSE(in_parallel());
  // Many short regions in a row (the worker spins between them), then one
  // after a pause longer than the spin (the worker sleeps and is woken).
  std::atomic<int64_t> sum{0};
  for (int r = 0; r < 2000; ++r) parallel_for(100, true, [&](int64_t i) { sum += i; });
  CHECK(sum == 2000 * 4950);
  std::this_thread::sleep_for(std::chrono::microseconds(3 * spin_micros() + 1000));
  sum = 0;
  parallel_for(100, true, [&](int64_t i) { sum += i; });
  CHECK(sum == 4950);
}

TEST_CASE("parallel loops cover their range exactly once", "[parallel]") {
  Threads two(2);
  for (const int64_t count : {0LL, 1LL, 2LL, 3LL, 1001LL}) {
    INFO(count);
    std::vector<std::atomic<int>> hits(count);
    parallel_for(count, true, [&](int64_t i) { hits[i]++; });
    parallel_for_dynamic(count, 2, [&](int64_t i, int t) {
      CHECK((t == 0 || t == 1));
      hits[i]++;
    });
    parallel_ranges(count, true, [&](int64_t b, int64_t e) {
      CHECK(b < e);
      for (int64_t i = b; i < e; ++i) hits[i]++;
    });
    for (int64_t i = 0; i < count; ++i) CHECK(hits[i] == 3);
  }
}

TEST_CASE("a region inside a region runs serially on the calling thread", "[parallel]") {
  Threads two(2);
  std::atomic<int> inner_calls{0};
  parallel_region(2, [&](int, int) {
    const auto me = std::this_thread::get_id();
    parallel_region(2, [&](int t, int n) {
      CHECK(t == 0);
      CHECK(n == 1);
      CHECK(std::this_thread::get_id() == me);
      inner_calls++;
    });
  });
  CHECK(inner_calls == 2);
}

TEST_CASE("an exception thrown by any share reaches the caller after every share ends", "[parallel]") {
  Threads two(2);
  for (const int thrower : {0, 1}) {
    std::atomic<int> finished{0};
    CHECK_THROWS_WITH(parallel_region(2,
                                      [&](int t, int) {
                                        if (t == thrower) throw std::runtime_error("share failed");
                                        std::this_thread::sleep_for(std::chrono::milliseconds(5));
                                        finished++;
                                      }),
                      "share failed");
    CHECK(finished == 1);
  }
  // The team still works afterwards.
  std::atomic<int> n{0};
  parallel_region(2, [&](int, int) { n++; });
  CHECK(n == 2);
}

TEST_CASE("products split over the team match a naive product on every split axis", "[parallel][matmul]") {
  Threads two(2);
  // Batches (3 >= 2 threads): [3, 70, 40] x [3, 40, 50], and a broadcast weight.
  Tensor a = random_tensor({3, 70, 40}, 1), w = random_tensor({3, 40, 50}, 2), w1 = random_tensor({40, 50}, 3);
  CHECK(max_diff(matmul(a, w), naive(a, w)) < 1e-4f);
  CHECK(max_diff(matmul(a, w1), naive(a, w1.unsqueeze(0))) < 1e-4f);
  // Rows (M = 203 >= N, not a multiple of the 8-row blocks), with a
  // transposed, row-sliced first operand.
  Tensor big = random_tensor({80, 230}, 4);
  Tensor x = big.slice(1, 10, 213).transpose(0, 1), v = random_tensor({80, 37}, 5);
  CHECK(max_diff(matmul(x, v), naive(x, v)) < 1e-4f);
  // Columns (N = 301 > M): linear (weight [N, K], read transposed) with a bias.
  Tensor xs = random_tensor({37, 64}, 6), wt = random_tensor({301, 64}, 7), bias = random_tensor({301}, 8);
  CHECK(max_diff(linear(xs, wt, bias), naive(xs, wt.transpose(0, 1), bias)) < 1e-4f);
  // Batch 1 of a 3-d product goes by rows or columns too.
  Tensor a1 = random_tensor({1, 300, 64}, 9), w2 = random_tensor({1, 64, 20}, 10);
  CHECK(max_diff(matmul(a1, w2), naive(a1, w2)) < 1e-4f);
  // The same results on one thread (another primitive, the same numbers up to rounding).
  const Tensor two_threads = linear(xs, wt, bias);
  Threads one(1);
  CHECK(max_abs_diff(linear(xs, wt, bias), two_threads) < 1e-5f);
}

TEST_CASE("one primitive run by two threads at once gives each its own exact result", "[parallel][matmul]") {
  // The parts of an even split share a primitive; with oneDNN's shared
  // scratchpad they corrupted each other now and then (110 of 6000 products).
  Threads two(2);
  const int64_t m = 384, k = 128, n = 384;
  const Tensor w = random_tensor({k, n}, 20);
  const Tensor a[2] = {random_tensor({m, k}, 21), random_tensor({m, k}, 22)};
  const Tensor want[2] = {matmul(a[0], w), matmul(a[1], w)};
  std::vector<float> got[2] = {std::vector<float>(m * n), std::vector<float>(m * n)};
  const onednn::MatDesc sa{1, m, k, m * k, k, 1}, sw{1, k, n, k * n, n, 1};
  int mismatches = 0;
  for (int r = 0; r < 1000; ++r) {
    parallel_region(2, [&](int t, int) {
      onednn::matmul(sa, a[t].data<float>(), sw, w.data<float>(), nullptr, got[t].data(), 1, m, n);
    });
    for (int t = 0; t < 2; ++t) mismatches += got[t] != want[t].to_vector();
  }
  CHECK(mismatches == 0);
}
