// Module: the unit models are built from. A module owns named parameters and
// named sub-modules, so every parameter has a stable dotted name
// ("decoder.layers.3.self_attn.q_proj.weight") that checkpoints, optimizer
// groups and inspection tools use. Parameters are visited in registration
// order, which is fixed by the constructors.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tfm::layers {

using core::Shape;
using core::Tensor;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Every parameter of this module and its descendants, depth-first in
  // registration order, with dotted names relative to this module.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  std::vector<Tensor> parameters() const;
  // The parameter with this dotted name; throws listing close names if absent.
  Tensor parameter(const std::string& dotted_name) const;
  int64_t num_parameters() const;
  void zero_grad();

  // Train/eval mode, applied recursively (dropout is active only in training).
  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }

  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const { return children_; }

 protected:
  // Registers `t` as a parameter (marks it requires_grad) and returns it.
  Tensor register_parameter(const std::string& name, Tensor t);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
    add_child(name, m);
    return m;
  }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> m);
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Tensor>>& out) const;

  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

// An indexed list of modules whose children are named "0", "1", ...
template <class M>
class ModuleList : public Module {
 public:
  void push_back(std::shared_ptr<M> m) {
    register_module(std::to_string(items_.size()), m);
    items_.push_back(std::move(m));
  }
  std::size_t size() const { return items_.size(); }
  M& operator[](std::size_t i) const { return *items_[i]; }
  auto begin() const { return items_.begin(); }
  auto end() const { return items_.end(); }

 private:
  std::vector<std::shared_ptr<M>> items_;
};

}  // namespace tfm::layers
