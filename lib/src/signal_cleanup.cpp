#include "lwc/signal_cleanup.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace lwc {

namespace {

// Fixed slots, so the handler reads plain memory: no allocation, no lock (a registration in
// progress publishes its kind last, with release order; the handler reads it with acquire).
constexpr int kSlots = 64;
enum SlotKind : int { kFree = 0, kFile = 1, kFolder = 2, kProcess = 3 };
struct Slot {
  std::atomic<int> kind{kFree};
  char path[4096];
  pid_t pid = 0;
};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler reads the slots' kinds");
Slot g_slots[kSlots];
std::mutex g_mu;  // registrations only; never taken by the handler

void onFatalSignal(int sig) {
  // Children first (they may be writing into a registered folder), then files, then folders.
  for (const int kind : {kProcess, kFile, kFolder})
    for (auto& s : g_slots) {
      if (s.kind.load(std::memory_order_acquire) != kind) continue;
      if (kind == kProcess) ::kill(s.pid, SIGTERM);  // all three calls are async-signal-safe
      else if (kind == kFile) ::unlink(s.path);
      else ::rmdir(s.path);
    }
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // delivered when the handler returns: the process ends as the signal would have ended it
}

// At each registration, not once: a signal set back to its default since (a forked child, a host
// program) gets the handler again.
void install() {
  for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGALRM, SIGUSR1, SIGUSR2, SIGXFSZ}) {
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) != 0 || old.sa_handler != SIG_DFL) continue;
    struct sigaction sa {};
    sa.sa_handler = onFatalSignal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(sig, &sa, nullptr);
  }
}

int take(int kind, const std::string& path, pid_t pid) {
  if (path.size() >= sizeof(Slot::path)) return -1;  // too long to register: left as it was before this module
  std::lock_guard<std::mutex> lock(g_mu);
  install();
  for (int i = 0; i < kSlots; ++i) {
    Slot& s = g_slots[i];
    if (s.kind.load(std::memory_order_relaxed) != kFree) continue;
    std::memcpy(s.path, path.c_str(), path.size() + 1);
    s.pid = pid;
    s.kind.store(kind, std::memory_order_release);
    return i;
  }
  return -1;  // every slot taken (64 temporary things at once): this one is not cleaned up on a signal
}

}  // namespace

SignalCleanup::SignalCleanup(Kind kind, const std::string& path) : slot_(take(static_cast<int>(kind), path, 0)) {}

SignalCleanup::SignalCleanup(pid_t child) : slot_(take(kProcess, "", child)) {}

SignalCleanup& SignalCleanup::operator=(SignalCleanup&& o) noexcept {
  if (this != &o) {
    release();
    slot_ = o.slot_;
    o.slot_ = -1;
  }
  return *this;
}

void SignalCleanup::release() {
  if (slot_ < 0) return;
  g_slots[slot_].kind.store(kFree, std::memory_order_release);
  slot_ = -1;
}

}  // namespace lwc
