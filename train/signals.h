// SIGINT / SIGTERM as a stop request. The handler only records the signal
// number; the trainer (and the evaluation / decoding loops it calls) poll
// stop_signal() and finish the current step, write a checkpoint and exit.
//
// `tfm` installs the handlers first thing in main (install_stop_handlers), so
// a signal during start-up (config, data, tokenizer training) is kept rather
// than killing the process with nothing written. SA_RESETHAND: a second
// signal takes the default action (the checkpoint on disk is always whole,
// so stopping hard is safe).
#pragma once

namespace tfm::train {

// Installs the SIGINT/SIGTERM handlers and unblocks both signals (a pending
// one, carried across prepare_exec(), is delivered now). Idempotent while no
// signal has arrived; after one, leaves the default action in place so the
// next signal stops the process.
void install_stop_handlers();

// For commands that do not train (sample, translate, ...): restores the
// default actions, and if a signal arrived meanwhile, re-raises it so the
// process stops as if no handler had been installed.
void release_stop_handlers();

// Before execv(): blocks SIGINT/SIGTERM (mask and pending signals survive
// exec) and re-raises a signal already recorded, so the new image's
// install_stop_handlers() receives it instead of the signal being lost.
void prepare_exec();

// The signal that asked to stop (SIGINT or SIGTERM), 0 when none.
int stop_signal();
inline bool stop_requested() { return stop_signal() != 0; }

// For the lifetime of one run: installs the handlers (unless a signal already
// arrived), and on exit restores the previous handlers and clears the
// request, so a later run in the same process (tests) starts afresh.
class StopSignalScope {
 public:
  StopSignalScope();
  ~StopSignalScope();
  StopSignalScope(const StopSignalScope&) = delete;
  StopSignalScope& operator=(const StopSignalScope&) = delete;

 private:
  struct Saved;
  Saved* saved_;
};

}  // namespace tfm::train
