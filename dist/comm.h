// The process group of a data-parallel run: rank, size and the few
// collectives training needs. All MPI calls of tfm live in dist/comm.cpp;
// nothing else includes <mpi.h>.
//
// Built with TFM_MPI (CMake option, on when MPI is found) and started by a
// launcher (mpirun / mpiexec of Open MPI or MPICH, srun with PMIx), init()
// calls MPI_Init_thread (MPI_THREAD_FUNNELED: only the thread that called
// init() makes MPI calls; OpenMP threads never do). Otherwise — compiled
// out, or a plain `tfm` without a launcher — the group is one process:
// rank 0 of 1, collectives are copies or no-ops, abort() prints and exits.
// Only the MPI-3 standard API is used (no Open MPI or MPICH extensions).
//
// Every collective is non-blocking underneath and waited for by polling
// MPI_Test against the timeout (set_timeout; train.collective_timeout_s):
// one that has not finished in time aborts the whole job with a message
// naming it (`what`). Counts above INT_MAX elements are split into chunks
// (set_max_chunk lowers the chunk size so tests exercise the split).
// Collectives must be issued in the same order on every rank (MPI matches
// them by order); callers guarantee it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tfm::dist {

// True when tfm was compiled with MPI support.
bool compiled_with_mpi();
// True when the environment shows a launcher started this process
// (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK set).
bool launched_by_mpi();
// Initialises MPI once if compiled in and launched by a launcher; later
// calls do nothing. MPI_Finalize runs at exit.
void init();
int rank();  // 0 before init() or without MPI
int size();  // 1 before init() or without MPI
// "rank 2 of 4" (empty text for a one-process group), for messages.
std::string where();

// Seconds a collective may take before the job is aborted (> 0).
void set_timeout(double seconds);
double timeout();
// Largest element count given to one MPI call (default INT_MAX).
void set_max_chunk(int64_t elements);

// In-place sums / maximum over all ranks.
void allreduce_sum(float* data, int64_t n, const std::string& what);
void allreduce_sum(double* data, int64_t n, const std::string& what);
void allreduce_max(int64_t* data, int64_t n, const std::string& what);

// A non-blocking in-place float sum: start it, keep computing (call
// progress() now and then so the MPI library advances it), then wait().
class PendingSum {
 public:
  PendingSum() = default;
  PendingSum(PendingSum&&) noexcept;
  PendingSum& operator=(PendingSum&&) noexcept;
  PendingSum(const PendingSum&) = delete;
  PendingSum& operator=(const PendingSum&) = delete;
  ~PendingSum();  // waits if still pending (never leaves MPI writing into freed memory)
  bool active() const { return !requests_.empty(); }
  // Tests the requests once (cheap); true when all have completed.
  bool progress();
  // Blocks (polling, with the timeout) until done.
  void wait();

 private:
  friend PendingSum iallreduce_sum(float* data, int64_t n, const std::string& what);
  std::vector<uint64_t> requests_;  // MPI_Request handles stored as integers (no <mpi.h> here)
  std::string what_;
};
PendingSum iallreduce_sum(float* data, int64_t n, const std::string& what);

// Every rank contributes `bytes` bytes from `send`; `recv` (size() * bytes)
// receives them in rank order.
void allgather(const void* send, int64_t bytes, void* recv, const std::string& what);
// In place: rank r's part is data[offsets[r] .. offsets[r] + counts[r]);
// afterwards every rank holds every part. counts/offsets have size() entries.
void allgatherv_inplace(float* data, const std::vector<int64_t>& counts, const std::vector<int64_t>& offsets,
                        const std::string& what);
// `bytes` bytes from `root` to every rank.
void bcast(void* data, int64_t bytes, int root, const std::string& what);
// A string from `root` to every rank (length first).
void bcast_string(std::string& s, int root, const std::string& what);

// Prints "tfm: error: <where>: message" to stderr and ends the whole job
// with `code` (MPI_Abort when MPI is running, else exit).
[[noreturn]] void abort(int code, const std::string& message);

}  // namespace tfm::dist
