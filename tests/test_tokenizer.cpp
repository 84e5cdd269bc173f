// CharTokenizer: code-point vocabulary (including non-ASCII and astral code
// points), the unknown symbol, the special-id answers of the Tokenizer
// interface, and the checkpoint round trip through load_tokenizer.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "core/error.h"
#include "data/text.h"
#include "data/tokenizer.h"

using namespace tfm::data;
using Catch::Matchers::Contains;

TEST_CASE("char tokenizer round-trips non-ASCII code points", "[tokenizer]") {
  // é (2 bytes), ñ (2), ¶ (2), € (3), 😀 (4 bytes, U+1F600)
  const std::string text = "caf\xC3\xA9 ni\xC3\xB1o \xC2\xB6 5\xE2\x82\xAC \xF0\x9F\x98\x80!";
  const CharTokenizer tok = CharTokenizer::train(text, "sample");
  // Distinct code points: space ! 5 a c f i n o é ñ ¶ € 😀 -> 14, plus the unknown id.
  CHECK(tok.vocab_size() == 15);
  CHECK(tok.kind() == "char");
  const std::vector<int32_t> ids = tok.encode(text);
  CHECK(ids.size() == decode_utf8(text, "t").size());
  for (int32_t id : ids) {
    CHECK(id >= 1);
    CHECK(id < tok.vocab_size());
  }
  CHECK(tok.decode(ids) == text);
  // Ids follow code point order: ' ' is the smallest, U+1F600 the largest.
  CHECK(tok.encode(" ") == std::vector<int32_t>{1});
  CHECK(tok.encode("\xF0\x9F\x98\x80") == std::vector<int32_t>{14});
  CHECK(tok.decode_one(14) == "\xF0\x9F\x98\x80");
  CHECK(tok.decode_one(tok.encode("\xC2\xB6")[0]) == "\xC2\xB6");
}

TEST_CASE("char tokenizer maps unseen symbols to id 0 and has no pad/bos/eos", "[tokenizer]") {
  const CharTokenizer tok = CharTokenizer::train("abc \xC3\xA9", "sample");
  CHECK(tok.unk_id() == 0);
  CHECK(tok.unk_id() == CharTokenizer::kUnk);
  CHECK(tok.pad_id() == -1);
  CHECK(tok.bos_id() == -1);
  CHECK(tok.eos_id() == -1);
  const Tokenizer& base = tok;
  CHECK(base.unk_id() == 0);
  CHECK(base.pad_id() == -1);
  // z, ñ and the emoji were never seen.
  const std::vector<int32_t> ids = tok.encode("az\xC3\xB1\xC3\xA9\xF0\x9F\x98\x80");
  CHECK(ids == std::vector<int32_t>{2, 0, 0, 5, 0});
  // Unknown and out-of-range ids decode to U+FFFD.
  CHECK(tok.decode({0, 1, 99, -1}) == "\xEF\xBF\xBD\x20\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST_CASE("char tokenizer survives serialize -> load_tokenizer", "[tokenizer]") {
  const std::string text = "In the beginning \xC2\xB6 \xC3\xB1 \xF0\x9F\x98\x80";
  const CharTokenizer tok = CharTokenizer::train(text, "sample");
  const auto back = load_tokenizer("char", tok.serialize());
  CHECK(back->kind() == "char");
  CHECK(back->vocab_size() == tok.vocab_size());
  CHECK(back->unk_id() == 0);
  CHECK(back->encode(text) == tok.encode(text));
  CHECK(back->decode(tok.encode(text)) == text);
  CHECK(back->serialize() == tok.serialize());
}

TEST_CASE("char tokenizer errors name their origin", "[tokenizer]") {
  CHECK_THROWS_WITH(CharTokenizer::train("", "empty.txt"), Contains("empty.txt"));
  CHECK_THROWS_WITH(CharTokenizer::train("ok\xFF", "bad.txt"), Contains("bad.txt") && Contains("UTF-8"));
  const std::vector<uint8_t> bad = {0xC3};
  CHECK_THROWS_AS(load_tokenizer("char", bad), tfm::Error);
}
