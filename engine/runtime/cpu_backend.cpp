#include "engine/runtime/cpu_backend.h"

#include <dlfcn.h>
#include <sched.h>

#include <atomic>
#include <condition_variable>
#include <thread>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace coco::runtime::cpu {
namespace {

// The OpenBLAS entry points looked up at run time, so the engine links with any CBLAS and reports
// "unknown" for one that is not OpenBLAS.
struct OpenBlasApi {
  char* (*get_config)() = nullptr;
  char* (*get_corename)() = nullptr;
  void (*set_num_threads)(int) = nullptr;
  int (*get_parallel)() = nullptr;     // 0 sequential, 1 pthreads, 2 OpenMP
  void (*dynamic_init)() = nullptr;    // DYNAMIC_ARCH: picks the kernel table (OPENBLAS_CORETYPE first)
  void (*dynamic_quit)() = nullptr;    // DYNAMIC_ARCH: forgets it
  int (*thread_shutdown)() = nullptr;  // joins the pthreads build's worker threads (restarted on demand)
  int* server_avail = nullptr;         // non-zero while those workers run
};

const OpenBlasApi& openblas() {
  static const OpenBlasApi api = [] {
    OpenBlasApi a;
    a.get_config = reinterpret_cast<char* (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
    a.get_corename = reinterpret_cast<char* (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
    a.set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    a.get_parallel = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
    a.dynamic_init = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
    a.dynamic_quit = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
    a.thread_shutdown = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "blas_thread_shutdown_"));
    a.server_avail = static_cast<int*>(dlsym(RTLD_DEFAULT, "blas_server_avail"));
    return a;
  }();
  return api;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// f32 GEMM vector width of an OpenBLAS x86-64 core type: AVX-512 and AVX2 + FMA kernels; every
// other core type (Prescott ... Nehalem, Sandybridge, the AMD cores before Excavator) is treated as
// 128-bit SSE code. Non-x86 names (ARM64 cores) count as native.
int openblas_kernel_bits(const std::string& core) {
  const std::string c = lower(core);
  if (c == "skylakex" || c == "cooperlake" || c == "sapphirerapids") return 512;
  if (c == "haswell" || c == "zen" || c == "excavator") return 256;
  static const char* sse_cores[] = {"unknown",    "katmai",       "coppermine", "northwood",  "prescott", "banias",
                                    "atom",       "core2",        "penryn",     "dunnington", "nehalem",  "athlon",
                                    "opteron",    "opteron_sse3", "barcelona",  "nano",       "bobcat",   "bulldozer",
                                    "piledriver", "steamroller",  "sandybridge"};
  for (const char* s : sse_cores)
    if (c == s) return 128;
  return 0;
}

// Cores granted by a cgroup CPU quota (v2 cpu.max "QUOTA PERIOD", v1 cfs files); 0 when unlimited.
int cgroup_quota_cores() {
  std::ifstream v2("/sys/fs/cgroup/cpu.max");
  std::string quota, period;
  if (v2 >> quota >> period) {
    if (quota == "max") return 0;
    const double q = std::atof(quota.c_str()), p = std::atof(period.c_str());
    return q > 0 && p > 0 ? std::max(1, static_cast<int>(std::ceil(q / p))) : 0;
  }
  std::ifstream q1("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), p1("/sys/fs/cgroup/cpu/cpu.cfs_period_us");
  double q = 0, p = 0;
  if (q1 >> q && p1 >> p && q > 0 && p > 0) return std::max(1, static_cast<int>(std::ceil(q / p)));
  return 0;
}

// The BLAS runs one thread per call: kernels/matmul.cpp splits each GEMM into fixed panels on the
// CPU pool, which keeps GEMMs bitwise independent of the thread count and leaves one set of threads.
void single_threaded_blas() {
  if (openblas().set_num_threads) openblas().set_num_threads(1);
}

// A pthreads OpenBLAS starts its worker threads when it loads, and each busy-waits (sched_yield) for
// about 0.1 s before it sleeps: CPU time taken from the pool's threads on a small machine. The BLAS
// runs single-threaded calls only (above), so the workers are never used: join them. OpenBLAS starts
// them again by itself should a multi-threaded call come.
void stop_idle_blas_threads() {
  const OpenBlasApi& api = openblas();
  if (api.thread_shutdown && api.get_parallel && api.get_parallel() == 1) api.thread_shutdown();
}

std::mutex configure_mutex;
std::atomic<int> thread_count{0};  // 0: not yet set
std::string kernel_selection;      // guarded by configure_mutex
bool configured = false;

// Re-selects a generic OpenBLAS kernel on an AVX2 / AVX-512 CPU (see the header). Returns how the
// kernel was chosen.
std::string select_blas_kernel() {
  const OpenBlasApi& api = openblas();
  if (!api.get_corename) return "";
  const std::string chosen = api.get_corename();
  if (const char* forced = std::getenv("OPENBLAS_CORETYPE"); forced && *forced)
    return std::string("by OPENBLAS_CORETYPE=") + forced;
  const int cpu_bits = cpu_vector_bits(cpu_features());
  const int kernel_bits = openblas_kernel_bits(chosen);
  if (kernel_bits == 0 || kernel_bits >= 256 || cpu_bits < 256) return "by OpenBLAS's cpuid";
  const std::string target = cpu_bits >= 512 ? "SKYLAKEX" : "HASWELL";
  if (!reselect_openblas_kernel(target))
    return "by OpenBLAS's cpuid; it chose " + chosen + " (generic) and cannot be re-selected in this build";
  return "by cocolm: OpenBLAS chose the generic " + chosen + " kernel for this CPU, which has " +
         cpu_features().describe();
}

// The pool behind parallel_for. Worker w (1..) runs range w of each job; the caller runs range 0 and
// then waits for the others. A job is published by bumping `generation_`; workers spin on it for a
// short while (the next kernel usually follows within microseconds) and then sleep on the condition
// variable.
class Pool {
 public:
  static Pool& instance() {
    static Pool pool;
    return pool;
  }

  void run(int64_t ranges, void (*task)(void*, int64_t), void* context) {
    if (on_worker || in_job) {  // a nested loop: run it inline
      for (int64_t i = 0; i < ranges; ++i) task(context, i);
      return;
    }
    std::lock_guard<std::mutex> caller(caller_mutex_);  // one job at a time
    // The caller runs range 0 itself: a parallel loop inside it must not take caller_mutex_ again.
    struct InJob {
      InJob() { in_job = true; }
      ~InJob() { in_job = false; }
    } in_job_scope;
    grow(static_cast<int>(ranges) - 1);
    task_.store(task, std::memory_order_relaxed);
    context_.store(context, std::memory_order_relaxed);
    ranges_.store(ranges, std::memory_order_relaxed);
    pending_.store(ranges - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(sleep_mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    task(context, 0);
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin)
      if (spin > 2000) std::this_thread::yield();
  }

  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(sleep_mutex_);
      stopping_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
  }

 private:
  static thread_local bool on_worker;
  static thread_local bool in_job;  // this thread is the caller of a running job

  void grow(int workers) {
    while (static_cast<int>(workers_.size()) < workers) {
      const int64_t index = static_cast<int64_t>(workers_.size()) + 1;
      // The generation before this job's bump: a worker that starts late must still take the job.
      const uint64_t before = generation_.load();
      workers_.emplace_back([this, index, before] { work(index, before); });
    }
  }

  void work(int64_t index, uint64_t seen) {
    on_worker = true;
    for (;;) {
      // About 50 microseconds of polling before sleeping.
      for (int spin = 0; spin < 20000 && generation_.load(std::memory_order_acquire) == seen; ++spin) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lock(sleep_mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      if (stopping_) return;
      // A worker outside the job (index >= ranges) may read while the caller already publishes the
      // next one; the second generation check discards such a mixed read (the loop then sees the new
      // generation at once). A worker inside the job cannot race: the caller waits for it.
      const int64_t ranges = ranges_.load();
      const auto task = task_.load();
      void* const context = context_.load();
      if (generation_.load(std::memory_order_acquire) != seen) continue;
      if (index < ranges) {
        task(context, index);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::mutex caller_mutex_, sleep_mutex_;
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> pending_{0};
  std::atomic<void (*)(void*, int64_t)> task_{nullptr};
  std::atomic<void*> context_{nullptr};
  std::atomic<int64_t> ranges_{0};
  bool stopping_ = false;  // written under sleep_mutex_ before the last generation bump
};

thread_local bool Pool::on_worker = false;
thread_local bool Pool::in_job = false;

}  // namespace

namespace detail {
void run_ranges(int64_t ranges, void (*task)(void*, int64_t), void* context) {
  Pool::instance().run(ranges, task, context);
}
}  // namespace detail

int available_cores() {
  int cores = 0;
  cpu_set_t mask;
  CPU_ZERO(&mask);
  if (sched_getaffinity(0, sizeof(mask), &mask) == 0) cores = CPU_COUNT(&mask);
  if (cores <= 0) cores = 1;
  if (const int quota = cgroup_quota_cores(); quota > 0) cores = std::min(cores, quota);
  return cores;
}

void set_threads(int n) {
  if (n < 0)
    throw std::invalid_argument("runtime::cpu::set_threads: thread count must be >= 0, got " + std::to_string(n));
  if (n == 0) n = available_cores();
  thread_count.store(n);
  single_threaded_blas();
  stop_idle_blas_threads();  // openblas_set_num_threads starts them again
}

int threads() {
  const int n = thread_count.load(std::memory_order_relaxed);
  if (n > 0) return n;
  configure();  // first use: the cores the process may use, and the BLAS set up
  return std::max(1, thread_count.load());
}

std::string CpuFeatures::describe() const {
  std::string s;
  const auto add = [&](const char* what) { s += (s.empty() ? "" : ", ") + std::string(what); };
  if (avx512) add("AVX-512 (F/BW/DQ/VL)");
  if (avx2) add("AVX2");
  if (fma) add("FMA");
  return s.empty() ? "no AVX2/FMA/AVX-512" : s;
}

CpuFeatures cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
  return f;
}

int cpu_vector_bits(const CpuFeatures& f) {
  if (f.avx512) return 512;
  if (f.avx2 && f.fma) return 256;
  return 128;
}

std::string cpu_model() {
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(colon + 1);
        name.erase(0, name.find_first_not_of(" \t"));
        return name;
      }
    }
  }
  return "unknown CPU";
}

bool reselect_openblas_kernel(const std::string& core) {
  const OpenBlasApi& api = openblas();
  if (!api.dynamic_init || !api.dynamic_quit || !api.get_corename) return false;
  const char* previous = std::getenv("OPENBLAS_CORETYPE");
  const std::string saved = previous ? previous : "";
  setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
  api.dynamic_quit();
  api.dynamic_init();
  if (previous)
    setenv("OPENBLAS_CORETYPE", saved.c_str(), 1);
  else
    unsetenv("OPENBLAS_CORETYPE");
  return lower(api.get_corename()) == lower(core);
}

BlasInfo blas_info() {
  BlasInfo info;
  const OpenBlasApi& api = openblas();
  if (!api.get_config) {
    info.library = "CBLAS (not OpenBLAS: library and kernel unknown)";
    info.kernel_vector_bits = 0;
    return info;
  }
  info.library = api.get_config();
  info.kernel = api.get_corename ? api.get_corename() : "";
  info.kernel_vector_bits = openblas_kernel_bits(info.kernel);
  info.openmp = api.get_parallel && api.get_parallel() == 2;
  std::lock_guard<std::mutex> lock(configure_mutex);
  info.selection = kernel_selection.empty() ? "by OpenBLAS's cpuid" : kernel_selection;
  return info;
}

void configure() {
  std::lock_guard<std::mutex> lock(configure_mutex);
  if (configured) return;
  configured = true;
  kernel_selection = select_blas_kernel();
  if (thread_count.load() == 0) {
    thread_count.store(available_cores());
    single_threaded_blas();
  }
  stop_idle_blas_threads();
}

bool blas_worker_threads_running() {
  const OpenBlasApi& api = openblas();
  return api.server_avail && *api.server_avail != 0;
}

std::string report() {
  configure();
  const BlasInfo blas = blas_info();
  std::ostringstream s;
  s << "CPU backend: " << threads() << " thread" << (threads() == 1 ? "" : "s") << " of " << available_cores()
    << " core" << (available_cores() == 1 ? "" : "s") << " (" << cpu_model() << "; " << cpu_features().describe()
    << "); BLAS " << blas.library;
  if (!blas.kernel.empty()) s << ", kernel " << blas.kernel << " (" << blas.selection << ")";
  s << "; kernels and GEMM panels (single-threaded BLAS calls) on cocolm's thread pool";
  return s.str();
}

}  // namespace coco::runtime::cpu
