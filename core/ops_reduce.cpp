// Reductions: sum, mean, max over any set of dims, and sum_to (the inverse
// of broadcasting). The kernel views a contiguous input as [A, R, B] and
// reduces the middle dim; non-adjacent dims are reduced one block at a time.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "autograd.h"
#include "error.h"
#include "ops.h"
#include "profile.h"
#include "parallel.h"

namespace tfm::core {

namespace {

enum class ReduceKind { sum, max };

// out[a, b] = reduce_r x[a, r, b] for contiguous x.
void reduce_arb(const float* x, float* out, int64_t A, int64_t R, int64_t B, ReduceKind kind) {
  const bool par = should_parallelize(A * R * B);
  if (B == 1) {
    parallel_for(A, par, [&](int64_t a) {
      const float* row = x + a * R;
      if (kind == ReduceKind::sum) {
        double acc = 0.0;  // double: sums of many fp32 values stay accurate
#pragma omp simd reduction(+ : acc)
        for (int64_t r = 0; r < R; ++r) acc += row[r];  // a partial sum per lane: not one long dependency chain
        out[a] = static_cast<float>(acc);
      } else {
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t r = 0; r < R; ++r) m = std::max(m, row[r]);
        out[a] = R ? m : -std::numeric_limits<float>::infinity();
      }
    });
    return;
  }
  // B > 1: accumulate whole rows of B (vectorizes); parallel over (a, b-chunk).
  // Sums go through a per-thread row of double accumulators, as above.
  const int64_t chunks = (par && A < num_threads()) ? num_threads() : 1;
  const int64_t chunk = (B + chunks - 1) / chunks;
  parallel_ranges(A * chunks, par, [&](int64_t begin, int64_t end) {
    std::vector<double> acc(kind == ReduceKind::sum ? chunk : 0);
    for (int64_t ac = begin; ac < end; ++ac) {
      const int64_t a = ac / chunks, c = ac % chunks;
      const int64_t b0 = c * chunk, b1 = std::min(B, b0 + chunk);
      float* o = out + a * B;
      if (kind == ReduceKind::sum) {
        double* s = acc.data();
        const int64_t n = b1 - b0;
        for (int64_t b = 0; b < n; ++b) s[b] = 0.0;
        for (int64_t r = 0; r < R; ++r) {
          const float* row = x + (a * R + r) * B + b0;
          for (int64_t b = 0; b < n; ++b) s[b] += row[b];
        }
        for (int64_t b = 0; b < n; ++b) o[b0 + b] = static_cast<float>(s[b]);
      } else {
        for (int64_t b = b0; b < b1; ++b) o[b] = -std::numeric_limits<float>::infinity();
        for (int64_t r = 0; r < R; ++r) {
          const float* row = x + (a * R + r) * B;
          for (int64_t b = b0; b < b1; ++b) o[b] = std::max(o[b], row[b]);
        }
      }
    }
  });
}

// Normalised, sorted, unique dims (all dims when `dims` is empty).
std::vector<int64_t> reduce_dims(const Tensor& x, const std::vector<int64_t>& dims, const char* op) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    for (int64_t d = 0; d < x.dim(); ++d) out.push_back(d);
    return out;
  }
  for (int64_t d : dims) out.push_back(wrap_dim(d, x.dim(), op));
  std::sort(out.begin(), out.end());
  TFM_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": repeated dim in the list for shape ",
            shape_str(x.shape()));
  if (x.dim() == 0) out.clear();  // wrap_dim accepts dim 0 for a [] tensor; there is no real dim to reduce
  return out;
}

Shape keepdim_shape(const Shape& s, const std::vector<int64_t>& dims) {
  Shape out = s;
  for (int64_t d : dims) out[d] = 1;
  return out;
}

Shape dropdim_shape(const Shape& s, const std::vector<int64_t>& dims) {
  Shape out;
  for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d)
    if (!std::binary_search(dims.begin(), dims.end(), d)) out.push_back(s[d]);
  return out;
}

// Reduces without recording autograd; returns the keepdim-shaped result.
Tensor reduce_raw(const Tensor& x_in, const std::vector<int64_t>& dims, ReduceKind kind) {
  Tensor x = x_in.detach().contiguous();
  if (x.dim() == 0) return x.clone();
  // Reduce blocks of adjacent dims from the innermost block outwards.
  std::size_t i = dims.size();
  while (i > 0) {
    std::size_t j = i - 1;
    while (j > 0 && dims[j - 1] + 1 == dims[j]) --j;
    const int64_t first = dims[j], last = dims[i - 1];
    int64_t A = 1, R = 1, B = 1;
    for (int64_t d = 0; d < x.dim(); ++d) (d < first ? A : d <= last ? R : B) *= x.shape()[d];
    Shape out_shape = x.shape();
    for (int64_t d = first; d <= last; ++d) out_shape[d] = 1;
    Tensor out = empty(out_shape);
    reduce_arb(x.data<float>(), out.data<float>(), A, R, B, kind);
    x = out;
    i = j;
  }
  return x;
}

void check_reduce_input(const Tensor& x, const char* op) {
  TFM_CHECK(x.defined(), op, ": undefined tensor argument");
  TFM_CHECK(x.dtype() == DType::f32, op, ": expected an f32 tensor, got ", dtype_name(x.dtype()));
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  profile::OpScope prof(profile::Kind::reduce);
  check_reduce_input(x, "sum");
  const auto dims = reduce_dims(x, dims_in, "sum");
  Tensor out = reduce_raw(x, dims, ReduceKind::sum);
  if (!keepdim) out = out.view(dropdim_shape(x.shape(), dims));
  if (needs_grad({&x})) {
    record(out, "sum", {x}, [xs = x.shape(), ks = keepdim_shape(x.shape(), dims)](const Tensor& g) {
      return std::vector<Tensor>{g.reshape(ks).expand(xs)};
    });
  }
  return out;
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  profile::OpScope prof(profile::Kind::reduce);
  check_reduce_input(x, "mean");
  const auto dims = reduce_dims(x, dims_in, "mean");
  int64_t count = 1;
  for (int64_t d : dims) count *= x.shape()[d];
  TFM_CHECK(count > 0, "mean: reducing over an empty dimension of shape ", shape_str(x.shape()));
  return mul(sum(x, dims, keepdim), 1.0f / static_cast<float>(count));
}

Tensor max(const Tensor& x, const std::vector<int64_t>& dims_in, bool keepdim) {
  profile::OpScope prof(profile::Kind::reduce);
  check_reduce_input(x, "max");
  const auto dims = reduce_dims(x, dims_in, "max");
  for (int64_t d : dims)
    TFM_CHECK(x.shape()[d] > 0, "max: reducing over an empty dimension of shape ", shape_str(x.shape()));
  Tensor out_keep = reduce_raw(x, dims, ReduceKind::max);
  Tensor out = keepdim ? out_keep : out_keep.view(dropdim_shape(x.shape(), dims));
  if (needs_grad({&x})) {
    record(out, "max", {x},
           [xd = x.detach(), mk = out_keep.detach(), dims, ks = out_keep.shape()](const Tensor& g) {
             // Share the gradient equally among tied maxima.
             Tensor mask = eq(xd, mk);
             Tensor count = reduce_raw(mask, dims, ReduceKind::sum);
             return std::vector<Tensor>{mul(mask, div(g.reshape(ks), count))};
           });
  }
  return out;
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
  profile::OpScope prof(profile::Kind::reduce);
  if (x.shape() == shape) return x;
  const int64_t lead = x.dim() - static_cast<int64_t>(shape.size());
  TFM_CHECK(lead >= 0, "sum_to: cannot reduce shape ", shape_str(x.shape()), " to ", shape_str(shape));
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (d < lead) {
      dims.push_back(d);
    } else if (shape[d - lead] == 1 && x.shape()[d] != 1) {
      dims.push_back(d);
    } else {
      TFM_CHECK(shape[d - lead] == x.shape()[d], "sum_to: cannot reduce shape ", shape_str(x.shape()), " to ",
                shape_str(shape));
    }
  }
  if (dims.empty()) return x.reshape(shape);
  return sum(x, dims, true).reshape(shape);
}

}  // namespace tfm::core
