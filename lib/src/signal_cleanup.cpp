#include "lwc/signal_cleanup.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace lwc {

namespace {

// Fixed slots, so the handler reads plain memory: no allocation, no lock (a registration publishes
// its kind last, with release order; the handler reads it with acquire). 1024 slots: lwc exec
// stages one file per model output, and 64 left a model with 70 outputs' last files behind. The
// untouched pages of the array cost no memory.
constexpr int kSlots = 1024;
enum SlotKind : int { kFree = 0, kFile = 1, kFolder = 2, kProcess = 3 };
struct Slot {
  std::atomic<int> kind{kFree};
  char path[4096];
  pid_t pid = 0;
};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler reads the slots' kinds");
Slot g_slots[kSlots];
std::mutex g_mu;  // registrations only; never taken by the handler
int g_next = 0;   // slots are handed out round-robin: one just freed is not rewritten while a handler may read it

// DeferSignals: while > 0, a fatal signal is recorded, not acted on.
std::atomic<int> g_defer{0};
volatile sig_atomic_t g_pending = 0;

void cleanupAndRaise(int sig) {
  // Children first (they may be writing into a registered folder), then files, then folders:
  // rmdir takes only an empty folder, so nested ones are tried until none more goes.
  for (auto& s : g_slots)
    if (s.kind.load(std::memory_order_acquire) == kProcess) ::kill(s.pid, SIGTERM);  // async-signal-safe
  for (auto& s : g_slots)
    if (s.kind.load(std::memory_order_acquire) == kFile) ::unlink(s.path);
  for (bool removed = true; removed;) {
    removed = false;
    for (auto& s : g_slots)
      if (s.kind.load(std::memory_order_acquire) == kFolder && ::rmdir(s.path) == 0) removed = true;
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // delivered when the handler returns: the process ends as the signal would have ended it
}

void onFatalSignal(int sig) {
  if (g_defer.load(std::memory_order_acquire) > 0) {
    g_pending = sig;
    return;
  }
  cleanupAndRaise(sig);
}

// At each registration, not once: a signal set back to its default since (a forked child, a host
// program) gets the handler again.
void install() {
  // SIGXCPU (a soft CPU-time limit, `ulimit -S -t`), SIGVTALRM and SIGPROF end a process as SIGALRM does.
  for (const int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGALRM, SIGUSR1, SIGUSR2, SIGXFSZ, SIGXCPU, SIGVTALRM, SIGPROF}) {
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) != 0 || old.sa_handler != SIG_DFL) continue;
    struct sigaction sa {};
    sa.sa_handler = onFatalSignal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(sig, &sa, nullptr);
  }
}

int take(int kind, const std::string& path, pid_t pid) {
  if (path.size() >= sizeof(Slot::path)) return -1;  // too long to register: not cleaned up on a signal
  std::lock_guard<std::mutex> lock(g_mu);
  install();
  for (int n = 0; n < kSlots; ++n) {
    const int i = (g_next + n) % kSlots;
    Slot& s = g_slots[i];
    if (s.kind.load(std::memory_order_relaxed) != kFree) continue;
    std::memcpy(s.path, path.c_str(), path.size() + 1);
    s.pid = pid;
    s.kind.store(kind, std::memory_order_release);
    g_next = (i + 1) % kSlots;
    return i;
  }
  return -1;  // every slot taken: this one is not cleaned up on a signal
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

DeferSignals::DeferSignals() { g_defer.fetch_add(1, std::memory_order_acq_rel); }

DeferSignals::~DeferSignals() {
  if (g_defer.fetch_sub(1, std::memory_order_acq_rel) == 1 && g_pending != 0) {
    const int sig = g_pending;
    g_pending = 0;
    cleanupAndRaise(sig);  // what the signal would have done, with what is still registered
  }
}

}  // namespace lwc
