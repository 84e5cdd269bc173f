#include "parallel.h"

#include <omp.h>

namespace tfm::core {

int num_threads() { return omp_get_max_threads(); }

void set_num_threads(int n) {
  if (n > 0) omp_set_num_threads(n);
}

bool should_parallelize(int64_t work) {
  return work >= kParallelGrain && !omp_in_parallel() && omp_get_max_threads() > 1;
}

}  // namespace tfm::core
