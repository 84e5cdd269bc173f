#include "reversible.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <unordered_set>

#include "autograd.h"
#include "checkpoint.h"
#include "error.h"
#include "ops.h"

namespace tfm::core {

namespace {

thread_local std::vector<std::any>* t_tape = nullptr;
thread_local ReversibleTapeScope::Mode t_mode = ReversibleTapeScope::Mode::record;
thread_local std::size_t t_pos = 0;

std::vector<RngState> states_of(const std::vector<Generator*>& gens) {
  std::vector<RngState> s;
  for (const Generator* g : gens) s.push_back(g->state());
  return s;
}

// Each generator once: replay guards of one generator must not nest.
std::vector<Generator*> distinct(const std::vector<Generator*>& gens) {
  std::vector<Generator*> out;
  for (std::size_t g = 0; g < gens.size(); ++g) {
    TFM_CHECK(gens[g] != nullptr, "reversible_stack: generator ", g, " is null");
    if (std::find(out.begin(), out.end(), gens[g]) == out.end()) out.push_back(gens[g]);
  }
  return out;
}

// For one recomputation of a branch: the generators set to `from` and the
// branch's tape replaying, both restored on exit.
class BranchReplay {
 public:
  BranchReplay(const std::vector<Generator*>& gens, const std::vector<RngState>& from, std::vector<std::any>* tape)
      : gens_(gens), replay_(gens.size()), scope_(tape, ReversibleTapeScope::Mode::replay) {
    for (std::size_t g = 0; g < gens.size(); ++g) replay_[g].emplace(*gens[g], from[g]);
  }
  // Checks the generators advanced to `to`, where the forward's branch left them.
  void check_advanced_to(const std::vector<RngState>& to, const char* which, std::size_t layer) const {
    for (std::size_t g = 0; g < gens_.size(); ++g) {
      const RngState now = gens_[g]->state();
      TFM_CHECK(now == to[g], "reversible_stack: generator ", g, " advanced to offset ", now.offset,
                " while recomputing ", which, " of layer ", layer, " but to ", to[g].offset,
                " in the forward; a branch must draw the same random numbers each time");
    }
  }

 private:
  const std::vector<Generator*>& gens_;
  std::vector<std::optional<RngReplayGuard>> replay_;
  ReversibleTapeScope scope_;
};

void check_branch_shape(const Tensor& out, const Shape& expected, const char* which, std::size_t layer) {
  TFM_CHECK(out.defined() && out.shape() == expected, "reversible_stack: ", which, " of layer ", layer,
            " returned shape ", out.defined() ? shape_str(out.shape()) : "undefined", ", expected ",
            shape_str(expected));
}

// One branch call replayed from `from`; checks the generators advance to `to`.
Tensor replay_branch(const ReversibleFn& fn, const Tensor& x, const std::vector<Generator*>& gens,
                     const std::vector<RngState>& from, const std::vector<RngState>& to, std::vector<std::any>* tape,
                     const char* which, std::size_t layer) {
  BranchReplay replay(gens, from, tape);
  Tensor out = fn(x);
  replay.check_advanced_to(to, which, layer);
  check_branch_shape(out, x.shape(), which, layer);
  return out;
}

// fn(in) recorded from a fresh leaf `in` (grad mode on), checked to read
// nothing else with history.
Tensor record_branch(const std::function<Tensor(const Tensor&)>& fn, const Tensor& in) {
  GradModeGuard grad_on(true);
  const uint64_t first = next_node_sequence();
  Tensor out = fn(in);
  if (out.defined())
    check_subgraph_is_local(out, first, "reversible_stack: a branch read",
                            "its argument; pass it through the stack's inputs");
  return out;
}

// Undoes one residual branch, sum = in + fn(in), given `in`: recomputes
// out = fn(in) once with grad mode on from a detached leaf, and uses that one
// graph both to reconstruct the branch's other input, sum − out (returned),
// and to back-propagate d_out through fn: its parameters accumulate .grad
// and d_in grows by ∂out/∂inᵀ·d_out.
Tensor undo_branch(const ReversibleFn& fn, const Tensor& in, const Tensor& sum, const Tensor& d_out, Tensor& d_in,
                   const char* which, std::size_t layer) {
  Tensor leaf = in.detach();
  leaf.set_requires_grad();
  Tensor out = record_branch(fn, leaf);
  check_branch_shape(out, in.shape(), which, layer);
  Tensor rebuilt;
  {
    NoGradGuard no_grad;
    rebuilt = sub(sum, out.detach());
  }
  if (out.requires_grad()) {
    const std::vector<Tensor> got = grad({out}, {d_out}, {leaf}, /*accumulate_leaves=*/true);
    if (got[0].defined()) d_in = add(d_in, got[0]);
  }
  return rebuilt;
}

// undo_branch one slice at a time (ReversibleLayer::g_slices): each slice of
// `in` is a leaf of its own, and only its sub-graph is alive while it runs.
Tensor undo_branch_sliced(const ReversibleSlices& sl, const Tensor& in, const Tensor& sum, const Tensor& d_out,
                          Tensor& d_in, const char* which, std::size_t layer) {
  TFM_CHECK(sl.fn && sl.dim >= 0 && sl.dim < in.dim() && sl.count >= 1, "reversible_stack: g_slices of layer ",
            layer, " gave dim ", sl.dim, " and count ", sl.count, " (need a slice function, 0 <= dim < ", in.dim(),
            ", count >= 1)");
  const int64_t n = in.size(sl.dim), count = std::max<int64_t>(1, std::min(sl.count, n));
  std::vector<Tensor> rebuilt, d_parts;
  bool any_grad = false;
  for (int64_t c = 0; c < count; ++c) {
    const int64_t b = c * n / count, e = (c + 1) * n / count;
    Tensor leaf;
    {
      NoGradGuard no_grad;
      leaf = in.slice(sl.dim, b, e).contiguous().detach();
    }
    leaf.set_requires_grad();
    Tensor out = record_branch([&](const Tensor& x) { return sl.fn(x, b, e); }, leaf);
    check_branch_shape(out, leaf.shape(), which, layer);
    {
      NoGradGuard no_grad;
      rebuilt.push_back(sub(sum.slice(sl.dim, b, e), out.detach()));
    }
    Tensor d;
    if (out.requires_grad()) {
      const Tensor d_out_slice = d_out.slice(sl.dim, b, e).contiguous();
      d = grad({out}, {d_out_slice}, {leaf}, /*accumulate_leaves=*/true)[0];
    }
    any_grad = any_grad || d.defined();
    d_parts.push_back(d.defined() ? d : zeros(leaf.shape()));
  }
  NoGradGuard no_grad;
  if (any_grad) d_in = add(d_in, concat(d_parts, sl.dim));
  return concat(rebuilt, sl.dim);
}

struct ReversibleSaved {
  std::vector<ReversibleLayer> layers;
  std::vector<Generator*> generators;
  ReversibleRngTrace trace;
  std::vector<std::vector<std::any>> f_tapes, g_tapes;
  Tensor y1, y2;  // outputs of the last layer (detached views of the node's output)
  bool x1_requires_grad = false, x2_requires_grad = false;
};

// Forward of all layers with grad mode off; records the generator states
// (and, when `tapes`, the branches' tapes).
std::pair<Tensor, Tensor> run_forward(const std::vector<ReversibleLayer>& layers, Tensor x1, Tensor x2,
                                      const std::vector<Generator*>& gens, ReversibleRngTrace& trace,
                                      std::vector<std::vector<std::any>>* f_tapes,
                                      std::vector<std::vector<std::any>>* g_tapes) {
  trace = ReversibleRngTrace{};
  if (f_tapes) f_tapes->assign(layers.size(), {});
  if (g_tapes) g_tapes->assign(layers.size(), {});
  for (std::size_t i = 0; i < layers.size(); ++i) {
    trace.f_before.push_back(states_of(gens));
    Tensor f;
    {
      std::optional<ReversibleTapeScope> scope;
      if (f_tapes) scope.emplace(&(*f_tapes)[i], ReversibleTapeScope::Mode::record);
      f = layers[i].f(x2);
    }
    check_branch_shape(f, x2.shape(), "f", i);
    Tensor y1 = add(x1, f);
    trace.g_before.push_back(states_of(gens));
    Tensor g;
    {
      std::optional<ReversibleTapeScope> scope;
      if (g_tapes) scope.emplace(&(*g_tapes)[i], ReversibleTapeScope::Mode::record);
      g = layers[i].g(y1);
    }
    check_branch_shape(g, y1.shape(), "g", i);
    x2 = add(x2, g);
    x1 = y1;
  }
  trace.after = states_of(gens);
  return {x1, x2};
}

// The generator states after branch f or g of layer i: where the next branch starts.
const std::vector<RngState>& after_f(const ReversibleRngTrace& t, std::size_t i) { return t.g_before[i]; }
const std::vector<RngState>& after_g(const ReversibleRngTrace& t, std::size_t i) {
  return i + 1 < t.f_before.size() ? t.f_before[i + 1] : t.after;
}

// Layer by layer from the last: recompute each branch once on the
// reconstructed input, and use that graph to reconstruct and to
// back-propagate; see the header.
std::vector<Tensor> reversible_backward(ReversibleSaved& s, const Tensor& grad_output) {
  Tensor y1 = s.y1, y2 = s.y2;
  Tensor dy1 = grad_output.slice(0, 0, 1).squeeze(0).contiguous();
  Tensor dy2 = grad_output.slice(0, 1, 2).squeeze(0).contiguous();
  for (std::size_t n = s.layers.size(); n-- > 0;) {
    const ReversibleLayer& layer = s.layers[n];
    // G: Y2 = X2 + G(Y1), so X2 = Y2 − G(Y1) and dY1 += ∂G/∂Y1ᵀ·dY2.
    Tensor x2;
    {
      BranchReplay replay(s.generators, s.trace.g_before[n], &s.g_tapes[n]);
      if (layer.g_slices) {
        ReversibleSlices sl;
        {
          NoGradGuard no_grad;
          sl = layer.g_slices(y1);
        }
        x2 = undo_branch_sliced(sl, y1, y2, dy2, dy1, "g", n);
      } else {
        x2 = undo_branch(layer.g, y1, y2, dy2, dy1, "g", n);
      }
      replay.check_advanced_to(after_g(s.trace, n), "g", n);
    }
    // F: Y1 = X1 + F(X2), so X1 = Y1 − F(X2) and dX2 = dY2 + ∂F/∂X2ᵀ·dY1.
    Tensor x1;
    {
      BranchReplay replay(s.generators, s.trace.f_before[n], &s.f_tapes[n]);
      x1 = undo_branch(layer.f, x2, y1, dy1, dy2, "f", n);
      replay.check_advanced_to(after_f(s.trace, n), "f", n);
    }
    y1 = x1;
    y2 = x2;
    s.f_tapes[n].clear();
    s.g_tapes[n].clear();
  }
  return {s.x1_requires_grad ? dy1 : Tensor(), s.x2_requires_grad ? dy2 : Tensor()};
}

class ReversibleNode final : public Node {
 public:
  explicit ReversibleNode(ReversibleSaved s) : saved_(std::move(s)) {}
  const char* name() const override { return "reversible_stack"; }
  std::vector<Tensor> backward(const Tensor& grad_output) override { return reversible_backward(saved_, grad_output); }
  void release() override { saved_ = ReversibleSaved{}; }

 private:
  ReversibleSaved saved_;
};

void check_args(const std::vector<ReversibleLayer>& layers, const Tensor& x1, const Tensor& x2) {
  TFM_CHECK(!layers.empty(), "reversible_stack: no layers given");
  for (std::size_t i = 0; i < layers.size(); ++i)
    TFM_CHECK(layers[i].f && layers[i].g, "reversible_stack: layer ", i, " lacks its f or g function");
  TFM_CHECK(x1.defined() && x2.defined() && x1.shape() == x2.shape(), "reversible_stack: x1 ",
            x1.defined() ? shape_str(x1.shape()) : "undefined", " and x2 ",
            x2.defined() ? shape_str(x2.shape()) : "undefined", " must be defined and of one shape");
}

}  // namespace

ReversibleTapeScope::ReversibleTapeScope(std::vector<std::any>* tape, Mode mode)
    : prev_tape_(t_tape), prev_mode_(t_mode), prev_pos_(t_pos) {
  t_tape = tape;
  t_mode = mode;
  t_pos = 0;
}

ReversibleTapeScope::~ReversibleTapeScope() {
  t_tape = prev_tape_;
  t_mode = prev_mode_;
  t_pos = prev_pos_;
}

bool tape_active() { return t_tape != nullptr; }
bool tape_replaying() { return t_tape && t_mode == ReversibleTapeScope::Mode::replay; }

void tape_record(std::any value) {
  TFM_CHECK(t_tape && t_mode == ReversibleTapeScope::Mode::record, "reversible tape: tape_record outside a recording scope");
  t_tape->push_back(std::move(value));
}

const std::any& tape_replay() {
  TFM_CHECK(tape_replaying(), "reversible tape: tape_replay outside a replaying scope");
  TFM_CHECK(t_pos < t_tape->size(), "reversible tape: the recomputation asked for value ", t_pos + 1, " but the forward recorded ",
            t_tape->size());
  return (*t_tape)[t_pos++];
}

Tensor reversible_forward(const std::vector<ReversibleLayer>& layers, const Tensor& x1, const Tensor& x2,
                          const std::vector<Generator*>& generators, ReversibleRngTrace* trace) {
  check_args(layers, x1, x2);
  ReversibleRngTrace local;
  auto [y1, y2] = run_forward(layers, x1, x2, distinct(generators), trace ? *trace : local, nullptr, nullptr);
  return stack({y1, y2}, 0);
}

std::pair<Tensor, Tensor> reversible_inverse(const std::vector<ReversibleLayer>& layers, const Tensor& y1_in,
                                             const Tensor& y2_in, const std::vector<Generator*>& generators,
                                             const ReversibleRngTrace& trace) {
  check_args(layers, y1_in, y2_in);
  const std::vector<Generator*> gens = distinct(generators);
  TFM_CHECK(trace.f_before.size() == layers.size() && trace.g_before.size() == layers.size(),
            "reversible_inverse: the trace covers ", trace.f_before.size(), " layers, the stack has ", layers.size());
  NoGradGuard no_grad;
  Tensor y1 = y1_in, y2 = y2_in;
  for (std::size_t n = layers.size(); n-- > 0;) {
    Tensor x2 = sub(y2, replay_branch(layers[n].g, y1, gens, trace.g_before[n], after_g(trace, n), nullptr, "g", n));
    Tensor x1 = sub(y1, replay_branch(layers[n].f, x2, gens, trace.f_before[n], after_f(trace, n), nullptr, "f", n));
    y1 = x1;
    y2 = x2;
  }
  return {y1, y2};
}

Tensor reversible_stack(const std::vector<ReversibleLayer>& layers, const Tensor& x1, const Tensor& x2,
                        const std::vector<Generator*>& generators) {
  check_args(layers, x1, x2);
  if (!needs_grad({&x1, &x2})) {
    ReversibleRngTrace unused;
    auto [y1, y2] = run_forward(layers, x1, x2, distinct(generators), unused, nullptr, nullptr);
    return stack({y1, y2}, 0);
  }
  ReversibleSaved s;
  s.layers = layers;
  s.generators = distinct(generators);
  Tensor out;
  {
    NoGradGuard no_grad;
    auto [y1, y2] = run_forward(layers, x1, x2, s.generators, s.trace, &s.f_tapes, &s.g_tapes);
    out = stack({y1, y2}, 0);
  }
  out = out.detach();
  s.y1 = out.slice(0, 0, 1).squeeze(0);
  s.y2 = out.slice(0, 1, 2).squeeze(0);
  s.x1_requires_grad = x1.requires_grad();
  s.x2_requires_grad = x2.requires_grad();
  record(out, std::make_shared<ReversibleNode>(std::move(s)), {x1, x2});
  return out;
}

}  // namespace tfm::core
