// Tensor: a cheap, shared handle to storage plus shape, strides and offset.
//
// Copying a Tensor copies the handle, not the data. Views (reshape of a
// contiguous tensor, permute, transpose, slice, expand) share the storage;
// contiguous() copies only when the layout requires it.
//
// Element types: f32 is the numeric type; i32 exists for indices (embedding
// lookups, class targets) and is accepted only where an op says so.
//
// Autograd state lives on the tensor: requires_grad, the node that produced
// it (grad_fn, null for leaves) and the accumulated gradient of a leaf.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

namespace tfm::core {

enum class DType : uint8_t { f32, i32 };
const char* dtype_name(DType t);
std::size_t dtype_size(DType t);

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t numel_of(const Shape& s);
Shape contiguous_strides(const Shape& s);

class Node;
class Generator;

// Owns one block from the caching allocator.
class Storage {
 public:
  explicit Storage(std::size_t bytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* data_;
  std::size_t bytes_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;  // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;  // producer node; null for leaves
  std::shared_ptr<TensorImpl> grad;  // accumulated gradient (leaves only)
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

  // ---- metadata
  const Shape& shape() const;
  const Shape& strides() const;
  int64_t dim() const { return static_cast<int64_t>(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t stride(int64_t d) const;
  int64_t offset() const { return impl_->offset; }
  int64_t numel() const;
  DType dtype() const { return impl_->dtype; }
  bool is_contiguous() const;
  // True when two tensors share one storage block.
  bool shares_storage(const Tensor& other) const;

  // Pointer to the first element (storage + offset). Throws on a dtype mismatch.
  template <class T> T* data() const;
  // The single value of a one-element tensor.
  float item() const;
  // Copies the elements in logical (row-major) order.
  std::vector<float> to_vector() const;
  std::vector<int32_t> to_int_vector() const;
  // Element at a multi-index (slow; for tests and printing).
  float at(const std::vector<int64_t>& index) const;

  // ---- autograd
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  // Marks a leaf as a parameter whose gradient is accumulated by backward().
  Tensor& set_requires_grad(bool on = true);
  bool is_leaf() const { return !impl_->grad_fn; }
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  // The accumulated gradient; undefined until a backward pass reaches this leaf.
  Tensor grad() const;
  void set_grad(const Tensor& g);
  // Drops the gradient (the next backward() starts from zero).
  void zero_grad();
  // Back-propagates from a one-element tensor (seed 1) or with an explicit
  // seed gradient of the same shape.
  void backward() const;
  void backward(const Tensor& seed) const;
  // A tensor sharing this storage with no autograd history.
  Tensor detach() const;

  // ---- views and copies (see ops.h for the full op set)
  Tensor reshape(const Shape& s) const;
  Tensor view(const Shape& s) const;  // reshape that never copies; throws if impossible
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor transpose(int64_t d0, int64_t d1) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor expand(const Shape& s) const;
  Tensor unsqueeze(int64_t d) const;
  Tensor squeeze(int64_t d) const;
  Tensor contiguous() const;
  Tensor clone() const;  // always copies; keeps autograd history

  // ---- in-place updates (optimizers, initialisation). Not recorded by
  // autograd: they throw when called with grad mode on for a tensor that
  // requires grad.
  Tensor& fill_(float v);
  Tensor& copy_(const Tensor& src);  // src broadcast to this shape
  Tensor& add_(const Tensor& other, float alpha = 1.0f);  // this += alpha * other
  Tensor& mul_(float s);

 private:
  std::shared_ptr<TensorImpl> impl_;
};

template <> float* Tensor::data<float>() const;
template <> int32_t* Tensor::data<int32_t>() const;

// ---- factories (all contiguous, requires_grad = false)
Tensor empty(const Shape& s, DType t = DType::f32);
Tensor zeros(const Shape& s, DType t = DType::f32);
Tensor ones(const Shape& s);
Tensor full(const Shape& s, float v);
Tensor arange(int64_t end);
Tensor arange(double start, double end, double step = 1.0);
Tensor from_vector(const std::vector<float>& v, const Shape& s);
Tensor from_vector(const std::vector<int32_t>& v, const Shape& s);
// Braced literals are floats: from_vector({1, 2, 3}, {3}).
Tensor from_vector(std::initializer_list<float> v, const Shape& s);
Tensor scalar_tensor(float v);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
// Standard normal (Box-Muller) and uniform [lo, hi) values from the
// generator's counter stream: element i depends only on (seed, offset + i),
// never on the thread count.
Tensor randn(const Shape& s, Generator& g, float mean = 0.0f, float stddev = 1.0f);
Tensor uniform(const Shape& s, Generator& g, float lo = 0.0f, float hi = 1.0f);

// NumPy-style printing, truncated to the first and last 3 entries per dim
// when a dimension has more than 6.
std::ostream& operator<<(std::ostream& os, const Tensor& t);
std::string to_string(const Tensor& t, bool full = false);

// Normalises a possibly negative dimension index; throws naming `op`.
int64_t wrap_dim(int64_t d, int64_t ndim, const char* op);

}  // namespace tfm::core
