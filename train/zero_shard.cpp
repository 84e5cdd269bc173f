#include "train/zero_shard.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "core/autograd.h"
#include "core/error.h"
#include "dist/comm.h"
#include "train/data_parallel.h"

namespace tfm::train {

ZeroShard::ZeroShard(std::vector<std::pair<std::string, core::Tensor>> named) : named_(std::move(named)) {
  std::vector<int64_t> sizes;
  for (const auto& [name, p] : named_) {
    TFM_CHECK(p.dtype() == core::DType::f32 && p.is_contiguous(), "train.shard_optimizer: parameter '", name,
              "' must be a contiguous f32 tensor");
    offsets_.push_back(total_);
    sizes.push_back(p.numel());
    total_ += p.numel();
  }
  const int n = dist::size();
  for (int r = 0; r < n; ++r) {
    const RowRange range = shard_by_tokens(sizes, r, n);
    const int64_t begin = range.begin < static_cast<int64_t>(offsets_.size())
                              ? offsets_[static_cast<std::size_t>(range.begin)]
                              : total_;
    const int64_t end = range.end < static_cast<int64_t>(offsets_.size()) ? offsets_[static_cast<std::size_t>(range.end)]
                                                                          : total_;
    rank_offsets_.push_back(begin);
    rank_counts_.push_back(range.size() == 0 ? 0 : end - begin);
    if (r == dist::rank())
      for (int64_t i = range.begin; i < range.end; ++i) owned_.insert(named_[static_cast<std::size_t>(i)].first);
  }
}

int64_t ZeroShard::owned_elements() const { return rank_counts_[static_cast<std::size_t>(dist::rank())]; }

std::vector<optim::ParamGroup> ZeroShard::own(std::vector<optim::ParamGroup> groups) const {
  for (optim::ParamGroup& g : groups) {
    optim::ParamGroup kept;
    kept.weight_decay = g.weight_decay;
    for (std::size_t i = 0; i < g.names.size(); ++i)
      if (owned_.count(g.names[i])) kept.names.push_back(g.names[i]), kept.params.push_back(g.params[i]);
    g = std::move(kept);
  }
  return groups;
}

void ZeroShard::gather_parameters() {
  if (dist::size() == 1) return;
  core::NoGradGuard no_grad;
  std::vector<float> flat(static_cast<std::size_t>(total_));
  for (std::size_t i = 0; i < named_.size(); ++i)
    if (owned_.count(named_[i].first))
      std::memcpy(flat.data() + offsets_[i], named_[i].second.data<float>(),
                  static_cast<std::size_t>(named_[i].second.numel()) * sizeof(float));
  dist::allgatherv_inplace(flat.data(), rank_counts_, rank_offsets_, "the all-gather of the updated parameters");
  for (std::size_t i = 0; i < named_.size(); ++i)
    std::memcpy(named_[i].second.data<float>(), flat.data() + offsets_[i],
                static_cast<std::size_t>(named_[i].second.numel()) * sizeof(float));
}

std::vector<std::pair<std::string, core::Tensor>> ZeroShard::full_state(const optim::Optimizer& opt) const {
  std::vector<std::pair<std::string, core::Tensor>> out;
  if (opt.steps() == 0) return out;  // no state yet on any rank (all ranks step together)
  std::map<std::string, core::Tensor> mine;
  std::vector<std::string> slots;
  for (const auto& [key, t] : opt.state()) mine.emplace(key, t);
  // The slot names ("exp_avg", ...) from the keys "<slot>/<param>" of any owned parameter.
  for (const auto& [key, t] : opt.state()) {
    const std::string slot = key.substr(0, key.find('/'));
    if (std::find(slots.begin(), slots.end(), slot) == slots.end()) slots.push_back(slot);
  }
  std::string names;
  for (const std::string& s : slots) names += s + "\n";
  // A rank owning no parameter knows no slot names: take them from the rank owning the first parameter.
  int owner_of_first = 0;
  while (owner_of_first + 1 < dist::size() && rank_counts_[static_cast<std::size_t>(owner_of_first)] == 0)
    ++owner_of_first;
  dist::bcast_string(names, owner_of_first, "the broadcast of the optimizer's state slot names");
  slots.clear();
  for (std::size_t start = 0; start < names.size();) {
    const std::size_t nl = names.find('\n', start);
    slots.push_back(names.substr(start, nl - start));
    start = nl + 1;
  }
  for (const std::string& slot : slots) {
    std::vector<float> flat(static_cast<std::size_t>(total_), 0.0f);
    for (std::size_t i = 0; i < named_.size(); ++i) {
      auto it = mine.find(slot + "/" + named_[i].first);
      if (it == mine.end()) continue;
      const core::Tensor c = it->second.contiguous();
      std::memcpy(flat.data() + offsets_[i], c.data<float>(), static_cast<std::size_t>(c.numel()) * sizeof(float));
    }
    dist::allgatherv_inplace(flat.data(), rank_counts_, rank_offsets_,
                             "the all-gather of optimizer state '" + slot + "' for a checkpoint");
    for (std::size_t i = 0; i < named_.size(); ++i) {
      core::Tensor t = core::empty(named_[i].second.shape());
      std::memcpy(t.data<float>(), flat.data() + offsets_[i], static_cast<std::size_t>(t.numel()) * sizeof(float));
      out.emplace_back(slot + "/" + named_[i].first, t);
    }
  }
  return out;
}

}  // namespace tfm::train
