// Data parallelism without a launcher: how a global batch is cut into rank
// slices (every example of an epoch used exactly once across ranks), the
// autograd hook that starts gradient sums early, and the one-process
// fallback of dist/comm.h. The multi-process tests are in tests/mpi/.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <numeric>
#include <set>

#include "core/autograd.h"
#include "core/checkpoint.h"
#include "core/ops.h"
#include "data/lm_data.h"
#include "data/translation.h"
#include "dist/comm.h"
#include "train/data_parallel.h"

using namespace tfm;
using train::RowRange;

namespace {
// The slices of all ranks, checked to be contiguous, in rank order and covering [0, n).
std::vector<RowRange> all_slices(int64_t n, int size, const std::vector<int64_t>* tokens) {
  std::vector<RowRange> out;
  int64_t next = 0;
  for (int r = 0; r < size; ++r) {
    const RowRange s = tokens ? train::shard_by_tokens(*tokens, r, size) : train::shard_rows(n, r, size);
    REQUIRE(s.begin == next);
    REQUIRE(s.end >= s.begin);
    next = s.end;
    out.push_back(s);
  }
  REQUIRE(next == n);
  return out;
}
}  // namespace

TEST_CASE("rank slices of a batch are contiguous, cover it once and are balanced", "[data_parallel]") {
  for (int size : {1, 2, 3, 4, 7}) {
    for (int64_t rows : {7, 12, 13, 64}) {
      const auto s = all_slices(rows, size, nullptr);
      for (const RowRange& r : s) CHECK(std::abs(r.size() - rows / size) <= 1);
    }
    // By tokens: each rank within one row's tokens of an equal share.
    core::Generator g(3);
    std::vector<int64_t> tok(40);
    for (auto& t : tok) t = 1 + static_cast<int64_t>(g.next_u64() % 30);
    const int64_t total = std::accumulate(tok.begin(), tok.end(), int64_t{0});
    const int64_t longest = *std::max_element(tok.begin(), tok.end());
    for (const RowRange& r : all_slices(40, size, &tok)) {
      int64_t mine = 0;
      for (int64_t i = r.begin; i < r.end; ++i) mine += tok[static_cast<std::size_t>(i)];
      CHECK(std::abs(static_cast<double>(mine) - static_cast<double>(total) / size) <= static_cast<double>(longest));
    }
  }
  // Fewer rows than ranks: some slices are empty, still one cover.
  const std::vector<int64_t> two{5, 9};
  all_slices(2, 4, &two);
  CHECK(train::row_tokens(core::from_vector(std::vector<int32_t>{4, 5, 0, 6, 0, 0}, {2, 3}), 0) ==
        std::vector<int64_t>{2, 1});
}

TEST_CASE("over one epoch every GPT window is used exactly once across ranks", "[data_parallel]") {
  const int64_t block = 8;
  std::vector<int32_t> tokens(8 * 45 + 1);
  std::iota(tokens.begin(), tokens.end(), 0);  // a window is named by its first token
  for (int size : {2, 3, 4}) {
    data::LMStream stream(tokens, block, data::Sampling::epoch);
    core::Generator gen(11);
    const int64_t batch = 9, windows = stream.windows();
    std::map<int32_t, int> used;
    for (int64_t served = 0; served < windows; served += batch) {
      const data::LMBatch b = stream.next(batch, gen);  // the same global batch on every rank
      for (int r = 0; r < size; ++r) {
        const RowRange s = train::shard_rows(batch, r, size);
        for (int64_t i = s.begin; i < s.end && served + i < windows; ++i) ++used[b.inputs.data<int32_t>()[i * block]];
      }
    }
    CHECK(static_cast<int64_t>(used.size()) == windows);
    for (const auto& [start, count] : used) CHECK(count == 1);
  }
}

TEST_CASE("over one epoch every translation pair is used exactly once across ranks", "[data_parallel]") {
  std::vector<data::TranslationExample> ex;
  core::Generator g(2);
  for (int i = 0; i < 200; ++i) {
    data::TranslationExample e;
    const int ls = 1 + static_cast<int>(g.next_u64() % 12), lt = 1 + static_cast<int>(g.next_u64() % 12);
    for (int k = 0; k < ls; ++k) e.src.push_back(5 + k);
    for (int k = 0; k < lt; ++k) e.tgt.push_back(5 + k);
    ex.push_back(e);
  }
  const data::SpecialIds ids;
  for (int size : {2, 3, 4}) {
    data::TranslationBatcher batcher(ex, 120, ids, 9);
    std::map<int64_t, int> used;
    int64_t seen = 0;
    while (seen < static_cast<int64_t>(ex.size())) {
      const data::TranslationBatch b = batcher.next();
      const std::vector<int64_t> tok = train::row_tokens(b.tgt_out, ids.pad);
      CHECK(std::accumulate(tok.begin(), tok.end(), int64_t{0}) == b.tgt_tokens);
      for (const RowRange& s : all_slices(static_cast<int64_t>(tok.size()), size, &tok))
        for (int64_t i = s.begin; i < s.end; ++i) ++used[b.indices[static_cast<std::size_t>(i)]], ++seen;
    }
    CHECK(seen == static_cast<int64_t>(ex.size()));  // the epoch ended on a batch boundary
    CHECK(used.size() == ex.size());
    for (const auto& [index, count] : used) CHECK(count == 1);
  }
}

TEST_CASE("the leaf-final hook fires once per leaf, when its gradient is complete", "[data_parallel][autograd]") {
  core::Tensor a = core::from_vector({1, 2, 3}, {3}).set_requires_grad();
  core::Tensor b = core::from_vector({4, 5, 6}, {3}).set_requires_grad();
  core::Tensor unused = core::from_vector({1}, {1}).set_requires_grad();
  // a is used on three paths, b on one.
  core::Tensor y = core::sum(core::add(core::mul(core::mul(a, a), b), core::mul(a, 2.0f)));
  std::map<const core::TensorImpl*, std::vector<float>> at_hook;
  std::map<const core::TensorImpl*, int> calls;
  {
    core::LeafGradFinalScope scope([&](const core::TensorImpl* leaf) {
      ++calls[leaf];
      const core::Tensor g(leaf->grad);
      at_hook[leaf] = std::vector<float>(g.data<float>(), g.data<float>() + g.numel());
    });
    y.backward();
  }
  REQUIRE(calls.size() == 2);
  CHECK(calls[a.impl()] == 1);
  CHECK(calls[b.impl()] == 1);
  CHECK(calls.count(unused.impl()) == 0);
  for (const core::Tensor* t : {&a, &b}) {  // the gradient seen by the hook is the final one
    const core::Tensor g = t->grad();
    CHECK(at_hook[t->impl()] == std::vector<float>(g.data<float>(), g.data<float>() + g.numel()));
  }
  CHECK(at_hook[a.impl()] == std::vector<float>{2 * 1 * 4 + 2, 2 * 2 * 5 + 2, 2 * 3 * 6 + 2});

  // Outside the scope nothing fires; inside a recomputed (nested) pass neither.
  core::Tensor w = core::from_vector({0.5f, -1.0f}, {2}).set_requires_grad();
  core::Tensor x = core::from_vector({3, 4}, {2}).set_requires_grad();
  std::vector<const core::TensorImpl*> fired;
  {
    core::LeafGradFinalScope scope([&](const core::TensorImpl* leaf) { fired.push_back(leaf); });
    core::Tensor z = core::checkpoint([&](const std::vector<core::Tensor>& in) { return core::mul(in[0], w); }, {x});
    core::sum(z).backward();
  }
  // x is an input edge of the outer graph; w is reached only by the nested pass.
  CHECK(fired == std::vector<const core::TensorImpl*>{x.impl()});
  CHECK(w.grad().data<float>()[0] == 3.0f);  // still accumulated
}

TEST_CASE("one process: the group is rank 0 of 1 and collectives are copies", "[data_parallel]") {
  CHECK(dist::rank() == 0);
  CHECK(dist::size() == 1);
  CHECK(dist::where().empty());
  float v[3] = {1, 2, 3};
  dist::allreduce_sum(v, 3, "sum");
  CHECK(v[2] == 3.0f);
  int mine = 7, all = 0;
  dist::allgather(&mine, sizeof mine, &all, "gather");
  CHECK(all == 7);
  dist::PendingSum p = dist::iallreduce_sum(v, 3, "isum");
  CHECK(!p.active());
  CHECK_THROWS_WITH(dist::set_timeout(0), Catch::Contains("timeout must be > 0"));
  // GradSync leaves gradients untouched with one process.
  core::Tensor w = core::from_vector({1, 2}, {2}).set_requires_grad();
  core::sum(core::mul(w, w)).backward();
  train::GradSync sync({w}, 1024, true);
  CHECK(!sync.hook());
  sync.finish();
  CHECK(w.grad().data<float>()[1] == 4.0f);
}
