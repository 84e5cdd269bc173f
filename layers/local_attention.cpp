#include "local_attention.h"

#include <limits>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "layers/chunked_attention.h"

namespace tfm::layers {

using core::Tensor;

Tensor local_attention(const Tensor& q, const Tensor& k, const Tensor& v, const core::AttentionMask& mask,
                       float scale, const LocalOptions& opt, float dropout_p, core::Generator* gen) {
  TFM_CHECK(q.defined() && k.defined() && v.defined() && q.dim() == 4 && q.shape() == k.shape() &&
                q.shape() == v.shape(),
            "local_attention: q ", q.defined() ? core::shape_str(q.shape()) : "undefined", ", k ",
            k.defined() ? core::shape_str(k.shape()) : "undefined", " and v ",
            v.defined() ? core::shape_str(v.shape()) : "undefined", " must all be the same [B, H, T, D]");
  TFM_CHECK(q.dtype() == core::DType::f32 && k.dtype() == core::DType::f32 && v.dtype() == core::DType::f32,
            "local_attention: q, k and v must be f32");
  TFM_CHECK(q.size(2) > 0 && q.size(3) > 0, "local_attention: empty length or head dim in ",
            core::shape_str(q.shape()));
  TFM_CHECK(opt.chunk_length >= 1, "local_attention: chunk_length must be >= 1 (got ", opt.chunk_length, ")");
  TFM_CHECK(mask.q_offset == 0, "local_attention: mask.q_offset must be 0 (got ", mask.q_offset, ")");
  const int64_t B = q.size(0), T = q.size(2);
  Tensor ok;
  if (mask.key_padding.defined()) {
    const Tensor& kp = mask.key_padding;
    TFM_CHECK(kp.dim() == 2 && kp.size(0) == B && kp.size(1) == T, "local_attention: key_padding ",
              core::shape_str(kp.shape()), " is not [B, T] = [", B, ", ", T, "]");
    std::vector<float> flags = kp.to_vector();
    for (float& f : flags) f = f != 0.0f ? 0.0f : 1.0f;
    ok = core::from_vector(flags, kp.shape());
  }
  detail::ChunkedLayout lay;
  lay.batch = B, lay.heads = q.size(1), lay.length = T, lay.dim = q.size(3);
  lay.chunk = opt.chunk_length;
  lay.padded_length = (T + opt.chunk_length - 1) / opt.chunk_length * opt.chunk_length;
  lay.rounds = 1, lay.wrap = false, lay.self_mask = false, lay.causal = mask.causal;

  detail::set_dropout(lay, dropout_p, gen, "local_attention");
  const Tensor qc = q.detach().contiguous(), kc = k.detach().contiguous(), vc = v.detach().contiguous();
  Tensor stats;
  Tensor out = detail::chunked_attention_forward(lay, qc, kc, vc, Tensor(), ok, scale, stats);
  if (core::needs_grad({&q, &k, &v})) {
    const Tensor saved_out = out.detach();
    core::record(out, "local_attention", {q, k, v}, [=](const Tensor& grad_out) {
      auto g = detail::chunked_attention_backward(lay, qc, kc, vc, Tensor(), ok, scale, saved_out, stats,
                                                  grad_out.contiguous());
      return std::vector<Tensor>{g.dq, g.dk, g.dv};
    });
  }
  return out;
}

Tensor local_attention_dense(const Tensor& q, const Tensor& k, const Tensor& v, const core::AttentionMask& mask,
                             float scale, const LocalOptions& opt) {
  TFM_CHECK(v.defined() && k.defined() && k.shape() == v.shape(),
            "local_attention_dense: q [B, H, Tq, D] and k, v [B, H, Tk, D] do not match");
  return core::matmul(local_attention_probabilities(q, k, mask, scale, opt), v);
}

Tensor local_attention_probabilities(const Tensor& q, const Tensor& k, const core::AttentionMask& mask, float scale,
                                     const LocalOptions& opt) {
  TFM_CHECK(q.defined() && k.defined() && q.dim() == 4 && k.dim() == 4 && q.size(0) == k.size(0) &&
                q.size(1) == k.size(1) && q.size(3) == k.size(3),
            "local_attention_dense: q [B, H, Tq, D] and k, v [B, H, Tk, D] do not match");
  TFM_CHECK(opt.chunk_length >= 1, "local_attention_dense: chunk_length must be >= 1 (got ", opt.chunk_length, ")");
  const int64_t B = q.size(0), Tq = q.size(2), Tk = k.size(2), C = opt.chunk_length;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  std::vector<float> bias(static_cast<size_t>(Tq * Tk), 0.0f);
  for (int64_t i = 0; i < Tq; ++i) {
    const int64_t p = mask.q_offset + i;
    for (int64_t j = 0; j < Tk; ++j) {
      const bool window = j / C == p / C || j / C == p / C - 1;
      if (!window || (mask.causal && j > p)) bias[i * Tk + j] = neg_inf;
    }
  }
  Tensor scores = core::add(core::matmul(core::mul(q, scale), k, false, true), core::from_vector(bias, {Tq, Tk}));
  if (mask.key_padding.defined()) {
    TFM_CHECK(mask.key_padding.dim() == 2 && mask.key_padding.size(0) == B && mask.key_padding.size(1) == Tk,
              "local_attention_dense: key_padding ", core::shape_str(mask.key_padding.shape()),
              " is not [B, Tk] = [", B, ", ", Tk, "]");
    std::vector<float> pad = mask.key_padding.to_vector();
    for (float& f : pad) f = f != 0.0f ? neg_inf : 0.0f;
    scores = core::add(scores, core::from_vector(pad, {B, 1, 1, Tk}));
  }
  return core::softmax(scores, -1);  // a row with no visible key gives zeros
}

Tensor local_backend_attend(const Tensor& q, const Tensor& k, const Tensor& v, const core::AttentionMask& mask,
                            float scale, float dropout_p, bool training, core::Generator& gen,
                            const LocalOptions& opt, Tensor* probabilities) {
  if (probabilities) {
    core::NoGradGuard no_grad;
    *probabilities = local_attention_probabilities(q, k, mask, scale, opt);
  }
  if (mask.q_offset == 0 && q.dim() == 4 && k.dim() == 4 && q.size(2) == k.size(2))
    return local_attention(q, k, v, mask, scale, opt, training ? dropout_p : 0.0f, &gen);
  return local_attention_dense(q, k, v, mask, scale, opt);
}

namespace {

class LocalBackend final : public AttentionBackend {
 public:
  explicit LocalBackend(LocalOptions opt) : opt_(opt) {}
  const char* name() const override { return "local"; }
  Tensor attend(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& a) const override {
    const bool drop = a.training && a.dropout_p > 0.0f;
    TFM_CHECK(!drop || a.gen != nullptr, "local attention: dropout needs a generator (AttentionArgs::gen)");
    core::Generator unused(0);  // never drawn from without dropout
    return local_backend_attend(q, k, v, a.mask, a.scale, a.dropout_p, a.training, drop ? *a.gen : unused, opt_,
                                a.probabilities);
  }

 private:
  LocalOptions opt_;
};

}  // namespace

AttentionBackendInfo local_attention_backend() {
  AttentionBackendInfo info;
  info.name = "local";
  info.help =
      "chunked local attention: a query sees its chunk and the previous one (model.attention_chunk_length "
      "keys each), O(T·chunk); cached generation uses the same window densely";
  info.supports.causal = info.supports.key_padding = info.supports.kv_cache = info.supports.dropout = true;
  info.reads = {"chunk_length"};
  info.make = [](const AttentionBackendOptions& o) {
    LocalOptions opt;
    opt.chunk_length = o.chunk_length;
    return std::make_shared<LocalBackend>(opt);
  };
  return info;
}

}  // namespace tfm::layers
