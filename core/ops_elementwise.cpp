// Elementwise ops: arithmetic with NumPy broadcasting, unary math,
// activations and comparisons. Each op's backward is defined next to its
// forward; broadcast inputs get their gradient summed back with sum_to().
#include <cmath>

#include "autograd.h"
#include "error.h"
#include "kernels.h"
#include "ops.h"
#include "profile.h"
#include "vmath.h"

namespace tfm::core {

using kernels::map_binary;
using kernels::map_unary;

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const std::size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (std::size_t i = 0; i < n; ++i) {
    const int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    const int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    TFM_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
              " cannot be broadcast together (dim ", i, ": ", da, " vs ", db, ")");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

namespace {

void check_f32(const Tensor& t, const char* op) {
  TFM_CHECK(t.defined(), op, ": undefined tensor argument");
  TFM_CHECK(t.dtype() == DType::f32, op, ": expected an f32 tensor, got ", dtype_name(t.dtype()), " of shape ",
            shape_str(t.shape()));
}

// dx = g * df(x, y), fused in one pass; reads x and y only when saved.
template <bool kx, bool ky, class D>
Tensor unary_backward(const Tensor& g, const Tensor& xd, const Tensor& yd, D df) {
  Tensor dx = empty(g.shape());
  const Tensor gc = g.contiguous();
  const Tensor xc = kx ? xd.contiguous() : Tensor(), yc = ky ? yd.contiguous() : Tensor();
  const float* xp = kx ? xc.data<float>() : nullptr;
  const float* yp = ky ? yc.data<float>() : nullptr;
  const float* gp = gc.data<float>();
  float* dp = dx.data<float>();
  const int64_t n = dx.numel();
  parallel_ranges(n, should_parallelize(n), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float xv = 0.0f, yv = 0.0f;
      if constexpr (kx) xv = xp[i];
      if constexpr (ky) yv = yp[i];
      dp[i] = gp[i] * df(xv, yv);
    }
  });
  return dx;
}

// Binary op skeleton: checks, broadcasts, computes f, and records `grads`
// (which returns the gradients at the broadcast shape; sum_to reduces them).
// `keeps(ra, rb)` says which operands the backward reads given which inputs
// require grad; only those are saved (the others reach `grads` undefined).
template <class F, class K, class G>
Tensor binary_op(const char* name, const Tensor& a, const Tensor& b, F f, K keeps, G grads) {
  profile::OpScope prof(profile::Kind::elementwise);
  check_f32(a, name);
  check_f32(b, name);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  Tensor out = map_binary(a, b, shape, f);
  if (needs_grad({&a, &b})) {
    const bool ra = a.requires_grad(), rb = b.requires_grad();
    const auto [keep_a, keep_b] = keeps(ra, rb);
    record(out, name, {a, b},
           [grads, sa = a.shape(), sb = b.shape(), ra, rb, ad = keep_a ? a.detach() : Tensor(),
            bd = keep_b ? b.detach() : Tensor()](const Tensor& g) -> std::vector<Tensor> {
             auto [ga, gb] = grads(g, ad, bd, ra, rb);
             return {ra ? sum_to(ga, sa) : Tensor(), rb ? sum_to(gb, sb) : Tensor()};
           });
  }
  return out;
}

// What a unary op's backward reads: nothing (constant derivative), its
// input, its output, or both.
enum class Keeps { nothing, input, output, both };

// Unary op skeleton: y = f(x); backward gives g * df(x, y) elementwise.
// Only the operands named by K are saved; df receives 0 for the others.
template <Keeps K, class F, class D>
Tensor unary_op(const char* name, const Tensor& x, F f, D df) {
  profile::OpScope prof(profile::Kind::elementwise);
  check_f32(x, name);
  Tensor y = map_unary(x, f);
  if (needs_grad({&x})) {
    constexpr bool kx = K == Keeps::input || K == Keeps::both, ky = K == Keeps::output || K == Keeps::both;
    record(y, name, {x},
           [df, xd = kx ? x.detach() : Tensor(), yd = ky ? y.detach() : Tensor()](const Tensor& g) -> std::vector<Tensor> {
             return {unary_backward<kx, ky>(g, xd, yd, df)};
           });
  }
  return y;
}

// Unary op whose derivative comes almost free with its value (GELU's Φ and
// e^{−x²/2} give both): when a gradient is needed, the forward writes dy/dx
// next to y and saves it instead of x, so the backward is one multiply and
// the costly function is evaluated once per element instead of twice. The
// saved tensor is the size of the x it replaces. fd(v) returns {y, dy/dx}.
template <class F, class FD>
Tensor unary_op_saving_derivative(const char* name, const Tensor& x, F f, FD fd) {
  profile::OpScope prof(profile::Kind::elementwise);
  check_f32(x, name);
  if (!needs_grad({&x})) return map_unary(x, f);
  const Tensor xc = x.detach().contiguous();
  Tensor y = empty(x.shape()), d = empty(x.shape());
  const float* xp = xc.data<float>();
  float* yp = y.data<float>();
  float* dp = d.data<float>();
  const int64_t n = y.numel();
  parallel_ranges(n, should_parallelize(n), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const auto [value, slope] = fd(xp[i]);
      yp[i] = value;
      dp[i] = slope;
    }
  });
  record(y, name, {x}, [d](const Tensor& g) -> std::vector<Tensor> {
    return {unary_backward<false, true>(g, Tensor(), d, [](float, float slope) { return slope; })};
  });
  return y;
}

struct ValueSlope {
  float value, slope;
};

using Grads = std::pair<Tensor, Tensor>;
using Keep2 = std::pair<bool, bool>;

}  // namespace

// ---------------------------------------------------------------- arithmetic

Tensor add(const Tensor& a, const Tensor& b) {
  return binary_op("add", a, b, [](float x, float y) { return x + y; }, [](bool, bool) { return Keep2{false, false}; },
                   [](const Tensor& g, const Tensor&, const Tensor&, bool, bool) { return Grads{g, g}; });
}

Tensor sub(const Tensor& a, const Tensor& b) {
  return binary_op("sub", a, b, [](float x, float y) { return x - y; }, [](bool, bool) { return Keep2{false, false}; },
                   [](const Tensor& g, const Tensor&, const Tensor&, bool, bool rb) {
                     return Grads{g, rb ? neg(g) : Tensor()};
                   });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  return binary_op("mul", a, b, [](float x, float y) { return x * y; },
                   [](bool ra, bool rb) { return Keep2{rb, ra}; },  // each operand only for the other's gradient
                   [](const Tensor& g, const Tensor& x, const Tensor& y, bool ra, bool rb) {
                     return Grads{ra ? mul(g, y) : Tensor(), rb ? mul(g, x) : Tensor()};
                   });
}

Tensor div(const Tensor& a, const Tensor& b) {
  return binary_op("div", a, b, [](float x, float y) { return x / y; },
                   [](bool, bool rb) { return Keep2{rb, true}; },  // y always, x only for dL/dy
                   [](const Tensor& g, const Tensor& x, const Tensor& y, bool ra, bool rb) {
                     Tensor gx = div(g, y);
                     // d(x/y)/dy = -x/y² = -(g/y)·x/y
                     return Grads{ra ? gx : Tensor(), rb ? neg(mul(gx, div(x, y))) : Tensor()};
                   });
}

// Scalar forms: one pass, no broadcast bookkeeping.
Tensor add(const Tensor& a, float s) {
  return unary_op<Keeps::nothing>("add_scalar", a, [s](float x) { return x + s; }, [](float, float) { return 1.0f; });
}
Tensor sub(const Tensor& a, float s) { return add(a, -s); }
Tensor rsub(float s, const Tensor& a) {
  return unary_op<Keeps::nothing>("rsub_scalar", a, [s](float x) { return s - x; }, [](float, float) { return -1.0f; });
}
Tensor mul(const Tensor& a, float s) {
  return unary_op<Keeps::nothing>("mul_scalar", a, [s](float x) { return x * s; }, [s](float, float) { return s; });
}
Tensor div(const Tensor& a, float s) { return mul(a, 1.0f / s); }
Tensor rdiv(float s, const Tensor& a) {
  return unary_op<Keeps::both>("rdiv_scalar", a, [s](float x) { return s / x; }, [](float x, float y) { return -y / x; });
}

// ---------------------------------------------------------------- unary math

Tensor neg(const Tensor& x) {
  return unary_op<Keeps::nothing>("neg", x, [](float v) { return -v; }, [](float, float) { return -1.0f; });
}
Tensor exp(const Tensor& x) {
  return unary_op<Keeps::output>("exp", x, [](float v) { return vmath::vexp(v); }, [](float, float y) { return y; });
}
Tensor log(const Tensor& x) {
  return unary_op<Keeps::input>("log", x, [](float v) { return std::log(v); }, [](float v, float) { return 1.0f / v; });
}
Tensor sqrt(const Tensor& x) {
  return unary_op<Keeps::output>("sqrt", x, [](float v) { return std::sqrt(v); }, [](float, float y) { return 0.5f / y; });
}
Tensor rsqrt(const Tensor& x) {
  return unary_op<Keeps::both>("rsqrt", x, [](float v) { return 1.0f / std::sqrt(v); },
                  [](float v, float y) { return -0.5f * y / v; });
}
Tensor pow(const Tensor& x, float p) {
  return unary_op<Keeps::input>("pow", x, [p](float v) { return std::pow(v, p); },
                  [p](float v, float) { return p == 0.0f ? 0.0f : p * std::pow(v, p - 1.0f); });
}
Tensor abs(const Tensor& x) {
  return unary_op<Keeps::input>("abs", x, [](float v) { return std::fabs(v); },
                  [](float v, float) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f); });
}
Tensor tanh(const Tensor& x) {
  return unary_op<Keeps::output>("tanh", x, [](float v) { return vmath::vtanh(v); }, [](float, float y) { return 1.0f - y * y; });
}
Tensor sigmoid(const Tensor& x) {
  return unary_op<Keeps::output>("sigmoid", x, [](float v) { return 1.0f / (1.0f + vmath::vexp(-v)); },
                  [](float, float y) { return y * (1.0f - y); });
}
Tensor relu(const Tensor& x) {
  return unary_op<Keeps::output>("relu", x, [](float v) { return v > 0.0f ? v : 0.0f; },
                  [](float, float y) { return y > 0.0f ? 1.0f : 0.0f; });  // y > 0 exactly when x > 0
}
Tensor silu(const Tensor& x) {
  return unary_op<Keeps::input>("silu", x, [](float v) { return v / (1.0f + vmath::vexp(-v)); },
                  [](float v, float) {
                    const float s = 1.0f / (1.0f + vmath::vexp(-v));
                    return s * (1.0f + v * (1.0f - s));
                  });
}

Tensor gelu(const Tensor& x, GeluApprox approx) {
  constexpr float kInvSqrt2Pi = 0.39894228040143268f;
  constexpr float kSqrt2OverPi = 0.79788456080286536f;
  constexpr float kCoef = 0.044715f;
  if (approx == GeluApprox::erf) {
    // x·Φ(x), Φ the normal CDF (= (1 + erf(x/√2))/2, kept precise in the
    // tail); the slope Φ(x) + x·φ(x) reuses Φ's e^{−x²/2}.
    return unary_op_saving_derivative(
        "gelu_erf", x, [](float v) { return v * vmath::vnormal_cdf(v); },
        [](float v) {
          const vmath::CdfGauss c = vmath::vnormal_cdf_gauss(v);
          return ValueSlope{v * c.cdf, c.cdf + v * kInvSqrt2Pi * c.gauss};
        });
  }
  return unary_op_saving_derivative(
      "gelu_tanh", x,
      [](float v) { return 0.5f * v * (1.0f + vmath::vtanh(kSqrt2OverPi * (v + kCoef * v * v * v))); },
      [](float v) {
        const float t = vmath::vtanh(kSqrt2OverPi * (v + kCoef * v * v * v));
        const float dinner = kSqrt2OverPi * (1.0f + 3.0f * kCoef * v * v);
        return ValueSlope{0.5f * v * (1.0f + t), 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * dinner};
      });
}

// ---------------------------------------------------------------- comparisons

namespace {
template <class F>
Tensor compare(const char* name, const Tensor& a, const Tensor& b, F f) {
  profile::OpScope prof(profile::Kind::elementwise);
  check_f32(a, name);
  check_f32(b, name);
  return map_binary(a, b, broadcast_shapes(a.shape(), b.shape(), name), f);
}
}  // namespace

Tensor eq(const Tensor& a, const Tensor& b) {
  return compare("eq", a, b, [](float x, float y) { return x == y ? 1.0f : 0.0f; });
}
Tensor gt(const Tensor& a, const Tensor& b) {
  return compare("gt", a, b, [](float x, float y) { return x > y ? 1.0f : 0.0f; });
}
Tensor lt(const Tensor& a, const Tensor& b) {
  return compare("lt", a, b, [](float x, float y) { return x < y ? 1.0f : 0.0f; });
}

// ---------------------------------------------------------------- selection

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  profile::OpScope prof(profile::Kind::elementwise);
  check_f32(cond, "where");
  check_f32(a, "where");
  check_f32(b, "where");
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  Tensor out = empty(shape);
  const Shape sc = kernels::broadcast_strides(cond, shape), sa = kernels::broadcast_strides(a, shape),
              sb = kernels::broadcast_strides(b, shape);
  const float *cp = cond.data<float>(), *ap = a.data<float>(), *bp = b.data<float>();
  float* op = out.data<float>();
  kernels::for_each_segment<4>(shape, {&out.strides(), &sc, &sa, &sb}, [&](const kernels::Segment<4>& s) {
    for (int64_t i = 0; i < s.len; ++i) {
      const float c = cp[s.offset[1] + i * s.stride[1]];
      op[s.offset[0] + i] = c != 0.0f ? ap[s.offset[2] + i * s.stride[2]] : bp[s.offset[3] + i * s.stride[3]];
    }
  });
  if (needs_grad({&a, &b})) {
    record(out, "where", {Tensor(), a, b},
           [c = cond.detach(), sa_ = a.shape(), sb_ = b.shape(), ra = a.requires_grad(),
            rb = b.requires_grad()](const Tensor& g) -> std::vector<Tensor> {
             const Tensor zero = zeros({});
             return {Tensor(), ra ? sum_to(where(c, g, zero), sa_) : Tensor(),
                     rb ? sum_to(where(c, zero, g), sb_) : Tensor()};
           });
  }
  return out;
}

Tensor masked_fill(const Tensor& x, const Tensor& mask, float value) {
  check_f32(x, "masked_fill");
  check_f32(mask, "masked_fill");
  TFM_CHECK(broadcast_shapes(x.shape(), mask.shape(), "masked_fill") == x.shape(), "masked_fill: mask of shape ",
            shape_str(mask.shape()), " does not broadcast to the input shape ", shape_str(x.shape()));
  return where(mask, full({}, value), x);
}

}  // namespace tfm::core
