#include "tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "allocator.h"
#include "autograd.h"
#include "error.h"
#include "kernels.h"
#include "ops.h"

namespace tfm::core {

const char* dtype_name(DType t) { return t == DType::f32 ? "f32" : "i32"; }
std::size_t dtype_size(DType) { return 4; }

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << '[';
  for (std::size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

int64_t numel_of(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= std::max<int64_t>(s[i], 1);
  }
  return st;
}

int64_t wrap_dim(int64_t d, int64_t ndim, const char* op) {
  // As in PyTorch, a 0-d tensor accepts dims -1 and 0 (both mean "the" dim).
  const int64_t n = std::max<int64_t>(ndim, 1);
  const int64_t w = d < 0 ? d + n : d;
  TFM_CHECK(w >= 0 && w < n, op, ": dim ", d, " is out of range for a tensor of rank ", ndim);
  return w;
}

Storage::Storage(std::size_t bytes) : data_(allocate(bytes)), bytes_(bytes) {}
Storage::~Storage() { release(data_, bytes_); }

// ---------------------------------------------------------------- metadata

const Shape& Tensor::shape() const {
  TFM_CHECK(impl_, "use of an undefined tensor");
  return impl_->shape;
}
const Shape& Tensor::strides() const {
  TFM_CHECK(impl_, "use of an undefined tensor");
  return impl_->strides;
}
int64_t Tensor::size(int64_t d) const { return shape()[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int64_t d) const { return strides()[wrap_dim(d, dim(), "stride")]; }
int64_t Tensor::numel() const { return numel_of(shape()); }

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (impl_->shape[i] != 1 && impl_->strides[i] != expected) return false;
    expected *= impl_->shape[i];
  }
  return true;
}

bool Tensor::shares_storage(const Tensor& other) const {
  return impl_ && other.impl_ && impl_->storage == other.impl_->storage;
}

template <>
float* Tensor::data<float>() const {
  TFM_CHECK(impl_, "use of an undefined tensor");
  TFM_CHECK(impl_->dtype == DType::f32, "expected an f32 tensor, got ", dtype_name(impl_->dtype), " of shape ",
            shape_str(impl_->shape));
  return static_cast<float*>(impl_->storage->data()) + impl_->offset;
}
template <>
int32_t* Tensor::data<int32_t>() const {
  TFM_CHECK(impl_, "use of an undefined tensor");
  TFM_CHECK(impl_->dtype == DType::i32, "expected an i32 tensor, got ", dtype_name(impl_->dtype), " of shape ",
            shape_str(impl_->shape));
  return static_cast<int32_t*>(impl_->storage->data()) + impl_->offset;
}

float Tensor::item() const {
  TFM_CHECK(numel() == 1, "item: expected a one-element tensor, got shape ", shape_str(shape()));
  return dtype() == DType::f32 ? *data<float>() : static_cast<float>(*data<int32_t>());
}

namespace {
// Offset (in elements) of each element in logical order.
template <class Fn>
void for_each_offset(const Tensor& t, Fn fn) {
  const Shape& shape = t.shape();
  const Shape& st = t.strides();
  const int64_t n = t.numel();
  std::vector<int64_t> idx(shape.size(), 0);
  int64_t off = 0;
  for (int64_t k = 0; k < n; ++k) {
    fn(off);
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
      if (++idx[d] < shape[d]) {
        off += st[d];
        break;
      }
      off -= st[d] * (shape[d] - 1);
      idx[d] = 0;
    }
  }
}
}  // namespace

std::vector<float> Tensor::to_vector() const {
  std::vector<float> out;
  out.reserve(numel());
  if (dtype() == DType::f32) {
    const float* p = data<float>();
    for_each_offset(*this, [&](int64_t o) { out.push_back(p[o]); });
  } else {
    const int32_t* p = data<int32_t>();
    for_each_offset(*this, [&](int64_t o) { out.push_back(static_cast<float>(p[o])); });
  }
  return out;
}

std::vector<int32_t> Tensor::to_int_vector() const {
  std::vector<int32_t> out;
  out.reserve(numel());
  const int32_t* p = data<int32_t>();
  for_each_offset(*this, [&](int64_t o) { out.push_back(p[o]); });
  return out;
}

float Tensor::at(const std::vector<int64_t>& index) const {
  TFM_CHECK(static_cast<int64_t>(index.size()) == dim(), "at: index of rank ", index.size(),
            " for a tensor of shape ", shape_str(shape()));
  int64_t off = 0;
  for (int64_t d = 0; d < dim(); ++d) {
    TFM_CHECK(index[d] >= 0 && index[d] < shape()[d], "at: index ", index[d], " out of range for dim ", d,
              " of shape ", shape_str(shape()));
    off += index[d] * strides()[d];
  }
  return dtype() == DType::f32 ? data<float>()[off] : static_cast<float>(data<int32_t>()[off]);
}

// ---------------------------------------------------------------- autograd

Tensor& Tensor::set_requires_grad(bool on) {
  TFM_CHECK(impl_, "set_requires_grad on an undefined tensor");
  TFM_CHECK(!on || impl_->dtype == DType::f32, "set_requires_grad: only f32 tensors can require grad");
  TFM_CHECK(is_leaf(), "set_requires_grad: only leaf tensors can be marked (this one has a grad_fn)");
  impl_->requires_grad = on;
  return *this;
}

Tensor Tensor::grad() const { return impl_ && impl_->grad ? Tensor(impl_->grad) : Tensor(); }

void Tensor::set_grad(const Tensor& g) {
  TFM_CHECK(!g.defined() || g.shape() == shape(), "set_grad: gradient shape ", shape_str(g.shape()),
            " differs from tensor shape ", shape_str(shape()));
  impl_->grad = g.impl_ptr();
}

void Tensor::zero_grad() { impl_->grad.reset(); }

void Tensor::backward() const {
  TFM_CHECK(numel() == 1, "backward: an implicit seed needs a one-element tensor, got shape ", shape_str(shape()),
            "; pass a seed gradient");
  run_backward(*this, ones(shape()));
}

void Tensor::backward(const Tensor& seed) const { run_backward(*this, seed); }

Tensor Tensor::detach() const {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = impl_->storage;
  impl->shape = impl_->shape;
  impl->strides = impl_->strides;
  impl->offset = impl_->offset;
  impl->dtype = impl_->dtype;
  return Tensor(std::move(impl));
}

// ---------------------------------------------------------------- views (ops_shape.cpp)

Tensor Tensor::reshape(const Shape& s) const { return core::reshape(*this, s); }
Tensor Tensor::permute(const std::vector<int64_t>& dims) const { return core::permute(*this, dims); }
Tensor Tensor::transpose(int64_t d0, int64_t d1) const { return core::transpose(*this, d0, d1); }
Tensor Tensor::slice(int64_t dim, int64_t start, int64_t end, int64_t step) const {
  return core::slice(*this, dim, start, end, step);
}
Tensor Tensor::expand(const Shape& s) const { return core::expand(*this, s); }
Tensor Tensor::unsqueeze(int64_t d) const { return core::unsqueeze(*this, d); }
Tensor Tensor::squeeze(int64_t d) const { return core::squeeze(*this, d); }
Tensor Tensor::contiguous() const { return core::contiguous(*this); }
Tensor Tensor::clone() const { return core::clone(*this); }

// ---------------------------------------------------------------- in-place updates

namespace {
// True when two logical elements of t may share one memory location: a
// dim of size > 1 with stride 0 (expand, broadcast) or strides that
// interleave. Sorted by stride, each dim must step past everything the
// smaller dims span; layouts failing that are treated as overlapping (views
// made by this library never are, unless they do overlap).
bool may_overlap(const Tensor& t) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (|stride|, size) of dims with size > 1
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.shape()[d] > 1) dims.emplace_back(std::abs(t.strides()[d]), t.shape()[d]);
  std::sort(dims.begin(), dims.end());
  int64_t span = 0;  // highest offset reachable with the dims so far (from 0)
  for (const auto& [stride, size] : dims) {
    if (stride <= span) return true;
    span += stride * (size - 1);
  }
  return false;
}

void check_inplace(const Tensor& t, const char* op) {
  TFM_CHECK(t.defined(), op, ": undefined tensor");
  TFM_CHECK(!(grad_enabled() && t.requires_grad()), op,
            ": in-place update of a tensor that requires grad while grad mode is on (use NoGradGuard)");
  TFM_CHECK(!may_overlap(t), op, ": the destination of shape ", shape_str(t.shape()), " and strides ",
            shape_str(t.strides()),
            " has elements that share memory (an expanded or broadcast view); write into a contiguous tensor");
}
}  // namespace

Tensor& Tensor::fill_(float v) {
  check_inplace(*this, "fill_");
  if (dtype() == DType::i32) {
    int32_t* p = data<int32_t>();
    for_each_offset(*this, [&](int64_t o) { p[o] = static_cast<int32_t>(v); });
    return *this;
  }
  float* p = data<float>();
  const Shape& st = strides();
  kernels::for_each_segment<1>(shape(), {&st}, [&](const kernels::Segment<1>& s) {
    for (int64_t i = 0; i < s.len; ++i) p[s.offset[0] + i * s.stride[0]] = v;
  });
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  check_inplace(*this, "copy_");
  kernels::copy_into(src, *this);
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, float alpha) {
  check_inplace(*this, "add_");
  broadcast_shapes(shape(), other.shape(), "add_");
  TFM_CHECK(broadcast_shapes(shape(), other.shape(), "add_") == shape(), "add_: cannot broadcast ",
            shape_str(other.shape()), " into ", shape_str(shape()));
  float* p = data<float>();
  const float* q = other.data<float>();
  const Shape so = kernels::broadcast_strides(other, shape());
  kernels::for_each_segment<2>(shape(), {&strides(), &so}, [&](const kernels::Segment<2>& s) {
    float* a = p + s.offset[0];
    const float* b = q + s.offset[1];
    if (s.stride[0] == 1 && s.stride[1] == 1) {
      for (int64_t i = 0; i < s.len; ++i) a[i] += alpha * b[i];
    } else {
      for (int64_t i = 0; i < s.len; ++i) a[i * s.stride[0]] += alpha * b[i * s.stride[1]];
    }
  });
  return *this;
}

Tensor& Tensor::mul_(float v) {
  check_inplace(*this, "mul_");
  float* p = data<float>();
  kernels::for_each_segment<1>(shape(), {&strides()}, [&](const kernels::Segment<1>& s) {
    for (int64_t i = 0; i < s.len; ++i) p[s.offset[0] + i * s.stride[0]] *= v;
  });
  return *this;
}

// ---------------------------------------------------------------- factories

Tensor empty(const Shape& s, DType t) {
  for (int64_t d : s) TFM_CHECK(d >= 0, "empty: negative dimension in shape ", shape_str(s));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<std::size_t>(numel_of(s)) * dtype_size(t));
  impl->shape = s;
  impl->strides = contiguous_strides(s);
  impl->dtype = t;
  return Tensor(std::move(impl));
}

Tensor zeros(const Shape& s, DType t) {
  Tensor out = empty(s, t);
  std::memset(out.impl()->storage->data(), 0, out.impl()->storage->bytes());
  return out;
}

Tensor full(const Shape& s, float v) {
  Tensor out = empty(s);
  float* p = out.data<float>();
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) p[i] = v;
  return out;
}
Tensor ones(const Shape& s) { return full(s, 1.0f); }
Tensor scalar_tensor(float v) { return full({}, v); }
Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype()); }
Tensor ones_like(const Tensor& t) { return ones(t.shape()); }

Tensor arange(int64_t end) { return arange(0.0, static_cast<double>(end), 1.0); }

Tensor arange(double start, double end, double step) {
  TFM_CHECK(step != 0.0, "arange: step must be non-zero");
  const int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((end - start) / step)));
  Tensor out = empty({n});
  float* p = out.data<float>();
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(start + step * static_cast<double>(i));
  return out;
}

Tensor from_vector(const std::vector<float>& v, const Shape& s) {
  TFM_CHECK(static_cast<int64_t>(v.size()) == numel_of(s), "from_vector: ", v.size(),
            " values do not fill shape ", shape_str(s));
  Tensor out = empty(s);
  if (!v.empty()) std::memcpy(out.data<float>(), v.data(), v.size() * sizeof(float));
  return out;
}

Tensor from_vector(const std::vector<int32_t>& v, const Shape& s) {
  TFM_CHECK(static_cast<int64_t>(v.size()) == numel_of(s), "from_vector: ", v.size(),
            " values do not fill shape ", shape_str(s));
  Tensor out = empty(s, DType::i32);
  if (!v.empty()) std::memcpy(out.data<int32_t>(), v.data(), v.size() * sizeof(int32_t));
  return out;
}

Tensor from_vector(std::initializer_list<float> v, const Shape& s) {
  return from_vector(std::vector<float>(v), s);
}

Tensor uniform(const Shape& s, Generator& g, float lo, float hi) {
  Tensor out = empty(s);
  float* p = out.data<float>();
  const int64_t n = out.numel();
  const uint64_t first = g.reserve(static_cast<uint64_t>((n + 3) / 4));
  const uint64_t seed = g.seed();
  const float scale = hi - lo;
  parallel_for((n + 3) / 4, should_parallelize(n), [&](int64_t b) {
    const auto r = philox4x32(seed, first + static_cast<uint64_t>(b));
    for (int64_t k = 0; k < 4 && b * 4 + k < n; ++k) p[b * 4 + k] = lo + scale * bits_to_unit_float(r[k]);
  });
  return out;
}

Tensor randn(const Shape& s, Generator& g, float mean, float stddev) {
  Tensor out = empty(s);
  float* p = out.data<float>();
  const int64_t n = out.numel();
  const uint64_t first = g.reserve(static_cast<uint64_t>((n + 3) / 4));
  const uint64_t seed = g.seed();
  parallel_for((n + 3) / 4, should_parallelize(n), [&](int64_t b) {
    const auto r = philox4x32(seed, first + static_cast<uint64_t>(b));
    for (int pair = 0; pair < 2; ++pair) {
      // Box-Muller; u1 in (0, 1] so the log is finite.
      const double u1 = (static_cast<double>(r[2 * pair] >> 8) + 1.0) / 16777216.0;
      const double u2 = static_cast<double>(r[2 * pair + 1] >> 8) / 16777216.0;
      const double radius = std::sqrt(-2.0 * std::log(u1));
      const double z0 = radius * std::cos(2.0 * M_PI * u2), z1 = radius * std::sin(2.0 * M_PI * u2);
      const int64_t i = b * 4 + 2 * pair;
      if (i < n) p[i] = mean + stddev * static_cast<float>(z0);
      if (i + 1 < n) p[i + 1] = mean + stddev * static_cast<float>(z1);
    }
  });
  return out;
}

// ---------------------------------------------------------------- printing

namespace {
void print_rec(std::ostream& os, const Tensor& t, std::vector<int64_t>& idx, int64_t d, bool full, int indent) {
  const int64_t n = t.shape()[d];
  const bool cut = !full && n > 6;
  os << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (cut && i == 3) {
      os << (d + 1 == t.dim() ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      i = n - 3;
    }
    idx[d] = i;
    if (d + 1 == t.dim()) {
      os << std::setw(10) << t.at(idx);
    } else {
      print_rec(os, t, idx, d + 1, full, indent + 1);
    }
    if (i + 1 < n) os << (d + 1 == t.dim() ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << ']';
}
}  // namespace

std::string to_string(const Tensor& t, bool full) {
  if (!t.defined()) return "tensor(undefined)";
  std::ostringstream os;
  os << std::setprecision(4);
  os << "tensor(";
  if (t.dim() == 0) {
    os << t.item();
  } else if (t.numel() == 0) {
    os << "[]";
  } else {
    std::vector<int64_t> idx(t.dim(), 0);
    print_rec(os, t, idx, 0, full, 7);
  }
  os << ", shape=" << shape_str(t.shape()) << ", dtype=" << dtype_name(t.dtype());
  if (t.requires_grad()) os << ", requires_grad";
  os << ')';
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << to_string(t); }

// ---------------------------------------------------------------- shared kernels

namespace kernels {

Shape broadcast_strides(const Tensor& t, const Shape& target) {
  const int64_t nd = static_cast<int64_t>(target.size()), td = t.dim();
  Shape st(nd, 0);
  for (int64_t i = 0; i < td; ++i) {
    const int64_t j = nd - td + i;
    st[j] = t.shape()[i] == 1 ? 0 : t.strides()[i];
  }
  return st;
}

void copy_into(const Tensor& src, const Tensor& dst) {
  TFM_CHECK(src.dtype() == dst.dtype(), "copy: dtype ", dtype_name(src.dtype()), " into ",
            dtype_name(dst.dtype()));
  TFM_CHECK(broadcast_shapes(dst.shape(), src.shape(), "copy") == dst.shape(), "copy: cannot broadcast ",
            shape_str(src.shape()), " into ", shape_str(dst.shape()));
  const Shape ss = broadcast_strides(src, dst.shape());
  // Both dtypes are 4 bytes wide: copy the bits.
  const uint32_t* sp = static_cast<const uint32_t*>(src.impl()->storage->data()) + src.offset();
  uint32_t* dp = static_cast<uint32_t*>(dst.impl()->storage->data()) + dst.offset();
  for_each_segment<2>(dst.shape(), {&dst.strides(), &ss}, [&](const Segment<2>& s) {
    uint32_t* d = dp + s.offset[0];
    const uint32_t* a = sp + s.offset[1];
    if (s.stride[0] == 1 && s.stride[1] == 1) {
      std::memcpy(d, a, static_cast<std::size_t>(s.len) * 4);
    } else {
      for (int64_t i = 0; i < s.len; ++i) d[i * s.stride[0]] = a[i * s.stride[1]];
    }
  });
}

}  // namespace kernels
}  // namespace tfm::core
