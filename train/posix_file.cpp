#include "train/posix_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace fs = std::filesystem;

namespace tfm::train {

std::string errno_text(int err) { return std::strerror(err); }

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

int Fd::close() {
  int err = 0;
  if (fd_ >= 0 && ::close(fd_) != 0) err = errno;
  fd_ = -1;
  return err;
}

ssize_t pread_full(int fd, void* buf, std::size_t n, off_t off) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, static_cast<char*>(buf) + done, n - done, off + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    done += static_cast<std::size_t>(r);
  }
  return static_cast<ssize_t>(done);
}

bool pwrite_full(int fd, const void* buf, std::size_t n, off_t off) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pwrite(fd, static_cast<const char*>(buf) + done, n - done, off + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<std::size_t>(r);
  }
  return true;
}

bool write_full(int fd, const void* buf, std::size_t n) {
  std::size_t done = 0;
  while (done < n) {
    const ssize_t r = ::write(fd, static_cast<const char*>(buf) + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<std::size_t>(r);
  }
  return true;
}

AtomicReplace::AtomicReplace(const std::string& target) : target_(target) {
  const fs::path p(target);
  const std::string base = p.filename().string();
  TFM_CHECK(!base.empty() && base != "." && base != "..", target, ": not a file path");
  dir_ = p.parent_path().string();
  if (dir_.empty()) dir_ = ".";
  tmp_ = (fs::path(dir_) / ("." + base + ".tmp-" + std::to_string(::getpid()))).string();
  dir_fd_ = Fd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir_fd_.get() < 0) detail::throw_error(target, ": cannot open directory '", dir_, "': ", errno_text(errno));
  Fd created(::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
  if (created.get() < 0) detail::throw_error(target, ": cannot create temporary file '", tmp_, "': ", errno_text(errno));
  if (const int err = created.close()) {
    ::unlink(tmp_.c_str());
    detail::throw_error(target, ": cannot create temporary file '", tmp_, "': ", errno_text(err));
  }
}

AtomicReplace::~AtomicReplace() {
  if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicReplace::commit() {
  if (::rename(tmp_.c_str(), target_.c_str()) != 0)
    detail::throw_error(target_, ": cannot rename '", tmp_, "' to the target: ", errno_text(errno));
  committed_ = true;
  if (::fsync(dir_fd_.get()) != 0)
    detail::throw_error(target_, ": saved, but cannot fsync directory '", dir_, "': ", errno_text(errno));
}

void write_file_atomic(const std::string& path, const std::string& data) {
  AtomicReplace file(path);
  Fd fd(::open(file.temp_path().c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (fd.get() < 0) detail::throw_error(path, ": cannot write '", file.temp_path(), "': ", errno_text(errno));
  if (!write_full(fd.get(), data.data(), data.size()))
    detail::throw_error(path, ": cannot write (", errno_text(errno), ")");
  if (::fsync(fd.get()) != 0) detail::throw_error(path, ": cannot flush (", errno_text(errno), ")");
  if (const int err = fd.close()) detail::throw_error(path, ": cannot flush (", errno_text(err), ")");
  file.commit();
}

void link_file_atomic(const std::string& target, const std::string& link) {
  const fs::path l(link);
  const fs::path tmp = l.parent_path() / ("." + l.filename().string() + ".tmp");
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_hard_link(target, tmp, ec);
  if (ec) {
    ec.clear();
    fs::copy_file(target, tmp, fs::copy_options::overwrite_existing, ec);
    if (ec) {
      std::error_code ignored;
      fs::remove(tmp, ignored);
      detail::throw_error(link, ": cannot point it at ", target, " (", ec.message(), ")");
    }
  }
  fs::rename(tmp, l, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    detail::throw_error(link, ": cannot point it at ", target, " (", ec.message(), ")");
  }
}

}  // namespace tfm::train
