#include "decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "layers/sampling.h"

namespace tfm::layers {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Rows `idx` of t's leading dimension, copied into a new contiguous tensor.
Tensor gather_rows(const Tensor& t, const std::vector<int64_t>& idx) {
  const Tensor c = t.contiguous();
  core::Shape shape = c.shape();
  const int64_t n = shape[0];
  shape[0] = static_cast<int64_t>(idx.size());
  Tensor out = core::empty(shape, c.dtype());
  const std::size_t row = static_cast<std::size_t>(n > 0 ? c.numel() / n : 0) * core::dtype_size(c.dtype());
  const char* src = c.dtype() == core::DType::f32 ? reinterpret_cast<const char*>(c.data<float>())
                                                  : reinterpret_cast<const char*>(c.data<int32_t>());
  char* dst = out.dtype() == core::DType::f32 ? reinterpret_cast<char*>(out.data<float>())
                                              : reinterpret_cast<char*>(out.data<int32_t>());
  for (std::size_t r = 0; r < idx.size(); ++r) std::memcpy(dst + r * row, src + idx[r] * row, row);
  return out;
}

// A growing self-attention buffer [N, H, cap, Dh]: only the first `len`
// steps of each row are valid, so only those are copied (the rest of the
// new buffer is never read before being written).
Tensor gather_cache_buffer(const Tensor& t, int64_t len, const std::vector<int64_t>& idx) {
  const Tensor c = t.contiguous();
  const int64_t H = c.size(1), cap = c.size(2), Dh = c.size(3);
  Tensor out = core::empty({static_cast<int64_t>(idx.size()), H, cap, Dh});
  const float* src = c.data<float>();
  float* dst = out.data<float>();
  const std::size_t bytes = static_cast<std::size_t>(len * Dh) * sizeof(float);
  for (std::size_t r = 0; r < idx.size(); ++r)
    for (int64_t h = 0; h < H; ++h)
      std::memcpy(dst + (static_cast<int64_t>(r) * H + h) * cap * Dh, src + (idx[r] * H + h) * cap * Dh, bytes);
  return out;
}

// Reorders (and shrinks) the rows of a decoding state. The encoder memory
// and the cross-attention caches are only gathered when `all` (the set of
// sentences changed); reordering beams within a sentence leaves them equal.
void gather_state(Seq2Seq::DecodeState& st, const std::vector<int64_t>& idx, bool all) {
  for (KVCache& c : st.self)
    if (c.k.defined()) {
      c.k = gather_cache_buffer(c.k, c.len, idx);
      c.v = gather_cache_buffer(c.v, c.len, idx);
    }
  if (!all) return;
  for (KVCache& c : st.cross)
    if (c.k.defined()) {
      c.k = gather_rows(c.k, idx);
      c.v = gather_rows(c.v, idx);
    }
  st.mem.states = gather_rows(st.mem.states, idx);
  st.mem.src_padding = gather_rows(st.mem.src_padding, idx);
}

Tensor token_column(const std::vector<int32_t>& t) { return core::from_vector(t, {static_cast<int64_t>(t.size()), 1}); }

std::vector<std::vector<int32_t>> greedy(const Seq2Seq& model, const Tensor& src, const std::vector<int64_t>& limit,
                                         const DecodeOptions& opt) {
  const int64_t B = src.size(0), V = model.config().tgt_vocab;
  std::vector<std::vector<int32_t>> out(static_cast<std::size_t>(B));
  Seq2Seq::DecodeState st = model.start_decoding(model.encode(src));
  std::vector<int64_t> sent(static_cast<std::size_t>(B));  // row -> sentence
  for (int64_t b = 0; b < B; ++b) sent[b] = b;
  std::vector<int32_t> tokens(static_cast<std::size_t>(B), opt.bos);
  while (!sent.empty()) {
    if (opt.stop && opt.stop()) break;
    const Tensor logits = model.decode_step(token_column(tokens), st);
    const float* lg = logits.data<float>();
    std::vector<int64_t> keep, next_sent;
    std::vector<int32_t> next_tokens;
    for (std::size_t r = 0; r < sent.size(); ++r) {
      const int32_t tok = argmax(lg + static_cast<int64_t>(r) * V, V);
      auto& o = out[static_cast<std::size_t>(sent[r])];
      if (tok == opt.eos) continue;
      o.push_back(tok);
      if (static_cast<int64_t>(o.size()) >= limit[static_cast<std::size_t>(sent[r])]) continue;
      keep.push_back(static_cast<int64_t>(r));
      next_sent.push_back(sent[r]);
      next_tokens.push_back(tok);
    }
    if (next_sent.empty()) break;
    if (next_sent.size() != sent.size()) gather_state(st, keep, true);
    sent = std::move(next_sent);
    tokens = std::move(next_tokens);
  }
  return out;
}

struct Hyp {
  std::vector<int32_t> tokens;  // generated so far (no BOS, no EOS)
  float score = 0.0f;           // sum of log-probabilities
};

struct Candidate {
  float score;
  int64_t id;  // beam · V + token
};

bool better(const Candidate& x, const Candidate& y) { return x.score != y.score ? x.score > y.score : x.id < y.id; }

// The n largest of x[0..V) as (value, index), best first (ties: lower index).
void top_tokens(const float* x, int64_t V, int64_t n, std::vector<Candidate>& out) {
  out.clear();
  for (int64_t v = 0; v < V; ++v) {
    if (static_cast<int64_t>(out.size()) == n && !(x[v] > out.back().score)) continue;
    if (static_cast<int64_t>(out.size()) == n) out.pop_back();
    auto pos = out.end();
    while (pos != out.begin() && x[v] > std::prev(pos)->score) --pos;
    out.insert(pos, {x[v], v});
  }
}

std::vector<std::vector<int32_t>> beam_search(const Seq2Seq& model, const Tensor& src,
                                              const std::vector<int64_t>& limit, const DecodeOptions& opt) {
  const int64_t B = src.size(0), V = model.config().tgt_vocab, K = opt.beam;
  const float alpha = opt.length_penalty;
  // GNMT length penalty; len counts the output tokens plus EOS.
  auto penalty = [alpha](int64_t len) {
    return alpha == 0.0f ? 1.0f : std::pow((5.0f + static_cast<float>(len)) / 6.0f, alpha);
  };

  // Each sentence's memory repeated K times: rows a·K .. a·K + K − 1.
  const Seq2Seq::Memory mem = model.encode(src);
  std::vector<int64_t> rep;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < K; ++j) rep.push_back(b);
  Seq2Seq::Memory expanded{gather_rows(mem.states, rep), gather_rows(mem.src_padding, rep)};
  Seq2Seq::DecodeState st = model.start_decoding(expanded);

  std::vector<int64_t> active(static_cast<std::size_t>(B));  // sentence of each block of K rows
  for (int64_t b = 0; b < B; ++b) active[b] = b;
  std::vector<Hyp> live(static_cast<std::size_t>(B * K));
  for (std::size_t r = 0; r < live.size(); ++r) live[r].score = r % K == 0 ? 0.0f : kNegInf;  // no duplicates
  std::vector<float> best_finished(static_cast<std::size_t>(B), kNegInf);
  std::vector<std::vector<int32_t>> out(static_cast<std::size_t>(B));
  std::vector<bool> has_finished(static_cast<std::size_t>(B), false);
  std::vector<int32_t> tokens(live.size(), opt.bos);
  std::vector<Candidate> cands, row_best;

  for (int64_t step = 1; !active.empty(); ++step) {  // step: output length after this token
    if (opt.stop && opt.stop()) break;
    const Tensor logp = core::log_softmax(model.decode_step(token_column(tokens), st), -1);
    const float* lp = logp.data<float>();
    std::vector<int64_t> next_active, idx;
    std::vector<Hyp> next_live;
    std::vector<int32_t> next_tokens;
    for (std::size_t a = 0; a < active.size(); ++a) {
      const std::size_t s = static_cast<std::size_t>(active[a]);
      // The 2K best extensions among K × V (ties: lower beam, lower token).
      // Only a row's own 2K best tokens can be among them, so each row is
      // reduced to those first (one pass over V).
      cands.clear();
      for (int64_t j = 0; j < K; ++j) {
        const int64_t row = static_cast<int64_t>(a) * K + j;
        const float base = live[static_cast<std::size_t>(row)].score;
        if (!std::isfinite(base)) continue;
        top_tokens(lp + row * V, V, 2 * K, row_best);
        for (const Candidate& c : row_best) cands.push_back({base + c.score, j * V + c.id});
      }
      const std::size_t top = std::min<std::size_t>(cands.size(), static_cast<std::size_t>(2 * K));
      std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(top), cands.end(), better);

      // EOS among the best K finishes a hypothesis; the best K others live on.
      std::vector<Hyp> kept;
      for (std::size_t rank = 0; rank < top && static_cast<int64_t>(kept.size()) < K; ++rank) {
        const Candidate& c = cands[rank];
        const Hyp& parent = live[a * static_cast<std::size_t>(K) + static_cast<std::size_t>(c.id / V)];
        const int32_t tok = static_cast<int32_t>(c.id % V);
        if (tok == opt.eos) {
          if (static_cast<int64_t>(rank) >= K) continue;
          const float norm = c.score / penalty(step);
          if (!has_finished[s] || norm > best_finished[s]) {
            best_finished[s] = norm;
            out[s] = parent.tokens;
            has_finished[s] = true;
          }
          continue;
        }
        Hyp h{parent.tokens, c.score};
        h.tokens.push_back(tok);
        kept.push_back(std::move(h));
        idx.push_back(static_cast<int64_t>(a) * K + c.id / V);
      }

      // Done when the length limit is reached or no live hypothesis can beat
      // the best finished one: a live score only falls as it grows, and its
      // penalty is largest at the length limit.
      bool done = step >= limit[s] || kept.empty();
      if (!done && has_finished[s]) done = best_finished[s] >= kept.front().score / penalty(limit[s]);
      if (done) {
        if (!has_finished[s] && !kept.empty()) out[s] = kept.front().tokens;  // nothing finished: best live
        idx.resize(idx.size() - kept.size());
        continue;
      }
      while (static_cast<int64_t>(kept.size()) < K) {  // fewer than K finite candidates (tiny vocabulary)
        Hyp h = kept.back();
        h.score = kNegInf;
        idx.push_back(idx.back());
        kept.push_back(std::move(h));
      }
      next_active.push_back(active[a]);
      for (Hyp& h : kept) {
        next_tokens.push_back(h.tokens.back());
        next_live.push_back(std::move(h));
      }
    }
    if (next_active.empty()) break;
    gather_state(st, idx, next_active.size() != active.size());
    active = std::move(next_active);
    live = std::move(next_live);
    tokens = std::move(next_tokens);
  }
  return out;
}

}  // namespace

std::vector<std::vector<int32_t>> translate(const Seq2Seq& model, const core::Tensor& src, const DecodeOptions& opt) {
  const Seq2SeqConfig& cfg = model.config();
  TFM_CHECK(src.defined() && src.dim() == 2 && src.dtype() == core::DType::i32,
            "translate: source must be i32 [B, S], got ", src.defined() ? core::shape_str(src.shape()) : "undefined");
  TFM_CHECK(opt.beam >= 1, "translate: beam must be >= 1, got ", opt.beam);
  TFM_CHECK(std::isfinite(opt.max_len_ratio) && opt.max_len_ratio >= 0.0f,
            "translate: max_len_ratio must be finite and >= 0, got ", opt.max_len_ratio);
  TFM_CHECK(std::isfinite(opt.length_penalty) && opt.length_penalty >= 0.0f,
            "translate: length_penalty must be finite and >= 0, got ", opt.length_penalty);
  TFM_CHECK(opt.bos >= 0 && opt.bos < cfg.tgt_vocab && opt.eos >= 0 && opt.eos < cfg.tgt_vocab, "translate: bos ",
            opt.bos, " / eos ", opt.eos, " outside the target vocabulary of ", cfg.tgt_vocab);
  const int64_t B = src.size(0), S = src.size(1);
  if (B == 0) return {};
  core::NoGradGuard no_grad;

  // Per sentence: at most ratio · (non-pad source tokens) + 10 output
  // tokens, and no more than the model's positions.
  const std::vector<int32_t> ids = src.to_int_vector();
  std::vector<int64_t> limit(static_cast<std::size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n =
        std::count_if(ids.begin() + b * S, ids.begin() + (b + 1) * S, [&](int32_t t) { return t != cfg.pad_id; });
    const int64_t want = static_cast<int64_t>(opt.max_len_ratio * static_cast<float>(n)) + 10;
    limit[static_cast<std::size_t>(b)] = std::max<int64_t>(1, std::min(want, cfg.max_len));
  }
  return opt.beam == 1 ? greedy(model, src, limit, opt) : beam_search(model, src, limit, opt);
}

}  // namespace tfm::layers
