// The one way kernels are launched in this project.
//
//   COCO_LAUNCH(kernel, grid, block, shared_bytes, stream, args...);
//
// Under nvcc it is `kernel<<<grid, block, shared_bytes, stream>>>(args...)`; under the host compiler
// (`emulated` mode) the SIMT emulator runs the same kernel source on the CPU, validates the launch
// configuration like CUDA (cudaErrorInvalidConfiguration for a block over 1024 threads, a dimension
// over its limit or a zero-sized grid; cudaErrorInvalidValue for dynamic shared memory above the
// kernel's limit: 48 KB, or up to 227 KB after cudaFuncSetAttribute) and keeps the kernel's name
// for its diagnostics. Either way the launch status is checked and a failure throws coco::CudaError
// naming the kernel, file and line; every launch is counted (engine/runtime/counters.h). Wrap a
// template kernel in parentheses:
// COCO_LAUNCH((kernel<float, 4>), ...).
//
// Kernel sources include this header instead of <cuda_runtime.h>. Dynamic shared memory comes from
// coco::dynamic_smem<T>(); a static __shared__ array can be registered with COCO_POISON_SHARED(array)
// so that the emulator fills it with the poison byte at every block start (a no-op on the GPU).
#pragma once
#include <utility>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#else
#include "engine/simt/cuda_emu.h"
#endif
#include "engine/runtime/check.h"
#include "engine/runtime/counters.h"

namespace coco {

#if defined(__CUDACC__)
// The name only serves the emulator's diagnostics.
template <typename... KernelArgs, typename... Args>
inline cudaError_t launch_named(const char* /*kernel_name*/, void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                                size_t shared_bytes, cudaStream_t stream, Args&&... args) {
  kernel<<<grid, block, shared_bytes, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
}

template <typename... KernelArgs, typename... Args>
inline cudaError_t launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes,
                          cudaStream_t stream, Args&&... args) {
  return launch_named(nullptr, kernel, grid, block, shared_bytes, stream, std::forward<Args>(args)...);
}

// Dynamic shared memory as T*. An untyped extern array plus a cast works in templated kernels too.
template <class T>
__device__ __forceinline__ T* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char coco_dynamic_smem_raw[];
  return reinterpret_cast<T*>(coco_dynamic_smem_raw);
}
#else
using ::emu::dynamic_smem;
using ::emu::launch;
using ::emu::launch_named;
#endif

// Ceil-division for grid sizes.
__host__ __device__ constexpr inline unsigned ceil_div(long long n, long long d) {
  return static_cast<unsigned>((n + d - 1) / d);
}

}  // namespace coco

#if defined(__CUDACC__)
#define COCO_POISON_SHARED(array) ((void)0)
#else
#define COCO_POISON_SHARED(array) EMU_POISON_SHARED(array)
#endif

#define COCO_LAUNCH(kernel, grid, block, shared_bytes, stream, ...)                                       \
  (::coco::runtime::count_kernel_launch(),                                                                \
   ::coco::check_cuda(                                                                                    \
       ::coco::launch_named(#kernel, (kernel), (grid), (block), (shared_bytes), (stream), ##__VA_ARGS__), \
       "launch of " #kernel, __FILE__, __LINE__))
