// The SIMT emulator's execution engine: fibers, the per-block scheduler, warp exchanges, block
// barriers, misuse diagnostics and the OS-thread pool that runs blocks (see cuda_emu.h).
//
// Fibers are "runners": a runner runs emulated threads one after the other on its own stack. When
// a thread reaches a synchronisation point its runner is suspended with it, and another runner
// takes the next thread. A pass of the scheduler resumes every runnable thread once, in the
// schedule's order; a runner whose thread finished continues directly with the next not-yet-started
// thread of the pass (the fast path: barrier-free threads cost no context switch). The order of
// execution is exactly the same with and without the fast path; only the stack memory differs.
#if defined(COCO_CUDA_EMULATED) || defined(EMU_STANDALONE)

#include <cxxabi.h>
#include <dlfcn.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/simt/cuda_emu.h"
#include "engine/simt/emu_internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#if defined(EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(EMU_USE_UCONTEXT) || !defined(__x86_64__)
#define EMU_UCONTEXT 1
#include <ucontext.h>
#endif

#if !defined(EMU_UCONTEXT)
// emu_ctx_switch(save, to): push the callee-saved registers, store rsp in *save, load `to` as rsp,
// pop the other context's registers and return into it. A new fiber's stack is prepared so that
// the first switch "returns" into emu_fiber_trampoline, which calls r13(r12).
extern "C" void emu_ctx_switch(void** save_sp, void* to_sp);
extern "C" void emu_fiber_trampoline();
asm(R"(
  .text
  .globl emu_ctx_switch
  .type emu_ctx_switch,@function
emu_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_ctx_switch, .-emu_ctx_switch
  .globl emu_fiber_trampoline
  .type emu_fiber_trampoline,@function
emu_fiber_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size emu_fiber_trampoline, .-emu_fiber_trampoline
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

namespace emu {

// ------------------------------------------------------------------------------------------------
// Configuration, statistics, diagnostics record.
namespace {

long parse_long(const char* variable, const char* text, long lo, long hi) {
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 0);
  if (errno != 0 || end == text || *end != '\0' || value < lo || value > hi)
    throw std::invalid_argument(std::string(variable) + "='" + text + "': expected an integer in [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return value;
}

Config config_from_environment() {
  Config c;
  if (const char* s = std::getenv("EMU_SCHEDULE"); s && *s) {
    const std::string v = s;
    if (v == "forward")
      c.schedule = Schedule::Forward;
    else if (v == "reverse")
      c.schedule = Schedule::Reverse;
    else if (v == "random")
      c.schedule = Schedule::Random;
    else
      throw std::invalid_argument("EMU_SCHEDULE='" + v + "': expected forward, reverse or random");
  }
  if (const char* s = std::getenv("EMU_SEED"); s && *s)
    c.seed = static_cast<uint32_t>(parse_long("EMU_SEED", s, 0, 0xFFFFFFFFL));
  if (const char* s = std::getenv("EMU_POISON"); s && *s) {
    const std::string v = s;
    c.poison = (v == "off" || v == "none" || v == "-1") ? Config::kPoisonOff
                                                        : static_cast<int>(parse_long("EMU_POISON", s, 0, 255));
  }
  if (const char* s = std::getenv("EMU_STRICT"); s && *s) c.strict = parse_long("EMU_STRICT", s, 0, 1) != 0;
  if (const char* s = std::getenv("EMU_THREADS"); s && *s)
    c.threads = static_cast<int>(parse_long("EMU_THREADS", s, 0, 1024));
  if (const char* s = std::getenv("EMU_STACK_KB"); s && *s)
    c.stack_bytes = static_cast<size_t>(parse_long("EMU_STACK_KB", s, 16, 1 << 20)) * 1024;
  if (const char* s = std::getenv("EMU_FAST_PATH"); s && *s) c.fast_path = parse_long("EMU_FAST_PATH", s, 0, 1) != 0;
  if (const char* s = std::getenv("EMU_FAULT_AT_LAUNCH"); s && *s)
    c.fault_at_launch = static_cast<uint64_t>(parse_long("EMU_FAULT_AT_LAUNCH", s, 0, 0x7FFFFFFFL));
  return c;
}

std::mutex& diagnostic_mutex() {
  static std::mutex m;
  return m;
}
std::string& diagnostic_record() {
  static std::string s;
  return s;
}

}  // namespace

Config& config() {
  static Config c = config_from_environment();
  return c;
}

Stats& stats() {
  static Stats s;
  return s;
}

std::string last_diagnostic() {
  std::lock_guard<std::mutex> lock(diagnostic_mutex());
  return diagnostic_record();
}

std::string describe_schedule(Schedule schedule, uint32_t seed) {
  switch (schedule) {
    case Schedule::Forward:
      return "forward";
    case Schedule::Reverse:
      return "reverse";
    case Schedule::Random:
      return "random(seed " + std::to_string(seed) + ")";
  }
  return "?";
}

std::string describe(const Config& c) {
  char poison[32];
  if (c.poison == Config::kPoisonOff)
    std::snprintf(poison, sizeof poison, "no poison");
  else
    std::snprintf(poison, sizeof poison, "poison 0x%02X", c.poison);
  return describe_schedule(c.schedule, c.seed) + ", " + poison;
}

namespace detail {
namespace {

// ------------------------------------------------------------------------------------------------
// Data structures.
enum class LaneState : uint8_t { Unstarted, Running, Ready, AtBarrier, AtWarpOp, Done };

struct Runner;

// One emulated thread: exactly one cache line of what every switch and warp exchange touches.
struct alignas(64) Lane : ThreadCtx {
  LaneState state = LaneState::Unstarted;
  WarpOp warp_op = WarpOp::Sync;
  BarrierOp barrier_op = BarrierOp::Sync;
  uint8_t warp_size = 0;  // bytes of warp_in
  unsigned warp_mask = 0;
  Runner* runner = nullptr;
  void* warp_result = nullptr;  // in the waiting thread's frame; written when the operation completes
  unsigned warp_src = 0;
  std::source_location where;  // of the barrier or warp operation it waits at
  unsigned char warp_in[16] = {};

  unsigned warp() const { return linear >> 5; }
};
static_assert(sizeof(Lane) == 64, "Lane is one cache line");

struct WarpState {
  unsigned exist = 0;    // lanes that exist (a partial last warp has fewer)
  unsigned done = 0;     // lanes that exited
  unsigned waiting = 0;  // lanes waiting at a warp operation
};

struct Runner {
  void* sp = nullptr;
  char* mapping = nullptr;
  size_t mapping_bytes = 0;
  char* stack_lo = nullptr;  // above the guard page
  size_t stack_bytes = 0;
  Lane* lane = nullptr;
  void* asan_fake_stack = nullptr;
#if defined(EMU_UCONTEXT)
  ucontext_t context;
#endif
};

struct LaunchState {
  const LaunchRequest* request = nullptr;
  Config cfg;
  unsigned long long blocks = 0;
  unsigned threads_per_block = 0;
  std::atomic<unsigned long long> next_block{0};
  std::vector<unsigned long long> block_order;   // random schedule only
  std::atomic<uint64_t> misaligned_accesses{0};  // reports of misaligned_access; the first is printed
};

struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};
// Fisher-Yates with our own generator, so random schedules are the same on every platform.
template <class T>
void shuffle(std::vector<T>& v, SplitMix64& rng) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.next() % i]);
}

struct Worker {
  // the scheduler's own context (the OS thread's stack)
  void* sched_sp = nullptr;
#if defined(EMU_UCONTEXT)
  ucontext_t sched_context;
#endif
  const void* sched_stack_lo = nullptr;
  size_t sched_stack_bytes = 0;
  void* sched_asan_fake_stack = nullptr;

  std::deque<Runner> runners;                    // stable addresses, adjacent in memory
  std::vector<std::pair<char*, size_t>> arenas;  // mappings holding the runners' stacks
  std::vector<Runner*> idle_runners;
  size_t runner_stack_bytes = 0;

  // current launch and block
  LaunchState* launch = nullptr;
  unsigned n = 0;
  std::vector<Lane> lanes;
  std::vector<WarpState> warps;
  std::vector<unsigned> order;
  unsigned pos = 0;  // next entry of `order` in the current pass
  unsigned done_count = 0, barrier_count = 0, warp_waiting_count = 0;
  SplitMix64 rng{0};
  uint64_t block_epoch = 0;
  unsigned char* dynamic_smem = nullptr;

  // the current block barrier phase
  const Lane* barrier_first = nullptr;
  bool barrier_divergence_reported = false;
  int barrier_true = 0, barrier_arrivals = 0;
  int barrier_result_true = 0, barrier_result_arrivals = 0;

  std::vector<std::pair<void*, uint64_t>> poisoned_static;  // address, block epoch of the last fill
  uint64_t switches = 0, block_barriers = 0, warp_barriers = 0;

#if !defined(EMU_ASAN)
  void* signal_stack = nullptr;
#endif

  Worker();
  ~Worker();
};

thread_local Worker* t_worker = nullptr;

// threadIdx of a lane (not stored: it would not fit the Lane's cache line).
[[gnu::always_inline]] inline void thread_index(const Lane& lane, uint3& out) {
  const unsigned bx = ::blockDim.x, by = ::blockDim.y;
  if (by == 1 && ::blockDim.z == 1) {
    out.x = lane.linear;
    out.y = out.z = 0;
  } else {
    out.x = lane.linear % bx;
    out.y = lane.linear / bx % by;
    out.z = lane.linear / (bx * by);
  }
}
uint3 thread_index(const Lane& lane) {
  uint3 t;
  thread_index(lane, t);
  return t;
}

const char* warp_op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Sync:
      return "__syncwarp";
    case WarpOp::ShflIdx:
      return "__shfl_sync";
    case WarpOp::ShflUp:
      return "__shfl_up_sync";
    case WarpOp::ShflDown:
      return "__shfl_down_sync";
    case WarpOp::ShflXor:
      return "__shfl_xor_sync";
    case WarpOp::Ballot:
      return "__ballot_sync";
    case WarpOp::Any:
      return "__any_sync";
    case WarpOp::All:
      return "__all_sync";
    case WarpOp::MatchAny:
      return "__match_any_sync";
    case WarpOp::MatchAll:
      return "__match_all_sync";
    case WarpOp::AddI32:
    case WarpOp::AddU32:
      return "__reduce_add_sync";
    case WarpOp::MinI32:
    case WarpOp::MinU32:
      return "__reduce_min_sync";
    case WarpOp::MaxI32:
    case WarpOp::MaxU32:
      return "__reduce_max_sync";
    case WarpOp::AndU32:
      return "__reduce_and_sync";
    case WarpOp::OrU32:
      return "__reduce_or_sync";
    case WarpOp::XorU32:
      return "__reduce_xor_sync";
    case WarpOp::Collective:
      return "a warp-collective instruction (mma.sync/ldmatrix)";
  }
  return "?";
}

Lane* current_lane() { return static_cast<Lane*>(t_thread); }

// ------------------------------------------------------------------------------------------------
// Diagnostics.
std::string kernel_display_name(const LaunchRequest& request) {
  if (request.kernel_name && *request.kernel_name) {
    std::string name = request.kernel_name;
    if (name.size() > 2 && name.front() == '(' && name.back() == ')') name = name.substr(1, name.size() - 2);
    return name;
  }
  Dl_info info{};
  if (dladdr(request.kernel, &info) && info.dli_sname) {
    int status = 0;
    char* demangled = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    std::string name = status == 0 && demangled ? demangled : info.dli_sname;
    std::free(demangled);
    return name;
  }
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "<kernel at %p>", request.kernel);
  return buffer;
}

std::string format_dim(const uint3& d) {
  char buffer[48];
  std::snprintf(buffer, sizeof buffer, "(%u,%u,%u)", d.x, d.y, d.z);
  return buffer;
}

std::string where_string(const std::source_location& where) {
  const char* file = where.file_name();
  const char* slash = std::strrchr(file, '/');
  return std::string(slash ? slash + 1 : file) + ":" + std::to_string(where.line());
}

// "kernel softmax_kernel block (3,0,0) thread (5,0,0)"
std::string context_string(const Worker& w, const Lane* lane) {
  std::string s = "kernel " + kernel_display_name(*w.launch->request) + " block " + format_dim(::blockIdx);
  if (lane) s += " thread " + format_dim(thread_index(*lane));
  return s;
}

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buffer, sizeof buffer, fmt, args);
  va_end(args);
  return buffer;
}

void record_diagnostic(const std::string& message) {
  std::lock_guard<std::mutex> lock(diagnostic_mutex());
  diagnostic_record() = message;
}

[[noreturn]] void fatal(const std::string& message) {
  std::fprintf(stderr, "[cuda_emu] error: %s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

// Misuse: fatal in strict mode, otherwise a warning (counted in stats().warnings).
void complain(const Worker& w, const Lane* lane, const std::string& what) {
  const std::string message = context_string(w, lane) + ": " + what;
  record_diagnostic(message);
  ++stats().warnings;
  if (w.launch->cfg.strict) {
    std::fprintf(stderr, "[cuda_emu] error: %s\n[cuda_emu] (EMU_STRICT=0 turns this into a warning)\n",
                 message.c_str());
    std::fflush(stderr);
    std::abort();
  }
  std::fprintf(stderr, "[cuda_emu] warning: %s\n", message.c_str());
}

const char* barrier_name(BarrierOp op) {
  switch (op) {
    case BarrierOp::Sync:
      return "__syncthreads()";
    case BarrierOp::Count:
      return "__syncthreads_count()";
    case BarrierOp::And:
      return "__syncthreads_and()";
    case BarrierOp::Or:
      return "__syncthreads_or()";
  }
  return "?";
}

inline bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

Worker& this_worker() {
  thread_local Worker worker;
  return worker;
}

[[noreturn, gnu::noinline, gnu::cold]] void outside_kernel(const char* what) {
  fatal(std::string(what) + " called outside a kernel");
}

inline Lane& lane_in_kernel(const char* what) {
  Lane* lane = current_lane();
  if (!lane || !t_worker) [[unlikely]]
    outside_kernel(what);
  return *lane;
}

// ------------------------------------------------------------------------------------------------
// Fatal-signal context: which emulated thread crashed.
// Called from a signal handler or a dying sanitizer: no allocation, a single write().
void print_crash_context(const char* what) {
  const Worker* w = t_worker;
  const Lane* lane = current_lane();
  if (!w || !lane || !w->launch) return;
  const LaunchRequest& request = *w->launch->request;
  const uint3 t = thread_index(*lane), b = ::blockIdx;
  char kernel[128];
  if (request.kernel_name && *request.kernel_name) {
    const char* name = request.kernel_name;
    const size_t length = std::strlen(name);
    const bool parenthesised = length > 2 && name[0] == '(' && name[length - 1] == ')';
    std::snprintf(kernel, sizeof kernel, "%.*s", static_cast<int>(parenthesised ? length - 2 : length),
                  parenthesised ? name + 1 : name);
  } else {
    std::snprintf(kernel, sizeof kernel, "<kernel at %p>", request.kernel);
  }
  char line[512];
  const int n = std::snprintf(line, sizeof line, "[cuda_emu] %s in kernel %s block (%u,%u,%u) thread (%u,%u,%u)\n",
                              what, kernel, b.x, b.y, b.z, t.x, t.y, t.z);
  if (n > 0) (void)!write(STDERR_FILENO, line, std::min(static_cast<size_t>(n), sizeof line - 1));
}

#if defined(EMU_ASAN)
void asan_death_callback() { print_crash_context("the sanitizer error above was raised"); }
void install_crash_reporting() {
  static std::once_flag once;
  std::call_once(once, [] { __sanitizer_set_death_callback(asan_death_callback); });
}
#else
struct sigaction g_previous_segv, g_previous_bus;

void crash_handler(int signal_number, siginfo_t* info, void*) {
  const Lane* lane = current_lane();
  const char* name = signal_number == SIGSEGV ? "SIGSEGV" : "SIGBUS";
  if (lane && lane->runner && info) {
    const char* address = static_cast<const char*>(info->si_addr);
    const Runner* r = lane->runner;
    if (address >= r->mapping && address < r->stack_lo) {
      char what[160];
      std::snprintf(what, sizeof what,
                    "%s: stack overflow (the guard page below this thread's %zu KB stack; raise EMU_STACK_KB)", name,
                    r->stack_bytes / 1024);
      print_crash_context(what);
    } else {
      char what[96];
      std::snprintf(what, sizeof what, "%s at address %p", name, info->si_addr);
      print_crash_context(what);
    }
  }
  // Hand the signal to whatever handled it before us (by default: terminate with a core dump).
  // A returning handler re-executes the faulting instruction, which then reaches the restored one.
  const struct sigaction& previous = signal_number == SIGSEGV ? g_previous_segv : g_previous_bus;
  sigaction(signal_number, &previous, nullptr);
  if (!(previous.sa_flags & SA_SIGINFO) && previous.sa_handler == SIG_DFL) raise(signal_number);
}

void install_crash_reporting() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action {};
    action.sa_sigaction = crash_handler;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&action.sa_mask);
    sigaction(SIGSEGV, &action, &g_previous_segv);
    sigaction(SIGBUS, &action, &g_previous_bus);
  });
}
#endif

// ------------------------------------------------------------------------------------------------
// Context switches.
[[noreturn]] void runner_main(Runner* runner);

#if defined(EMU_UCONTEXT)
thread_local Runner* t_starting_runner = nullptr;
void runner_entry_ucontext() { runner_main(t_starting_runner); }
#endif

// `color` (bytes below the top) staggers the stack tops: page-aligned tops would put the hot lines
// of every fiber in the same L1 sets, and switching among hundreds of fibers would thrash them.
void init_runner_context(Runner& r, size_t color) {
#if defined(EMU_UCONTEXT)
  getcontext(&r.context);
  r.context.uc_stack.ss_sp = r.stack_lo;
  r.context.uc_stack.ss_size = r.stack_bytes - color;
  r.context.uc_link = nullptr;
  makecontext(&r.context, runner_entry_ucontext, 0);
#else
  const uintptr_t top = reinterpret_cast<uintptr_t>(r.stack_lo + r.stack_bytes - color) & ~uintptr_t(15);
  void** sp = reinterpret_cast<void**>(top - 72);  // r15 r14 r13 r12 rbx rbp, return address, 2 pad
  sp[0] = sp[1] = nullptr;
  sp[2] = reinterpret_cast<void*>(&runner_main);  // r13: entry
  sp[3] = &r;                                     // r12: its argument
  sp[4] = sp[5] = nullptr;                        // rbx, rbp (a null frame pointer ends backtraces)
  sp[6] = reinterpret_cast<void*>(&emu_fiber_trampoline);
  sp[7] = sp[8] = nullptr;
  r.sp = sp;
#endif
}

// Scheduler -> runner; returns when the runner switches back.
void resume(Worker& w, Runner& r) {
  ++w.switches;
#if defined(EMU_ASAN)
  __sanitizer_start_switch_fiber(&w.sched_asan_fake_stack, r.stack_lo, r.stack_bytes);
#endif
#if defined(EMU_UCONTEXT)
  t_starting_runner = &r;
  swapcontext(&w.sched_context, &r.context);
#else
  emu_ctx_switch(&w.sched_sp, r.sp);
#endif
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(w.sched_asan_fake_stack, nullptr, nullptr);
#endif
}

// Runner -> scheduler; returns when the scheduler resumes this runner.
void suspend(Worker& w, Runner& r) {
#if defined(EMU_ASAN)
  __sanitizer_start_switch_fiber(&r.asan_fake_stack, w.sched_stack_lo, w.sched_stack_bytes);
#endif
#if defined(EMU_UCONTEXT)
  swapcontext(&r.context, &w.sched_context);
#else
  emu_ctx_switch(&r.sp, w.sched_sp);
#endif
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(r.asan_fake_stack, nullptr, nullptr);
#endif
}

constexpr size_t kRunnersPerArena = 64;

Runner& acquire_runner(Worker& w) {
  if (!w.idle_runners.empty()) {
    Runner* r = w.idle_runners.back();
    w.idle_runners.pop_back();
    return *r;
  }
  // Stacks come from arenas of kRunnersPerArena adjacent (guard page + stack) slots.
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t stack_bytes = (w.runner_stack_bytes + page - 1) / page * page, slot_bytes = stack_bytes + page;
  const size_t index = w.runners.size();
  if (index % kRunnersPerArena == 0) {
    const size_t bytes = slot_bytes * kRunnersPerArena;
    void* p =
        mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) fatal("mmap of " + std::to_string(bytes) + " bytes of fiber stacks failed");
    char* base = static_cast<char*>(p);
    // guard pages: a stack overflow faults instead of corrupting the neighbouring stack
    for (size_t i = 0; i < kRunnersPerArena; ++i) mprotect(base + i * slot_bytes, page, PROT_NONE);
    w.arenas.push_back({base, bytes});
  }
  Runner* r = &w.runners.emplace_back();
  r->stack_bytes = stack_bytes;
  r->mapping_bytes = slot_bytes;
  r->mapping = w.arenas.back().first + (index % kRunnersPerArena) * slot_bytes;
  r->stack_lo = r->mapping + page;
  init_runner_context(*r, (index * 5 % 64) * 64);  // 64 different cache-line offsets
  return *r;
}

void release_runner_stacks(Worker& w) {
  for (auto& [base, bytes] : w.arenas) {
#if defined(EMU_ASAN)
    ASAN_UNPOISON_MEMORY_REGION(base, bytes);
#endif
    munmap(base, bytes);
  }
  w.arenas.clear();
  w.runners.clear();
  w.idle_runners.clear();
}

Worker::Worker() {
#if !defined(EMU_ASAN)
  // Our SIGSEGV report must run on its own stack: a fiber stack overflow leaves none.
  stack_t current{};
  if (sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_DISABLE)) {
    const size_t bytes = 64 * 1024;
    signal_stack = std::malloc(bytes);
    stack_t alt{};
    alt.ss_sp = signal_stack;
    alt.ss_size = bytes;
    if (!signal_stack || sigaltstack(&alt, nullptr) != 0) {
      std::free(signal_stack);
      signal_stack = nullptr;
    }
  }
#endif
}

Worker::~Worker() {
  release_runner_stacks(*this);
#if !defined(EMU_ASAN)
  if (signal_stack) {
    stack_t disable{};
    disable.ss_flags = SS_DISABLE;
    sigaltstack(&disable, nullptr);
    std::free(signal_stack);
  }
#endif
}

// ------------------------------------------------------------------------------------------------
// Threads: start, finish, and the runner loop.
void enter_lane(Lane& lane) {
  t_thread = &lane;
  thread_index(lane, ::threadIdx);  // field by field: no store-forwarding stall in the kernel's reads
}

void bind(Runner& r, Lane& lane) {
  lane.state = LaneState::Running;
  lane.runner = &r;
  r.lane = &lane;
}

void finish_lane(Worker& w, Lane& lane) {
  lane.state = LaneState::Done;
  ++w.done_count;
  w.warps[lane.warp()].done |= 1u << lane.lane;
}

// The next entry of the current pass if the scheduler would start it right now.
Lane* claim_next_unstarted(Worker& w) {
  while (w.pos < w.n) {
    Lane& candidate = w.lanes[w.order[w.pos]];
    if (candidate.state == LaneState::Unstarted) {
      ++w.pos;
      return &candidate;
    }
    if (candidate.state == LaneState::Ready) return nullptr;  // the scheduler resumes its runner
    ++w.pos;                                                  // blocked or finished: skipped either way
  }
  return nullptr;
}

// Thrown by stop_thread() out of a faulting emulated thread's code; caught below its kernel call.
struct ThreadStopped {};

[[noreturn]] void runner_main(Runner* runner) {
  Worker& w = *t_worker;
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &w.sched_stack_lo, &w.sched_stack_bytes);
#endif
  for (;;) {
    const LaunchRequest& request = *w.launch->request;
    try {
      request.thunk(request.closure);
    } catch (const ThreadStopped&) {
      // the thread faulted (stop_thread): it ends here, as if it had returned
    }
    finish_lane(w, *runner->lane);
    if (w.launch->cfg.fast_path) {
      if (Lane* next = claim_next_unstarted(w)) {
        bind(*runner, *next);
        enter_lane(*next);
        continue;
      }
    }
    runner->lane = nullptr;
    w.idle_runners.push_back(runner);
    suspend(w, *runner);
  }
}

// ------------------------------------------------------------------------------------------------
// Warp operations.
// memcpy with the sizes warp values have, so that the common ones compile to plain moves.
inline void copy_value(void* to, const void* from, unsigned size) {
  switch (size) {
    case 4:
      std::memcpy(to, from, 4);
      break;
    case 8:
      std::memcpy(to, from, 8);
      break;
    case 2:
      std::memcpy(to, from, 2);
      break;
    case 16:
      std::memcpy(to, from, 16);
      break;
    default:
      std::memcpy(to, from, size);
  }
}

std::string describe_lane_wait(const Lane& lane) {
  switch (lane.state) {
    case LaneState::AtBarrier:
      return std::string("waiting at ") + barrier_name(lane.barrier_op) + " at " + where_string(lane.where);
    case LaneState::AtWarpOp:
      return std::string("waiting at ") + warp_op_name(lane.warp_op) + " at " + where_string(lane.where) +
             format(" with mask 0x%08x", lane.warp_mask);
    case LaneState::Done:
      return "exited";
    default:
      return "running";
  }
}

template <class T, class Combine>
unsigned reduce_lanes(const Lane* base, unsigned participants, Combine combine) {
  bool first = true;
  T acc{};
  for (unsigned bits = participants; bits; bits &= bits - 1) {
    T v;
    std::memcpy(&v, base[__builtin_ctz(bits)].warp_in, sizeof v);
    acc = first ? v : combine(acc, v);
    first = false;
  }
  unsigned out;
  std::memcpy(&out, &acc, sizeof out);
  return out;
}

// A warp-collective instruction reached by the lanes in `group`: all 32 lanes must take part, at
// one call site; then the instruction's own completion computes every lane's result.
void complete_collective(Worker& w, unsigned warp_index, Lane* base, unsigned group) {
  WarpCollective* records[32] = {};
  for (unsigned bits = group; bits; bits &= bits - 1) {
    const unsigned k = static_cast<unsigned>(__builtin_ctz(bits));
    std::memcpy(&records[k], base[k].warp_in, sizeof(WarpCollective*));
  }
  const unsigned first = static_cast<unsigned>(__builtin_ctz(group));
  const Lane& a = base[first];
  WarpCollective* const lead = records[first];
  if (group != 0xffffffffu) {
    complain(w, &a,
             format("%s at %s in warp %u is executed by lanes 0x%08x only; a .sync.aligned instruction needs all 32 "
                    "lanes of the warp, converged, at the same instruction (the other lanes %s)",
                    lead->instruction, where_string(a.where).c_str(), warp_index, group,
                    (w.warps[warp_index].done & ~group) ? "include exited lanes" : "are elsewhere"));
  }
  for (unsigned bits = group & ~(1u << first); bits; bits &= bits - 1) {
    const unsigned k = static_cast<unsigned>(__builtin_ctz(bits));
    if (records[k]->complete != lead->complete || !same_site(base[k].where, a.where)) {
      complain(w, &base[k],
               format("warp %u: lane %u executes %s at %s while lane %u executes %s at %s; a .sync.aligned "
                      "instruction must be the same instruction for every lane of the warp",
                      warp_index, k, records[k]->instruction, where_string(base[k].where).c_str(), first,
                      lead->instruction, where_string(a.where).c_str()));
      break;
    }
  }
  lead->complete(records);
}

// Completes the warp operations of the lanes in `ready` (all of whose mask lanes are waiting, or,
// when `forced`, a deadlock the caller has already reported).
void complete_warp_ops(Worker& w, unsigned warp_index, unsigned ready) {
  WarpState& ws = w.warps[warp_index];
  Lane* base = &w.lanes[static_cast<size_t>(warp_index) * 32];
  const unsigned live = ws.exist & ~ws.done;
  bool mismatch_reported = false;
  unsigned pending = ready;
  while (pending) {
    const unsigned first = static_cast<unsigned>(__builtin_ctz(pending));
    const Lane& a = base[first];
    const unsigned participants = a.warp_mask & live & ws.waiting;
    unsigned group = 1u << first;
    for (unsigned bits = participants & ~group; bits; bits &= bits - 1) {
      const unsigned k = static_cast<unsigned>(__builtin_ctz(bits));
      const Lane& b = base[k];
      if (b.warp_op == a.warp_op && b.warp_mask == a.warp_mask) {
        if (pending >> k & 1) group |= 1u << k;
      } else if (!mismatch_reported) {
        mismatch_reported = true;
        complain(w, &a,
                 format("%s at %s with mask 0x%08x names lane %u, which is at %s at %s with mask 0x%08x; the lanes "
                        "named by a mask must all execute the same warp operation with the same mask",
                        warp_op_name(a.warp_op), where_string(a.where).c_str(), a.warp_mask, k, warp_op_name(b.warp_op),
                        where_string(b.where).c_str(), b.warp_mask));
      }
    }
    switch (a.warp_op) {
      case WarpOp::Sync:
        break;
      case WarpOp::Collective:
        complete_collective(w, warp_index, base, group);
        break;
      case WarpOp::ShflIdx:
      case WarpOp::ShflUp:
      case WarpOp::ShflDown:
      case WarpOp::ShflXor:
        for (unsigned bits = group; bits; bits &= bits - 1) {
          Lane& lane = base[__builtin_ctz(bits)];
          const unsigned src = lane.warp_src;
          if (src == lane.lane) {
            copy_value(lane.warp_result, lane.warp_in, lane.warp_size);
          } else if (src < 32 && (participants >> src & 1)) {
            copy_value(lane.warp_result, base[src].warp_in, lane.warp_size);
          } else {
            const char* why = src >= 32 || !(lane.warp_mask >> src & 1) ? "is not in the mask"
                              : !(ws.exist >> src & 1)                  ? "does not exist (partial warp)"
                              : (ws.done >> src & 1)                    ? "has exited"
                                                                        : "is not at this operation";
            complain(w, &lane,
                     format("%s at %s (mask 0x%08x) reads lane %u, which %s; the value is undefined on a GPU",
                            warp_op_name(lane.warp_op), where_string(lane.where).c_str(), lane.warp_mask, src, why));
            copy_value(lane.warp_result, lane.warp_in, lane.warp_size);
          }
        }
        break;
      default: {
        unsigned result = 0;
        unsigned ballot = 0;
        for (unsigned bits = participants; bits; bits &= bits - 1) {
          const unsigned k = static_cast<unsigned>(__builtin_ctz(bits));
          int predicate;
          std::memcpy(&predicate, base[k].warp_in, sizeof predicate);
          if (predicate) ballot |= 1u << k;
        }
        switch (a.warp_op) {
          case WarpOp::Ballot:
            result = ballot;
            break;
          case WarpOp::Any:
            result = ballot != 0;
            break;
          case WarpOp::All:
            result = ballot == participants;
            break;
          case WarpOp::AddI32:
            result = reduce_lanes<int>(base, participants, [](int x, int y) {
              return static_cast<int>(static_cast<unsigned>(x) + static_cast<unsigned>(y));
            });
            break;
          case WarpOp::AddU32:
            result = reduce_lanes<unsigned>(base, participants, [](unsigned x, unsigned y) { return x + y; });
            break;
          case WarpOp::MinI32:
            result = reduce_lanes<int>(base, participants, [](int x, int y) { return std::min(x, y); });
            break;
          case WarpOp::MinU32:
            result = reduce_lanes<unsigned>(base, participants, [](unsigned x, unsigned y) { return std::min(x, y); });
            break;
          case WarpOp::MaxI32:
            result = reduce_lanes<int>(base, participants, [](int x, int y) { return std::max(x, y); });
            break;
          case WarpOp::MaxU32:
            result = reduce_lanes<unsigned>(base, participants, [](unsigned x, unsigned y) { return std::max(x, y); });
            break;
          case WarpOp::AndU32:
            result = reduce_lanes<unsigned>(base, participants, [](unsigned x, unsigned y) { return x & y; });
            break;
          case WarpOp::OrU32:
            result = reduce_lanes<unsigned>(base, participants, [](unsigned x, unsigned y) { return x | y; });
            break;
          case WarpOp::XorU32:
            result = reduce_lanes<unsigned>(base, participants, [](unsigned x, unsigned y) { return x ^ y; });
            break;
          case WarpOp::MatchAll: {
            result = participants;
            for (unsigned bits = participants; bits; bits &= bits - 1)
              if (std::memcmp(base[__builtin_ctz(bits)].warp_in, a.warp_in, a.warp_size) != 0) result = 0;
            break;
          }
          default:
            break;
        }
        for (unsigned bits = group; bits; bits &= bits - 1) {
          Lane& lane = base[__builtin_ctz(bits)];
          unsigned lane_result = result;
          if (a.warp_op == WarpOp::MatchAny) {
            lane_result = 0;
            for (unsigned others = participants; others; others &= others - 1) {
              const unsigned k = static_cast<unsigned>(__builtin_ctz(others));
              if (std::memcmp(base[k].warp_in, lane.warp_in, lane.warp_size) == 0) lane_result |= 1u << k;
            }
          }
          std::memcpy(lane.warp_result, &lane_result, sizeof lane_result);
        }
      }
    }
    pending &= ~group;
  }
  for (unsigned bits = ready; bits; bits &= bits - 1) base[__builtin_ctz(bits)].state = LaneState::Ready;
  ws.waiting &= ~ready;
  w.warp_waiting_count -= static_cast<unsigned>(__builtin_popcount(ready));
  ++w.warp_barriers;
}

// Releases every warp operation whose named (non-exited) lanes have all arrived.
bool release_warps(Worker& w) {
  bool any = false;
  for (unsigned wi = 0; wi < w.warps.size() && w.warp_waiting_count; ++wi) {
    const WarpState& ws = w.warps[wi];
    if (!ws.waiting) continue;
    const unsigned live = ws.exist & ~ws.done;
    const Lane* base = &w.lanes[static_cast<size_t>(wi) * 32];
    unsigned ready = 0;
    for (unsigned bits = ws.waiting; bits; bits &= bits - 1) {
      const unsigned l = static_cast<unsigned>(__builtin_ctz(bits));
      if ((base[l].warp_mask & live & ~ws.waiting) == 0) ready |= 1u << l;
    }
    if (ready) {
      complete_warp_ops(w, wi, ready);
      any = true;
    }
  }
  return any;
}

// Nothing can run and some warp operation waits for lanes that wait elsewhere.
void report_and_break_warp_deadlock(Worker& w) {
  for (unsigned wi = 0; wi < w.warps.size(); ++wi) {
    const WarpState& ws = w.warps[wi];
    if (!ws.waiting) continue;
    const Lane* base = &w.lanes[static_cast<size_t>(wi) * 32];
    const Lane& stuck = base[__builtin_ctz(ws.waiting)];
    const unsigned missing = stuck.warp_mask & ws.exist & ~ws.done & ~ws.waiting;
    const Lane& other = base[__builtin_ctz(missing ? missing : 1u)];
    complain(w, &stuck,
             format("deadlock: %s at %s (mask 0x%08x) waits for lanes 0x%08x of warp %u, which can never arrive: "
                    "lane %u is %s",
                    warp_op_name(stuck.warp_op), where_string(stuck.where).c_str(), stuck.warp_mask, missing, wi,
                    other.lane, describe_lane_wait(other).c_str()));
    break;
  }
  // Not strict: let the waiting lanes proceed with what has arrived.
  for (unsigned wi = 0; wi < w.warps.size(); ++wi)
    if (w.warps[wi].waiting) complete_warp_ops(w, wi, w.warps[wi].waiting);
}

// ------------------------------------------------------------------------------------------------
// The per-block scheduler.
void next_pass_order(Worker& w) {
  if (w.launch->cfg.schedule == Schedule::Random) shuffle(w.order, w.rng);
}

void release_block_barrier(Worker& w) {
  w.barrier_result_true = w.barrier_true;
  w.barrier_result_arrivals = w.barrier_arrivals;
  w.barrier_true = w.barrier_arrivals = 0;
  w.barrier_first = nullptr;
  w.barrier_divergence_reported = false;
  for (Lane& lane : w.lanes)
    if (lane.state == LaneState::AtBarrier) lane.state = LaneState::Ready;
  w.barrier_count = 0;
  ++w.block_barriers;
}

void fill_poison(Worker& w, void* address, size_t bytes) {
  if (w.launch->cfg.poison != Config::kPoisonOff) std::memset(address, w.launch->cfg.poison, bytes);
}

std::vector<unsigned char* (*)()>& extern_shared_registry() {
  static std::vector<unsigned char* (*)()> registry;
  return registry;
}

void run_block(Worker& w, unsigned long long linear_block) {
  const LaunchState& launch = *w.launch;
  const dim3 grid = launch.request->grid;
  ::blockIdx =
      make_uint3(static_cast<unsigned>(linear_block % grid.x), static_cast<unsigned>(linear_block / grid.x % grid.y),
                 static_cast<unsigned>(linear_block / (static_cast<unsigned long long>(grid.x) * grid.y)));
  ++w.block_epoch;
  const unsigned n = w.n;
  for (Lane& lane : w.lanes) lane.state = LaneState::Unstarted;
  for (WarpState& ws : w.warps) {
    ws.done = ~ws.exist;
    ws.waiting = 0;
  }
  w.done_count = w.barrier_count = w.warp_waiting_count = 0;
  w.barrier_first = nullptr;
  w.barrier_divergence_reported = false;
  w.barrier_true = w.barrier_arrivals = 0;
  const size_t dynamic_bytes = launch.request->shared_bytes;
  if (dynamic_bytes) {
    fill_poison(w, w.dynamic_smem, dynamic_bytes);
    for (auto storage : extern_shared_registry()) fill_poison(w, storage(), dynamic_bytes);
  }
  if (launch.cfg.schedule == Schedule::Random) {
    w.rng.state = (static_cast<uint64_t>(launch.cfg.seed) << 32) ^ linear_block;
    for (unsigned i = 0; i < n; ++i) w.order[i] = i;
    shuffle(w.order, w.rng);
  }

  for (;;) {
    for (w.pos = 0; w.pos < n;) {
      Lane& lane = w.lanes[w.order[w.pos++]];
      if (lane.state == LaneState::Unstarted) {
        Runner& r = acquire_runner(w);
        bind(r, lane);
        enter_lane(lane);
        resume(w, r);
      } else if (lane.state == LaneState::Ready) {
        lane.state = LaneState::Running;
        enter_lane(lane);
        resume(w, *lane.runner);
      }
    }
    t_thread = nullptr;
    if (w.done_count == n) break;
    if (w.warp_waiting_count) {
      if (!release_warps(w)) report_and_break_warp_deadlock(w);
    } else {
      release_block_barrier(w);
    }
    next_pass_order(w);
  }
}

// Runs blocks of the launch until none is left (one OS thread of the pool).
void run_blocks(LaunchState& launch) {
  Worker& w = this_worker();
  t_worker = &w;
  const LaunchRequest& request = *launch.request;
  w.launch = &launch;
  w.n = launch.threads_per_block;
  if (w.runner_stack_bytes != launch.cfg.stack_bytes) {
    release_runner_stacks(w);
    w.runner_stack_bytes = launch.cfg.stack_bytes;
  }
  w.lanes.assign(w.n, Lane{});
  for (unsigned i = 0; i < w.n; ++i) {
    Lane& lane = w.lanes[i];
    lane.linear = i;
    lane.lane = i & 31;
  }
  w.warps.assign((w.n + 31) / 32, WarpState{});
  for (unsigned wi = 0; wi < w.warps.size(); ++wi) {
    const unsigned count = std::min(32u, w.n - wi * 32);
    w.warps[wi].exist = count == 32 ? ~0u : (1u << count) - 1;
  }
  w.order.resize(w.n);
  for (unsigned i = 0; i < w.n; ++i) w.order[i] = launch.cfg.schedule == Schedule::Reverse ? w.n - 1 - i : i;
  // Exactly the requested size, so that ASan reports reads and writes past the end.
  void* smem = nullptr;
  if (posix_memalign(&smem, 128, request.shared_bytes) != 0) fatal("cannot allocate dynamic shared memory");
  w.dynamic_smem = static_cast<unsigned char*>(smem);
  t_dynamic_smem = w.dynamic_smem;
  ::blockDim = request.block;
  ::gridDim = request.grid;
  w.switches = w.block_barriers = w.warp_barriers = 0;

  uint64_t blocks_run = 0;
  for (;;) {
    // After a fault (a misaligned access) no further block starts, as on a GPU.
    if (launch.misaligned_accesses.load(std::memory_order_relaxed) != 0) break;
    const unsigned long long k = launch.next_block.fetch_add(1, std::memory_order_relaxed);
    if (k >= launch.blocks) break;
    const unsigned long long b = launch.cfg.schedule == Schedule::Reverse ? launch.blocks - 1 - k
                                 : launch.block_order.empty()             ? k
                                                                          : launch.block_order[k];
    run_block(w, b);
    ++blocks_run;
  }

  std::free(w.dynamic_smem);
  w.dynamic_smem = nullptr;
  t_dynamic_smem = nullptr;
  t_thread = nullptr;
  t_worker = nullptr;
  w.launch = nullptr;
  Stats& s = stats();
  s.blocks += blocks_run;
  s.threads += blocks_run * w.n;
  s.fiber_switches += w.switches;
  s.block_barriers += w.block_barriers;
  s.warp_barriers += w.warp_barriers;
}

// ------------------------------------------------------------------------------------------------
// OS-thread pool. Threads are created on demand and live for the whole process; after fork() (death
// tests) the child, which has none of them, starts a fresh pool.
class Pool {
 public:
  // Runs job(0) on the calling thread and job(1..workers-1) on pool threads; returns when all are done.
  void run(const std::function<void(int)>& job, int workers) {
    if (workers <= 1) {
      job(0);
      return;
    }
    {
      std::unique_lock<std::mutex> lock(mutex_);
      while (static_cast<int>(threads_.size()) < workers - 1) {
        const int id = static_cast<int>(threads_.size()) + 1;
        threads_.emplace_back([this, id] { loop(id); });
        threads_.back().detach();
      }
      job_ = &job;
      active_ = workers - 1;
      pending_ = active_;
      ++generation_;
    }
    wake_.notify_all();
    job(0);
    std::unique_lock<std::mutex> lock(mutex_);
    finished_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (id > active_) continue;
        job = job_;
      }
      (*job)(id);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) finished_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* job_ = nullptr;
  int active_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
};

Pool& pool() {
  static Pool* instance = nullptr;
  static pid_t owner = 0;
  if (!instance || owner != getpid()) {
    instance = new Pool();  // never destroyed: its threads wait until the process ends
    owner = getpid();
  }
  return *instance;
}

std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

cudaError_t validate(const LaunchRequest& r) {
  const dim3 b = r.block, g = r.grid;
  const unsigned long long threads = static_cast<unsigned long long>(b.x) * b.y * b.z;
  if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 || threads > 1024)
    return cudaErrorInvalidConfiguration;
  if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 2147483647u || g.y > 65535 || g.z > 65535)
    return cudaErrorInvalidConfiguration;
  if (r.shared_bytes > kMaxSharedBytesPerBlockOptin) return cudaErrorInvalidValue;
  if (r.shared_bytes > kDefaultSharedBytesPerBlock && r.shared_bytes > max_dynamic_shared_bytes(r.kernel))
    return cudaErrorInvalidValue;
  return cudaSuccess;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Entry points declared in cuda_emu.h.
namespace {
// The status of the kernels that the graph launches of this OS thread ran since the last
// take_graph_kernel_status (graph nodes run their kernels through run_grid, not launch_grid).
thread_local cudaError_t t_graph_kernel_status = cudaSuccess;

// Runs a validated launch to completion: cudaErrorMisalignedAddress if a thread made a misaligned
// access (reported by misaligned_access), else cudaSuccess.
cudaError_t run_grid(const LaunchRequest& request) {
  install_crash_reporting();

  std::lock_guard<std::mutex> lock(launch_mutex());
  LaunchState launch;
  launch.request = &request;
  launch.cfg = config();
  if (launch.cfg.fault_at_launch != 0 && stats().launches.load() + 1 == launch.cfg.fault_at_launch) {
    // EMU_FAULT_AT_LAUNCH: this kernel does not run and fails as a misaligned access would (a test of what a
    // kernel fault does to the code around it). Counted as a launch, so the fault happens once.
    ++stats().launches;
    const std::string message = format(
        "kernel %s: injected fault at launch %llu (EMU_FAULT_AT_LAUNCH): the launch fails "
        "with cudaErrorMisalignedAddress, as a misaligned access would",
        kernel_display_name(request).c_str(), static_cast<unsigned long long>(launch.cfg.fault_at_launch));
    record_diagnostic(message);
    std::fprintf(stderr, "[cuda_emu] error: %s\n", message.c_str());
    std::fflush(stderr);
    return cudaErrorMisalignedAddress;
  }
  const dim3 g = request.grid, b = request.block;
  launch.blocks = static_cast<unsigned long long>(g.x) * g.y * g.z;
  launch.threads_per_block = b.x * b.y * b.z;
  if (launch.cfg.schedule == Schedule::Random && launch.blocks > 1) {
    launch.block_order.resize(launch.blocks);
    for (unsigned long long i = 0; i < launch.blocks; ++i) launch.block_order[i] = i;
    SplitMix64 rng{launch.cfg.seed};
    shuffle(launch.block_order, rng);
  }
  const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  const unsigned long long wanted = launch.cfg.threads > 0 ? static_cast<unsigned>(launch.cfg.threads) : hardware;
  const int workers = static_cast<int>(std::min(launch.blocks, wanted));
  pool().run([&launch](int) { run_blocks(launch); }, workers);
  ++stats().launches;
  const uint64_t misaligned = launch.misaligned_accesses.load(std::memory_order_relaxed);
  if (misaligned == 0) return cudaSuccess;
  if (misaligned > 1)
    std::fprintf(stderr, "[cuda_emu] %llu misaligned accesses in this launch of %s; the first is reported above\n",
                 static_cast<unsigned long long>(misaligned), kernel_display_name(request).c_str());
  return cudaErrorMisalignedAddress;
}
}  // namespace

cudaError_t take_graph_kernel_status() {
  const cudaError_t status = t_graph_kernel_status;
  t_graph_kernel_status = cudaSuccess;
  return status;
}

cudaError_t launch_grid(const LaunchRequest& request) {
  if (t_thread) fatal("a kernel launched another kernel (dynamic parallelism is not emulated)");
  bool capturing = false;
  if (const cudaError_t status = stream_work(request.stream, &capturing); status != cudaSuccess)
    return record_error(status);
  if (const cudaError_t status = validate(request); status != cudaSuccess) {
    if (capturing) invalidate_capture_of(request.stream);
    return record_error(status);
  }
  if (capturing) {
    // The graph keeps its own copy of the arguments, as CUDA's kernel node does.
    std::shared_ptr<void> closure(request.clone(request.closure), request.destroy);
    LaunchRequest replay = request;
    replay.closure = closure.get();
    return record_error(record_node(request.stream, cudaGraphNodeTypeKernel, [replay, closure] {
      if (const cudaError_t status = run_grid(replay); status != cudaSuccess) t_graph_kernel_status = status;
    }));
  }
  return record_error(run_grid(request));
}

// Cold paths out of line: they keep the synchronisation functions' frames (and cache footprint) small.
[[gnu::noinline, gnu::cold]] void report_divergent_barrier(Worker& w, const Lane& lane) {
  w.barrier_divergence_reported = true;
  const Lane& first = *w.barrier_first;
  complain(w, &lane,
           format("divergent barrier: %s at %s, while thread (%u,%u,%u) waits at %s at %s; every thread of a block "
                  "must reach the same __syncthreads()",
                  barrier_name(lane.barrier_op), where_string(lane.where).c_str(), thread_index(first).x,
                  thread_index(first).y, thread_index(first).z, barrier_name(first.barrier_op),
                  where_string(first.where).c_str()));
}

[[gnu::noinline, gnu::cold]] void report_lane_outside_mask(Worker& w, const Lane& lane, unsigned mask,
                                                           const char* intrinsic, const std::source_location& where) {
  complain(w, &lane,
           format("%s at %s: mask 0x%08x does not include the calling lane %u", intrinsic, where_string(where).c_str(),
                  mask, lane.lane));
}

int block_barrier(BarrierOp op, int predicate, const std::source_location& where) {
  Lane& lane = lane_in_kernel(barrier_name(op));
  Worker& w = *t_worker;
  lane.barrier_op = op;
  lane.where = where;
  if (!w.barrier_first) {
    w.barrier_first = &lane;
  } else if ((!same_site(w.barrier_first->where, where) || w.barrier_first->barrier_op != op) &&
             !w.barrier_divergence_reported) [[unlikely]] {
    report_divergent_barrier(w, lane);
  }
  ++w.barrier_arrivals;
  w.barrier_true += predicate != 0;
  lane.state = LaneState::AtBarrier;
  ++w.barrier_count;
  suspend(w, *lane.runner);
  switch (op) {
    case BarrierOp::Sync:
      return 0;
    case BarrierOp::Count:
      return w.barrier_result_true;
    case BarrierOp::And:
      return w.barrier_result_true == w.barrier_result_arrivals;
    case BarrierOp::Or:
      return w.barrier_result_true != 0;
  }
  return 0;
}

void warp_op(WarpOp op, unsigned mask, unsigned src_lane, const void* value, unsigned size, void* result,
             const std::source_location& where) {
  const char* intrinsic = warp_op_name(op);
  Lane& lane = lane_in_kernel(intrinsic);
  Worker& w = *t_worker;
  const unsigned self = 1u << lane.lane;
  if (!(mask & self)) [[unlikely]] {
    report_lane_outside_mask(w, lane, mask, intrinsic, where);
    mask |= self;
  }
  lane.warp_op = op;
  lane.warp_mask = mask;
  lane.warp_src = src_lane;
  lane.warp_size = static_cast<uint8_t>(size);
  lane.warp_result = result;
  lane.where = where;
  if (size) copy_value(lane.warp_in, value, size);
  w.warps[lane.warp()].waiting |= self;
  lane.state = LaneState::AtWarpOp;
  ++w.warp_waiting_count;
  suspend(w, *lane.runner);  // completing the operation wrote *result
}

void warp_collective(WarpCollective* record, const std::source_location& where) {
  warp_op(WarpOp::Collective, 0xffffffffu, 0, &record, sizeof record, nullptr, where);
}

void report_misuse(const char* what, const std::source_location& where) {
  const Lane& lane = lane_in_kernel(what);
  complain(*t_worker, &lane, format("%s at %s (warp %u)", what, where_string(where).c_str(), lane.warp()));
}

bool in_kernel() { return current_lane() && t_worker && t_worker->launch; }

void stop_thread() {
  lane_in_kernel("stop_thread()");
  throw ThreadStopped{};
}

void misaligned_access(const void* address, size_t alignment, const char* access, const char* file, unsigned line) {
  const Lane& lane = lane_in_kernel(access);
  LaunchState& launch = *t_worker->launch;
  if (launch.misaligned_accesses.fetch_add(1, std::memory_order_relaxed) != 0) return;
  const char* slash = std::strrchr(file, '/');
  const std::string message =
      context_string(*t_worker, &lane) +
      format(
          ": misaligned address %p: %s needs %zu-byte alignment (the address is %zu bytes past a multiple of "
          "%zu) at %s:%u; the launch fails with cudaErrorMisalignedAddress, as on a GPU",
          address, access, alignment, static_cast<size_t>(reinterpret_cast<uintptr_t>(address) % alignment), alignment,
          slash ? slash + 1 : file, line);
  record_diagnostic(message);
  std::fprintf(stderr, "[cuda_emu] error: %s\n", message.c_str());
  std::fflush(stderr);
}

uint64_t block_epoch() {
  lane_in_kernel("block_epoch()");
  return t_worker->block_epoch;
}

unsigned active_mask() {
  const Lane& lane = lane_in_kernel("__activemask()");
  const WarpState& ws = t_worker->warps[lane.warp()];
  return ws.exist & ~ws.done;
}

void poison_static_shared(void* address, size_t bytes) {
  lane_in_kernel("EMU_POISON_SHARED");
  Worker& w = *t_worker;
  for (auto& entry : w.poisoned_static) {
    if (entry.first != address) continue;
    if (entry.second != w.block_epoch) {
      entry.second = w.block_epoch;
      fill_poison(w, address, bytes);
    }
    return;
  }
  w.poisoned_static.emplace_back(address, w.block_epoch);
  fill_poison(w, address, bytes);
}

void register_extern_shared(unsigned char* (*storage)()) { extern_shared_registry().push_back(storage); }

void trap(const char* what, const std::source_location& where) {
  const Lane* lane = current_lane();
  if (lane && t_worker && t_worker->launch)
    fatal(context_string(*t_worker, lane) + ": " + what + " at " + where_string(where));
  fatal(std::string(what) + " at " + where_string(where));
}

}  // namespace detail
}  // namespace emu

// ------------------------------------------------------------------------------------------------
// Alignment of every load and store of kernel code. Kernel sources are compiled with
// -fsanitize=alignment (CMakeLists.txt, coco_cuda_sources): before each access through a pointer or
// reference the compiler checks the address against the alignment of the accessed type (16 for
// float4 and the 16-byte packs of kernels/vector_access.cuh, 4 for float, ...) and calls this handler
// when it fails. The layout of its arguments is the UBSan runtime ABI that GCC and Clang share.
// Inside a kernel it is a GPU fault (emu::detail::misaligned_access); anything else (host code of a
// kernel source, or the null and object-size checks of a -DCOCO_SANITIZE=ON build) goes on to the
// UBSan runtime when one is linked (this definition takes precedence over the runtime's), and is
// fatal otherwise.
namespace {
struct UbsanSourceLocation {
  const char* file;
  uint32_t line, column;
};
struct UbsanTypeDescriptor {
  uint16_t kind, info;
  char name[1];
};
struct UbsanTypeMismatchData {
  UbsanSourceLocation location;
  const UbsanTypeDescriptor* type;
  unsigned char log_alignment;
  unsigned char check_kind;
};
using UbsanTypeMismatchHandler = void (*)(UbsanTypeMismatchData*, uintptr_t);

// UBSan's TypeCheckKind, as a phrase for the diagnostic.
const char* type_check_phrase(unsigned char kind) {
  static const char* const phrases[] = {
      "load of", "store to", "reference binding to", "member access within", "member call on", "constructor call on"};
  return kind < sizeof phrases / sizeof phrases[0] ? phrases[kind] : "access to";
}
}  // namespace

extern "C" void __ubsan_handle_type_mismatch_v1(UbsanTypeMismatchData* data, uintptr_t pointer) {
  const uintptr_t alignment = uintptr_t{1} << data->log_alignment;
  const bool misaligned = pointer != 0 && (pointer & (alignment - 1)) != 0;
  if (misaligned && emu::detail::in_kernel()) {
    const std::string what = std::string(type_check_phrase(data->check_kind)) + " " + data->type->name;
    emu::detail::misaligned_access(reinterpret_cast<const void*>(pointer), alignment, what.c_str(), data->location.file,
                                   data->location.line);
    emu::detail::stop_thread();
  }
  static const auto runtime =
      reinterpret_cast<UbsanTypeMismatchHandler>(dlsym(RTLD_NEXT, "__ubsan_handle_type_mismatch_v1"));
  if (runtime) return runtime(data, pointer);
  std::fprintf(stderr, "[cuda_emu] error: %s %s at address %p (alignment %zu) in host code at %s:%u\n",
               type_check_phrase(data->check_kind), data->type->name, reinterpret_cast<const void*>(pointer),
               static_cast<size_t>(alignment), data->location.file, data->location.line);
  std::abort();
}

#endif  // COCO_CUDA_EMULATED || EMU_STANDALONE
