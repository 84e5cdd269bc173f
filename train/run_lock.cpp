#include "train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <filesystem>

#include "core/error.h"

namespace fs = std::filesystem;

namespace tfm::train {

RunLock::RunLock(const std::string& dir) {
  const std::string path = (fs::path(dir) / kRunLockFile).string();
  Fd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666));
  if (fd.get() < 0) detail::throw_error(path, ": cannot open the run lock: ", errno_text(errno));
  while (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno != EWOULDBLOCK) detail::throw_error(path, ": cannot lock the run directory: ", errno_text(errno));
    char buf[32] = {};
    const ssize_t n = pread_full(fd.get(), buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
    while (!pid.empty() && !std::isdigit(static_cast<unsigned char>(pid.back()))) pid.pop_back();
    detail::throw_error("train.out_dir: ", dir, " is in use by another tfm process (PID ",
                        pid.empty() ? std::string("unknown") : pid,
                        "); wait for it to finish, stop it (kill -INT ", pid.empty() ? std::string("PID") : pid,
                        "), or choose another train.out_dir");
  }
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0 || !pwrite_full(fd.get(), me.data(), me.size(), 0))
    detail::throw_error(path, ": cannot record this process in the run lock: ", errno_text(errno));
  fd_ = std::move(fd);
}

namespace {
// ".<name>.tmp-<digits>" -> the PID, ".<name>.tmp" -> 0, anything else -> -1.
long temp_file_pid(const std::string& f) {
  if (f.size() < 6 || f[0] != '.') return -1;
  if (f.ends_with(".tmp")) return 0;
  const std::size_t at = f.rfind(".tmp-");
  if (at == std::string::npos || at + 5 >= f.size()) return -1;
  long pid = 0;
  for (std::size_t i = at + 5; i < f.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(f[i])) || pid > 1'000'000'000L) return -1;
    pid = pid * 10 + (f[i] - '0');
  }
  return pid;
}
}  // namespace

std::vector<std::string> remove_stale_temp_files(const std::string& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string f = it->path().filename().string();
    const long pid = temp_file_pid(f);
    if (pid < 0 || pid == static_cast<long>(::getpid())) continue;
    if (!it->is_regular_file(ec)) continue;
    if (::unlink(it->path().c_str()) != 0 && errno != ENOENT)
      detail::throw_error(it->path().string(), ": cannot remove stale temporary file: ", errno_text(errno));
    removed.push_back(f);
  }
  if (ec) detail::throw_error(dir, ": cannot list the run directory: ", ec.message());
  return removed;
}

}  // namespace tfm::train
