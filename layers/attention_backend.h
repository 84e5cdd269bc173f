// Attention backends: the interface, their options, what each supports, and
// the registry that makes them by name.
//
// Shapes: B batch, H heads, Tq query steps, Tk key steps, Dh head dim.
//
// The registry is filled lazily on first use from one explicit list of
// built-in backends (attention_backend.cpp: builtin_attention_backends()),
// never by self-registering static initialisers: those live in object files
// nothing references, which the linker drops from a static library. Adding a
// backend is its file plus one line in that list. Tests (and programs) may
// add more at run time with register_attention_backend().
//
// Config keys: the backend is model.attention (allowed values: the
// registry's names); every option below is model.attention_<name>. A
// backend declares which options it reads, and setting an option it does not
// read to a non-default value is an error naming the key and the backends
// that read it, so nothing is silently ignored. Errors raised here name the
// config keys because the keys are derived from these tables.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/attention_mask.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace tfm::layers {

using core::AttentionMask;
using core::Tensor;

// Every option any backend may read, with its default. Integers only.
struct AttentionBackendOptions {
  int64_t chunk_length = 64;  // lsh, local: keys per chunk
  int64_t n_hashes = 1;       // lsh: hashing rounds
  int64_t n_buckets = 0;      // lsh: buckets per round; 0 = derived from the length and chunk_length
  int64_t q_tile = 64;        // flash: query rows per work item
  int64_t kv_tile = 256;      // flash: keys per score tile
};

// One row per option: drives the config keys, their validation and the
// "who reads it" checks. min/max are inclusive.
struct AttentionOptionSpec {
  std::string name;  // config key model.attention_<name>
  int64_t AttentionBackendOptions::*field;
  int64_t min, max;
  std::string help;
  int64_t default_value() const { return AttentionBackendOptions{}.*field; }
  std::string config_key() const { return "model.attention_" + name; }
};
const std::vector<AttentionOptionSpec>& attention_option_specs();

// Features a model may need from its attention; as capabilities, what a
// backend can do.
struct AttentionFeatures {
  bool causal = false;           // AttentionMask::causal (with q_offset)
  bool key_padding = false;      // AttentionMask::key_padding
  bool cross_attention = false;  // keys/values from another sequence (Tq != Tk)
  bool kv_cache = false;         // incremental self-attention: a few new queries against all cached keys
  bool dropout = false;          // dropout on the attention probabilities while training
};
// "causal masks, key-padding masks" etc.: the features set in `f`, or "" when none.
std::string describe(const AttentionFeatures& f);

// Arguments of one attention call besides q, k, v.
struct AttentionArgs {
  AttentionMask mask;
  float scale = 1.0f;              // scores are q·kᵀ·scale
  float dropout_p = 0.0f;          // applied only when `training`
  bool training = false;
  core::Generator* gen = nullptr;  // dropout stream; required when training with dropout_p > 0
  // Inspection: when set (grad mode off), the backend stores here the
  // attention weights it applied, [B, H, Tq, Tk] (masked, before dropout;
  // for sparse backends the dense reconstruction, zero where a pair was not
  // computed). A backend that cannot leaves it undefined.
  Tensor* probabilities = nullptr;
};

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;
  virtual const char* name() const = 0;
  // q [B,H,Tq,Dh], k/v [B,H,Tk,Dh] -> [B,H,Tq,Dh]. With a shared query/key
  // backend, k is q.
  virtual Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args) const = 0;
  // Self-attention straight from a fused projection: qkv [B, T, 3·H·Dh]
  // (q, k, v along the last dim, each [H, Dh]) -> [B, H, T, Dh], the same
  // function as attend() on its three parts. A backend that reads the packed
  // tensor in place (and so can return one gradient for it) overrides this;
  // the default returns an undefined tensor and the layer splits instead.
  virtual Tensor attend_packed(const Tensor& /*qkv*/, int64_t /*heads*/, const AttentionArgs& /*args*/) const {
    return {};
  }
};

using AttentionBackendFactory = std::function<std::shared_ptr<AttentionBackend>(const AttentionBackendOptions&)>;

struct AttentionBackendInfo {
  std::string name;               // the model.attention value
  std::string help;               // one line for help-config and error messages
  AttentionFeatures supports;
  bool shared_qk = false;         // keys are the queries (Reformer LSH): no separate key projection
  std::vector<std::string> reads; // names of the AttentionBackendOptions it reads
  AttentionBackendFactory make;   // may throw naming the model.attention_* key it rejects
};

// Adds a backend. Throws when the name is taken or empty, `make` is empty,
// `reads` names an unknown option, or shared_qk is combined with
// cross-attention (keys from another sequence cannot be the queries).
void register_attention_backend(AttentionBackendInfo info);
// Every registered backend (built-ins first, in registration order).
std::vector<std::shared_ptr<const AttentionBackendInfo>> attention_backends();
std::vector<std::string> attention_backend_names();
// Null when no backend has that name.
std::shared_ptr<const AttentionBackendInfo> find_attention_backend(const std::string& name);
// Throws "model.attention = 'x' is not allowed (expected one of naive, ...)".
std::shared_ptr<const AttentionBackendInfo> attention_backend_info(const std::string& name);

// Checks the options for the backend `name` (ranges, options the backend
// does not read left at their defaults, the backend's own checks) and makes
// it. Throws naming model.attention or the model.attention_* key.
std::shared_ptr<AttentionBackend> make_attention_backend(const std::string& name,
                                                         const AttentionBackendOptions& options = {});
// Per-layer backends (model.attention_pattern): layer i uses
// pattern[i % pattern.size()]; an empty pattern means `attention` everywhere.
// "local, lsh" -> {"local", "lsh"}; "" -> {}. Throws naming
// model.attention_pattern for an empty or unregistered name.
std::vector<std::string> parse_attention_pattern(const std::string& text);
std::string attention_backend_of_layer(const std::string& attention, const std::vector<std::string>& pattern,
                                       int64_t layer);
// The distinct backends a model uses, in pattern order.
std::vector<std::string> attention_backends_used(const std::string& attention,
                                                 const std::vector<std::string>& pattern);
// The options of a model that uses `attention` or, when not empty,
// `pattern`. A mixed pattern shares one set of options: every option not at
// its default must be read by at least one backend used, and each layer's
// backend gets the options with those it does not read reset
// (options_read_by). Throws naming the key and model.attention or
// model.attention_pattern.
void check_attention_options(const std::string& attention, const std::vector<std::string>& pattern,
                             const AttentionBackendOptions& options);
AttentionBackendOptions options_read_by(const std::string& name, const AttentionBackendOptions& options);

// Throws unless backend `name` supports every feature in `needed`:
// "model.attention = x does not support cross-attention, which <who> needs
// (backends that do: naive, ...)".
void check_attention_support(const std::string& name, const AttentionFeatures& needed, const std::string& who);

}  // namespace tfm::layers
