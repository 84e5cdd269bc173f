// Reverse-mode automatic differentiation.
//
// An op whose inputs require gradients records a Node holding what its
// backward needs (saved tensors are detached handles, so the graph holds no
// reference cycles). Tensor::backward() orders the reachable nodes
// topologically without recursion, runs each node once with grad mode off,
// accumulates gradients of leaves into their .grad, and releases every
// node's saved tensors as soon as the node has run.
#pragma once

#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include "tensor.h"

namespace tfm::core {

// Where the gradient for one input of a node goes: the node that produced
// the input, or the leaf tensor that accumulates it (or nowhere).
struct Edge {
  std::shared_ptr<Node> node;
  std::shared_ptr<TensorImpl> leaf;
  bool active() const { return node || leaf; }
};

class Node {
 public:
  virtual ~Node();  // iterative: destroying a 100k-node chain does not recurse
  virtual const char* name() const = 0;
  // Given dLoss/dOutput, returns dLoss/dInput for each input, in the order
  // the inputs were recorded; an undefined Tensor means "no gradient".
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;
  // Frees saved tensors. Called by the engine right after backward().
  virtual void release() = 0;

  std::vector<Edge> next;  // one per input
  bool released = false;
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
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
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

// Runs the backward pass from `root` seeded with `seed` (same shape).
void run_backward(const Tensor& root, const Tensor& seed);

}  // namespace tfm::core
