#include "model_io.h"

#include <map>
#include <sstream>

#include "core/autograd.h"
#include "core/error.h"

namespace tfm::train {

namespace {
// The model.* keys both model families share.
template <class ModelConfig>
void read_shared_keys(const Config& cfg, ModelConfig& m) {
  m.n_heads = cfg.get_int("model.n_heads");
  m.d_model = cfg.get_int("model.d_model");
  m.d_ff = cfg.get_int("model.d_ff");
  m.dropout = static_cast<float>(cfg.get_float("model.dropout"));
  m.positions = layers::parse_positions(cfg.get_string("model.positions"));
  m.rope_base = static_cast<float>(cfg.get_float("model.rope_base"));
  m.norm = layers::parse_norm(cfg.get_string("model.norm"));
  m.prenorm = cfg.get_string("model.norm_placement") == "pre";
  m.activation = layers::parse_activation(cfg.get_string("model.activation"));
  m.bias = cfg.get_bool("model.bias");
  m.attention = cfg.get_string("model.attention");
  m.attention_options = attention_options(cfg);
  m.attention_pattern = layers::parse_attention_pattern(cfg.get_string("model.attention_pattern"));
  m.checkpoint_activations = cfg.get_bool("model.checkpoint_activations");
}
}  // namespace

layers::GPTConfig gpt_config(const Config& cfg, int64_t vocab_size) {
  layers::GPTConfig g;
  g.vocab_size = vocab_size;
  read_shared_keys(cfg, g);
  g.block_size = cfg.get_int("model.block_size");
  g.n_layers = cfg.get_int("model.n_layers");
  g.tie_embeddings = cfg.get_bool("model.tie_embeddings");
  g.fused_qkv = cfg.get_bool("model.fused_qkv");
  g.reversible = cfg.get_bool("model.reversible");
  g.ff_chunks = cfg.get_int("model.ff_chunks");
  return g;
}

layers::Seq2SeqConfig seq2seq_config(const Config& cfg, int64_t src_vocab, int64_t tgt_vocab, int32_t pad_id) {
  layers::Seq2SeqConfig s;
  read_shared_keys(cfg, s);
  if (s.d_ff == 0) s.d_ff = 4 * s.d_model;  // Seq2SeqConfig has no "0 means 4·d_model" rule of its own
  s.src_vocab = src_vocab;
  s.tgt_vocab = tgt_vocab;
  s.enc_layers = cfg.get_int("model.enc_layers");
  s.dec_layers = cfg.get_int("model.dec_layers");
  s.max_len = cfg.get_int("model.block_size");
  s.share_embeddings = cfg.get_bool("model.share_embeddings");
  s.tie_output = cfg.get_bool("model.tie_embeddings");
  s.pad_id = pad_id;
  return s;
}

void store_tokenizers(CheckpointData& out, const TokenizerPair& t) {
  if (t.joint()) {
    out.tokenizer_kind = t.src->kind();
    out.tokenizer_blob = t.src->serialize();
    return;
  }
  const std::vector<uint8_t> a = t.src->serialize(), b = t.tgt->serialize();
  out.tokenizer_kind = "pair:" + t.src->kind();
  out.tokenizer_blob.clear();
  const uint64_t n = a.size();
  for (int i = 0; i < 8; ++i) out.tokenizer_blob.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.tokenizer_blob.insert(out.tokenizer_blob.end(), a.begin(), a.end());
  out.tokenizer_blob.insert(out.tokenizer_blob.end(), b.begin(), b.end());
}

TokenizerPair load_tokenizers(const CheckpointData& in, const std::string& origin) {
  TokenizerPair t;
  if (in.tokenizer_kind.rfind("pair:", 0) != 0) {
    t.src = t.tgt = std::shared_ptr<data::Tokenizer>(data::load_tokenizer(in.tokenizer_kind, in.tokenizer_blob));
    return t;
  }
  const std::string kind = in.tokenizer_kind.substr(5);
  const auto& blob = in.tokenizer_blob;
  TFM_CHECK(blob.size() >= 8, origin, ": the tokenizer pair is truncated");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(blob[i]) << (8 * i);
  TFM_CHECK(n <= blob.size() - 8, origin, ": the tokenizer pair is damaged (source length ", n, " of ", blob.size(),
            " bytes)");
  t.src = data::load_tokenizer(kind, std::vector<uint8_t>(blob.begin() + 8, blob.begin() + 8 + static_cast<std::ptrdiff_t>(n)));
  t.tgt = data::load_tokenizer(kind, std::vector<uint8_t>(blob.begin() + 8 + static_cast<std::ptrdiff_t>(n), blob.end()));
  return t;
}

std::vector<std::string> parameter_mismatches(const layers::Module& model,
                                              const std::vector<std::pair<std::string, core::Tensor>>& params) {
  const std::map<std::string, core::Tensor> file(params.begin(), params.end());
  const auto named = model.named_parameters();
  std::vector<std::string> problems;
  for (const auto& [name, p] : named) {
    auto it = file.find(name);
    if (it == file.end())
      problems.push_back("missing from the checkpoint: " + name + " " + core::shape_str(p.shape()));
    else if (it->second.shape() != p.shape())
      problems.push_back("shape differs: " + name + " is " + core::shape_str(it->second.shape()) + " in the checkpoint, " +
                         core::shape_str(p.shape()) + " in the model");
  }
  const std::map<std::string, core::Tensor> in_model(named.begin(), named.end());
  for (const auto& [name, t] : params)
    if (!in_model.count(name)) problems.push_back("not in the model: " + name + " " + core::shape_str(t.shape()));
  return problems;
}

void load_parameters(const layers::Module& model, const std::vector<std::pair<std::string, core::Tensor>>& params,
                     const std::string& origin) {
  const std::vector<std::string> problems = parameter_mismatches(model, params);
  if (!problems.empty()) {
    std::ostringstream os;
    for (const std::string& p : problems) os << "\n  " << p;
    detail::throw_error(origin, ": the checkpoint does not match the model built from its config (", problems.size(),
                        problems.size() == 1 ? " mismatch):" : " mismatches):", os.str());
  }
  const std::map<std::string, core::Tensor> file(params.begin(), params.end());
  core::NoGradGuard no_grad;
  for (const auto& [name, p] : model.named_parameters()) {
    core::Tensor dst = p;
    dst.copy_(file.at(name));
  }
}

}  // namespace tfm::train
