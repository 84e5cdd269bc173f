#include "model_io.h"

#include <map>
#include <sstream>

#include "core/autograd.h"
#include "core/error.h"

namespace tfm::train {

layers::GPTConfig gpt_config(const Config& cfg, int64_t vocab_size) {
  layers::GPTConfig g;
  g.vocab_size = vocab_size;
  g.block_size = cfg.get_int("model.block_size");
  g.n_layers = cfg.get_int("model.n_layers");
  g.n_heads = cfg.get_int("model.n_heads");
  g.d_model = cfg.get_int("model.d_model");
  g.d_ff = cfg.get_int("model.d_ff");
  g.dropout = static_cast<float>(cfg.get_float("model.dropout"));
  g.positions = layers::parse_positions(cfg.get_string("model.positions"));
  g.rope_base = static_cast<float>(cfg.get_float("model.rope_base"));
  g.norm = layers::parse_norm(cfg.get_string("model.norm"));
  g.prenorm = cfg.get_string("model.norm_placement") == "pre";
  g.activation = layers::parse_activation(cfg.get_string("model.activation"));
  g.bias = cfg.get_bool("model.bias");
  g.tie_embeddings = cfg.get_bool("model.tie_embeddings");
  g.fused_qkv = cfg.get_bool("model.fused_qkv");
  g.attention = cfg.get_string("model.attention");
  return g;
}

void load_parameters(const layers::Module& model, const std::vector<std::pair<std::string, core::Tensor>>& params,
                     const std::string& origin) {
  std::map<std::string, core::Tensor> file(params.begin(), params.end());
  std::ostringstream problems;
  int count = 0;
  const auto named = model.named_parameters();
  for (const auto& [name, p] : named) {
    auto it = file.find(name);
    if (it == file.end()) {
      problems << "\n  missing from the checkpoint: " << name << " " << core::shape_str(p.shape());
      ++count;
    } else if (it->second.shape() != p.shape()) {
      problems << "\n  shape differs: " << name << " is " << core::shape_str(it->second.shape())
               << " in the checkpoint, " << core::shape_str(p.shape()) << " in the model";
      ++count;
    }
  }
  for (const auto& [name, t] : params) {
    bool known = false;
    for (const auto& [n, p] : named) known |= n == name;
    if (!known) {
      problems << "\n  not in the model: " << name << " " << core::shape_str(t.shape());
      ++count;
    }
  }
  TFM_CHECK(count == 0, origin, ": the checkpoint does not match the model built from its config (", count,
            " mismatches):", problems.str());
  core::NoGradGuard no_grad;
  for (const auto& [name, p] : named) {
    core::Tensor dst = p;
    dst.copy_(file.at(name));
  }
}

}  // namespace tfm::train
