#include "dist/comm.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/error.h"

#ifdef TFM_WITH_MPI
#include <mpi.h>
#endif

namespace tfm::dist {

namespace {
bool g_active = false;  // MPI initialised by init() and not finalised
int g_rank = 0, g_size = 1;
double g_timeout = 300.0;
int64_t g_max_chunk = INT_MAX;
}  // namespace

bool compiled_with_mpi() {
#ifdef TFM_WITH_MPI
  return true;
#else
  return false;
#endif
}

bool launched_by_mpi() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

int rank() { return g_rank; }
int size() { return g_size; }
std::string where() { return g_size > 1 ? "rank " + std::to_string(g_rank) + " of " + std::to_string(g_size) : ""; }

void set_timeout(double seconds) {
  TFM_CHECK(seconds > 0, "dist: the collective timeout must be > 0 seconds, got ", seconds);
  g_timeout = seconds;
}
double timeout() { return g_timeout; }
void set_max_chunk(int64_t elements) {
  TFM_CHECK(elements >= 1 && elements <= INT_MAX, "dist: the chunk size must lie in [1, INT_MAX], got ", elements);
  g_max_chunk = elements;
}

[[noreturn]] void abort(int code, const std::string& message) {
  const std::string w = where();
  std::fprintf(stderr, "tfm: error: %s%s%s\n", w.c_str(), w.empty() ? "" : ": ", message.c_str());
  std::fflush(stderr);
#ifdef TFM_WITH_MPI
  if (g_active) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

#ifdef TFM_WITH_MPI

namespace {

static_assert(sizeof(MPI_Request) <= sizeof(uint64_t), "MPI_Request must fit the opaque handle");

uint64_t to_handle(MPI_Request r) {
  uint64_t h = 0;
  std::memcpy(&h, &r, sizeof r);
  return h;
}
MPI_Request from_handle(uint64_t h) {
  MPI_Request r;
  std::memcpy(&r, &h, sizeof r);
  return r;
}

void check_mpi(int rc, const std::string& what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  abort(1, what + ": MPI error: " + std::string(text, static_cast<std::size_t>(len)));
}

// Tests all requests once; true when every one has completed.
bool test_all(std::vector<MPI_Request>& reqs, const std::string& what) {
  int done = 0;
  check_mpi(MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, MPI_STATUSES_IGNORE), what);
  return done != 0;
}

// Polls until every request has completed; a short spin, then sleeps that
// grow to 1 ms so a waiting rank leaves the core to ranks still computing.
void wait_all(std::vector<MPI_Request>& reqs, const std::string& what) {
  const auto start = std::chrono::steady_clock::now();
  auto nap = std::chrono::microseconds(10);
  for (int polls = 0;; ++polls) {
    if (test_all(reqs, what)) return;
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > g_timeout)
      abort(1, what + " did not finish within " + std::to_string(g_timeout) +
                   " s (train.collective_timeout_s): another rank is stuck, dead or much slower");
    if (polls > 200) {
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(1000));
    }
  }
}

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

// Element ranges [start, start + count) of at most g_max_chunk elements.
template <class F>
void for_chunks(int64_t n, F&& f) {
  for (int64_t start = 0; start < n; start += g_max_chunk) f(start, static_cast<int>(std::min(g_max_chunk, n - start)));
}

void allreduce(void* data, int64_t n, MPI_Datatype type, std::size_t elem, MPI_Op op, const std::string& what) {
  if (!g_active || n == 0) return;
  std::vector<MPI_Request> reqs;
  for_chunks(n, [&](int64_t start, int count) {
    MPI_Request r;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, static_cast<char*>(data) + start * static_cast<int64_t>(elem), count, type,
                             op, MPI_COMM_WORLD, &r),
              what);
    reqs.push_back(r);
  });
  wait_all(reqs, what);
}

}  // namespace

void init() {
  static bool done = false;
  if (done) return;
  done = true;
  if (!launched_by_mpi()) return;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      abort(1, "MPI_Init_thread failed");
    std::atexit(finalize_at_exit);
  }
  // Errors come back as codes and are reported by check_mpi, naming the collective.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  g_active = true;
}

void allreduce_sum(float* data, int64_t n, const std::string& what) {
  allreduce(data, n, MPI_FLOAT, sizeof(float), MPI_SUM, what);
}
void allreduce_sum(double* data, int64_t n, const std::string& what) {
  allreduce(data, n, MPI_DOUBLE, sizeof(double), MPI_SUM, what);
}
void allreduce_max(int64_t* data, int64_t n, const std::string& what) {
  allreduce(data, n, MPI_INT64_T, sizeof(int64_t), MPI_MAX, what);
}

PendingSum iallreduce_sum(float* data, int64_t n, const std::string& what) {
  PendingSum p;
  p.what_ = what;
  if (!g_active || n == 0) return p;
  for_chunks(n, [&](int64_t start, int count) {
    MPI_Request r;
    check_mpi(MPI_Iallreduce(MPI_IN_PLACE, data + start, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r), what);
    p.requests_.push_back(to_handle(r));
  });
  return p;
}

bool PendingSum::progress() {
  if (requests_.empty()) return true;
  std::vector<MPI_Request> reqs;
  for (uint64_t h : requests_) reqs.push_back(from_handle(h));
  const bool done = test_all(reqs, what_);
  for (std::size_t i = 0; i < reqs.size(); ++i) requests_[i] = to_handle(reqs[i]);
  if (done) requests_.clear();
  return done;
}

void PendingSum::wait() {
  if (requests_.empty()) return;
  std::vector<MPI_Request> reqs;
  for (uint64_t h : requests_) reqs.push_back(from_handle(h));
  requests_.clear();
  wait_all(reqs, what_);
}

void allgather(const void* send, int64_t bytes, void* recv, const std::string& what) {
  if (!g_active) {
    std::memcpy(recv, send, static_cast<std::size_t>(bytes));
    return;
  }
  TFM_CHECK(bytes <= INT_MAX, what, ": allgather of ", bytes, " bytes per rank (at most INT_MAX)");
  std::vector<MPI_Request> reqs(1);
  check_mpi(MPI_Iallgather(send, static_cast<int>(bytes), MPI_BYTE, recv, static_cast<int>(bytes), MPI_BYTE,
                           MPI_COMM_WORLD, &reqs[0]),
            what);
  wait_all(reqs, what);
}

void bcast(void* data, int64_t bytes, int root, const std::string& what) {
  if (!g_active || bytes == 0) return;
  std::vector<MPI_Request> reqs;
  for_chunks(bytes, [&](int64_t start, int count) {
    MPI_Request r;
    check_mpi(MPI_Ibcast(static_cast<char*>(data) + start, count, MPI_BYTE, root, MPI_COMM_WORLD, &r), what);
    reqs.push_back(r);
  });
  wait_all(reqs, what);
}

void allgatherv_inplace(float* data, const std::vector<int64_t>& counts, const std::vector<int64_t>& offsets,
                        const std::string& what) {
  TFM_CHECK(counts.size() == static_cast<std::size_t>(g_size) && offsets.size() == counts.size(), what,
            ": allgatherv needs one count and offset per rank");
  if (!g_active) return;
  // One broadcast per rank's part, all in flight at once (chunked like every
  // other call, so no displacement has to fit an int).
  std::vector<MPI_Request> reqs;
  for (int r = 0; r < g_size; ++r)
    for_chunks(counts[static_cast<std::size_t>(r)], [&](int64_t start, int count) {
      MPI_Request req;
      check_mpi(MPI_Ibcast(data + offsets[static_cast<std::size_t>(r)] + start, count, MPI_FLOAT, r, MPI_COMM_WORLD,
                           &req),
                what);
      reqs.push_back(req);
    });
  wait_all(reqs, what);
}

#else  // one process: nothing to exchange

void init() {}
void allreduce_sum(float*, int64_t, const std::string&) {}
void allreduce_sum(double*, int64_t, const std::string&) {}
void allreduce_max(int64_t*, int64_t, const std::string&) {}
PendingSum iallreduce_sum(float*, int64_t, const std::string& what) { return PendingSum(); }
bool PendingSum::progress() { return true; }
void PendingSum::wait() {}
void allgather(const void* send, int64_t bytes, void* recv, const std::string&) {
  std::memcpy(recv, send, static_cast<std::size_t>(bytes));
}
void bcast(void*, int64_t, int, const std::string&) {}
void allgatherv_inplace(float*, const std::vector<int64_t>& counts, const std::vector<int64_t>& offsets,
                        const std::string& what) {
  TFM_CHECK(counts.size() == 1 && offsets.size() == 1, what, ": allgatherv needs one count and offset per rank");
}

#endif

PendingSum::PendingSum(PendingSum&& o) noexcept : requests_(std::move(o.requests_)), what_(std::move(o.what_)) {
  o.requests_.clear();
}
PendingSum& PendingSum::operator=(PendingSum&& o) noexcept {
  if (this != &o) {
    wait();
    requests_ = std::move(o.requests_);
    what_ = std::move(o.what_);
    o.requests_.clear();
  }
  return *this;
}
PendingSum::~PendingSum() { wait(); }

void bcast_string(std::string& s, int root, const std::string& what) {
  int64_t n = static_cast<int64_t>(s.size());
  bcast(&n, sizeof n, root, what);
  s.resize(static_cast<std::size_t>(n));
  bcast(s.data(), n, root, what);
}

}  // namespace tfm::dist
