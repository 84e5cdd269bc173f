// Formatting helpers shared by tfm inspect and tfm diff (internal to tools/).
#pragma once

#include <fnmatch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "train/config.h"

namespace tfm::train::report {

using json = nlohmann::ordered_json;

inline std::string fmt_g(std::optional<double> v, int precision = 4) {
  if (!v) return "-";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*g", precision, *v);
  return buf;
}

inline std::string commas(int64_t n) {
  std::string s = std::to_string(n < 0 ? -n : n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<std::size_t>(i), ",");
  return n < 0 ? "-" + s : s;
}

inline std::string pad(const std::string& s, std::size_t w, bool right = false) {
  if (s.size() >= w) return s;
  return right ? std::string(w - s.size(), ' ') + s : s + std::string(w - s.size(), ' ');
}

inline std::string percent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * fraction);
  return buf;
}

inline json opt(std::optional<double> v) { return v ? json(*v) : json(nullptr); }

inline json shape_json(const core::Shape& s) { return json(std::vector<int64_t>(s.begin(), s.end())); }

inline bool matches(const std::string& glob, const std::string& name) {
  return glob.empty() || ::fnmatch(glob.c_str(), name.c_str(), 0) == 0;
}

inline json config_value(const Config& cfg, const KeySpec& k) {
  switch (k.type) {
    case ValueType::integer: return cfg.get_int(k.key);
    case ValueType::number: return cfg.get_float(k.key);
    case ValueType::boolean: return cfg.get_bool(k.key);
    case ValueType::string: break;
  }
  return cfg.get_string(k.key);
}

inline std::string config_text(const json& v) {
  if (!v.is_string()) return v.dump();
  return v.get<std::string>().empty() ? "\"\"" : v.get<std::string>();
}

}  // namespace tfm::train::report
