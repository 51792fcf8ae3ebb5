// Micro-benchmark of the SIMT emulator's costs (not a test; not built by CMake). Build and run:
//   g++ -std=c++20 -O2 -DCOCO_CUDA_EMULATED=1 -I. -I/usr/local/cuda/include -fno-extern-tls-init
//       -x c++ tests/emu/emu_bench.cu -x none engine/simt/emu_scheduler.cpp engine/simt/emu_runtime.cpp
//       engine/runtime/check.cpp -pthread -o /tmp/emu_bench && EMU_THREADS=1 /tmp/emu_bench
// EMU_FAST_PATH=0 measures without the fast path. With -DEMU_BENCH_PROTOTYPE (and
// -I/work/shared/reference/simt-prototype, linking its emu_support.cpp instead) the same kernels run
// on the prototype emulator, for before/after comparisons.
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <vector>

#if defined(EMU_BENCH_PROTOTYPE)
#include "portable.cuh"
#define BENCH_LAUNCH(kernel, grid, block, smem, ...) launch(kernel, grid, block, smem, 0, __VA_ARGS__)
#else
#include "engine/runtime/launch.cuh"
#define BENCH_LAUNCH(kernel, grid, block, smem, ...) COCO_LAUNCH(kernel, grid, block, smem, nullptr, __VA_ARGS__)
#endif

__global__ void axpy_kernel(float* y, const float* x, float a, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

__global__ void barrier_kernel(int iterations, int* sink) {
  int acc = 0;
  for (int i = 0; i < iterations; ++i) {
    acc += i ^ static_cast<int>(threadIdx.x);
    __syncthreads();
  }
  if (acc == 42) sink[0] = acc;
}

__global__ void shuffle_kernel(int iterations, float* sink) {
  float v = static_cast<float>(threadIdx.x);
  for (int i = 0; i < iterations; ++i) v += __shfl_xor_sync(0xffffffffu, v, 1 + (i & 15));
  if (v == 42.0f) sink[0] = v;
}

// One warp per row: the layernorm pattern (two warp reductions per row).
__global__ void row_norm_kernel(float* out, const float* in, int rows, int cols) {
  const int lane = threadIdx.x % 32, row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  const float* x = in + static_cast<size_t>(row) * cols;
  float sum = 0.0f;
  for (int i = lane; i < cols; i += 32) sum += x[i];
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  const float mean = sum / cols;
  float var = 0.0f;
  for (int i = lane; i < cols; i += 32) var += (x[i] - mean) * (x[i] - mean);
  for (int offset = 16; offset > 0; offset >>= 1) var += __shfl_xor_sync(0xffffffffu, var, offset);
  const float inv = rsqrtf(var / cols + 1e-5f);
  for (int i = lane; i < cols; i += 32) out[static_cast<size_t>(row) * cols + i] = (x[i] - mean) * inv;
}

// Process CPU time: robust on a loaded machine; with EMU_THREADS=1 it is the emulator's cost.
double now() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

template <class F>
double best_of(int repeats, F f) {
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    const double t0 = now();
    f();
    best = std::min(best, now() - t0);
  }
  return best;
}

int main() {
  int sink = 0;
  float fsink = 0.0f;
  {
    const int n = 1 << 21;
    std::vector<float> x(n, 1.0f), y(n, 2.0f);
    const double t = best_of(
        5, [&] { BENCH_LAUNCH(axpy_kernel, dim3((n + 255) / 256), dim3(256), 0, y.data(), x.data(), 3.0f, n); });
    std::printf("barrier-free axpy, 2M threads:       %6.1f ns per emulated thread\n", t / n * 1e9);
  }
  for (int block : {32, 256, 1024}) {
    const int blocks = 16, iterations = 200;
    const double t = best_of(5, [&] { BENCH_LAUNCH(barrier_kernel, dim3(blocks), dim3(block), 0, iterations, &sink); });
    std::printf("__syncthreads, block %4d:            %6.1f ns per thread-barrier\n", block,
                t / (static_cast<double>(blocks) * block * iterations) * 1e9);
  }
  {
    const int blocks = 16, block = 256, iterations = 200;
    const double t =
        best_of(5, [&] { BENCH_LAUNCH(shuffle_kernel, dim3(blocks), dim3(block), 0, iterations, &fsink); });
    std::printf("__shfl_xor_sync, block 256:          %6.1f ns per thread-shuffle\n",
                t / (static_cast<double>(blocks) * block * iterations) * 1e9);
  }
  {
    const int rows = 2048, cols = 768;
    std::vector<float> in(static_cast<size_t>(rows) * cols), out(in.size());
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 97) * 0.01f;
    const double t = best_of(
        5, [&] { BENCH_LAUNCH(row_norm_kernel, dim3(rows / 8), dim3(256), 0, out.data(), in.data(), rows, cols); });
    std::printf("warp-per-row norm 2048x768:          %6.1f ms\n", t * 1e3);
  }
  return 0;
}
