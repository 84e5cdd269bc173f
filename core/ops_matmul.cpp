// Matrix products through oneDNN (onednn.h): matmul with batch broadcasting
// and transposed operands, and linear (x·Wᵀ + b) with the bias fused.
#include <algorithm>

#include "autograd.h"
#include "error.h"
#include "onednn.h"
#include "ops.h"
#include "profile.h"

namespace tfm::core {

namespace {

// True when the last two dims have a unit stride in one of them (a row- or
// column-major matrix that oneDNN reads directly).
bool matrix_layout_ok(const Tensor& t) {
  const int64_t rs = t.stride(-2), cs = t.stride(-1);
  return (cs == 1 && (rs >= t.size(-1) || t.size(-2) == 1)) || (rs == 1 && (cs >= t.size(-2) || t.size(-1) == 1));
}

// Describes `t` ([..., rows, cols]) broadcast to `batch_shape` as a single
// batch dim, copying only when its batch dims cannot be expressed with one
// stride.
onednn::MatDesc describe(Tensor& t, const Shape& batch_shape) {
  if (!matrix_layout_ok(t)) t = contiguous(t);
  const int64_t nb = t.dim() - 2;
  const int64_t total = numel_of(batch_shape);
  onednn::MatDesc d;
  d.rows = t.size(-2);
  d.cols = t.size(-1);
  d.row_stride = t.stride(-2);
  d.col_stride = t.stride(-1);
  int64_t own = 1;
  for (int64_t i = 0; i < nb; ++i) own *= t.shape()[i];
  if (own == 1) {  // shared by every batch entry
    d.batch = 1;
    d.batch_stride = std::max(d.rows * d.row_stride, d.cols * d.col_stride);
    return d;
  }
  // Own batch dims must equal the broadcast batch shape and merge into one stride.
  bool mergeable = nb == static_cast<int64_t>(batch_shape.size());
  for (int64_t i = 0; i < nb && mergeable; ++i) mergeable = t.shape()[i] == batch_shape[i];
  for (int64_t i = 0; i + 1 < nb && mergeable; ++i)
    mergeable = t.shape()[i] == 1 || t.strides()[i] == t.strides()[i + 1] * t.shape()[i + 1];
  if (!mergeable) {
    Shape full = batch_shape;
    full.push_back(d.rows);
    full.push_back(d.cols);
    t = contiguous(t.detach().expand(full));
    d.row_stride = d.cols;
    d.col_stride = 1;
  }
  // One stride for the merged batch: that of the innermost batch dim with
  // size > 1 (size-1 dims may carry any stride).
  d.batch = total;
  const int64_t nb_now = t.dim() - 2;
  for (int64_t i = nb_now - 1; i >= 0; --i)
    if (t.shape()[i] != 1) {
      d.batch_stride = t.strides()[i];
      break;
    }
  return d;
}

// out = a · b for logical operands (transposes already applied as views).
Tensor matmul_forward(Tensor a, Tensor b) {
  const int64_t m = a.size(-2), k = a.size(-1), n = b.size(-1);
  TFM_CHECK(b.size(-2) == k, "matmul: inner dims differ: ", shape_str(a.shape()), " x ", shape_str(b.shape()),
            " (after transposes)");
  const Shape ba(a.shape().begin(), a.shape().end() - 2), bb(b.shape().begin(), b.shape().end() - 2);
  const Shape batch = broadcast_shapes(ba, bb, "matmul (batch dims)");
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor out = empty(out_shape);
  if (out.numel() == 0) return out;
  if (k == 0) return zeros(out_shape);
  // A batched left operand times a shared 2-D right operand is one big GEMM.
  if (b.dim() == 2 && a.dim() > 2) {
    Tensor a2 = a.reshape({-1, k});
    if (!matrix_layout_ok(a2) || a2.stride(-1) != 1) a2 = contiguous(a2);
    Tensor b2 = b;
    auto sd = describe(a2, {});
    auto wd = describe(b2, {});
    onednn::matmul(sd, a2.data<float>(), wd, b2.data<float>(), nullptr, out.data<float>(), 1, a2.size(0), n);
    return out;
  }
  auto sd = describe(a, batch);
  auto wd = describe(b, batch);
  onednn::matmul(sd, a.data<float>(), wd, b.data<float>(), nullptr, out.data<float>(), numel_of(batch), m, n);
  return out;
}

Tensor maybe_t(const Tensor& t, bool trans) { return trans ? t.detach().transpose(-1, -2) : t.detach(); }

void check_matmul_args(const Tensor& a, const Tensor& b, const char* op) {
  TFM_CHECK(a.defined() && b.defined(), op, ": undefined tensor argument");
  TFM_CHECK(a.dtype() == DType::f32 && b.dtype() == DType::f32, op, ": expected f32 tensors, got ",
            dtype_name(a.dtype()), " and ", dtype_name(b.dtype()));
  TFM_CHECK(a.dim() >= 2 && b.dim() >= 2, op, ": operands need at least 2 dims, got ", shape_str(a.shape()),
            " and ", shape_str(b.shape()));
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  profile::OpScope prof(profile::Kind::matmul);
  check_matmul_args(a, b, "matmul");
  TFM_CHECK(a.size(ta ? -2 : -1) == b.size(tb ? -1 : -2), "matmul: inner dims differ: ",
            shape_str(a.shape()), (ta ? "ᵀ" : ""), " x ", shape_str(b.shape()), (tb ? "ᵀ" : ""));
  Tensor out = matmul_forward(maybe_t(a, ta), maybe_t(b, tb));
  if (needs_grad({&a, &b})) {
    // da reads b and db reads a: each operand is kept only for the other's gradient.
    const bool ra = a.requires_grad(), rb = b.requires_grad();
    record(out, "matmul", {a, b},
           [ad = rb ? a.detach() : Tensor(), bd = ra ? b.detach() : Tensor(), sa = a.shape(), sb = b.shape(), ta,
            tb, ra, rb](const Tensor& g) -> std::vector<Tensor> {
             Tensor da, db;
             if (ra) da = sum_to(ta ? matmul(bd, g, tb, true) : matmul(g, bd, false, !tb), sa);
             if (rb) {
               if (sb.size() == 2 && sa.size() > 2) {
                 // Shared weight: fold the batch into the rows, one GEMM.
                 Tensor a2 = maybe_t(ad, ta).reshape({-1, ad.size(ta ? -2 : -1)});
                 Tensor g2 = g.reshape({-1, g.size(-1)});
                 db = tb ? matmul(g2, a2, true, false) : matmul(a2, g2, true, false);
               } else {
                 db = sum_to(tb ? matmul(g, ad, true, ta) : matmul(ad, g, !ta, false), sb);
               }
             }
             return {da, db};
           });
  }
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  profile::OpScope prof(profile::Kind::matmul);
  check_matmul_args(weight, weight, "linear");
  TFM_CHECK(x.defined() && x.dtype() == DType::f32 && x.dim() >= 1, "linear: input must be an f32 tensor");
  TFM_CHECK(weight.dim() == 2 && x.size(-1) == weight.size(1), "linear: input ", shape_str(x.shape()),
            " does not match weight ", shape_str(weight.shape()), " (expected [..., ", weight.size(1), "])");
  const int64_t in = weight.size(1), out_f = weight.size(0);
  if (bias.defined())
    TFM_CHECK(bias.dim() == 1 && bias.size(0) == out_f && bias.dtype() == DType::f32, "linear: bias ",
              shape_str(bias.shape()), " does not match weight ", shape_str(weight.shape()), " (expected [", out_f,
              "])");
  Tensor x2 = x.detach().reshape({-1, in});
  if (x2.stride(-1) != 1) x2 = contiguous(x2);
  Tensor w = weight.detach();
  Tensor bc = bias.defined() ? contiguous(bias.detach()) : Tensor();
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Tensor out = empty(out_shape);
  if (out.numel() > 0) {
    Tensor wt = w.transpose(0, 1);  // [in, out] view
    auto sd = describe(x2, {});
    auto wd = describe(wt, {});
    onednn::matmul(sd, x2.data<float>(), wd, wt.data<float>(), bc.defined() ? bc.data<float>() : nullptr,
                   out.data<float>(), 1, x2.size(0), out_f);
  }
  if (needs_grad({&x, &weight, &bias})) {
    // dx reads the weight, dW reads the input, db reads neither.
    const bool rx = x.requires_grad(), rw = weight.requires_grad();
    record(out, "linear", {x, weight, bias},
           [x2 = rw ? x2 : Tensor(), w = rx ? w : Tensor(), xs = x.shape(), rx, rw,
            rb = bias.defined() && bias.requires_grad()](const Tensor& g) -> std::vector<Tensor> {
             Tensor g2 = g.reshape({-1, g.size(-1)});
             return {rx ? matmul(g2, w).reshape(xs) : Tensor(), rw ? matmul(g2, x2, true, false) : Tensor(),
                     rb ? sum(g2, {0}) : Tensor()};
           });
  }
  return out;
}

}  // namespace tfm::core
