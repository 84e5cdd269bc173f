#include "profile.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace tfm::core::profile {

namespace {

constexpr int kKinds = static_cast<int>(Kind::count);
constexpr int kPhases = static_cast<int>(Phase::count);
constexpr int kMaxDepth = 64;

std::atomic<int64_t> g_ns[kKinds][kPhases];
std::atomic<int64_t> g_calls[kKinds][kPhases];
std::atomic<int64_t> g_cpu_ns[kKinds][kPhases];

struct Open {
  Kind kind;
  Phase phase;
  bool op;
  int64_t start_ns, child_ns;
  int64_t start_cpu_ns, child_cpu_ns;
};

struct ThreadState {
  Open stack[kMaxDepth];
  int depth = 0;
  bool in_op = false;  // an op scope is open: nested op scopes time nothing
  bool backward = false;
};
thread_local ThreadState t_state;

// CPU time of the whole process (every OpenMP worker included). A system
// call (~0.3 us), paid only while profiling.
int64_t cpu_now_ns() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

const char* kind_name(Kind k) {
  static const char* const names[kKinds] = {"matmul",   "attention", "norms",    "elementwise", "softmax/xent",
                                            "embedding", "reductions", "shape copies", "other ops", "autograd",
                                            "optimizer", "data"};
  const int i = static_cast<int>(k);
  return i >= 0 && i < kKinds ? names[i] : "?";
}

Kind kind_of_node(const char* name) {
  struct Entry {
    const char* name;
    Kind kind;
  };
  static const Entry table[] = {
      {"matmul", Kind::matmul},           {"linear", Kind::matmul},
      {"flash_attention", Kind::attention}, {"local_attention", Kind::attention},
      {"lsh_attention", Kind::attention}, {"layer_norm", Kind::norm},
      {"rms_norm", Kind::norm},           {"softmax", Kind::softmax_xent},
      {"log_softmax", Kind::softmax_xent}, {"cross_entropy", Kind::softmax_xent},
      {"linear_cross_entropy", Kind::softmax_xent},
      {"embedding", Kind::embedding},     {"sum", Kind::reduce},
      {"mean", Kind::reduce},             {"max", Kind::reduce},
      {"sum_to", Kind::reduce},           {"reshape", Kind::shape},
      {"permute", Kind::shape},           {"slice", Kind::shape},
      {"expand", Kind::shape},            {"concat", Kind::shape},
      {"clone", Kind::shape},             {"stack", Kind::shape},
      {"contiguous", Kind::shape},        {"checkpoint", Kind::other_op},
      {"reversible_stack", Kind::other_op},
  };
  for (const Entry& e : table)
    if (std::strcmp(e.name, name) == 0) return e.kind;
  return Kind::elementwise;  // every other recorded op is elementwise (add, gelu, where, dropout, ...)
}

namespace detail {

bool open(Kind k, bool op) {
  ThreadState& s = t_state;
  if (s.depth == kMaxDepth) return false;
  s.stack[s.depth++] = Open{k, s.backward ? Phase::backward : Phase::forward, op, now_ns(), 0, cpu_now_ns(), 0};
  if (op) s.in_op = true;
  return true;
}

void close() {
  ThreadState& s = t_state;
  const Open o = s.stack[--s.depth];
  const int64_t elapsed = now_ns() - o.start_ns;
  const int64_t cpu = cpu_now_ns() - o.start_cpu_ns;
  // Optimizer and data frames (and scopes inside them) are neither forward nor backward.
  Phase phase = o.phase;
  if (o.kind == Kind::optimizer || o.kind == Kind::data) phase = Phase::none;
  for (int i = s.depth - 1; i >= 0 && phase != Phase::none; --i)
    if (s.stack[i].kind == Kind::optimizer || s.stack[i].kind == Kind::data) phase = Phase::none;
  const int ki = static_cast<int>(o.kind), pi = static_cast<int>(phase);
  g_ns[ki][pi].fetch_add(elapsed - o.child_ns, std::memory_order_relaxed);
  g_calls[ki][pi].fetch_add(1, std::memory_order_relaxed);
  g_cpu_ns[ki][pi].fetch_add(cpu - o.child_cpu_ns, std::memory_order_relaxed);
  if (s.depth > 0) {
    s.stack[s.depth - 1].child_ns += elapsed;
    s.stack[s.depth - 1].child_cpu_ns += cpu;
  }
  if (o.op) s.in_op = false;
}

}  // namespace detail

void OpScope::open(Kind k) {
  if (t_state.in_op) return;
  active_ = detail::open(k, true);
}

BackwardPhase::BackwardPhase() : prev_(t_state.backward) { t_state.backward = true; }
BackwardPhase::~BackwardPhase() { t_state.backward = prev_; }

void reset() {
  for (int k = 0; k < kKinds; ++k)
    for (int p = 0; p < kPhases; ++p) {
      g_ns[k][p].store(0, std::memory_order_relaxed);
      g_calls[k][p].store(0, std::memory_order_relaxed);
      g_cpu_ns[k][p].store(0, std::memory_order_relaxed);
    }
}

void set_enabled(bool on) { detail::g_enabled.store(on, std::memory_order_relaxed); }

double Row::total_seconds() const {
  double t = 0;
  for (double s : seconds) t += s;
  return t;
}

double Row::total_cpu_seconds() const {
  double t = 0;
  for (double s : cpu_seconds) t += s;
  return t;
}

int64_t Row::total_calls() const {
  int64_t c = 0;
  for (int64_t n : calls) c += n;
  return c;
}

std::vector<Row> rows() {
  std::vector<Row> out;
  for (int k = 0; k < kKinds; ++k) {
    Row r{static_cast<Kind>(k)};
    for (int p = 0; p < kPhases; ++p) {
      r.seconds[p] = 1e-9 * static_cast<double>(g_ns[k][p].load(std::memory_order_relaxed));
      r.calls[p] = g_calls[k][p].load(std::memory_order_relaxed);
      r.cpu_seconds[p] = 1e-9 * static_cast<double>(g_cpu_ns[k][p].load(std::memory_order_relaxed));
    }
    out.push_back(r);
  }
  return out;
}

std::string format_table(const std::vector<Row>& rows, double wall_seconds, int64_t steps, double cpu_seconds) {
  std::string out;
  char line[256];
  const double per_step = steps > 0 ? 1e3 / static_cast<double>(steps) : 0.0;
  std::snprintf(line, sizeof line, "profile of %lld steps, %.2f ms/step wall, %.2f ms/step CPU (per step)\n",
                static_cast<long long>(steps), wall_seconds * per_step, cpu_seconds * per_step);
  out += line;
  std::snprintf(line, sizeof line, "%-13s %8s %6s %8s %6s %8s %6s %9s %6s %8s\n", "kind", "fwd ms", "calls", "bwd ms",
                "calls", "other ms", "calls", "total ms", "%", "cpu ms");
  out += line;
  const double pct = wall_seconds > 0 ? 100.0 / wall_seconds : 0.0;
  double covered = 0, covered_cpu = 0;
  for (const Row& r : rows) {
    if (r.total_calls() == 0) continue;
    const double total = r.total_seconds();
    covered += total;
    covered_cpu += r.total_cpu_seconds();
    auto ms = [&](int p) { return r.seconds[p] * per_step; };
    auto calls = [&](int p) { return static_cast<double>(r.calls[p]) * per_step * 1e-3; };
    std::snprintf(line, sizeof line, "%-13s %8.3f %6.1f %8.3f %6.1f %8.3f %6.1f %9.3f %5.1f%% %8.3f\n",
                  kind_name(r.kind), ms(0), calls(0), ms(1), calls(1), ms(2), calls(2), total * per_step, total * pct,
                  r.total_cpu_seconds() * per_step);
    out += line;
  }
  const double rest = wall_seconds - covered;
  std::snprintf(line, sizeof line, "%-13s %53s %9.3f %5.1f%% %8.3f\n", "unattributed", "", rest * per_step,
                rest * pct, (cpu_seconds - covered_cpu) * per_step);
  out += line;
  std::snprintf(line, sizeof line, "%-13s %53s %9.3f %5.1f%% %8.3f\n", "step", "", wall_seconds * per_step,
                wall_seconds > 0 ? 100.0 : 0.0, cpu_seconds * per_step);
  out += line;
  return out;
}

int64_t process_cpu_ns() { return cpu_now_ns(); }

}  // namespace tfm::core::profile
