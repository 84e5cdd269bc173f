// The translation task: a Seq2Seq on TSV sentence pairs, SentencePiece
// tokenizers (joint or per side) trained on the training pairs, token-budget
// batches, validation loss per target token and, optionally (train.eval_bleu),
// BLEU, chrF and exact-match accuracy of greedy translations of the
// validation sentences.
#include <algorithm>
#include <sstream>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/profile.h"
#include "data/bleu.h"
#include "data/chrf.h"
#include "train/signals.h"
#include "data/tokenizer.h"
#include "data/translation.h"
#include "data/vocab_size.h"
#include "layers/decode.h"
#include "layers/seq2seq.h"
#include "train/data_parallel.h"
#include "train/model_io.h"
#include "train/task.h"
#include "train/task_data.h"

namespace tfm::train {

namespace {

// Encodes pairs, dropping those that do not fit model.block_size (the
// decoder also needs room for BOS/EOS).
std::vector<data::TranslationExample> encode_pairs(const std::vector<data::SentencePair>& pairs,
                                                   const TokenizerPair& tok, int64_t max_len, int64_t& dropped) {
  std::vector<data::TranslationExample> out;
  out.reserve(pairs.size());
  dropped = 0;
  for (const auto& p : pairs) {
    data::TranslationExample e{tok.src->encode(p.src), tok.tgt->encode(p.tgt)};
    if (!pair_fits(e, max_len)) {
      ++dropped;
      continue;
    }
    out.push_back(std::move(e));
  }
  return out;
}

// The data.sp_* trainer options.
data::SentencePieceOptions sentencepiece_options(const Config& cfg) {
  data::SentencePieceOptions o;
  o.model_type = cfg.get_string("data.sp_model");
  o.split_digits = cfg.get_bool("data.sp_split_digits");
  o.byte_fallback = cfg.get_bool("data.sp_byte_fallback");
  o.character_coverage = cfg.get_float("data.sp_character_coverage");
  std::string list = cfg.get_string("data.sp_user_defined_symbols");
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    std::string sym = list.substr(start, comma - start);
    sym.erase(0, sym.find_first_not_of(' '));
    sym.erase(sym.find_last_not_of(' ') + 1);
    if (!sym.empty()) o.user_defined_symbols.push_back(sym);
    start = comma + 1;
  }
  return o;
}

class TranslationTask final : public Task {
 public:
  TranslationTask(const Config& cfg, const CheckpointData* resumed, const std::string& origin)
      : batch_tokens_(cfg.get_int("train.batch_tokens")),
        label_smoothing_(static_cast<float>(cfg.get_float("train.label_smoothing"))),
        eval_bleu_(cfg.get_bool("train.eval_bleu")),
        bleu_sentences_(cfg.get_int("train.eval_bleu_sentences")) {
    path_ = cfg.get_string("data.path");
    std::vector<data::SentencePair> train = data::read_tsv(path_, &train_stats_);
    if (!cfg.get_string("data.valid_path").empty()) {
      valid_pairs_ = data::read_tsv(cfg.get_string("data.valid_path"));
    } else {
      const std::size_t n_valid = held_out_pairs(train.size(), cfg.get_float("data.valid_fraction"));
      TFM_CHECK(n_valid > 0 && n_valid < train.size(), path_, ": too few pairs (", train.size(),
                ") to hold out data.valid_fraction for validation; give data.valid_path");
      valid_pairs_.assign(train.end() - static_cast<std::ptrdiff_t>(n_valid), train.end());
      train.resize(train.size() - n_valid);
    }
    // Tokenizers: from the checkpoint, or trained on the training pairs.
    if (resumed) {
      tok_ = load_tokenizers(*resumed, origin);
    } else {
      data::VocabRule rule;
      rule.requested = vocab_size_setting(cfg);
      rule.max_size = cfg.get_int("data.vocab_max");
      rule.min_count = cfg.get_int("data.vocab_min_count");
      const data::SentencePieceOptions sp = sentencepiece_options(cfg);
      std::vector<std::string> src, tgt;
      for (const auto& p : train) src.push_back(p.src), tgt.push_back(p.tgt);
      auto sized = [&](const std::vector<std::string>& text, const std::string& where) {
        data::SizedTokenizer t = data::train_sized(text, rule, sp, where);
        vocab_notes_.push_back(where + ": " + t.note);
        return std::make_shared<data::SentencePieceTokenizer>(std::move(t.tokenizer));
      };
      if (cfg.get_bool("data.joint_vocab")) {
        std::vector<std::string> both = src;
        both.insert(both.end(), tgt.begin(), tgt.end());
        tok_.src = tok_.tgt = sized(both, path_);
      } else {
        tok_.src = sized(src, path_ + " (source side)");
        tok_.tgt = sized(tgt, path_ + " (target side)");
      }
    }
    TFM_CHECK(!cfg.get_bool("model.share_embeddings") || tok_.joint(),
              "model.share_embeddings needs data.joint_vocab = true (one vocabulary for both sides)");
    ids_.pad = tok_.tgt->pad_id();
    ids_.bos = tok_.tgt->bos_id();
    ids_.eos = tok_.tgt->eos_id();
    TFM_CHECK(ids_.pad >= 0 && ids_.bos >= 0 && ids_.eos >= 0 && tok_.src->pad_id() == ids_.pad,
              origin.empty() ? path_ : origin, ": the tokenizer has no pad/bos/eos ids");
    const int64_t max_len = cfg.get_int("model.block_size");
    block_size_ = max_len;
    train_examples_ = encode_pairs(train, tok_, max_len, dropped_train_);
    TFM_CHECK(!train_examples_.empty(), path_, ": no training pair fits model.block_size = ", max_len);
    int64_t& dropped_valid = dropped_valid_;
    valid_examples_ = encode_pairs(valid_pairs_, tok_, max_len, dropped_valid);
    TFM_CHECK(!valid_examples_.empty(), "no validation pair fits model.block_size = ", max_len);
    // Keep validation references aligned with the examples that fit.
    if (dropped_valid > 0) {
      std::vector<data::SentencePair> kept;
      for (const auto& p : valid_pairs_) {
        if (pair_fits({tok_.src->encode(p.src), tok_.tgt->encode(p.tgt)}, max_len)) kept.push_back(p);
      }
      valid_pairs_ = std::move(kept);
    }
    const uint64_t seed = static_cast<uint64_t>(cfg.get_int("train.seed"));
    batcher_ = std::make_unique<data::TranslationBatcher>(train_examples_, batch_tokens_, ids_, seed + 1);
    valid_batches_ = data::TranslationBatcher(valid_examples_, batch_tokens_, ids_, seed).fixed_batches(batch_tokens_);
    model_ = std::make_unique<layers::Seq2Seq>(
        seq2seq_config(cfg, tok_.src->vocab_size(), tok_.tgt->vocab_size(), ids_.pad), seed);
  }

  const layers::Module& model() const override { return *model_; }

  core::Tensor next_loss(int64_t& tokens) override {
    const data::TranslationBatch b = [&] {
      core::profile::Frame prof(core::profile::Kind::data);
      return batcher_->next();
    }();
    tokens = b.tgt_tokens;
    return batch_loss(b);
  }

  int64_t for_each_heaviest(int64_t count, const std::function<void(const core::Tensor&)>& run) override {
    const std::vector<int64_t> heavy = batcher_->heaviest(batcher_->position(), count);
    core::Generator& dropout = *model_->dropout_generator();
    for (int64_t p : heavy) {
      core::RngReplayGuard keep(dropout, dropout.state());  // training draws the same numbers after the check
      const core::Tensor loss = batch_loss(batcher_->at(p));
      if (loss.defined()) run(loss);
    }
    return static_cast<int64_t>(heavy.size());
  }

  std::map<std::string, double> evaluate() override {
    core::NoGradGuard no_grad;
    model_->eval();
    double total = 0, tokens = 0;
    for (const auto& b : valid_batches_) {
      if (stop_requested()) break;  // a signal stops it (the trainer discards the result)
      total += model_->loss(b.src, b.tgt_in, b.tgt_out, 0.0f).item() * static_cast<double>(b.tgt_tokens);
      tokens += static_cast<double>(b.tgt_tokens);
    }
    std::map<std::string, double> out{{"val_loss", tokens > 0 ? total / tokens : 0.0}};
    if (eval_bleu_ && !stop_requested()) {
      std::vector<std::string> hyps, refs;
      translate_valid(std::min<int64_t>(bleu_sentences_, static_cast<int64_t>(valid_pairs_.size())), hyps, refs);
      out["val_bleu"] = data::corpus_bleu(hyps, refs).score;
      out["val_chrf"] = data::corpus_chrf(hyps, refs).score;
      out["val_exact"] = data::exact_match(hyps, refs);
    }
    model_->train();
    return out;
  }

  void save_state(CheckpointData& out) const override {
    store_tokenizers(out, tok_);
    out.ints["batch_position"] = batcher_->position();
    save_generator(out, "dropout", *model_->dropout_generator());
  }

  void load_state(const CheckpointData& in, const std::string& origin) override {
    load_parameters(*model_, in.params, origin);
    // Batches served so far; each holds at least one target token.
    batcher_->set_position(checkpoint_int(in, "batch_position", origin, 0, checkpoint_tokens_seen(in, origin)));
    load_generator(in, "dropout", *model_->dropout_generator(), origin);
  }

  std::string describe() const override {
    std::ostringstream os;
    os << "data: " << path_ << " (" << train_examples_.size() << " training pairs";
    if (dropped_train_) os << ", " << dropped_train_ << " longer than model.block_size dropped";
    os << ", " << valid_examples_.size() << " validation pairs), vocabulary " << tok_.src->vocab_size();
    if (!tok_.joint()) os << " / " << tok_.tgt->vocab_size();
    os << (tok_.joint() ? " (joint)" : " (source / target)") << ", model: seq2seq, " << model_->num_parameters()
       << " parameters";
    // What happened to the data, for someone bringing their own.
    os << "\n  " << path_ << ": " << train_stats_.lines << " lines, " << train_stats_.blank
       << " blank lines skipped, " << dropped_train_ << " training pairs dropped (more than model.block_size = "
       << block_size_ << " tokens on a side, with BOS/EOS)";
    if (dropped_valid_) os << ", " << dropped_valid_ << " validation pairs dropped (too long)";
    std::size_t longest_src = 0, longest_tgt = 0;
    for (const auto& e : train_examples_) longest_src = std::max(longest_src, e.src.size()), longest_tgt = std::max(longest_tgt, e.tgt.size());
    os << "\n  longest training pair kept: " << longest_src << " source tokens, " << longest_tgt << " target tokens";
    for (const auto& n : vocab_notes_) os << "\n  " << n;
    return os.str();
  }

 private:
  // The loss of batch b: all of it, or this rank's share (see Task::next_loss).
  core::Tensor batch_loss(const data::TranslationBatch& b) {
    if (shard_size_ == 1) return model_->loss(b.src, b.tgt_in, b.tgt_out, label_smoothing_);
    // Whole sentences, balanced by target tokens; the loss is per target token of the global batch.
    const std::vector<int64_t> per_row = row_tokens(b.tgt_out, ids_.pad);
    const RowRange rows = shard_by_tokens(per_row, shard_rank_, shard_size_);
    int64_t mine = 0;
    for (int64_t i = rows.begin; i < rows.end; ++i) mine += per_row[static_cast<std::size_t>(i)];
    if (mine == 0) return core::Tensor();
    const auto part = [&](const core::Tensor& t) { return core::slice(t, 0, rows.begin, rows.end).contiguous(); };
    return core::mul(model_->loss(part(b.src), part(b.tgt_in), part(b.tgt_out), label_smoothing_),
                     static_cast<float>(static_cast<double>(mine) / static_cast<double>(b.tgt_tokens)));
  }

  // Greedy translations of the first n validation sentences and their references.
  void translate_valid(int64_t n, std::vector<std::string>& hyps, std::vector<std::string>& refs) const {
    layers::DecodeOptions opt;
    opt.beam = 1;
    opt.bos = ids_.bos;
    opt.eos = ids_.eos;
    opt.stop = [] { return stop_requested(); };  // a signal ends the pass within one decoding step
    constexpr int64_t kBatch = 64;
    for (int64_t start = 0; start < n && !stop_requested(); start += kBatch) {
      std::vector<int64_t> idx;
      for (int64_t i = start; i < std::min(n, start + kBatch); ++i) idx.push_back(i);
      const data::TranslationBatch b = data::make_batch(valid_examples_, idx, ids_);
      for (const auto& ids : layers::translate(*model_, b.src, opt)) hyps.push_back(tok_.tgt->decode(ids));
      for (int64_t i : idx) refs.push_back(valid_pairs_[static_cast<std::size_t>(i)].tgt);
    }
  }

  int64_t batch_tokens_;
  float label_smoothing_;
  bool eval_bleu_;
  int64_t bleu_sentences_;
  std::string path_;
  TokenizerPair tok_;
  data::SpecialIds ids_;
  std::vector<data::SentencePair> valid_pairs_;
  std::vector<data::TranslationExample> train_examples_, valid_examples_;
  int64_t dropped_train_ = 0, dropped_valid_ = 0, block_size_ = 0;
  data::TsvStats train_stats_;
  std::vector<std::string> vocab_notes_;  // what data.vocab_size chose, per tokenizer
  std::unique_ptr<data::TranslationBatcher> batcher_;
  std::vector<data::TranslationBatch> valid_batches_;
  std::unique_ptr<layers::Seq2Seq> model_;
};

}  // namespace

std::unique_ptr<Task> make_translation_task(const Config& cfg, const CheckpointData* resumed,
                                            const std::string& origin) {
  return std::make_unique<TranslationTask>(cfg, resumed, origin);
}

}  // namespace tfm::train
