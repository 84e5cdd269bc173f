// One writer per run directory. A training run holds an exclusive flock(2)
// on OUT_DIR/.tfm.lock for its whole life (the kernel drops it when the
// process dies, however it dies), and the file holds the owner's PID for the
// message a second writer gets. Readers (sample, inspect, eval) take no lock:
// checkpoints are replaced by atomic renames, and load_checkpoint retries
// once when a file changes under it.
#pragma once

#include <string>
#include <vector>

#include "train/posix_file.h"

namespace tfm::train {

inline constexpr const char* kRunLockFile = ".tfm.lock";

class RunLock {
 public:
  RunLock() = default;
  // Locks `dir` (which must exist). Throws tfm::Error naming the directory
  // and the PID of the process holding it when another process does.
  explicit RunLock(const std::string& dir);
  bool held() const { return fd_.get() >= 0; }

 private:
  Fd fd_;
};

// Removes the temporary files an interrupted save left in `dir` (a process
// killed during save_checkpoint or write_file_atomic): ".<name>.tmp-<pid>"
// whose PID is not this process, and the link temporaries ".<name>.tmp".
// Call it only while holding the directory's RunLock: then no other writer
// can be using them. Returns the names removed; throws when one cannot be.
std::vector<std::string> remove_stale_temp_files(const std::string& dir);

}  // namespace tfm::train
