#include "corpus.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "data/text.h"
#include "train/posix_file.h"

namespace tfm::data {

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || is_upper(c); }

bool is_blank(std::string_view s) {
  for (char c : s)
    if (!is_space(c)) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  std::size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::string shorten(std::string_view s) {
  constexpr std::size_t kMax = 60;
  return s.size() <= kMax ? std::string(s) : std::string(s.substr(0, kMax)) + "...";
}

// Closing punctuation that must not be preceded by a space once a tag before
// it has been removed ("vida <H2416>, toda").
bool closes(std::string_view rest) {
  if (rest.empty()) return false;
  const char c = rest[0];
  if (c == ',' || c == '.' || c == ';' || c == ':' || c == '!' || c == '?' || c == ')') return true;
  // U+2019 RIGHT SINGLE QUOTATION MARK, U+201D RIGHT DOUBLE QUOTATION MARK
  return rest.substr(0, 3) == "\xE2\x80\x99" || rest.substr(0, 3) == "\xE2\x80\x9D";
}

// Removes <...> markup from one line. <title ...>...</title> goes with its
// content (a heading); every other tag is removed alone.
std::string strip_markup(std::string_view line, const std::string& origin, int64_t lineno) {
  std::string out;
  out.reserve(line.size());
  std::size_t i = 0;
  while (i < line.size()) {
    const char c = line[i];
    if (c != '<') {
      out += c;
      ++i;
      continue;
    }
    const std::size_t close = line.find('>', i);
    if (close == std::string_view::npos)
      detail::throw_error(origin, ":", lineno, ": unterminated markup tag '", shorten(line.substr(i)), "'");
    const std::string_view tag = line.substr(i + 1, close - i - 1);
    std::size_t next = close + 1;
    const bool is_title = tag.substr(0, 5) == "title" && (tag.size() == 5 || is_space(tag[5])) && tag.back() != '/';
    if (is_title) {
      const std::size_t end = line.find("</title>", next);
      if (end == std::string_view::npos)
        detail::throw_error(origin, ":", lineno, ": <title> without </title> on the same line: '",
                            shorten(line.substr(i)), "'");
      next = end + 8;
    }
    if (closes(line.substr(next)))
      while (!out.empty() && is_space(out.back())) out.pop_back();
    i = next;
  }
  return out;
}

// Pilcrows and USFM markers (\nd, \nd*, \add, \+wj, \f ...), then whitespace
// normalisation.
std::string clean_text(std::string_view s) {
  std::string tmp;
  tmp.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    if (s.substr(i, 2) == "\xC2\xB6") {  // U+00B6 PILCROW SIGN
      tmp += ' ';
      i += 2;
    } else if (s[i] == '\\') {
      // "\nd LORD\nd*": an opening marker takes the following space with it
      // (and stands for a word break); a closing marker vanishes, so
      // "Go\+wj*, and" -> "Go, and". A lone backslash is dropped as well.
      std::size_t j = i + 1;
      if (j < s.size() && s[j] == '+') ++j;
      while (j < s.size() && is_alpha(s[j])) ++j;
      while (j < s.size() && is_digit(s[j])) ++j;
      if (j < s.size() && s[j] == '*') {
        ++j;
      } else {
        if (j < s.size() && s[j] == ' ') ++j;
        if (!tmp.empty() && !is_space(tmp.back())) tmp += ' ';
      }
      i = j;
    } else {
      tmp += s[i++];
    }
  }
  std::string out;
  out.reserve(tmp.size());
  bool pending_space = false;
  for (char c : tmp) {
    if (is_space(c)) {
      pending_space = !out.empty();
    } else {
      if (pending_space) out += ' ';
      pending_space = false;
      out += c;
    }
  }
  return out;
}

bool parse_positive(std::string_view s, int& value) {
  if (s.empty() || s.size() > 6) return false;
  int v = 0;
  for (char c : s) {
    if (!is_digit(c)) return false;
    v = v * 10 + (c - '0');
  }
  if (v <= 0) return false;
  value = v;
  return true;
}

// Matches "Book C:V:" at the start of `s` (after optional whitespace).
// Returns false when the line is not a verse line.
bool match_verse_line(std::string_view s, Verse& v, std::string_view& text) {
  std::size_t b = 0;
  while (b < s.size() && is_space(s[b])) ++b;
  const std::size_t colon1 = s.find(':', b);
  if (colon1 == std::string_view::npos) return false;
  // "<book> <chapter>" before the first colon.
  const std::size_t sp = s.rfind(' ', colon1);
  if (sp == std::string_view::npos || sp <= b) return false;
  const std::string_view book = s.substr(b, sp - b);
  if (book.size() > 64) return false;
  const char first = book[0];
  if (!(is_upper(first) || is_digit(first) || first == '(' || static_cast<unsigned char>(first) >= 0x80)) return false;
  for (char c : book) {
    const auto u = static_cast<unsigned char>(c);
    if (!(is_alpha(c) || is_digit(c) || c == ' ' || c == '(' || c == ')' || c == '.' || c == '\'' || c == '-' ||
          u >= 0x80))
      return false;
  }
  if (book.back() == ' ') return false;
  const std::size_t colon2 = s.find(':', colon1 + 1);
  if (colon2 == std::string_view::npos) return false;
  int chapter = 0, verse = 0;
  if (!parse_positive(s.substr(sp + 1, colon1 - sp - 1), chapter)) return false;
  if (!parse_positive(s.substr(colon1 + 1, colon2 - colon1 - 1), verse)) return false;
  if (colon2 + 1 < s.size() && !is_space(s[colon2 + 1])) return false;
  v.book = std::string(book);
  v.chapter = chapter;
  v.verse = verse;
  text = s.substr(colon2 + 1);
  return true;
}

bool is_module_line(std::string_view s) {
  s = trim(s);
  if (s.size() < 3 || s.front() != '(' || s.back() != ')') return false;
  for (char c : s.substr(1, s.size() - 2))
    if (is_space(c) || c == '(' || c == ')') return false;
  return true;
}

constexpr std::string_view kWebGlossary = "The following words used in the World English Bible";

}  // namespace

std::string strip_footnotes(const std::string& raw) {
  std::string out;
  out.reserve(raw.size());
  std::size_t i = 0;
  while (i < raw.size()) {
    if (raw[i] == '[') {
      // "[]" or "[C:V text]" / "[C:V-W text]" on one line: a footnote.
      std::size_t j = i + 1;
      bool note = j < raw.size() && raw[j] == ']';
      if (!note) {
        std::size_t k = j;
        while (k < raw.size() && is_digit(raw[k])) ++k;
        if (k > j && k < raw.size() && raw[k] == ':') {
          std::size_t m = ++k;
          while (k < raw.size() && is_digit(raw[k])) ++k;
          if (k > m && k < raw.size() && raw[k] == '-') {
            ++k;
            while (k < raw.size() && is_digit(raw[k])) ++k;
          }
          note = k > m && k < raw.size() && raw[k] == ' ';
          j = k;
        }
      }
      if (note) {
        const std::size_t end = raw.find_first_of("]\n", j);
        if (end != std::string::npos && raw[end] == ']') {
          out += ' ';  // the word break the note stood in
          i = end + 1;
          continue;
        }
      }
    }
    out += raw[i++];
  }
  return out;
}

std::vector<Verse> parse_diatheke_plain(const std::string& raw, const std::string& origin) {
  (void)decode_utf8(raw, origin);  // validates; throws naming origin and line

  // Split into lines (a trailing "\r" is whitespace and goes in trimming).
  std::vector<std::string_view> lines;
  {
    const std::string_view all(raw);
    std::size_t start = 0;
    while (start < all.size()) {
      std::size_t nl = all.find('\n', start);
      if (nl == std::string_view::npos) nl = all.size();
      lines.push_back(all.substr(start, nl - start));
      start = nl + 1;
    }
  }
  std::size_t end = lines.size();
  while (end > 0 && is_blank(lines[end - 1])) --end;
  if (end > 0 && is_module_line(lines[end - 1])) --end;

  enum class Kind { blank, verse, other };
  struct Line {
    Kind kind = Kind::blank;
    bool indented = false;
    std::string clean;  // markup removed
    Verse head;         // for verse lines: book/chapter/verse
    std::string_view text;  // for verse lines: into `clean`
  };
  std::vector<Line> info(end);
  for (std::size_t i = 0; i < end; ++i) {
    Line& l = info[i];
    l.clean = strip_markup(lines[i], origin, static_cast<int64_t>(i + 1));
    l.indented = !lines[i].empty() && is_space(lines[i][0]);
    if (is_blank(l.clean)) {
      l.kind = Kind::blank;
    } else if (match_verse_line(l.clean, l.head, l.text)) {
      l.kind = Kind::verse;
    } else {
      l.kind = Kind::other;
    }
  }

  std::vector<Verse> out;
  std::string text;  // raw text of the current verse
  bool have = false;
  auto flush = [&]() {
    if (!have) return;
    out.back().text = clean_text(text);
    if (out.back().text.empty()) out.pop_back();
    have = false;
    text.clear();
  };
  for (std::size_t i = 0; i < end; ++i) {
    Line& l = info[i];
    const int64_t lineno = static_cast<int64_t>(i + 1);
    if (l.kind == Kind::blank) continue;
    if (l.kind == Kind::verse) {
      flush();
      out.push_back(std::move(l.head));
      text.assign(l.text);
      have = true;
      continue;
    }
    const std::string_view t = trim(l.clean);
    if (t.substr(0, kWebGlossary.size()) == kWebGlossary) break;  // WEB glossary: the rest is not verse text
    const bool heading = i + 1 < end && info[i + 1].kind == Kind::verse && info[i + 1].indented;
    if (heading) continue;
    if (!have) detail::throw_error(origin, ":", lineno, ": text before the first verse line: '", shorten(t), "'");
    text += ' ';
    text.append(t);
  }
  flush();
  return out;
}

std::string verse_key(const Verse& v) {
  return v.book + " " + std::to_string(v.chapter) + ":" + std::to_string(v.verse);
}

std::string kjv_text(const std::vector<Verse>& verses) {
  std::string out;
  std::size_t n = 0;
  for (const Verse& v : verses) n += v.text.size() + 1;
  out.reserve(n);
  for (const Verse& v : verses) {
    if (v.text.empty()) continue;
    out += v.text;
    out += '\n';
  }
  return out;
}

std::vector<AlignedPair> align_verses_keyed(const std::vector<Verse>& src, const std::vector<Verse>& tgt) {
  std::unordered_map<std::string, const Verse*> by_key;
  by_key.reserve(tgt.size());
  for (const Verse& v : tgt) {
    if (v.text.empty()) continue;
    const bool fresh = by_key.emplace(verse_key(v), &v).second;
    TFM_CHECK(fresh, "align_verses: target verse ", verse_key(v), " occurs twice");
  }
  std::unordered_map<std::string, bool> seen;
  seen.reserve(src.size());
  std::vector<AlignedPair> out;
  out.reserve(std::min(src.size(), tgt.size()));
  for (const Verse& v : src) {
    if (v.text.empty()) continue;
    std::string key = verse_key(v);
    const bool fresh = seen.emplace(key, true).second;
    TFM_CHECK(fresh, "align_verses: source verse ", key, " occurs twice");
    const auto it = by_key.find(key);
    if (it == by_key.end()) continue;
    out.push_back({std::move(key), v.text, it->second->text});
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> align_verses(const std::vector<Verse>& src,
                                                              const std::vector<Verse>& tgt) {
  std::vector<std::pair<std::string, std::string>> out;
  for (AlignedPair& p : align_verses_keyed(src, tgt)) out.emplace_back(std::move(p.src), std::move(p.tgt));
  return out;
}

std::vector<AlignedPair> drop_renumbered_chapters(std::vector<AlignedPair> pairs, const std::vector<Verse>& src,
                                                  const std::vector<Verse>& tgt) {
  std::unordered_set<std::string> tgt_keys, tgt_books;
  for (const Verse& v : tgt) {
    if (v.text.empty()) continue;
    tgt_keys.insert(verse_key(v));
    tgt_books.insert(v.book);
  }
  auto chapter_key = [](const std::string& book, int chapter) { return book + " " + std::to_string(chapter); };
  std::unordered_set<std::string> bad;  // "Book C"
  for (const Verse& v : src) {
    if (v.text.empty() || !tgt_books.count(v.book) || tgt_keys.count(verse_key(v))) continue;
    bad.insert(chapter_key(v.book, v.chapter));
    bad.insert(chapter_key(v.book, v.chapter + 1));
  }
  if (bad.empty()) return pairs;
  std::vector<AlignedPair> out;
  out.reserve(pairs.size());
  for (AlignedPair& p : pairs) {
    const std::size_t colon = p.key.rfind(':');
    if (colon != std::string::npos && bad.count(p.key.substr(0, colon))) continue;
    out.push_back(std::move(p));
  }
  return out;
}

uint64_t fnv1a64(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

Split split_of(const std::string& key) {
  const uint64_t r = fnv1a64(key) % 100;
  if (r == 0) return Split::test;
  if (r == 1) return Split::valid;
  return Split::train;
}

namespace {

struct Module {
  const char* name;
  const char* package;
  bool footnotes;  // print footnotes (-o f) and strip them: WEB's plain text glues words where a note was
};
constexpr Module kKJV{"engKJV2006eb", "sword-text-kjv", false};
constexpr Module kWEB{"engWEB2015eb", "sword-text-web", true};
constexpr Module kRV{"spaRV1909eb", "sword-text-sparv", false};
constexpr const char* kPackages = "diatheke sword-text-kjv sword-text-web sword-text-sparv";
constexpr std::size_t kMinVerses = 30000;  // the Protestant canon has 31,102

bool on_path(const std::string& exe) {
  const char* path = std::getenv("PATH");
  if (path == nullptr) return false;
  std::string_view p(path);
  while (true) {
    const std::size_t colon = p.find(':');
    const std::string_view dir = p.substr(0, colon);
    const std::filesystem::path full =
        std::filesystem::path(dir.empty() ? std::string_view(".") : dir) / exe;
    if (::access(full.c_str(), X_OK) == 0) return true;
    if (colon == std::string_view::npos) return false;
    p.remove_prefix(colon + 1);
  }
}

std::string run_diatheke(const Module& m) {
  const std::string cmd =
      std::string("diatheke -b ") + m.name + " -f plain" + (m.footnotes ? " -o f" : "") +
      " -k 'Gen 1:1-Rev 22:21' 2>/dev/null";
  FILE* f = ::popen(cmd.c_str(), "r");
  if (f == nullptr) detail::throw_error("prepare_corpora: cannot run '", cmd, "' (", std::strerror(errno), ")");
  std::string out;
  char buf[1 << 16];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const bool read_err = std::ferror(f) != 0;
  const int status = ::pclose(f);
  TFM_CHECK(!read_err, "prepare_corpora: read error on the output of '", cmd, "'");
  TFM_CHECK(status != -1, "prepare_corpora: waiting for '", cmd, "' failed (", std::strerror(errno), ")");
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
    detail::throw_error("prepare_corpora: diatheke is not installed; install the Debian packages ", kPackages);
  TFM_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "prepare_corpora: '", cmd, "' failed (",
            WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                              : "killed by signal " + std::to_string(WIFSIGNALED(status) ? WTERMSIG(status) : 0),
            ")");
  return out;
}

std::vector<Verse> load_module(const Module& m) {
  const std::string raw = m.footnotes ? strip_footnotes(run_diatheke(m)) : run_diatheke(m);
  std::vector<Verse> verses = parse_diatheke_plain(raw, std::string("diatheke -b ") + m.name);
  TFM_CHECK(verses.size() >= kMinVerses, "prepare_corpora: SWORD module ", m.name, " gave ", verses.size(),
            " verses (expected about 31,000); is the Debian package ", m.package,
            " installed? (all needed: ", kPackages, ")");
  return verses;
}

void append_tsv_field(std::string& out, const std::string& s) {
  for (char c : s) out += (c == '\t' || c == '\n' || c == '\r') ? ' ' : c;
}

}  // namespace

void prepare_corpora(const std::string& cache_dir) {
  if (!on_path("diatheke"))
    detail::throw_error("prepare_corpora: diatheke is not installed (not found on PATH); install the Debian packages ",
                        kPackages);
  std::error_code ec;
  std::filesystem::create_directories(cache_dir, ec);
  TFM_CHECK(!ec, "prepare_corpora: cannot create directory ", cache_dir, " (", ec.message(), ")");

  const std::vector<Verse> kjv = load_module(kKJV);
  const std::vector<Verse> web = load_module(kWEB);
  const std::vector<Verse> rv = load_module(kRV);

  const std::string dir = cache_dir.empty() ? std::string(".") : cache_dir;
  const std::string lm = kjv_text(kjv);
  train::write_file_atomic(dir + "/kjv.txt", lm);
  std::cout << "kjv.txt: " << kjv.size() << " verses, " << lm.size() << " bytes\n";

  const std::vector<AlignedPair> keyed = align_verses_keyed(web, rv);
  const std::vector<AlignedPair> pairs = drop_renumbered_chapters(keyed, web, rv);
  std::string files[3];  // train, valid, test
  std::size_t counts[3] = {0, 0, 0};
  for (const AlignedPair& p : pairs) {
    const int s = static_cast<int>(split_of(p.key));
    append_tsv_field(files[s], p.src);
    files[s] += '\t';
    append_tsv_field(files[s], p.tgt);
    files[s] += '\n';
    ++counts[s];
  }
  const char* names[3] = {"en_es.train.tsv", "en_es.valid.tsv", "en_es.test.tsv"};
  std::cout << "en_es: " << pairs.size() << " pairs (" << keyed.size() << " aligned by key, "
            << keyed.size() - pairs.size() << " dropped in renumbered chapters; " << web.size() << " " << kWEB.name
            << " verses, " << rv.size() << " " << kRV.name << " verses)\n";
  for (int s = 0; s < 3; ++s) {
    train::write_file_atomic(dir + "/" + names[s], files[s]);
    std::cout << names[s] << ": " << counts[s] << " pairs, " << files[s].size() << " bytes\n";
  }
}

}  // namespace tfm::data
