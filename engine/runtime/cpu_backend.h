// The CPU backend's execution resources: how many threads its kernels and the BLAS use, which BLAS
// and which BLAS kernel the process runs, and a deterministic parallel loop for the CPU kernels.
//
// Threads. A small pool (the calling thread plus threads() - 1 workers) runs the CPU kernels'
// parallel loops and the GEMMs: kernels/matmul.cpp splits every GEMM into fixed panels, each one
// single-threaded BLAS call, so there is one set of threads and never two pools competing for the
// cores. Workers spin briefly for the next loop (kernels come back to back) and then sleep, so an
// idle backend does not hold cores. OpenMP was measured and not taken: with libgomp's default active
// waiting its spinning team halved the 2-thread step next to OpenBLAS's pthreads, and OMP_WAIT_POLICY
// cannot be set once the library is loaded. set_threads(0) picks the cores this process may use:
// the affinity mask, capped by a cgroup CPU quota.
//
// Determinism. parallel_for hands each thread a contiguous range of items; the kernels built on it
// compute every item independently of the range it falls in, reductions add fixed-size blocks in
// block order (parallel_block_sums), and GEMM panels depend on the shape alone, so results are
// bitwise the same for every thread count. (OpenBLAS's own threading is not: it splits by thread
// count, and 1 and 2 threads round differently.)
//
// BLAS kernel. OpenBLAS built with DYNAMIC_ARCH picks its kernels from cpuid and falls back to
// generic SSE3 code ("Prescott") on a processor it does not know, several times slower on an AVX2 /
// AVX-512 CPU. configure() checks the kernel OpenBLAS chose against the vector units cpuid reports
// and, when OpenBLAS chose a generic one and the user did not set OPENBLAS_CORETYPE, re-selects the
// Haswell (AVX2 + FMA) or SkylakeX (AVX-512) kernels. blas_report() says what runs.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace coco::runtime::cpu {

// Cores this process may run on: the affinity mask, capped by the cgroup v2 / v1 CPU quota. >= 1.
int available_cores();

// Threads of the CPU kernels and the BLAS from now on; 0 means available_cores(). Throws
// std::invalid_argument for n < 0.
void set_threads(int n);
// The current thread count; the first call without set_threads runs configure().
int threads();

// Vector units of this CPU by cpuid.
struct CpuFeatures {
  bool avx2 = false, fma = false, avx512 = false;  // avx512: F, BW, DQ and VL
  std::string describe() const;                    // "AVX-512 (F/BW/DQ/VL), AVX2, FMA"
};
CpuFeatures cpu_features();
// The processor's model name (/proc/cpuinfo "model name", else the cpuid brand string).
std::string cpu_model();

struct BlasInfo {
  std::string library;     // "OpenBLAS 0.3.21 ..." (openblas_get_config) or "CBLAS (unknown library)"
  std::string kernel;      // OpenBLAS core name ("Haswell", "SkylakeX", "Prescott", ...); empty if unknown
  int kernel_vector_bits;  // 128 (SSE), 256 (AVX2/FMA), 512 (AVX-512); 0 when unknown
  std::string selection;   // how the kernel was chosen (OpenBLAS's cpuid, OPENBLAS_CORETYPE, or cocolm)
  bool openmp = false;     // the BLAS parallelises with OpenMP (shares the kernels' thread team)
};
BlasInfo blas_info();

// The vector width (bits) the CPU offers for f32 GEMM kernels: 512 with AVX-512, 256 with AVX2 + FMA,
// else 128.
int cpu_vector_bits(const CpuFeatures& features);

// Idempotent; the first call re-selects a generic OpenBLAS kernel (see above), sets the thread
// count to available_cores() unless set_threads was called before, and stops OpenBLAS's idle worker
// threads. Called by the engine's CPU
// entry points (the trainer, coco-bench); cheap after the first call.
void configure();

// Whether the BLAS's own worker threads are running (a pthreads OpenBLAS starts them at load time;
// configure() stops them, since every BLAS call is single-threaded). false for other BLAS builds.
bool blas_worker_threads_running();

// One line for the start-up report: "CPU backend: 2 threads of 2 cores (AMD EPYC, AVX2, FMA); BLAS
// OpenBLAS 0.3.21 (kernel Zen, by OpenBLAS's cpuid), OpenMP".
std::string report();

// Test hook: re-initialises OpenBLAS's DYNAMIC_ARCH dispatch as if OPENBLAS_CORETYPE=core had been
// set at load time. Returns false when the linked BLAS is not a DYNAMIC_ARCH OpenBLAS.
bool reselect_openblas_kernel(const std::string& core);

// --------------------------------------------------------------------------------- parallel loops

namespace detail {
// Runs task(context, i) for i in [0, ranges) on the pool, range 0 on the calling thread; returns
// when all are done. ranges <= threads(). Runs everything inline when called from inside a loop
// that is already running on the pool (a worker's range or the caller's range 0), so nested
// parallel loops neither deadlock nor oversubscribe.
void run_ranges(int64_t ranges, void (*task)(void*, int64_t), void* context);
}  // namespace detail

// Calls body(lo, hi) on contiguous ranges that cover [0, n) exactly once, on up to threads()
// threads, each range at least min_items long (except when n < min_items). Runs inline when one
// range suffices. body must not throw.
template <class Body>
void parallel_for(int64_t n, int64_t min_items, Body&& body) {
  if (n <= 0) return;
  int64_t ranges = min_items > 0 ? n / min_items : n;
  ranges = std::max<int64_t>(1, std::min<int64_t>(ranges, threads()));
  if (ranges == 1) {
    body(int64_t{0}, n);
    return;
  }
  // remove_reference_t: Body is an lvalue reference type when the caller passes a named lambda.
  struct Context {
    std::remove_reference_t<Body>* body;
    int64_t n, ranges;
  } context{&body, n, ranges};
  detail::run_ranges(
      ranges,
      [](void* raw, int64_t i) {
        const Context& c = *static_cast<const Context*>(raw);
        const int64_t lo = c.n * i / c.ranges, hi = c.n * (i + 1) / c.ranges;
        if (lo < hi) (*c.body)(lo, hi);
      },
      &context);
}

// The f64 sums of fixed blocks of `block` items: partial[b] = block_sum(b * block, min(n, (b+1) * block)),
// computed in parallel; callers add the partials in order. The block size, not the thread count,
// decides every rounding, so the total has the same bits for any number of threads.
template <class BlockSum>
std::vector<double> parallel_block_sums(int64_t n, int64_t block, BlockSum&& block_sum) {
  const int64_t blocks = n > 0 ? (n + block - 1) / block : 0;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
  parallel_for(blocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) partial[b] = block_sum(b * block, std::min(n, (b + 1) * block));
  });
  return partial;
}

}  // namespace coco::runtime::cpu
