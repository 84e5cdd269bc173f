// Internal: strided iteration shared by the elementwise, copy and in-place
// kernels. Not part of the public API.
//
// for_each_segment walks the elements of `shape` in row-major order for N
// operands with their own strides (0 for a broadcast dim). Adjacent dims
// that are contiguous for every operand are merged first, so a contiguous
// tensor becomes one long segment. Segments (rows, or parts of a long row)
// are spread over the thread team when the work is large enough.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>

#include "error.h"
#include "parallel.h"
#include "tensor.h"

namespace tfm::core::kernels {

template <std::size_t N>
struct Segment {
  std::array<int64_t, N> offset;  // element offset of the segment start per operand
  std::array<int64_t, N> stride;  // element stride along the segment per operand
  int64_t len;
};

template <std::size_t N, class Body>
void for_each_segment(const Shape& shape_in, const std::array<const Shape*, N>& strides_in, Body&& body) {
  // Merge dims (drop size-1 dims, join dims contiguous for every operand).
  int64_t dims[16], st[N][16];
  int nd = 0;
  for (std::size_t d = 0; d < shape_in.size(); ++d) {
    const int64_t size = shape_in[d];
    if (size == 0) return;
    if (size == 1) continue;
    bool merge = nd > 0;
    for (std::size_t k = 0; k < N && merge; ++k)
      merge = st[k][nd - 1] == (*strides_in[k])[d] * size;
    if (merge) {
      dims[nd - 1] *= size;
      for (std::size_t k = 0; k < N; ++k) st[k][nd - 1] = (*strides_in[k])[d];
    } else {
      if (nd == 16) ::tfm::detail::throw_error("tensor rank above 16 is not supported");
      dims[nd] = size;
      for (std::size_t k = 0; k < N; ++k) st[k][nd] = (*strides_in[k])[d];
      ++nd;
    }
  }
  if (nd == 0) {  // a single element
    dims[0] = 1;
    for (std::size_t k = 0; k < N; ++k) st[k][0] = 0;
    nd = 1;
  }
  const int64_t inner = dims[nd - 1];
  int64_t rows = 1;
  for (int d = 0; d < nd - 1; ++d) rows *= dims[d];
  const int64_t total = rows * inner;
  const int threads = should_parallelize(total) ? num_threads() : 1;
  // Split long rows so every thread has work even when there are few rows.
  const int64_t parts = rows >= threads ? 1 : std::min<int64_t>(threads, inner);
  const int64_t part_len = (inner + parts - 1) / parts;
  const int64_t units = rows * parts;

  auto run_unit = [&](int64_t u) {
    int64_t row = u / parts, part = u % parts;
    Segment<N> seg;
    seg.offset.fill(0);
    for (int d = nd - 2; d >= 0; --d) {
      const int64_t i = row % dims[d];
      row /= dims[d];
      for (std::size_t k = 0; k < N; ++k) seg.offset[k] += i * st[k][d];
    }
    const int64_t begin = part * part_len;
    seg.len = std::min(inner, begin + part_len) - begin;
    if (seg.len <= 0) return;
    for (std::size_t k = 0; k < N; ++k) {
      seg.offset[k] += begin * st[k][nd - 1];
      seg.stride[k] = st[k][nd - 1];
    }
    body(seg);
  };
  parallel_for(units, threads > 1, run_unit);
}

// out = f(x) elementwise into a new contiguous tensor.
template <class F>
Tensor map_unary(const Tensor& x, F f) {
  Tensor out = empty(x.shape());
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  const Shape& os = out.strides();
  for_each_segment<2>(x.shape(), {&os, &x.strides()}, [&](const Segment<2>& s) {
    float* o = op + s.offset[0];
    const float* a = xp + s.offset[1];
    if (s.stride[1] == 1) {
      for (int64_t i = 0; i < s.len; ++i) o[i] = f(a[i]);
    } else {
      for (int64_t i = 0; i < s.len; ++i) o[i] = f(a[i * s.stride[1]]);
    }
  });
  return out;
}

// Strides of `t` viewed with shape `target` (NumPy broadcasting: missing
// leading dims and dims of size 1 get stride 0).
Shape broadcast_strides(const Tensor& t, const Shape& target);

// out = f(a, b) with broadcasting into a new contiguous tensor of `shape`.
template <class F>
Tensor map_binary(const Tensor& a, const Tensor& b, const Shape& shape, F f) {
  Tensor out = empty(shape);
  const Shape sa = broadcast_strides(a, shape), sb = broadcast_strides(b, shape);
  const float* ap = a.data<float>();
  const float* bp = b.data<float>();
  float* op = out.data<float>();
  const Shape& os = out.strides();
  for_each_segment<3>(shape, {&os, &sa, &sb}, [&](const Segment<3>& s) {
    float* o = op + s.offset[0];
    const float* x = ap + s.offset[1];
    const float* y = bp + s.offset[2];
    const int64_t n = s.len, ax = s.stride[1], by = s.stride[2];
    if (ax == 1 && by == 1) {
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], y[i]);
    } else if (ax == 1 && by == 0) {
      const float yv = *y;
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i], yv);
    } else if (ax == 0 && by == 1) {
      const float xv = *x;
      for (int64_t i = 0; i < n; ++i) o[i] = f(xv, y[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) o[i] = f(x[i * ax], y[i * by]);
    }
  });
  return out;
}

// dst (any strides) = src broadcast to dst's shape. Element types must match.
void copy_into(const Tensor& src, const Tensor& dst);

}  // namespace tfm::core::kernels
