#include "optimizer.h"

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

void Optimizer::step() {
  core::NoGradGuard no_grad;
  if (slots_.empty()) {  // lazily: slot shapes follow the parameters
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
  ++steps_;
  for (std::size_t gi = 0; gi < groups_.size(); ++gi) {
    ParamGroup& g = groups_[gi];
    for (std::size_t pi = 0; pi < g.params.size(); ++pi) {
      Tensor& p = g.params[pi];
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      update(p, grad.contiguous(), slots_[gi][pi], g.weight_decay);
    }
  }
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

void SGD::update(Tensor& p, const Tensor& g, std::vector<Tensor>& slots, float wd) {
  float* pp = p.data<float>();
  const float* gp = g.data<float>();
  float* buf = slots[0].data<float>();
  const int64_t n = p.numel();
  const bool first = steps_ == 1;
  const float lr = lr_, mu = momentum_, damp = dampening_;
  const bool nesterov = nesterov_;
#pragma omp parallel for schedule(static) if (core::should_parallelize(n))
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

void Adam::update(Tensor& p, const Tensor& g, std::vector<Tensor>& slots, float wd) {
  float* pp = p.data<float>();
  const float* gp = g.data<float>();
  float* m = slots[0].data<float>();
  float* v = slots[1].data<float>();
  const int64_t n = p.numel();
  const double t = static_cast<double>(steps_);
  const float bc1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1_), t));
  const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(beta2_), t)));
  const float step_size = lr_ / bc1;
  const float b1 = beta1_, b2 = beta2_, eps = eps_;
  const float decay = decoupled_ ? 1.0f - lr_ * wd : 1.0f;
  const float l2 = decoupled_ ? 0.0f : wd;
#pragma omp parallel for schedule(static) if (core::should_parallelize(n))
  for (int64_t i = 0; i < n; ++i) {
    const float gi = gp[i] + l2 * pp[i];
    m[i] = b1 * m[i] + (1.0f - b1) * gi;
    v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
    pp[i] = pp[i] * decay - step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
  }
}

// ---------------------------------------------------------------- clipping

float grad_norm(const std::vector<Tensor>& params) {
  double total = 0;
  for (const Tensor& p : params) {
    const Tensor g = p.grad();
    if (!g.defined()) continue;
    const Tensor gc = g.contiguous();
    const float* gp = gc.data<float>();
    const int64_t n = gc.numel();
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (core::should_parallelize(n))
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(gp[i]) * gp[i];
    total += s;
  }
  return static_cast<float>(std::sqrt(total));
}

float clip_grad_norm(const std::vector<Tensor>& params, float max_norm) {
  TFM_CHECK(max_norm > 0.0f, "clip_grad_norm: max_norm must be positive, got ", max_norm);
  const float norm = grad_norm(params);
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  const float scale = max_norm / (norm + 1e-6f);
  core::NoGradGuard no_grad;
  for (const Tensor& p : params) {
    Tensor g = p.grad();
    if (g.defined()) g.mul_(scale);
  }
  return norm;
}

}  // namespace tfm::optim
