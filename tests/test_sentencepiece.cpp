// SentencePieceTokenizer: in-memory BPE and unigram training on a small
// corpus made from the Genesis 1 fixture, exact round trips, fixed special
// ids, checkpoint (serialize -> load_tokenizer) round trips, determinism and
// the errors a user can reach.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <initializer_list>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/text.h"
#include "data/tokenizer.h"

using namespace tfm::data;
using Catch::Matchers::Contains;

namespace {

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream is(s);
  std::vector<std::string> w;
  for (std::string x; is >> x;) w.push_back(x);
  return w;
}

std::string join_words(const std::vector<std::string>& w, std::size_t b, std::size_t e) {
  std::string s;
  for (std::size_t i = b; i < e; ++i) s += (s.empty() ? "" : " ") + w[i];
  return s;
}

// A few hundred ASCII lines: the 31 verses of Genesis 1 and variations of
// them (lower case, reversed word order, numbered, halves). All of them are
// already what the nmt_nfkc normaliser produces (ASCII, single spaces, no
// leading or trailing space), so decode(encode(x)) must give x back.
const std::vector<std::string>& corpus() {
  static const std::vector<std::string> lines = [] {
    std::vector<std::string> verses;
    std::istringstream in(read_file(std::string(TFM_TEST_DATA_DIR) + "/fixtures/genesis1.txt"));
    for (std::string l; std::getline(in, l);)
      if (!l.empty()) verses.push_back(l);
    std::vector<std::string> out;
    for (std::size_t i = 0; i < verses.size(); ++i) {
      const std::string& v = verses[i];
      std::vector<std::string> w = split_words(v);
      std::string lower = v;
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
      std::vector<std::string> rev(w.rbegin(), w.rend());
      out.push_back(v);
      out.push_back(lower);
      out.push_back(join_words(rev, 0, rev.size()));
      const auto cat = [](std::initializer_list<std::string> parts) {  // (avoids a GCC 12 -Wrestrict false positive)
        std::ostringstream os;
        for (const auto& p : parts) os << p;
        return os.str();
      };
      out.push_back(cat({"Verse ", std::to_string(i + 1), ": ", v}));
      out.push_back(join_words(w, 0, w.size() / 2));
      out.push_back(join_words(w, w.size() / 2, w.size()));
      out.push_back(cat({"Genesis 1:", std::to_string(i + 1), " says that ", lower}));
      out.push_back(cat({join_words(w, 0, w.size() / 3), " (", std::to_string(1000 + 7 * i), ")"}));
      out.push_back(cat({"[", std::to_string(i), "] ", join_words(rev, 0, rev.size() / 2), "!"}));
      out.push_back(v + " " + verses[(i + 1) % verses.size()]);
    }
    return out;
  }();
  return lines;
}

// Runs f with stderr sent to a temporary file; returns what was written.
template <class F>
std::string capture_stderr(F&& f) {
  std::fflush(stderr);
  std::FILE* tmp = std::tmpfile();
  REQUIRE(tmp != nullptr);
  const int saved = dup(2);
  dup2(fileno(tmp), 2);
  try {
    f();
  } catch (...) {
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    std::fclose(tmp);
    throw;
  }
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::string out;
  std::rewind(tmp);
  for (int c; (c = std::fgetc(tmp)) != EOF;) out += static_cast<char>(c);
  std::fclose(tmp);
  return out;
}

void check_model(const SentencePieceTokenizer& tok, int64_t vocab) {
  CHECK(tok.kind() == "sentencepiece");
  CHECK(tok.vocab_size() == vocab);
  CHECK(tok.pad_id() == 0);
  CHECK(tok.unk_id() == 1);
  CHECK(tok.bos_id() == 2);
  CHECK(tok.eos_id() == 3);
  CHECK(tok.id_to_piece(0) == "<pad>");
  CHECK(tok.id_to_piece(1) == "<unk>");
  CHECK(tok.id_to_piece(2) == "<s>");
  CHECK(tok.id_to_piece(3) == "</s>");
  CHECK(tok.id_to_piece(static_cast<int32_t>(vocab)).empty());

  std::set<int32_t> used;
  for (const std::string& line : corpus()) {
    const std::vector<int32_t> ids = tok.encode(line);
    REQUIRE(!ids.empty());
    for (int32_t id : ids) {
      REQUIRE(id >= 0);
      REQUIRE(id < vocab);
      REQUIRE(id != tok.pad_id());
      REQUIRE(id != tok.bos_id());
      REQUIRE(id != tok.eos_id());
      REQUIRE(id != tok.unk_id());  // every character is covered (character_coverage 1.0)
      used.insert(id);
    }
    REQUIRE(tok.decode(ids) == line);
  }
  // The corpus uses a good part of the vocabulary.
  CHECK(used.size() > static_cast<std::size_t>(vocab) / 2);

  // Unseen sentences made of seen characters round-trip too.
  for (const std::string s : {"Let the waters divide the firmament, and God saw it.", "morning evening 1234 day",
                              "x"}) {
    INFO(s);
    CHECK(tok.decode(tok.encode(s)) == s);
  }
  // Control ids decode to nothing; ids outside the vocabulary to the unknown
  // surface, without throwing.
  const std::string text = "And God said, Let there be light.";
  std::vector<int32_t> framed = {tok.bos_id()};
  for (int32_t id : tok.encode(text)) framed.push_back(id);
  framed.push_back(tok.eos_id());
  framed.push_back(tok.pad_id());
  framed.push_back(tok.pad_id());
  CHECK(tok.decode(framed) == text);
  CHECK_NOTHROW(tok.decode({-5, static_cast<int32_t>(vocab), 1 << 30}));
  CHECK(tok.decode({static_cast<int32_t>(vocab)}) == tok.decode({tok.unk_id()}));
  // A character never seen in training maps to the unknown id.
  const std::vector<int32_t> unk = tok.encode("God \xE2\x98\x83");  // U+2603 snowman
  CHECK(std::find(unk.begin(), unk.end(), tok.unk_id()) != unk.end());
  // Whitespace is normalised: runs collapse and the edges are trimmed.
  CHECK(tok.decode(tok.encode("  the   earth ")) == "the earth");
  CHECK(tok.encode("").empty());
}

void check_checkpoint_round_trip(const SentencePieceTokenizer& tok) {
  const std::vector<uint8_t> bytes = tok.serialize();
  REQUIRE(!bytes.empty());
  CHECK(std::string(bytes.begin(), bytes.end()) == tok.model_proto());
  const std::unique_ptr<Tokenizer> back = load_tokenizer(tok.kind(), bytes);
  REQUIRE(back != nullptr);
  CHECK(back->kind() == "sentencepiece");
  CHECK(back->vocab_size() == tok.vocab_size());
  CHECK(back->pad_id() == 0);
  CHECK(back->unk_id() == 1);
  CHECK(back->bos_id() == 2);
  CHECK(back->eos_id() == 3);
  CHECK(back->serialize() == bytes);
  for (const std::string& line : corpus()) {
    const auto ids = tok.encode(line);
    REQUIRE(back->encode(line) == ids);
    REQUIRE(back->decode(ids) == line);
  }
}

}  // namespace

TEST_CASE("sentencepiece BPE trains in memory, round-trips text and fixes the special ids", "[tokenizer]") {
  REQUIRE(corpus().size() >= 300);
  const SentencePieceTokenizer tok = SentencePieceTokenizer::train(corpus(), 300, "bpe", "genesis corpus");
  check_model(tok, 300);
  check_checkpoint_round_trip(tok);
}

TEST_CASE("sentencepiece unigram trains in memory, round-trips text and fixes the special ids", "[tokenizer]") {
  const SentencePieceTokenizer tok = SentencePieceTokenizer::train(corpus(), 200, "unigram", "genesis corpus");
  check_model(tok, 200);
  check_checkpoint_round_trip(tok);
}

TEST_CASE("sentencepiece training is deterministic and quiet", "[tokenizer]") {
  for (const std::string type : {"bpe", "unigram"}) {
    INFO(type);
    std::vector<uint8_t> a, b;
    const std::string err = capture_stderr([&] {
      a = SentencePieceTokenizer::train(corpus(), 150, type, "genesis corpus").serialize();
      b = SentencePieceTokenizer::train(corpus(), 150, type, "genesis corpus").serialize();
    });
    CHECK(a == b);
    CHECK(err.empty());
  }
  // BPE and unigram really are different models.
  CHECK(SentencePieceTokenizer::train(corpus(), 150, "bpe", "c").serialize() !=
        SentencePieceTokenizer::train(corpus(), 150, "unigram", "c").serialize());
}

TEST_CASE("sentencepiece works behind the Tokenizer interface after a move", "[tokenizer]") {
  auto t = std::make_shared<SentencePieceTokenizer>(SentencePieceTokenizer::train(corpus(), 120, "bpe", "c"));
  const std::shared_ptr<Tokenizer> base = t;
  const std::string s = "And the evening and the morning were the third day.";
  CHECK(base->decode(base->encode(s)) == s);
  SentencePieceTokenizer moved = std::move(*t);
  CHECK(moved.decode(moved.encode(s)) == s);
}

TEST_CASE("sentencepiece errors name the corpus and what to change", "[tokenizer]") {
  // More pieces than the corpus can give.
  for (const std::string type : {"bpe", "unigram"}) {
    INFO(type);
    CHECK_THROWS_AS(SentencePieceTokenizer::train(corpus(), 100000, type, "train.tsv"), tfm::Error);
    CHECK_THROWS_WITH(SentencePieceTokenizer::train(corpus(), 100000, type, "train.tsv"),
                      Contains("train.tsv") && Contains("data.vocab_size") && Contains("100000"));
  }
  // Fewer pieces than the corpus has characters (character_coverage 1.0).
  CHECK_THROWS_WITH(SentencePieceTokenizer::train(corpus(), 20, "bpe", "train.tsv"),
                    Contains("train.tsv") && Contains("data.vocab_size"));
  CHECK_THROWS_WITH(SentencePieceTokenizer::train(corpus(), 4, "bpe", "train.tsv"),
                    Contains("train.tsv") && Contains("data.vocab_size"));
  CHECK_THROWS_WITH(SentencePieceTokenizer::train(corpus(), 200, "word", "train.tsv"),
                    Contains("train.tsv") && Contains("data.sp_model") && Contains("word"));
  CHECK_THROWS_WITH(SentencePieceTokenizer::train({}, 200, "bpe", "train.tsv"), Contains("train.tsv"));
  CHECK_THROWS_WITH(SentencePieceTokenizer::train({"", "  "}, 200, "bpe", "train.tsv"), Contains("train.tsv"));
}

TEST_CASE("load_tokenizer rejects unknown kinds and malformed SentencePiece bytes", "[tokenizer]") {
  CHECK_THROWS_AS(load_tokenizer("wordpiece", {}), tfm::Error);
  CHECK_THROWS_WITH(load_tokenizer("wordpiece", {}), Contains("wordpiece") && Contains("sentencepiece"));
  const std::string junk = "definitely not a protobuf";
  CHECK_THROWS_AS(load_tokenizer("sentencepiece", std::vector<uint8_t>(junk.begin(), junk.end())), tfm::Error);
  CHECK_THROWS_AS(load_tokenizer("sentencepiece", {}), tfm::Error);
  CHECK_THROWS_WITH(SentencePieceTokenizer::from_model_proto(junk, "model.h5"), Contains("model.h5"));
}
