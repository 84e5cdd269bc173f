#include "parallel.h"

#include <omp.h>
#include <strings.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "error.h"

namespace tfm::core {

int num_threads() { return omp_get_max_threads(); }

void set_num_threads(int n) {
  if (n > 0) omp_set_num_threads(n);
}

int64_t default_parallel_grain(const char* wait_policy) {
  return wait_policy && strcasecmp(wait_policy, "passive") == 0 ? kParallelGrainPassive : kParallelGrain;
}

int64_t parse_parallel_grain(const char* v, int64_t fallback) {
  if (!v || !*v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long long g = std::strtoll(v, &end, 10);
  TFM_CHECK(*end == '\0' && errno == 0 && g >= 1, "TFM_PARALLEL_GRAIN='", v, "' is not an integer >= 1");
  return g;
}

namespace {
int64_t grain_from_env() {
  const int64_t fallback = default_parallel_grain(std::getenv("OMP_WAIT_POLICY"));
  try {
    return parse_parallel_grain(std::getenv("TFM_PARALLEL_GRAIN"), fallback);
  } catch (const Error& e) {
    std::fprintf(stderr, "tfm: warning: %s; using %lld\n", e.what(), static_cast<long long>(fallback));
    return fallback;
  }
}
}  // namespace

int64_t parallel_grain() {
  static const int64_t grain = grain_from_env();
  return grain;
}

bool should_parallelize(int64_t work) {
  return work >= parallel_grain() && !omp_in_parallel() && omp_get_max_threads() > 1;
}

}  // namespace tfm::core
