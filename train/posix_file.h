// POSIX file helpers: an owned file descriptor, full reads and writes that
// retry on EINTR and short transfers, and atomic replacement of a file
// (write a temporary in the same directory, fsync, rename over the target,
// fsync the directory), so a crash leaves either the old or the new file.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <utility>

namespace tfm::train {

// strerror(err) as a string.
std::string errno_text(int err);

// Owns one file descriptor; closes it on destruction.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      close();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  // Closes now and reports close(2)'s errno (0 on success).
  int close();

 private:
  int fd_;
};

// pread that retries on EINTR and short reads; returns the bytes read (less
// than n only at end of file) or -1 with errno set.
ssize_t pread_full(int fd, void* buf, std::size_t n, off_t off);
// pwrite / write of all n bytes, retrying on EINTR; false with errno set on failure.
bool pwrite_full(int fd, const void* buf, std::size_t n, off_t off);
bool write_full(int fd, const void* buf, std::size_t n);

// A temporary file next to `target` (".<name>.tmp-<pid>" in its directory)
// that replaces the target on commit() and is removed if never committed.
// Errors throw tfm::Error naming `target` and the reason.
class AtomicReplace {
 public:
  explicit AtomicReplace(const std::string& target);
  AtomicReplace(const AtomicReplace&) = delete;
  AtomicReplace& operator=(const AtomicReplace&) = delete;
  ~AtomicReplace();
  // The temporary file, created empty by the constructor.
  const std::string& temp_path() const { return tmp_; }
  // Renames the (already written and fsynced) temporary over the target and
  // fsyncs the directory so the rename itself is durable.
  void commit();

 private:
  std::string target_, dir_, tmp_;
  Fd dir_fd_;
  bool committed_ = false;
};

// Replaces `path` by a file holding `data`, atomically and durably.
void write_file_atomic(const std::string& path, const std::string& data);

// Points `link` at the existing file `target` atomically: a hard link under a
// temporary name renamed over `link` (a copy where hard links fail).
void link_file_atomic(const std::string& target, const std::string& link);

}  // namespace tfm::train
