#include "local_attention.h"

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

}  // namespace tfm::layers
