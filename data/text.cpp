#include "text.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/allocator.h"
#include "core/error.h"

namespace tfm::data {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::throw_error(path, ": cannot open (", std::strerror(errno), ")");
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);  // fails for FIFOs and /dev/stdin: read them anyway
  // Read in blocks, not through `ss << in.rdbuf()`: a stream swallows a
  // std::bad_alloc from its own buffer and hands back a truncated text.
  return core::with_oom_context("reading " + path + (ec ? std::string() : " (" + std::to_string(size) + " bytes)"), [&] {
    std::string text;
    if (!ec) text.reserve(static_cast<std::size_t>(size));
    std::vector<char> buf(std::size_t{1} << 16);
    while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0)
      text.append(buf.data(), static_cast<std::size_t>(in.gcount()));
    TFM_CHECK(!in.bad(), path, ": read error");
    return text;
  });
}

std::vector<char32_t> decode_utf8(const std::string& s, const std::string& origin) {
  std::vector<char32_t> out;
  out.reserve(s.size());
  int64_t line = 1;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    int len = 0;
    char32_t cp = 0;
    if (c < 0x80) {
      len = 1, cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    }
    bool ok = len > 0 && i + len <= n;
    for (int k = 1; ok && k < len; ++k) {
      ok = (p[i + k] & 0xC0) == 0x80;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Reject overlong forms, surrogates and values past U+10FFFF.
    ok = ok && !(len == 2 && cp < 0x80) && !(len == 3 && cp < 0x800) && !(len == 4 && cp < 0x10000) &&
         !(cp >= 0xD800 && cp <= 0xDFFF) && cp <= 0x10FFFF;
    if (!ok)
      detail::throw_error(origin, ":", line, ": invalid UTF-8 (byte 0x", std::hex, static_cast<int>(c), std::dec,
                          " at offset ", i, "); the file must be UTF-8 text");
    if (cp == U'\n') ++line;
    out.push_back(cp);
    i += static_cast<std::size_t>(len);
  }
  return out;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string encode_utf8(const std::vector<char32_t>& cps) {
  std::string out;
  out.reserve(cps.size());
  for (char32_t c : cps) append_utf8(out, c);
  return out;
}

std::string normalize_text(const std::string& bytes, int64_t* crlf) {
  std::size_t start = bytes.size() >= 3 && bytes.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  std::string out;
  out.reserve(bytes.size() - start);
  int64_t n = 0;
  for (std::size_t i = start; i < bytes.size(); ++i) {
    if (bytes[i] == '\r' && i + 1 < bytes.size() && bytes[i + 1] == '\n') {
      ++n;
      continue;
    }
    out += bytes[i];
  }
  if (crlf) *crlf = n;
  return out;
}

}  // namespace tfm::data
