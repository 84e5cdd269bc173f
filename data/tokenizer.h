// Tokenizers. A tokenizer maps text to ids and back, and serialises itself
// into bytes so it can live inside a checkpoint: sampling and translation
// need only the checkpoint file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tfm::data {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual std::string kind() const = 0;  // "char", "sentencepiece"
  virtual int64_t vocab_size() const = 0;
  virtual std::vector<int32_t> encode(const std::string& text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual std::vector<uint8_t> serialize() const = 0;
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
  const std::vector<char32_t>& symbols() const { return symbols_; }

 private:
  std::vector<char32_t> symbols_;  // sorted
};

// Rebuilds a tokenizer from a checkpoint's (kind, bytes); throws on an
// unknown kind or malformed bytes.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& kind, const std::vector<uint8_t>& bytes);

}  // namespace tfm::data
