// Translation data and decoding: TSV reading and its errors, batch padding,
// the token-budget batcher (epochs, budget, determinism, resume, fixed
// evaluation batches), and greedy / beam-search decoding against
// independent step-by-step references on a tiny trained Seq2Seq.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "data/translation.h"
#include "layers/decode.h"
#include "layers/sampling.h"
#include "layers/seq2seq.h"
#include "optim/optimizer.h"

namespace {

namespace core = tfm::core;
namespace data = tfm::data;
namespace layers = tfm::layers;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;
using core::Tensor;

// ---------------------------------------------------------------- helpers

struct TempDir {
  fs::path path;
  TempDir() : path(fs::temp_directory_path() / ("tfm_test_translation_" + std::to_string(getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    const fs::path p = path / name;
    std::ofstream(p, std::ios::binary) << text;
    return p.string();
  }
};

std::string error_of(const std::string& path) {
  try {
    data::read_tsv(path);
  } catch (const tfm::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Examples with source lengths 1..max_len and target lengths 0..max_len-1 of
// random ids; example i's first source token is i % 1000 + 4 to tell them apart.
std::vector<data::TranslationExample> random_examples(int64_t n, int64_t max_len, uint64_t seed) {
  core::Generator g(seed);
  std::vector<data::TranslationExample> ex(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    auto& e = ex[static_cast<std::size_t>(i)];
    e.src.resize(1 + g.next_u64() % static_cast<uint64_t>(max_len));
    e.tgt.resize(g.next_u64() % static_cast<uint64_t>(max_len));
    for (auto& t : e.src) t = 4 + static_cast<int32_t>(g.next_u64() % 50);
    for (auto& t : e.tgt) t = 4 + static_cast<int32_t>(g.next_u64() % 50);
  }
  return ex;
}

int64_t padded_size(const data::TranslationBatch& b) {
  return std::max(b.src.size(1), b.tgt_in.size(1)) * b.src.size(0);
}

// Consumes exactly one epoch (batches until every example has been served
// once) and returns the batches' index lists; fails on any repeat.
std::vector<std::vector<int64_t>> one_epoch(data::TranslationBatcher& bt) {
  std::vector<int> seen(bt.size(), 0);
  std::size_t total = 0;
  std::vector<std::vector<int64_t>> out;
  while (total < bt.size()) {
    const data::TranslationBatch b = bt.next();
    for (int64_t i : b.indices) {
      REQUIRE(i >= 0);
      REQUIRE(i < static_cast<int64_t>(bt.size()));
      REQUIRE(seen[static_cast<std::size_t>(i)] == 0);  // exactly once per epoch
      seen[static_cast<std::size_t>(i)] = 1;
    }
    total += b.indices.size();
    out.push_back(b.indices);
  }
  REQUIRE(total == bt.size());
  return out;
}

}  // namespace

// ---------------------------------------------------------------- read_tsv

TEST_CASE("read_tsv reads pairs, skips blank lines, handles CRLF and a BOM", "[translation]") {
  TempDir dir;
  const std::string p = dir.write("ok.tsv",
                                  "\xEF\xBB\xBFHallo Welt\tHello world\r\n\n   \nGr\xC3\xBC\xC3\x9F"
                                  "e \t  Greetings\n  a\tb");
  const auto pairs = data::read_tsv(p);
  REQUIRE(pairs.size() == 3);
  CHECK(pairs[0].src == "Hallo Welt");
  CHECK(pairs[0].tgt == "Hello world");
  CHECK(pairs[1].src ==
        "Gr\xC3\xBC\xC3\x9F"
        "e");
  CHECK(pairs[1].tgt == "Greetings");
  CHECK(pairs[2].src == "a");
  CHECK(pairs[2].tgt == "b");
}

TEST_CASE("read_tsv errors name the file and the line", "[translation]") {
  TempDir dir;
  SECTION("missing file") {
    const std::string p = (dir.path / "nope.tsv").string();
    const std::string e = error_of(p);
    CHECK_THAT(e, Contains(p));
    CHECK_THAT(e, Contains("cannot open"));
  }
  SECTION("invalid UTF-8") {
    const std::string p = dir.write("utf.tsv", "a\tb\nc\td\ne\xFF\tf\n");
    const std::string e = error_of(p);
    CHECK_THAT(e, Contains(p + ":3"));
    CHECK_THAT(e, Contains("UTF-8"));
  }
  SECTION("a line without a tab") {
    const std::string p = dir.write("notab.tsv", "a\tb\n\nno tab here\n");
    const std::string e = error_of(p);
    CHECK_THAT(e, Contains(p + ":3"));
    CHECK_THAT(e, Contains("no tab"));
  }
  SECTION("more than one tab") {
    const std::string p = dir.write("tabs.tsv", "a\tb\nc\td\ne\tf\tg\n");
    const std::string e = error_of(p);
    CHECK_THAT(e, Contains(p + ":3"));
    CHECK_THAT(e, Contains("more than one tab"));
  }
  SECTION("empty source side") {
    const std::string p = dir.write("nosrc.tsv", "a\tb\n  \tb\n");
    const std::string e = error_of(p);
    CHECK_THAT(e, Contains(p + ":2"));
    CHECK_THAT(e, Contains("empty source"));
  }
  SECTION("empty target side") {
    const std::string p = dir.write("notgt.tsv", "a\tb\r\n\r\nc\t\r\n");
    const std::string e = error_of(p);
    CHECK_THAT(e, Contains(p + ":3"));
    CHECK_THAT(e, Contains("empty target"));
  }
  SECTION("empty corpus") {
    for (const std::string text : {"", "\n \n\r\n"}) {
      const std::string p = dir.write("empty.tsv", text);
      const std::string e = error_of(p);
      CHECK_THAT(e, Contains(p));
      CHECK_THAT(e, Contains("empty corpus"));
    }
  }
}

// ---------------------------------------------------------------- make_batch

TEST_CASE("make_batch pads both sides and places BOS and EOS", "[translation]") {
  const std::vector<data::TranslationExample> ex = {{{5, 6, 7}, {8, 9}}, {{10}, {11, 12, 13, 14}}, {{4, 4}, {}}};
  data::SpecialIds ids;
  ids.pad = 1, ids.bos = 2, ids.eos = 3;
  const data::TranslationBatch b = data::make_batch(ex, {1, 0, 2}, ids);
  REQUIRE(b.src.shape() == core::Shape{3, 3});
  REQUIRE(b.tgt_in.shape() == core::Shape{3, 5});
  REQUIRE(b.tgt_out.shape() == core::Shape{3, 5});
  CHECK(b.src.to_int_vector() == std::vector<int32_t>{10, 1, 1, 5, 6, 7, 4, 4, 1});
  CHECK(b.tgt_in.to_int_vector() == std::vector<int32_t>{2, 11, 12, 13, 14, 2, 8, 9, 1, 1, 2, 1, 1, 1, 1});
  CHECK(b.tgt_out.to_int_vector() == std::vector<int32_t>{11, 12, 13, 14, 3, 8, 9, 3, 1, 1, 3, 1, 1, 1, 1});
  CHECK(b.src_tokens == 6);
  CHECK(b.tgt_tokens == 5 + 3 + 1);
  CHECK(b.indices == std::vector<int64_t>{1, 0, 2});
  REQUIRE_THROWS_WITH(data::make_batch(ex, {}, ids), Contains("at least one"));
  REQUIRE_THROWS_WITH(data::make_batch(ex, {3}, ids), Contains("outside"));
}

// ---------------------------------------------------------------- batcher

TEST_CASE("TranslationBatcher: epochs, budget, determinism", "[translation]") {
  auto ex = random_examples(700, 40, 1);
  ex[17].src.assign(300, 5);  // longer than the budget: a batch of its own
  const int64_t budget = 256;
  data::TranslationBatcher bt(ex, budget, {}, 42);
  CHECK(bt.size() == 700);

  std::vector<std::vector<std::vector<int64_t>>> epochs;
  int64_t real = 0, padded = 0;
  for (int e = 0; e < 3; ++e) {
    const int64_t start = bt.position();
    epochs.push_back(one_epoch(bt));
    CHECK(bt.position() == start + static_cast<int64_t>(epochs.back().size()));
  }
  // Budget and padding, checked on the tensors of a fresh batcher's epoch.
  data::TranslationBatcher bt2(ex, budget, {}, 42);
  for (std::size_t k = 0; k < epochs[0].size(); ++k) {
    const data::TranslationBatch b = bt2.next();
    CHECK(b.indices == epochs[0][k]);  // deterministic for a seed
    int64_t max_src = 0, max_tgt = 0;
    for (int64_t i : b.indices) {
      max_src = std::max<int64_t>(max_src, static_cast<int64_t>(ex[i].src.size()));
      max_tgt = std::max<int64_t>(max_tgt, static_cast<int64_t>(ex[i].tgt.size()) + 1);
    }
    CHECK(b.src.size(1) == max_src);
    CHECK(b.tgt_in.size(1) == max_tgt);
    if (b.indices.size() > 1) CHECK(padded_size(b) <= budget);
    if (std::find(b.indices.begin(), b.indices.end(), 17) != b.indices.end()) CHECK(b.indices.size() == 1);
    for (int64_t i : b.indices)
      real += std::max<int64_t>(static_cast<int64_t>(ex[i].src.size()), static_cast<int64_t>(ex[i].tgt.size()) + 1);
    padded += padded_size(b);
  }
  // Length bucketing keeps padding small (random batches: ~60% real tokens).
  CHECK(static_cast<double>(real) / static_cast<double>(padded) > 0.85);
  // Epochs differ from each other, and so do seeds.
  CHECK(epochs[0] != epochs[1]);
  CHECK(epochs[1] != epochs[2]);
  data::TranslationBatcher other(ex, budget, {}, 43);
  CHECK(one_epoch(other) != epochs[0]);

  REQUIRE_THROWS_WITH(data::TranslationBatcher({}, 100, {}, 1), Contains("at least one example"));
  REQUIRE_THROWS_WITH(data::TranslationBatcher(ex, 0, {}, 1), Contains("batch_tokens"));
}

TEST_CASE("TranslationBatcher: a restored position continues the same sequence", "[translation]") {
  const auto ex = random_examples(300, 30, 2);
  data::TranslationBatcher ref(ex, 200, {}, 7);
  std::vector<std::vector<int64_t>> seq;
  for (int i = 0; i < 200; ++i) seq.push_back(ref.next().indices);  // several epochs
  for (int64_t p : {0, 1, 37, 61, 150, 199}) {
    INFO("position " << p);
    data::TranslationBatcher bt(ex, 200, {}, 7);
    bt.set_position(p);
    for (int64_t i = p; i < 200; ++i) REQUIRE(bt.next().indices == seq[static_cast<std::size_t>(i)]);
  }
  // Going back (an earlier checkpoint) replays the same batches too.
  data::TranslationBatcher bt(ex, 200, {}, 7);
  bt.set_position(180);
  bt.next();
  bt.set_position(3);
  for (int64_t i = 3; i < 60; ++i) REQUIRE(bt.next().indices == seq[static_cast<std::size_t>(i)]);
}

TEST_CASE("TranslationBatcher: at() and heaviest() see the batches next() serves", "[translation]") {
  const auto ex = random_examples(300, 30, 3);
  data::TranslationBatcher ref(ex, 200, {}, 9);
  std::vector<data::TranslationBatch> seq;
  for (int i = 0; i < 120; ++i) seq.push_back(ref.next());  // several epochs
  data::TranslationBatcher bt(ex, 200, {}, 9);
  bt.set_position(5);
  for (int64_t p : {0, 7, 119, 64, 3}) {
    const data::TranslationBatch b = bt.at(p);
    CHECK(b.indices == seq[static_cast<std::size_t>(p)].indices);
    CHECK(b.tgt_tokens == seq[static_cast<std::size_t>(p)].tgt_tokens);
  }
  CHECK(bt.position() == 5);
  CHECK(bt.next().indices == seq[5].indices);
  // The reference: the batches no other batch matches or exceeds in all of
  // B·S, B·T, B·(S² + T² + S·T), the first of equals, by brute force over
  // the padded tensors' shapes.
  for (auto [from, count] : std::vector<std::pair<int64_t, int64_t>>{{0, 120}, {10, 50}, {100, 1}}) {
    INFO("from " << from << ", count " << count);
    auto measures = [&](int64_t p) {
      const auto& b = seq[static_cast<std::size_t>(p)];
      const int64_t B = b.src.size(0), S = b.src.size(1), T = b.tgt_in.size(1);
      return std::array<int64_t, 3>{B * S, B * T, B * (S * S + T * T + S * T)};
    };
    std::vector<int64_t> expect;
    for (int64_t p = from; p < from + count; ++p) {
      const auto m = measures(p);
      bool covered = false;
      for (int64_t q = from; q < from + count && !covered; ++q) {
        if (q == p) continue;
        const auto o = measures(q);
        const bool ge = o[0] >= m[0] && o[1] >= m[1] && o[2] >= m[2];
        covered = ge && (o != m || q < p);
      }
      if (!covered) expect.push_back(p);
    }
    CHECK(expect.size() >= (count > 1 ? 2u : 1u));  // the range's batches differ
    CHECK(bt.heaviest(from, count) == expect);
  }
  CHECK(bt.position() == 6);
  CHECK(bt.next().indices == seq[6].indices);
}

TEST_CASE("TranslationBatcher: fixed batches cover everything in length order", "[translation]") {
  auto ex = random_examples(250, 25, 3);
  ex[5].tgt.assign(120, 6);
  const data::TranslationBatcher bt(ex, 1000, {}, 9);
  const auto batches = bt.fixed_batches(150);
  std::vector<int> seen(ex.size(), 0);
  int64_t prev = 0;
  for (const auto& b : batches) {
    for (int64_t i : b.indices) ++seen[static_cast<std::size_t>(i)];
    const int64_t len = std::max(b.src.size(1), b.tgt_in.size(1));
    CHECK(len >= prev);
    prev = len;
    if (b.indices.size() > 1) CHECK(padded_size(b) <= 150);
  }
  CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
  CHECK(batches.back().indices == std::vector<int64_t>{5});
  // The same every time, and independent of the training position.
  data::TranslationBatcher moved(ex, 1000, {}, 9);
  moved.next();
  const auto again = moved.fixed_batches(150);
  REQUIRE(again.size() == batches.size());
  for (std::size_t k = 0; k < batches.size(); ++k) CHECK(again[k].indices == batches[k].indices);
}

// ---------------------------------------------------------------- decoding

namespace {

constexpr int32_t kPad = 0, kBos = 2, kEos = 3, kFirst = 4, kVocab = 12;

layers::Seq2SeqConfig tiny_config(int64_t max_len = 32) {
  layers::Seq2SeqConfig c;
  c.src_vocab = c.tgt_vocab = kVocab;
  c.d_model = 16, c.n_heads = 2, c.enc_layers = 1, c.dec_layers = 1, c.d_ff = 32;
  c.max_len = max_len, c.dropout = 0.0f, c.pad_id = kPad;
  return c;
}

std::vector<int32_t> random_sentence(core::Generator& g, int64_t lo, int64_t hi) {
  std::vector<int32_t> s(static_cast<std::size_t>(lo + static_cast<int64_t>(g.next_u64() % (hi - lo + 1))));
  for (auto& t : s) t = kFirst + static_cast<int32_t>(g.next_u64() % (kVocab - kFirst));
  return s;
}

// A tiny model trained briefly to reverse its input: confident enough to
// stop at EOS, uncertain enough that beam search has choices to make.
const layers::Seq2Seq& trained_model() {
  static const std::unique_ptr<layers::Seq2Seq> model = [] {
    auto m = std::make_unique<layers::Seq2Seq>(tiny_config(), 5);
    tfm::optim::Adam opt(tfm::optim::decay_groups(m->named_parameters(), 0.01f), 1e-2f, 0.9f, 0.98f, 1e-8f, true);
    core::Generator g(11);
    for (int step = 0; step < 200; ++step) {
      std::vector<data::TranslationExample> ex(32);
      for (auto& e : ex) {
        e.src = random_sentence(g, 2, 8);
        e.tgt.assign(e.src.rbegin(), e.src.rend());
      }
      std::vector<int64_t> idx(ex.size());
      for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
      const auto b = data::make_batch(ex, idx, {kPad, kBos, kEos});
      opt.zero_grad();
      m->loss(b.src, b.tgt_in, b.tgt_out).backward();
      opt.step();
    }
    m->eval();
    return m;
  }();
  return *model;
}

Tensor row(const std::vector<int32_t>& s) { return core::from_vector(s, {1, static_cast<int64_t>(s.size())}); }

Tensor padded(const std::vector<std::vector<int32_t>>& sents) {
  std::size_t S = 0;
  for (const auto& s : sents) S = std::max(S, s.size());
  std::vector<int32_t> v(sents.size() * S, kPad);
  for (std::size_t b = 0; b < sents.size(); ++b) std::copy(sents[b].begin(), sents[b].end(), v.begin() + b * S);
  return core::from_vector(v, {static_cast<int64_t>(sents.size()), static_cast<int64_t>(S)});
}

int64_t length_limit(const layers::Seq2Seq& m, const std::vector<int32_t>& src, const layers::DecodeOptions& o) {
  return std::min<int64_t>(static_cast<int64_t>(o.max_len_ratio * static_cast<float>(src.size())) + 10,
                           m.config().max_len);
}

// Greedy decoding with full forwards over the growing prefix (no cache).
std::vector<int32_t> reference_greedy(const layers::Seq2Seq& m, const std::vector<int32_t>& src, int64_t limit) {
  core::NoGradGuard g;
  const auto mem = m.encode(row(src));
  std::vector<int32_t> prefix = {kBos};
  while (static_cast<int64_t>(prefix.size()) - 1 < limit) {
    const Tensor logits = m.decode(row(prefix), mem);  // [1, T, V]
    const auto v = logits.to_vector();
    const int32_t next = layers::argmax(v.data() + (prefix.size() - 1) * kVocab, kVocab);
    if (next == kEos) break;
    prefix.push_back(next);
  }
  return {prefix.begin() + 1, prefix.end()};
}

// log P(y [+ EOS] | src) from one full decode.
double model_score(const layers::Seq2Seq& m, const std::vector<int32_t>& src, const std::vector<int32_t>& y,
                   bool finished) {
  core::NoGradGuard g;
  std::vector<int32_t> in = {kBos};
  in.insert(in.end(), y.begin(), y.end());
  const auto lp = core::log_softmax(m.decode(row(in), m.encode(row(src))), -1).to_vector();
  double s = 0.0;
  for (std::size_t t = 0; t < y.size(); ++t) s += lp[t * kVocab + static_cast<std::size_t>(y[t])];
  if (finished) s += lp[y.size() * kVocab + kEos];
  return s;
}

std::vector<std::vector<int32_t>> test_sources(uint64_t seed, int n, int64_t lo, int64_t hi) {
  core::Generator g(seed);
  std::vector<std::vector<int32_t>> v;
  for (int i = 0; i < n; ++i) v.push_back(random_sentence(g, lo, hi));
  return v;
}

}  // namespace

// One test case (sections) so that a ctest process trains the model once.
TEST_CASE("Seq2Seq decoding: greedy, beam search, batching, length limits", "[decode]") {
  SECTION("translate with beam 1 equals step-by-step greedy decoding") {
    const auto& m = trained_model();
    const auto srcs = test_sources(21, 10, 2, 9);
    layers::DecodeOptions o;
    o.beam = 1;
    const auto out = layers::translate(m, padded(srcs), o);
    REQUIRE(out.size() == srcs.size());
    int correct = 0;
    for (std::size_t i = 0; i < srcs.size(); ++i) {
      INFO("sentence " << i);
      CHECK(out[i] == reference_greedy(m, srcs[i], length_limit(m, srcs[i], o)));
      correct += out[i] == std::vector<int32_t>(srcs[i].rbegin(), srcs[i].rend());
    }
    CHECK(correct >= 3);          // the model learned something
    CHECK(core::grad_enabled());  // grad mode restored

    // An untrained model rarely emits EOS: the length limit is what stops it.
    layers::Seq2Seq raw(tiny_config(), 3);
    raw.eval();
    const auto out_raw = layers::translate(raw, padded(srcs), o);
    for (std::size_t i = 0; i < srcs.size(); ++i)
      CHECK(out_raw[i] == reference_greedy(raw, srcs[i], length_limit(raw, srcs[i], o)));
  }

  SECTION("beam search finds hypotheses scoring at least as well as greedy") {
    const auto& m = trained_model();
    const auto srcs = test_sources(22, 12, 3, 9);
    layers::DecodeOptions greedy_opt;
    greedy_opt.beam = 1;
    const auto greedy = layers::translate(m, padded(srcs), greedy_opt);
    for (int64_t beam : {2, 4, 6}) {
      layers::DecodeOptions o;
      o.beam = beam;
      o.length_penalty = 0.0f;
      const auto out = layers::translate(m, padded(srcs), o);
      int better = 0, finished = 0;
      for (std::size_t i = 0; i < srcs.size(); ++i) {
        INFO("beam " << beam << ", sentence " << i);
        const int64_t limit = length_limit(m, srcs[i], o);
        const bool fin_b = static_cast<int64_t>(out[i].size()) < limit;
        const bool fin_g = static_cast<int64_t>(greedy[i].size()) < limit;
        finished += fin_b && fin_g;
        if (!fin_b || !fin_g) continue;  // scores of cut-off outputs are not comparable
        const double sb = model_score(m, srcs[i], out[i], fin_b), sg = model_score(m, srcs[i], greedy[i], fin_g);
        CHECK(sb >= sg - 1e-4);
        better += sb > sg + 1e-4;
      }
      INFO("beam " << beam << " beats greedy on " << better << " of " << finished);
      CHECK(finished >= 8);
      if (beam == 4) CHECK(better >= 1);  // the search is not trivially greedy
    }
  }

  SECTION("batched translation equals per-sentence translation") {
    const auto& m = trained_model();
    const auto srcs = test_sources(23, 9, 1, 12);  // lengths differ: padded rows
    for (int64_t beam : {1, 3, 5})
      for (float alpha : {0.0f, 1.0f}) {
        layers::DecodeOptions o;
        o.beam = beam;
        o.length_penalty = alpha;
        const auto batched = layers::translate(m, padded(srcs), o);
        REQUIRE(batched.size() == srcs.size());
        for (std::size_t i = 0; i < srcs.size(); ++i) {
          INFO("beam " << beam << ", alpha " << alpha << ", sentence " << i);
          const auto alone = layers::translate(m, row(srcs[i]), o);
          REQUIRE(alone.size() == 1);
          CHECK(batched[i] == alone[0]);
        }
      }
  }

  SECTION("translations stop at EOS and respect the length limits") {
    const auto& m = trained_model();
    const auto srcs = test_sources(24, 6, 2, 8);
    for (int64_t beam : {1, 4}) {
      layers::DecodeOptions o;
      o.beam = beam;
      for (const auto& y : layers::translate(m, padded(srcs), o)) {
        CHECK(std::find(y.begin(), y.end(), kEos) == y.end());
        CHECK(std::find(y.begin(), y.end(), kBos) == y.end());
      }
    }
    // Untrained: runs to the limit, ratio · source length + 10 ...
    layers::Seq2Seq raw(tiny_config(), 4);
    raw.eval();
    for (int64_t beam : {1, 4}) {
      layers::DecodeOptions o;
      o.beam = beam;
      o.max_len_ratio = 0.5f;
      const auto out = layers::translate(raw, padded(srcs), o);
      for (std::size_t i = 0; i < srcs.size(); ++i) {
        INFO("beam " << beam << ", sentence " << i);
        CHECK(static_cast<int64_t>(out[i].size()) <= static_cast<int64_t>(srcs[i].size()) / 2 + 10);
        CHECK(std::find(out[i].begin(), out[i].end(), kEos) == out[i].end());
      }
    }
    // ... capped by the model's max_len.
    layers::Seq2Seq short_model(tiny_config(12), 4);
    short_model.eval();
    for (int64_t beam : {1, 4}) {
      layers::DecodeOptions o;
      o.beam = beam;
      o.max_len_ratio = 3.0f;
      for (const auto& y : layers::translate(short_model, padded(srcs), o)) CHECK(y.size() <= 12);
    }
  }
}

TEST_CASE("translate rejects bad input", "[decode]") {
  layers::Seq2Seq m(tiny_config(), 6);
  m.eval();
  layers::DecodeOptions o;
  o.beam = 0;
  REQUIRE_THROWS_WITH(layers::translate(m, row({4, 5}), o), Contains("beam"));
  o.beam = 2;
  o.max_len_ratio = -1.0f;
  REQUIRE_THROWS_WITH(layers::translate(m, row({4, 5}), o), Contains("max_len_ratio"));
  o.max_len_ratio = 1.5f;
  REQUIRE_THROWS_WITH(layers::translate(m, core::from_vector({4.0f, 5.0f}, {1, 2}), o), Contains("i32"));
  o.eos = kVocab;
  REQUIRE_THROWS_WITH(layers::translate(m, row({4, 5}), o), Contains("eos"));
  CHECK(core::grad_enabled());
}
