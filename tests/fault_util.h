// Test helpers for the fault-injection suites: child processes (the tfm
// binary or a forked function), waiting with a deadline, a small tmpfs, and
// listing leftover temporary files.
#pragma once

#include <signal.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace tfm::test {

// Starts TFM_BINARY with `args`; stdout and stderr go to `out_file`.
// `unset_omp`: start without OMP_WAIT_POLICY (tfm then re-executes itself).
inline pid_t spawn_tfm(const std::vector<std::string>& args, const std::string& out_file, bool unset_omp = false) {
  const pid_t pid = fork();
  if (pid == 0) {
    signal(SIGINT, SIG_DFL);  // not the test framework's handlers
    signal(SIGTERM, SIG_DFL);
    const int fd = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (unset_omp) unsetenv("OMP_WAIT_POLICY");
    std::vector<char*> argv;
    std::string bin = TFM_BINARY;
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

// waitpid with a deadline; returns the wait status, or -1 after killing the
// child when it did not finish in time.
inline int wait_for(pid_t pid, double seconds) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (std::chrono::steady_clock::now() < end) {
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

// Kills (SIGKILL) and reaps a child that is still running when the test
// leaves the scope, e.g. after a failed REQUIRE.
struct ChildGuard {
  pid_t pid;
  ~ChildGuard() {
    if (pid > 0 && waitpid(pid, nullptr, WNOHANG) == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

inline bool exited_with(int status, int code) { return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == code; }

// Files in `dir` whose name says they are temporaries (".tmp").
inline std::vector<std::string> temp_files(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string f = e.path().filename().string();
    if (f.find(".tmp") != std::string::npos) out.push_back(f);
  }
  return out;
}

// A tmpfs of `size` at `dir` for the lifetime of the object; mounted() is
// false (with the reason in why()) where mounting is not permitted.
struct SmallTmpfs {
  std::string dir, reason;
  bool ok = false;
  SmallTmpfs(const std::string& d, const std::string& size) : dir(d) {
    std::filesystem::create_directories(dir);
    ok = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
    if (!ok) reason = std::string("cannot mount a tmpfs here (") + std::strerror(errno) + ")";
  }
  ~SmallTmpfs() {
    if (ok) ::umount2(dir.c_str(), MNT_DETACH);
  }
  // Fills the file system with `name` until only about `leave` bytes are free.
  void fill(const std::string& name, uint64_t leave) const {
    struct statvfs vfs {};
    statvfs(dir.c_str(), &vfs);
    const uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    const uint64_t want = avail > leave ? avail - leave : 0;
    std::ofstream out(dir + "/" + name, std::ios::binary);
    const std::string block(4096, 'x');
    for (uint64_t done = 0; done + block.size() <= want; done += block.size()) out << block;
  }
};

}  // namespace tfm::test
