// Run-time control and introspection of the SIMT emulator (emulated mode only): scheduling policy,
// shared-memory poisoning, misuse strictness, and counters. Plain C++ (no CUDA macros), so host
// code and tests may include it; the functions are defined in engine/simt/*.cpp, which are compiled
// only when COCO_CUDA_EMULATED is set.
//
// Environment (read once, at first use; a test may change the values at run time through
// ScopedConfig / ScopedSchedule):
//   EMU_SCHEDULE = forward | reverse | random   order in which the threads of a block (and the blocks
//                                               of a grid) run between synchronisation points
//   EMU_SEED     = n              seed of the random schedule (per block: seed and block index)
//   EMU_POISON   = 0xFF | 0x7F | any byte | off   byte written over dynamic shared memory (and over
//                                               static __shared__ arrays registered with
//                                               COCO_POISON_SHARED) when a block starts
//   EMU_STRICT   = 1 | 0          misuse (divergent __syncthreads, warp-sync deadlock, shuffles from
//                                 lanes outside the mask, ...) aborts (1, default) or warns (0); a
//                                 misaligned access is not misuse but a fault, which fails the launch
//                                 with cudaErrorMisalignedAddress either way
//   EMU_THREADS  = n              OS threads that run blocks (0 or unset: hardware concurrency)
//   EMU_STACK_KB = n              stack of each emulated thread (default 64)
//   EMU_FAST_PATH = 1 | 0         consecutive threads of a pass share one fiber without switching
//   EMU_FAULT_AT_LAUNCH = n       fault injection for tests: the kernel that would be launch number n (1-based, as
//                                 Stats::launches counts them, kernels of graph replays included) does not run and
//                                 fails as a misaligned access would (cudaErrorMisalignedAddress, sticky); 0: never
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace emu {

enum class Schedule : uint8_t { Forward, Reverse, Random };

struct Config {
  Schedule schedule = Schedule::Forward;
  uint32_t seed = 1;
  int poison = 0xFF;  // byte value 0..255, or kPoisonOff
  bool strict = true;
  int threads = 0;  // OS threads for blocks; 0 = std::thread::hardware_concurrency()
  size_t stack_bytes = 64 * 1024;
  bool fast_path = true;
  uint64_t fault_at_launch = 0;  // EMU_FAULT_AT_LAUNCH (0: no injected fault)

  static constexpr int kPoisonOff = -1;
};

// The process-wide configuration (initialised from the environment on first use; an invalid value
// throws std::invalid_argument naming the variable). Launches take a snapshot, so change it only
// between launches, from the thread that launches.
Config& config();

// Saves the configuration and restores it when the scope ends:
//   emu::ScopedConfig scope;  scope->strict = false;  scope->poison = 0x7F;
class ScopedConfig {
 public:
  ScopedConfig() : saved_(config()) {}
  explicit ScopedConfig(const Config& replacement) : saved_(config()) { config() = replacement; }
  ~ScopedConfig() { config() = saved_; }
  ScopedConfig(const ScopedConfig&) = delete;
  ScopedConfig& operator=(const ScopedConfig&) = delete;
  Config* operator->() { return &config(); }
  const Config& saved() const { return saved_; }

 private:
  Config saved_;
};

// Sets the schedule (and seed, and optionally the poison byte) for one scope.
class ScopedSchedule {
 public:
  explicit ScopedSchedule(Schedule schedule, uint32_t seed = 1) {
    config().schedule = schedule;
    config().seed = seed;
  }
  ScopedSchedule(Schedule schedule, uint32_t seed, int poison) : ScopedSchedule(schedule, seed) {
    config().poison = poison;
  }

 private:
  ScopedConfig scope_;
};

// "forward", "reverse", "random(seed 7)" and, with the poison byte, "reverse, poison 0x7F".
std::string describe_schedule(Schedule schedule, uint32_t seed);
std::string describe(const Config& config);

// Monotonic counters; tests compare values before and after the code they exercise.
struct Stats {
  // launches and scheduling
  std::atomic<uint64_t> launches{0}, blocks{0}, threads{0}, fiber_switches{0}, block_barriers{0}, warp_barriers{0};
  // detected misuse (in strict mode the process aborts before the counter matters)
  std::atomic<uint64_t> warnings{0};
  // device memory: successful cudaMalloc/cudaMallocAsync and cudaFree/cudaFreeAsync of non-null pointers
  std::atomic<uint64_t> device_mallocs{0}, device_frees{0};
  std::atomic<uint64_t> device_bytes_live{0}, device_bytes_peak{0};
  // pinned host memory: cudaMallocHost/cudaHostAlloc and cudaFreeHost
  std::atomic<uint64_t> host_mallocs{0}, host_frees{0};
};
Stats& stats();

// Why the emulated cuBLASLt (engine/simt/emu_cublaslt.cpp) last refused a call on this thread, e.g.
// "matrix A: leading dimension 7 < 33 (rows of a COL-order 33 x 7 matrix)"; "" if it never did.
std::string cublaslt_last_error();

// A kernel fault (cudaErrorMisalignedAddress) is sticky, as on a GPU, whose context it leaves unusable: every later
// call that does device work fails with it, and cudaGetLastError returns it without clearing it. A GPU process must
// exit; tests that provoke a fault on purpose start over with this (the emulated memory and objects are intact).
void clear_sticky_error();
// clear_sticky_error() when the scope ends: a test that provokes a fault declares one first.
class StickyErrorScope {
 public:
  StickyErrorScope() = default;
  ~StickyErrorScope() { clear_sticky_error(); }
  StickyErrorScope(const StickyErrorScope&) = delete;
  StickyErrorScope& operator=(const StickyErrorScope&) = delete;
};

// The message of the most recent misuse diagnostic ("" if none), e.g.
// "kernel softmax_kernel block (3,0,0) thread (5,0,0): __syncthreads() reached at different call sites ...".
std::string last_diagnostic();

}  // namespace emu
