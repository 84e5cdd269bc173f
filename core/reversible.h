// Reversible residual stacks (RevNet, Gomez et al. 2017; Reformer, Kitaev et
// al. 2020): activations of only one layer are alive in backward, whatever
// the depth.
//
//   Y1 = X1 + F_i(X2),   Y2 = X2 + G_i(Y1)          (layer i, forward)
//   X2 = Y2 − G_i(Y1),   X1 = Y1 − F_i(X2)          (its inverse)
//
//   Tensor y = reversible_stack(layers, x1, x2, {gen.get()});  // [2, ...]
//   Tensor y1 = y.slice(0, 0, 1).squeeze(0), y2 = y.slice(0, 1, 2).squeeze(0);
//
// Forward: runs every layer with grad mode off, so nothing inside F or G is
// recorded; the node keeps only the output (Y1, Y2 of the last layer, the
// tensor it returns) and the (seed, offset) of every listed generator before
// each F_i and G_i and after the last layer.
// Backward (reversible_backward), layer by layer from the last: recompute
// G_i(Y1) once, with grad mode on from a detached Y1 and the generators
// replayed to their state before G_i (RngReplayGuard: dropout draws the same
// masks), and use that one graph twice: reconstruct X2 = Y2 − G_i(Y1) and
// back-propagate dY2 through it (its parameters accumulate their .grad, Y1's
// gradient becomes dY1 + ∂G/∂Y1ᵀ·dY2); then the same for F_i(X2), giving X1,
// dX1 = dY1' and dX2 = dY2 + ∂F/∂X2ᵀ·dY1'. So each branch runs twice per
// step (forward, recomputation) and back-propagates once. With g_slices, G is
// recomputed, reconstructed and back-propagated one slice at a time. The
// reconstructed inputs and their gradients feed layer i − 1; dX1, dX2 go to
// the outer pass. Afterwards each generator is back where it was.
// (A branch that itself recomputes, e.g. a chunked FeedForward under
// core::checkpoint, would run a third time inside that backward: the model
// gives its chunked feed-forward branch as g_slices instead.)
//
// Reconstruction is exact up to rounding (one add and one subtract of the
// same float per layer), so any state a branch draws from its input and not
// from a generator (e.g. LSH buckets) may differ in the recomputation; a
// branch that must replay such state saves it itself (ReversibleTape below).
//
// Contract for F and G (as core::checkpoint's fn): deterministic given the
// input and the listed generators' states (each listed generator must
// advance by the same amount in the recomputation, checked); every tensor
// with autograd history they read comes through their argument (captured
// tensors must be leaves or constants; checked); they return a tensor of
// the argument's shape. Module state they read must not change between the
// forward and the backward.
//
// When grad mode is off or neither input requires grad, the layers simply
// run (recording as usual); the result has the same [2, ...] layout.
#pragma once

#include <any>
#include <functional>
#include <vector>

#include "rng.h"
#include "tensor.h"

namespace tfm::core {

using ReversibleFn = std::function<Tensor(const Tensor&)>;

// How to compute a branch one slice of its input at a time: for the slices
// [c·n/count, (c+1)·n/count) along `dim` (n = x.size(dim), count capped at
// n), fn(x.slice(dim, b, e), b, e) is g(x).slice(dim, b, e).
struct ReversibleSlices {
  int64_t dim = 0;
  int64_t count = 1;
  std::function<Tensor(const Tensor& x_slice, int64_t begin, int64_t end)> fn;
};

struct ReversibleLayer {
  ReversibleFn f;  // Y1 = X1 + f(X2)
  ReversibleFn g;  // Y2 = X2 + g(Y1)
  // Optional (the chunked feed-forward, model.ff_chunks): g_slices(Y1) says
  // how to compute g slice by slice. The backward calls it with grad mode off,
  // the generators where g started and g's tape replaying; it must draw what
  // g draws (e.g. the dropout mask of all of Y1), and the slice functions
  // nothing more. The backward then recomputes, reconstructs and
  // back-propagates g one slice at a time (only one slice's activations
  // alive). The forward always calls g.
  std::function<ReversibleSlices(const Tensor& x)> g_slices = nullptr;
};

// x1, x2: the same shape S. Returns stack({Y1, Y2}) [2, S...] of the last layer.
Tensor reversible_stack(const std::vector<ReversibleLayer>& layers, const Tensor& x1, const Tensor& x2,
                        const std::vector<Generator*>& generators = {});

// The generator states a forward started each branch from: f_before[i][g]
// before f of layer i, g_before[i][g] before its g, and after[g] at the end.
struct ReversibleRngTrace {
  std::vector<std::vector<RngState>> f_before, g_before;
  std::vector<RngState> after;
};

// The plain forward (no node), with the generator states it used; and its
// inverse: X1, X2 reconstructed from Y1, Y2 by replaying the trace (grad mode
// off). For tests and inspection; reversible_stack's backward does the same
// reconstruction layer by layer.
Tensor reversible_forward(const std::vector<ReversibleLayer>& layers, const Tensor& x1, const Tensor& x2,
                          const std::vector<Generator*>& generators, ReversibleRngTrace* trace);
std::pair<Tensor, Tensor> reversible_inverse(const std::vector<ReversibleLayer>& layers, const Tensor& y1,
                                             const Tensor& y2, const std::vector<Generator*>& generators,
                                             const ReversibleRngTrace& trace);

// Replay of state a branch derives from its input rather than from a
// generator (LSH hashing): in the forward of a reversible stack (or any
// recording scope) a branch calls tape_record(value) for each such decision;
// in the recomputation tape_replay() hands the values back in the same
// order. The stack opens one tape per branch call (ReversibleTapeScope).
// Outside any scope tape_active() is false and a branch decides as usual.
class ReversibleTapeScope {
 public:
  enum class Mode { record, replay };
  ReversibleTapeScope(std::vector<std::any>* tape, Mode mode);
  ~ReversibleTapeScope();
  ReversibleTapeScope(const ReversibleTapeScope&) = delete;
  ReversibleTapeScope& operator=(const ReversibleTapeScope&) = delete;

 private:
  std::vector<std::any>* prev_tape_;
  Mode prev_mode_;
  std::size_t prev_pos_;
};
// True inside a scope; tape_replaying() when that scope replays.
bool tape_active();
bool tape_replaying();
// Appends a value (record scope).
void tape_record(std::any value);
// The next recorded value (replay scope); throws when the recomputation asks
// for more values than the forward recorded.
const std::any& tape_replay();

}  // namespace tfm::core
