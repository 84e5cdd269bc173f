// Allocation failures outside the tensor allocator (std::vector and
// std::string growth in data loading, tokenizers, decoding) end as one
// "tfm: error: out of memory ..." line and status 1, never an uncaught
// exception: this binary replaces the global operator new so a test can
// make one allocation fail, by size or by count.
#include <catch2/catch.hpp>
#include <dlfcn.h>
#include <execinfo.h>

#include <algorithm>
#include <cstring>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "temp_dir.h"
#include "tools/tools_cli.h"

namespace {

// Armed by the tests: fail every request of at least g_fail_from bytes, or
// the g_fail_countdown-th request from now (once). 0: off.
std::atomic<std::size_t> g_fail_from{0};
std::atomic<long> g_fail_countdown{0};
std::atomic<long> g_counted{0};  // requests seen while g_counting
std::atomic<bool> g_counting{false};
std::atomic<long> g_failed{0};

}  // namespace

namespace {
// True when the caller is inside libsentencepiece: its protobuf parser is
// not exception safe (a failed allocation mid-parse ends in a protobuf
// FATAL check and abort() from a destructor), a library limitation tfm
// cannot catch. backtrace() and dladdr() take nothing from operator new.
bool called_from_sentencepiece() {
  void* frames[64];
  const int n = backtrace(frames, 64);
  for (int i = 1; i < n; ++i) {
    Dl_info info;
    if (dladdr(frames[i], &info) && info.dli_fname && std::strstr(info.dli_fname, "libsentencepiece")) return true;
  }
  return false;
}
}  // namespace

void* operator new(std::size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_counted.fetch_add(1, std::memory_order_relaxed);
  const std::size_t from = g_fail_from.load(std::memory_order_relaxed);
  bool fail = from != 0 && n >= from;
  if (g_fail_countdown.load(std::memory_order_relaxed) > 0 && g_fail_countdown.fetch_sub(1) == 1) {
    fail = !called_from_sentencepiece();
    if (!fail) g_fail_countdown = 1;  // the next allocation outside SentencePiece fails instead
  }
  if (fail) {
    g_failed.fetch_add(1);
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
// The array and nothrow forms too: otherwise (under AddressSanitizer) an array allocated
// by the runtime's operator new[] or new(nothrow) is released through the free() above.
void* operator new[](std::size_t n) { return ::operator new(n); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return ::operator new(n);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return ::operator new(n, t); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

using tfm::test::TempDir;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

void disarm_all() {
  g_fail_from = 0;
  g_fail_countdown = 0;
  g_counting = false;
}

struct CliResult {
  int status = -1;
  std::string out, err;
};
// `arm` runs just before parse_and_run and everything is disarmed just
// after, so only tfm's own allocations can fail.
CliResult cli(std::vector<std::string> args, const std::function<void()>& arm = [] {}) {
  args.insert(args.begin(), "tfm");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  std::istringstream in;
  std::ostringstream out, err;
  out.str(std::string(4096, ' '));  // room for the output and the error line before anything fails
  err.str(std::string(4096, ' '));
  out.str("");
  err.str("");
  CliResult r;
  arm();
  r.status = tfm::train::parse_and_run(static_cast<int>(argv.size()), argv.data(), in, out, err);
  disarm_all();
  r.out = out.str();
  r.err = err.str();
  return r;
}


}  // namespace

TEST_CASE("a data file too large for memory is reported with its name and size", "[fault][memory]") {
  TempDir dir("fault_alloc_data");
  const std::string data = dir.file("big.txt");
  {
    std::ofstream f(data);
    for (int i = 0; i < 60000; ++i) f << "In the beginning God created the heaven and the earth. " << i << "\n";
  }
  std::ofstream(dir.file("gpt.yaml")) << "model:\n  n_layers: 1\n  n_heads: 2\n  d_model: 16\n  block_size: 16\n"
                                      << "data:\n  path: " << data << "\n"
                                      << "train:\n  max_steps: 2\n  batch_size: 2\n  eval_every: 0\n  threads: 1\n"
                                      << "  out_dir: " << dir.file("run") << "\n";
  g_failed = 0;
  // Any single request of 2 MiB or more fails: the file is ~3.6 MB.
  const CliResult r = cli({"train", dir.file("gpt.yaml")}, [] { g_fail_from = std::size_t{2} << 20; });
  INFO(r.err);
  CHECK(g_failed > 0);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, StartsWith("tfm: error: out of memory while reading " + data + " ("));
  CHECK_THAT(r.err, Contains(" bytes)") && Contains("std::bad_alloc") && Contains("tensor memory in use"));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

TEST_CASE("an allocation failing at any point of tfm translate ends as one clean error line", "[fault][memory]") {
  TempDir dir("fault_alloc_translate");
  {
    const char* en[] = {"one", "two", "three", "four", "five", "six"};
    const char* es[] = {"uno", "dos", "tres", "cuatro", "cinco", "seis"};
    std::ofstream f(dir.file("pairs.tsv"));
    for (int i = 0; i < 120; ++i) f << en[i % 6] << " " << en[(i / 6) % 6] << "\t" << es[i % 6] << " " << es[(i / 6) % 6] << "\n";
  }
  std::ofstream(dir.file("s2s.yaml"))
      << "model: {family: seq2seq, enc_layers: 1, dec_layers: 1, n_heads: 2, d_model: 16, d_ff: 32, block_size: 16}\n"
      << "data: {path: " << dir.file("pairs.tsv") << ", tokenizer: sentencepiece, vocab_size: 30, sp_byte_fallback: false}\n"
      << "schedule: {kind: constant}\n"
      << "train: {max_steps: 2, batch_tokens: 64, eval_every: 0, threads: 1, out_dir: " << dir.file("run") << "}\n";
  REQUIRE(cli({"train", dir.file("s2s.yaml")}).status == 0);
  const std::string input = "one two\nthree four five\nsix\n\nfive five five five\n";
  std::ofstream(dir.file("in.txt")) << input;
  const std::vector<std::string> args = {"translate", dir.file("run"), "--beam", "2", "--input", dir.file("in.txt")};
  // How many allocations the command makes, then fail each of ~60 of them in
  // turn (one made inside SentencePiece defers the failure to the next).
  called_from_sentencepiece();  // backtrace() loads libgcc_s on its first call: not while armed
  g_counted = 0;
  const CliResult ok = cli(args, [] { g_counting = true; });
  REQUIRE(ok.status == 0);
  const long total = g_counted;
  REQUIRE(total > 100);
  int failed_runs = 0;
  for (long k = 1; k <= total; k += std::max<long>(1, total / 60)) {
    INFO("allocation " << k << " of " << total << " fails");
    g_failed = 0;
    const CliResult r = cli(args, [k] { g_fail_countdown = k; });
    if (g_failed == 0) continue;  // this run made fewer allocations
    ++failed_runs;
    INFO(r.err);
    // Either the failure was handled where it happened (a library that
    // retries or falls back) and the output is whole, or one error line.
    if (r.status == 0) {
      CHECK(r.out == ok.out);
    } else {
      CHECK(r.status == 1);
      CHECK_THAT(r.err, StartsWith("tfm: error: ") && Contains("out of memory"));
      CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    }
  }
  CHECK(failed_runs > 30);
}
