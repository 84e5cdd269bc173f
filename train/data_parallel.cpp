#include "train/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <sstream>

#include "core/error.h"
#include "train/xxhash64.h"

namespace tfm::train {

RowRange shard_rows(int64_t rows, int rank, int size) {
  return {rows * rank / size, rows * (rank + 1) / size};
}

RowRange shard_by_tokens(const std::vector<int64_t>& row_tokens, int rank, int size) {
  int64_t total = 0;
  for (int64_t t : row_tokens) total += t;
  const auto n = static_cast<int64_t>(row_tokens.size());
  if (total <= 0) return shard_rows(n, rank, size);
  RowRange r{n, n};
  bool found = false;
  int64_t before = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = row_tokens[static_cast<std::size_t>(i)];
    // The rank whose token interval holds this row's midpoint (monotone in i, so slices are contiguous).
    const int64_t owner = std::min<int64_t>(size - 1, size * (2 * before + t) / (2 * total));
    before += t;
    if (owner == rank) {
      if (!found) r.begin = i, found = true;
      r.end = i + 1;
    } else if (owner > rank) {
      if (!found) r.begin = r.end = i;
      return r;
    }
  }
  return r;
}

std::vector<int64_t> row_tokens(const core::Tensor& ids, int32_t pad) {
  TFM_CHECK(ids.dim() == 2 && ids.dtype() == core::DType::i32, "row_tokens: needs an i32 [B, T] tensor");
  const core::Tensor c = ids.contiguous();
  const int64_t B = c.shape()[0], T = c.shape()[1];
  const int32_t* p = c.data<int32_t>();
  std::vector<int64_t> out(static_cast<std::size_t>(B), 0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) out[static_cast<std::size_t>(b)] += p[b * T + t] != pad;
  return out;
}

// ---------------------------------------------------------------- agreement

namespace {

std::string shapes_text(const std::vector<std::pair<std::string, core::Tensor>>& named) {
  std::string s;
  for (const auto& [name, t] : named) s += name + " " + core::shape_str(t.shape()) + "\n";
  return s;
}

uint64_t hash_text(const std::string& s) {
  Xxh64 h;
  h.update(s.data(), s.size());
  return h.digest();
}

// "section.key: value" lines of a to_yaml() text.
std::vector<std::pair<std::string, std::string>> flat_yaml(const std::string& yaml) {
  std::vector<std::pair<std::string, std::string>> out;
  std::istringstream in(yaml);
  std::string section;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    const bool nested = line[0] == ' ';
    std::string key = line.substr(0, colon);
    key.erase(0, key.find_first_not_of(' '));
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    if (!nested && value.empty()) {
      section = key;
      continue;
    }
    out.emplace_back(nested ? section + "." + key : key, value);
  }
  return out;
}

// Lines of `mine` that differ from `theirs` ("key: here X, on rank 0 Y").
std::string describe_difference(const std::string& mine, const std::string& theirs) {
  const auto a = flat_yaml(mine), b = flat_yaml(theirs);
  std::string out;
  for (const auto& [k, v] : a) {
    auto it = std::find_if(b.begin(), b.end(), [&](const auto& kv) { return kv.first == k; });
    const std::string other = it == b.end() ? "(absent)" : it->second;
    if (other != v) out += (out.empty() ? "" : "; ") + k + " = " + v + " here, " + other + " on rank 0";
  }
  return out.empty() ? "the texts differ" : out;
}

// Whether every rank's value equals rank 0's; the list of those that do not.
std::vector<int> ranks_differing(uint64_t mine, const std::string& what) {
  std::vector<uint64_t> all(static_cast<std::size_t>(dist::size()));
  dist::allgather(&mine, sizeof mine, all.data(), what);
  std::vector<int> bad;
  for (int r = 1; r < dist::size(); ++r)
    if (all[static_cast<std::size_t>(r)] != all[0]) bad.push_back(r);
  return bad;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string s;
  for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
  return s;
}

}  // namespace

void check_ranks_agree(const std::string& config_yaml,
                       const std::vector<std::pair<std::string, core::Tensor>>& named_params) {
  if (dist::size() == 1) return;
  const std::vector<int> cfg_bad = ranks_differing(hash_text(config_yaml), "all-gather of the config hash");
  const std::string shapes = shapes_text(named_params);
  const std::vector<int> shape_bad = ranks_differing(hash_text(shapes), "all-gather of the parameter-shape hash");
  if (cfg_bad.empty() && shape_bad.empty()) return;
  std::string root_cfg = config_yaml, root_shapes = shapes;
  dist::bcast_string(root_cfg, 0, "broadcast of rank 0's config");
  dist::bcast_string(root_shapes, 0, "broadcast of rank 0's parameter shapes");
  std::string msg = dist::where() + ": the ranks disagree: ";
  if (!cfg_bad.empty()) msg += "the resolved config of rank(s) " + rank_list(cfg_bad) + " differs from rank 0's";
  if (!shape_bad.empty())
    msg += std::string(cfg_bad.empty() ? "" : "; ") + "the parameter count or shapes of rank(s) " +
           rank_list(shape_bad) + " differ from rank 0's";
  if (config_yaml != root_cfg) msg += "; config here: " + describe_difference(config_yaml, root_cfg);
  if (shapes != root_shapes) {
    const auto count = [](const std::string& s) { return std::count(s.begin(), s.end(), '\n'); };
    msg += "; parameters here: " + std::to_string(count(shapes)) + " tensors, on rank 0: " +
           std::to_string(count(root_shapes));
  }
  msg += ". Every rank must run the same config on the same data (same file contents, same --set)";
  throw RanksDisagree(msg);
}

void check_params_identical(const std::vector<std::pair<std::string, core::Tensor>>& named_params,
                            const std::string& when) {
  if (dist::size() == 1) return;
  Xxh64 h;
  for (const auto& [name, t] : named_params) {
    const core::Tensor c = t.contiguous();
    h.update(c.data<float>(), static_cast<std::size_t>(c.numel()) * sizeof(float));
  }
  const std::vector<int> bad = ranks_differing(h.digest(), "all-gather of the parameter hash");
  if (!bad.empty())
    throw RanksDisagree(dist::where() + ": " + when + ": the parameters of rank(s) " + rank_list(bad) +
                        " differ from rank 0's (the summed gradients were not bitwise identical on every rank)");
}

// ---------------------------------------------------------------- GradSync

GradSync::GradSync(std::vector<core::Tensor> params, int64_t bucket_bytes, bool overlap)
    : params_(std::move(params)), overlap_(overlap) {
  TFM_CHECK(bucket_bytes > 0, "GradSync: the bucket size must be > 0 bytes");
  bucket_of_.assign(params_.size(), 0);
  final_.assign(params_.size(), false);
  int64_t bytes = 0;
  for (std::size_t k = params_.size(); k-- > 0;) {  // reverse: the order backward finishes them
    const core::Tensor& p = params_[k];
    TFM_CHECK(p.dtype() == core::DType::f32 && p.is_contiguous(), "GradSync: parameters must be contiguous f32");
    TFM_CHECK(index_.emplace(p.impl(), k).second, "GradSync: a parameter is listed twice");
    const int64_t pb = p.numel() * static_cast<int64_t>(sizeof(float));
    if (buckets_.empty() || (bytes > 0 && bytes + pb > bucket_bytes)) {
      buckets_.emplace_back();
      bytes = 0;
    }
    buckets_.back().params.push_back(k);
    bucket_of_[k] = buckets_.size() - 1;
    bytes += pb;
  }
  for (Bucket& b : buckets_) {
    int64_t n = 0;
    for (std::size_t k : b.params) n += params_[k].numel();
    b.buffer.assign(static_cast<std::size_t>(n), 0.0f);
  }
  reset();
}

void GradSync::reset() {
  std::fill(final_.begin(), final_.end(), false);
  for (Bucket& b : buckets_) {
    b.pending = static_cast<int>(b.params.size());
    b.started = false;
  }
  next_start_ = 0;
}

core::LeafGradFinalHook GradSync::hook() {
  if (!overlap_ || dist::size() == 1) return {};
  return [this](const core::TensorImpl* leaf) { on_final(leaf); };
}

void GradSync::on_final(const core::TensorImpl* leaf) {
  const auto it = index_.find(leaf);
  if (it == index_.end() || final_[it->second]) return;  // not a parameter (an input that required grad)
  final_[it->second] = true;
  --buckets_[bucket_of_[it->second]].pending;
  start_ready();
  // Nudge the sums already in flight: MPI libraries progress non-blocking collectives inside MPI calls.
  for (std::size_t i = 0; i < next_start_; ++i) buckets_[i].sum.progress();
}

void GradSync::start_ready() {
  while (next_start_ < buckets_.size() && buckets_[next_start_].pending == 0) start(buckets_[next_start_++]);
}

void GradSync::start(Bucket& b) {
  float* out = b.buffer.data();
  for (std::size_t k : b.params) {
    const core::Tensor g = params_[k].grad();
    const auto n = static_cast<std::size_t>(params_[k].numel());
    if (g.defined()) {
      const core::Tensor c = g.contiguous();
      std::memcpy(out, c.data<float>(), n * sizeof(float));
    } else {
      std::fill(out, out + n, 0.0f);
    }
    out += n;
  }
  b.started = true;
  b.sum = dist::iallreduce_sum(b.buffer.data(), static_cast<int64_t>(b.buffer.size()),
                               "the sum of gradient bucket " + std::to_string(&b - buckets_.data()) + " of " +
                                   std::to_string(buckets_.size()));
}

void GradSync::finish() {
  last_wait_s_ = 0;
  last_overlapped_ = next_start_;
  if (dist::size() == 1) return;
  while (next_start_ < buckets_.size()) start(buckets_[next_start_++]);
  const auto t0 = std::chrono::steady_clock::now();
  for (Bucket& b : buckets_) b.sum.wait();
  last_wait_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  core::NoGradGuard no_grad;
  for (Bucket& b : buckets_) {
    const float* in = b.buffer.data();
    for (std::size_t k : b.params) {
      core::Tensor& p = params_[k];
      core::Tensor g = core::empty(p.shape());
      std::memcpy(g.data<float>(), in, static_cast<std::size_t>(p.numel()) * sizeof(float));
      p.set_grad(g);
      in += p.numel();
    }
  }
  reset();
}

}  // namespace tfm::train
