#include "optimizer.h"

#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/parallel.h"

namespace tfm::optim {

std::vector<ParamGroup> decay_groups(const std::vector<std::pair<std::string, Tensor>>& named, float weight_decay,
                                     bool exclude_vectors, bool exclude_embeddings) {
  ParamGroup decay, no_decay;
  decay.weight_decay = weight_decay;
  for (const auto& [name, p] : named) {
    const bool embedding = name.ends_with("_emb.weight") || name.ends_with("_pos.weight");
    const bool skip = (exclude_vectors && p.dim() < 2) || (exclude_embeddings && embedding);
    ParamGroup& g = skip ? no_decay : decay;
    g.names.push_back(name);
    g.params.push_back(p);
  }
  std::vector<ParamGroup> out;
  if (!decay.params.empty()) out.push_back(std::move(decay));
  if (!no_decay.params.empty()) out.push_back(std::move(no_decay));
  return out;
}

Optimizer::Optimizer(std::vector<ParamGroup> groups, float lr) : groups_(std::move(groups)), lr_(lr) {
  TFM_CHECK(lr >= 0.0f && std::isfinite(lr), "optimizer: learning rate must be >= 0, got ", lr);
  for (const ParamGroup& g : groups_) {
    TFM_CHECK(g.names.size() == g.params.size(), "optimizer: a group has ", g.names.size(), " names for ",
              g.params.size(), " parameters");
    TFM_CHECK(g.weight_decay >= 0.0f, "optimizer: weight decay must be >= 0, got ", g.weight_decay);
    for (std::size_t i = 0; i < g.params.size(); ++i)
      TFM_CHECK(g.params[i].requires_grad() && g.params[i].is_contiguous(), "optimizer: parameter '", g.names[i],
                "' must be a contiguous tensor that requires grad");
  }
}

void Optimizer::zero_grad() {
  for (ParamGroup& g : groups_)
    for (Tensor& p : g.params) p.zero_grad();
}

void Optimizer::allocate_state() {
  if (!slots_.empty()) return;
  core::NoGradGuard no_grad;
  const std::size_t n_slots = slot_names().size();
  for (const ParamGroup& g : groups_) {
    slots_.emplace_back();
    for (const Tensor& p : g.params) {
      std::vector<Tensor> s;
      for (std::size_t k = 0; k < n_slots; ++k) s.push_back(core::zeros(p.shape()));
      slots_.back().push_back(std::move(s));
    }
  }
}

void Optimizer::step() {
  core::NoGradGuard no_grad;
  allocate_state();
  ++steps_;
  // One piece per kUpdateChunk elements of every parameter with a gradient.
  struct Piece {
    float* p;
    const float* g;
    float* slots[2];
    int64_t n;
    float wd;
  };
  const std::size_t n_slots = slot_names().size();
  TFM_CHECK(n_slots <= 2, "optimizer: at most 2 state tensors per parameter, got ", n_slots);
  std::vector<Piece> pieces;
  std::vector<Tensor> grads;  // keeps contiguous copies alive
  int64_t total = 0;
  for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& g = groups_[gi];
    for (std::size_t pi = 0; pi < g.params.size(); ++pi) {
      Tensor& p = g.params[pi];
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      grads.push_back(grad.contiguous());
      float* pp = p.data<float>();
      const float* gp = grads.back().data<float>();
      const int64_t n = p.numel();
      for (int64_t off = 0; off < n; off += kUpdateChunk) {
        Piece c{pp + off, gp + off, {nullptr, nullptr}, std::min(kUpdateChunk, n - off), g.weight_decay};
        for (std::size_t k = 0; k < n_slots; ++k) c.slots[k] = slots_[gi][pi][k].data<float>() + off;
        pieces.push_back(c);
      }
      total += n;
    }
  }
  const int64_t n_pieces = static_cast<int64_t>(pieces.size());
  core::parallel_for(n_pieces, core::should_parallelize(total), [&](int64_t i) {
    const Piece& c = pieces[i];
    update(c.p, c.g, c.slots, c.n, c.wd);
  });
}

std::vector<std::pair<std::string, Tensor>> Optimizer::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  const auto names = slot_names();
  for (std::size_t gi = 0; gi < slots_.size(); ++gi)
    for (std::size_t pi = 0; pi < slots_[gi].size(); ++pi)
      for (std::size_t k = 0; k < names.size(); ++k)
        out.emplace_back(names[k] + "/" + groups_[gi].names[pi], slots_[gi][pi][k]);
  return out;
}

void Optimizer::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  core::NoGradGuard no_grad;
  const auto names = slot_names();
  slots_.clear();
  for (const ParamGroup& g : groups_) {
    slots_.emplace_back();
    for (std::size_t pi = 0; pi < g.params.size(); ++pi) {
      std::vector<Tensor> s;
      for (const std::string& slot : names) {
        const std::string key = slot + "/" + g.names[pi];
        Tensor t = core::zeros(g.params[pi].shape());
        bool found = false;
        for (const auto& [n, v] : state)
          if (n == key) {
            TFM_CHECK(v.shape() == t.shape(), "optimizer state '", key, "' has shape ", core::shape_str(v.shape()),
                      ", the parameter has ", core::shape_str(t.shape()));
            t.copy_(v);
            found = true;
          }
        TFM_CHECK(found, "optimizer state '", key, "' is missing");
        s.push_back(t);
      }
      slots_.back().push_back(std::move(s));
    }
  }
  steps_ = steps;
}

// ---------------------------------------------------------------- SGD

SGD::SGD(std::vector<ParamGroup> groups, float lr, float momentum, bool nesterov, float dampening)
    : Optimizer(std::move(groups), lr), momentum_(momentum), dampening_(dampening), nesterov_(nesterov) {
  TFM_CHECK(momentum >= 0.0f, "sgd: momentum must be >= 0, got ", momentum);
  TFM_CHECK(!nesterov || (momentum > 0.0f && dampening == 0.0f), "sgd: Nesterov needs momentum > 0 and no dampening");
}

void SGD::update(float* pp, const float* gp, float* const* slots, int64_t n, float wd) const {
  float* buf = slots[0];
  const bool first = steps_ == 1;
  const float lr = lr_, mu = momentum_, damp = dampening_;
  const bool nesterov = nesterov_;
  for (int64_t i = 0; i < n; ++i) {
    float d = gp[i] + wd * pp[i];
    if (mu != 0.0f) {
      buf[i] = first ? d : mu * buf[i] + (1.0f - damp) * d;
      d = nesterov ? d + mu * buf[i] : buf[i];
    }
    pp[i] -= lr * d;
  }
}

// ---------------------------------------------------------------- Adam / AdamW

Adam::Adam(std::vector<ParamGroup> groups, float lr, float beta1, float beta2, float eps, bool decoupled)
    : Optimizer(std::move(groups), lr), beta1_(beta1), beta2_(beta2), eps_(eps), decoupled_(decoupled) {
  TFM_CHECK(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f, "adam: betas must be in [0, 1), got ",
            beta1, " and ", beta2);
  TFM_CHECK(eps > 0.0f, "adam: eps must be positive, got ", eps);
}

void Adam::update(float* pp, const float* gp, float* const* slots, int64_t n, float wd) const {
  float* m = slots[0];
  float* v = slots[1];
  const double t = static_cast<double>(steps_);
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1_), t));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2_), t)));
  const float step_size = lr_ / bc1;
  const float b1 = beta1_, b2 = beta2_, eps = eps_;
  const float decay = decoupled_ ? 1.0f - lr_ * wd : 1.0f;
  const float l2 = decoupled_ ? 0.0f : wd;
  for (int64_t i = 0; i < n; ++i) {
    const float gi = gp[i] + l2 * pp[i];
    m[i] = b1 * m[i] + (1.0f - b1) * gi;
    v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
    pp[i] = pp[i] * decay - step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

// ---------------------------------------------------------------- clipping

namespace {

// The gradients of `params` (contiguous; copies only where needed) cut into
// pieces of kUpdateChunk elements.
struct GradPieces {
  std::vector<Tensor> grads;
  std::vector<std::pair<float*, int64_t>> pieces;
  int64_t total = 0;
};

GradPieces grad_pieces(const std::vector<Tensor>& params) {
  GradPieces gp;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    gp.grads.push_back(g.contiguous());
    float* d = gp.grads.back().data<float>();
    const int64_t n = g.numel();
    for (int64_t off = 0; off < n; off += kUpdateChunk) gp.pieces.emplace_back(d + off, std::min(kUpdateChunk, n - off));
    gp.total += n;
  }
  return gp;
}

// Sum of squares of every piece, per piece in double, then added in order:
// the same bits whatever the thread count.
double sum_of_squares(const GradPieces& gp) {
  const int64_t n_pieces = static_cast<int64_t>(gp.pieces.size());
  std::vector<double> partial(gp.pieces.size());
  core::parallel_for(n_pieces, core::should_parallelize(gp.total), [&](int64_t i) {
    const auto [d, n] = gp.pieces[i];
    double s = 0;
    // simd lanes keep their own partial sums (a fixed order for a given build):
    // a single running sum is one dependent add per element, 4x slower.
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) s += static_cast<double>(d[j]) * d[j];
    partial[i] = s;
  });
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace

float grad_norm(const std::vector<Tensor>& params) {
  return static_cast<float>(std::sqrt(sum_of_squares(grad_pieces(params))));
}

float clip_grad_norm(const std::vector<Tensor>& params, float max_norm) {
  TFM_CHECK(max_norm > 0.0f, "clip_grad_norm: max_norm must be positive, got ", max_norm);
  GradPieces gp = grad_pieces(params);
  const float norm = static_cast<float>(std::sqrt(sum_of_squares(gp)));
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  const float scale = max_norm / (norm + 1e-6f);
  // A gradient that was not contiguous was scaled in a copy: store it back.
  std::size_t k = 0;
  for (Tensor p : params) {
    if (!p.grad().defined()) continue;
    if (!p.grad().is_contiguous()) p.set_grad(gp.grads[k]);
    ++k;
  }
  const int64_t n_pieces = static_cast<int64_t>(gp.pieces.size());
  core::parallel_for(n_pieces, core::should_parallelize(gp.total), [&](int64_t i) {
    const auto [d, n] = gp.pieces[i];
    for (int64_t j = 0; j < n; ++j) d[j] *= scale;
  });
  return norm;
}

}  // namespace tfm::optim
