#include "lm_data.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace tfm::data {

LMStream::LMStream(std::vector<int32_t> tokens, int64_t block_size, Sampling sampling)
    : tokens_(std::move(tokens)), block_(block_size), sampling_(sampling) {
  TFM_CHECK(static_cast<int64_t>(tokens_.size()) > block_size, "data: a split of ", tokens_.size(),
            " tokens is too short for windows of model.block_size + 1 = ", block_size + 1, " tokens");
}

int64_t LMStream::windows() const { return (static_cast<int64_t>(tokens_.size()) - 1) / block_; }

LMBatch LMStream::gather(const std::vector<int64_t>& starts) const {
  const int64_t B = static_cast<int64_t>(starts.size()), T = block_;
  std::vector<int32_t> in(static_cast<std::size_t>(B * T)), out(static_cast<std::size_t>(B * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      in[b * T + t] = tokens_[starts[b] + t];
      out[b * T + t] = tokens_[starts[b] + t + 1];
    }
  return {core::from_vector(in, {B, T}), core::from_vector(out, {B, T})};
}

LMBatch LMStream::next(int64_t batch, core::Generator& gen) {
  std::vector<int64_t> starts;
  if (sampling_ == Sampling::random) {
    const uint64_t range = tokens_.size() - static_cast<uint64_t>(block_);
    for (int64_t b = 0; b < batch; ++b) starts.push_back(static_cast<int64_t>(gen.next_u64() % range));
    return gather(starts);
  }
  // Epoch mode: window w of epoch e comes from a permutation seeded by
  // (generator seed, e), so the position alone determines the next batch.
  const int64_t n = windows();
  for (int64_t b = 0; b < batch; ++b, ++epoch_pos_) {
    const int64_t epoch = epoch_pos_ / n, w = epoch_pos_ % n;
    if (epoch != perm_epoch_) {  // Fisher-Yates, seeded by (seed, epoch)
      perm_.resize(static_cast<std::size_t>(n));
      std::iota(perm_.begin(), perm_.end(), 0);
      core::Generator shuffle(gen.seed() ^ (0x9E3779B97F4A7C15ULL * static_cast<uint64_t>(epoch + 1)));
      for (int64_t i = n - 1; i > 0; --i)
        std::swap(perm_[i], perm_[shuffle.next_u64() % static_cast<uint64_t>(i + 1)]);
      perm_epoch_ = epoch;
    }
    starts.push_back(perm_[w] * block_);
  }
  return gather(starts);
}

LMBatch LMStream::fixed(int64_t k, int64_t batch) const {
  // Evenly spaced windows, different for each k, the same every time.
  const uint64_t range = tokens_.size() - static_cast<uint64_t>(block_);
  std::vector<int64_t> starts;
  for (int64_t b = 0; b < batch; ++b) {
    const uint64_t i = static_cast<uint64_t>(k * batch + b);
    starts.push_back(static_cast<int64_t>((i * 2654435761ULL + i / 7) % range));
  }
  return gather(starts);
}

}  // namespace tfm::data
