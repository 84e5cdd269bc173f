// Bringing your own data (issue 16): vocabulary sized to the data, the
// data.sp_* trainer options, bad-data messages, validation chrF / exact
// match as train.best_metric, elapsed time that continues across resume,
// and tfm plot drawing the validation scores.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "data/chrf.h"
#include "data/text.h"
#include "data/tokenizer.h"
#include "data/translation.h"
#include "data/vocab_size.h"
#include "temp_dir.h"
#include "tools/evaluate.h"
#include "tools/plot.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace tfm::data;
using namespace tfm::train;
using Catch::Matchers::Contains;
using tfm::test::TempDir;

namespace {

const char* kOnes[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};

// "three four one" <-> "3 4 1": a toy corpus of n pairs, deterministic.
std::vector<SentencePair> digit_pairs(int n, int len) {
  std::vector<SentencePair> out;
  uint64_t x = 12345;
  for (int i = 0; i < n; ++i) {
    SentencePair p;
    for (int k = 0; k < len; ++k) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      const int d = static_cast<int>((x >> 33) % 10);
      p.src += (k ? " " : "") + std::string(kOnes[d]);
      p.tgt += (k ? " " : "") + std::to_string(d);
    }
    out.push_back(p);
  }
  return out;
}

// Pseudo-words over a small alphabet drawn with a heavy-tailed (Zipf-like)
// frequency from an open word list, as in natural text: a small sample is
// mostly words seen once, a large one repeats many of them often.
std::vector<std::string> word_text(int sentences) {
  uint64_t x = 99;
  auto next = [&] { return x = x * 6364136223846793005ull + 1442695040888963407ull, (x >> 33); };
  constexpr int kWords = 20000;
  std::vector<std::string> words;
  for (int i = 0; i < kWords; ++i) {
    std::string w;
    const int len = 3 + static_cast<int>(next() % 6);
    for (int k = 0; k < len; ++k) w += static_cast<char>('a' + next() % 12);
    words.push_back(w);
  }
  std::vector<std::string> out;
  for (int s = 0; s < sentences; ++s) {
    std::string line;
    for (int k = 0; k < 8; ++k) {
      const double u = static_cast<double>(next() % 1000000) / 1e6;
      const auto idx = static_cast<std::size_t>(kWords * u * u * u * u);
      line += (k ? " " : "") + words[idx];
    }
    out.push_back(line);
  }
  return out;
}

std::vector<nlohmann::json> metrics_rows(const fs::path& run) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

void write_tsv(const fs::path& p, const std::vector<SentencePair>& pairs) {
  std::ofstream out(p, std::ios::binary);
  for (const auto& q : pairs) out << q.src << "\t" << q.tgt << "\n";
}

std::string tsv_error(const TempDir& dir, const std::string& bytes) {
  const std::string path = dir.file("bad.tsv");
  std::ofstream(path, std::ios::binary) << bytes;
  try {
    read_tsv(path);
  } catch (const tfm::Error& e) {
    return e.what();
  }
  return "(no error)";
}

fs::path seq2seq_config(const fs::path& dir, const std::string& train_extra, const std::string& data_extra = "") {
  write_tsv(dir / "train.tsv", digit_pairs(300, 3));
  write_tsv(dir / "valid.tsv", digit_pairs(330, 3));  // the first 300 equal the training pairs: learnable
  const fs::path cfg = dir / "t.yaml";
  std::ofstream(cfg) << "model:\n  family: seq2seq\n  enc_layers: 1\n  dec_layers: 1\n  n_heads: 2\n  d_model: 32\n"
                     << "  d_ff: 64\n  block_size: 16\n  positions: sinusoidal\n"
                     << "data:\n  path: " << (dir / "train.tsv").string() << "\n  valid_path: "
                     << (dir / "valid.tsv").string() << "\n  tokenizer: sentencepiece\n  sp_byte_fallback: false\n"
                     << data_extra << "optim:\n  name: adam\n  lr: 0.005\n"
                     << "schedule:\n  kind: constant\n  warmup_steps: 5\n"
                     << "train:\n  max_steps: 30\n  batch_tokens: 256\n  log_every: 5\n  eval_every: 5\n"
                     << "  eval_bleu: true\n  eval_bleu_sentences: 20\n  checkpoint_every: 0\n  keep_last: 0\n"
                     << "  threads: 2\n  out_dir: " << (dir / "run").string() << "\n"
                     << train_extra;
  return cfg;
}

}  // namespace

TEST_CASE("vocabulary auto: small text, small vocabulary; more text, larger; deterministic", "[owndata]") {
  SentencePieceOptions o;
  VocabRule rule;  // auto, cap 8000, pieces seen >= 10 times
  const std::vector<std::string> tiny = word_text(60);
  const std::vector<std::string> large = word_text(3000);
  const SizedTokenizer a = train_sized(tiny, rule, o, "tiny");
  const SizedTokenizer b = train_sized(large, rule, o, "large");
  INFO(a.note << "\n" << b.note);
  CHECK(a.tokenizer.vocab_size() < 150);
  CHECK(b.tokenizer.vocab_size() > 2 * a.tokenizer.vocab_size());
  CHECK(b.tokenizer.vocab_size() < 8000);
  CHECK_FALSE(a.reduced);
  CHECK_THAT(a.note, Contains("auto") && Contains(std::to_string(a.tokenizer.vocab_size())) &&
                         Contains("data.vocab_min_count"));
  // The size it picks is supported; the text does not support twice as many.
  CHECK(piece_usage(b.tokenizer, large, 10).supported());
  try {
    const auto twice = SentencePieceTokenizer::train(large, b.tokenizer.vocab_size() * 2, o, "large");
    CHECK_FALSE(piece_usage(twice, large, 10).supported());
  } catch (const tfm::Error& e) {
    CHECK_THAT(e.what(), Contains("too high"));  // the text cannot even give that many
  }
  // Deterministic.
  CHECK(train_sized(large, rule, o, "large").tokenizer.serialize() == b.tokenizer.serialize());
  // The cap holds.
  VocabRule capped = rule;
  capped.max_size = 64;
  CHECK(train_sized(large, capped, o, "large").tokenizer.vocab_size() <= 64);
}

TEST_CASE("vocabulary: an explicit size the text does not support is reduced with a warning", "[owndata]") {
  SentencePieceOptions o;
  const std::vector<std::string> tiny = word_text(60);
  VocabRule rule;
  rule.requested = 5000;  // far more than 60 short lines give: SentencePiece itself refuses
  const SizedTokenizer a = train_sized(tiny, rule, o, "tiny.tsv");
  CHECK(a.reduced);
  CHECK(a.tokenizer.vocab_size() < 5000);
  CHECK_THAT(a.note, Contains("warning") && Contains("data.vocab_size = 5000") && Contains("reduced to"));
  rule.requested = 400;  // possible, but most pieces would be rare
  const SizedTokenizer b = train_sized(word_text(600), rule, o, "t");
  INFO(b.note);
  CHECK(b.reduced);
  CHECK(b.tokenizer.vocab_size() < 400);
  // A supported explicit size is kept exactly.
  rule.requested = 40;
  const SizedTokenizer c = train_sized(tiny, rule, o, "t");
  CHECK_FALSE(c.reduced);
  CHECK(c.tokenizer.vocab_size() == 40);
}

TEST_CASE("sentencepiece options: split_digits, byte_fallback, user symbols, coverage", "[owndata]") {
  std::vector<std::string> text = word_text(300);
  for (std::size_t i = 0; i < text.size(); ++i) text[i] += " 2024 <sep> " + std::to_string(i * 7919 % 1000);
  SentencePieceOptions o;
  o.user_defined_symbols = {"<sep>"};
  const auto plain = SentencePieceTokenizer::train(text, 60, o, "t");
  o.split_digits = true;
  const auto split = SentencePieceTokenizer::train(text, 60, o, "t");
  auto pieces = [](const SentencePieceTokenizer& t, const std::string& s) {
    std::vector<std::string> out;
    for (int32_t id : t.encode(s)) out.push_back(t.id_to_piece(id));
    return out;
  };
  const auto p1 = pieces(plain, "2024"), p2 = pieces(split, "2024");
  CHECK(p2.size() >= 4);  // one piece per digit
  CHECK(p1.size() < p2.size());
  const auto sep = pieces(split, "abc <sep> def");
  CHECK(std::find(sep.begin(), sep.end(), "<sep>") != sep.end());  // always one piece
  // Byte fallback: an unseen character becomes its UTF-8 bytes, and decodes back.
  o.byte_fallback = true;
  const auto bytes = SentencePieceTokenizer::train(text, 400, o, "t");
  const auto ids = bytes.encode("ж");
  CHECK(std::find(ids.begin(), ids.end(), bytes.unk_id()) == ids.end());
  CHECK(bytes.decode(ids) == "ж");
  const auto unk = plain.encode("ж");
  CHECK(std::find(unk.begin(), unk.end(), plain.unk_id()) != unk.end());
  // Too small for the 256 byte pieces: the message says why.
  CHECK_THROWS_WITH(SentencePieceTokenizer::train(text, 60, o, "t.tsv"),
                    Contains("t.tsv") && Contains("data.sp_byte_fallback"));
  o.character_coverage = 0;
  CHECK_THROWS_WITH(SentencePieceTokenizer::train(text, 400, o, "t.tsv"), Contains("data.sp_character_coverage"));
}

TEST_CASE("bad translation data: each case names the file and line", "[owndata]") {
  TempDir dir("owndata_bad");
  const std::string f = dir.file("bad.tsv");
  CHECK_THAT(tsv_error(dir, "a\tb\nno tab here\n"), Contains(f + ":2:") && Contains("no tab"));
  CHECK_THAT(tsv_error(dir, "a\tb\n\tb\n"), Contains(f + ":2:") && Contains("empty source"));
  CHECK_THAT(tsv_error(dir, "a\tb\nc\t  \n"), Contains(f + ":2:") && Contains("empty target"));
  CHECK_THAT(tsv_error(dir, "a\tb\nc\td\te\n"), Contains(f + ":2:") && Contains("more than one tab"));
  CHECK_THAT(tsv_error(dir, "a\tb\nok\tc\xC3(d\n"), Contains(f + ":2:") && Contains("invalid UTF-8") &&
                                                        Contains("offset 4"));
  CHECK_THAT(tsv_error(dir, "a\tb\rc\td\re\tf\r"), Contains(f + ":1:") && Contains("one line") && Contains("CR"));
  CHECK_THAT(tsv_error(dir, "a\tb c\td e\tf"), Contains(f + ":1:") && Contains("one line"));
  CHECK_THAT(tsv_error(dir, "\n\n  \n"), Contains(f) && Contains("empty corpus"));
  // What is accepted: a BOM, CRLF, blank lines (counted), spaces around sides.
  std::ofstream(f, std::ios::binary) << "\xEF\xBB\xBF" << "a b\t c \r\n\r\n\n x\ty\r\n";
  TsvStats st;
  const auto pairs = read_tsv(f, &st);
  REQUIRE(pairs.size() == 2);
  CHECK(pairs[0].src == "a b");
  CHECK(pairs[0].tgt == "c");
  CHECK(pairs[1].src == "x");
  CHECK(st.blank == 2);
  CHECK(st.lines == 4);
}

TEST_CASE("config: data.vocab_size is auto or a number; best_metric needs the translations", "[owndata]") {
  auto vocab = [](const std::string& v) { return vocab_size_setting(Config::parse("data:\n  vocab_size: " + v + "\n", "c.yaml")); };
  CHECK(vocab("auto") == 0);
  CHECK(vocab("512") == 512);
  CHECK(Config().get_string("data.vocab_size") == "auto");
  CHECK(Config().get_bool("data.sp_split_digits"));
  CHECK(Config().get_bool("data.sp_byte_fallback"));
  CHECK_THROWS_WITH(vocab("lots"), Contains("data.vocab_size") && Contains("auto"));
  CHECK_THROWS_WITH(vocab("4"), Contains("data.vocab_size") && Contains(">= 8"));
  for (const std::string m : {"val_chrf", "val_exact"}) {
    const Config c = Config::parse("model:\n  family: seq2seq\ndata:\n  path: " + std::string(TFM_TEST_DATA_DIR) +
                                       "/fixtures/genesis1.txt\n  tokenizer: sentencepiece\ntrain:\n  best_metric: " + m +
                                       "\n",
                                   "c.yaml");
    CHECK_THROWS_WITH(c.validate(), Contains(m) && Contains("train.eval_bleu"));
  }
}

TEST_CASE("best.h5 follows each validation metric: val_chrf, val_exact", "[owndata][trainer]") {
  for (const std::string metric : {"val_chrf", "val_exact"}) {  // val_bleu: tests/test_trainer.cpp
    INFO(metric);
    TempDir dir("owndata_best_" + metric);
    TrainArgs a;
    a.config_path = seq2seq_config(dir.path, "  best_metric: " + metric + "\n").string();
    a.quiet = true;
    REQUIRE(run_train(a) == 0);
    const auto rows = metrics_rows(dir.path / "run");
    double best = -1;
    int64_t best_step = -1;
    for (const auto& r : rows) {
      REQUIRE(r.contains("val_chrf"));
      REQUIRE(r.contains("val_exact"));
      CHECK(r["val_chrf"].get<double>() >= 0);
      CHECK(r["val_chrf"].get<double>() <= 100);
      if (r[metric].get<double>() > best) best = r[metric].get<double>(), best_step = r["step"].get<int64_t>();
    }
    const CheckpointData ck = load_checkpoint((dir.path / "run" / "best.h5").string());
    CHECK(ck.ints.at("step") == best_step);
    CHECK(ck.meta.at("best_metric") == metric);
    CHECK(std::stod(ck.meta.at("best_value")) == Approx(best));
    // The task learns something: chrF rises from its first evaluation.
    CHECK(rows.back()["val_chrf"].get<double>() > rows.front()["val_chrf"].get<double>());
  }
}

TEST_CASE("elapsed_s continues across resume and tfm plot draws the validation scores", "[owndata][trainer]") {
  TempDir dir("owndata_resume");
  TrainArgs a;
  a.config_path = seq2seq_config(dir.path, "  best_metric: val_chrf\n", "  vocab_size: auto\n").string();
  a.quiet = true;
  a.overrides = {"train.max_steps=10"};
  REQUIRE(run_train(a) == 0);
  const CheckpointData first = load_checkpoint((dir.path / "run" / "last.h5").string());
  REQUIRE(first.meta.count("elapsed_s") == 1);
  const double at_checkpoint = std::stod(first.meta.at("elapsed_s"));
  TrainArgs r;
  r.resume = (dir.path / "run").string();
  r.quiet = true;
  r.overrides = {"train.max_steps=20"};
  REQUIRE(run_train(r) == 0);
  const auto rows = metrics_rows(dir.path / "run");
  REQUIRE(rows.size() == 4);  // steps 5, 10, then 15, 20 after the resume
  for (std::size_t i = 1; i < rows.size(); ++i)
    CHECK(rows[i]["elapsed_s"].get<double>() >= rows[i - 1]["elapsed_s"].get<double>());
  CHECK(rows[2]["elapsed_s"].get<double>() >= at_checkpoint);
  CHECK(std::stod(load_checkpoint((dir.path / "run" / "last.h5").string()).meta.at("elapsed_s")) >= at_checkpoint);
  // The log says what the data looked like and which vocabulary was chosen.
  const std::string log = tfm::test::read_file(dir.path / "run" / "train.log");
  CHECK_THAT(log, Contains("blank lines skipped") && Contains("longest training pair") &&
                      Contains("data.vocab_size = auto"));
  // The plot reads the scores back and draws a panel for each.
  const RunMetrics m = read_run_metrics((dir.path / "run").string());
  REQUIRE(m.rows.back().val_chrf.has_value());
  CHECK(*m.rows.back().val_chrf == Approx(rows.back()["val_chrf"].get<double>()));
  const std::string svg = render_curves_svg({m});
  CHECK_THAT(svg, Contains("Validation chrF") && Contains("Validation exact match") && Contains("Validation BLEU"));
  // tfm eval prints chrF2 and exact match of its own translations.
  const auto pairs = digit_pairs(8, 3);
  write_tsv(dir.path / "eval.tsv", pairs);
  EvalArgs e;
  e.checkpoint = (dir.path / "run").string();
  e.data = (dir.path / "eval.tsv").string();
  e.beam = 1;
  std::ostringstream eval_out, hyp_out;
  run_eval(e, eval_out);
  std::string sources;
  std::vector<std::string> refs, hyps;
  for (const auto& p : pairs) sources += p.src + "\n", refs.push_back(p.tgt);
  std::istringstream src_in(sources);
  TranslateArgs t;
  t.checkpoint = e.checkpoint;
  t.beam = 1;
  run_translate(t, src_in, hyp_out);
  std::istringstream hyp_in(hyp_out.str());
  for (std::string line; std::getline(hyp_in, line);) hyps.push_back(line);
  REQUIRE(hyps.size() == refs.size());
  char expect[64];
  std::snprintf(expect, sizeof expect, "chrF2 = %.2f", corpus_chrf(hyps, refs).score);
  CHECK_THAT(eval_out.str(), Contains(expect));
  std::snprintf(expect, sizeof expect, "exact match: %.2f%%", exact_match(hyps, refs));
  CHECK_THAT(eval_out.str(), Contains(expect));

  RunMetrics lm = m;
  for (auto& row : lm.rows) row.val_bleu.reset(), row.val_chrf.reset(), row.val_exact.reset();
  CHECK_FALSE(Contains("Validation chrF").match(render_curves_svg({lm})));
}

TEST_CASE("resuming a checkpoint without elapsed_s continues from its metric history", "[owndata][trainer]") {
  TempDir dir("owndata_old_ckpt");
  TrainArgs a;
  a.config_path = seq2seq_config(dir.path, "").string();
  a.quiet = true;
  a.overrides = {"train.max_steps=10", "train.eval_bleu=false"};
  REQUIRE(run_train(a) == 0);
  // A checkpoint as written before elapsed_s existed, with a history that
  // says 1000 s were spent.
  CheckpointData d = load_checkpoint((dir.path / "run" / "last.h5").string());
  REQUIRE(d.meta.erase("elapsed_s") == 1);
  d.metrics_jsonl = "{\"step\":5,\"train_loss\":3.0,\"elapsed_s\":600.0}\n{\"step\":10,\"train_loss\":2.0,\"elapsed_s\":1000.0}\n";
  save_checkpoint((dir.path / "old.h5").string(), d);
  TrainArgs r;
  r.resume = (dir.path / "old.h5").string();
  r.quiet = true;
  r.overrides = {"train.max_steps=15", "train.out_dir=" + (dir.path / "resumed").string()};
  REQUIRE(run_train(r) == 0);
  const auto rows = metrics_rows(dir.path / "resumed");
  REQUIRE(rows.size() == 3);
  CHECK(rows[2]["step"] == 15);
  CHECK(rows[2]["elapsed_s"].get<double>() >= 1000.0);
  CHECK(rows[2]["elapsed_s"].get<double>() < 1000.0 + 600.0);
  // A damaged value is refused with its name.
  d.meta["elapsed_s"] = "-3";
  save_checkpoint((dir.path / "bad.h5").string(), d);
  r.resume = (dir.path / "bad.h5").string();
  r.overrides = {"train.max_steps=15", "train.out_dir=" + (dir.path / "bad_run").string()};
  CHECK_THROWS_WITH(run_train(r), Contains("bad.h5") && Contains("elapsed_s"));
}

TEST_CASE("language-model text: BOM dropped, CRLF read as LF, lone CR kept", "[owndata]") {
  int64_t crlf = -1;
  CHECK(normalize_text("\xEF\xBB\xBF" "a\r\nb\r\nc\rd", &crlf) == "a\nb\nc\rd");
  CHECK(crlf == 2);
  CHECK(normalize_text("plain\n") == "plain\n");
  CHECK(normalize_text("") == "");
}
