#include "translation.h"

#include <algorithm>
#include <array>
#include <numeric>

#include "core/error.h"
#include "data/text.h"

namespace tfm::data {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::string trim(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// Padded length of one example: the longer of the encoder input and the
// decoder input (BOS + target).
int64_t padded_len(const TranslationExample& e) {
  return std::max<int64_t>(static_cast<int64_t>(e.src.size()), static_cast<int64_t>(e.tgt.size()) + 1);
}

// Orders `idx` (in place, stably) by padded length, then source and target
// lengths, so equal-length examples keep their incoming (shuffled) order.
void sort_by_length(std::vector<int64_t>::iterator begin, std::vector<int64_t>::iterator end,
                    const std::vector<TranslationExample>& ex) {
  std::stable_sort(begin, end, [&](int64_t a, int64_t b) {
    const auto& x = ex[static_cast<std::size_t>(a)];
    const auto& y = ex[static_cast<std::size_t>(b)];
    const int64_t lx = padded_len(x), ly = padded_len(y);
    if (lx != ly) return lx < ly;
    if (x.src.size() != y.src.size()) return x.src.size() < y.src.size();
    return x.tgt.size() < y.tgt.size();
  });
}

// Greedily cuts a run of examples (in order) into batches whose padded size
// max_len × count stays within the budget; an example longer than the
// budget gets a batch of its own.
void cut_batches(const std::vector<int64_t>& order, std::size_t begin, std::size_t end,
                 const std::vector<TranslationExample>& ex, int64_t budget, std::vector<std::vector<int64_t>>& out) {
  std::vector<int64_t> cur;
  int64_t cur_max = 0;
  for (std::size_t i = begin; i < end; ++i) {
    const int64_t id = order[i];
    const int64_t len = padded_len(ex[static_cast<std::size_t>(id)]);
    const int64_t m = std::max(cur_max, len);
    if (!cur.empty() && m * static_cast<int64_t>(cur.size() + 1) > budget) {
      out.push_back(std::move(cur));
      cur.clear();
      cur_max = 0;
    }
    cur.push_back(id);
    cur_max = std::max(cur_max, len);
  }
  if (!cur.empty()) out.push_back(std::move(cur));
}

}  // namespace

std::vector<SentencePair> read_tsv(const std::string& path, TsvStats* stats) {
  const std::string text = read_file(path);  // names the path when missing
  std::size_t start = 0;
  if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) start = 3;  // byte-order mark
  // A whole corpus on one line: old Mac CR-only line ends, or the line ends
  // lost on the way. Caught before the per-line checks, whose "more than
  // one tab" would hide the cause.
  const std::size_t first_nl = text.find('\n');
  if (first_nl == std::string::npos || first_nl + 1 >= text.size()) {
    const std::string body = text.substr(start, first_nl == std::string::npos ? std::string::npos : first_nl - start);
    const std::size_t cr = body.find('\r');
    if (cr != std::string::npos && cr + 1 < body.size())
      detail::throw_error(path, ":1: the whole file is one line with CR (\\r) line ends; convert it to LF (\\n) "
                          "line ends, one 'source<TAB>target' pair per line");
    if (std::count(body.begin(), body.end(), '\t') > 1)
      detail::throw_error(path, ":1: the whole file is one line (", body.size(),
                          " bytes) with several tabs; expected one 'source<TAB>target' pair per line");
  }
  std::vector<SentencePair> pairs;
  int64_t line_no = 0;
  while (start < text.size()) {
    std::size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(start, nl - start);
    start = nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    // Validated line by line (a whole-file decode would hold 4 bytes per
    // character of a large corpus); the message names this line.
    try {
      decode_utf8(line, path);  // offsets count from the start of the line
    } catch (const Error& e) {
      const std::string m = e.what();
      const std::size_t at = m.find("invalid UTF-8");
      detail::throw_error(path, ":", line_no, ": ", at == std::string::npos ? m : m.substr(at));
    }
    if (trim(line).empty()) {  // blank lines are skipped
      if (stats) ++stats->blank;
      continue;
    }
    const std::size_t tab = line.find('\t');
    if (tab == std::string::npos) detail::throw_error(path, ":", line_no, ": no tab; expected 'source<TAB>target'");
    if (line.find('\t', tab + 1) != std::string::npos)
      detail::throw_error(path, ":", line_no, ": more than one tab; expected exactly one 'source<TAB>target'");
    SentencePair p{trim(line.substr(0, tab)), trim(line.substr(tab + 1))};
    if (p.src.empty()) detail::throw_error(path, ":", line_no, ": empty source side");
    if (p.tgt.empty()) detail::throw_error(path, ":", line_no, ": empty target side");
    pairs.push_back(std::move(p));
  }
  TFM_CHECK(!pairs.empty(), path, ": no sentence pairs (empty corpus)");
  if (stats) stats->lines = line_no;
  return pairs;
}

TranslationBatch make_batch(const std::vector<TranslationExample>& examples, const std::vector<int64_t>& indices,
                            const SpecialIds& ids) {
  TFM_CHECK(!indices.empty(), "translation: make_batch needs at least one example");
  int64_t S = 1, T = 1;
  for (int64_t i : indices) {
    TFM_CHECK(i >= 0 && i < static_cast<int64_t>(examples.size()), "translation: example index ", i, " is outside [0, ",
              examples.size(), ")");
    const auto& e = examples[static_cast<std::size_t>(i)];
    S = std::max<int64_t>(S, static_cast<int64_t>(e.src.size()));
    T = std::max<int64_t>(T, static_cast<int64_t>(e.tgt.size()) + 1);
  }
  const int64_t B = static_cast<int64_t>(indices.size());
  std::vector<int32_t> src(static_cast<std::size_t>(B * S), ids.pad);
  std::vector<int32_t> tin(static_cast<std::size_t>(B * T), ids.pad), tout(tin);
  TranslationBatch b;
  for (int64_t r = 0; r < B; ++r) {
    const auto& e = examples[static_cast<std::size_t>(indices[static_cast<std::size_t>(r)])];
    std::copy(e.src.begin(), e.src.end(), src.begin() + r * S);
    int32_t* in = tin.data() + r * T;
    int32_t* out = tout.data() + r * T;
    in[0] = ids.bos;
    for (std::size_t t = 0; t < e.tgt.size(); ++t) {
      in[t + 1] = e.tgt[t];
      out[t] = e.tgt[t];
    }
    out[e.tgt.size()] = ids.eos;
    b.src_tokens += static_cast<int64_t>(e.src.size());
    b.tgt_tokens += static_cast<int64_t>(e.tgt.size()) + 1;
  }
  b.src = core::from_vector(src, {B, S});
  b.tgt_in = core::from_vector(tin, {B, T});
  b.tgt_out = core::from_vector(tout, {B, T});
  b.indices = indices;
  return b;
}

TranslationBatcher::TranslationBatcher(std::vector<TranslationExample> examples, int64_t batch_tokens, SpecialIds ids,
                                       uint64_t seed)
    : examples_(std::move(examples)), batch_tokens_(batch_tokens), ids_(ids), seed_(seed) {
  TFM_CHECK(!examples_.empty(), "translation: the batcher needs at least one example");
  TFM_CHECK(batch_tokens_ > 0, "translation: batch_tokens must be positive, got ", batch_tokens_);
  epoch_start_.push_back(0);
}

void TranslationBatcher::build_epoch(int64_t epoch) {
  const int64_t n = static_cast<int64_t>(examples_.size());
  std::vector<int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  core::Generator g(seed_ ^ (0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(epoch + 1)));
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[g.next_u64() % static_cast<uint64_t>(i + 1)]);

  // Windows of about 100 batches' worth of examples.
  int64_t total = 0;
  for (const auto& e : examples_) total += padded_len(e);
  const int64_t mean_len = std::max<int64_t>(1, total / n);
  const int64_t per_batch = std::max<int64_t>(1, batch_tokens_ / mean_len);
  const int64_t window = std::max<int64_t>(1, 100 * per_batch);

  std::vector<std::vector<int64_t>> batches;
  for (int64_t w = 0; w < n; w += window) {
    const int64_t e = std::min(n, w + window);
    sort_by_length(order.begin() + w, order.begin() + e, examples_);
    cut_batches(order, static_cast<std::size_t>(w), static_cast<std::size_t>(e), examples_, batch_tokens_, batches);
  }
  for (int64_t i = static_cast<int64_t>(batches.size()) - 1; i > 0; --i)
    std::swap(batches[i], batches[g.next_u64() % static_cast<uint64_t>(i + 1)]);

  batches_ = std::move(batches);
  epoch_ = epoch;
  // Record the epoch's extent the first time it is built.
  if (epoch + 1 == static_cast<int64_t>(epoch_start_.size()))
    epoch_start_.push_back(epoch_start_.back() + static_cast<int64_t>(batches_.size()));
}

const std::vector<int64_t>& TranslationBatcher::indices_at(int64_t position) {
  TFM_CHECK(position >= 0, "translation: negative batcher position ", position);
  // Extend the epoch table (building each epoch once) until it covers the
  // position, then build the epoch holding it if it is not the current one.
  while (epoch_start_.back() <= position) build_epoch(static_cast<int64_t>(epoch_start_.size()) - 1);
  const auto it = std::upper_bound(epoch_start_.begin(), epoch_start_.end(), position);
  const int64_t epoch = static_cast<int64_t>(it - epoch_start_.begin()) - 1;
  if (epoch != epoch_) build_epoch(epoch);
  return batches_[static_cast<std::size_t>(position - epoch_start_[static_cast<std::size_t>(epoch)])];
}

TranslationBatch TranslationBatcher::at(int64_t position) { return make_batch(examples_, indices_at(position), ids_); }

TranslationBatch TranslationBatcher::next() {
  TranslationBatch b = at(position_);
  ++position_;
  return b;
}

std::vector<int64_t> TranslationBatcher::heaviest(int64_t from, int64_t count) {
  struct Candidate {
    std::array<int64_t, 3> m;  // B·S, B·T, B·(S² + T² + S·T)
    int64_t position;
  };
  // a covers b: at least as large by every measure.
  auto covers = [](const Candidate& a, const Candidate& b) {
    return a.m[0] >= b.m[0] && a.m[1] >= b.m[1] && a.m[2] >= b.m[2];
  };
  std::vector<Candidate> front;  // no member covers another; small (9 in 2000 translator steps)
  for (int64_t p = from; p < from + count; ++p) {
    int64_t S = 1, T = 1;
    const std::vector<int64_t>& idx = indices_at(p);
    for (int64_t i : idx) {
      const auto& e = examples_[static_cast<std::size_t>(i)];
      S = std::max<int64_t>(S, static_cast<int64_t>(e.src.size()));
      T = std::max<int64_t>(T, static_cast<int64_t>(e.tgt.size()) + 1);
    }
    const int64_t B = static_cast<int64_t>(idx.size());
    const Candidate c{{B * S, B * T, B * (S * S + T * T + S * T)}, p};
    if (std::any_of(front.begin(), front.end(), [&](const Candidate& f) { return covers(f, c); })) continue;
    std::erase_if(front, [&](const Candidate& f) { return covers(c, f); });
    front.push_back(c);
  }
  std::vector<int64_t> out;
  for (const Candidate& c : front) out.push_back(c.position);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<TranslationBatch> TranslationBatcher::fixed_batches(int64_t batch_tokens) const {
  TFM_CHECK(batch_tokens > 0, "translation: batch_tokens must be positive, got ", batch_tokens);
  std::vector<int64_t> order(examples_.size());
  std::iota(order.begin(), order.end(), 0);
  sort_by_length(order.begin(), order.end(), examples_);
  std::vector<std::vector<int64_t>> batches;
  cut_batches(order, 0, order.size(), examples_, batch_tokens, batches);
  std::vector<TranslationBatch> out;
  out.reserve(batches.size());
  for (const auto& b : batches) out.push_back(make_batch(examples_, b, ids_));
  return out;
}

}  // namespace tfm::data
