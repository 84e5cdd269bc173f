#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace tfm::layers {

void validate(const SamplingOptions& opt) {
  TFM_CHECK(opt.temperature >= 0.0f && std::isfinite(opt.temperature), "temperature must be >= 0, got ",
            opt.temperature);
  TFM_CHECK(opt.top_k >= 0, "top-k must be >= 0, got ", opt.top_k);
  TFM_CHECK(opt.top_p > 0.0f && opt.top_p <= 1.0f, "top-p must be in (0, 1], got ", opt.top_p);
}

int32_t argmax(const float* logits, int64_t n) {
  return static_cast<int32_t>(std::max_element(logits, logits + n) - logits);
}

int32_t sample_token(const float* logits, int64_t n, const SamplingOptions& opt, core::Generator& gen) {
  validate(opt);
  if (opt.temperature == 0.0f || opt.top_k == 1) return argmax(logits, n);
  // Candidates sorted by logit, cut by top-k.
  std::vector<int32_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  const int64_t k = opt.top_k > 0 ? std::min(opt.top_k, n) : n;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  idx.resize(static_cast<std::size_t>(k));
  std::vector<double> p(idx.size());
  const double top = logits[idx[0]] / opt.temperature;
  double total = 0;
  for (std::size_t i = 0; i < idx.size(); ++i) total += p[i] = std::exp(logits[idx[i]] / opt.temperature - top);
  // Nucleus: keep the smallest prefix whose probability reaches top_p.
  if (opt.top_p < 1.0f) {
    double acc = 0;
    std::size_t keep = 0;
    while (keep < p.size() && acc < opt.top_p * total) acc += p[keep++];
    p.resize(std::max<std::size_t>(keep, 1));
    total = std::accumulate(p.begin(), p.end(), 0.0);
  }
  const double u = gen.next_uniform() * total;
  double acc = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    acc += p[i];
    if (u < acc) return idx[i];
  }
  return idx[p.size() - 1];
}

}  // namespace tfm::layers
