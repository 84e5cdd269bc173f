// Data-parallel training (docs/distributed.md): the pieces the trainer uses
// when it runs as one of several MPI ranks (dist/comm.h). With one rank
// every piece is the identity and costs nothing.
//
// Global-batch semantics: every rank builds the same global batch (same
// seed, same order) and takes its contiguous slice; its loss is its share
// of the global mean (its examples' loss sum over the global count), so the
// ranks' gradients add up to the one-process gradient. Gradients are summed
// over contiguous buckets while backward is still running.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/autograd.h"
#include "core/error.h"
#include "core/tensor.h"
#include "dist/comm.h"

namespace tfm::train {

// ---- the slice of a global batch a rank trains on

struct RowRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};
// Rows [rows·rank/size, rows·(rank+1)/size): contiguous, sizes differ by at most one.
RowRange shard_rows(int64_t rows, int rank, int size);
// Contiguous rows balanced by token count: row i (with t tokens before it
// out of T) goes to rank floor(size·(t + tokens_i/2) / T), clamped; so each
// rank gets about T/size tokens, whole sentences, in order. A rank may get
// no row when the batch has fewer rows than ranks (or very uneven lengths).
RowRange shard_by_tokens(const std::vector<int64_t>& row_tokens, int rank, int size);
// Non-pad entries of each row of an i32 [B, T] tensor.
std::vector<int64_t> row_tokens(const core::Tensor& ids, int32_t pad);

// ---- agreement at start

// An error every rank detects together (so each can exit normally).
class RanksDisagree : public Error {
 public:
  using Error::Error;
};

// All ranks all-gather a hash of the resolved config text and of the
// parameter names and shapes; when any differs from rank 0 every rank
// throws RanksDisagree, and each differing rank's message names the config
// keys (its value and rank 0's) or parameters that differ.
void check_ranks_agree(const std::string& config_yaml,
                       const std::vector<std::pair<std::string, core::Tensor>>& named_params);
// Hash of the parameter values, all-gathered: throws RanksDisagree naming
// the ranks whose parameters differ from rank 0's (they must stay identical).
void check_params_identical(const std::vector<std::pair<std::string, core::Tensor>>& named_params,
                            const std::string& when);

// ---- gradient summation

// Sums the parameters' gradients over all ranks, in buckets of about
// `bucket_bytes` (parameters in reverse registration order, the order
// backward finishes them). With `overlap`, hook() (installed through
// core::LeafGradFinalScope around the step's last backward) starts a
// bucket's non-blocking sum as soon as all its gradients are final; buckets
// start strictly in bucket order, so every rank issues the same sequence of
// collectives whatever order its graph finished them in. finish() starts
// what is left, waits, and writes the sums back as the gradients (a
// parameter without a gradient gets the sum too, zeros if nobody had one).
class GradSync {
 public:
  GradSync(std::vector<core::Tensor> params, int64_t bucket_bytes, bool overlap);
  core::LeafGradFinalHook hook();
  void finish();
  std::size_t buckets() const { return buckets_.size(); }
  // Seconds finish() spent waiting for sums (communication not hidden
  // behind backward, plus any wait for a slower rank).
  double last_wait_s() const { return last_wait_s_; }
  // Buckets of the last step started from the hook, before backward ended.
  std::size_t last_overlapped() const { return last_overlapped_; }

 private:
  struct Bucket {
    std::vector<std::size_t> params;  // indices into params_
    std::vector<float> buffer;
    int pending = 0;  // parameters not yet final in this backward
    bool started = false;
    dist::PendingSum sum;
  };
  void on_final(const core::TensorImpl* leaf);
  void start_ready();  // starts, in order, every bucket whose gradients are all final
  void start(Bucket& b);
  void reset();

  std::vector<core::Tensor> params_;
  std::unordered_map<const core::TensorImpl*, std::size_t> index_;
  std::vector<std::size_t> bucket_of_;
  std::vector<bool> final_;
  std::vector<Bucket> buckets_;
  std::size_t next_start_ = 0;
  bool overlap_;
  double last_wait_s_ = 0;
  std::size_t last_overlapped_ = 0;
};

}  // namespace tfm::train
