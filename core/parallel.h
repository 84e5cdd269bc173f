// Threading helpers. OpenMP parallelises the outermost independent dimension
// of a kernel; regions never nest (a kernel called from inside a parallel
// region runs serially).
#pragma once

#include <cstdint>

namespace tfm::core {

// Number of OpenMP threads kernels use (default: OMP_NUM_THREADS or all cores).
int num_threads();
void set_num_threads(int n);

// Work (in elements, or in element-operations) below which a kernel stays on
// one thread: forking a team costs a few microseconds.
inline constexpr int64_t kParallelGrain = 1 << 15;

// True when a kernel with `work` units should open a parallel region.
bool should_parallelize(int64_t work);

}  // namespace tfm::core
