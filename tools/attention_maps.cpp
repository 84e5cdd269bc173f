#include "tools/attention_maps.h"

#include <filesystem>
#include <map>
#include <sstream>

#include "core/autograd.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "train/loaded_model.h"
#include "train/model_io.h"
#include "tools/plot.h"

namespace fs = std::filesystem;

namespace tfm::train {

namespace {

using layers::MultiHeadAttention;

// Switches probes on for a set of attention modules and off again on exit.
class ProbeScope {
 public:
  std::vector<core::Tensor>* add(const std::shared_ptr<MultiHeadAttention>& attn) {
    attns_.push_back(attn);
    records_.push_back(std::make_unique<std::vector<core::Tensor>>());
    attn->probe = records_.back().get();
    return records_.back().get();
  }
  ~ProbeScope() {
    for (const auto& a : attns_) a->probe = nullptr;
  }
  const std::vector<core::Tensor>& record(std::size_t i) const { return *records_[i]; }

 private:
  std::vector<std::shared_ptr<MultiHeadAttention>> attns_;
  std::vector<std::unique_ptr<std::vector<core::Tensor>>> records_;
};

struct MapSet {
  std::string prefix;       // file name prefix: "", "encoder_", "decoder_self_", "decoder_cross_"
  std::string what;         // title text: "self-attention (causal)"
  std::vector<std::string> rows, cols;
  std::string row_axis, col_axis;
};

std::vector<int32_t> encode_for(const data::Tokenizer& tok, const std::string& text, int64_t limit, const char* flag,
                                std::ostream& out) {
  TFM_CHECK(!text.empty(), flag, " must not be empty");
  std::vector<int32_t> ids = tok.encode(text);
  TFM_CHECK(!ids.empty(), flag, ": the text encodes to no tokens");
  if (static_cast<int64_t>(ids.size()) > limit) {
    out << "note: " << flag << " has " << ids.size() << " tokens; using the first " << limit
        << " (the model's context)\n";
    ids.resize(static_cast<std::size_t>(limit));
  }
  return ids;
}

// Axis labels: SentencePiece pieces as stored ("▁the"), other tokens decoded.
std::vector<std::string> labels(const data::Tokenizer& tok, const std::vector<int32_t>& ids) {
  const auto* sp = dynamic_cast<const data::SentencePieceTokenizer*>(&tok);
  std::vector<std::string> out;
  for (int32_t id : ids) {
    if (id >= 0 && id == tok.bos_id())
      out.push_back("<bos>");
    else
      out.push_back(visible_token(sp ? sp->id_to_piece(id) : tok.decode({id})));
  }
  return out;
}

core::Tensor ids_tensor(const std::vector<int32_t>& ids) {
  return core::from_vector(ids, {1, static_cast<int64_t>(ids.size())});
}

}  // namespace

std::string visible_token(const std::string& piece) {
  std::string out;
  std::size_t chars = 0;
  for (std::size_t i = 0; i < piece.size() && chars < 16;) {
    const auto c = static_cast<unsigned char>(piece[i]);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool valid = len > 0 && i + len <= piece.size();
    for (std::size_t k = 1; valid && k < len; ++k) valid = (static_cast<unsigned char>(piece[i + k]) & 0xC0) == 0x80;
    ++chars;
    if (!valid) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      ++i;
      continue;
    }
    if (c == ' ') {
      out += "\xE2\x90\xA3";  // ␣
    } else if (c == '\n') {
      out += "\xE2\x86\xB5";  // ↵
    } else if (c == '\t') {
      out += "\xE2\x87\xA5";  // ⇥
    } else if (c < 0x20 || c == 0x7F) {
      out += "\xEF\xBF\xBD";
    } else {
      out.append(piece, i, len);
    }
    i += len;
  }
  if (chars >= 16 && out.size() < piece.size()) out += "\xE2\x80\xA6";  // …
  if (out.empty()) out = "\xE2\x88\x85";                                  // ∅ (a piece that decodes to nothing)
  return out;
}

std::vector<std::string> write_attention_maps(const InspectArgs& args, const std::string& path,
                                              const CheckpointData& ck, std::ostream& out) {
  TFM_CHECK(!args.out_dir.empty(), "--out: an output directory is required");
  const LoadedModel loaded = load_model(ck, path);
  const TokenizerPair& tok = loaded.tok;
  const FamilyModel& model = loaded.model;
  core::NoGradGuard no_grad;
  ProbeScope probes;
  std::vector<MapSet> sets;       // one per probed attention module, in probe order
  std::vector<std::string> title_layer;
  if (model.gpt) {
    TFM_CHECK(args.source.empty() && args.target.empty(), path,
              ": a gpt checkpoint takes --text for --attention (--source/--target are for seq2seq)");
    TFM_CHECK(!args.text.empty(), path, ": --attention on a gpt checkpoint needs --text \"...\"");
    const std::vector<int32_t> ids = encode_for(*tok.src, args.text, model.gpt->config().block_size, "--text", out);
    const auto& layers = *model.gpt->blocks->layers;
    const auto l_ids = labels(*tok.src, ids);
    for (std::size_t l = 0; l < layers.size(); ++l) {
      probes.add(layers[l].self_attn);
      sets.push_back({"", "self-attention (causal)", l_ids, l_ids, "query token", "key token"});
      title_layer.push_back("layer " + std::to_string(l));
    }
    model.gpt->forward(ids_tensor(ids));
  } else {
    TFM_CHECK(args.text.empty(), path, ": a seq2seq checkpoint takes --source and --target for --attention, not --text");
    TFM_CHECK(!args.source.empty() && !args.target.empty(), path,
              ": --attention on a seq2seq checkpoint needs --source \"...\" and --target \"...\"");
    const int64_t max_len = model.seq2seq->config().max_len;
    const std::vector<int32_t> src = encode_for(*tok.src, args.source, max_len, "--source", out);
    // Teacher forcing as in training: the decoder reads BOS + the target.
    const int32_t bos = tok.tgt->bos_id();
    std::vector<int32_t> tgt = encode_for(*tok.tgt, args.target, bos >= 0 ? max_len - 1 : max_len, "--target", out);
    if (bos >= 0) tgt.insert(tgt.begin(), bos);
    const auto src_l = labels(*tok.src, src), tgt_l = labels(*tok.tgt, tgt);
    const auto& enc = *model.seq2seq->encoder->layers;
    const auto& dec = *model.seq2seq->decoder->layers;
    for (std::size_t l = 0; l < enc.size(); ++l) {
      probes.add(enc[l].self_attn);
      sets.push_back({"encoder_", "encoder self-attention", src_l, src_l, "source (query)", "source (key)"});
      title_layer.push_back("encoder layer " + std::to_string(l));
    }
    for (std::size_t l = 0; l < dec.size(); ++l) {
      probes.add(dec[l].self_attn);
      sets.push_back({"decoder_self_", "decoder self-attention (causal)", tgt_l, tgt_l, "target (query)", "target (key)"});
      title_layer.push_back("decoder layer " + std::to_string(l));
      probes.add(dec[l].cross_attn);
      sets.push_back({"decoder_cross_", "cross-attention", tgt_l, src_l, "target (query)", "source (key)"});
      title_layer.push_back("decoder layer " + std::to_string(l));
    }
    model.seq2seq->forward(ids_tensor(src), ids_tensor(tgt));
  }

  std::error_code ec;
  fs::create_directories(args.out_dir, ec);
  TFM_CHECK(fs::is_directory(args.out_dir), args.out_dir, ": cannot create the output directory",
            ec ? " (" + ec.message() + ")" : std::string());
  const std::string ckpt_name = fs::path(path).filename().string();
  auto step = ck.ints.find("step");
  const std::string suffix = " — " + ckpt_name + (step != ck.ints.end() ? ", step " + std::to_string(step->second) : "");
  std::vector<std::string> files;
  // Layer numbers restart per prefix (encoder/decoder).
  std::map<std::string, int> layer_of_prefix;
  for (std::size_t i = 0; i < sets.size(); ++i) {
    const MapSet& s = sets[i];
    const auto& rec = probes.record(i);
    TFM_CHECK(rec.size() == 1, "attention probe: expected one record per module, got ", rec.size());
    const core::Tensor p = rec[0].contiguous();  // [1, H, Tq, Tk]
    TFM_CHECK(p.dim() == 4 && p.size(2) == static_cast<int64_t>(s.rows.size()) &&
                  p.size(3) == static_cast<int64_t>(s.cols.size()),
              "attention probe: unexpected shape ", core::shape_str(p.shape()));
    const int layer = layer_of_prefix[s.prefix]++;
    const std::vector<float> all = p.to_vector();
    const std::size_t per_head = s.rows.size() * s.cols.size();
    for (int64_t h = 0; h < p.size(1); ++h) {
      Heatmap hm;
      hm.title = title_layer[i] + ", head " + std::to_string(h) + ": " + s.what + suffix;
      hm.row_axis = s.row_axis;
      hm.col_axis = s.col_axis;
      hm.row_labels = s.rows;
      hm.col_labels = s.cols;
      const auto begin = all.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(h) * per_head);
      hm.values.assign(begin, begin + static_cast<std::ptrdiff_t>(per_head));
      const std::string file = (fs::path(args.out_dir) / (s.prefix + "layer" + std::to_string(layer) + "_head" +
                                                          std::to_string(h) + ".svg"))
                                   .string();
      write_text_file(file, render_heatmap_svg(hm));
      files.push_back(file);
    }
  }
  out << "wrote " << files.size() << " attention maps (" << sets.size() << " attention modules × "
      << (sets.empty() ? 0 : files.size() / sets.size()) << " heads) to " << args.out_dir << "/\n";
  for (const auto& f : files) out << "  " << f << "\n";
  return files;
}

}  // namespace tfm::train
