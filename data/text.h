// Text files and UTF-8.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tfm::data {

// Reads a whole file; throws tfm::Error naming the path when it cannot.
std::string read_file(const std::string& path);

// Decodes UTF-8 into code points. Throws tfm::Error naming `origin`, the
// line and the byte offset of the first invalid sequence.
std::vector<char32_t> decode_utf8(const std::string& bytes, const std::string& origin);
std::string encode_utf8(const std::vector<char32_t>& cps);

// A text corpus as a language model reads it: a leading byte-order mark is
// dropped and CRLF line ends become LF (`crlf` counts them), so a file saved
// on Windows trains the same model as its Unix copy. Everything else is kept.
std::string normalize_text(const std::string& bytes, int64_t* crlf = nullptr);
void append_utf8(std::string& out, char32_t cp);

}  // namespace tfm::data
