// Tokenizers. A tokenizer maps text to ids and back, and serialises itself
// into bytes so it can live inside a checkpoint: sampling and translation
// need only the checkpoint file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace tfm::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;  // "char", "sentencepiece"
  virtual int64_t vocab_size() const = 0;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::vector<uint8_t> serialize() const = 0;

  // Special ids; -1 when the tokenizer has no such symbol.
  virtual int32_t pad_id() const { return -1; }
  virtual int32_t unk_id() const { return -1; }
  virtual int32_t bos_id() const { return -1; }
  virtual int32_t eos_id() const { return -1; }
};

// Character level over Unicode code points. Id 0 is the unknown symbol
// (any code point not seen in the training text); ids 1.. are the training
// text's code points in increasing order.
class CharTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kUnk = 0;
  // Builds the vocabulary from text (UTF-8; `origin` names it in errors).
  static CharTokenizer train(const std::string& text, const std::string& origin);
  explicit CharTokenizer(std::vector<char32_t> symbols);

  std::string kind() const override { return "char"; }
  int64_t vocab_size() const override { return static_cast<int64_t>(symbols_.size()) + 1; }
  std::vector<int32_t> encode(const std::string& text) const override;
  std::vector<int32_t> encode(const std::vector<char32_t>& cps) const;
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::string decode_one(int32_t id) const;
  std::vector<uint8_t> serialize() const override;  // the symbols as UTF-8
  int32_t unk_id() const override { return kUnk; }  // no pad/bos/eos: -1
  const std::vector<char32_t>& symbols() const { return symbols_; }

 private:
  std::vector<char32_t> symbols_;  // sorted
};

// SentencePiece trainer options tfm exposes (data.sp_* keys). The struct's
// defaults are the library-level behaviour of the original train() overload;
// the config defaults (split_digits and byte_fallback on) live in the schema.
struct SentencePieceOptions {
  std::string model_type = "bpe";  // "bpe" or "unigram"
  bool split_digits = false;        // every digit its own piece
  bool byte_fallback = false;       // unknown characters as UTF-8 byte pieces (adds 256 pieces)
  double character_coverage = 1.0;  // share of characters covered by character pieces, (0, 1]
  std::vector<std::string> user_defined_symbols;  // always one piece each
};

// SentencePiece (BPE or unigram) through libsentencepiece, trained in memory
// with fixed special ids pad=0, unk=1, bos=2, eos=3, character coverage 1.0
// and the default nmt_nfkc normalisation (so encode -> decode gives back the
// NFKC-normalised text with runs of spaces collapsed and edges trimmed).
// Training is deterministic: the same sentences and settings give the same
// model bytes. Training sets libsentencepiece's process-wide log level to
// errors only, so it prints nothing on success. Implemented in
// sentencepiece_tokenizer.cpp.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  static constexpr const char* kKind = "sentencepiece";
  static constexpr int32_t kPad = 0, kUnk = 1, kBos = 2, kEos = 3;

  // Trains on `sentences` (UTF-8, one sentence each). model_type is "bpe" or
  // "unigram". Throws tfm::Error naming `origin` when the corpus cannot give
  // vocab_size pieces (lower data.vocab_size) or on bad arguments.
  static SentencePieceTokenizer train(const std::vector<std::string>& sentences, int64_t vocab_size,
                                      const std::string& model_type, const std::string& origin);
  // The same with every exposed trainer option.
  static SentencePieceTokenizer train(const std::vector<std::string>& sentences, int64_t vocab_size,
                                      const SentencePieceOptions& options, const std::string& origin);
  // Loads a serialised ModelProto (what serialize() returns, or the bytes of
  // an spm .model file); throws tfm::Error naming `origin` when malformed.
  static SentencePieceTokenizer from_model_proto(const std::string& model_proto, const std::string& origin);

  SentencePieceTokenizer(SentencePieceTokenizer&&) noexcept;
  SentencePieceTokenizer& operator=(SentencePieceTokenizer&&) noexcept;
  ~SentencePieceTokenizer() override;

  std::string kind() const override { return kKind; }
  int64_t vocab_size() const override;
  std::vector<int32_t> encode(const std::string& text) const override;
  // Control ids (pad, bos, eos) decode to nothing; ids outside the
  // vocabulary decode as the unknown surface " U+2047 ".
  std::string decode(const std::vector<int32_t>& ids) const override;
  std::vector<uint8_t> serialize() const override;  // the ModelProto bytes
  int32_t pad_id() const override;
  int32_t unk_id() const override;
  int32_t bos_id() const override;
  int32_t eos_id() const override;
  std::string id_to_piece(int32_t id) const;  // "" outside the vocabulary
  // Control, unknown, unused and byte pieces (not learned from the text).
  bool is_reserved(int32_t id) const;
  const std::string& model_proto() const { return proto_; }

 private:
  SentencePieceTokenizer(std::string proto, std::unique_ptr<sentencepiece::SentencePieceProcessor> sp);
  std::string proto_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

// Rebuilds a tokenizer from a checkpoint's (kind, bytes); throws on an
// unknown kind or malformed bytes. Kinds: "char", "sentencepiece".
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& kind, const std::vector<uint8_t>& bytes);

}  // namespace tfm::data
