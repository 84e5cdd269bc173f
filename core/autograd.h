// Reverse-mode automatic differentiation.
//
// An op whose inputs require gradients records a Node holding what its
// backward needs and nothing more (ops.h lists what each op keeps; saved
// tensors are detached handles, so the graph holds no reference cycles).
// Tensor::backward() orders the reachable nodes topologically without
// recursion, runs each node once with grad mode off, accumulates gradients
// of leaves into their .grad, and releases every node's saved tensors as
// soon as the node has run. Every gradient a node returns is checked
// against the shape of the input it belongs to.
//
// Re-entrancy: a pass keeps all its state (dependency counts, pending
// gradients) local, so a node's backward may itself build a graph (switch
// recording back on with GradModeGuard(true)) and run a nested pass on it
// with grad() or run_backward(); activation checkpointing (checkpoint.h)
// does exactly that. The only shared state is the per-thread grad mode,
// which every guard restores. A nested pass must not reach nodes of the
// outer graph that have not run yet (they would run twice); pass it a
// sub-graph built from detached inputs. Backward functions themselves run
// with grad mode off, so gradients of gradients are not recorded.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "tensor.h"

namespace tfm::core {

// Where the gradient for one input of a node goes: the node that produced
// the input, or the leaf tensor that accumulates it (or nowhere).
// `shape` is the input's shape: the gradient sent along the edge must have it.
struct Edge {
  std::shared_ptr<Node> node;
  std::shared_ptr<TensorImpl> leaf;
  Shape shape;
  bool active() const { return node || leaf; }
};

// The sequence number the next node created will get (numbers only grow, per
// process), so a caller can tell which nodes were recorded after a point.
uint64_t next_node_sequence();

class Node {
 public:
  Node();
  virtual ~Node();  // iterative: destroying a 100k-node chain does not recurse
  virtual const char* name() const = 0;
  // Given dLoss/dOutput, returns dLoss/dInput for each input, in the order
  // the inputs were recorded; an undefined Tensor means "no gradient".
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;
  // Optional, for a node with one input: add dLoss/dInput straight into
  // `acc`, the input's gradient so far (full shape, contiguous, owned by the
  // engine alone), and return true; false means "call backward()". A slice
  // adds into the region it covers instead of returning a zero-filled
  // full-size tensor for the engine to add (a fused QKV projection's three
  // slices cost two full zero-fills and two full additions otherwise). The
  // engine calls it only when the input already has a gradient.
  virtual bool backward_into(const Tensor& /*grad_output*/, Tensor& /*acc*/) { return false; }
  // Frees saved tensors. Called by the engine right after backward().
  virtual void release() = 0;

  std::vector<Edge> next;  // one per input
  bool released = false;
  const uint64_t sequence;  // creation order (see next_node_sequence)
};

using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

// A node whose backward is a closure. The closure captures only what the
// backward needs; releasing the node destroys the closure and so the saved
// tensors. This is how ops keep forward and backward side by side.
class FunctionNode final : public Node {
 public:
  FunctionNode(const char* name, BackwardFn fn) : name_(name), fn_(std::move(fn)) {}
  const char* name() const override { return name_; }
  std::vector<Tensor> backward(const Tensor& grad_output) override { return fn_(grad_output); }
  void release() override { fn_ = nullptr; }

 private:
  const char* name_;
  BackwardFn fn_;
};

// Grad mode: ops record nodes only while it is on (default on, per thread).
bool grad_enabled();
// Sets grad mode for a scope and restores the previous mode on exit (also
// when unwinding). GradModeGuard(true) inside a backward function records
// the graph of a recomputation.
class GradModeGuard {
 public:
  explicit GradModeGuard(bool enabled);
  ~GradModeGuard();
  GradModeGuard(const GradModeGuard&) = delete;
  GradModeGuard& operator=(const GradModeGuard&) = delete;

 private:
  bool prev_;
};
class NoGradGuard : public GradModeGuard {
 public:
  NoGradGuard() : GradModeGuard(false) {}
};

// True when grad mode is on and any of the inputs requires grad.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Attaches a node to `out` (which becomes a non-leaf requiring grad) whose
// edges lead to `inputs`. Call only when needs_grad(inputs) is true.
void record(Tensor& out, std::shared_ptr<Node> node, const std::vector<Tensor>& inputs);
inline void record(Tensor& out, const char* name, const std::vector<Tensor>& inputs, BackwardFn fn) {
  record(out, std::make_shared<FunctionNode>(name, std::move(fn)), inputs);
}

// Runs the backward pass from `root` seeded with `seed` (same shape):
// gradients of every leaf reached are accumulated into its .grad.
void run_backward(const Tensor& root, const Tensor& seed);

// Called during a backward pass (run_backward / Tensor::backward) for a leaf
// as soon as its .grad is final for that pass: every node of the graph with
// an edge to the leaf has run or been passed over. Data-parallel training
// uses it to start reducing a gradient bucket while backward goes on.
using LeafGradFinalHook = std::function<void(const TensorImpl* leaf)>;
// Installs `hook` on this thread for its lifetime (restoring the previous
// one). It fires only in the outermost pass on the thread, never in a
// nested pass (grad(), or run_backward inside a node's backward), and once
// per leaf reached through the graph's edges. Not covered: a leaf that only
// a nested pass reaches (activation checkpointing, reversible layers hand
// parameters their gradients that way) gets no call, and a leaf reached both
// ways may get its call before the nested pass adds to it; callers that
// need every gradient final treat the end of backward() as the point where
// all of them are.
class LeafGradFinalScope {
 public:
  explicit LeafGradFinalScope(LeafGradFinalHook hook);
  ~LeafGradFinalScope();
  LeafGradFinalScope(const LeafGradFinalScope&) = delete;
  LeafGradFinalScope& operator=(const LeafGradFinalScope&) = delete;

 private:
  LeafGradFinalHook prev_;
};

// Gradients of the roots `outputs` (seeded with `output_grads`, one each,
// same shapes) with respect to `inputs` (leaves or non-leaves), returned in
// the order of `inputs`: the total derivative over every path, undefined for
// an input no root reaches. The inputs' .grad is never touched. With
// accumulate_leaves false only the nodes on paths to an input run and no
// other leaf changes; with it true the whole graph runs as in backward()
// and every other leaf reached accumulates its gradient into .grad (how a
// recomputed sub-graph hands its parameters their gradients). Nodes that run
// release their saved tensors, as in backward().
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& output_grads,
                         const std::vector<Tensor>& inputs, bool accumulate_leaves = false);

}  // namespace tfm::core
