// dist/comm.h under a real launcher (ctest: mpiexec -np 3): every collective
// against values computed independently in double precision, with the chunk
// size lowered to 7 elements so counts are split as above INT_MAX. Prints
// one line per check and exits non-zero on the first mismatch.
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "dist/comm.h"

namespace {
int failures = 0;
void check(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "comm_check %s: FAILED %s\n", tfm::dist::where().c_str(), what.c_str());
    ++failures;
  }
}
}  // namespace

int main() {
  namespace d = tfm::dist;
  d::init();
  const int n = d::size(), me = d::rank();
  check(d::compiled_with_mpi() && d::launched_by_mpi() && n > 1, "running under a launcher with several ranks");
  d::set_max_chunk(7);
  d::set_timeout(30);

  // Sums of rank-dependent values over 50 elements (8 chunks of <= 7).
  std::vector<float> f(50);
  std::vector<double> g(50);
  for (int i = 0; i < 50; ++i) f[i] = static_cast<float>(i * (me + 1)), g[i] = 0.5 * i + me;
  d::allreduce_sum(f.data(), 50, "float sum");
  d::allreduce_sum(g.data(), 50, "double sum");
  const double ranks_sum = n * (n + 1) / 2.0;  // sum of (r + 1)
  for (int i = 0; i < 50; ++i) {
    check(f[i] == static_cast<float>(i * ranks_sum), "float sum element " + std::to_string(i));
    check(std::abs(g[i] - (0.5 * i * n + n * (n - 1) / 2.0)) < 1e-12, "double sum element " + std::to_string(i));
  }
  int64_t mx[3] = {me, -me, 100};
  d::allreduce_max(mx, 3, "max");
  check(mx[0] == n - 1 && mx[1] == 0 && mx[2] == 100, "int64 max");

  // Non-blocking sum, progressed then waited for.
  std::vector<float> h(23, static_cast<float>(me));
  {
    d::PendingSum p = d::iallreduce_sum(h.data(), 23, "non-blocking sum");
    check(p.active(), "non-blocking sum started");
    p.progress();
    p.wait();
  }
  for (float v : h) check(v == static_cast<float>(n * (n - 1) / 2), "non-blocking sum value");

  // All-gather of one int per rank.
  std::vector<int> all(static_cast<std::size_t>(n), -1);
  const int mine = 10 * me + 3;
  d::allgather(&mine, sizeof mine, all.data(), "allgather");
  for (int r = 0; r < n; ++r) check(all[static_cast<std::size_t>(r)] == 10 * r + 3, "allgather from rank " + std::to_string(r));

  // In-place all-gather of uneven parts (rank r owns 3r + 5 elements, split into chunks of 7).
  std::vector<int64_t> counts, offsets;
  int64_t total = 0;
  for (int r = 0; r < n; ++r) offsets.push_back(total), counts.push_back(3 * r + 5), total += 3 * r + 5;
  std::vector<float> v(static_cast<std::size_t>(total), -1.0f);
  for (int64_t i = 0; i < counts[static_cast<std::size_t>(me)]; ++i)
    v[static_cast<std::size_t>(offsets[static_cast<std::size_t>(me)] + i)] = static_cast<float>(1000 * me + i);
  d::allgatherv_inplace(v.data(), counts, offsets, "allgatherv");
  for (int r = 0; r < n; ++r)
    for (int64_t i = 0; i < counts[static_cast<std::size_t>(r)]; ++i)
      check(v[static_cast<std::size_t>(offsets[static_cast<std::size_t>(r)] + i)] == static_cast<float>(1000 * r + i),
            "allgatherv part of rank " + std::to_string(r));

  // A string longer than one chunk from the last rank.
  std::string s = me == n - 1 ? std::string("a config text longer than seven bytes") : std::string("x");
  d::bcast_string(s, n - 1, "bcast");
  check(s == "a config text longer than seven bytes", "bcast_string");

  std::printf("comm_check %s: %s\n", d::where().c_str(), failures ? "FAILED" : "all collectives agree");
  return failures ? 1 : 0;
}
