#include "checkpoint.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <unordered_set>

#include "autograd.h"
#include "error.h"

namespace tfm::core {

namespace {

// What the forward keeps: the inputs (detached handles), whether each
// required grad, and every generator's state before and after fn.
struct CheckpointSaved {
  CheckpointFn fn;
  std::vector<Tensor> inputs;
  std::vector<bool> requires_grad;
  std::vector<Generator*> generators;
  std::vector<RngState> rng_before, rng_after;
};

// Recomputes fn with grad mode on and the captured random streams, then
// back-propagates `grad_output` through that sub-graph: returns the inputs'
// gradients and accumulates those of the leaves fn reads.
std::vector<Tensor> checkpoint_backward(CheckpointSaved& s, const Tensor& grad_output) {
  std::vector<Tensor> leaves(s.inputs.size()), wanted;
  for (std::size_t i = 0; i < s.inputs.size(); ++i) {
    if (!s.inputs[i].defined()) continue;
    leaves[i] = s.inputs[i].detach();
    if (s.requires_grad[i]) {
      leaves[i].set_requires_grad();
      wanted.push_back(leaves[i]);
    }
  }
  Tensor out;
  {
    GradModeGuard grad_on(true);
    const uint64_t first_sequence = next_node_sequence();
    std::vector<std::optional<RngReplayGuard>> replay(s.generators.size());
    for (std::size_t g = 0; g < s.generators.size(); ++g) replay[g].emplace(*s.generators[g], s.rng_before[g]);
    out = s.fn(leaves);
    for (std::size_t g = 0; g < s.generators.size(); ++g) {
      const RngState now = s.generators[g]->state();
      TFM_CHECK(now == s.rng_after[g], "checkpoint: generator ", g, " advanced to offset ", now.offset,
                " during the recomputation but to ", s.rng_after[g].offset,
                " in the forward; the function must draw the same random numbers each time");
    }
    check_subgraph_is_local(out, first_sequence, "checkpoint: the function read",
                            "one of its inputs; pass every such tensor through `inputs`");
  }  // generators go back to where they were before the recomputation
  TFM_CHECK(out.defined() && out.shape() == grad_output.shape(), "checkpoint: the recomputed output has shape ",
            out.defined() ? shape_str(out.shape()) : "undefined", ", the forward gave ", shape_str(grad_output.shape()));
  std::vector<Tensor> grads(s.inputs.size());
  if (!out.requires_grad()) return grads;  // fn did not depend on anything that requires grad
  const std::vector<Tensor> got = grad({out}, {grad_output}, wanted, /*accumulate_leaves=*/true);
  for (std::size_t i = 0, k = 0; i < s.inputs.size(); ++i)
    if (s.requires_grad[i]) grads[i] = got[k++];
  return grads;
}

class CheckpointNode final : public Node {
 public:
  explicit CheckpointNode(CheckpointSaved s) : saved_(std::move(s)) {}
  const char* name() const override { return "checkpoint"; }
  std::vector<Tensor> backward(const Tensor& grad_output) override { return checkpoint_backward(saved_, grad_output); }
  void release() override { saved_ = CheckpointSaved{}; }

 private:
  CheckpointSaved saved_;
};

}  // namespace

void check_subgraph_is_local(const Tensor& out, uint64_t first_sequence, const char* who_read,
                             const char* what_is_allowed) {
  if (!out.grad_fn()) return;
  std::unordered_set<Node*> seen{out.grad_fn().get()};
  std::vector<Node*> stack{out.grad_fn().get()};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    TFM_CHECK(n->sequence >= first_sequence, who_read, " a tensor with autograd history (from op '", n->name(),
              "') that is not ", what_is_allowed);
    for (const Edge& e : n->next)
      if (e.node && seen.insert(e.node.get()).second) stack.push_back(e.node.get());
  }
}

Tensor checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs, const std::vector<Generator*>& generators) {
  TFM_CHECK(static_cast<bool>(fn), "checkpoint: no function given");
  for (std::size_t g = 0; g < generators.size(); ++g)
    TFM_CHECK(generators[g] != nullptr, "checkpoint: generator ", g, " is null");
  if (!needs_grad(inputs)) return fn(inputs);

  CheckpointSaved s;
  s.fn = fn;
  for (Generator* g : generators)  // each once: replay guards of one generator must not nest
    if (std::find(s.generators.begin(), s.generators.end(), g) == s.generators.end()) s.generators.push_back(g);
  for (const Generator* g : s.generators) s.rng_before.push_back(g->state());
  Tensor out;
  {
    NoGradGuard no_grad;
    out = fn(inputs);
  }
  TFM_CHECK(out.defined(), "checkpoint: the function returned an undefined tensor");
  for (const Generator* g : s.generators) s.rng_after.push_back(g->state());
  for (const Tensor& t : inputs) {
    s.inputs.push_back(t.defined() ? t.detach() : Tensor());
    s.requires_grad.push_back(t.defined() && t.requires_grad());
  }
  out = out.detach();  // a fresh handle: fn may have returned an input or a parameter
  record(out, std::make_shared<CheckpointNode>(std::move(s)), inputs);
  return out;
}

}  // namespace tfm::core
