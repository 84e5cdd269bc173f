// SentencePieceTokenizer (declared in tokenizer.h): libsentencepiece's
// trainer and processor behind tfm's Tokenizer interface. The model lives
// only in memory, as the serialised ModelProto that also goes into
// checkpoints.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <string>
#include <unordered_map>

#include "core/error.h"
#include "data/tokenizer.h"

namespace tfm::data {
namespace {

// Feeds the training sentences to the trainer without a temporary file.
class VectorSentenceIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentenceIterator(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  std::size_t i_ = 0;
};

// The part of a sentencepiece status message after its "[check] " prefix.
std::string status_text(const sentencepiece::util::Status& st) {
  std::string m = st.ToString();
  const auto p = m.find("] ");
  if (p != std::string::npos) m = m.substr(p + 2);
  return m;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(std::string proto,
                                               std::unique_ptr<sentencepiece::SentencePieceProcessor> sp)
    : proto_(std::move(proto)), sp_(std::move(sp)) {}
SentencePieceTokenizer::SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept = default;
SentencePieceTokenizer& SentencePieceTokenizer::operator=(SentencePieceTokenizer&&) noexcept = default;
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

SentencePieceTokenizer SentencePieceTokenizer::train(const std::vector<std::string>& sentences, int64_t vocab_size,
                                                     const std::string& model_type, const std::string& origin) {
  SentencePieceOptions o;
  o.model_type = model_type;
  return train(sentences, vocab_size, o, origin);
}

SentencePieceTokenizer SentencePieceTokenizer::train(const std::vector<std::string>& sentences, int64_t vocab_size,
                                                     const SentencePieceOptions& options, const std::string& origin) {
  const std::string& model_type = options.model_type;
  TFM_CHECK(options.character_coverage > 0 && options.character_coverage <= 1, origin,
            ": data.sp_character_coverage = ", options.character_coverage, " must be in (0, 1]");
  std::string user_symbols;
  for (const auto& u : options.user_defined_symbols) {
    TFM_CHECK(!u.empty() && u.find_first_of(" \t\r\n,") == std::string::npos, origin,
              ": data.sp_user_defined_symbols: '", u, "' is not a symbol (no spaces or commas, not empty)");
    user_symbols += (user_symbols.empty() ? "" : ",") + u;
  }
  TFM_CHECK(model_type == "bpe" || model_type == "unigram", origin, ": unknown SentencePiece model type '",
            model_type, "' (data.sp_model must be bpe or unigram)");
  TFM_CHECK(vocab_size >= 8 && vocab_size <= (int64_t{1} << 30), origin, ": data.vocab_size = ", vocab_size,
            " is out of range for SentencePiece (at least 8)");
  bool any_text = false;
  for (const auto& s : sentences) any_text = any_text || s.find_first_not_of(" \t\r\n") != std::string::npos;
  TFM_CHECK(any_text, origin, ": no text to train a SentencePiece model on");

  // Everything that could vary between runs is pinned: no sampling or
  // shuffling of the input, one thread, a fixed seed. minloglevel 2 keeps
  // sentencepiece's INFO/WARNING chatter off stderr (it is a process-wide
  // setting of the library; errors still come back as statuses).
  std::unordered_map<std::string, std::string> args = {
      {"model_type", model_type},
      {"vocab_size", std::to_string(vocab_size)},
      {"pad_id", std::to_string(kPad)},
      {"unk_id", std::to_string(kUnk)},
      {"bos_id", std::to_string(kBos)},
      {"eos_id", std::to_string(kEos)},
      {"character_coverage", std::to_string(options.character_coverage)},
      {"split_digits", options.split_digits ? "true" : "false"},
      {"byte_fallback", options.byte_fallback ? "true" : "false"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"num_threads", "1"},
      {"minloglevel", "2"},
  };
  if (!user_symbols.empty()) args["user_defined_symbols"] = user_symbols;
  sentencepiece::SetRandomGeneratorSeed(20240611u);
  VectorSentenceIterator it(sentences);
  std::string proto;
  const auto st = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
  if (!st.ok()) {
    std::string msg = status_text(st);
    std::string hint;
    if (msg.find("Vocabulary size too high") != std::string::npos) {
      hint = "; lower data.vocab_size (or train on more text)";
    } else if (msg.find("smaller than required_chars") != std::string::npos) {
      // Every distinct character needs its own piece (coverage 1.0); the
      // library's advice about --character_coverage does not apply here.
      msg = msg.substr(0, msg.find(" Increase vocab_size"));
      hint = options.byte_fallback ? "; raise data.vocab_size above the number of distinct characters plus 256 byte "
                                     "pieces (data.sp_byte_fallback), or set data.sp_byte_fallback = false"
                                   : "; raise data.vocab_size above the number of distinct characters";
    }
    while (!msg.empty() && (msg.back() == '.' || msg.back() == ' ')) msg.pop_back();
    detail::throw_error(origin, ": training a SentencePiece ", model_type, " model with data.vocab_size = ",
                        vocab_size, " on ", sentences.size(), " sentences failed: ", msg, hint);
  }
  return from_model_proto(proto, origin);
}

SentencePieceTokenizer SentencePieceTokenizer::from_model_proto(const std::string& model_proto,
                                                                const std::string& origin) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto st = sp->LoadFromSerializedProto(model_proto);
  TFM_CHECK(st.ok(), origin, ": not a valid SentencePiece model (", model_proto.size(), " bytes): ", status_text(st));
  TFM_CHECK(sp->GetPieceSize() > 0 && sp->unk_id() >= 0, origin, ": SentencePiece model has no vocabulary");
  return SentencePieceTokenizer(model_proto, std::move(sp));
}

int64_t SentencePieceTokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int32_t SentencePieceTokenizer::pad_id() const { return sp_->pad_id(); }
int32_t SentencePieceTokenizer::unk_id() const { return sp_->unk_id(); }
int32_t SentencePieceTokenizer::bos_id() const { return sp_->bos_id(); }
int32_t SentencePieceTokenizer::eos_id() const { return sp_->eos_id(); }

std::vector<int32_t> SentencePieceTokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto st = sp_->Encode(text, &ids);
  TFM_CHECK(st.ok(), "sentencepiece: cannot encode text: ", status_text(st));
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  const int n = sp_->GetPieceSize();
  std::vector<int> v;
  v.reserve(ids.size());
  for (int32_t id : ids) v.push_back(id >= 0 && id < n ? id : sp_->unk_id());
  std::string out;
  const auto st = sp_->Decode(v, &out);
  TFM_CHECK(st.ok(), "sentencepiece: cannot decode ids: ", status_text(st));
  return out;
}

bool SentencePieceTokenizer::is_reserved(int32_t id) const {
  if (id < 0 || id >= sp_->GetPieceSize()) return true;
  return sp_->IsControl(id) || sp_->IsUnknown(id) || sp_->IsUnused(id) || sp_->IsByte(id);
}

std::vector<uint8_t> SentencePieceTokenizer::serialize() const {
  return std::vector<uint8_t>(proto_.begin(), proto_.end());
}

std::string SentencePieceTokenizer::id_to_piece(int32_t id) const {
  if (id < 0 || id >= sp_->GetPieceSize()) return "";
  return sp_->IdToPiece(id);
}

}  // namespace tfm::data
