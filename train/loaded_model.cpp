#include "train/loaded_model.h"

#include <algorithm>

#include "core/error.h"
#include "train/trainer.h"

namespace tfm::train {

layers::Module& FamilyModel::module() const {
  TFM_CHECK(gpt || seq2seq, "FamilyModel::module: no model was built");
  if (gpt) return *gpt;
  return *seq2seq;
}

FamilyModel build_model(const Config& cfg, int64_t src_vocab, int64_t tgt_vocab, int32_t pad_id) {
  FamilyModel m;
  if (cfg.get_string("model.family") == "gpt")
    m.gpt = std::make_unique<layers::GPT>(gpt_config(cfg, src_vocab), 0);
  else
    m.seq2seq = std::make_unique<layers::Seq2Seq>(seq2seq_config(cfg, src_vocab, tgt_vocab, pad_id), 0);
  return m;
}

data::SpecialIds LoadedModel::ids() const { return {tok.tgt->pad_id(), tok.tgt->bos_id(), tok.tgt->eos_id()}; }

LoadedModel load_model(const std::string& checkpoint_or_run_dir, const std::string& family, const std::string& command) {
  const std::string path = resolve_checkpoint(checkpoint_or_run_dir);
  return load_model(load_checkpoint(path), path, family, command);
}

LoadedModel load_model(CheckpointData checkpoint, const std::string& path, const std::string& family,
                       const std::string& command) {
  LoadedModel m;
  m.path = path;
  m.checkpoint = std::move(checkpoint);
  TFM_CHECK(!m.checkpoint.config_yaml.empty(), path, ": the checkpoint stores no config, so its model cannot be rebuilt");
  m.cfg = Config::parse(m.checkpoint.config_yaml, path + " (config)");
  const std::string stored = m.cfg.get_string("model.family");
  TFM_CHECK(family.empty() || stored == family, path, ": tfm ", command, " needs a ", family,
            " checkpoint, this one is ", stored, family == "gpt" ? " (use tfm translate)" : "");
  m.tok = load_tokenizers(m.checkpoint, path);
  // A tokenizer without a pad id (char) pads with 0, as inspect sizes such models.
  m.model = build_model(m.cfg, m.tok.src->vocab_size(), m.tok.tgt->vocab_size(), std::max(m.tok.tgt->pad_id(), 0));
  load_parameters(m.model.module(), m.checkpoint.params, path);
  m.model.module().eval();
  return m;
}

}  // namespace tfm::train
