#include "attention_backend.h"

#include <algorithm>
#include <mutex>

#include "core/error.h"
#include "layers/attention.h"
#include "layers/local_attention.h"
#include "layers/lsh_attention.h"

namespace tfm::layers {

namespace {

// The built-in backends, registered when the registry is first used. One
// line per backend: its file defines the function returning its info.
std::vector<AttentionBackendInfo> builtin_attention_backends() {
  return {
      naive_attention_backend(),
      flash_attention_backend(),
      lsh_attention_backend(),
      local_attention_backend(),
  };
}

struct Registry {
  std::mutex mutex;
  std::vector<std::shared_ptr<const AttentionBackendInfo>> backends;
};

void add_locked(Registry& r, AttentionBackendInfo info) {
  TFM_CHECK(!info.name.empty(), "register_attention_backend: the name must not be empty");
  TFM_CHECK(static_cast<bool>(info.make), "register_attention_backend: backend '", info.name, "' has no factory");
  for (const auto& b : r.backends)
    TFM_CHECK(b->name != info.name, "register_attention_backend: a backend named '", info.name,
              "' is already registered");
  for (const std::string& opt : info.reads) {
    const auto& specs = attention_option_specs();
    TFM_CHECK(std::any_of(specs.begin(), specs.end(), [&](const AttentionOptionSpec& s) { return s.name == opt; }),
              "register_attention_backend: backend '", info.name, "' reads unknown option '", opt, "'");
  }
  TFM_CHECK(!(info.shared_qk && info.supports.cross_attention), "register_attention_backend: backend '", info.name,
            "' shares the query/key projection, so it cannot do cross-attention");
  r.backends.push_back(std::make_shared<const AttentionBackendInfo>(std::move(info)));
}

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;  // never destroyed: lookups may run during static destruction
    for (AttentionBackendInfo& info : builtin_attention_backends()) add_locked(*reg, std::move(info));
    return reg;
  }();
  return *r;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

// Names of the backends for which pred(info) holds, or "none" when there are none.
template <class Pred>
std::string backends_where(Pred pred) {
  std::vector<std::string> names;
  for (const auto& b : attention_backends())
    if (pred(*b)) names.push_back(b->name);
  return names.empty() ? std::string("none of the registered backends") : join(names);
}

}  // namespace

const std::vector<AttentionOptionSpec>& attention_option_specs() {
  using O = AttentionBackendOptions;
  static const std::vector<AttentionOptionSpec> specs = {
      {"chunk_length", &O::chunk_length, 1, 1 << 20, "keys per chunk (chunked and LSH attention)"},
      {"n_hashes", &O::n_hashes, 1, 64, "hashing rounds (LSH attention)"},
      {"n_buckets", &O::n_buckets, 0, 1 << 20,
       "buckets per hashing round (LSH attention); 0 derives it from the length and chunk length"},
      {"q_tile", &O::q_tile, 1, 1024, "query rows per tile (flash attention)"},
      {"kv_tile", &O::kv_tile, 1, 4096, "keys per score tile (flash attention)"},
  };
  return specs;
}

std::string describe(const AttentionFeatures& f) {
  std::vector<std::string> parts;
  if (f.causal) parts.push_back("causal masks");
  if (f.key_padding) parts.push_back("key-padding masks");
  if (f.cross_attention) parts.push_back("cross-attention");
  if (f.kv_cache) parts.push_back("a KV cache (incremental decoding)");
  if (f.dropout) parts.push_back("attention dropout");
  return join(parts);
}

void register_attention_backend(AttentionBackendInfo info) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  add_locked(r, std::move(info));
}

std::vector<std::shared_ptr<const AttentionBackendInfo>> attention_backends() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  return r.backends;
}

std::vector<std::string> attention_backend_names() {
  std::vector<std::string> names;
  for (const auto& b : attention_backends()) names.push_back(b->name);
  return names;
}

std::shared_ptr<const AttentionBackendInfo> find_attention_backend(const std::string& name) {
  for (const auto& b : attention_backends())
    if (b->name == name) return b;
  return nullptr;
}

std::shared_ptr<const AttentionBackendInfo> attention_backend_info(const std::string& name) {
  auto info = find_attention_backend(name);
  if (!info)
    detail::throw_error("model.attention = '", name, "' is not allowed (expected one of ",
                        join(attention_backend_names()), ")");
  return info;
}

namespace {

bool reads(const AttentionBackendInfo& b, const std::string& option) {
  return std::find(b.reads.begin(), b.reads.end(), option) != b.reads.end();
}

// Ranges, and every option not at its default read by one of `names`.
void check_option_values(const std::vector<std::string>& names, const AttentionBackendOptions& options,
                         const std::string& what) {
  std::vector<std::shared_ptr<const AttentionBackendInfo>> infos;
  for (const std::string& n : names) infos.push_back(attention_backend_info(n));
  for (const AttentionOptionSpec& s : attention_option_specs()) {
    const int64_t v = options.*s.field;
    TFM_CHECK(v >= s.min && v <= s.max, s.config_key(), " = ", v, " is not allowed (expected int >= ", s.min,
              " and <= ", s.max, ")");
    const bool read = std::any_of(infos.begin(), infos.end(), [&](const auto& b) { return reads(*b, s.name); });
    TFM_CHECK(read || v == s.default_value(), s.config_key(), " = ", v, " has no effect with ", what,
              " (it is read by ", backends_where([&](const AttentionBackendInfo& b) { return reads(b, s.name); }),
              "); remove it or choose one of those backends");
  }
}

}  // namespace

void check_attention_options(const std::string& attention, const std::vector<std::string>& pattern,
                             const AttentionBackendOptions& options) {
  const std::vector<std::string> names = attention_backends_used(attention, pattern);
  check_option_values(names, options,
                      pattern.empty() ? "model.attention = " + attention : "model.attention_pattern = " + join(pattern));
  for (const std::string& n : names) make_attention_backend(n, options_read_by(n, options));
}

AttentionBackendOptions options_read_by(const std::string& name, const AttentionBackendOptions& options) {
  const auto info = attention_backend_info(name);
  AttentionBackendOptions out = options;
  for (const AttentionOptionSpec& s : attention_option_specs())
    if (!reads(*info, s.name)) out.*s.field = s.default_value();
  return out;
}

std::vector<std::string> parse_attention_pattern(const std::string& text) {
  std::vector<std::string> out;
  if (text.find_first_not_of(" \t") == std::string::npos) return out;
  std::size_t begin = 0;
  while (true) {
    const std::size_t end = std::min(text.find(',', begin), text.size());
    std::string name = text.substr(begin, end - begin);
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    TFM_CHECK(find_attention_backend(name) != nullptr, "model.attention_pattern = '", text, "': '", name,
              "' is not a backend (expected comma-separated names from: ", join(attention_backend_names()), ")");
    out.push_back(name);
    if (end == text.size()) break;
    begin = end + 1;
  }
  return out;
}

std::string attention_backend_of_layer(const std::string& attention, const std::vector<std::string>& pattern,
                                       int64_t layer) {
  return pattern.empty() ? attention : pattern[static_cast<std::size_t>(layer) % pattern.size()];
}

std::vector<std::string> attention_backends_used(const std::string& attention,
                                                 const std::vector<std::string>& pattern) {
  if (pattern.empty()) return {attention};
  std::vector<std::string> out;
  for (const std::string& n : pattern)
    if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  return out;
}

std::shared_ptr<AttentionBackend> make_attention_backend(const std::string& name,
                                                         const AttentionBackendOptions& options) {
  const auto info = attention_backend_info(name);
  check_option_values({name}, options, "model.attention = " + name);
  auto backend = info->make(options);
  TFM_CHECK(backend != nullptr, "attention backend '", name, "': its factory returned nothing");
  return backend;
}

void check_attention_support(const std::string& name, const AttentionFeatures& needed, const std::string& who) {
  const auto info = attention_backend_info(name);
  const AttentionFeatures& has = info->supports;
  for (bool AttentionFeatures::*flag : {&AttentionFeatures::causal, &AttentionFeatures::key_padding,
                                        &AttentionFeatures::cross_attention, &AttentionFeatures::kv_cache,
                                        &AttentionFeatures::dropout}) {
    if (!(needed.*flag) || has.*flag) continue;
    AttentionFeatures one;
    one.*flag = true;
    detail::throw_error("model.attention = ", name, " does not support ", describe(one), ", which ", who,
                        " needs (backends that do: ",
                        backends_where([&](const AttentionBackendInfo& b) { return b.supports.*flag; }), ")");
  }
}

}  // namespace tfm::layers
