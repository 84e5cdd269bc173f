#include "tools/inspect.h"

#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "core/error.h"
#include "data/tokenizer.h"
#include "tools/attention_maps.h"
#include "train/model_io.h"
#include "tools/report_util.h"
#include "train/trainer.h"

namespace fs = std::filesystem;

namespace tfm::train {

using namespace report;

namespace {

// ---------------------------------------------------------------- formatting

std::string human_bytes(std::uintmax_t b) {
  const char* units[] = {"bytes", "KB", "MB", "GB", "TB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

// The format_version attribute of a file load_checkpoint has accepted.
int64_t stored_format_version(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  int64_t v = kCheckpointVersion;
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return v;
  const hid_t a = H5Aopen_by_name(f, "/", "format_version", H5P_DEFAULT, H5P_DEFAULT);
  if (a >= 0) {
    if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0) v = kCheckpointVersion;
    H5Aclose(a);
  }
  H5Fclose(f);
  return v;
}

json stats_json(const TensorStats& s) {
  json j;
  j["numel"] = s.numel;
  j["mean"] = opt(s.mean);
  j["std"] = opt(s.std);
  j["min"] = opt(s.min);
  j["max"] = opt(s.max);
  j["norm"] = s.norm;
  j["zeros"] = s.zeros;
  j["zero_fraction"] = s.numel ? static_cast<double>(s.zeros) / static_cast<double>(s.numel) : 0.0;
  j["nan"] = s.nan;
  j["inf"] = s.inf;
  return j;
}

// Model family and sizes from the stored config.
json model_json(const Config& cfg) {
  json m;
  const std::string family = cfg.get_string("model.family");
  m["family"] = family;
  if (family == "gpt") {
    m["n_layers"] = cfg.get_int("model.n_layers");
  } else {
    m["enc_layers"] = cfg.get_int("model.enc_layers");
    m["dec_layers"] = cfg.get_int("model.dec_layers");
  }
  const int64_t d = cfg.get_int("model.d_model");
  m["n_heads"] = cfg.get_int("model.n_heads");
  m["d_model"] = d;
  m["d_ff"] = cfg.get_int("model.d_ff") ? cfg.get_int("model.d_ff") : 4 * d;
  m["block_size"] = cfg.get_int("model.block_size");
  for (const char* k : {"positions", "norm", "norm_placement", "activation", "attention"})
    m[k] = cfg.get_string(std::string("model.") + k);
  for (const char* k : {"bias", "tie_embeddings"}) m[k] = cfg.get_bool(std::string("model.") + k);
  m[family == "gpt" ? "fused_qkv" : "share_embeddings"] =
      cfg.get_bool(family == "gpt" ? "model.fused_qkv" : "model.share_embeddings");
  m["dropout"] = cfg.get_float("model.dropout");
  return m;
}

std::string model_line(const json& m) {
  std::ostringstream os;
  os << m["family"].get<std::string>() << ": ";
  if (m.contains("n_layers"))
    os << m["n_layers"] << " layers";
  else
    os << m["enc_layers"] << " encoder + " << m["dec_layers"] << " decoder layers";
  os << ", " << m["n_heads"] << " heads, d_model " << m["d_model"] << ", d_ff " << m["d_ff"] << ", block_size "
     << m["block_size"] << "\n            " << m["positions"].get<std::string>() << " positions, "
     << m["norm"].get<std::string>() << " (" << m["norm_placement"].get<std::string>() << "-norm), "
     << m["activation"].get<std::string>() << (m["bias"].get<bool>() ? ", biases" : ", no biases")
     << (m["tie_embeddings"].get<bool>() ? ", tied embeddings" : ", untied embeddings");
  if (m.contains("fused_qkv") && m["fused_qkv"].get<bool>()) os << ", fused qkv";
  if (m.contains("share_embeddings") && m["share_embeddings"].get<bool>()) os << ", shared embeddings";
  os << ", dropout " << fmt_g(m["dropout"].get<double>()) << ", " << m["attention"].get<std::string>() << " attention";
  return os.str();
}

// Rough parameter count of the model a config describes (an upper bound's
// order of magnitude), so that a config which disagrees wildly with the file
// is reported before anything huge is allocated.
double estimated_parameters(const Config& cfg, int64_t vocab) {
  const auto d = static_cast<double>(cfg.get_int("model.d_model"));
  const double ff = cfg.get_int("model.d_ff") ? static_cast<double>(cfg.get_int("model.d_ff")) : 4 * d;
  const double block = 4 * d * d + 3 * d * ff + 16 * d;
  const double emb = 2 * static_cast<double>(vocab) * d + 2 * static_cast<double>(cfg.get_int("model.block_size")) * d;
  if (cfg.get_string("model.family") == "gpt") return static_cast<double>(cfg.get_int("model.n_layers")) * block + emb;
  return static_cast<double>(cfg.get_int("model.enc_layers")) * block +
         static_cast<double>(cfg.get_int("model.dec_layers")) * (block + 4 * d * d) + 2 * emb;
}

const core::Tensor* find_tensor(const std::vector<std::pair<std::string, core::Tensor>>& list, const std::string& name) {
  for (const auto& [n, t] : list)
    if (n == name) return &t;
  return nullptr;
}

json metrics_json(const CheckpointData& ck) {
  json last_train, last_val;
  int64_t rows = 0;
  std::istringstream in(ck.metrics_jsonl);
  for (std::string line; std::getline(in, line);) {
    const json row = json::parse(line, nullptr, false);
    if (!row.is_object()) continue;
    ++rows;
    if (row.contains("train_loss") && row["train_loss"].is_number()) last_train = row;
    if (row.contains("val_loss") && row["val_loss"].is_number()) last_val = row;
  }
  json m;
  m["rows"] = rows;
  m["last_train"] = last_train;
  m["last_val"] = last_val;
  auto best = ck.meta.find("best_val_loss");
  m["best_val_loss"] = best != ck.meta.end() && !best->second.empty() ? json(std::stod(best->second)) : json(nullptr);
  return m;
}

std::string nonfinite_cell(int64_t nan, int64_t inf) {
  if (nan == 0 && inf == 0) return "0";
  return std::to_string(nan) + "/" + std::to_string(inf) + " !!";
}

}  // namespace

// ---------------------------------------------------------------- public helpers

TensorStats tensor_stats(const core::Tensor& t) {
  TensorStats s;
  s.numel = t.numel();
  if (s.numel == 0) return s;
  const std::vector<float> v = t.to_vector();
  double sum = 0, sumsq = 0, lo = std::numeric_limits<double>::infinity(), hi = -lo;
  int64_t finite = 0;
  for (float x : v) {
    if (std::isnan(x)) {
      ++s.nan;
    } else if (std::isinf(x)) {
      ++s.inf;
    } else {
      ++finite;
      sum += x;
      sumsq += static_cast<double>(x) * x;
      lo = std::min(lo, static_cast<double>(x));
      hi = std::max(hi, static_cast<double>(x));
      if (x == 0.0f) ++s.zeros;
    }
  }
  s.norm = std::sqrt(sumsq);
  if (finite > 0) {
    const double mean = sum / static_cast<double>(finite);
    double var = 0;
    for (float x : v)
      if (std::isfinite(x)) var += (x - mean) * (x - mean);
    s.mean = mean;
    s.std = std::sqrt(var / static_cast<double>(finite));
    s.min = lo;
    s.max = hi;
  }
  return s;
}

std::string parameter_group(const std::string& name) {
  std::vector<std::string> parts;
  std::istringstream in(name);
  for (std::string p; std::getline(in, p, '.');) parts.push_back(p);
  if (parts.empty()) return name;
  auto join = [&](std::size_t n) {
    std::string s = parts[0];
    for (std::size_t i = 1; i < n; ++i) s += "." + parts[i];
    return s;
  };
  for (std::size_t i = 1; i + 1 < parts.size(); ++i)
    if (!parts[i].empty() && std::all_of(parts[i].begin(), parts[i].end(), [](char c) { return c >= '0' && c <= '9'; }))
      return join(i + 1);
  return join(parts.size() > 1 ? std::min<std::size_t>(parts.size() - 1, 2) : 1);
}

FamilyModel build_checkpoint_model(const CheckpointData& ck, const Config& cfg, const std::string& path) {
  auto rows_of = [&](std::initializer_list<const char*> names) -> int64_t {
    for (const char* n : names)
      if (const core::Tensor* t = find_tensor(ck.params, n); t && t->dim() == 2) return t->size(0);
    return 0;
  };
  std::optional<TokenizerPair> tok;
  try {
    tok = load_tokenizers(ck, path);
  } catch (const std::exception&) {
  }
  const std::string family = cfg.get_string("model.family");
  int64_t stored = 0;
  for (const auto& [n, t] : ck.params) stored += t.numel();
  try {
    int64_t src = 0, tgt = 0;
    int32_t pad = 0;
    if (tok) {
      src = tok->src->vocab_size(), tgt = tok->tgt->vocab_size();
      pad = std::max(tok->tgt->pad_id(), 0);
    } else if (family == "gpt") {
      src = tgt = rows_of({"tok_emb.weight"});
    } else {
      src = rows_of({"src_emb.weight", "shared_emb.weight"});
      tgt = rows_of({"tgt_emb.weight", "shared_emb.weight"});
    }
    TFM_CHECK(src > 0 && tgt > 0, "no tokenizer and no embedding table to size the vocabulary");
    const double estimate = estimated_parameters(cfg, std::max(src, tgt));
    TFM_CHECK(estimate <= 2.0 * static_cast<double>(stored) + 5e7, "it describes about ",
              commas(static_cast<int64_t>(estimate)), " parameters, the file holds ", commas(stored));
    return build_model(cfg, src, tgt, pad);
  } catch (const Error& e) {
    detail::throw_error(path, ": the stored config does not match the parameters (", e.what(), ")");
  }
}

void check_parameter_shapes(const CheckpointData& ck, const layers::Module& model, const Config& cfg,
                            const std::string& path) {
  const std::vector<std::string> problems = parameter_mismatches(model, ck.params);
  if (problems.empty()) return;
  std::ostringstream os;
  const json m = model_json(cfg);
  os << path << ": parameter shapes disagree with the stored config (" << m["family"].get<std::string>() << ", d_model "
     << m["d_model"] << ", n_heads " << m["n_heads"] << ", d_ff " << m["d_ff"] << "; " << problems.size()
     << (problems.size() == 1 ? " mismatch): " : " mismatches): ");
  for (std::size_t i = 0; i < std::min<std::size_t>(problems.size(), 3); ++i) os << (i ? "; " : "") << problems[i];
  if (problems.size() > 3) os << "; and " << problems.size() - 3 << " more";
  throw Error(os.str());
}

// ---------------------------------------------------------------- inspect

namespace {

void print_tensor(const InspectArgs& args, const std::string& path, const CheckpointData& ck, std::ostream& out) {
  const core::Tensor* t = find_tensor(ck.params, args.tensor);
  const bool is_param = t != nullptr;
  if (!t) t = find_tensor(ck.optimizer_state, args.tensor);
  if (!t) {
    std::vector<std::pair<std::size_t, std::string>> close;
    for (const auto* list : {&ck.params, &ck.optimizer_state})
      for (const auto& [n, x] : *list) close.emplace_back(edit_distance(n, args.tensor), n);
    std::sort(close.begin(), close.end());
    std::ostringstream os;
    for (std::size_t i = 0; i < std::min<std::size_t>(close.size(), 3); ++i) os << (i ? ", " : "") << close[i].second;
    detail::throw_error(path, ": no tensor named '", args.tensor, "'",
                        close.empty() ? std::string(" (the file holds no tensors)") : " (closest: " + os.str() + ")");
  }
  const TensorStats s = tensor_stats(*t);
  if (args.json) {
    json j;
    j["file"] = path;
    j["name"] = args.tensor;
    j["kind"] = is_param ? "parameter" : "optimizer state";
    j["shape"] = shape_json(t->shape());
    j["stats"] = stats_json(s);
    j["values"] = t->to_vector();
    out << j.dump(2) << "\n";
    return;
  }
  out << args.tensor << " " << core::shape_str(t->shape()) << " (" << (is_param ? "parameter" : "optimizer state")
      << "): mean " << fmt_g(s.mean) << ", std " << fmt_g(s.std) << ", min " << fmt_g(s.min) << ", max "
      << fmt_g(s.max) << ", norm " << fmt_g(s.norm) << ", zeros " << s.zeros << ", nan/inf "
      << nonfinite_cell(s.nan, s.inf) << "\n"
      << core::to_string(*t, args.full) << "\n";
}

// Everything inspect reports, as one JSON object (the text view prints it).
json summary_json(const InspectArgs& args, const std::string& path, const CheckpointData& ck,
                  const std::optional<Config>& cfg) {
  json info;
  info["file"] = path;
  std::error_code ec;
  info["file_bytes"] = static_cast<int64_t>(fs::file_size(path, ec));
  info["format"] = kCheckpointFormat;
  info["format_version"] = stored_format_version(path);
  auto meta = [&](const char* k) { auto it = ck.meta.find(k); return it == ck.meta.end() ? json(nullptr) : json(it->second); };
  auto ints = [&](const char* k) { auto it = ck.ints.find(k); return it == ck.ints.end() ? json(nullptr) : json(it->second); };
  info["tfm_version"] = meta("tfm_version");
  info["created"] = meta("created");
  info["model"] = cfg ? model_json(*cfg) : json(nullptr);
  int64_t total = 0;
  json groups = json::array();
  for (const auto& [name, t] : ck.params) {
    total += t.numel();
    const std::string g = parameter_group(name);
    auto it = std::find_if(groups.begin(), groups.end(), [&](const json& e) { return e["name"] == g; });
    if (it == groups.end()) it = groups.insert(groups.end(), json{{"name", g}, {"numel", 0}, {"tensors", 0}});
    (*it)["numel"] = (*it)["numel"].get<int64_t>() + t.numel();
    (*it)["tensors"] = (*it)["tensors"].get<int64_t>() + 1;
  }
  info["parameters"] = {{"total", total}, {"tensors", ck.params.size()}, {"groups", groups}};
  info["training"] = {{"step", ints("step")}, {"tokens_seen", ints("tokens_seen")}, {"optimizer_steps", ints("optimizer_steps")}};
  info["metrics"] = metrics_json(ck);
  std::set<std::string> slots;
  int64_t state_values = 0;
  for (const auto& [n, t] : ck.optimizer_state) {
    state_values += t.numel();
    slots.insert(n.substr(0, n.find('/')));
  }
  info["optimizer"] = {{"name", meta("optimizer")},
                       {"state_present", !ck.optimizer_state.empty()},
                       {"state_tensors", ck.optimizer_state.size()},
                       {"state_values", state_values},
                       {"slots", std::vector<std::string>(slots.begin(), slots.end())}};
  json tok = {{"kind", ck.tokenizer_kind.empty() ? json(nullptr) : json(ck.tokenizer_kind)}, {"vocab_size", nullptr},
              {"bytes", ck.tokenizer_blob.size()}};
  if (!ck.tokenizer_kind.empty()) {
    try {
      const TokenizerPair pair = load_tokenizers(ck, path);
      tok["vocab_size"] = pair.src->vocab_size();
      if (!pair.joint()) tok["target_vocab_size"] = pair.tgt->vocab_size();
    } catch (const std::exception& e) {
      tok["error"] = e.what();
    }
  }
  info["tokenizer"] = tok;
  info["rng"] = json::object();
  for (const auto& [n, st] : ck.rng) info["rng"][n] = {{"seed", st.first}, {"offset", st.second}};
  info["meta"] = ck.meta;
  info["ints"] = ck.ints;
  if (args.show_config) {
    json c = json::object();
    if (cfg)
      for (const KeySpec& k : schema()) c[k.key] = config_value(*cfg, k);
    info["config"] = c;
  }
  info["filter"] = args.filter.empty() ? json(nullptr) : json(args.filter);
  json rows = json::array();
  int64_t bad_tensors = 0, bad_values = 0;
  for (const auto& [name, t] : ck.params) {
    const TensorStats s = tensor_stats(t);
    if (s.nan + s.inf > 0) ++bad_tensors, bad_values += s.nan + s.inf;
    if (!matches(args.filter, name)) continue;
    json r = {{"name", name}, {"shape", shape_json(t.shape())}};
    r.update(stats_json(s));
    rows.push_back(r);
  }
  info["nonfinite"] = {{"tensors", bad_tensors}, {"values", bad_values}};
  info["params"] = rows;
  return info;
}

std::string text_or(const json& v, const char* fallback) { return v.is_null() ? fallback : v.get<std::string>(); }
std::string count_or(const json& v) { return v.is_null() ? "-" : commas(v.get<int64_t>()); }

void print_summary(const json& info, const InspectArgs& args, const std::optional<Config>& cfg, std::ostream& out) {
  out << "checkpoint  " << info["file"].get<std::string>() << " (" << human_bytes(info["file_bytes"].get<std::uintmax_t>())
      << ")\n";
  out << "format      " << info["format"].get<std::string>() << " version " << info["format_version"]
      << ", written by tfm " << text_or(info["tfm_version"], "(unknown)") << "\n";
  out << "created     " << text_or(info["created"], "(unknown)") << "\n";
  out << "model       " << (cfg ? model_line(info["model"]) : "(no config stored)") << "\n";
  const json& pj = info["parameters"];
  const auto total = pj["total"].get<int64_t>();
  out << "parameters  " << commas(total) << " in " << pj["tensors"] << " tensors\n";
  std::size_t gw = 0;
  for (const json& g : pj["groups"]) gw = std::max(gw, g["name"].get<std::string>().size());
  for (const json& g : pj["groups"])
    out << "              " << pad(g["name"].get<std::string>(), gw) << "  "
        << pad(commas(g["numel"].get<int64_t>()), 12, true) << "  "
        << pad(percent(total ? g["numel"].get<double>() / static_cast<double>(total) : 0.0), 7, true) << "\n";
  const json& tr = info["training"];
  out << "training    step " << count_or(tr["step"]) << ", " << count_or(tr["tokens_seen"]) << " tokens seen";
  if (!tr["optimizer_steps"].is_null()) out << ", " << commas(tr["optimizer_steps"].get<int64_t>()) << " optimizer steps";
  out << "\n";
  const json& mj = info["metrics"];
  out << "metrics     " << mj["rows"] << " rows";
  if (const json& lt = mj["last_train"]; !lt.is_null()) {
    out << "\n            last train loss " << fmt_g(lt["train_loss"].get<double>(), 5) << " at step " << lt.value("step", json(nullptr));
    if (lt.contains("lr") && lt["lr"].is_number()) out << ", lr " << fmt_g(lt["lr"].get<double>(), 3);
    if (lt.contains("tokens_per_s") && lt["tokens_per_s"].is_number())
      out << ", " << commas(std::llround(lt["tokens_per_s"].get<double>())) << " tokens/s";
  }
  if (const json& lv = mj["last_val"]; !lv.is_null())
    out << "\n            last validation loss " << fmt_g(lv["val_loss"].get<double>(), 5) << " at step "
        << lv.value("step", json(nullptr));
  if (!mj["best_val_loss"].is_null()) out << "\n            best validation loss " << fmt_g(mj["best_val_loss"].get<double>(), 5);
  out << "\n";
  const json& oj = info["optimizer"];
  out << "optimizer   " << text_or(oj["name"], "(unknown)");
  if (!oj["state_present"].get<bool>()) {
    out << ", no state stored\n";
  } else {
    out << ", state present (";
    for (std::size_t i = 0; i < oj["slots"].size(); ++i) out << (i ? ", " : "") << oj["slots"][i].get<std::string>();
    out << "; " << oj["state_tensors"] << " tensors, " << commas(oj["state_values"].get<int64_t>()) << " values)\n";
  }
  const json& tok = info["tokenizer"];
  out << "tokenizer   " << text_or(tok["kind"], "(none)");
  if (tok.contains("target_vocab_size"))
    out << ", vocabulary " << commas(tok["vocab_size"].get<int64_t>()) << " (source) / "
        << commas(tok["target_vocab_size"].get<int64_t>()) << " (target)";
  else if (!tok["vocab_size"].is_null())
    out << ", vocabulary " << commas(tok["vocab_size"].get<int64_t>());
  if (tok.contains("error")) out << " (cannot load: " << tok["error"].get<std::string>() << ")";
  out << "\n";
  if (const json& nf = info["nonfinite"]; nf["values"].get<int64_t>() > 0)
    out << "non-finite  " << nf["values"] << " NaN/Inf values in " << nf["tensors"] << " tensors !!\n";
  if (args.show_config) {
    out << "\nconfig (resolved)\n";
    std::istringstream yaml(cfg ? cfg->to_yaml() : std::string("(none stored)\n"));
    for (std::string line; std::getline(yaml, line);) out << "  " << line << "\n";
  }

  const json& rows = info["params"];
  std::size_t nw = 9, sw = 5;
  for (const auto& r : rows) {
    nw = std::max(nw, r["name"].get<std::string>().size());
    sw = std::max(sw, core::shape_str(r["shape"].get<core::Shape>()).size());
  }
  out << "\n" << pad("parameter", nw) << "  " << pad("shape", sw) << pad("numel", 11, true) << pad("mean", 11, true)
      << pad("std", 11, true) << pad("min", 11, true) << pad("max", 11, true) << pad("norm", 11, true)
      << pad("zeros", 8, true) << "  nan/inf\n";
  for (const auto& r : rows) {
    auto g = [&](const char* k) { return r[k].is_null() ? std::string("-") : fmt_g(r[k].get<double>()); };
    out << pad(r["name"].get<std::string>(), nw) << "  " << pad(core::shape_str(r["shape"].get<core::Shape>()), sw)
        << pad(std::to_string(r["numel"].get<int64_t>()), 11, true) << pad(g("mean"), 11, true) << pad(g("std"), 11, true)
        << pad(g("min"), 11, true) << pad(g("max"), 11, true) << pad(g("norm"), 11, true)
        << pad(percent(r["zero_fraction"].get<double>()), 8, true) << "  "
        << nonfinite_cell(r["nan"].get<int64_t>(), r["inf"].get<int64_t>()) << "\n";
  }
  if (rows.empty()) out << "(no parameter matches '" << args.filter << "')\n";
}

}  // namespace

void run_inspect(const InspectArgs& args, std::ostream& out) {
  TFM_CHECK(!args.checkpoint.empty(), "tfm inspect: a checkpoint file or run directory is required");
  TFM_CHECK(args.attention || (args.text.empty() && args.source.empty() && args.target.empty()),
            "--text, --source and --target go with --attention");
  TFM_CHECK(!args.full || !args.tensor.empty(), "--full goes with --tensor NAME");
  TFM_CHECK(!args.attention || args.tensor.empty(), "--attention and --tensor cannot be combined");
  const std::string path = resolve_checkpoint(args.checkpoint);
  const CheckpointData ck = load_checkpoint(path);
  std::optional<Config> cfg;
  if (!ck.config_yaml.empty()) {
    cfg = Config::parse(ck.config_yaml, path + " (config)");
    const FamilyModel model = build_checkpoint_model(ck, *cfg, path);
    check_parameter_shapes(ck, model.module(), *cfg, path);
  }
  if (args.attention) {
    TFM_CHECK(cfg.has_value(), path, ": the checkpoint stores no config, so its model cannot be rebuilt for --attention");
    std::ostringstream log;
    const auto files = write_attention_maps(args, path, ck, args.json ? log : out);
    if (args.json) out << json{{"file", path}, {"out_dir", args.out_dir}, {"files", files}}.dump(2) << "\n";
  } else if (!args.tensor.empty()) {
    print_tensor(args, path, ck, out);
  } else if (args.json) {
    out << summary_json(args, path, ck, cfg).dump(2) << "\n";
  } else {
    print_summary(summary_json(args, path, ck, cfg), args, cfg, out);
  }
}

}  // namespace tfm::train
