#include "config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "core/error.h"
#include "layers/heads.h"

namespace tfm::train {

namespace {

constexpr double kInf = 1e300;

KeySpec key(std::string k, ValueType t, std::string def, std::string help, double lo = -kInf, double hi = kInf,
            bool hi_exclusive = false) {
  KeySpec s;
  s.key = std::move(k);
  s.type = t;
  s.default_value = std::move(def);
  s.min = lo;
  s.max = hi;
  s.max_exclusive = hi_exclusive;
  s.help = std::move(help);
  return s;
}

KeySpec choice(std::string k, std::string def, std::vector<std::string> choices, std::string help) {
  KeySpec s = key(std::move(k), ValueType::string, std::move(def), std::move(help));
  s.choices = std::move(choices);
  return s;
}

using V = ValueType;

std::vector<std::string> allowed_choices(const KeySpec& s) { return s.choices_from ? s.choices_from() : s.choices; }

// model.attention, its allowed values from the backend registry, followed
// by one model.attention_<option> key per backend option.
std::vector<KeySpec> attention_keys() {
  std::string help = "attention backend";
  const auto backends = layers::attention_backends();
  for (std::size_t i = 0; i < backends.size(); ++i)
    help += (i ? "; " : " (") + backends[i]->name + ": " + backends[i]->help;
  if (!backends.empty()) help += ")";
  KeySpec backend = choice("model.attention", "naive", {}, help);
  backend.choices_from = [] { return layers::attention_backend_names(); };
  std::vector<KeySpec> keys{backend};
  for (const layers::AttentionOptionSpec& o : layers::attention_option_specs()) {
    std::string readers;
    for (const auto& b : layers::attention_backends())
      if (std::find(b->reads.begin(), b->reads.end(), o.name) != b->reads.end())
        readers += (readers.empty() ? "" : ", ") + b->name;
    keys.push_back(key(o.config_key(), V::integer, std::to_string(o.default_value()),
                       o.help + (readers.empty() ? "; no built-in backend reads it yet"
                                                 : "; read by model.attention = " + readers),
                       static_cast<double>(o.min), static_cast<double>(o.max)));
  }
  keys.push_back(key("model.attention_pattern", V::string, "",
                     "per-layer backends, comma-separated, repeated over the layers (e.g. \"local, lsh\"); "
                     "empty: model.attention in every layer"));
  return keys;
}

std::vector<KeySpec> make_schema() {
  std::vector<KeySpec> s{
      // ---- model
      choice("model.family", "gpt", {"gpt", "seq2seq"}, "gpt: decoder-only LM; seq2seq: encoder-decoder translator"),
      key("model.n_layers", V::integer, "4", "number of blocks (gpt)", 1, 1024),
      key("model.enc_layers", V::integer, "3", "encoder blocks (seq2seq)", 1, 1024),
      key("model.dec_layers", V::integer, "3", "decoder blocks (seq2seq)", 1, 1024),
      key("model.n_heads", V::integer, "4", "attention heads; must divide model.d_model", 1, 1024),
      key("model.d_model", V::integer, "128", "model width", 1, 65536),
      key("model.d_ff", V::integer, "0", "feed-forward width; 0 means 4 * d_model", 0, 1 << 20),
      key("model.block_size", V::integer, "64", "context length (gpt) or longest sequence (seq2seq)", 1, 1 << 20),
      choice("model.positions", "learned", {"sinusoidal", "learned", "rope"},
             "position encoding: added sinusoidal table, learned embedding, or rotary on q/k"),
      key("model.rope_base", V::number, "10000", "rotary base frequency", 1, kInf),
      choice("model.norm", "layernorm", {"layernorm", "rmsnorm"}, "normalisation layer"),
      choice("model.norm_placement", "pre", {"pre", "post"}, "pre-norm (GPT-2) or post-norm (original Transformer)"),
      choice("model.activation", "gelu", {"relu", "gelu", "gelu_tanh", "swiglu"}, "feed-forward activation"),
      key("model.dropout", V::number, "0", "dropout on embeddings, residuals and attention probabilities", 0, 1, true),
      key("model.bias", V::boolean, "true", "biases in linear layers and layer norms"),
      key("model.tie_embeddings", V::boolean, "true", "output projection shares the (target) token embedding"),
      key("model.share_embeddings", V::boolean, "false", "seq2seq: one embedding for source and target"),
      key("model.fused_qkv", V::boolean, "true", "gpt: one fused q/k/v projection"),
      key("model.checkpoint_activations", V::boolean, "false",
          "recompute each block's forward in backward instead of storing its activations (less memory, ~1/3 more compute)"),
      key("model.reversible", V::boolean, "false",
          "gpt: reversible residual layers (two streams, inputs rebuilt from outputs in backward: activation memory "
          "of one layer whatever the depth; needs pre-norm)"),
      key("model.ff_chunks", V::integer, "1",
          "gpt: run the feed-forward on this many slices of the sequence, forward and backward (same result, "
          "about N times less feed-forward activation memory)",
          1, 1 << 20),
      // ---- data
      key("data.path", V::string, "", "UTF-8 text file (gpt) or TSV of source<TAB>target (seq2seq): the training data"),
      key("data.valid_path", V::string, "",
          "seq2seq: validation TSV; empty means the last data.valid_fraction of data.path"),
      key("data.test_path", V::string, "", "seq2seq: test TSV for `tfm eval --split test`"),
      choice("data.tokenizer", "char", {"char", "sentencepiece"}, "tokenizer trained on the training split"),
      key("data.vocab_size", V::string, "auto",
          "sentencepiece vocabulary size (per side when not joint): auto (the largest size up to data.vocab_max at "
          "which 90% of the learned pieces occur data.vocab_min_count times) or a number >= 8 (lowered with a "
          "warning when the text does not support it)"),
      key("data.vocab_max", V::integer, "8000", "largest vocabulary data.vocab_size = auto may choose", 8, 1 << 20),
      key("data.vocab_min_count", V::integer, "10",
          "how often a learned sentencepiece piece must occur in the training text to count as supported", 1, 1e9),
      choice("data.sp_model", "bpe", {"bpe", "unigram"}, "sentencepiece model type"),
      key("data.sp_split_digits", V::boolean, "true", "sentencepiece: every digit is its own piece"),
      key("data.sp_byte_fallback", V::boolean, "true",
          "sentencepiece: characters outside the vocabulary become UTF-8 byte pieces instead of the unknown piece (256 pieces)"),
      key("data.sp_character_coverage", V::number, "1", "sentencepiece: share of characters given their own piece",
          0, 1),
      key("data.sp_user_defined_symbols", V::string, "",
          "sentencepiece: comma-separated symbols that are always one piece (e.g. \"<sep>,@@\")"),
      key("data.joint_vocab", V::boolean, "true", "seq2seq: one sentencepiece vocabulary for source and target"),
      key("data.valid_fraction", V::number, "0.1", "fraction held out for validation (the end of a text file)", 0,
          0.5),
      choice("data.sampling", "random", {"random", "epoch"},
             "gpt batches: random windows, or epochs over windows without replacement"),
      // ---- optim
      choice("optim.name", "adamw", {"sgd", "adam", "adamw"}, "optimizer"),
      key("optim.lr", V::number, "0.001", "peak learning rate", 0, kInf),
      key("optim.beta1", V::number, "0.9", "Adam beta1", 0, 1, true),
      key("optim.beta2", V::number, "0.999", "Adam beta2", 0, 1, true),
      key("optim.eps", V::number, "1e-08", "Adam epsilon", 1e-30, 1),
      key("optim.weight_decay", V::number, "0", "weight decay (decoupled for adamw, L2 for sgd/adam)", 0, kInf),
      key("optim.momentum", V::number, "0", "SGD momentum", 0, 1, true),
      key("optim.nesterov", V::boolean, "false", "SGD Nesterov momentum"),
      key("optim.decay_vectors", V::boolean, "false", "apply weight decay to biases and norm weights"),
      key("optim.decay_embeddings", V::boolean, "true", "apply weight decay to embedding tables"),
      // ---- schedule
      choice("schedule.kind", "cosine", {"constant", "cosine", "inverse_sqrt", "linear"},
             "learning-rate schedule (all with linear warmup)"),
      key("schedule.warmup_steps", V::integer, "0", "linear warmup steps", 0, 1e12),
      key("schedule.min_lr", V::number, "0", "floor reached at the end of cosine/linear decay", 0, kInf),
      key("schedule.total_steps", V::integer, "0", "steps of the decay; 0 means train.max_steps", 0, 1e12),
      // ---- train
      key("train.max_steps", V::integer, "2000", "optimizer steps to train", 1, 1e12),
      key("train.batch_size", V::integer, "12", "sequences per micro-batch (gpt)", 1, 1 << 20),
      key("train.batch_tokens", V::integer, "4096", "target tokens per micro-batch (seq2seq)", 1, 1e9),
      key("train.grad_accum", V::integer, "1", "micro-batches per optimizer step", 1, 1 << 16),
      key("train.grad_clip", V::number, "1", "clip gradients to this global L2 norm; 0 disables", 0, kInf),
      key("train.label_smoothing", V::number, "0", "label smoothing of the training loss", 0, 1, true),
      key("train.eval_every", V::integer, "250", "evaluate every N steps and at the last step; 0 never", 0, 1e12),
      key("train.eval_steps", V::integer, "20", "validation batches per evaluation", 1, 1e9),
      key("train.log_every", V::integer, "10", "log every N steps", 1, 1e12),
      key("train.checkpoint_every", V::integer, "500", "checkpoint every N steps; 0 only at the end", 0, 1e12),
      key("train.keep_last", V::integer, "3", "numbered checkpoints to keep (plus best.h5 and last.h5)", 0, 1e6),
      key("train.out_dir", V::string, "runs/default", "run directory: logs, metrics, checkpoints"),
      key("train.seed", V::integer, "1337", "seed for initialisation, data order and dropout", 0, 9.2e18),
      key("train.threads", V::integer, "0", "threads of tfm's team; 0 means OMP_NUM_THREADS or all cores", 0, 4096),
      key("train.allreduce_bucket_mb", V::number, "25",
          "MPI runs: gradients are summed across ranks in buckets of about this many MiB, each started as soon as "
          "its gradients are final in backward",
          0.001, 1e6),
      key("train.collective_timeout_s", V::number, "300",
          "MPI runs: a collective (also waiting for rank 0's evaluation and checkpoint) that takes longer aborts "
          "the job naming it",
          0.001, 1e9),
      key("train.shard_optimizer", V::boolean, "false",
          "MPI runs: ZeRO-1, each rank keeps and updates the optimizer state of its share of the parameters, "
          "which are then all-gathered"),
      key("train.profile", V::integer, "0",
          "time N training steps (after the first) per op kind and log the table; 0 off", 0, 1e12),
      key("train.memory_check", V::boolean, "true",
          "seq2seq: before the first step, forward and backward of the run's batches that need the most memory "
          "(gradients discarded), so peak memory is reached at the start and a run that does not fit fails at once"),
      key("train.skip_nonfinite", V::boolean, "false",
          "skip a step whose loss or gradient is not finite instead of stopping"),
      key("train.eval_bleu", V::boolean, "false", "seq2seq: also compute validation BLEU (greedy decoding) at each evaluation"),
      key("train.eval_bleu_sentences", V::integer, "500", "seq2seq: validation sentences translated for BLEU", 1, 1e9),
      choice("train.best_metric", "val_loss", {"val_loss", "val_bleu", "val_chrf", "val_exact"},
             "what best.h5 follows (val_bleu, val_chrf and val_exact need train.eval_bleu)"),
      key("train.memory_limit_gb", V::number, "0",
          "refuse a run whose estimated memory (parameters, optimizer state, activations) exceeds this many GiB; "
          "0 means the physical memory",
          0, kInf),
  };
  // The keys a checkpoint's weights and tokenizer fix: a resumed run may not
  // change them (training, evaluation and data-order keys it may).
  static const std::set<std::string> architecture{
      "model.family",       "model.n_layers",       "model.enc_layers",   "model.dec_layers",
      "model.n_heads",      "model.d_model",        "model.d_ff",         "model.block_size",
      "model.positions",    "model.rope_base",      "model.norm",         "model.norm_placement",
      "model.activation",   "model.bias",           "model.tie_embeddings", "model.share_embeddings",
      "model.fused_qkv",    "data.tokenizer",       "data.vocab_size",    "data.sp_model",
      "data.joint_vocab"};
  for (KeySpec& k : s) k.architecture = architecture.count(k.key) > 0;
  const auto after = std::find_if(s.begin(), s.end(), [](const KeySpec& k) { return k.key == "model.activation"; });
  const std::vector<KeySpec> attention = attention_keys();
  s.insert(after + 1, attention.begin(), attention.end());
  return s;
}

std::string type_name(ValueType t) {
  switch (t) {
    case V::integer: return "int";
    case V::number: return "float";
    case V::boolean: return "bool";
    case V::string: return "string";
  }
  return "?";
}

std::string fmt_num(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

std::string allowed_text(const KeySpec& s) {
  if (const std::vector<std::string> choices = allowed_choices(s); !choices.empty()) {
    std::string out = "one of ";
    for (std::size_t i = 0; i < choices.size(); ++i) out += (i ? ", " : "") + choices[i];
    return out;
  }
  if (s.type == V::boolean) return "true or false";
  if (s.type == V::string) return "any text";
  std::string out = type_name(s.type);
  if (s.min > -kInf) out += " >= " + fmt_num(s.min);
  if (s.max < kInf) out += std::string(s.min > -kInf ? " and " : " ") + (s.max_exclusive ? "< " : "<= ") + fmt_num(s.max);
  return out;
}

// Checks `text` against the spec and returns its canonical form, or throws
// "<where>: <key> = <text>: expected <allowed>".
std::string canonical(const KeySpec& s, const std::string& text, const std::string& where) {
  auto fail = [&]() -> std::string {
    detail::throw_error(where, ": ", s.key, " = '", text, "' is not allowed (expected ", allowed_text(s), ")");
  };
  switch (s.type) {
    case V::integer: {
      int64_t v = 0;
      auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc() || p != text.data() + text.size()) return fail();
      if (static_cast<double>(v) < s.min || static_cast<double>(v) > s.max) return fail();
      return std::to_string(v);
    }
    case V::number: {
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(v)) return fail();
      if (v < s.min || v > s.max || (s.max_exclusive && v >= s.max)) return fail();
      std::ostringstream os;
      os.precision(9);
      os << v;
      return os.str();
    }
    case V::boolean:
      if (text == "true" || text == "false") return text;
      return fail();
    case V::string:
      if (const std::vector<std::string> choices = allowed_choices(s);
          !choices.empty() && std::find(choices.begin(), choices.end(), text) == choices.end())
        return fail();
      return text;
  }
  return fail();
}

// The attention backend can do what the model family and the other keys ask,
// and reads every model.attention_* key that is not at its default.
void validate_attention(const Config& c) {
  const std::string& attention = c.get_string("model.attention");
  const std::vector<std::string> pattern = layers::parse_attention_pattern(c.get_string("model.attention_pattern"));
  TFM_CHECK(pattern.empty() || attention == find_key("model.attention")->default_value, "model.attention = ",
            attention, " and model.attention_pattern = '", c.get_string("model.attention_pattern"),
            "' both choose the backend; set only one of them");
  const std::string& family = c.get_string("model.family");
  for (const std::string& name : layers::attention_backends_used(attention, pattern)) {
    layers::AttentionFeatures needed;
    needed.causal = true;
    needed.key_padding = needed.cross_attention = family == "seq2seq";
    layers::check_attention_support(name, needed, "model.family = " + family);
    needed = {};
    needed.dropout = c.get_float("model.dropout") > 0;
    layers::check_attention_support(name, needed, "model.dropout > 0");
    needed = {};
    needed.kv_cache = family == "seq2seq" && c.get_bool("train.eval_bleu");
    layers::check_attention_support(name, needed, "train.eval_bleu = true (greedy decoding)");
  }
  layers::check_attention_options(attention, pattern, attention_options(c));
}

std::string unknown_key_message(const std::string& where, const std::string& k) {
  const std::string hint = closest_key(k);
  return where + ": unknown key '" + k + "'" + (hint.empty() ? "" : " (did you mean '" + hint + "'?)") +
         "; `tfm help-config` lists every key";
}

// The first schema key under `section`, without the section ("n_layers" for "model").
std::string closest_section_key(const std::string& section) {
  for (const KeySpec& s : schema())
    if (s.key.rfind(section + ".", 0) == 0) return s.key.substr(section.size() + 1);
  return "";
}

std::string location(const std::string& origin, const YAML::Mark& m) {
  return origin + ":" + std::to_string(m.line + 1);
}

// Flattens a YAML mapping into dotted keys, validating each as it goes.
void walk(const YAML::Node& node, const std::string& prefix, const std::string& origin,
          std::map<std::string, std::string>& out) {
  std::map<std::string, int> first_line;  // key -> line (1-based) of its first appearance in this mapping
  for (const auto& kv : node) {
    const YAML::Node k = kv.first, value = kv.second;  // copies: handles, not temporaries
    const std::string name = k.as<std::string>();
    const std::string full = prefix.empty() ? name : prefix + "." + name;
    const std::string where = location(origin, k.Mark());
    if (const auto [it, fresh] = first_line.emplace(name, k.Mark().line + 1); !fresh)
      detail::throw_error(where, ": duplicate key '", full, "' (first given at line ", it->second,
                          "); give each key once");
    bool is_section = false;
    for (const KeySpec& s : schema()) is_section |= s.key.rfind(full + ".", 0) == 0;
    if (value.IsMap()) {
      if (!is_section) detail::throw_error(unknown_key_message(where, full));
      walk(value, full, origin, out);
      continue;
    }
    const KeySpec* spec = find_key(full);
    if (!spec && is_section) {
      if (value.IsNull()) continue;  // an empty section ("model:" with nothing under it)
      detail::throw_error(where, ": '", full, "' is a section: it must be a mapping of keys (e.g. ", full, ": {",
                          closest_section_key(full), ": ...}), got ",
                          value.IsScalar() ? "'" + value.Scalar() + "'" : std::string("a list"));
    }
    if (!spec) detail::throw_error(unknown_key_message(where, full));
    if (!value.IsScalar())
      detail::throw_error(where, ": ", full, " must be a single value (expected ", allowed_text(*spec), ")");
    out[full] = canonical(*spec, value.Scalar(), where);
  }
}

}  // namespace

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

const std::vector<KeySpec>& schema() {
  static const std::vector<KeySpec> s = make_schema();
  return s;
}

const KeySpec* find_key(const std::string& k) {
  for (const KeySpec& s : schema())
    if (s.key == k) return &s;
  return nullptr;
}

std::string closest_key(const std::string& k) {
  std::string best;
  std::size_t best_d = std::numeric_limits<std::size_t>::max();
  auto consider = [&](const std::string& candidate, std::size_t d) {
    if (d < best_d) best_d = d, best = candidate;
  };
  for (const KeySpec& s : schema()) {
    const std::string section = s.key.substr(0, s.key.find('.'));
    if (k.find('.') == std::string::npos) {  // a section name
      consider(section, edit_distance(k, section));
      continue;
    }
    // Compare whole keys, and the last component alone (a key in the wrong section).
    const std::string tail = s.key.substr(section.size() + 1);
    const std::string ktail = k.substr(k.find('.') + 1);
    consider(s.key, std::min(edit_distance(k, s.key), edit_distance(ktail, tail) + 1));
  }
  return best_d <= std::max<std::size_t>(2, k.size() / 3) ? best : "";
}

Config::Config() {
  for (const KeySpec& s : schema()) values_[s.key] = s.default_value;
}

Config Config::parse(const std::string& text, const std::string& origin, const std::vector<std::string>& overrides) {
  Config c;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    detail::throw_error(location(origin, e.mark), ": YAML syntax error: ", e.msg);
  }
  if (root.IsDefined() && !root.IsNull()) {
    if (!root.IsMap()) detail::throw_error(origin, ": a config must be a mapping of sections (model:, data:, ...)");
    std::map<std::string, std::string> values;
    try {
      walk(root, "", origin, values);
    } catch (const YAML::Exception& e) {
      detail::throw_error(location(origin, e.mark), ": ", e.msg);
    }
    for (auto& [k, v] : values) c.values_[k] = v;
  }
  for (const std::string& o : overrides) {
    const auto eq = o.find('=');
    TFM_CHECK(eq != std::string::npos && eq > 0, "--set '", o, "': expected KEY=VALUE, e.g. --set train.max_steps=100");
    c.set(o.substr(0, eq), o.substr(eq + 1), "--set");
  }
  return c;
}

Config Config::load(const std::string& path, const std::vector<std::string>& overrides) {
  check_regular_file(path, "config file");
  std::ifstream in(path, std::ios::binary);
  TFM_CHECK(in.good(), "config file: ", path, ": cannot open it (permission denied?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path, overrides);
}

void Config::set(const std::string& k, const std::string& value, const std::string& origin) {
  const KeySpec* spec = find_key(k);
  if (!spec) detail::throw_error(unknown_key_message(origin, k));
  values_[k] = canonical(*spec, value, origin);
}

int64_t Config::get_int(const std::string& k) const { return std::stoll(get_string(k)); }
double Config::get_float(const std::string& k) const { return std::stod(get_string(k)); }
bool Config::get_bool(const std::string& k) const { return get_string(k) == "true"; }
const std::string& Config::get_string(const std::string& k) const {
  auto it = values_.find(k);
  TFM_CHECK(it != values_.end(), "config: no key '", k, "'");
  return it->second;
}

std::string Config::to_yaml() const {
  std::ostringstream os;
  std::string section;
  for (const KeySpec& s : schema()) {
    const std::string sec = s.key.substr(0, s.key.find('.'));
    if (sec != section) {
      os << sec << ":\n";
      section = sec;
    }
    const std::string& v = values_.at(s.key);
    const bool quote = s.type == V::string && (v.empty() || v.find_first_of(":#'\"{}[],&*!|>%@`") != std::string::npos ||
                                               v.front() == ' ' || v.back() == ' ');
    os << "  " << s.key.substr(sec.size() + 1) << ": ";
    if (quote) {
      os << '"';
      for (char ch : v) os << (ch == '"' || ch == '\\' ? std::string("\\") + ch : std::string(1, ch));
      os << '"';
    } else {
      os << v;
    }
    os << "\n";
  }
  return os.str();
}

void Config::validate() const {
  const int64_t d = get_int("model.d_model"), h = get_int("model.n_heads");
  layers::head_dim(d, h, "model.d_model", "model.n_heads");
  if (get_string("model.positions") == "rope")
    TFM_CHECK((d / h) % 2 == 0, "model.positions = rope needs an even head size (model.d_model / model.n_heads = ",
              d / h, ")");
  if (get_string("model.positions") == "sinusoidal")
    TFM_CHECK(d % 2 == 0, "model.positions = sinusoidal needs an even model.d_model, got ", d);
  const std::string kind = get_string("schedule.kind");
  const int64_t total = get_int("schedule.total_steps") ? get_int("schedule.total_steps") : get_int("train.max_steps");
  const int64_t warmup = get_int("schedule.warmup_steps");
  if (kind == "cosine" || kind == "linear")
    TFM_CHECK(total > warmup, "schedule.warmup_steps (", warmup, ") must be below the decay length (",
              "schedule.total_steps or train.max_steps = ", total, ")");
  if (kind == "inverse_sqrt") TFM_CHECK(warmup > 0, "schedule.kind = inverse_sqrt needs schedule.warmup_steps > 0");
  TFM_CHECK(get_float("schedule.min_lr") <= get_float("optim.lr"), "schedule.min_lr (", get_float("schedule.min_lr"),
            ") must not exceed optim.lr (", get_float("optim.lr"), ")");
  TFM_CHECK(get_string("optim.name") != "sgd" || !get_bool("optim.nesterov") || get_float("optim.momentum") > 0,
            "optim.nesterov needs optim.momentum > 0");
  const std::string path = get_string("data.path");
  TFM_CHECK(!path.empty(), "data.path is required: a UTF-8 text file (gpt) or a TSV file (seq2seq)");
  for (const char* k : {"data.path", "data.valid_path", "data.test_path"})
    if (const std::string& p = get_string(k); !p.empty()) check_regular_file(p, k);
  const bool seq2seq = get_string("model.family") == "seq2seq";
  // No validation split at all: evaluation (and best.h5) has nothing to read.
  if (get_float("data.valid_fraction") == 0 && get_int("train.eval_every") > 0)
    TFM_CHECK(seq2seq && !get_string("data.valid_path").empty(), "data.valid_fraction = 0 holds out no validation ",
              "data, but train.eval_every = ", get_int("train.eval_every"), " asks for evaluations; set ",
              seq2seq ? "data.valid_path, " : "", "data.valid_fraction > 0 (up to 0.5) or train.eval_every = 0");
  TFM_CHECK(!seq2seq || get_string("data.tokenizer") == "sentencepiece",
            "model.family = seq2seq needs data.tokenizer = sentencepiece");
  TFM_CHECK(seq2seq || get_string("data.tokenizer") == "char", "model.family = gpt supports data.tokenizer = char");
  TFM_CHECK(seq2seq || !get_bool("train.eval_bleu"), "train.eval_bleu needs model.family = seq2seq");
  TFM_CHECK(get_string("train.best_metric") == "val_loss" || get_bool("train.eval_bleu"), "train.best_metric = ",
            get_string("train.best_metric"), " needs train.eval_bleu = true (greedy translations of the validation set)");
  vocab_size_setting(*this);  // "auto" or a number in range
  validate_attention(*this);
}

int64_t vocab_size_setting(const Config& cfg) {
  const std::string& v = cfg.get_string("data.vocab_size");
  if (v == "auto") return 0;
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  TFM_CHECK(!v.empty() && end && *end == '\0' && n >= 8 && n <= (1 << 20), "data.vocab_size = '", v,
            "': allowed are auto or an integer >= 8 and <= 1048576");
  return n;
}

layers::AttentionBackendOptions attention_options(const Config& cfg) {
  layers::AttentionBackendOptions o;
  for (const layers::AttentionOptionSpec& s : layers::attention_option_specs()) o.*s.field = cfg.get_int(s.config_key());
  return o;
}

std::string help_text() {
  std::ostringstream os;
  os << "tfm configuration keys (YAML sections; override any with --set KEY=VALUE)\n";
  std::string section;
  for (const KeySpec& s : schema()) {
    const std::string sec = s.key.substr(0, s.key.find('.'));
    if (sec != section) os << "\n" << sec << ":\n", section = sec;
    os << "  " << s.key << "\n      " << s.help << "\n      " << type_name(s.type) << ", default "
       << (s.default_value.empty() ? "(none)" : s.default_value) << "; allowed: " << allowed_text(s) << "\n";
  }
  return os.str();
}

std::string help_markdown() {
  std::ostringstream os;
  os << "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n";
  for (const KeySpec& s : schema())
    os << "| `" << s.key << "` | " << type_name(s.type) << " | " << (s.default_value.empty() ? "—" : s.default_value)
       << " | " << allowed_text(s) << " | " << s.help << " |\n";
  return os.str();
}

}  // namespace tfm::train
