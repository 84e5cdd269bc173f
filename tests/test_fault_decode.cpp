// A stop request (SIGINT/SIGTERM in the trainer's BLEU pass) ends decoding
// within one step, in greedy and in beam search: DecodeOptions::stop is
// polled before every step.
#include <catch2/catch.hpp>

#include <algorithm>
#include <memory>

#include "core/tensor.h"
#include "layers/decode.h"
#include "layers/seq2seq.h"

using namespace tfm;

namespace {

constexpr int32_t kPad = 0, kVocab = 40;

// An untrained model with long length limits: it rarely emits EOS, so
// decoding runs to the limit (ratio 16 · 20 source tokens + 10, capped at 96).
std::unique_ptr<layers::Seq2Seq> untrained_model() {
  layers::Seq2SeqConfig c;
  c.src_vocab = c.tgt_vocab = kVocab;
  c.d_model = 16, c.n_heads = 2, c.enc_layers = 1, c.dec_layers = 1, c.d_ff = 32;
  c.max_len = 96, c.dropout = 0.0f, c.pad_id = kPad;
  auto m = std::make_unique<layers::Seq2Seq>(c, 3);
  m->eval();
  return m;
}

core::Tensor sources(int64_t B, int64_t S) {
  std::vector<int32_t> ids(static_cast<std::size_t>(B * S));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = 4 + static_cast<int32_t>((i * 7 + i / 5) % (kVocab - 4));
  return core::from_vector(ids, {B, S});
}

std::size_t longest(const std::vector<std::vector<int32_t>>& out) {
  std::size_t n = 0;
  for (const auto& o : out) n = std::max(n, o.size());
  return n;
}

}  // namespace

TEST_CASE("a stop request ends greedy and beam decoding within one step", "[decode][fault]") {
  const auto model = untrained_model();
  const layers::Seq2Seq& m = *model;
  const core::Tensor src = sources(6, 20);
  for (int64_t beam : {1, 3}) {
    INFO("beam " << beam);
    layers::DecodeOptions o;
    o.beam = beam;
    o.max_len_ratio = 16.0f;
    o.length_penalty = 0.0f;
    int polls = 0;
    o.stop = [&] { return ++polls > 1000000; };  // never: how long a full decode runs
    const auto full = layers::translate(m, src, o);
    const int full_steps = polls;
    REQUIRE(full_steps > 10);     // the test is only meaningful for a long decode
    REQUIRE(longest(full) > 5);
    for (int k : {0, 1, 5}) {
      INFO("stop after " << k << " steps");
      polls = 0;
      o.stop = [&] { return ++polls > k; };
      const auto out = layers::translate(m, src, o);
      CHECK(polls == k + 1);  // polled once per step, and not again after it said stop
      CHECK(out.size() == 6);
      CHECK(longest(out) <= static_cast<std::size_t>(k));
    }
  }
}
