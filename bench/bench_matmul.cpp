// Matmul benchmark: tfm::core::matmul against a raw oneDNN matmul primitive.
//
// For each shape three things are timed (GFLOP/s, best of 5 repeats, each
// repeat running enough iterations for >= 0.3 s):
//   tfm      tfm::core::matmul(a, b, ...) exactly as a user calls it: output
//            allocation from the caching allocator, layout checks, the
//            primitive-cache lookup under its lock, execute, stream.wait.
//   backend  tfm::core::onednn::matmul (the cache lookup + execute) into a
//            preallocated output: isolates the tensor-level overhead from the
//            backend overhead.
//   raw      a oneDNN matmul primitive created once with preallocated buffers,
//            executed in a loop (one stream.wait at the end of each repeat).
// Before timing, tfm's result is checked against the raw primitive's result
// for every shape; a relative max-abs difference above 1e-3 aborts (exit 1).
//
// Usage: bench_matmul [--quick] [--shape MxKxN]...
//   --quick        few iterations, a smoke run
//   --shape MxKxN  time this shape ([M,K] x [K,N]) instead of the default
//                  list; repeatable (bench/train_throughput passes the
//                  feed-forward shape of each workload)
#include <dnnl.hpp>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/onednn.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace {

using namespace tfm::core;
using clk = std::chrono::steady_clock;
using dims = dnnl::memory::dims;
using dt = dnnl::memory::data_type;

struct Case {
  std::string name;
  int64_t batch, m, k, n;
  bool trans_b;
};

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};
using Buf = std::unique_ptr<float[], AlignedFree>;

Buf alloc_buf(int64_t n) {
  const std::size_t bytes = (static_cast<std::size_t>(n) * sizeof(float) + 63) / 64 * 64;
  auto* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) {
    std::fprintf(stderr, "out of memory\n");
    std::exit(2);
  }
  std::memset(p, 0, bytes);
  return Buf(p);
}

// A oneDNN matmul primitive of one shape with its own buffers, made once.
struct Raw {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  dnnl::matmul prim;
  Buf src, wei, dst;
  std::unordered_map<int, dnnl::memory> args;

  explicit Raw(const Case& c) {
    const bool batched = c.batch > 1;
    dnnl::memory::desc src_md, wei_md, dst_md;
    if (batched) {
      src_md = dnnl::memory::desc({c.batch, c.m, c.k}, dt::f32, dims{c.m * c.k, c.k, 1});
      wei_md = c.trans_b ? dnnl::memory::desc({c.batch, c.k, c.n}, dt::f32, dims{c.k * c.n, 1, c.k})
                         : dnnl::memory::desc({c.batch, c.k, c.n}, dt::f32, dims{c.k * c.n, c.n, 1});
      dst_md = dnnl::memory::desc({c.batch, c.m, c.n}, dt::f32, dims{c.m * c.n, c.n, 1});
    } else {
      src_md = dnnl::memory::desc({c.m, c.k}, dt::f32, dims{c.k, 1});
      wei_md = c.trans_b ? dnnl::memory::desc({c.k, c.n}, dt::f32, dims{1, c.k})
                         : dnnl::memory::desc({c.k, c.n}, dt::f32, dims{c.n, 1});
      dst_md = dnnl::memory::desc({c.m, c.n}, dt::f32, dims{c.n, 1});
    }
    prim = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_md, dst_md), eng));
    src = alloc_buf(c.batch * c.m * c.k);
    wei = alloc_buf(c.batch * c.k * c.n);
    dst = alloc_buf(c.batch * c.m * c.n);
    args = {{DNNL_ARG_SRC, dnnl::memory(src_md, eng, src.get())},
            {DNNL_ARG_WEIGHTS, dnnl::memory(wei_md, eng, wei.get())},
            {DNNL_ARG_DST, dnnl::memory(dst_md, eng, dst.get())}};
  }
  void run(int64_t iters) {
    for (int64_t i = 0; i < iters; ++i) prim.execute(strm, args);
    strm.wait();
  }
};

// Seconds for `iters` calls of f(iters).
double time_once(const std::function<void(int64_t)>& f, int64_t iters) {
  const auto t0 = clk::now();
  f(iters);
  return std::chrono::duration<double>(clk::now() - t0).count();
}

// Iteration count that makes one repeat last >= min_seconds.
int64_t calibrate(const std::function<void(int64_t)>& f, double min_seconds) {
  int64_t iters = 1;
  for (;;) {
    const double t = time_once(f, iters);
    if (t >= min_seconds) return iters;
    const double scale = t > 0 ? 1.2 * min_seconds / t : 100.0;
    iters = std::max<int64_t>(iters + 1, static_cast<int64_t>(std::ceil(iters * std::min(scale, 100.0))));
  }
}

struct Result {
  double tfm_gflops, backend_gflops, raw_gflops;
  double tfm_us, backend_us, raw_us;
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::vector<Case> shapes;
  for (int i = 1; i < argc; ++i) {
    long long m = 0, k = 0, n = 0;
    char tail = 0;
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--shape") == 0 && i + 1 < argc &&
               std::sscanf(argv[i + 1], "%lldx%lldx%lld%c", &m, &k, &n, &tail) == 3 && m > 0 && k > 0 && n > 0) {
      shapes.push_back({argv[i + 1], 1, m, k, n, false});
      ++i;
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--shape MxKxN]... (positive M, K, N; got '%s')\n", argv[0],
                   argv[i]);
      return 2;
    }
  }
  const double min_seconds = quick ? 0.01 : 0.3;
  const int repeats = quick ? 2 : 5;
  const int threads = omp_get_max_threads();

  const std::vector<Case> defaults = {
      {"768x128x384", 1, 768, 128, 384, false},
      {"16384x384x1536", 1, 16384, 384, 1536, false},
      {"24x(256x64x256)", 24, 256, 64, 256, false},
      {"768x128x384 trans_b", 1, 768, 128, 384, true},
      {"64x128x128", 1, 64, 128, 128, false},
  };
  const std::vector<Case>& cases = shapes.empty() ? defaults : shapes;

  Generator gen(1234);
  std::vector<Result> results;

  for (const Case& c : cases) {
    // Operands: tfm tensors, and the same values copied into the raw buffers.
    const Shape a_shape = c.batch > 1 ? Shape{c.batch, c.m, c.k} : Shape{c.m, c.k};
    Shape b_shape = c.trans_b ? Shape{c.n, c.k} : Shape{c.k, c.n};
    if (c.batch > 1) b_shape.insert(b_shape.begin(), c.batch);
    const Tensor a = randn(a_shape, gen);
    const Tensor b = randn(b_shape, gen);
    Raw raw(c);
    // b is [.., N, K] row-major when trans_b: exactly the raw weights layout (strides {1, K}).
    std::memcpy(raw.src.get(), a.data<float>(), sizeof(float) * a.numel());
    std::memcpy(raw.wei.get(), b.data<float>(), sizeof(float) * b.numel());

    // ---- correctness: tfm vs raw oneDNN
    raw.run(1);
    const Tensor out = matmul(a, b, false, c.trans_b);
    const int64_t n_out = c.batch * c.m * c.n;
    if (out.numel() != n_out) {
      std::fprintf(stderr, "FAIL %s: tfm output has %lld elements, expected %lld\n", c.name.c_str(),
                   static_cast<long long>(out.numel()), static_cast<long long>(n_out));
      return 1;
    }
    const float* o = out.data<float>();
    const float* r = raw.dst.get();
    double max_diff = 0, max_ref = 0;
    for (int64_t i = 0; i < n_out; ++i) {
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(o[i] - r[i])));
      max_ref = std::max(max_ref, static_cast<double>(std::fabs(r[i])));
    }
    const double rel = max_diff / std::max(max_ref, 1.0);
    std::printf("check %-22s max|tfm-raw| = %.3g (max|raw| = %.3g, relative %.3g)\n", c.name.c_str(), max_diff,
                max_ref, rel);
    if (!(rel <= 1e-3)) {
      std::fprintf(stderr, "FAIL %s: tfm result differs from raw oneDNN (relative %.3g > 1e-3)\n", c.name.c_str(),
                   rel);
      return 1;
    }

    // ---- the three timed variants
    auto tfm_fn = [&](int64_t iters) {
      for (int64_t i = 0; i < iters; ++i) {
        Tensor y = matmul(a, b, false, c.trans_b);  // freed at the end of each iteration, like a user's temporary
      }
    };
    // The backend call tfm makes, with the same descriptors, into a preallocated output.
    onednn::MatDesc sd{c.batch, c.m, c.k, c.m * c.k, c.k, 1};
    onednn::MatDesc wd = c.trans_b ? onednn::MatDesc{c.batch, c.k, c.n, c.k * c.n, 1, c.k}
                                   : onednn::MatDesc{c.batch, c.k, c.n, c.k * c.n, c.n, 1};
    Buf bdst = alloc_buf(n_out);
    auto backend_fn = [&](int64_t iters) {
      for (int64_t i = 0; i < iters; ++i)
        onednn::matmul(sd, a.data<float>(), wd, b.data<float>(), nullptr, bdst.get(), c.batch, c.m, c.n);
    };
    auto raw_fn = [&](int64_t iters) { raw.run(iters); };

    // Warm-up (primitive creation, page faults, allocator free lists), then calibration.
    for (int w = 0; w < 3; ++w) {
      tfm_fn(1);
      backend_fn(1);
      raw_fn(1);
    }
    const int64_t it_tfm = calibrate(tfm_fn, min_seconds);
    const int64_t it_be = calibrate(backend_fn, min_seconds);
    const int64_t it_raw = calibrate(raw_fn, min_seconds);
    // Repeats interleave the variants so that background load hits them alike.
    double best_tfm = 1e30, best_be = 1e30, best_raw = 1e30;
    for (int rep = 0; rep < repeats; ++rep) {
      best_tfm = std::min(best_tfm, time_once(tfm_fn, it_tfm) / it_tfm);
      best_be = std::min(best_be, time_once(backend_fn, it_be) / it_be);
      best_raw = std::min(best_raw, time_once(raw_fn, it_raw) / it_raw);
    }
    const double flops = 2.0 * c.batch * c.m * c.k * c.n;
    results.push_back({flops / best_tfm * 1e-9, flops / best_be * 1e-9, flops / best_raw * 1e-9, best_tfm * 1e6,
                       best_be * 1e6, best_raw * 1e6});
  }

  std::printf("\nmatmul GFLOP/s, best of %d repeats (>= %.2f s each), OMP threads = %d%s\n", repeats, min_seconds,
              threads, quick ? "  [--quick: not meaningful]" : "");
  std::printf("%-22s %10s %10s %10s %9s %8s\n", "shape (MxKxN)", "tfm", "raw", "tfm/raw", "backend", "threads");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Result& r = results[i];
    std::printf("%-22s %10.2f %10.2f %9.1f%% %9.2f %8d\n", cases[i].name.c_str(), r.tfm_gflops, r.raw_gflops,
                100.0 * r.tfm_gflops / r.raw_gflops, r.backend_gflops, threads);
  }
  std::printf("\nper call (µs): tfm = tensor layer + backend; backend = cache lookup + execute; raw = execute\n");
  std::printf("%-22s %10s %10s %10s %12s %12s\n", "shape (MxKxN)", "tfm", "backend", "raw", "tfm-backend",
              "backend-raw");
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const Result& r = results[i];
    std::printf("%-22s %10.2f %10.2f %10.2f %12.2f %12.2f\n", cases[i].name.c_str(), r.tfm_us, r.backend_us,
                r.raw_us, r.tfm_us - r.backend_us, r.backend_us - r.raw_us);
  }
  const auto st = onednn::matmul_cache_stats();
  std::printf("\ntfm matmul primitive cache: hits = %lld, misses = %lld, size = %lld\n",
              static_cast<long long>(st.hits), static_cast<long long>(st.misses), static_cast<long long>(st.size));
  return 0;
}
