// The op set. Every op checks its arguments (throwing tfm::Error naming the
// op and the shapes), computes its forward, and, when an input requires
// grad, records a node whose backward sits next to the forward in the same
// source file:
//   ops_elementwise.cpp  arithmetic with broadcasting, unary math, activations
//   ops_reduce.cpp       sum, mean, max
//   ops_shape.cpp        views, contiguous, concat/split/stack, expand
//   ops_matmul.cpp       matmul, linear (oneDNN, see onednn.h)
//   ops_nn.cpp           softmax, norms, embedding, cross-entropy, dropout, masks
//
// Shapes: binary elementwise ops follow NumPy broadcasting (align trailing
// dims; a dim of 1 stretches). Outputs are new contiguous tensors except for
// the view ops, which share storage.
//
// Saved for backward ("keeps"): each op holds only what its backward reads,
// and only for the inputs that require grad (shapes and scalars aside):
//   add, sub, add/sub/rsub/mul/div by a scalar, neg       nothing
//   mul(a, b)       a only if b requires grad, b only if a does
//   div(a, b)       b; a only if b requires grad
//   rdiv(s, x)      input and output
//   exp, sqrt, tanh, sigmoid, relu                        output
//   log, pow, abs, silu                                   input
//   gelu            its slope dy/dx, written by the forward (the size of the
//                   input it replaces; the backward is one multiply)
//   rsqrt           input and output
//   where           the condition;  comparisons record nothing
//   sum, mean, sum_to, every shape op, concat, stack      nothing
//   max             input and the maxima (for the tie mask)
//   matmul(a, b)    a only if b requires grad, b only if a does
//   linear          the input only if the weight requires grad, the weight
//                   only if the input does, nothing for the bias
//   softmax, log_softmax                                  output
//   layer_norm, rms_norm   input, per-row mean and 1/std, the weight
//   embedding       the indices;  cross_entropy   logits, row log-sum-exp, targets
//   linear_cross_entropy  its input, weight and bias gradients (formed in
//                   the forward; no logits)
//   dropout         nothing (the mask is regenerated from the generator state)
#pragma once

#include <vector>

#include "rng.h"
#include "tensor.h"

namespace tfm::core {

// ---- elementwise binary (broadcasting) and scalar forms
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, float s);
Tensor sub(const Tensor& a, float s);  // a - s
Tensor rsub(float s, const Tensor& a);  // s - a
Tensor mul(const Tensor& a, float s);
Tensor div(const Tensor& a, float s);  // a / s
Tensor rdiv(float s, const Tensor& a);  // s / a
// Broadcast shape of a and b, or throws naming `op` and both shapes.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// ---- elementwise unary
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);
Tensor pow(const Tensor& x, float exponent);
Tensor abs(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
enum class GeluApprox { erf, tanh };
Tensor gelu(const Tensor& x, GeluApprox approx = GeluApprox::erf);
Tensor silu(const Tensor& x);

// ---- comparisons: 1.0 where true, 0.0 where false (never differentiable)
Tensor eq(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);

// ---- reductions. `dims` may be negative; an empty list reduces all dims.
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Maximum over dims. The gradient is shared equally among tied maxima
// (like torch.amax).
Tensor max(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Sums a broadcast gradient back to `shape` (the inverse of broadcasting).
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- matrix products (oneDNN)
// a: [..., M, K] (or [..., K, M] with trans_a), b: [..., K, N] (or [..., N, K]
// with trans_b) -> [..., M, N]. Batch dims broadcast; a 2-D operand is
// shared by every batch entry. Views with a unit stride in either of the last
// two dims are passed to oneDNN without copying.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x: [..., in], weight: [out, in], bias: [out] or undefined -> [..., out].
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- shape ops (views unless noted)
Tensor reshape(const Tensor& x, const Shape& s);  // one dim may be -1; copies if needed
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor expand(const Tensor& x, const Shape& s);  // -1 keeps a dim
Tensor unsqueeze(const Tensor& x, int64_t d);
Tensor squeeze(const Tensor& x, int64_t d);
Tensor contiguous(const Tensor& x);  // copies only if not contiguous
Tensor clone(const Tensor& x);  // always copies
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);  // copies
Tensor stack(const std::vector<Tensor>& xs, int64_t dim);  // copies
// Splits into pieces of `size` along dim (the last may be smaller): views.
std::vector<Tensor> split(const Tensor& x, int64_t size, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);

// ---- neural-network ops
// Softmax / log-softmax over `dim` (numerically stable). A row that is all
// -inf (fully masked) gives zeros from softmax and -inf from log_softmax.
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
// Normalises over the last dim; weight/bias [D] may be undefined.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps = 1e-5f);
Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps = 1e-6f);
// weight: [V, D], indices: i32 of any shape -> [*indices.shape, D].
// Gradient: scatter-add into the rows used.
Tensor embedding(const Tensor& weight, const Tensor& indices);
// logits: [N, C], targets: i32 [N]. Mean over targets != ignore_index of
// the (label-smoothed) negative log-likelihood; log-softmax is fused in.
// With smoothing e, the target distribution is (1-e)·onehot + e/C.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int32_t ignore_index = -100,
                     float label_smoothing = 0.0f);
// cross_entropy(linear(x, weight, bias), targets, ...) without the [N, C]
// logits: x [N, D], weight [C, D], bias [C] or undefined. Rows whose target
// is ignore_index are not projected at all; the others go in chunks of rows
// whose logits stay in cache, each projected, reduced to its loss and its
// logit gradient in place, and multiplied back into the input and weight
// gradients, all in the forward (so the op keeps its gradients, [N, D] +
// [C, D], instead of [N, C] logits until backward).
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& targets,
                            int32_t ignore_index = -100, float label_smoothing = 0.0f);
// Zeroes each element with probability p and scales the rest by 1/(1-p).
// The mask comes from the generator's counter stream (element i uses
// counter first+i), so it is the same for the same seed and position
// whatever the thread count; backward regenerates it instead of storing it.
// Identity when !training or p == 0.
Tensor dropout(const Tensor& x, float p, bool training, Generator& gen);
// Where mask != 0, `value`; elsewhere x. mask broadcasts to x's shape.
Tensor masked_fill(const Tensor& x, const Tensor& mask, float value);
// Where cond != 0, a; elsewhere b (all three broadcast).
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);

// ---- operators
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, float s) { return add(a, s); }
inline Tensor operator-(const Tensor& a, float s) { return sub(a, s); }
inline Tensor operator*(const Tensor& a, float s) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, float s) { return div(a, s); }
inline Tensor operator+(float s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(float s, const Tensor& a) { return rsub(s, a); }
inline Tensor operator*(float s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(float s, const Tensor& a) { return rdiv(s, a); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

}  // namespace tfm::core
