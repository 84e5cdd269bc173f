// Where a training step's time goes, per op kind (`train.profile: N`).
//
// Scoped wall-clock timers keyed by an op kind and the phase they ran in
// (forward, backward, or neither: optimizer, data). Off by default; a
// disabled scope costs one relaxed atomic load and a branch.
//
// Two sorts of scope:
//  - OpScope: opened by an op's forward (ops_*.cpp, flash_attention.cpp) and
//    by the autograd engine around each node's backward. Only the outermost
//    op scope on a thread times anything, so an op built from other ops (a
//    backward calling matmul, cross-entropy calling log-sum-exp) is charged
//    once, to its own kind.
//  - Frame: always opens (autograd bookkeeping, optimizer, data). Its time is
//    exclusive: whatever scopes open inside it is charged to them and carved
//    out of it. record() runs inside an op scope as an autograd frame, so
//    graph recording shows as bookkeeping, not as the op.
// Times are exclusive throughout, so the rows add up to at most the wall
// time of the profiled steps; the rest (layer code between ops, Python-free
// glue, logging) is what the table calls "unattributed".
//
// Thread safety: each thread keeps its own scope stack; totals are atomics.
// Kernels' OpenMP workers open no scopes, so the table counts the calling
// thread's wall time (OpenMP fork/join and worker idle fall into the kind
// whose kernel opened the region).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace tfm::core::profile {

enum class Kind : int {
  matmul,        // matmul, linear (oneDNN)
  attention,     // fused attention kernels (flash, local, LSH)
  norm,          // layer_norm, rms_norm
  elementwise,   // arithmetic, activations, comparisons, where, dropout
  softmax_xent,  // softmax, log_softmax, cross_entropy, linear_cross_entropy (its products included)
  embedding,     // embedding lookup and its scatter-add
  reduce,        // sum, mean, max, sum_to
  shape,         // copies made by shape ops (contiguous, concat, clone, ...)
  other_op,      // ops of no listed kind (checkpoint, reversible, ...)
  autograd,      // graph recording and the backward engine's own work
  optimizer,     // gradient norm / clipping, the update, zero_grad
  data,          // batch sampling
  count
};
const char* kind_name(Kind k);
// Kind of an autograd node by its name() ("linear" -> matmul, ...).
Kind kind_of_node(const char* node_name);

enum class Phase : int { forward, backward, none, count };

namespace detail {
inline std::atomic<bool> g_enabled{false};
// Pushes a scope on this thread's stack; false when it is full (nothing timed).
bool open(Kind k, bool op);
void close();
}  // namespace detail

inline bool enabled() { return detail::g_enabled.load(std::memory_order_relaxed); }
// Clears all totals.
void reset();
// Turns collection on or off (totals are kept, so steps can be collected
// with pauses between them).
void set_enabled(bool on);

class OpScope {
 public:
  explicit OpScope(Kind k) {
    if (enabled()) open(k);
  }
  ~OpScope() {
    if (active_) detail::close();
  }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  void open(Kind k);
  bool active_ = false;
};

class Frame {
 public:
  explicit Frame(Kind k) {
    if (enabled()) active_ = detail::open(k, false);
  }
  ~Frame() {
    if (active_) detail::close();
  }
  Frame(const Frame&) = delete;
  Frame& operator=(const Frame&) = delete;

 private:
  bool active_ = false;
};

// Marks the calling thread as running a backward pass for a scope (the
// engine's execute()); restores the previous phase on exit.
class BackwardPhase {
 public:
  BackwardPhase();
  ~BackwardPhase();
  BackwardPhase(const BackwardPhase&) = delete;
  BackwardPhase& operator=(const BackwardPhase&) = delete;

 private:
  bool prev_;
};

struct Row {
  Kind kind;
  double seconds[static_cast<int>(Phase::count)] = {};
  int64_t calls[static_cast<int>(Phase::count)] = {};
  // CPU time of the whole process (all OpenMP threads) in the same scopes:
  // on a busy machine it says what the work costs when wall time also
  // counts waiting for a descheduled worker.
  double cpu_seconds[static_cast<int>(Phase::count)] = {};
  double total_seconds() const;
  double total_cpu_seconds() const;
  int64_t total_calls() const;
};
// Totals collected since reset(), one row per kind (all kinds, in enum order).
std::vector<Row> rows();

// The table printed after the profiled steps, per step: one line per kind
// with any calls, forward / backward / other wall ms and calls, total ms,
// percent of `wall_seconds` (the profiled steps' wall time) and CPU ms, then
// "unattributed" (the time no scope covered) and the step totals
// (`cpu_seconds`: the process CPU time of the profiled steps).
std::string format_table(const std::vector<Row>& rows, double wall_seconds, int64_t steps, double cpu_seconds);
// Process CPU time in ns (CLOCK_PROCESS_CPUTIME_ID), for the step totals.
int64_t process_cpu_ns();

}  // namespace tfm::core::profile
