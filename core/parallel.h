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
// one thread: forking a team costs a few microseconds (tens with
// OMP_WAIT_POLICY=PASSIVE, far more when another process holds the core).
inline constexpr int64_t kParallelGrain = 1 << 15;

// The grain in use: kParallelGrain unless the environment variable
// TFM_PARALLEL_GRAIN (an integer >= 1, read once) sets another, so that the
// threshold can be timed on a given machine without rebuilding. An invalid
// value is ignored with a warning on stderr (the process has started by then).
int64_t parallel_grain();
// The grain a TFM_PARALLEL_GRAIN value asks for (null or empty: the default);
// throws tfm::Error naming the variable for anything but an integer >= 1.
int64_t parse_parallel_grain(const char* value);

// True when a kernel with `work` units should open a parallel region.
bool should_parallelize(int64_t work);

}  // namespace tfm::core
