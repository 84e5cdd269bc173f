#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "core/error.h"
#include "tools/inspect.h"
#include "tools/report_util.h"
#include "train/trainer.h"

namespace tfm::train {

using namespace report;

void run_diff(const DiffArgs& args, std::ostream& out) {
  TFM_CHECK(!args.a.empty() && !args.b.empty(), "tfm diff: two checkpoint files or run directories are required");
  const std::string pa = resolve_checkpoint(args.a), pb = resolve_checkpoint(args.b);
  const CheckpointData a = load_checkpoint(pa), b = load_checkpoint(pb);
  json j;
  auto side = [](const std::string& p, const CheckpointData& c) {
    auto it = c.ints.find("step");
    return json{{"file", p}, {"step", it == c.ints.end() ? json(nullptr) : json(it->second)}};
  };
  j["a"] = side(pa, a);
  j["b"] = side(pb, b);

  // Config keys, compared as typed values through the schema.
  json cdiff = json::array();
  if (!a.config_yaml.empty() && !b.config_yaml.empty()) {
    const Config ca = Config::parse(a.config_yaml, pa + " (config)"), cb = Config::parse(b.config_yaml, pb + " (config)");
    for (const KeySpec& k : schema()) {
      const json va = config_value(ca, k), vb = config_value(cb, k);
      if (va != vb) cdiff.push_back({{"key", k.key}, {"a", va}, {"b", vb}});
    }
  } else if (a.config_yaml != b.config_yaml) {
    cdiff.push_back({{"key", "(config)"}, {"a", a.config_yaml.empty() ? "(none)" : "(stored)"},
                     {"b", b.config_yaml.empty() ? "(none)" : "(stored)"}});
  }
  j["config"] = cdiff;

  std::map<std::string, const core::Tensor*> in_b;
  for (const auto& [n, t] : b.params) in_b[n] = &t;
  json params = json::array(), shape_diff = json::array(), only_a = json::array(), only_b = json::array();
  std::string worst;
  double worst_rel = -1;
  int64_t changed = 0;
  for (const auto& [name, ta] : a.params) {
    if (!matches(args.filter, name)) continue;
    auto it = in_b.find(name);
    if (it == in_b.end()) {
      only_a.push_back({{"name", name}, {"shape", shape_json(ta.shape())}});
      continue;
    }
    const core::Tensor& tb = *it->second;
    if (ta.shape() != tb.shape()) {
      shape_diff.push_back({{"name", name}, {"a", shape_json(ta.shape())}, {"b", shape_json(tb.shape())}});
      continue;
    }
    const std::vector<float> va = ta.to_vector(), vb = tb.to_vector();
    double na = 0, nb = 0, nd = 0, maxd = 0;
    for (std::size_t i = 0; i < va.size(); ++i) {
      const double x = va[i], y = vb[i], d = y - x;
      na += x * x, nb += y * y, nd += d * d;
      if (std::isnan(d) && !(std::isnan(x) && std::isnan(y)))
        maxd = std::numeric_limits<double>::quiet_NaN();
      else if (std::fabs(d) > maxd)
        maxd = std::fabs(d);
    }
    na = std::sqrt(na), nb = std::sqrt(nb), nd = std::sqrt(nd);
    double rel = na > 0 ? nd / na : (nd > 0 ? std::numeric_limits<double>::infinity() : 0.0);
    if (std::isnan(nd)) rel = std::numeric_limits<double>::quiet_NaN();
    const bool differs = !(nd == 0 && maxd == 0);
    changed += differs;
    if (std::isfinite(rel) && rel > worst_rel) worst_rel = rel, worst = name;
    params.push_back({{"name", name},
                      {"shape", shape_json(ta.shape())},
                      {"norm_a", na},
                      {"norm_b", nb},
                      {"diff_norm", nd},
                      {"rel_change", std::isfinite(rel) ? json(rel) : json(nullptr)},
                      {"max_abs_diff", std::isfinite(maxd) ? json(maxd) : json(nullptr)},
                      {"differs", differs}});
  }
  std::set<std::string> names_a;
  for (const auto& [n, t] : a.params) names_a.insert(n);
  for (const auto& [name, tb] : b.params)
    if (!names_a.count(name) && matches(args.filter, name)) only_b.push_back({{"name", name}, {"shape", shape_json(tb.shape())}});
  j["params"] = params;
  j["shape_differs"] = shape_diff;
  j["only_in_a"] = only_a;
  j["only_in_b"] = only_b;
  j["changed"] = changed;
  j["identical"] = changed == 0 && shape_diff.empty() && only_a.empty() && only_b.empty() && cdiff.empty();
  if (args.json) {
    out << j.dump(2) << "\n";
    return;
  }

  auto step_text = [](const json& s) { return s["step"].is_null() ? std::string("?") : std::to_string(s["step"].get<int64_t>()); };
  out << "a: " << pa << " (step " << step_text(j["a"]) << ")\nb: " << pb << " (step " << step_text(j["b"]) << ")\n\n";
  out << "config: " << (cdiff.empty() ? "identical" : std::to_string(cdiff.size()) + (cdiff.size() == 1 ? " key differs" : " keys differ")) << "\n";
  for (const auto& c : cdiff) out << "  " << c["key"].get<std::string>() << ": " << config_text(c["a"]) << " -> " << config_text(c["b"]) << "\n";
  out << "\nparameters: " << params.size() << " compared" << (args.filter.empty() ? "" : " (filter '" + args.filter + "')")
      << ", " << changed << " changed, " << shape_diff.size() << " with different shapes, " << only_a.size()
      << " only in a, " << only_b.size() << " only in b\n";
  for (const auto& s : shape_diff)
    out << "  shape differs: " << s["name"].get<std::string>() << " " << core::shape_str(s["a"].get<core::Shape>()) << " -> "
        << core::shape_str(s["b"].get<core::Shape>()) << "\n";
  for (const auto& s : only_a) out << "  only in a: " << s["name"].get<std::string>() << " " << core::shape_str(s["shape"].get<core::Shape>()) << "\n";
  for (const auto& s : only_b) out << "  only in b: " << s["name"].get<std::string>() << " " << core::shape_str(s["shape"].get<core::Shape>()) << "\n";
  if (params.empty()) return;
  std::size_t nw = 9;
  for (const auto& p : params) nw = std::max(nw, p["name"].get<std::string>().size());
  out << "\n" << pad("parameter", nw) << pad("||a||", 12, true) << pad("||b-a||/||a||", 15, true) << pad("max|b-a|", 12, true) << "\n";
  for (const auto& p : params) {
    auto g = [&](const char* k) { return p[k].is_null() ? std::string("nan/inf !!") : fmt_g(p[k].get<double>()); };
    out << pad(p["name"].get<std::string>(), nw) << pad(fmt_g(p["norm_a"].get<double>()), 12, true)
        << pad(g("rel_change"), 15, true) << pad(g("max_abs_diff"), 12, true) << "\n";
  }
  if (changed == 0)
    out << "\nall compared parameters are identical\n";
  else if (!worst.empty())
    out << "\nlargest relative change: " << worst << " (" << fmt_g(worst_rel) << ")\n";
}

}  // namespace tfm::train
