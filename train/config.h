// Run configuration: one YAML file describes a run.
//
// A single schema table (schema()) lists every key with its type, default,
// allowed values or range, and help. The same table drives parsing,
// validation, `--set a.b=value` overrides, `tfm help-config` and the README's
// config reference. Unknown keys are rejected with file:line and the closest
// valid key; wrong types and out-of-range values name the key, the value
// and what is allowed. Everything is validated before anything is allocated.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "layers/attention_backend.h"

namespace tfm::train {

enum class ValueType { integer, number, boolean, string };

struct KeySpec {
  std::string key;                   // dotted: "model.n_layers"
  ValueType type;
  std::string default_value;         // canonical text
  std::vector<std::string> choices;  // allowed strings (empty: any)
  // When set, the allowed strings are asked for at every check instead
  // (model.attention: the attention backend registry's names).
  std::function<std::vector<std::string>()> choices_from;
  double min = -1e300, max = 1e300;  // inclusive numeric range
  bool max_exclusive = false;
  std::string help;
};

const std::vector<KeySpec>& schema();
const KeySpec* find_key(const std::string& key);

class Config {
 public:
  // Defaults for every key.
  Config();
  // Parses YAML text (origin names the file in messages), then applies
  // overrides of the form "a.b=value". Throws tfm::Error.
  static Config parse(const std::string& yaml_text, const std::string& origin,
                      const std::vector<std::string>& overrides = {});
  static Config load(const std::string& path, const std::vector<std::string>& overrides = {});

  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  // Sets one key from text, validating it like a file value.
  void set(const std::string& key, const std::string& value, const std::string& origin = "--set");

  // Every key, grouped by section, as YAML that parse() reads back.
  std::string to_yaml() const;

  // Cross-key checks (e.g. d_model divisible by n_heads, data file exists).
  // Throws tfm::Error naming the keys involved.
  void validate() const;

 private:
  std::map<std::string, std::string> values_;
};

// data.vocab_size: 0 for auto, else the number; throws naming the key when
// it is neither.
int64_t vocab_size_setting(const Config& cfg);

// The model.attention_* keys as backend options (model configs carry them).
layers::AttentionBackendOptions attention_options(const Config& cfg);

// The `tfm help-config` text: every key with its type, default, allowed
// values and meaning.
std::string help_text();
// The same as a Markdown table (for the README).
std::string help_markdown();

// Levenshtein distance between two byte strings (insertions, deletions and
// substitutions of one byte each cost 1).
std::size_t edit_distance(const std::string& a, const std::string& b);

// Closest schema key to `key` (edit distance), or "" when nothing is close.
std::string closest_key(const std::string& key);

}  // namespace tfm::train
