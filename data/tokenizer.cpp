#include "tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "data/text.h"

namespace tfm::data {

CharTokenizer CharTokenizer::train(const std::string& text, const std::string& origin) {
  std::vector<char32_t> cps = decode_utf8(text, origin);
  std::sort(cps.begin(), cps.end());
  cps.erase(std::unique(cps.begin(), cps.end()), cps.end());
  TFM_CHECK(!cps.empty(), origin, ": empty text, nothing to build a vocabulary from");
  return CharTokenizer(std::move(cps));
}

CharTokenizer::CharTokenizer(std::vector<char32_t> symbols) : symbols_(std::move(symbols)) {
  TFM_CHECK(std::is_sorted(symbols_.begin(), symbols_.end()) &&
                std::adjacent_find(symbols_.begin(), symbols_.end()) == symbols_.end(),
            "char tokenizer: symbols must be sorted and unique");
}

std::vector<int32_t> CharTokenizer::encode(const std::vector<char32_t>& cps) const {
  std::vector<int32_t> ids;
  ids.reserve(cps.size());
  for (char32_t c : cps) {
    auto it = std::lower_bound(symbols_.begin(), symbols_.end(), c);
    ids.push_back(it != symbols_.end() && *it == c ? static_cast<int32_t>(it - symbols_.begin()) + 1 : kUnk);
  }
  return ids;
}

std::vector<int32_t> CharTokenizer::encode(const std::string& text) const {
  return encode(decode_utf8(text, "input text"));
}

std::string CharTokenizer::decode_one(int32_t id) const {
  if (id <= 0 || id > static_cast<int32_t>(symbols_.size())) return "\xEF\xBF\xBD";  // U+FFFD
  std::string s;
  append_utf8(s, symbols_[static_cast<std::size_t>(id) - 1]);
  return s;
}

std::string CharTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += decode_one(id);
  return out;
}

std::vector<uint8_t> CharTokenizer::serialize() const {
  const std::string s = encode_utf8(symbols_);
  return std::vector<uint8_t>(s.begin(), s.end());
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& kind, const std::vector<uint8_t>& bytes) {
  if (kind == "char") {
    const std::string s(bytes.begin(), bytes.end());
    return std::make_unique<CharTokenizer>(decode_utf8(s, "checkpoint tokenizer"));
  }
  if (kind == SentencePieceTokenizer::kKind) {
    const std::string s(bytes.begin(), bytes.end());
    return std::make_unique<SentencePieceTokenizer>(SentencePieceTokenizer::from_model_proto(s, "checkpoint tokenizer"));
  }
  detail::throw_error("unknown tokenizer kind '", kind, "' in checkpoint (this tfm knows: char, sentencepiece)");
}

}  // namespace tfm::data
