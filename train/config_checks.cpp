// The checks around a config that look beyond its keys: files that must be
// regular files, keys a resumed run may not change, the memory a run will
// need, and the fingerprint of the data files (declared in config.h).
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "train/config.h"
#include "train/xxhash64.h"

namespace tfm::train {

namespace {
// "195", "3.38", "0.00311": whole GiB from 10 up, three significant digits below.
std::string fmt_gib(double bytes) {
  const double g = bytes / (1024.0 * 1024.0 * 1024.0);
  std::ostringstream os;
  if (g >= 10)
    os << std::fixed << std::setprecision(0) << g;
  else
    os << std::setprecision(3) << g;
  return os.str();
}

std::string fmt_num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
}  // namespace

void check_regular_file(const std::string& path, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  const char* problem = nullptr;
  switch (st.type()) {
    case fs::file_type::regular: return;
    case fs::file_type::not_found: problem = "no such file"; break;
    case fs::file_type::directory: problem = "is a directory"; break;
    case fs::file_type::fifo: problem = "is a FIFO (named pipe)"; break;
    case fs::file_type::character:
    case fs::file_type::block: problem = "is a device"; break;
    case fs::file_type::socket: problem = "is a socket"; break;
    default: problem = ec ? "cannot be examined" : "is not a regular file"; break;
  }
  detail::throw_error(what, ": ", path, ": ", problem, ec && st.type() != fs::file_type::not_found
                                                          ? " (" + ec.message() + ")" : std::string(),
                      "; expected a regular file");
}

void check_resume_overrides(const Config& stored, const std::vector<std::string>& overrides,
                            const std::string& origin) {
  Config changed = stored;
  for (const std::string& o : overrides) {
    const auto eq = o.find('=');
    TFM_CHECK(eq != std::string::npos && eq > 0, "--set '", o, "': expected KEY=VALUE, e.g. --set train.max_steps=100");
    const std::string k = o.substr(0, eq);
    changed.set(k, o.substr(eq + 1), "--set");
    const KeySpec* spec = find_key(k);
    TFM_CHECK(!spec->architecture || changed.get_string(k) == stored.get_string(k), "--set ", o, ": ", k,
              " is fixed by the checkpoint's weights and tokenizer (", origin, " was trained with ", k, " = ",
              stored.get_string(k), "); a resumed run may change training keys (train.*, optim.*, schedule.*, ",
              "model.dropout, ...) only. Start a new run (another train.out_dir) to change ", k);
  }
}

MemoryEstimate estimate_training_memory(const Config& c, int64_t vocab) {
  const double d = static_cast<double>(c.get_int("model.d_model")), h = static_cast<double>(c.get_int("model.n_heads"));
  const double f = c.get_int("model.d_ff") ? static_cast<double>(c.get_int("model.d_ff")) : 4 * d;
  const double t = static_cast<double>(c.get_int("model.block_size")), v = static_cast<double>(vocab);
  const bool swiglu = c.get_string("model.activation") == "swiglu";
  const bool bias = c.get_bool("model.bias");
  const double norm_params = (c.get_string("model.norm") == "layernorm" && bias ? 2 : 1) * d;
  const double ff_params = (swiglu ? 3 : 2) * d * f + (bias ? (swiglu ? 2 : 1) * f + d : 0) + norm_params;
  const double attn_params = 4 * d * d + (bias ? 4 * d : 0) + norm_params;
  const bool seq2seq = c.get_string("model.family") == "seq2seq";
  const bool tied = c.get_bool("model.tie_embeddings");
  MemoryEstimate e;
  double tokens = 0, layers = 0;  // tokens of one micro-batch, attention layers they pass
  if (!seq2seq) {
    const double l = static_cast<double>(c.get_int("model.n_layers"));
    e.params = v * d * (tied ? 1 : 2) + (c.get_string("model.positions") == "learned" ? t * d : 0) +
               l * (attn_params + ff_params) + norm_params;
    tokens = static_cast<double>(c.get_int("train.batch_size")) * t;
    layers = l;
  } else {
    const double le = static_cast<double>(c.get_int("model.enc_layers")), ld = static_cast<double>(c.get_int("model.dec_layers"));
    e.params = v * d * (c.get_bool("model.share_embeddings") ? 1 : 2) + (tied ? 0 : v * d) +
               le * (attn_params + ff_params) + ld * (2 * attn_params + ff_params) + 2 * norm_params +
               (c.get_string("model.positions") == "learned" ? 2 * t * d : 0);
    tokens = 2 * static_cast<double>(c.get_int("train.batch_tokens"));  // source and target
    layers = le + 2 * ld;
  }
  e.param_bytes = 4 * e.params;
  const std::string opt = c.get_string("optim.name");
  const double states = opt == "sgd" ? (c.get_float("optim.momentum") > 0 ? 1 : 0) : 2;
  e.optimizer_bytes = 4 * e.params * (1 + states);  // gradients and state
  // Per token and layer: the block's stored linear activations (~10·d plus
  // the feed-forward's hidden units), and the naive backend's scores and
  // probabilities (H·T each); per token once: the logits, their softmax and gradient.
  const bool naive = c.get_string("model.attention") == "naive" && c.get_string("model.attention_pattern").empty();
  const double per_layer = 10 * d + (swiglu ? 3 : 2) * f + (naive ? 2 * h * t : 0);
  const double stored_layers = c.get_bool("model.checkpoint_activations") ? 1 : layers;
  const double logit_tokens = seq2seq ? tokens / 2 : tokens;  // target tokens only
  e.activation_bytes =
      4 * tokens * (per_layer * stored_layers + (c.get_bool("model.checkpoint_activations") ? d * layers : 0)) +
      4 * logit_tokens * 3 * v;
  return e;
}

double physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0.0;
}

void check_training_memory(const Config& c) {
  const bool sp = c.get_string("data.tokenizer") == "sentencepiece";
  // A char vocabulary is not known before the data is read: 256 stands for it.
  // data.vocab_size = auto chooses at most data.vocab_max.
  const int64_t sp_vocab = vocab_size_setting(c) > 0 ? vocab_size_setting(c) : c.get_int("data.vocab_max");
  const MemoryEstimate e = estimate_training_memory(c, sp ? sp_vocab : 256);
  const double limit_gb = c.get_float("train.memory_limit_gb");
  const double limit = limit_gb > 0 ? limit_gb * 1024.0 * 1024.0 * 1024.0 : physical_memory_bytes();
  if (limit <= 0 || e.total() <= limit) return;
  const bool seq2seq = c.get_string("model.family") == "seq2seq";
  detail::throw_error(
      fmt_gib(e.total()), " GiB estimated for training, more than ",
      limit_gb > 0 ? "train.memory_limit_gb = " + fmt_num(limit_gb) : "the physical memory (" + fmt_gib(limit) + " GiB)",
      ": parameters ", fmt_gib(e.param_bytes), " GiB (", static_cast<long long>(e.params), " from model.d_model = ",
      c.get_int("model.d_model"), ", model.d_ff = ", c.get_int("model.d_ff"), ", ",
      seq2seq ? "model.enc_layers/dec_layers = " + std::to_string(c.get_int("model.enc_layers")) + "/" +
                    std::to_string(c.get_int("model.dec_layers"))
              : "model.n_layers = " + std::to_string(c.get_int("model.n_layers")),
      "), gradients and optimizer state ", fmt_gib(e.optimizer_bytes), " GiB (optim.name = ", c.get_string("optim.name"),
      "), activations ", fmt_gib(e.activation_bytes), " GiB (",
      seq2seq ? "train.batch_tokens = " + std::to_string(c.get_int("train.batch_tokens"))
              : "train.batch_size = " + std::to_string(c.get_int("train.batch_size")),
      ", model.block_size = ", c.get_int("model.block_size"),
      "). Make these smaller, or set train.memory_limit_gb to allow more");
}

std::string data_fingerprint(const Config& c) {
  std::string out;
  for (const char* k : {"data.path", "data.valid_path", "data.test_path"}) {
    const std::string& p = c.get_string(k);
    if (p.empty()) continue;
    out += (out.empty() ? "" : "; ") + std::string(k) + "=";
    std::ifstream in(p, std::ios::binary);
    if (!in || !std::filesystem::is_regular_file(p)) {
      out += "missing";
      continue;
    }
    Xxh64 h;
    uint64_t bytes = 0;
    std::vector<char> buf(1 << 16);
    while (in.read(buf.data(), static_cast<std::streamsize>(buf.size())) || in.gcount() > 0) {
      h.update(buf.data(), static_cast<std::size_t>(in.gcount()));
      bytes += static_cast<uint64_t>(in.gcount());
    }
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h.digest()));
    out += std::to_string(bytes) + ":" + hex;
  }
  return out;
}

std::vector<std::string> fingerprint_changes(const std::string& stored, const std::string& now) {
  auto entries = [](const std::string& f) {
    std::map<std::string, std::string> m;
    std::size_t pos = 0;
    while (pos < f.size()) {
      std::size_t end = f.find("; ", pos);
      if (end == std::string::npos) end = f.size();
      const std::string e = f.substr(pos, end - pos);
      if (const auto eq = e.find('='); eq != std::string::npos) m[e.substr(0, eq)] = e.substr(eq + 1);
      pos = end + 2;
    }
    return m;
  };
  auto describe = [](const std::string& v) {
    if (v.empty()) return std::string("not set");
    const auto colon = v.find(':');
    if (colon == std::string::npos) return v;
    return v.substr(0, colon) + " bytes, xxh64 " + v.substr(colon + 1);
  };
  const auto a = entries(stored), b = entries(now);
  std::vector<std::string> out;
  std::set<std::string> keys;
  for (const auto& [k, v] : a) keys.insert(k);
  for (const auto& [k, v] : b) keys.insert(k);
  for (const std::string& k : keys) {
    const std::string va = a.count(k) ? a.at(k) : "", vb = b.count(k) ? b.at(k) : "";
    if (va != vb) out.push_back(k + ": " + describe(va) + " when trained, " + describe(vb) + " now");
  }
  return out;
}

}  // namespace tfm::train
