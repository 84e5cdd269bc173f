// `tfm train`: the training loop around a model, driven by one config.
//
// batches -> forward -> loss -> backward (× grad_accum) -> clip -> step ->
// schedule; evaluation on the validation split every train.eval_every
// steps and at the last step (never when eval_every is 0); logging to the console and OUT_DIR/train.log; one JSON object per
// logged or evaluated step in OUT_DIR/metrics.jsonl; checkpoints
// (numbered, last.h5, best.h5) that resume the run exactly.
//
// SIGINT/SIGTERM finish the current step (or cut an evaluation short and
// discard it), write a checkpoint and return 0 with a message saying how to
// resume; a signal during start-up gives a checkpoint at the starting step.
// The run holds an exclusive lock on OUT_DIR (run_lock.h) and refuses a
// second writer naming its PID; temporaries of killed saves are removed at
// start. A failed write to a checkpoint, train.log or metrics.jsonl (disk
// full) throws tfm::Error naming the file and the reason. A non-finite loss or gradient stops
// the run (status 3) naming the step, unless train.skip_nonfinite is set.
#pragma once

#include <string>
#include <vector>

namespace tfm::train {

struct TrainArgs {
  std::string config_path;             // may be empty with resume
  std::string resume;                  // checkpoint file or run directory
  std::vector<std::string> overrides;  // "a.b=value"
  bool quiet = false;                  // no console output (tests)
};

// Runs a training job; returns the process exit status. Bad input throws
// tfm::Error before anything is allocated or written.
int run_train(const TrainArgs& args);

// The checkpoint a --resume/CKPT argument refers to: the file itself, or
// DIR/last.h5 for a run directory. Throws naming the path when neither exists.
std::string resolve_checkpoint(const std::string& path);

}  // namespace tfm::train
