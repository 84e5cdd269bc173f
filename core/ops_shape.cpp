// Shape ops. reshape/view, permute/transpose, slice, expand, (un)squeeze
// return views sharing storage; contiguous/clone/concat/stack copy. Each
// records a node whose backward maps the gradient back to the input layout.
#include <numeric>
#include <optional>

#include "autograd.h"
#include "error.h"
#include "kernels.h"
#include "ops.h"
#include "profile.h"

namespace tfm::core {

namespace {

Tensor make_view(const Tensor& x, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = x.impl()->storage;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = x.dtype();
  return Tensor(std::move(impl));
}

// Strides that view (old shape, old strides) as `shape` without copying, if
// any exist (the same rule as PyTorch's computeStride).
std::optional<Shape> view_strides(const Shape& os, const Shape& ost, const Shape& ns) {
  if (os.empty() || numel_of(os) == 0) return contiguous_strides(ns);
  Shape st(ns.size(), 0);
  int64_t view_d = static_cast<int64_t>(ns.size()) - 1;
  int64_t chunk_base = ost.back(), tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(os.size()) - 1; d >= 0; --d) {
    tensor_numel *= os[d];
    if (d == 0 || (os[d - 1] != 1 && ost[d - 1] != tensor_numel * chunk_base)) {
      while (view_d >= 0 && (view_numel < tensor_numel || ns[view_d] == 1)) {
        st[view_d] = view_numel * chunk_base;
        view_numel *= ns[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_base = ost[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return st;
}

// Resolves one -1 entry and checks the element count.
Shape infer_shape(const Tensor& x, const Shape& s, const char* op) {
  Shape out = s;
  int64_t known = 1, infer = -1;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      TFM_CHECK(infer < 0, op, ": more than one -1 in target shape ", shape_str(s));
      infer = static_cast<int64_t>(i);
    } else {
      TFM_CHECK(s[i] >= 0, op, ": negative size in target shape ", shape_str(s));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    TFM_CHECK(known > 0 && x.numel() % known == 0, op, ": cannot reshape ", shape_str(x.shape()), " (",
              x.numel(), " elements) to ", shape_str(s));
    out[infer] = x.numel() / known;
  }
  TFM_CHECK(numel_of(out) == x.numel(), op, ": cannot reshape ", shape_str(x.shape()), " (", x.numel(),
            " elements) to ", shape_str(s));
  return out;
}

// wrap_dim for ops that index x.shape()[d]: a 0-d tensor has no dim to use
// (wrap_dim itself accepts dim 0 for rank 0).
int64_t existing_dim(const Tensor& x, int64_t d, const char* op) {
  TFM_CHECK(x.dim() > 0, op, ": dim ", d, " does not exist in a 0-d tensor (shape [])");
  return wrap_dim(d, x.dim(), op);
}

void record_reshape(Tensor& out, const Tensor& x) {
  if (needs_grad({&x}))
    record(out, "reshape", {x}, [xs = x.shape()](const Tensor& g) { return std::vector<Tensor>{g.reshape(xs)}; });
}

}  // namespace

Tensor Tensor::view(const Shape& s) const {
  const Shape shape = infer_shape(*this, s, "view");
  auto st = view_strides(this->shape(), strides(), shape);
  TFM_CHECK(st.has_value(), "view: a tensor of shape ", shape_str(this->shape()), " and strides ",
            shape_str(strides()), " cannot be viewed as ", shape_str(shape), " without a copy (use reshape)");
  Tensor out = make_view(*this, shape, *st, offset());
  record_reshape(out, *this);
  return out;
}

Tensor reshape(const Tensor& x, const Shape& s) {
  profile::OpScope prof(profile::Kind::shape);
  const Shape shape = infer_shape(x, s, "reshape");
  if (auto st = view_strides(x.shape(), x.strides(), shape)) {
    Tensor out = make_view(x, shape, *st, x.offset());
    record_reshape(out, x);
    return out;
  }
  return contiguous(x).view(shape);
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  profile::OpScope prof(profile::Kind::shape);
  TFM_CHECK(static_cast<int64_t>(dims.size()) == x.dim(), "permute: ", dims.size(),
            " dims given for a tensor of shape ", shape_str(x.shape()));
  Shape shape(dims.size()), strides(dims.size());
  std::vector<int64_t> inverse(dims.size(), -1);
  for (std::size_t i = 0; i < dims.size(); ++i) {
    const int64_t d = wrap_dim(dims[i], x.dim(), "permute");
    TFM_CHECK(inverse[d] < 0, "permute: dim ", dims[i], " repeated for a tensor of shape ", shape_str(x.shape()));
    inverse[d] = static_cast<int64_t>(i);
    shape[i] = x.shape()[d];
    strides[i] = x.strides()[d];
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  if (needs_grad({&x}))
    record(out, "permute", {x}, [inverse](const Tensor& g) { return std::vector<Tensor>{g.permute(inverse)}; });
  return out;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  profile::OpScope prof(profile::Kind::shape);
  std::vector<int64_t> dims(x.dim());
  std::iota(dims.begin(), dims.end(), 0);
  const int64_t a = wrap_dim(d0, x.dim(), "transpose"), b = wrap_dim(d1, x.dim(), "transpose");
  if (x.dim() > 0) std::swap(dims[a], dims[b]);  // a 0-d tensor transposes to itself
  return permute(x, dims);
}

namespace {

// The gradient of a slice is the incoming gradient placed in its region of
// a zero tensor; when the input already has a gradient (another slice of
// the same tensor ran first), it is added into that region in place.
class SliceNode final : public Node {
 public:
  SliceNode(Shape input_shape, int64_t dim, int64_t start, int64_t end, int64_t step)
      : input_shape_(std::move(input_shape)), dim_(dim), start_(start), end_(end), step_(step) {}
  const char* name() const override { return "slice"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor gx = zeros(input_shape_);
    kernels::copy_into(g, region(gx));
    return {gx};
  }
  bool backward_into(const Tensor& g, Tensor& acc) override {
    region(acc).add_(g);
    return true;
  }
  void release() override {}

 private:
  Tensor region(const Tensor& t) const { return t.detach().slice(dim_, start_, end_, step_); }
  Shape input_shape_;
  int64_t dim_, start_, end_, step_;
};

}  // namespace

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
  profile::OpScope prof(profile::Kind::shape);
  const int64_t d = existing_dim(x, dim, "slice");
  const int64_t n = x.shape()[d];
  TFM_CHECK(step > 0, "slice: step must be positive, got ", step);
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Shape shape = x.shape(), strides = x.strides();
  shape[d] = (end - start + step - 1) / step;
  strides[d] *= step;
  Tensor out = make_view(x, shape, strides, x.offset() + start * x.strides()[d]);
  if (needs_grad({&x})) record(out, std::make_shared<SliceNode>(x.shape(), d, start, end, step), {x});
  return out;
}

Tensor expand(const Tensor& x, const Shape& s) {
  profile::OpScope prof(profile::Kind::shape);
  TFM_CHECK(static_cast<int64_t>(s.size()) >= x.dim(), "expand: target ", shape_str(s), " has fewer dims than ",
            shape_str(x.shape()));
  const int64_t lead = static_cast<int64_t>(s.size()) - x.dim();
  Shape shape(s.size()), strides(s.size(), 0);
  for (int64_t i = 0; i < static_cast<int64_t>(s.size()); ++i) {
    if (i < lead) {
      TFM_CHECK(s[i] >= 0, "expand: -1 is not allowed for a new leading dim in ", shape_str(s));
      shape[i] = s[i];
      continue;
    }
    const int64_t have = x.shape()[i - lead];
    const int64_t want = s[i] == -1 ? have : s[i];
    TFM_CHECK(have == want || have == 1, "expand: cannot expand ", shape_str(x.shape()), " to ", shape_str(s));
    shape[i] = want;
    strides[i] = have == want ? x.strides()[i - lead] : 0;
  }
  Tensor out = make_view(x, shape, strides, x.offset());
  if (needs_grad({&x}))
    record(out, "expand", {x}, [xs = x.shape()](const Tensor& g) { return std::vector<Tensor>{sum_to(g, xs)}; });
  return out;
}

Tensor unsqueeze(const Tensor& x, int64_t d) {
  const int64_t w = wrap_dim(d, x.dim() + 1, "unsqueeze");
  Shape s = x.shape();
  s.insert(s.begin() + w, 1);
  return reshape(x, s);
}

Tensor squeeze(const Tensor& x, int64_t d) {
  const int64_t w = existing_dim(x, d, "squeeze");
  TFM_CHECK(x.shape()[w] == 1, "squeeze: dim ", d, " has size ", x.shape()[w], " in shape ", shape_str(x.shape()));
  Shape s = x.shape();
  s.erase(s.begin() + w);
  return reshape(x, s);
}

Tensor clone(const Tensor& x) {
  profile::OpScope prof(profile::Kind::shape);
  TFM_CHECK(x.defined(), "clone: undefined tensor");
  Tensor out = empty(x.shape(), x.dtype());
  kernels::copy_into(x, out);
  if (needs_grad({&x})) record(out, "clone", {x}, [](const Tensor& g) { return std::vector<Tensor>{g}; });
  return out;
}

Tensor contiguous(const Tensor& x) {
  profile::OpScope prof(profile::Kind::shape);
  TFM_CHECK(x.defined(), "contiguous: undefined tensor");
  return x.is_contiguous() ? x : clone(x);
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  profile::OpScope prof(profile::Kind::shape);
  TFM_CHECK(!xs.empty(), "concat: no tensors given");
  const Tensor& first = xs[0];
  const int64_t d = existing_dim(first, dim, "concat");
  Shape shape = first.shape();
  shape[d] = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    TFM_CHECK(t.defined() && t.dim() == first.dim() && t.dtype() == first.dtype(), "concat: tensor ", i,
              " (shape ", t.defined() ? shape_str(t.shape()) : "undefined", ") does not match tensor 0 (shape ",
              shape_str(first.shape()), ")");
    for (int64_t k = 0; k < t.dim(); ++k)
      TFM_CHECK(k == d || t.shape()[k] == first.shape()[k], "concat: tensor ", i, " has shape ",
                shape_str(t.shape()), ", tensor 0 has ", shape_str(first.shape()), "; only dim ", d, " may differ");
    shape[d] += t.shape()[d];
  }
  Tensor out = empty(shape, first.dtype());
  std::vector<int64_t> sizes;
  int64_t at = 0;
  for (const Tensor& t : xs) {
    kernels::copy_into(t, out.slice(d, at, at + t.shape()[d]));
    at += t.shape()[d];
    sizes.push_back(t.shape()[d]);
  }
  if (needs_grad(xs)) {
    record(out, "concat", xs, [sizes, d](const Tensor& g) {
      std::vector<Tensor> grads;
      int64_t pos = 0;
      for (int64_t s : sizes) {
        grads.push_back(g.slice(d, pos, pos + s));
        pos += s;
      }
      return grads;
    });
  }
  return out;
}

Tensor stack(const std::vector<Tensor>& xs, int64_t dim) {
  profile::OpScope prof(profile::Kind::shape);
  TFM_CHECK(!xs.empty(), "stack: no tensors given");
  const int64_t d = wrap_dim(dim, xs[0].dim() + 1, "stack");
  std::vector<Tensor> parts;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    TFM_CHECK(xs[i].defined() && xs[i].shape() == xs[0].shape(), "stack: tensor ", i, " has shape ",
              xs[i].defined() ? shape_str(xs[i].shape()) : "undefined", ", tensor 0 has ",
              shape_str(xs[0].shape()));
    parts.push_back(unsqueeze(xs[i], d));
  }
  return concat(parts, d);
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  profile::OpScope prof(profile::Kind::shape);
  const int64_t d = existing_dim(x, dim, "split");
  int64_t total = 0;
  for (int64_t s : sizes) {
    TFM_CHECK(s >= 0, "split: negative size in the list");
    total += s;
  }
  TFM_CHECK(total == x.shape()[d], "split: sizes add up to ", total, " but dim ", d, " of shape ",
            shape_str(x.shape()), " has ", x.shape()[d]);
  std::vector<Tensor> out;
  int64_t at = 0;
  for (int64_t s : sizes) {
    out.push_back(slice(x, d, at, at + s));
    at += s;
  }
  return out;
}

std::vector<Tensor> split(const Tensor& x, int64_t size, int64_t dim) {
  const int64_t d = existing_dim(x, dim, "split");
  TFM_CHECK(size > 0, "split: piece size must be positive, got ", size);
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < x.shape()[d]; at += size) sizes.push_back(std::min(size, x.shape()[d] - at));
  return split(x, sizes, d);
}

}  // namespace tfm::core
