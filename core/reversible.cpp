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

// One branch call with the generators set to `from` (restored afterwards)
// and the branch's tape replayed; checks they advance to `to`.
Tensor replay_branch(const ReversibleFn& fn, const Tensor& x, const std::vector<Generator*>& gens,
                     const std::vector<RngState>& from, const std::vector<RngState>& to, std::vector<std::any>* tape,
                     const char* which, std::size_t layer) {
  std::vector<std::optional<RngReplayGuard>> replay(gens.size());
  for (std::size_t g = 0; g < gens.size(); ++g) replay[g].emplace(*gens[g], from[g]);
  Tensor out;
  {
    ReversibleTapeScope scope(tape, ReversibleTapeScope::Mode::replay);
    out = fn(x);
  }
  for (std::size_t g = 0; g < gens.size(); ++g) {
    const RngState now = gens[g]->state();
    TFM_CHECK(now == to[g], "reversible_stack: generator ", g, " advanced to offset ", now.offset, " while recomputing ",
              which, " of layer ", layer, " but to ", to[g].offset,
              " in the forward; a branch must draw the same random numbers each time");
  }
  TFM_CHECK(out.defined() && out.shape() == x.shape(), "reversible_stack: ", which, " of layer ", layer,
            " returned shape ", out.defined() ? shape_str(out.shape()) : "undefined", ", expected ",
            shape_str(x.shape()));
  return out;
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
    TFM_CHECK(f.defined() && f.shape() == x2.shape(), "reversible_stack: f of layer ", i, " returned shape ",
              f.defined() ? shape_str(f.shape()) : "undefined", ", expected ", shape_str(x2.shape()));
    Tensor y1 = add(x1, f);
    trace.g_before.push_back(states_of(gens));
    Tensor g;
    {
      std::optional<ReversibleTapeScope> scope;
      if (g_tapes) scope.emplace(&(*g_tapes)[i], ReversibleTapeScope::Mode::record);
      g = layers[i].g(y1);
    }
    TFM_CHECK(g.defined() && g.shape() == y1.shape(), "reversible_stack: g of layer ", i, " returned shape ",
              g.defined() ? shape_str(g.shape()) : "undefined", ", expected ", shape_str(y1.shape()));
    x2 = add(x2, g);
    x1 = y1;
  }
  trace.after = states_of(gens);
  return {x1, x2};
}

// The generator states after branch `g_branch` of layer i: before the next branch.
const std::vector<RngState>& after_f(const ReversibleRngTrace& t, std::size_t i) { return t.g_before[i]; }
const std::vector<RngState>& after_g(const ReversibleRngTrace& t, std::size_t i) {
  return i + 1 < t.f_before.size() ? t.f_before[i + 1] : t.after;
}

// Layer by layer from the last: recompute each branch on the reconstructed
// input, reconstruct, and back-propagate; see the header.
std::vector<Tensor> reversible_backward(ReversibleSaved& s, const Tensor& grad_output) {
  Tensor y1 = s.y1, y2 = s.y2;
  Tensor dy1 = grad_output.slice(0, 0, 1).squeeze(0).contiguous();
  Tensor dy2 = grad_output.slice(0, 1, 2).squeeze(0).contiguous();
  for (std::size_t n = s.layers.size(); n-- > 0;) {
    // G: Y2 = X2 + G(Y1).
    Tensor y1_leaf = y1.detach();
    y1_leaf.set_requires_grad();
    Tensor g_out;
    {
      GradModeGuard grad_on(true);
      const uint64_t first = next_node_sequence();
      g_out = replay_branch(s.layers[n].g, y1_leaf, s.generators, s.trace.g_before[n], after_g(s.trace, n),
                            &s.g_tapes[n], "g", n);
      check_subgraph_is_local(g_out, first, "reversible_stack: a branch read",
                              "its argument; pass it through the stack's inputs");
    }
    Tensor x2;
    {
      NoGradGuard no_grad;
      x2 = sub(y2, g_out.detach());
    }
    if (g_out.requires_grad()) {
      const std::vector<Tensor> got = grad({g_out}, {dy2}, {y1_leaf}, /*accumulate_leaves=*/true);
      if (got[0].defined()) dy1 = add(dy1, got[0]);
    }
    g_out = Tensor();
    // F: Y1 = X1 + F(X2).
    Tensor x2_leaf = x2.detach();
    x2_leaf.set_requires_grad();
    Tensor f_out;
    {
      GradModeGuard grad_on(true);
      const uint64_t first = next_node_sequence();
      f_out = replay_branch(s.layers[n].f, x2_leaf, s.generators, s.trace.f_before[n], after_f(s.trace, n),
                            &s.f_tapes[n], "f", n);
      check_subgraph_is_local(f_out, first, "reversible_stack: a branch read",
                              "its argument; pass it through the stack's inputs");
    }
    Tensor x1;
    {
      NoGradGuard no_grad;
      x1 = sub(y1, f_out.detach());
    }
    if (f_out.requires_grad()) {
      const std::vector<Tensor> got = grad({f_out}, {dy1}, {x2_leaf}, /*accumulate_leaves=*/true);
      if (got[0].defined()) dy2 = add(dy2, got[0]);
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
