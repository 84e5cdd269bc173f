#include "autograd.h"

#include <atomic>
#include <unordered_map>
#include <unordered_set>

#include "error.h"
#include "ops.h"
#include "profile.h"

namespace tfm::core {

namespace {
thread_local bool g_grad_enabled = true;
thread_local LeafGradFinalHook t_leaf_final_hook;
thread_local int t_pass_depth = 0;  // backward passes running on this thread (nested > 1)
std::atomic<uint64_t> g_node_sequence{0};
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
GradModeGuard::GradModeGuard(bool enabled) : prev_(g_grad_enabled) { g_grad_enabled = enabled; }
GradModeGuard::~GradModeGuard() { g_grad_enabled = prev_; }

LeafGradFinalScope::LeafGradFinalScope(LeafGradFinalHook hook) : prev_(std::move(t_leaf_final_hook)) {
  t_leaf_final_hook = std::move(hook);
}
LeafGradFinalScope::~LeafGradFinalScope() { t_leaf_final_hook = std::move(prev_); }

uint64_t next_node_sequence() { return g_node_sequence.load(); }
Node::Node() : sequence(g_node_sequence.fetch_add(1)) {}

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
  profile::Frame prof(profile::Kind::autograd);
  node->next.resize(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& in = inputs[i];
    if (!in.defined() || !in.requires_grad()) continue;
    node->next[i].shape = in.shape();
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

// Lets a one-input node add its gradient into the pending gradient of the
// node its input came from (Node::backward_into), when that gradient exists
// and may be written in place. True when it did; the node then returns no
// gradients (its edge only releases its dependency count).
bool add_into_input(Node& n, const Tensor& grad_out,
                    std::unordered_map<Node*, std::shared_ptr<TensorImpl>>& grads) {
  if (n.next.size() != 1 || !n.next[0].node) return false;
  auto it = grads.find(n.next[0].node.get());
  if (it == grads.end() || !it->second || !exclusive(it->second)) return false;
  Tensor acc(std::move(it->second));
  const bool done = acc.is_contiguous() && acc.offset() == 0 && acc.shape() == n.next[0].shape &&
                    n.backward_into(grad_out, acc);
  it->second = acc.impl_ptr();
  return done;
}

// The inputs of grad() whose gradients a pass captures instead of
// accumulating: leaves by their impl, non-leaves by their producer node.
struct Targets {
  std::unordered_map<const TensorImpl*, std::size_t> leaves;
  std::unordered_map<const Node*, std::size_t> nodes;
  std::vector<std::shared_ptr<TensorImpl>> grads;
  bool wants_leaf(const TensorImpl* t) const { return leaves.count(t) > 0; }
  bool wants_node(const Node* n) const { return nodes.count(n) > 0; }
};

// A leaf's gradient outlives the pass: keep a private, contiguous copy
// unless this gradient is already exclusively ours.
void accumulate_leaf(TensorImpl& leaf, const Tensor& g) {
  if (!leaf.grad) {
    leaf.grad = (g.impl_ptr().use_count() <= 2 && g.impl()->storage.use_count() == 1 && g.is_contiguous() &&
                 g.offset() == 0)
                    ? g.impl_ptr()
                    : g.clone().impl_ptr();
  } else {
    accumulate(leaf.grad, g);
  }
}

// Nodes from which some target can be reached (only those need to run when
// the pass computes target gradients and nothing else). `order` lists the
// reachable nodes consumers-first.
std::unordered_set<Node*> nodes_leading_to(const Targets& t, const std::vector<Node*>& order) {
  std::unordered_set<Node*> needed;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {  // producers first
    for (const Edge& e : (*it)->next) {
      if ((e.leaf && t.wants_leaf(e.leaf.get())) ||
          (e.node && (t.wants_node(e.node.get()) || needed.count(e.node.get())))) {
        needed.insert(*it);
        break;
      }
    }
  }
  return needed;
}

// One backward pass from `roots` seeded with `seeds`. All its state is local
// (see "Re-entrancy" in autograd.h). Leaves in `targets` (if any) have their
// gradients captured; other leaves accumulate into .grad when
// accumulate_leaves is set.
void execute(const std::vector<Tensor>& roots, const std::vector<Tensor>& seeds, Targets* targets,
             bool accumulate_leaves) {
  NoGradGuard no_grad;
  struct DepthGuard {
    DepthGuard() { ++t_pass_depth; }
    ~DepthGuard() { --t_pass_depth; }
  } depth;
  // Leaf edges still to be processed, for the leaf-final hook (outermost pass only).
  const bool leaf_hook = t_pass_depth == 1 && t_leaf_final_hook && accumulate_leaves && !targets;
  std::unordered_map<const TensorImpl*, int> leaf_edges;
  profile::BackwardPhase prof_phase;
  profile::Frame prof(profile::Kind::autograd);  // the engine's own work; each node's backward is timed apart
  std::unordered_map<Node*, std::shared_ptr<TensorImpl>> grads;
  std::unordered_map<Node*, int> deps;
  std::vector<Node*> stack;
  for (std::size_t i = 0; i < roots.size(); ++i) {
    const Tensor& root = roots[i];
    if (!root.grad_fn()) {  // a leaf root: its gradient is the seed
      if (targets && targets->wants_leaf(root.impl())) {
        accumulate(targets->grads[targets->leaves.at(root.impl())], seeds[i]);
      } else if (accumulate_leaves) {
        accumulate(root.impl()->grad, seeds[i].clone());
      }
      continue;
    }
    Node* n = root.grad_fn().get();
    accumulate(grads[n], seeds[i]);
    if (deps.try_emplace(n, 0).second) stack.push_back(n);
  }

  // Count, for every reachable node, how many edges lead into it (iterative DFS).
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next) {
      if (leaf_hook && e.leaf) ++leaf_edges[e.leaf.get()];
      if (!e.node) continue;
      auto [it, inserted] = deps.try_emplace(e.node.get(), 0);
      it->second++;
      if (inserted) stack.push_back(e.node.get());
    }
  }
  std::vector<Node*> ready;
  for (const auto& [n, count] : deps)
    if (count == 0) ready.push_back(n);

  std::unordered_set<Node*> needed;
  const bool prune = targets && !accumulate_leaves;
  if (prune) {  // a dry run of the schedule below gives a consumers-first order
    std::unordered_map<Node*, int> left = deps;
    std::vector<Node*> order, todo = ready;
    while (!todo.empty()) {
      Node* n = todo.back();
      todo.pop_back();
      order.push_back(n);
      for (const Edge& e : n->next)
        if (e.node && --left[e.node.get()] == 0) todo.push_back(e.node.get());
    }
    needed = nodes_leading_to(*targets, order);
  }

  // Kahn's algorithm: a node runs once every consumer has delivered its
  // gradient. A node that received no gradient (or, when pruning, leads to
  // no target) is passed over, but still releases its successors' counts.
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    std::vector<Tensor> grad_in;
    if (auto it = grads.find(n); it != grads.end()) {
      Tensor grad_out(std::move(it->second));
      grads.erase(it);
      if (targets && targets->wants_node(n)) accumulate(targets->grads[targets->nodes.at(n)], grad_out);
      if (!prune || needed.count(n)) {
        TFM_CHECK(!n->released, "backward: node '", n->name(),
                  "' already ran and freed its saved tensors; a graph can be back-propagated only once");
        {
          profile::OpScope prof_node(profile::enabled() ? profile::kind_of_node(n->name()) : profile::Kind::other_op);
          if (add_into_input(*n, grad_out, grads)) {
            grad_in.resize(n->next.size());  // undefined: nothing more to send along the edge
          } else {
            grad_in = n->backward(grad_out);
          }
        }
        n->release();
        n->released = true;
        TFM_CHECK(grad_in.size() == n->next.size(), "backward: node '", n->name(), "' returned ", grad_in.size(),
                  " gradients for ", n->next.size(), " inputs");
      }
    }
    for (std::size_t i = 0; i < n->next.size(); ++i) {
      const Edge& e = n->next[i];
      const Tensor g = i < grad_in.size() ? grad_in[i] : Tensor();
      if (g.defined() && e.active())
        TFM_CHECK(g.shape() == e.shape, "backward: node '", n->name(), "' produced a gradient of shape ",
                  shape_str(g.shape()), " for its input ", i, " of shape ", shape_str(e.shape));
      if (e.node) {
        if (g.defined()) accumulate(grads[e.node.get()], g);
        if (--deps[e.node.get()] == 0) ready.push_back(e.node.get());
      } else if (e.leaf && g.defined()) {
        if (targets && targets->wants_leaf(e.leaf.get())) {
          accumulate(targets->grads[targets->leaves.at(e.leaf.get())], g);
        } else if (accumulate_leaves) {
          accumulate_leaf(*e.leaf, g);
        }
      }
      if (leaf_hook && e.leaf && --leaf_edges[e.leaf.get()] == 0) t_leaf_final_hook(e.leaf.get());
    }
  }
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& seed) {
  TFM_CHECK(root.defined() && root.requires_grad(),
            "backward: the tensor does not require grad (no input of its graph has requires_grad set)");
  TFM_CHECK(seed.shape() == root.shape(), "backward: seed shape ", shape_str(seed.shape()),
            " differs from tensor shape ", shape_str(root.shape()));
  execute({root}, {seed}, nullptr, true);
}

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& output_grads,
                         const std::vector<Tensor>& inputs, bool accumulate_leaves) {
  TFM_CHECK(outputs.size() == output_grads.size(), "grad: ", outputs.size(), " outputs but ", output_grads.size(),
            " output gradients (one each)");
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    TFM_CHECK(outputs[i].defined() && outputs[i].requires_grad(), "grad: output ", i,
              " does not require grad (no input of its graph has requires_grad set)");
    TFM_CHECK(output_grads[i].defined() && output_grads[i].shape() == outputs[i].shape(), "grad: output ", i,
              " has shape ", shape_str(outputs[i].shape()), " but its gradient has shape ",
              output_grads[i].defined() ? shape_str(output_grads[i].shape()) : "undefined");
  }
  Targets targets;
  std::vector<std::size_t> slot(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& in = inputs[i];
    TFM_CHECK(in.defined() && in.requires_grad(), "grad: input ", i, " does not require grad");
    const std::size_t next_slot = targets.grads.size();
    // A repeated input shares one slot.
    slot[i] = in.grad_fn() ? targets.nodes.try_emplace(in.grad_fn().get(), next_slot).first->second
                           : targets.leaves.try_emplace(in.impl(), next_slot).first->second;
    if (slot[i] == next_slot) targets.grads.emplace_back();
  }
  execute(outputs, output_grads, &targets, accumulate_leaves);
  std::vector<Tensor> out(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (targets.grads[slot[i]]) out[i] = Tensor(targets.grads[slot[i]]);
  return out;
}

}  // namespace tfm::core
