// Neural-network ops with fused, hand-written forward and backward row
// kernels: softmax, log_softmax, layer_norm, rms_norm, embedding,
// cross_entropy (log-softmax fused, ignore_index, label smoothing), dropout.
// All work on rows of the last dim, one OpenMP thread per block of rows.

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "autograd.h"
#include "error.h"
#include "onednn.h"
#include "ops.h"
#include "profile.h"
#include "parallel.h"
#include "vmath.h"

namespace tfm::core {

namespace {

// Runs body(r) for r in [0, rows); parallel when rows·cols is large.
template <class Body>
void for_rows(int64_t rows, int64_t cols, Body body) {
  parallel_for(rows, should_parallelize(rows * cols), body);
}

// Row-wise partial sums of per-thread accumulators (for weight gradients of
// norms): each thread fills its own buffer; the buffers are then added.
struct ThreadPartials {
  int threads;
  int64_t cols;
  std::vector<double> buf;
  ThreadPartials(int64_t c, int64_t work) : ThreadPartials(c, should_parallelize(work) ? num_threads() : 1) {}
  ThreadPartials(int64_t c, int n) : threads(n), cols(c), buf(static_cast<std::size_t>(n * c)) {}
  Tensor reduce() const {
    Tensor out = zeros({cols});
    float* p = out.data<float>();
    for (int64_t j = 0; j < cols; ++j) {
      double s = 0;
      for (int t = 0; t < threads; ++t) s += buf[t * cols + j];
      p[j] = static_cast<float>(s);
    }
    return out;
  }
};

// Largest element of a row (-inf for an empty or fully -inf row; NaN-free
// rows assumed: a NaN makes the result unspecified, and the sums after it NaN).
inline float row_max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

void check_f32(const Tensor& t, const char* op, const char* what) {
  TFM_CHECK(t.defined(), op, ": ", what, " is undefined");
  TFM_CHECK(t.dtype() == DType::f32, op, ": ", what, " must be f32, got ", dtype_name(t.dtype()), " of shape ",
            shape_str(t.shape()));
}

// Softmax family over the last dim of a contiguous tensor.
Tensor softmax_last(const Tensor& x_in, bool log_space) {
  const Tensor x = x_in.detach().contiguous();
  const int64_t cols = x.size(-1), rows = cols ? x.numel() / cols : 0;
  Tensor y = empty(x.shape());
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  for_rows(rows, cols, [&](int64_t r) {
    const float* xr = xp + r * cols;
    float* yr = yp + r * cols;
    const float m = row_max(xr, cols);
    if (m == -std::numeric_limits<float>::infinity()) {
      // A fully masked row: softmax gives zeros (no NaN), log_softmax -inf.
      const float fill = log_space ? -std::numeric_limits<float>::infinity() : 0.0f;
      std::fill(yr, yr + cols, fill);
      return;
    }
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; ++j) {
      yr[j] = vmath::vexp(xr[j] - m);
      s += yr[j];
    }
    if (log_space) {
      // (x − m) − log s: x − m is exact, whereas x − (m + log s) rounds at
      // the magnitude of m and loses the small log-probabilities.
      const float log_s = static_cast<float>(std::log(s));
      for (int64_t j = 0; j < cols; ++j) yr[j] = (xr[j] - m) - log_s;
    } else {
      const float inv = static_cast<float>(1.0 / s);
      for (int64_t j = 0; j < cols; ++j) yr[j] *= inv;
    }
  });
  return y;
}

}  // namespace

// ---------------------------------------------------------------- softmax

Tensor softmax(const Tensor& x, int64_t dim) {
  profile::OpScope prof(profile::Kind::softmax_xent);
  check_f32(x, "softmax", "input");
  const int64_t d = wrap_dim(dim, x.dim(), "softmax");
  if (x.dim() > 0 && d != x.dim() - 1) return softmax(x.transpose(d, -1), -1).transpose(d, -1);
  Tensor y = softmax_last(x, false);
  if (needs_grad({&x})) {
    record(y, "softmax", {x}, [yd = y.detach()](const Tensor& g_in) {
      // dx = y ∘ (g − Σ g∘y)
      const Tensor g = g_in.contiguous();
      const int64_t cols = yd.size(-1), rows = cols ? yd.numel() / cols : 0;
      Tensor dx = empty(yd.shape());
      const float *yp = yd.data<float>(), *gp = g.data<float>();
      float* dp = dx.data<float>();
      for_rows(rows, cols, [&](int64_t r) {
        const float *yr = yp + r * cols, *gr = gp + r * cols;
        double dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < cols; ++j) dot += gr[j] * yr[j];
        for (int64_t j = 0; j < cols; ++j) dp[r * cols + j] = yr[j] * (gr[j] - static_cast<float>(dot));
      });
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  profile::OpScope prof(profile::Kind::softmax_xent);
  check_f32(x, "log_softmax", "input");
  const int64_t d = wrap_dim(dim, x.dim(), "log_softmax");
  if (x.dim() > 0 && d != x.dim() - 1) return log_softmax(x.transpose(d, -1), -1).transpose(d, -1);
  Tensor y = softmax_last(x, true);
  if (needs_grad({&x})) {
    record(y, "log_softmax", {x}, [yd = y.detach()](const Tensor& g_in) {
      // dx = g − exp(y) Σ g
      const Tensor g = g_in.contiguous();
      const int64_t cols = yd.size(-1), rows = cols ? yd.numel() / cols : 0;
      Tensor dx = empty(yd.shape());
      const float *yp = yd.data<float>(), *gp = g.data<float>();
      float* dp = dx.data<float>();
      for_rows(rows, cols, [&](int64_t r) {
        const float *yr = yp + r * cols, *gr = gp + r * cols;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < cols; ++j) s += gr[j];
        const float sf = static_cast<float>(s);
        for (int64_t j = 0; j < cols; ++j) dp[r * cols + j] = gr[j] - vmath::vexp(yr[j]) * sf;
      });
      return std::vector<Tensor>{dx};
    });
  }
  return y;
}

// ---------------------------------------------------------------- norms

namespace {

// Shared by layer_norm (center = true) and rms_norm (center = false):
// y = (x − μ)·r·w + b with r = 1/sqrt(var + eps), or y = x·r·w with
// r = 1/sqrt(mean(x²) + eps).
Tensor norm_forward(const char* name, const Tensor& x_in, const Tensor& w, const Tensor& b, float eps, bool center) {
  check_f32(x_in, name, "input");
  TFM_CHECK(x_in.dim() >= 1, name, ": input must have at least one dim");
  const int64_t cols = x_in.size(-1);
  for (const Tensor* p : {&w, &b}) {
    if (!p->defined()) continue;
    check_f32(*p, name, p == &w ? "weight" : "bias");
    TFM_CHECK(p->dim() == 1 && p->size(0) == cols, name, ": ", (p == &w ? "weight" : "bias"), " of shape ",
              shape_str(p->shape()), " does not match the last dim of input ", shape_str(x_in.shape()));
  }
  const Tensor x = x_in.detach().contiguous();
  const int64_t rows = cols ? x.numel() / cols : 0;
  Tensor y = empty(x.shape());
  Tensor mean_t = empty({rows}), rstd_t = empty({rows});
  const Tensor wc = w.defined() ? w.detach().contiguous() : Tensor(),
               bc = b.defined() ? b.detach().contiguous() : Tensor();
  const float* xp = x.data<float>();
  const float* wp = wc.defined() ? wc.data<float>() : nullptr;
  const float* bp = bc.defined() ? bc.data<float>() : nullptr;
  float *yp = y.data<float>(), *mp = mean_t.data<float>(), *rp = rstd_t.data<float>();
  for_rows(rows, cols, [&](int64_t r) {
    const float* xr = xp + r * cols;
    // Row sums in double with one partial sum per simd lane: a single running
    // double sum is one dependent add per element (~4x slower).
    double s = 0, ss = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; ++j) s += xr[j];
    const double mu = center ? s / cols : 0.0;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < cols; ++j) ss += (xr[j] - mu) * (xr[j] - mu);
    const float rstd = static_cast<float>(1.0 / std::sqrt(ss / cols + eps));
    mp[r] = static_cast<float>(mu);
    rp[r] = rstd;
    float* yr = yp + r * cols;
    for (int64_t j = 0; j < cols; ++j) {
      float v = (xr[j] - static_cast<float>(mu)) * rstd;
      if (wp) v *= wp[j];
      if (bp) v += bp[j];
      yr[j] = v;
    }
  });
  if (needs_grad({&x_in, &w, &b})) {
    record(y, name, {x_in, w, b},
           [x = x.detach(), mean_t, rstd_t, wc = wc.defined() ? wc.detach() : Tensor(), center, rows, cols,
            rx = x_in.requires_grad(), rw = w.defined() && w.requires_grad(),
            rb = b.defined() && b.requires_grad()](const Tensor& g_in) -> std::vector<Tensor> {
             const Tensor g = g_in.contiguous();
             Tensor dx = rx ? empty(x.shape()) : Tensor();
             ThreadPartials dw(cols, rows * cols), db(cols, rows * cols);
             const float *xp = x.data<float>(), *gp = g.data<float>(), *mp = mean_t.data<float>(),
                         *rp = rstd_t.data<float>();
             const float* wp = wc.defined() ? wc.data<float>() : nullptr;
             float* dp = rx ? dx.data<float>() : nullptr;
             parallel_region(dw.threads, [&](int t, int n) {
               double* dwt = dw.buf.data() + t * cols;
               double* dbt = db.buf.data() + t * cols;
               // Per row: x̂ = (x − μ)·r and dx̂ = g·w into this thread's
               // buffers with the two row sums in the same pass, then dx and
               // the weight and bias partials in a second. The partials
               // gather kBlock rows in float and are added to the double
               // sums once per block (a double add per element and row
               // cost more than the rest of the backward).
               constexpr int64_t kBlock = 16;
               std::vector<float> buf(static_cast<std::size_t>(4 * cols), 0.0f);
               float* xhat = buf.data();
               float* dxhat = xhat + cols;
               float* dwf = dxhat + cols;
               float* dbf = dwf + cols;
               auto flush = [&] {
                 if (rw)
                   for (int64_t j = 0; j < cols; ++j) dwt[j] += dwf[j], dwf[j] = 0.0f;
                 if (rb)
                   for (int64_t j = 0; j < cols; ++j) dbt[j] += dbf[j], dbf[j] = 0.0f;
               };
               const auto [r0, r1] = static_share(rows, t, n);
               for (int64_t r = r0; r < r1; ++r) {
                 const float *xr = xp + r * cols, *gr = gp + r * cols;
                 const float mu = mp[r], rstd = rp[r];
                 double sum_dxhat = 0, sum_dxhat_xhat = 0;
                 if (wp) {
#pragma omp simd reduction(+ : sum_dxhat, sum_dxhat_xhat)
                   for (int64_t j = 0; j < cols; ++j) {
                     const float xh = (xr[j] - mu) * rstd, dh = gr[j] * wp[j];
                     xhat[j] = xh;
                     dxhat[j] = dh;
                     sum_dxhat += dh;
                     sum_dxhat_xhat += dh * xh;
                   }
                 } else {
#pragma omp simd reduction(+ : sum_dxhat, sum_dxhat_xhat)
                   for (int64_t j = 0; j < cols; ++j) {
                     const float xh = (xr[j] - mu) * rstd, dh = gr[j];
                     xhat[j] = xh;
                     dxhat[j] = dh;
                     sum_dxhat += dh;
                     sum_dxhat_xhat += dh * xh;
                   }
                 }
                 if (rw)
                   for (int64_t j = 0; j < cols; ++j) dwf[j] += gr[j] * xhat[j];
                 if (rb)
                   for (int64_t j = 0; j < cols; ++j) dbf[j] += gr[j];
                 if ((r - r0) % kBlock == kBlock - 1) flush();
                 if (dp) {
                   const float m1 = center ? static_cast<float>(sum_dxhat / cols) : 0.0f;
                   const float m2 = static_cast<float>(sum_dxhat_xhat / cols);
                   float* dr = dp + r * cols;
                   for (int64_t j = 0; j < cols; ++j) dr[j] = rstd * (dxhat[j] - m1 - xhat[j] * m2);
                 }
               }
               flush();
             });
             return {dx, rw ? dw.reduce() : Tensor(), rb ? db.reduce() : Tensor()};
           });
  }
  return y;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) {
  profile::OpScope prof(profile::Kind::norm);
  return norm_forward("layer_norm", x, weight, bias, eps, true);
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) {
  profile::OpScope prof(profile::Kind::norm);
  return norm_forward("rms_norm", x, weight, Tensor(), eps, false);
}

// ---------------------------------------------------------------- embedding

Tensor embedding(const Tensor& weight, const Tensor& indices) {
  profile::OpScope prof(profile::Kind::embedding);
  check_f32(weight, "embedding", "weight");
  TFM_CHECK(weight.dim() == 2, "embedding: weight must be [vocab, dim], got ", shape_str(weight.shape()));
  TFM_CHECK(indices.defined() && indices.dtype() == DType::i32, "embedding: indices must be an i32 tensor");
  const int64_t vocab = weight.size(0), dim = weight.size(1);
  const Tensor idx = indices.contiguous();
  const Tensor w = weight.detach().contiguous();
  const int32_t* ip = idx.data<int32_t>();
  const int64_t n = idx.numel();
  for (int64_t i = 0; i < n; ++i)
    TFM_CHECK(ip[i] >= 0 && ip[i] < vocab, "embedding: index ", ip[i], " at position ", i,
              " is out of range for a vocabulary of ", vocab);
  Shape out_shape = idx.shape();
  out_shape.push_back(dim);
  Tensor out = empty(out_shape);
  const float* wp = w.data<float>();
  float* op = out.data<float>();
  for_rows(n, dim, [&](int64_t i) {
    const float* src = wp + static_cast<int64_t>(ip[i]) * dim;
    std::copy(src, src + dim, op + i * dim);
  });
  if (needs_grad({&weight})) {
    record(out, "embedding", {weight}, [idx, vocab, dim](const Tensor& g_in) {
      // Scatter-add: threads own disjoint column ranges, so no two write the same float.
      const Tensor g = g_in.contiguous();
      Tensor dw = zeros({vocab, dim});
      const int32_t* ip = idx.data<int32_t>();
      const float* gp = g.data<float>();
      float* dp = dw.data<float>();
      const int64_t n = idx.numel();
      const int threads = should_parallelize(n * dim) ? num_threads() : 1;
      parallel_region(threads, [&](int t, int team) {
        const auto [c0, c1] = static_share(dim, t, team);
        for (int64_t i = 0; i < n; ++i) {
          float* row = dp + static_cast<int64_t>(ip[i]) * dim;
          const float* gr = gp + i * dim;
          for (int64_t j = c0; j < c1; ++j) row[j] += gr[j];
        }
      });
      return std::vector<Tensor>{dw};
    });
  }
  return out;
}

// ---------------------------------------------------------------- cross-entropy

namespace {

// A logit row's max m, Σ e^(x − m) and Σ x; with `exp_out`, e^(x − m) is
// also written there (it may be x itself).
struct ExpSums {
  float max;
  double sum_exp, sum_x;
};
ExpSums exp_sums(const float* x, int64_t c, float* exp_out) {
  const float m = row_max(x, c);
  // Float partial sums over blocks of kBlock columns, added up in double:
  // one double sum per element (a conversion and a 8-lane add each) made
  // this pass twice as slow as the backward's (21 vs 9 ms at 4080 × 8000).
  constexpr int64_t kBlock = 512;
  double s = 0, sum_x = 0;
  for (int64_t j0 = 0; j0 < c; j0 += kBlock) {
    const int64_t j1 = std::min(c, j0 + kBlock);
    float bs = 0.0f, bx = 0.0f;
    if (exp_out) {
#pragma omp simd reduction(+ : bs, bx)
      for (int64_t j = j0; j < j1; ++j) {
        const float v = x[j], ev = vmath::vexp(v - m);
        bs += ev;
        bx += v;
        exp_out[j] = ev;
      }
    } else {
#pragma omp simd reduction(+ : bs, bx)
      for (int64_t j = j0; j < j1; ++j) {
        bs += vmath::vexp(x[j] - m);
        bx += x[j];
      }
    }
    s += bs;
    sum_x += bx;
  }
  return {m, s, sum_x};
}

// Checks cross-entropy targets against `c` classes; returns how many count.
int64_t count_targets(const char* op, const int32_t* tp, int64_t n, int64_t c, int32_t ignore_index) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (tp[i] == ignore_index) continue;
    TFM_CHECK(tp[i] >= 0 && tp[i] < c, op, ": target ", tp[i], " at row ", i, " is out of range for ", c,
              " classes (ignore_index is ", ignore_index, ")");
    ++count;
  }
  return count;
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index, float label_smoothing) {
  profile::OpScope prof(profile::Kind::softmax_xent);
  check_f32(logits, "cross_entropy", "logits");
  TFM_CHECK(logits.dim() == 2, "cross_entropy: logits must be [N, C], got ", shape_str(logits.shape()));
  TFM_CHECK(
      targets.defined() && targets.dtype() == DType::i32 && targets.dim() == 1 && targets.size(0) == logits.size(0),
      "cross_entropy: targets must be i32 [", logits.size(0), "] for logits ", shape_str(logits.shape()), ", got ",
      targets.defined() ? shape_str(targets.shape()) : "undefined");
  TFM_CHECK(label_smoothing >= 0.0f && label_smoothing <= 1.0f,
            "cross_entropy: label_smoothing must be in [0, 1], got ", label_smoothing);
  const Tensor x = logits.detach().contiguous(), t = targets.contiguous();
  const int64_t n = x.size(0), c = x.size(1);
  const int32_t* tp = t.data<int32_t>();
  const int64_t count = count_targets("cross_entropy", tp, n, c, ignore_index);
  Tensor lse = empty({n});
  std::vector<double> row_loss(static_cast<std::size_t>(n), 0.0);
  const float* xp = x.data<float>();
  float* lp = lse.data<float>();
  const float eps = label_smoothing;
  for_rows(n, c, [&](int64_t r) {
    const float* xr = xp + r * c;
    const ExpSums e = exp_sums(xr, c, nullptr);
    const double l = e.max + std::log(e.sum_exp);
    lp[r] = static_cast<float>(l);
    if (tp[r] != ignore_index) row_loss[r] = l - (1.0 - eps) * xr[tp[r]] - eps * e.sum_x / c;
  });
  double total = 0;
  for (double v : row_loss) total += v;
  // No counted target: the loss is 0 (PyTorch gives NaN), and so is the gradient.
  Tensor loss = scalar_tensor(count ? static_cast<float>(total / count) : 0.0f);
  if (needs_grad({&logits})) {
    record(loss, "cross_entropy", {logits}, [x = x.detach(), t, lse, ignore_index, eps, count](const Tensor& g) {
      const int64_t n = x.size(0), c = x.size(1);
      Tensor dx = empty({n, c});
      const float scale = count ? g.item() / static_cast<float>(count) : 0.0f;
      const float *xp = x.data<float>(), *lp = lse.data<float>();
      const int32_t* tp = t.data<int32_t>();
      float* dp = dx.data<float>();
      for_rows(n, c, [&](int64_t r) {
        float* dr = dp + r * c;
        if (tp[r] == ignore_index) {
          std::fill(dr, dr + c, 0.0f);
          return;
        }
        const float* xr = xp + r * c;
        const float smooth = eps / static_cast<float>(c), l = lp[r];
        for (int64_t j = 0; j < c; ++j) dr[j] = scale * (vmath::vexp(xr[j] - l) - smooth);
        dr[tp[r]] -= scale * (1.0f - eps);
      });
      return std::vector<Tensor>{dx};
    });
  }
  return loss;
}

// ---------------------------------------------------------------- linear + cross-entropy

namespace {
// Logit rows per chunk: a chunk's [rows, C] logits within ~8 MiB, so that
// both threads' chunks and weight gradients stay in a 32 MiB L3; at least
// 128 rows (the weight gradient's products have the chunk as their inner
// dimension, and slow down below that), at most 1024. At C = 8000 and 4080
// rows per step (the translator), per thread: 64 rows 187 ms, 256 rows
// 153 ms, 1024 rows 152 ms per step for the op (`--profile`).
constexpr int64_t kRowAlign = 16;  // a chunk's rows are run in multiples of this
int64_t xent_chunk_rows(int64_t classes) {
  constexpr int64_t kChunkFloats = (8 << 20) / 4;
  return std::clamp<int64_t>(kChunkFloats / std::max<int64_t>(classes, 1) / kRowAlign * kRowAlign, 128, 1024);
}
}  // namespace

Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& targets,
                            int32_t ignore_index, float label_smoothing) {
  profile::OpScope prof(profile::Kind::softmax_xent);
  check_f32(x, "linear_cross_entropy", "input");
  check_f32(weight, "linear_cross_entropy", "weight");
  TFM_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1), "linear_cross_entropy: input ",
            shape_str(x.shape()), " and weight ", shape_str(weight.shape()), " must be [N, D] and [C, D]");
  const int64_t n = x.size(0), d = x.size(1), c = weight.size(0);
  if (bias.defined()) {
    check_f32(bias, "linear_cross_entropy", "bias");
    TFM_CHECK(bias.dim() == 1 && bias.size(0) == c, "linear_cross_entropy: bias ", shape_str(bias.shape()),
              " does not match weight ", shape_str(weight.shape()), " (expected [", c, "])");
  }
  TFM_CHECK(targets.defined() && targets.dtype() == DType::i32 && targets.dim() == 1 && targets.size(0) == n,
            "linear_cross_entropy: targets must be i32 [", n, "] for input ", shape_str(x.shape()), ", got ",
            targets.defined() ? shape_str(targets.shape()) : "undefined");
  TFM_CHECK(label_smoothing >= 0.0f && label_smoothing <= 1.0f,
            "linear_cross_entropy: label_smoothing must be in [0, 1], got ", label_smoothing);
  TFM_CHECK(c > 0, "linear_cross_entropy: the weight has no classes");
  const Tensor t = targets.contiguous();
  const int32_t* tp = t.data<int32_t>();
  const int64_t count = count_targets("linear_cross_entropy", tp, n, c, ignore_index);
  std::vector<int64_t> rows;  // the counted rows, in order: only they are projected
  rows.reserve(static_cast<std::size_t>(count));
  for (int64_t i = 0; i < n; ++i)
    if (tp[i] != ignore_index) rows.push_back(i);

  const bool grad = needs_grad({&x, &weight, &bias});
  const bool rx = grad && x.requires_grad(), rw = grad && weight.requires_grad(),
             rb = grad && bias.defined() && bias.requires_grad();
  const Tensor xc = x.detach().contiguous(), w = weight.detach().contiguous(),
               bc = bias.defined() ? bias.detach().contiguous() : Tensor();
  const float *xp = xc.data<float>(), *wp = w.data<float>(), *bp = bc.defined() ? bc.data<float>() : nullptr;

  const int64_t chunk = xent_chunk_rows(c);
  const int64_t chunks = (count + chunk - 1) / chunk;
  const int threads = should_parallelize(count * c * d) ? static_cast<int>(std::min<int64_t>(num_threads(), chunks)) : 1;
  // Per thread: one chunk of logits (then of their gradients), gathered
  // input rows, and the products' results for scattered rows; the weight
  // gradient of thread 0 is the result, the others' are added to it.
  Tensor zbuf = empty({threads, chunk, c}), xbuf = empty({threads, chunk, d});
  Tensor dx = rx ? empty({n, d}) : Tensor(), dxbuf = rx ? empty({threads, chunk, d}) : Tensor();
  Tensor dw = rw ? empty({c, d}) : Tensor(), dw_more = rw && threads > 1 ? empty({threads - 1, c, d}) : Tensor();
  std::vector<char> dw_written(static_cast<std::size_t>(threads), 0);
  ThreadPartials db(rb ? c : 0, threads);  // the bias gradient's partials, only when wanted
  std::vector<double> row_loss(static_cast<std::size_t>(count), 0.0);
  const float eps = label_smoothing, inv_count = count ? 1.0f / static_cast<float>(count) : 0.0f;
  // Rows the loss ignores get a zero input gradient.
  if (rx) {
    float* dp = dx.data<float>();
    for (int64_t i = 0; i < n; ++i)
      if (tp[i] == ignore_index) std::fill(dp + i * d, dp + (i + 1) * d, 0.0f);
  }

  parallel_region(threads, [&](int th, int nth) {
    const auto [c0, c1] = static_share(chunks, th, nth);
    float* z = zbuf.data<float>() + th * chunk * c;
    float* xg = xbuf.data<float>() + th * chunk * d;
    float* dwt = rw ? (th == 0 ? dw.data<float>() : dw_more.data<float>() + (th - 1) * c * d) : nullptr;
    double* dbt = rb ? db.buf.data() + th * c : nullptr;
    std::vector<float> dbf(rb ? static_cast<std::size_t>(c) : 0, 0.0f);
    for (int64_t k = c0; k < c1; ++k) {
      // The chunk's m rows, run as mp: a multiple of kRowAlign, the rows past
      // m zero. Row counts vary from batch to batch, and each distinct
      // product shape is a JIT-compiled primitive in the cache (64 row
      // counts: 15 primitives instead of 252, tests/test_nn.cpp).
      const int64_t k0 = k * chunk, m = std::min(count, k0 + chunk) - k0;
      const int64_t mp = (m + kRowAlign - 1) / kRowAlign * kRowAlign;
      // The input rows are read in place when they are consecutive and fill the chunk.
      const bool direct = mp == m && rows[k0 + m - 1] - rows[k0] == m - 1;
      const float* xr = xp + rows[k0] * d;
      if (!direct) {
        for (int64_t i = 0; i < m; ++i) std::copy_n(xp + rows[k0 + i] * d, d, xg + i * d);
        std::fill(xg + m * d, xg + mp * d, 0.0f);
        xr = xg;
      }
      // logits = x · Wᵀ (+ b): [mp, D] x [D, C] with W read transposed.
      onednn::matmul({1, mp, d, mp * d, d, 1}, xr, {1, d, c, c * d, 1, d}, wp, bp, z, 1, mp, c);
      for (int64_t i = 0; i < m; ++i) {
        float* zr = z + i * c;
        const int32_t target = tp[rows[k0 + i]];
        const float zt = zr[target];
        const ExpSums e = exp_sums(zr, c, grad ? zr : nullptr);
        const double l = e.max + std::log(e.sum_exp);
        row_loss[static_cast<std::size_t>(k0 + i)] = l - (1.0 - eps) * zt - eps * e.sum_x / c;
        if (!grad) continue;
        // dL/dz = (softmax − e/C − (1 − e)·onehot) / count, in place.
        const float scale = inv_count / static_cast<float>(e.sum_exp), smooth = inv_count * eps / static_cast<float>(c);
        for (int64_t j = 0; j < c; ++j) zr[j] = zr[j] * scale - smooth;
        zr[target] -= inv_count * (1.0f - eps);
        if (rb)
          for (int64_t j = 0; j < c; ++j) dbf[static_cast<std::size_t>(j)] += zr[j];
      }
      if (!grad) continue;
      std::fill(z + m * c, z + mp * c, 0.0f);  // the padding rows add nothing below
      if (rb)
        for (int64_t j = 0; j < c; ++j) dbt[j] += dbf[static_cast<std::size_t>(j)], dbf[static_cast<std::size_t>(j)] = 0.0f;
      if (rx) {  // dx = dz · W: [mp, C] x [C, D]
        float* out = direct ? dx.data<float>() + rows[k0] * d : dxbuf.data<float>() + th * chunk * d;
        onednn::matmul({1, mp, c, mp * c, c, 1}, z, {1, c, d, c * d, d, 1}, wp, nullptr, out, 1, mp, d);
        if (!direct)
          for (int64_t i = 0; i < m; ++i) std::copy_n(out + i * d, d, dx.data<float>() + rows[k0 + i] * d);
      }
      if (rw) {  // dW (+)= dzᵀ · x: [C, mp] (dz read transposed) x [mp, D]
        const bool first = !dw_written[static_cast<std::size_t>(th)];
        onednn::matmul({1, c, mp, mp * c, 1, c}, z, {1, mp, d, mp * d, d, 1}, xr, nullptr, dwt, 1, c, d, !first);
        dw_written[static_cast<std::size_t>(th)] = 1;
      }
    }
  });

  double total = 0;
  for (double v : row_loss) total += v;
  // No counted target: the loss is 0 (PyTorch gives NaN), and so is the gradient.
  Tensor loss = scalar_tensor(count ? static_cast<float>(total / count) : 0.0f);
  if (!grad) return loss;
  if (rw) {  // thread 0's gradient plus the others' (a thread without rows wrote nothing)
    float* out = dw.data<float>();
    if (!dw_written[0]) std::fill(out, out + c * d, 0.0f);
    for (int th = 1; th < threads; ++th) {
      if (!dw_written[static_cast<std::size_t>(th)]) continue;
      const float* more = dw_more.data<float>() + (th - 1) * c * d;
      parallel_for(c, should_parallelize(c * d), [&](int64_t r) {
        for (int64_t j = 0; j < d; ++j) out[r * d + j] += more[r * d + j];
      });
    }
  }
  Tensor dbias = rb ? db.reduce() : Tensor();
  record(loss, "linear_cross_entropy", {x, weight, bias}, [dx, dw, dbias](const Tensor& g) {
    // The gradients were formed with the forward (for an upstream gradient
    // of 1); any other scales them.
    const float s = g.item();
    auto scaled = [s](const Tensor& v) { return !v.defined() || s == 1.0f ? v : mul(v, s); };
    return std::vector<Tensor>{scaled(dx), scaled(dw), scaled(dbias)};
  });
  return loss;
}

// ---------------------------------------------------------------- dropout

namespace {
// out = x ∘ mask / (1 − p), where mask_i = (u_i ≥ p) and u_i comes from
// counter first + i/4, lane i%4.
Tensor apply_dropout_mask(const Tensor& x_in, float p, uint64_t seed, uint64_t first) {
  const Tensor x = x_in.detach().contiguous();
  Tensor y = empty(x.shape());
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  const int64_t n = x.numel();
  const float scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  // Element i keeps its value when the uniform from word i % 4 of counter
  // first + i / 4 is >= p. Tiles of kTile elements: random words into a
  // local buffer, then one vectorised select.
  constexpr int64_t kTile = 1024;
  const int64_t tiles = (n + kTile - 1) / kTile;
  parallel_for(tiles, should_parallelize(n), [&](int64_t t) {
    alignas(64) uint32_t bits[kTile];
    const int64_t begin = t * kTile, len = std::min(kTile, n - begin);
    philox4x32_fill(seed, first + static_cast<uint64_t>(begin / 4), (len + 3) / 4, bits);
    // Locals, not the captured references: through those, every store to
    // yt might change p or scale, which kept the loop scalar with a
    // branch that mispredicts on every dropped element (4 ns per element).
    const float drop = p, keep = scale;
    const float* xt = xp + begin;
    float* yt = yp + begin;
    for (int64_t i = 0; i < len; ++i) yt[i] = bits_to_unit_float(bits[i]) >= drop ? xt[i] * keep : 0.0f;
  });
  return y;
}
}  // namespace

Tensor dropout(const Tensor& x, float p, bool training, Generator& gen) {
  profile::OpScope prof(profile::Kind::elementwise);
  check_f32(x, "dropout", "input");
  TFM_CHECK(p >= 0.0f && p <= 1.0f, "dropout: p must be in [0, 1], got ", p);
  if (!training || p == 0.0f) return x;
  const uint64_t seed = gen.seed();
  const uint64_t first = gen.reserve(static_cast<uint64_t>((x.numel() + 3) / 4));
  Tensor y = apply_dropout_mask(x, p, seed, first);
  if (needs_grad({&x})) {
    record(y, "dropout", {x}, [p, seed, first](const Tensor& g) {
      return std::vector<Tensor>{apply_dropout_mask(g, p, seed, first)};  // same mask, regenerated
    });
  }
  return y;
}

}  // namespace tfm::core
