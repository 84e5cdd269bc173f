#include "data/vocab_size.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "core/error.h"

namespace tfm::data {

namespace {

int64_t codepoints(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

int64_t round_up8(int64_t v) { return (v + 7) / 8 * 8; }

// Trains at `size`, lowering it to what SentencePiece says the text can give
// ("Vocabulary size too high (N). Please set it to a value <= M.").
SentencePieceTokenizer train_at(const std::vector<std::string>& sentences, int64_t& size,
                                const SentencePieceOptions& o, const std::string& origin, bool& lowered) {
  for (int attempt = 0;; ++attempt) {
    try {
      return SentencePieceTokenizer::train(sentences, size, o, origin);
    } catch (const Error& e) {
      const std::string m = e.what();
      const std::size_t at = m.find("a value <= ");
      if (attempt > 2 || m.find("too high") == std::string::npos || at == std::string::npos) throw;
      const int64_t most = std::atoll(m.c_str() + at + 11);
      if (most < 8 || most >= size) throw;
      size = most;
      lowered = true;
    }
  }
}

std::string usage_text(const PieceUsage& u, int64_t min_count) {
  std::ostringstream os;
  os << u.rare << " of " << u.learned << " learned pieces occur fewer than " << min_count << " times";
  return os.str();
}

}  // namespace

PieceUsage piece_usage(const SentencePieceTokenizer& tok, const std::vector<std::string>& sentences,
                       int64_t min_count, const std::vector<std::string>& user_defined_symbols) {
  const int32_t n = static_cast<int32_t>(tok.vocab_size());
  std::vector<int64_t> used(static_cast<std::size_t>(n), 0);
  for (const auto& s : sentences)
    for (int32_t id : tok.encode(s)) ++used[static_cast<std::size_t>(id)];
  // The learned pieces, by text.
  std::unordered_map<std::string, int32_t> learned;
  for (int32_t id = 0; id < n; ++id) {
    if (tok.is_reserved(id)) continue;
    const std::string piece = tok.id_to_piece(id);
    if (codepoints(piece) < 2) continue;
    if (std::find(user_defined_symbols.begin(), user_defined_symbols.end(), piece) != user_defined_symbols.end())
      continue;
    learned.emplace(piece, id);
  }
  // A learned piece occurs wherever it appears inside a piece of the encoded
  // text (BPE's intermediate merges live on inside the longer pieces built
  // from them).
  std::vector<int64_t> seen(static_cast<std::size_t>(n), 0);
  for (int32_t id = 0; id < n; ++id) {
    const int64_t c = used[static_cast<std::size_t>(id)];
    if (c == 0) continue;
    const std::string piece = tok.id_to_piece(id);
    std::vector<std::size_t> cut;  // code point boundaries
    for (std::size_t i = 0; i <= piece.size(); ++i)
      if (i == piece.size() || (static_cast<unsigned char>(piece[i]) & 0xC0) != 0x80) cut.push_back(i);
    for (std::size_t a = 0; a < cut.size(); ++a)
      for (std::size_t b = a + 2; b < cut.size(); ++b) {
        const auto it = learned.find(piece.substr(cut[a], cut[b] - cut[a]));
        if (it != learned.end()) seen[static_cast<std::size_t>(it->second)] += c;
      }
  }
  PieceUsage u;
  for (const auto& [piece, id] : learned) {
    ++u.learned;
    u.rare += seen[static_cast<std::size_t>(id)] < min_count;
  }
  return u;
}

SizedTokenizer train_sized(const std::vector<std::string>& sentences, const VocabRule& rule,
                           const SentencePieceOptions& o, const std::string& origin) {
  TFM_CHECK(rule.requested == 0 || rule.requested >= 8, origin, ": data.vocab_size = ", rule.requested,
            " must be auto or at least 8");
  TFM_CHECK(rule.max_size >= 8 && rule.min_count >= 1, origin, ": data.vocab_max must be >= 8 and data.vocab_min_count >= 1");
  const bool automatic = rule.requested == 0;
  int64_t top = automatic ? rule.max_size : rule.requested;
  bool lowered = false;
  SentencePieceTokenizer best = train_at(sentences, top, o, origin, lowered);
  const PieceUsage top_usage = piece_usage(best, sentences, rule.min_count, o.user_defined_symbols);
  std::ostringstream note;
  if (top_usage.supported()) {
    if (automatic) {
      note << "vocabulary " << best.vocab_size() << " (data.vocab_size = auto: " << (lowered ? "the most " : "")
           << (lowered ? "pieces the text gives" : "the cap data.vocab_max") << ", "
           << usage_text(top_usage, rule.min_count) << ")";
    } else if (lowered) {
      note << "warning: data.vocab_size = " << rule.requested << " is more than the text gives; reduced to "
           << best.vocab_size();
    } else {
      note << "vocabulary " << best.vocab_size() << " (data.vocab_size; " << usage_text(top_usage, rule.min_count)
           << ")";
    }
    return {std::move(best), !automatic && lowered, note.str()};
  }
  // Bisection over a 1.25x grid from the smallest possible size to below `top`.
  const int64_t base = best.vocab_size() - top_usage.learned;
  std::vector<int64_t> grid;
  for (double v = static_cast<double>(base + 8); round_up8(static_cast<int64_t>(v)) < top; v *= 1.25) {
    const int64_t g = round_up8(static_cast<int64_t>(v));
    if (grid.empty() || g > grid.back()) grid.push_back(g);
  }
  if (grid.empty()) grid.push_back(std::min(top, round_up8(base + 8)));
  std::optional<SentencePieceTokenizer> chosen;  // trained at grid[chosen_at]
  PieceUsage chosen_usage;
  int64_t chosen_at = -1;
  auto train_grid = [&](int64_t i, PieceUsage& u) {
    int64_t size = grid[static_cast<std::size_t>(i)];
    bool unused = false;
    SentencePieceTokenizer t = train_at(sentences, size, o, origin, unused);
    u = piece_usage(t, sentences, rule.min_count, o.user_defined_symbols);
    return t;
  };
  // The answer lies in [lo, hi]; the smallest size is taken when none is supported.
  int64_t lo = 0, hi = static_cast<int64_t>(grid.size()) - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    PieceUsage u;
    SentencePieceTokenizer t = train_grid(mid, u);
    if (u.supported()) {
      lo = mid;
      chosen = std::move(t), chosen_usage = u, chosen_at = mid;
    } else {
      hi = mid - 1;
    }
  }
  if (chosen_at != lo) chosen = train_grid(lo, chosen_usage);
  if (automatic) {
    note << "vocabulary " << chosen->vocab_size() << " (data.vocab_size = auto: the largest size up to "
         << top << " at which at least 90% of the learned pieces occur " << rule.min_count
         << " times or more (data.vocab_min_count): " << usage_text(chosen_usage, rule.min_count) << "; at " << top
         << ", " << usage_text(top_usage, rule.min_count) << ")";
  } else {
    note << "warning: data.vocab_size = " << rule.requested << " is more than the text supports ("
         << usage_text(top_usage, rule.min_count) << " at " << top << "); reduced to " << chosen->vocab_size()
         << ", where " << usage_text(chosen_usage, rule.min_count);
  }
  return {std::move(*chosen), !automatic, note.str()};
}

}  // namespace tfm::data
