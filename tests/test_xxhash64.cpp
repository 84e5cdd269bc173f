// XXH64 against reference digests from the xxHash library itself (Debian's
// libxxhash0 0.8.1, XXH64(data, len, seed), computed once through ctypes),
// fed in one piece and in uneven pieces that cross the 32-byte stripes.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "train/xxhash64.h"

using tfm::train::Xxh64;

namespace {

uint64_t digest(const std::string& s, uint64_t seed) {
  Xxh64 h(seed);
  h.update(s.data(), s.size());
  return h.digest();
}

std::string long_input() {  // bytes 0..255 four times, then "xyz": 1027 bytes
  std::string s;
  for (int r = 0; r < 4; ++r)
    for (int b = 0; b < 256; ++b) s.push_back(static_cast<char>(b));
  return s + "xyz";
}

}  // namespace

TEST_CASE("XXH64 matches the reference library's digests", "[checkpoint]") {
  struct Case {
    std::string data;
    uint64_t seed0, seed12345;
  };
  const std::vector<Case> cases = {
      {"", 0xef46db3751d8e999ULL, 0x95584af7701f808dULL},
      {"a", 0xd24ec4f1a98c6e5bULL, 0x747b860523d69ab6ULL},
      {"abc", 0x44bc2cf5ad770999ULL, 0x01700e64f6f23509ULL},
      {"Nobody inspects the spammish repetition", 0xfbcea83c8a378bf1ULL, 0x081a876428a9313bULL},
      {long_input(), 0xe146cb31b65bc21aULL, 0xe323a559c0f2ee86ULL},
  };
  for (const Case& c : cases) {
    CHECK(digest(c.data, 0) == c.seed0);
    CHECK(digest(c.data, 12345) == c.seed12345);
  }
}

TEST_CASE("XXH64 gives the same digest however the input is split", "[checkpoint]") {
  const std::string s = long_input();
  for (std::size_t piece : {1u, 3u, 31u, 32u, 33u, 100u}) {
    Xxh64 h;
    for (std::size_t off = 0; off < s.size(); off += piece) h.update(s.data() + off, std::min(piece, s.size() - off));
    CHECK(h.digest() == 0xe146cb31b65bc21aULL);
  }
}
