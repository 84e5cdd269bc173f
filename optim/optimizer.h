// Optimizers: SGD (momentum, Nesterov), Adam, AdamW, with parameter groups.
//
// Updates follow PyTorch's definitions exactly (torch.optim.SGD / Adam /
// AdamW), so a run can be compared step by step with a PyTorch run:
//   SGD:   g += wd·p; buf = μ·buf + (1−dampening)·g (buf = g on the first
//          step); g = g + μ·buf (Nesterov) or buf; p −= lr·g
//   Adam:  g += wd·p (L2); m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
//          p −= lr · (m / (1−β1ᵗ)) / (sqrt(v / (1−β2ᵗ)) + ε)
//   AdamW: as Adam without the L2 term, after p *= (1 − lr·wd) (decoupled)
// Weight decay is per group, so biases, norms and embeddings can be excluded.
//
// Multi-tensor updates: step() cuts every parameter into pieces of at most
// kUpdateChunk elements and updates all pieces of all parameters in one
// OpenMP region (one fork/join per step instead of one per parameter);
// each element's arithmetic is the same as a per-parameter loop, so results
// do not depend on the chunking or the thread count. grad_norm and
// clip_grad_norm work the same way (per-piece partial sums in double, added
// in a fixed order).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace tfm::optim {

using core::Tensor;

struct ParamGroup {
  std::vector<std::string> names;
  std::vector<Tensor> params;
  float weight_decay = 0.0f;
};

// Splits named parameters into a decayed and a non-decayed group. Matrices
// (rank >= 2) decay; biases and norm weights (rank < 2) do unless
// `exclude_vectors`; embedding tables (names ending "_emb.weight" or
// "_pos.weight") do unless `exclude_embeddings`.
std::vector<ParamGroup> decay_groups(const std::vector<std::pair<std::string, Tensor>>& named, float weight_decay,
                                     bool exclude_vectors = true, bool exclude_embeddings = false);

// Elements per piece of a multi-tensor update.
inline constexpr int64_t kUpdateChunk = 1 << 14;

class Optimizer {
 public:
  Optimizer(std::vector<ParamGroup> groups, float lr);
  virtual ~Optimizer() = default;
  virtual const char* name() const = 0;

  // Applies one update from the parameters' .grad (parameters without a
  // gradient are skipped). Runs with grad mode off.
  void step();
  void zero_grad();
  // Creates the state tensors (zeros; shapes follow the parameters) if they
  // do not exist yet. step() does it the first time; the trainer's memory
  // check does it earlier, so the first steps already hold all the memory.
  void allocate_state();

  float lr() const { return lr_; }
  void set_lr(float lr) { lr_ = lr; }
  int64_t steps() const { return steps_; }
  const std::vector<ParamGroup>& groups() const { return groups_; }

  // Per-parameter state tensors ("exp_avg/<param name>", ...) for
  // checkpoints; load_state() copies values back (shapes must match).
  std::vector<std::pair<std::string, Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps);

 protected:
  // Updates n consecutive elements of one parameter: p and g point at them,
  // slots[k] at the same elements of state tensor k (see slot_names()).
  // Called concurrently for disjoint pieces; steps_ is already advanced.
  virtual void update(float* p, const float* g, float* const* slots, int64_t n, float weight_decay) const = 0;
  virtual std::vector<std::string> slot_names() const = 0;

  std::vector<ParamGroup> groups_;
  float lr_;
  int64_t steps_ = 0;

 private:
  std::vector<std::vector<std::vector<Tensor>>> slots_;  // [group][param][slot]
};

class SGD final : public Optimizer {
 public:
  SGD(std::vector<ParamGroup> groups, float lr, float momentum = 0.0f, bool nesterov = false, float dampening = 0.0f);
  const char* name() const override { return "sgd"; }

 protected:
  void update(float* p, const float* g, float* const* slots, int64_t n, float wd) const override;
  std::vector<std::string> slot_names() const override { return {"momentum_buffer"}; }

 private:
  float momentum_, dampening_;
  bool nesterov_;
};

class Adam final : public Optimizer {
 public:
  // decoupled = true is AdamW.
  Adam(std::vector<ParamGroup> groups, float lr, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f,
       bool decoupled = false);
  const char* name() const override { return decoupled_ ? "adamw" : "adam"; }

 protected:
  void update(float* p, const float* g, float* const* slots, int64_t n, float wd) const override;
  std::vector<std::string> slot_names() const override { return {"exp_avg", "exp_avg_sq"}; }

 private:
  float beta1_, beta2_, eps_;
  bool decoupled_;
};

// Scales all gradients so their global L2 norm is at most max_norm (if it
// exceeds it) and returns the norm before clipping. Non-finite norms are
// returned unchanged and nothing is scaled.
float clip_grad_norm(const std::vector<Tensor>& params, float max_norm);
// Global L2 norm of the gradients (parameters without .grad count as zero).
float grad_norm(const std::vector<Tensor>& params);

}  // namespace tfm::optim
