#include "autograd.h"

#include <unordered_map>

#include "error.h"
#include "ops.h"

namespace tfm::core {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = prev_; }

Node::~Node() {
  // Destroying the last handle to a long chain would recurse once per node.
  // Detach the successors that only this node holds and destroy them here,
  // one at a time, after emptying their own edge lists.
  std::vector<std::shared_ptr<Node>> pending;
  for (Edge& e : next)
    if (e.node) pending.push_back(std::move(e.node));
  while (!pending.empty()) {
    std::shared_ptr<Node> n = std::move(pending.back());
    pending.pop_back();
    if (n.use_count() == 1) {
      for (Edge& e : n->next)
        if (e.node) pending.push_back(std::move(e.node));
    }
  }
}

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(Tensor& out, std::shared_ptr<Node> node, const std::vector<Tensor>& inputs) {
  node->next.resize(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& in = inputs[i];
    if (!in.defined() || !in.requires_grad()) continue;
    if (in.grad_fn()) {
      node->next[i].node = in.grad_fn();
    } else {
      node->next[i].leaf = in.impl_ptr();
    }
  }
  out.impl()->grad_fn = std::move(node);
  out.impl()->requires_grad = true;
}

namespace {

// True when `impl` is referenced from exactly one handle and no other tensor
// shares its storage, so it may be updated in place.
bool exclusive(const std::shared_ptr<TensorImpl>& impl) {
  return impl.use_count() == 1 && impl->storage.use_count() == 1;
}

// slot += g; in place only when the slot's tensor is ours alone. A newly
// arriving gradient is adopted without copying (it is never written to
// unless exclusive).
void accumulate(std::shared_ptr<TensorImpl>& slot, const Tensor& g) {
  if (!slot) {
    slot = g.impl_ptr();
  } else if (exclusive(slot) && Tensor(slot).is_contiguous()) {
    Tensor acc(std::move(slot));
    acc.add_(g);
    slot = acc.impl_ptr();
  } else {
    slot = add(Tensor(slot), g).impl_ptr();
  }
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& seed) {
  TFM_CHECK(root.defined() && root.requires_grad(),
            "backward: the tensor does not require grad (no input of its graph has requires_grad set)");
  TFM_CHECK(seed.shape() == root.shape(), "backward: seed shape ", shape_str(seed.shape()),
            " differs from tensor shape ", shape_str(root.shape()));
  NoGradGuard no_grad;

  if (!root.grad_fn()) {  // backward on a leaf: its gradient is the seed
    accumulate(root.impl()->grad, seed.clone());
    return;
  }

  // Count, for every reachable node, how many edges lead into it (iterative DFS).
  Node* const start = root.grad_fn().get();
  std::unordered_map<Node*, int> deps{{start, 0}};
  std::vector<Node*> stack{start};
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next) {
      if (!e.node) continue;
      auto [it, inserted] = deps.try_emplace(e.node.get(), 0);
      it->second++;
      if (inserted) stack.push_back(e.node.get());
    }
  }

  // Kahn's algorithm: a node runs once every consumer has delivered its
  // gradient. A node that received no gradient at all is passed over, but
  // still releases its successors' counts.
  std::unordered_map<Node*, std::shared_ptr<TensorImpl>> grads;
  grads[start] = seed.impl_ptr();
  std::vector<Node*> ready{start};
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    std::vector<Tensor> grad_in;
    if (auto it = grads.find(n); it != grads.end()) {
      Tensor grad_out(std::move(it->second));
      grads.erase(it);
      TFM_CHECK(!n->released, "backward: node '", n->name(),
                "' already ran and freed its saved tensors; a graph can be back-propagated only once");
      grad_in = n->backward(grad_out);
      n->release();
      n->released = true;
      TFM_CHECK(grad_in.size() == n->next.size(), "backward: node '", n->name(), "' returned ", grad_in.size(),
                " gradients for ", n->next.size(), " inputs");
    }
    for (std::size_t i = 0; i < n->next.size(); ++i) {
      const Edge& e = n->next[i];
      const Tensor g = i < grad_in.size() ? grad_in[i] : Tensor();
      if (g.defined() && e.active()) {
        const Shape& want = e.node ? g.shape() : e.leaf->shape;
        TFM_CHECK(g.shape() == want, "backward: node '", n->name(), "' produced a gradient of shape ",
                  shape_str(g.shape()), " for a leaf of shape ", shape_str(want));
      }
      if (e.node) {
        if (g.defined()) accumulate(grads[e.node.get()], g);
        if (--deps[e.node.get()] == 0) ready.push_back(e.node.get());
      } else if (e.leaf && g.defined()) {
        // A leaf's gradient outlives the pass: keep a private, contiguous copy
        // unless this gradient is already exclusively ours.
        if (!e.leaf->grad) {
          e.leaf->grad = (g.impl_ptr().use_count() <= 2 && g.impl()->storage.use_count() == 1 &&
                          g.is_contiguous() && g.offset() == 0)
                             ? g.impl_ptr()
                             : g.clone().impl_ptr();
        } else {
          accumulate(e.leaf->grad, g);
        }
      }
    }
  }
}

}  // namespace tfm::core
