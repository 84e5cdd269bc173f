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
// one thread: forking a team costs a few microseconds when the workers spin.
inline constexpr int64_t kParallelGrain = 1 << 15;
// With OMP_WAIT_POLICY=PASSIVE the workers sleep between regions and waking
// them dominates: on a 2-vCPU VM (bench/bench_parallel_grain, two runs) an
// add of 16k floats took 55-62 µs on two threads against 1.3-1.5 µs on one,
// of 98k floats 77-82 µs against 9-11 µs (6-10 µs with spinning workers),
// while a GELU of 393k floats was faster on two (331-339 µs against
// 429-539). The small char-GPT step went from 26.2-26.9 to 23.3-24.6 ms with
// this grain (train --profile 200, three alternating runs).
inline constexpr int64_t kParallelGrainPassive = 1 << 18;

// The default grain for an OMP_WAIT_POLICY value (null: unset):
// kParallelGrainPassive for "passive" in any case, else kParallelGrain.
int64_t default_parallel_grain(const char* wait_policy);

// The grain in use: default_parallel_grain(OMP_WAIT_POLICY) unless the
// environment variable TFM_PARALLEL_GRAIN (an integer >= 1, read once) sets
// another, so that the threshold can be timed on a given machine without
// rebuilding. An invalid value is ignored with a warning on stderr (the
// process has started by then).
int64_t parallel_grain();
// The grain a TFM_PARALLEL_GRAIN value asks for (null or empty: `fallback`);
// throws tfm::Error naming the variable for anything but an integer >= 1.
int64_t parse_parallel_grain(const char* value, int64_t fallback = kParallelGrain);

// True when a kernel with `work` units should open a parallel region.
bool should_parallelize(int64_t work);

}  // namespace tfm::core
