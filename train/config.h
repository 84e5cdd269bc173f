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
  // Fixed by a checkpoint's weights or tokenizer (model shape and function,
  // tokenizer keys): a resumed run refuses to change it.
  bool architecture = false;
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
// Throws "<what>: <path>: <problem>" unless `path` names a regular file
// (not a directory, FIFO or device) that exists: `what` is the key or flag.
void check_regular_file(const std::string& path, const std::string& what);

// Refuses a resumed run's --set overrides that change an architecture key
// (KeySpec::architecture) from its value in the checkpoint's config, naming
// the key, both values and `origin` (the checkpoint).
void check_resume_overrides(const Config& stored, const std::vector<std::string>& overrides,
                            const std::string& origin);

// An estimate of the bytes a training run of `cfg` needs: parameters
// (counted exactly for both families), gradients, optimizer state and the
// stored activations of one micro-batch (blocks, naive attention scores,
// logits) for a vocabulary of `vocab` tokens.
struct MemoryEstimate {
  double params = 0, param_bytes = 0, optimizer_bytes = 0, activation_bytes = 0;
  double total() const { return param_bytes + optimizer_bytes + activation_bytes; }
};
MemoryEstimate estimate_training_memory(const Config& cfg, int64_t vocab);
// Physical memory of this machine in bytes (0 if unknown).
double physical_memory_bytes();
// Refuses a config whose estimate exceeds train.memory_limit_gb (0: the
// physical memory), naming the estimate, its parts and the keys that drive it.
void check_training_memory(const Config& cfg);

// The data files' fingerprint, stored in every checkpoint: one entry
// "<key>=<bytes>:<xxh64 hex>" for each non-empty data.path, data.valid_path
// and data.test_path, joined by "; " (a missing file reads "<key>=missing").
std::string data_fingerprint(const Config& cfg);
// The entries that differ between two fingerprints, one line each:
// "data.path: 4096 bytes, xxh64 0123... when trained, 100 bytes, xxh64 ... now".
std::vector<std::string> fingerprint_changes(const std::string& stored, const std::string& now);

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
