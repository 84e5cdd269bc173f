// Activation checkpointing: trade compute for memory by recomputing a
// function's forward inside the backward pass instead of keeping its
// intermediate tensors.
//
//   y = checkpoint(fn, {x, memory}, {gen.get()});
//
// Forward: runs fn(inputs) with grad mode off, so nothing inside fn is
// recorded or saved; the node keeps only handles to `inputs` and the
// (seed, offset) of every listed generator before and after fn.
// Backward (checkpoint_backward): re-runs fn with grad mode on on detached
// copies of the inputs, with every generator replayed from its captured
// state (RngReplayGuard, so dropout draws the same masks), then calls
// grad() on that sub-graph: the inputs' gradients are returned to the outer
// pass, and the gradients of the leaves reached inside fn (its parameters)
// are accumulated into their .grad exactly as an ordinary backward would.
// Afterwards each generator is back where it was before the recomputation.
//
// Contract for fn:
// - It must be deterministic given its inputs and the generators' states:
//   every generator it draws from must be listed (an unlisted one would be
//   advanced a second time and give different masks; the listed ones are
//   checked to advance by exactly the same amount as in the forward).
// - Every tensor with autograd history that it reads must come through
//   `inputs`; tensors it captures must be leaves (parameters) or constants.
//   Backward throws naming the node when the recomputed graph reaches a
//   node recorded outside fn.
// - It returns one tensor (a new tensor; returning an input is allowed).
// - Module state it reads (training mode, ...) must not change between the
//   forward and the backward.
//
// When grad mode is off or no input requires grad, fn simply runs (and
// records as usual, so parameters it reads still get gradients).
#pragma once

#include <functional>
#include <vector>

#include "rng.h"
#include "tensor.h"

namespace tfm::core {

// For recomputation nodes (checkpoint, reversible_stack): throws
// "<who_read> a tensor with autograd history (from op 'x') that is not
// <what_is_allowed>" when the graph recorded from `out` reaches a node created
// before `first_sequence` (next_node_sequence() when the recomputation
// started), i.e. the recomputed function captured a tensor instead of
// receiving it as an input.
void check_subgraph_is_local(const Tensor& out, uint64_t first_sequence, const char* who_read,
                             const char* what_is_allowed);

using CheckpointFn = std::function<Tensor(const std::vector<Tensor>& inputs)>;

Tensor checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs,
                  const std::vector<Generator*>& generators = {});

}  // namespace tfm::core
