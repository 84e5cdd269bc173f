// The language-modelling task: a GPT on a UTF-8 text file, character
// tokenizer, nanoGPT split (first 1 − valid_fraction of the characters
// train, the rest validate), random or epoch windows.
#include <algorithm>
#include <limits>
#include <sstream>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/profile.h"
#include "data/lm_data.h"
#include "data/text.h"
#include "data/tokenizer.h"
#include "layers/gpt.h"
#include "train/data_parallel.h"
#include "train/model_io.h"
#include "train/signals.h"
#include "train/task.h"
#include "train/task_data.h"

namespace tfm::train {

namespace {

class LMTask final : public Task {
 public:
  LMTask(const Config& cfg, const CheckpointData* resumed, const std::string& origin)
      : batch_(cfg.get_int("train.batch_size")),
        eval_steps_(cfg.get_int("train.eval_steps")),
        label_smoothing_(static_cast<float>(cfg.get_float("train.label_smoothing"))),
        data_gen_(static_cast<uint64_t>(cfg.get_int("train.seed")) + 1) {
    TFM_CHECK(cfg.get_string("data.tokenizer") == "char",
              "data.tokenizer = ", cfg.get_string("data.tokenizer"), " is not available for model.family = gpt (allowed: char)");
    path_ = cfg.get_string("data.path");
    const std::vector<char32_t> cps = data::decode_utf8(data::normalize_text(data::read_file(path_), &crlf_), path_);
    TFM_CHECK(!cps.empty(), path_, ": empty corpus");
    const auto split =
        static_cast<std::ptrdiff_t>(text_validation_start(cps.size(), cfg.get_float("data.valid_fraction")));
    const std::vector<char32_t> train_cps(cps.begin(), cps.begin() + split), valid_cps(cps.begin() + split, cps.end());
    if (resumed) {
      auto tok = data::load_tokenizer(resumed->tokenizer_kind, resumed->tokenizer_blob);
      tokenizer_.reset(dynamic_cast<data::CharTokenizer*>(tok.release()));
      TFM_CHECK(tokenizer_ != nullptr, origin, ": the checkpoint's tokenizer is not a char tokenizer");
    } else {
      tokenizer_ = std::make_unique<data::CharTokenizer>(data::CharTokenizer::train(data::encode_utf8(train_cps), path_));
    }
    const int64_t block = cfg.get_int("model.block_size");
    const auto sampling = cfg.get_string("data.sampling") == "epoch" ? data::Sampling::epoch : data::Sampling::random;
    train_ = std::make_unique<data::LMStream>(tokenizer_->encode(train_cps), block, sampling);
    valid_ = std::make_unique<data::LMStream>(tokenizer_->encode(valid_cps), block, data::Sampling::random);
    train_chars_ = static_cast<int64_t>(train_cps.size());
    valid_chars_ = static_cast<int64_t>(valid_cps.size());
    // More batches than it takes to cover the split once only repeat windows
    // (and can make one evaluation run for hours): clamp, and say so.
    const int64_t distinct = std::max<int64_t>(1, (valid_->windows() + batch_ - 1) / batch_);
    if (eval_steps_ > distinct) {
      eval_steps_note_ = "; train.eval_steps = " + std::to_string(eval_steps_) + " clamped to " +
                         std::to_string(distinct) + ", the validation batches that cover the split once";
      eval_steps_ = distinct;
    }
    model_ = std::make_unique<layers::GPT>(gpt_config(cfg, tokenizer_->vocab_size()),
                                           static_cast<uint64_t>(cfg.get_int("train.seed")));
  }

  const layers::Module& model() const override { return *model_; }

  core::Tensor next_loss(int64_t& tokens) override {
    const data::LMBatch b = [&] {
      core::profile::Frame prof(core::profile::Kind::data);
      return train_->next(batch_, data_gen_);
    }();
    tokens = b.inputs.numel();
    if (shard_size_ == 1) return model_->loss(b.inputs, b.targets, -100, label_smoothing_);
    const RowRange rows = shard_rows(batch_, shard_rank_, shard_size_);  // every row has block_size targets
    if (rows.size() == 0) return core::Tensor();
    const core::Tensor x = core::slice(b.inputs, 0, rows.begin, rows.end).contiguous();
    const core::Tensor y = core::slice(b.targets, 0, rows.begin, rows.end).contiguous();
    return core::mul(model_->loss(x, y, -100, label_smoothing_),
                     static_cast<float>(rows.size()) / static_cast<float>(batch_));
  }

  std::map<std::string, double> evaluate() override {
    core::NoGradGuard no_grad;
    model_->eval();
    double total = 0;
    int64_t done = 0;
    for (; done < eval_steps_ && !stop_requested(); ++done) {  // a signal stops it (the trainer discards the result)
      const data::LMBatch b = valid_->fixed(done, batch_);
      total += model_->loss(b.inputs, b.targets).item();
    }
    model_->train();
    return {{"val_loss", done ? total / static_cast<double>(done) : 0.0}};
  }

  void save_state(CheckpointData& out) const override {
    out.tokenizer_kind = tokenizer_->kind();
    out.tokenizer_blob = tokenizer_->serialize();
    out.ints["epoch_position"] = train_->epoch_position();
    save_generator(out, "data", data_gen_);
    save_generator(out, "dropout", *model_->dropout_generator());
  }

  void load_state(const CheckpointData& in, const std::string& origin) override {
    load_parameters(*model_, in.params, origin);
    // Windows served so far; each holds model.block_size >= 1 tokens.
    train_->set_epoch_position(checkpoint_int(in, "epoch_position", origin, 0, checkpoint_tokens_seen(in, origin)));
    load_generator(in, "data", data_gen_, origin);
    load_generator(in, "dropout", *model_->dropout_generator(), origin);
  }

  std::string describe() const override {
    std::ostringstream os;
    os << "data: " << path_ << " (" << train_chars_ << " train / " << valid_chars_
       << " valid characters, vocabulary " << tokenizer_->vocab_size() << "), model: gpt, "
       << model_->num_parameters() << " parameters" << eval_steps_note_;
    if (crlf_) os << "\n  " << path_ << ": " << crlf_ << " CRLF line ends read as LF";
    return os.str();
  }

 private:
  int64_t crlf_ = 0;  // CRLF line ends turned into LF
  int64_t batch_, eval_steps_;
  std::string eval_steps_note_;
  float label_smoothing_;  // training loss only; validation loss is unsmoothed
  core::Generator data_gen_;
  std::string path_;
  int64_t train_chars_ = 0, valid_chars_ = 0;
  std::unique_ptr<data::CharTokenizer> tokenizer_;
  std::unique_ptr<data::LMStream> train_, valid_;
  std::unique_ptr<layers::GPT> model_;
};

}  // namespace

std::unique_ptr<Task> make_lm_task(const Config& cfg, const CheckpointData* resumed, const std::string& origin) {
  return std::make_unique<LMTask>(cfg, resumed, origin);
}

void save_generator(CheckpointData& out, const std::string& name, const core::Generator& g) {
  out.rng[name] = {g.seed(), g.offset()};
}

void load_generator(const CheckpointData& in, const std::string& name, core::Generator& g, const std::string& origin) {
  auto it = in.rng.find(name);
  TFM_CHECK(it != in.rng.end(), origin, ": the checkpoint has no /rng/", name, " state");
  g.set_state(it->second.first, it->second.second);
}

int64_t checkpoint_int(const CheckpointData& in, const std::string& key, const std::string& origin, int64_t lo,
                       int64_t hi) {
  auto it = in.ints.find(key);
  TFM_CHECK(it != in.ints.end(), origin, ": the checkpoint has no '", key, "' attribute (not a training checkpoint?)");
  TFM_CHECK(it->second >= lo && it->second <= hi, origin, ": checkpoint attribute '", key, "' = ", it->second,
            " is out of range (allowed ", lo, " to ", hi, "; damaged or edited checkpoint?)");
  return it->second;
}

int64_t checkpoint_tokens_seen(const CheckpointData& in, const std::string& origin) {
  return checkpoint_int(in, "tokens_seen", origin, 0, std::numeric_limits<int64_t>::max());
}

std::unique_ptr<Task> make_task(const Config& cfg, const CheckpointData* resumed, const std::string& origin) {
  if (cfg.get_string("model.family") == "seq2seq") return make_translation_task(cfg, resumed, origin);
  return make_lm_task(cfg, resumed, origin);
}

}  // namespace tfm::train
