#include "evaluate.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <cstdio>
#include <filesystem>
#include <istream>
#include <numeric>
#include <ostream>
#include <sstream>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "data/bleu.h"
#include "data/chrf.h"
#include "data/lm_data.h"
#include "data/text.h"
#include "data/translation.h"
#include "layers/decode.h"
#include "layers/gpt.h"
#include "train/loaded_model.h"
#include "train/task_data.h"

namespace tfm::train {

namespace {

// Translates sentences in batches of similar length; returns them in input order.
std::vector<std::string> translate_all(const LoadedModel& m, const std::vector<std::string>& sources,
                                       const layers::DecodeOptions& opt, int64_t batch_size) {
  const int64_t max_len = m.cfg.get_int("model.block_size");
  std::vector<data::TranslationExample> ex(sources.size());
  for (std::size_t i = 0; i < sources.size(); ++i) {
    ex[i].src = m.tok.src->encode(sources[i]);
    if (static_cast<int64_t>(ex[i].src.size()) > max_len) ex[i].src.resize(static_cast<std::size_t>(max_len));
  }
  std::vector<int64_t> order(sources.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ex[a].src.size() < ex[b].src.size(); });
  std::vector<std::string> out(sources.size());
  for (std::size_t start = 0; start < order.size(); start += static_cast<std::size_t>(batch_size)) {
    std::vector<int64_t> idx;
    for (std::size_t i = start; i < std::min(order.size(), start + static_cast<std::size_t>(batch_size)); ++i)
      if (!ex[order[i]].src.empty()) idx.push_back(order[i]);  // empty lines translate to empty lines
    if (idx.empty()) continue;
    const data::TranslationBatch b = data::make_batch(ex, idx, m.ids());
    const auto hyps = core::with_oom_context(
        "decoding a batch of " + std::to_string(idx.size()) + " sentences of up to " + std::to_string(b.src.size(1)) +
            " tokens (beam " + std::to_string(opt.beam) + ")",
        [&] { return layers::translate(*m.model.seq2seq, b.src, opt); });
    for (std::size_t k = 0; k < idx.size(); ++k) out[static_cast<std::size_t>(idx[k])] = m.tok.tgt->decode(hyps[k]);
  }
  return out;
}

layers::DecodeOptions decode_options(const LoadedModel& m, int64_t beam, float length_penalty, float ratio) {
  TFM_CHECK(beam >= 1, "--beam must be >= 1, got ", beam);
  TFM_CHECK(length_penalty >= 0.0f, "--length-penalty must be >= 0, got ", length_penalty);
  TFM_CHECK(ratio > 0.0f, "--max-len-ratio must be positive, got ", ratio);
  // More beams than target tokens only repeats hypotheses (and costs beam x vocabulary scores per step).
  TFM_CHECK(beam <= m.tok.tgt->vocab_size(), "--beam ", beam, " exceeds the target vocabulary of ", m.path, " (",
            m.tok.tgt->vocab_size(), " tokens); allowed 1 to ", m.tok.tgt->vocab_size());
  layers::DecodeOptions opt;
  opt.beam = beam;
  opt.length_penalty = length_penalty;
  opt.max_len_ratio = ratio;
  opt.bos = m.ids().bos;
  opt.eos = m.ids().eos;
  return opt;
}

// GPT: loss, perplexity and bits per character over every token of the split once.
void eval_lm(const EvalArgs& args, const LoadedModel& m, std::ostream& out) {
  const Config& cfg = m.cfg;
  const data::Tokenizer& tok = *m.tok.src;
  std::string file = args.data.empty() ? cfg.get_string("data.path") : args.data;
  TFM_CHECK(args.split == "valid" || !args.data.empty(),
            "a text corpus has a training and a validation split only; use --split valid, or --data FILE");
  const std::vector<char32_t> cps = data::decode_utf8(data::normalize_text(data::read_file(file)), file);
  std::vector<char32_t> part = cps;
  if (args.data.empty()) {  // the validation split: the last data.valid_fraction of the text
    const auto split = static_cast<std::ptrdiff_t>(text_validation_start(cps.size(), cfg.get_float("data.valid_fraction")));
    part.assign(cps.begin() + split, cps.end());
  }
  const std::vector<int32_t> ids = tok.encode(data::encode_utf8(part));
  const int64_t block = cfg.get_int("model.block_size");
  TFM_CHECK(static_cast<int64_t>(ids.size()) > block, file, ": the split has ", ids.size(),
            " tokens, fewer than one window of model.block_size + 1");
  // Every token predicted once: consecutive non-overlapping windows.
  double total = 0;
  int64_t count = 0;
  const int64_t windows = (static_cast<int64_t>(ids.size()) - 1) / block;
  for (int64_t w0 = 0; w0 < windows; w0 += args.batch_size) {
    const int64_t nb = std::min(args.batch_size, windows - w0);
    std::vector<int32_t> in(static_cast<std::size_t>(nb * block)), tg(static_cast<std::size_t>(nb * block));
    for (int64_t b = 0; b < nb; ++b)
      for (int64_t t = 0; t < block; ++t) {
        in[b * block + t] = ids[(w0 + b) * block + t];
        tg[b * block + t] = ids[(w0 + b) * block + t + 1];
      }
    const float loss = m.model.gpt->loss(core::from_vector(in, {nb, block}), core::from_vector(tg, {nb, block})).item();
    total += static_cast<double>(loss) * static_cast<double>(nb * block);
    count += nb * block;
  }
  const double loss = total / static_cast<double>(count);
  out << "checkpoint: " << m.path << "\nsplit: " << (args.data.empty() ? args.split : file) << " (" << count
      << " tokens)\nloss: " << loss << "\nperplexity: " << std::exp(loss);
  if (tok.kind() == "char") out << "\nbits per character: " << loss / std::log(2.0);
  out << "\n";
}

std::string fmt_fixed(double v, int decimals) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(decimals) << v;
  return os.str();
}

// Seq2seq: loss per target token over the pairs that fit, and corpus BLEU,
// chrF2 and exact-match accuracy of all pairs.
void eval_translation(const EvalArgs& args, const LoadedModel& m, std::ostream& out) {
  const Config& cfg = m.cfg;
  std::string file = args.data;
  std::vector<data::SentencePair> pairs;
  if (file.empty()) {
    file = cfg.get_string(args.split == "valid" ? "data.valid_path" : "data.test_path");
    if (file.empty() && args.split == "valid") {  // the held-out end of the training file
      const auto all = data::read_tsv(cfg.get_string("data.path"));
      const std::size_t n = held_out_pairs(all.size(), cfg.get_float("data.valid_fraction"));
      pairs.assign(all.end() - static_cast<std::ptrdiff_t>(n), all.end());
      file = cfg.get_string("data.path") + " (held-out end)";
    }
    TFM_CHECK(!file.empty(), "the config has no data.test_path; give --data FILE");
  }
  if (pairs.empty()) pairs = data::read_tsv(file);
  std::vector<std::string> sources, refs;
  for (const auto& p : pairs) sources.push_back(p.src), refs.push_back(p.tgt);
  // Loss per target token over the pairs that fit the model.
  const int64_t max_len = m.cfg.get_int("model.block_size");
  std::vector<data::TranslationExample> ex;
  for (const auto& p : pairs) {
    data::TranslationExample e{m.tok.src->encode(p.src), m.tok.tgt->encode(p.tgt)};
    if (pair_fits(e, max_len)) ex.push_back(std::move(e));
  }
  double total = 0, tokens = 0;
  for (const auto& b : data::TranslationBatcher(ex, 4096, m.ids(), 0).fixed_batches(4096)) {
    total += m.model.seq2seq->loss(b.src, b.tgt_in, b.tgt_out, 0.0f).item() * static_cast<double>(b.tgt_tokens);
    tokens += static_cast<double>(b.tgt_tokens);
  }
  const auto hyps =
      translate_all(m, sources, decode_options(m, args.beam, args.length_penalty, 1.5f), args.batch_size);
  const data::BleuScore bleu = data::corpus_bleu(hyps, refs);
  out << "checkpoint: " << m.path << "\nsplit: " << file << " (" << pairs.size() << " pairs)\nloss: " << total / tokens
      << " per target token\nperplexity: " << std::exp(total / tokens) << "\n"
      << bleu.format() << " (beam " << args.beam << ")\n"
      << "chrF2 = " << fmt_fixed(data::corpus_chrf(hyps, refs).score, 2) << "\n"
      << "exact match: " << fmt_fixed(data::exact_match(hyps, refs), 2) << "%\n";
}

// The lines of `path` (UTF-8 checked), or of `in` when path is empty.
void read_lines(const std::string& path, std::istream& in, std::vector<std::string>& lines) {
  if (!path.empty()) {
    const std::string text = data::read_file(path);
    data::decode_utf8(text, path);  // reject invalid UTF-8 with its line number
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t nl = text.find('\n', pos);
      if (nl == std::string::npos) nl = text.size();
      lines.push_back(text.substr(pos, nl - pos));
      pos = nl + 1;
    }
  } else {
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  }
}

}  // namespace

void run_translate(const TranslateArgs& args, std::istream& in, std::ostream& out) {
  TFM_CHECK(args.batch_size >= 1, "--batch-size must be >= 1, got ", args.batch_size);
  if (!args.input.empty()) {
    // A directory opens and reads as empty: refuse it (FIFOs and /dev/stdin are fine).
    TFM_CHECK(std::filesystem::exists(args.input), "--input: ", args.input, ": no such file");
    TFM_CHECK(!std::filesystem::is_directory(args.input), "--input: ", args.input,
              ": is a directory; expected a text file with one source sentence per line");
  }
  const LoadedModel m = load_model(args.checkpoint, "seq2seq", "translate");
  const layers::DecodeOptions opt = decode_options(m, args.beam, args.length_penalty, args.max_len_ratio);
  std::vector<std::string> lines;
  core::with_oom_context("reading the source sentences from " + (args.input.empty() ? std::string("stdin") : args.input),
                         [&] { read_lines(args.input, in, lines); });
  for (auto& l : lines)
    if (!l.empty() && l.back() == '\r') l.pop_back();
  for (const std::string& t : translate_all(m, lines, opt, args.batch_size)) out << t << "\n";
  out.flush();
}

void run_eval(const EvalArgs& args, std::ostream& out) {
  TFM_CHECK(args.split == "valid" || args.split == "test", "--split must be valid or test, got '", args.split, "'");
  TFM_CHECK(args.batch_size >= 1, "--batch-size must be >= 1, got ", args.batch_size);
  if (!args.data.empty()) check_regular_file(args.data, "--data");
  const LoadedModel m = load_model(args.checkpoint, "", "eval");
  if (args.data.empty())  // the config's own files: warn when they are not the ones trained on
    if (const DataChange d = data_change(m.checkpoint, m.cfg, m.path); !d.changes.empty()) {
      TFM_CHECK(d.unknown_fraction <= kMaxUnknownFraction, "data.path: ", m.cfg.get_string("data.path"),
                ": the data changed since ", m.path, " was written (", d.summary(), "; allowed up to ",
                100 * kMaxUnknownFraction, "%): this is other data. Restore the files, or give --data FILE");
      std::fprintf(stderr, "tfm: warning: the data changed since %s was written (%s)\n", m.path.c_str(),
                   d.summary().c_str());
    }
  core::NoGradGuard no_grad;
  if (m.model.gpt)
    eval_lm(args, m, out);
  else
    eval_translation(args, m, out);
}

}  // namespace tfm::train
