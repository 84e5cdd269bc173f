#include "train/run_files.h"

#include <fcntl.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

#include "core/error.h"
#include "train/posix_file.h"
#include "train/signals.h"

namespace tfm::train {

namespace {
// 0 on success, else the errno of the failed open/write (the file is cut back).
int append_once(const std::string& path, const char* data, std::size_t n) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666));
  if (fd.get() < 0) return errno;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno;
  if (!write_full(fd.get(), data, n)) {
    const int err = errno;
    if (::ftruncate(fd.get(), st.st_size) != 0) { /* the error below still stops the run */ }
    return err;
  }
  return fd.close();
}
}  // namespace

void append_line_checked(const std::string& path, const std::string& line) {
  if (const int err = append_once(path, line.data(), line.size()))
    detail::throw_error(path, ": cannot append (", errno_text(err), "); stopping the run");
}

struct RunLogger::FileSink final : spdlog::sinks::base_sink<std::mutex> {
  explicit FileSink(std::string p) : path(std::move(p)) {}
  std::string path;
  int error = 0;  // first failure's errno, guarded by the sink's mutex
  int failure() {
    std::lock_guard<std::mutex> lock(mutex_);
    return error;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (error) return;  // the run is stopping; don't write past a failure
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    error = append_once(path, buf.data(), buf.size());
  }
  void flush_() override {}
};

// The console copy of the log, silent once a stop signal is pending (see RunLogger).
struct ConsoleUntilStopSink final : spdlog::sinks::stdout_sink_mt {
  void log(const spdlog::details::log_msg& msg) override {
    if (stop_signal() == 0) spdlog::sinks::stdout_sink_mt::log(msg);
  }
};

RunLogger::RunLogger(const std::string& log_path, bool quiet, bool console_until_stop)
    : sink_(std::make_shared<FileSink>(log_path)) {
  std::vector<spdlog::sink_ptr> sinks;
  if (!quiet && console_until_stop) {
    sinks.push_back(std::make_shared<ConsoleUntilStopSink>());
  } else if (!quiet) {
    sinks.push_back(std::make_shared<spdlog::sinks::stdout_sink_mt>());
  }
  sinks.push_back(sink_);
  logger_ = std::make_shared<spdlog::logger>("tfm", sinks.begin(), sinks.end());
  logger_->set_pattern("[%Y-%m-%d %H:%M:%S] %v");
  logger_->flush_on(spdlog::level::info);
  // Fail now, not at the first log line, when the file cannot be created.
  if (const int err = append_once(log_path, "", 0))
    detail::throw_error(log_path, ": cannot open the log (", errno_text(err), ")");
}

void RunLogger::check() const {
  if (const int err = sink_->failure()) detail::throw_error(sink_->path, ": cannot write the log (", errno_text(err), "); stopping the run");
}

}  // namespace tfm::train
