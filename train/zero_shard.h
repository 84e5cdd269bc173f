// ZeRO-1 (train.shard_optimizer): with n ranks, each rank keeps and updates
// the optimizer state of only its share of the parameters, then the updated
// parameters are all-gathered so every rank holds all of them again.
//
// Shares are contiguous runs of whole parameters in registration order,
// balanced by element count (shard_by_tokens over the parameter sizes), so
// the gather is one in-place all-gather of the flat parameter vector. The
// gradients are still summed in full on every rank (data_parallel.h), so the
// global gradient norm and clipping are exact and identical everywhere.
// Checkpoints get the whole state, gathered (full_state), in the same names
// an unsharded optimizer uses: a file does not depend on the number of ranks
// or on sharding, and load_state() of a sharded optimizer picks its share
// out of it by name.
#pragma once

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "optim/optimizer.h"

namespace tfm::train {

class ZeroShard {
 public:
  // `named`: every parameter of the model, in registration order.
  explicit ZeroShard(std::vector<std::pair<std::string, core::Tensor>> named);
  // Keeps only this rank's parameters in the optimizer's groups.
  std::vector<optim::ParamGroup> own(std::vector<optim::ParamGroup> groups) const;
  // After the optimizer stepped its share: every rank gets every parameter.
  void gather_parameters();
  // The optimizer state of every parameter (collective: call on all ranks).
  // Empty while the optimizer has not stepped (its state is created lazily).
  std::vector<std::pair<std::string, core::Tensor>> full_state(const optim::Optimizer& opt) const;
  int64_t owned_elements() const;

 private:
  std::vector<std::pair<std::string, core::Tensor>> named_;
  std::vector<int64_t> offsets_;                     // of each parameter in the flat vector
  std::vector<int64_t> rank_counts_, rank_offsets_;  // each rank's part of the flat vector
  std::set<std::string> owned_;
  int64_t total_ = 0;
};

}  // namespace tfm::train
