#include "train/loaded_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <new>

#include "core/error.h"
#include "data/text.h"
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

namespace {
// NaN/Inf values in each tensor, one line per tensor that has any.
void nonfinite_tensors(const std::vector<std::pair<std::string, core::Tensor>>& tensors, const std::string& kind,
                       std::vector<std::string>& out) {
  for (const auto& [name, t] : tensors) {
    int64_t bad = 0;
    for (float x : t.to_vector()) bad += std::isfinite(x) ? 0 : 1;
    if (bad > 0)
      out.push_back(kind + " " + name + ": " + std::to_string(bad) + " of " + std::to_string(t.numel()) +
                    " values are NaN or Inf");
  }
}

int64_t rows_of(const CheckpointData& ck, const std::string& name) {
  for (const auto& [n, t] : ck.params)
    if (n == name && t.dim() == 2) return t.size(0);
  return -1;
}

void tokenizer_problems(const data::Tokenizer& tok, const std::string& side, const std::vector<int64_t>& rows,
                        std::vector<std::string>& out) {
  const int64_t v = tok.vocab_size();
  if (v < 1) out.push_back(side + "tokenizer: an empty vocabulary");
  for (const auto& [what, id] : {std::pair<const char*, int32_t>{"pad", tok.pad_id()}, {"unk", tok.unk_id()},
                                 {"bos", tok.bos_id()}, {"eos", tok.eos_id()}})
    if (id < -1 || id >= v)
      out.push_back(side + "tokenizer: the " + what + " id " + std::to_string(id) + " is outside its vocabulary of " +
                    std::to_string(v));
  for (int64_t r : rows)
    if (r >= 0 && r != v)
      out.push_back(side + "tokenizer: a vocabulary of " + std::to_string(v) + " tokens, but the embedding has " +
                    std::to_string(r) + " rows");
}
}  // namespace

std::vector<std::string> checkpoint_problems(const CheckpointData& ck) {
  std::vector<std::string> out;
  nonfinite_tensors(ck.params, "parameter", out);
  nonfinite_tensors(ck.optimizer_state, "optimizer state", out);
  if (ck.tokenizer_kind.empty()) {
    out.push_back("no tokenizer stored");
    return out;
  }
  try {
    const TokenizerPair t = load_tokenizers(ck, "tokenizer");
    const int64_t shared = rows_of(ck, "shared_emb.weight");
    if (t.joint() && shared < 0 && rows_of(ck, "src_emb.weight") < 0) {  // gpt
      tokenizer_problems(*t.src, "", {rows_of(ck, "tok_emb.weight")}, out);
    } else if (t.joint()) {
      tokenizer_problems(*t.src, "", {shared, rows_of(ck, "src_emb.weight"), rows_of(ck, "tgt_emb.weight")}, out);
    } else {
      tokenizer_problems(*t.src, "source ", {rows_of(ck, "src_emb.weight")}, out);
      tokenizer_problems(*t.tgt, "target ", {rows_of(ck, "tgt_emb.weight")}, out);
    }
  } catch (const std::bad_alloc&) {
    throw;  // out of memory says nothing about the checkpoint
  } catch (const std::exception& e) {
    out.push_back(std::string("the tokenizer does not load: ") + e.what());
  }
  return out;
}

void check_usable(const CheckpointData& ck, const std::string& path, const std::string& command) {
  const std::vector<std::string> problems = checkpoint_problems(ck);
  if (problems.empty()) return;
  std::string list;
  for (std::size_t i = 0; i < std::min<std::size_t>(problems.size(), 5); ++i) list += (i ? "; " : "") + problems[i];
  if (problems.size() > 5) list += "; and " + std::to_string(problems.size() - 5) + " more";
  detail::throw_error(path, ": tfm ", command, " refuses this checkpoint (", problems.size(),
                      problems.size() == 1 ? " problem: " : " problems: ", list, "); `tfm inspect ", path,
                      "` shows it whole");
}

std::string DataChange::summary() const {
  std::string s;
  for (const std::string& c : changes) s += (s.empty() ? "" : "; ") + c;
  char frac[64];
  std::snprintf(frac, sizeof frac, "%.2f%%", 100.0 * unknown_fraction);
  return s + "; the checkpoint's tokenizer maps " + frac + " of data.path's tokens to unknown";
}

DataChange data_change(const CheckpointData& ck, const Config& cfg, const std::string& path) {
  DataChange d;
  const auto it = ck.meta.find("data_fingerprint");
  if (it == ck.meta.end() || it->second.empty()) return d;
  d.changes = fingerprint_changes(it->second, data_fingerprint(cfg));
  if (d.changes.empty()) return d;
  const TokenizerPair tok = load_tokenizers(ck, path);
  const int32_t unk = tok.src->unk_id();
  if (unk < 0) return d;
  try {
    const std::vector<int32_t> ids = tok.src->encode(data::read_file(cfg.get_string("data.path")));
    const auto n_unk = std::count(ids.begin(), ids.end(), unk);
    d.unknown_fraction = ids.empty() ? 0.0 : static_cast<double>(n_unk) / static_cast<double>(ids.size());
  } catch (const Error&) {
    d.unknown_fraction = 1.0;  // unreadable or not UTF-8: nothing of it is covered
  }
  return d;
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
  check_usable(m.checkpoint, path, command.empty() ? "load" : command);
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
