#include "train/signals.h"

#include <csignal>

namespace tfm::train {
namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_stop_signal(int sig) { g_signal = sig; }

void install(struct sigaction* old_int, struct sigaction* old_term) {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, old_int);
  sigaction(SIGTERM, &sa, old_term);
}

sigset_t stop_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void install_stop_handlers() {
  if (g_signal == 0) install(nullptr, nullptr);
  const sigset_t set = stop_set();
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

void release_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = SIG_DFL;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  if (const int sig = g_signal; sig != 0) raise(sig);
}

void prepare_exec() {
  const sigset_t set = stop_set();
  sigprocmask(SIG_BLOCK, &set, nullptr);
  if (const int sig = g_signal; sig != 0) raise(sig);  // blocked: stays pending across exec
}

int stop_signal() { return g_signal; }

struct StopSignalScope::Saved {
  struct sigaction old_int {}, old_term {};
  bool installed = false;
};

StopSignalScope::StopSignalScope() : saved_(new Saved) {
  if (g_signal == 0) {
    install(&saved_->old_int, &saved_->old_term);
    saved_->installed = true;
  }
}

StopSignalScope::~StopSignalScope() {
  if (saved_->installed) {
    sigaction(SIGINT, &saved_->old_int, nullptr);
    sigaction(SIGTERM, &saved_->old_term, nullptr);
  }
  g_signal = 0;
  delete saved_;
}

}  // namespace tfm::train
