// Test helpers: independent references for the chunked attention kernels
// (LSH and local attention).
//
// reference_attention_double: a plain double-precision loop, one softmax per
// (b, h, query) over the keys allowed(b, h, i, j) permits (optionally the
// self-mask: the own key scores −1e5); a query with no key gets 0.
//
// dense_rounds_reference: the same computation composed from core ops, so
// autograd gives its gradients: one dense [T, T] score matrix per round with
// an additive mask (−1e9 where the round's allowed matrix is 0), the rounds
// combined by softmax weights over their log-sum-exps. Rows with no allowed
// key are garbage (finite) here; tests give them zero loss weight. With
// dropout_p > 0, round r's probabilities go through core::dropout drawn at
// counter `first + r·numel(P_r)/4` of `seed` (the layout the chunked kernels
// document).
#pragma once

#include <cmath>
#include <functional>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/tensor.h"

namespace tfm::test {

using AllowedFn = std::function<bool(int64_t b, int64_t h, int64_t i, int64_t j)>;

// q, k, v [B, H, T, D] -> [B, H, T, D] row-major, in double.
inline std::vector<double> reference_attention_double(const core::Tensor& q, const core::Tensor& k,
                                                      const core::Tensor& v, float scale, const AllowedFn& allowed,
                                                      bool self_mask) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const auto qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  std::vector<double> out(static_cast<size_t>(B * H * T * D), 0.0);
  std::vector<double> s(static_cast<size_t>(T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t base = (b * H + h) * T * D;
      for (int64_t i = 0; i < T; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < T; ++j) {
          s[j] = -INFINITY;
          if (!allowed(b, h, i, j)) continue;
          if (self_mask && i == j) {
            s[j] = -1e5;
          } else {
            double d = 0;
            for (int64_t c = 0; c < D; ++c) d += double(qv[base + i * D + c]) * kv[base + j * D + c];
            s[j] = scale * d;
          }
          mx = std::max(mx, s[j]);
        }
        if (mx == -INFINITY) continue;
        double den = 0;
        for (int64_t j = 0; j < T; ++j) den += s[j] == -INFINITY ? 0.0 : std::exp(s[j] - mx);
        for (int64_t j = 0; j < T; ++j) {
          if (s[j] == -INFINITY) continue;
          const double p = std::exp(s[j] - mx) / den;
          for (int64_t c = 0; c < D; ++c) out[base + i * D + c] += p * vv[base + j * D + c];
        }
      }
    }
  return out;
}

// allowed: one f32 [B, H, T, T] (1 = allowed) per round.
inline core::Tensor dense_rounds_reference(const core::Tensor& q, const core::Tensor& k, const core::Tensor& v,
                                           const std::vector<core::Tensor>& allowed, bool self_mask, float scale,
                                           float dropout_p = 0.0f, uint64_t seed = 0, uint64_t first = 0) {
  const int64_t T = q.size(2);
  std::vector<float> eye(static_cast<size_t>(T * T), 0.0f);
  for (int64_t i = 0; i < T; ++i) eye[i * T + i] = 1.0f;
  const core::Tensor eye_t = core::from_vector(eye, {T, T});
  std::vector<core::Tensor> outs, lses;
  for (const core::Tensor& a : allowed) {
    core::Tensor s = core::matmul(core::mul(q, scale), k, false, true);
    if (self_mask) s = core::where(eye_t, core::scalar_tensor(-1e5f), s);
    s = core::add(s, core::mul(core::rsub(1.0f, a), -1e9f));
    const core::Tensor m = core::max(s, {-1}, true).detach();
    lses.push_back(core::add(core::log(core::sum(core::exp(core::sub(s, m)), {-1}, true)), m));  // [B,H,T,1]
    core::Tensor p = core::softmax(s, -1);
    if (dropout_p > 0.0f) {
      core::Generator g(seed);
      g.set_state(seed, first + uint64_t(outs.size()) * uint64_t(p.numel() / 4));
      p = core::dropout(p, dropout_p, true, g);
    }
    outs.push_back(core::matmul(p, v));
  }
  if (outs.size() == 1) return outs[0];
  const core::Tensor w = core::softmax(core::stack(lses, 0), 0);  // [R, B, H, T, 1]
  core::Tensor o;
  for (size_t r = 0; r < outs.size(); ++r) {
    const core::Tensor term = core::mul(w.slice(0, int64_t(r), int64_t(r) + 1).squeeze(0), outs[r]);
    o = o.defined() ? core::add(o, term) : term;
  }
  return o;
}

// Several rounds in double: one softmax per query over every (round, key)
// pair its rounds allow (allowed: f32 [B, H, T, T] per round) — the union
// form of combining rounds by their log-sum-exps.
inline std::vector<double> reference_rounds_double(const core::Tensor& q, const core::Tensor& k,
                                                   const core::Tensor& v, float scale,
                                                   const std::vector<core::Tensor>& allowed, bool self_mask) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3);
  const auto qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
  std::vector<std::vector<float>> av;
  for (const core::Tensor& a : allowed) av.push_back(a.to_vector());
  std::vector<double> out(static_cast<size_t>(B * H * T * D), 0.0);
  for (int64_t bh = 0; bh < B * H; ++bh)
    for (int64_t i = 0; i < T; ++i) {
      std::vector<std::pair<int64_t, double>> pairs;  // (key, score) over all rounds
      for (const auto& a : av)
        for (int64_t j = 0; j < T; ++j) {
          if (a[(bh * T + i) * T + j] == 0.0f) continue;
          double d = 0;
          for (int64_t c = 0; c < D; ++c) d += double(qv[(bh * T + i) * D + c]) * kv[(bh * T + j) * D + c];
          pairs.emplace_back(j, self_mask && i == j ? -1e5 : scale * d);
        }
      if (pairs.empty()) continue;
      double mx = -INFINITY, den = 0;
      for (const auto& p : pairs) mx = std::max(mx, p.second);
      for (const auto& p : pairs) den += std::exp(p.second - mx);
      for (const auto& p : pairs)
        for (int64_t c = 0; c < D; ++c)
          out[(bh * T + i) * D + c] += std::exp(p.second - mx) / den * vv[(bh * T + p.first) * D + c];
    }
  return out;
}

// Max |a − b| between a tensor and a double reference of the same layout.
inline double max_abs_diff_double(const core::Tensor& a, const std::vector<double>& ref) {
  const auto va = a.to_vector();
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(double(va[i]) - ref[i]));
  return m;
}

}  // namespace tfm::test
