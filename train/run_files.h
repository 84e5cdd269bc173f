// Checked writes for the append-only files of a run directory (train.log,
// metrics.jsonl). A failed write (disk full, I/O error) is cut back to the
// last whole line and reported as tfm::Error naming the file and the reason,
// so a run stops with a clear message instead of carrying on with a half
// line or silently losing its log.
#pragma once

#include <spdlog/logger.h>

#include <memory>
#include <string>

namespace tfm::train {

// Appends `line` (ending in '\n') to `path` (created if missing) in one
// write; on failure truncates the file back to its previous length and
// throws naming the file and the reason.
void append_line_checked(const std::string& path, const std::string& line);

// A logger writing to the console (unless quiet) and appending to
// `log_path`. spdlog swallows exceptions from its sinks, so a failed file
// write is recorded instead; check() rethrows it as tfm::Error.
class RunLogger {
 public:
  // quiet: train.log only. console_until_stop: the console copy stops once a
  // stop signal is pending (under mpirun, whose launcher stops reading the
  // ranks' output after it forwards a signal: a blocked write would hang rank 0).
  RunLogger(const std::string& log_path, bool quiet, bool console_until_stop = false);
  const std::shared_ptr<spdlog::logger>& logger() const { return logger_; }
  // Throws naming train.log and the reason if any write to it failed.
  void check() const;

 private:
  struct FileSink;
  std::shared_ptr<FileSink> sink_;
  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace tfm::train
