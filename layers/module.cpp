#include "module.h"

#include <algorithm>

#include "core/autograd.h"
#include "core/error.h"

namespace tfm::layers {

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  TFM_CHECK(name.find('.') == std::string::npos && !name.empty(), "register_parameter: bad name '", name, "'");
  for (const auto& [n, p] : params_) TFM_CHECK(n != name, "register_parameter: duplicate name '", name, "'");
  t.set_requires_grad(true);
  params_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
  TFM_CHECK(name.find('.') == std::string::npos && !name.empty() && m, "register_module: bad name '", name, "'");
  for (const auto& [n, c] : children_) TFM_CHECK(n != name, "register_module: duplicate name '", name, "'");
  children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const {
  for (const auto& [n, p] : params_) out.emplace_back(prefix + n, p);
  for (const auto& [n, c] : children_) c->collect(prefix + n + ".", out);
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters() const {
  std::vector<std::pair<std::string, Tensor>> out;
  collect("", out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, p] : named_parameters()) out.push_back(p);
  return out;
}

Tensor Module::parameter(const std::string& dotted_name) const {
  const auto all = named_parameters();
  for (const auto& [n, p] : all)
    if (n == dotted_name) return p;
  std::string close;
  for (const auto& [n, p] : all) {
    // Same last component: the most useful hint for a mistyped prefix.
    const auto tail = [](const std::string& s) { return s.substr(s.rfind('.') + 1); };
    if (tail(n) == tail(dotted_name) && close.size() < 200) close += (close.empty() ? "" : ", ") + n;
  }
  detail::throw_error("no parameter named '", dotted_name, "'", close.empty() ? "" : " (similar: " + close + ")");
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, p] : named_parameters()) n += p.numel();
  return n;
}

void Module::zero_grad() {
  for (auto& [n, p] : named_parameters()) p.zero_grad();
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [n, c] : children_) c->train(on);
}

}  // namespace tfm::layers
