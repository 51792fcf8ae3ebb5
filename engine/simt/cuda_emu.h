// The SIMT emulator: compiles ordinary CUDA C++ kernel source with the host compiler (`g++ -x c++`)
// and runs it on the CPU. Kernel sources do not include this header directly; they include
// engine/runtime/launch.cuh, which picks it when __CUDACC__ is not defined.
//
// Execution model (engine/simt/emu_scheduler.cpp):
//  * every CUDA thread of a block is a fiber; a hand-written x86-64 context switch moves between
//    them (EMU_USE_UCONTEXT or a non-x86 target selects the slower swapcontext fallback);
//  * __syncthreads() and warp operations are synchronisation points that return to a per-block
//    scheduler, which resumes the waiting threads in the configured order (forward, reverse, random);
//  * blocks are spread over a pool of OS threads; a block runs start to end on one OS thread, so
//    `__shared__` is `thread_local` and the built-in variables are thread-local copies;
//  * launches are synchronous; atomics are real atomics (blocks run concurrently);
//  * a fiber whose thread finishes runs the next not-yet-started thread of the pass itself (no
//    context switch), so barrier-free kernels cost a few ns per thread; the order of execution is
//    the same as without this fast path;
//  * misuse (divergent __syncthreads, warp-sync deadlocks, shuffles from lanes outside the mask) is
//    diagnosed naming the kernel, block and thread; a crash (SIGSEGV, fiber stack overflow, an ASan
//    report) prints the emulated kernel, block and thread too;
//  * every load and store of kernel code, the atomics and the emulated PTX copies check that their
//    address is aligned to the access, as a GPU does: a misaligned one ends its thread, no further
//    block starts, the launch returns cudaErrorMisalignedAddress, and the first such access is
//    reported (kernel, block, thread, address, access, source line); as on a GPU the error is sticky:
//    every later call that does device work fails with it (emu::clear_sticky_error, for tests).
// Run-time knobs (schedules, poison, strictness, OS threads) and counters: emu_control.h; the bitwise
// schedule oracle for kernel tests: schedule_oracle.h.
//
// Differences from a GPU worth knowing: after a misaligned access the other threads of its block run
// to their end; __activemask() returns all
// non-exited lanes of the warp (not the converged subset); threads never run concurrently inside a
// block, so intra-block spin-waits on another thread hang; __expf/rsqrtf/__fdividef are exact here and
// approximate on the GPU; there is no grid-wide sync, cluster, TMA/wgmma or inline PTX other than the
// instructions of engine/runtime/ptx.cuh (mma.sync m16n8k16, ldmatrix, cp.async), emulated in
// engine/simt/emu_ptx.h.
#pragma once
#if defined(__CUDACC__)
#error "engine/simt/cuda_emu.h is for host compilers; nvcc uses the real CUDA device code"
#endif

// NVIDIA's host-usable headers first: their include guards make later #includes no-ops, and the
// qualifier macros they define are replaced below.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

#include "engine/simt/emu_control.h"

// ------------------------------------------------------------------------------------------------
// Qualifiers. `__shared__` variables are per OS thread, and a block runs on one OS thread.
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __shared__
#define __shared__ thread_local  // at block scope thread_local implies static
#undef __constant__
#define __constant__
#undef __managed__
#define __managed__
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __grid_constant__
#define __grid_constant__
#undef __cluster_dims__
#define __cluster_dims__(...)
#define CUDA_EMU 1

namespace emu {

// Limits of the virtual device ("cocolm emulated sm_90", H100-like).
inline constexpr size_t kDefaultSharedBytesPerBlock = 48 * 1024;
inline constexpr size_t kMaxSharedBytesPerBlockOptin = 232448;  // 227 KB

// The emulated thread running on this OS thread (nullptr outside kernels).
struct ThreadCtx {
  unsigned linear = 0;  // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
  unsigned lane = 0;    // linear % 32 (the warp is linear / 32)
};
inline thread_local ThreadCtx* t_thread = nullptr;
inline thread_local unsigned char* t_dynamic_smem = nullptr;

namespace detail {

struct LaunchRequest {
  const char* kernel_name;  // as written at the launch site; nullptr if unknown
  const void* kernel;       // identity for cudaFuncSetAttribute
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
  void (*thunk)(void*);  // runs the kernel body for the current emulated thread
  void* closure;
  // A heap copy of the closure and its deleter: stream capture keeps the launch for replays.
  void* (*clone)(const void*);
  void (*destroy)(void*);
};
cudaError_t launch_grid(const LaunchRequest& request);

enum class BarrierOp : uint8_t { Sync, Count, And, Or };
int block_barrier(BarrierOp op, int predicate, const std::source_location& where);

// One value per intrinsic (the four shuffles behave alike), so diagnostics can name it.
enum class WarpOp : uint8_t {
  Sync,
  ShflIdx,
  ShflUp,
  ShflDown,
  ShflXor,
  Ballot,
  Any,
  All,
  MatchAny,
  MatchAll,
  AddI32,
  AddU32,
  MinI32,
  MinU32,
  MaxI32,
  MaxU32,
  AndU32,
  OrU32,
  XorU32,
  Collective,  // a warp-collective PTX instruction (engine/simt/emu_ptx.h)
};
// Waits until every non-exited lane in `mask` reaches a warp operation, then writes `result`
// computed from the lanes' `value`s (src_lane: the lane a shuffle reads).
void warp_op(WarpOp op, unsigned mask, unsigned src_lane, const void* value, unsigned size, void* result,
             const std::source_location& where);
unsigned active_mask();

// A warp-collective instruction (mma.sync.aligned, ldmatrix.sync.aligned): each lane passes its own
// record; once every non-exited lane of the warp has arrived, `complete` of the first lane's record
// runs once with the 32 records (nullptr for a lane that did not take part) and writes each lane's
// results. A call by fewer than all 32 lanes, or lanes at different call sites, is diagnosed (kernel,
// block, thread, warp) before `complete` runs.
struct WarpCollective {
  const char* instruction;  // for diagnostics, e.g. "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
  void (*complete)(WarpCollective* const lanes[32]);
};
void warp_collective(WarpCollective* record, const std::source_location& where);
// A misuse of the calling emulated thread (named with kernel, block, thread and warp): fatal when
// strict (the default), otherwise a counted warning (emu::last_diagnostic()).
void report_misuse(const char* what, const std::source_location& where);
// Changes at every block start of the calling OS thread: per-thread state kept outside the fibers
// (pending cp.async copies) is discarded when it belongs to an earlier block.
uint64_t block_epoch();

// A global or shared memory access by kernel code at `address` that is not aligned to `alignment`
// bytes, which a GPU faults on ("misaligned address"). Called by the checks of the atomics and the
// emulated PTX instructions, and for every other load and store by the alignment instrumentation of
// kernel sources (`-fsanitize=alignment`, engine/simt/emu_scheduler.cpp). The first misaligned
// access of a launch is reported with the kernel, block, thread, address, access and source line
// (stderr and emu::last_diagnostic()); the launch then fails with cudaErrorMisalignedAddress.
[[gnu::cold]] void misaligned_access(const void* address, size_t alignment, const char* access, const char* file,
                                     unsigned line);
// Ends the calling emulated thread where it is, as a fault does on a GPU (the access is not made:
// x86 would fault on some of them too, e.g. an aligned SSE move). Its block runs to its end without
// it; no further block of the launch starts.
[[noreturn, gnu::cold]] void stop_thread();
// Whether the calling OS thread is running an emulated thread of a launch.
bool in_kernel();
template <class T>
inline T* checked_atomic_address(T* address, const char* intrinsic, const std::source_location& where) {
  if (reinterpret_cast<uintptr_t>(address) % sizeof(T) != 0) [[unlikely]] {
    misaligned_access(address, sizeof(T), intrinsic, where.file_name(), where.line());
    stop_thread();
  }
  return address;
}

void poison_static_shared(void* address, size_t bytes);
void register_extern_shared(unsigned char* (*storage)());
[[noreturn]] void trap(const char* what, const std::source_location& where);

template <class F>
void invoke_closure(void* closure) {
  (*static_cast<F*>(closure))();
}
template <class F>
void* clone_closure(const void* closure) {
  return new F(*static_cast<const F*>(closure));
}
template <class F>
void destroy_closure(void* closure) {
  delete static_cast<F*>(closure);
}

// A kernel and its converted arguments; every emulated thread calls it, and the kernel's by-value
// parameters give each thread its own copy.
template <class Kernel, class Parameters>
struct KernelCall {
  Kernel kernel;
  Parameters parameters;
  void operator()() { std::apply(kernel, parameters); }
};

}  // namespace detail

// launch_named(name, kernel, grid, block, shared_bytes, stream, args...): synchronous, or recorded
// when `stream` is capturing. The arguments are converted once to the kernel's parameter types
// (like CUDA's parameter buffer) and every emulated thread calls the kernel with its own copy.
// Returns the launch status (also recorded for cudaGetLastError when it is an error).
template <typename... KernelArgs, typename... Args>
cudaError_t launch_named(const char* kernel_name, void (*kernel)(KernelArgs...), dim3 grid, dim3 block,
                         size_t shared_bytes, cudaStream_t stream, Args&&... args) {
  static_assert(sizeof...(KernelArgs) == sizeof...(Args), "wrong number of kernel arguments");
  using Call = detail::KernelCall<void (*)(KernelArgs...), std::tuple<std::decay_t<KernelArgs>...>>;
  Call call{kernel, std::tuple<std::decay_t<KernelArgs>...>(std::forward<Args>(args)...)};
  const detail::LaunchRequest request{kernel_name,
                                      reinterpret_cast<const void*>(kernel),
                                      grid,
                                      block,
                                      shared_bytes,
                                      stream,
                                      &detail::invoke_closure<Call>,
                                      &call,
                                      &detail::clone_closure<Call>,
                                      &detail::destroy_closure<Call>};
  return detail::launch_grid(request);
}

template <typename... KernelArgs, typename... Args>
cudaError_t launch(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                   Args&&... args) {
  return launch_named(nullptr, kernel, grid, block, shared_bytes, stream, std::forward<Args>(args)...);
}

// The launch's dynamic shared memory (exactly shared_bytes long, so ASan sees overruns).
template <class T>
inline T* dynamic_smem() {
  return reinterpret_cast<T*>(t_dynamic_smem);
}

struct ExternSharedRegistrar {
  explicit ExternSharedRegistrar(unsigned char* (*storage)()) { detail::register_extern_shared(storage); }
};

}  // namespace emu

// Storage for kernels written with `extern __shared__ T name[];` (one line per name, in one .cpp of
// the program; such TUs need -fno-extern-tls-init with g++). Project kernels use
// coco::dynamic_smem<T>() instead, which needs nothing.
#define EMU_DEFINE_EXTERN_SHARED(name)                                               \
  alignas(128) thread_local unsigned char name[::emu::kMaxSharedBytesPerBlockOptin]; \
  static ::emu::ExternSharedRegistrar emu_extern_shared_registrar_##name([]() -> unsigned char* { return name; })

// Static __shared__ arrays are not poisoned unless registered: put EMU_POISON_SHARED(tile) (or the
// portable COCO_POISON_SHARED from launch.cuh) right after the declaration. The first thread of each
// block to reach it fills the array with the poison byte.
#define EMU_POISON_SHARED(array) ::emu::detail::poison_static_shared(&(array), sizeof(array))

// ------------------------------------------------------------------------------------------------
// The C++ overloads that cuda_runtime.h declares only for nvcc (#if defined(__CUDACC__)): they take
// the kernel or the __device__/__constant__ symbol itself.
template <class T>
inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}
template <class T>
inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, T* entry) {
  return ::cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(entry));
}
template <class T>
inline cudaError_t cudaFuncSetCacheConfig(T* func, cudaFuncCache cache_config) {
  return ::cudaFuncSetCacheConfig(reinterpret_cast<const void*>(func), cache_config);
}
template <class T>
inline cudaError_t cudaMemcpyToSymbol(const T& symbol, const void* src, size_t count, size_t offset = 0,
                                      cudaMemcpyKind kind = cudaMemcpyHostToDevice) {
  if (offset > sizeof(T) || count > sizeof(T) - offset)
    return ::cudaMemcpyToSymbol(static_cast<const void*>(nullptr), src, count, offset, kind);
  return ::cudaMemcpyToSymbol(static_cast<const void*>(&symbol), src, count, offset, kind);
}
template <class T>
inline cudaError_t cudaMemcpyToSymbolAsync(const T& symbol, const void* src, size_t count, size_t offset = 0,
                                           cudaMemcpyKind kind = cudaMemcpyHostToDevice, cudaStream_t stream = 0) {
  if (offset > sizeof(T) || count > sizeof(T) - offset)
    return ::cudaMemcpyToSymbol(static_cast<const void*>(nullptr), src, count, offset, kind);
  return ::cudaMemcpyToSymbolAsync(static_cast<const void*>(&symbol), src, count, offset, kind, stream);
}
template <class T>
inline cudaError_t cudaMemcpyFromSymbol(void* dst, const T& symbol, size_t count, size_t offset = 0,
                                        cudaMemcpyKind kind = cudaMemcpyDeviceToHost) {
  if (offset > sizeof(T) || count > sizeof(T) - offset)
    return ::cudaMemcpyFromSymbol(dst, static_cast<const void*>(nullptr), count, offset, kind);
  return ::cudaMemcpyFromSymbol(dst, static_cast<const void*>(&symbol), count, offset, kind);
}
template <class T>
inline cudaError_t cudaGetSymbolAddress(void** dev_ptr, const T& symbol) {
  return ::cudaGetSymbolAddress(dev_ptr, static_cast<const void*>(&symbol));
}
template <class T>
inline cudaError_t cudaGetSymbolSize(size_t* size, const T&) {
  if (!size) return cudaErrorInvalidValue;
  *size = sizeof(T);
  return cudaSuccess;
}

// ------------------------------------------------------------------------------------------------
// Built-in variables: thread-local copies that the scheduler sets before resuming a thread.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
inline constexpr int warpSize = 32;

// ------------------------------------------------------------------------------------------------
// Block and warp synchronisation.
inline void __syncthreads(std::source_location where = std::source_location::current()) {
  ::emu::detail::block_barrier(::emu::detail::BarrierOp::Sync, 0, where);
}
inline int __syncthreads_count(int predicate, std::source_location where = std::source_location::current()) {
  return ::emu::detail::block_barrier(::emu::detail::BarrierOp::Count, predicate, where);
}
inline int __syncthreads_and(int predicate, std::source_location where = std::source_location::current()) {
  return ::emu::detail::block_barrier(::emu::detail::BarrierOp::And, predicate, where);
}
inline int __syncthreads_or(int predicate, std::source_location where = std::source_location::current()) {
  return ::emu::detail::block_barrier(::emu::detail::BarrierOp::Or, predicate, where);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, std::source_location where = std::source_location::current()) {
  ::emu::detail::warp_op(::emu::detail::WarpOp::Sync, mask, 0, nullptr, 0, nullptr, where);
}
inline unsigned __activemask() { return ::emu::detail::active_mask(); }

namespace emu::detail {
inline unsigned vote(WarpOp op, unsigned mask, int predicate, const std::source_location& where) {
  const int value = predicate != 0;
  unsigned result = 0;
  warp_op(op, mask, 0, &value, sizeof value, &result, where);
  return result;
}
template <class T>
inline T shuffle(WarpOp op, unsigned mask, const T& value, unsigned src_lane, const std::source_location& where) {
  // fp16/bf16 pair types have user-provided copies but are plain bytes, like every shuffled type.
  static_assert(sizeof(T) <= 16 && std::is_standard_layout_v<T>, "shuffled types are at most 16 bytes");
  T result;
  warp_op(op, mask, src_lane, &value, sizeof(T), &result, where);
  return result;
}
// width must be a power of two in [1, 32] (CUDA leaves other values undefined).
inline unsigned checked_width(int width, const char* complaint, const std::source_location& where) {
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) trap(complaint, where);
  return static_cast<unsigned>(width);
}
template <class T>
inline unsigned reduce(WarpOp op, unsigned mask, T value, const std::source_location& where) {
  unsigned result = 0;
  warp_op(op, mask, 0, &value, sizeof value, &result, where);
  return result;
}
}  // namespace emu::detail

inline unsigned __ballot_sync(unsigned mask, int predicate,
                              std::source_location where = std::source_location::current()) {
  return ::emu::detail::vote(::emu::detail::WarpOp::Ballot, mask, predicate, where);
}
inline int __any_sync(unsigned mask, int predicate, std::source_location where = std::source_location::current()) {
  return static_cast<int>(::emu::detail::vote(::emu::detail::WarpOp::Any, mask, predicate, where));
}
inline int __all_sync(unsigned mask, int predicate, std::source_location where = std::source_location::current()) {
  return static_cast<int>(::emu::detail::vote(::emu::detail::WarpOp::All, mask, predicate, where));
}

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
                     std::source_location where = std::source_location::current()) {
  const unsigned w =
      ::emu::detail::checked_width(width, "__shfl_sync with a width that is not a power of two in [1, 32]", where);
  const unsigned lane = ::emu::t_thread->lane;
  return ::emu::detail::shuffle(::emu::detail::WarpOp::ShflIdx, mask, var,
                                (lane & ~(w - 1)) + (static_cast<unsigned>(src_lane) & (w - 1)), where);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        std::source_location where = std::source_location::current()) {
  const unsigned w =
      ::emu::detail::checked_width(width, "__shfl_up_sync with a width that is not a power of two in [1, 32]", where);
  const unsigned lane = ::emu::t_thread->lane;
  return ::emu::detail::shuffle(::emu::detail::WarpOp::ShflUp, mask, var,
                                (lane & (w - 1)) < delta ? lane : lane - delta, where);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          std::source_location where = std::source_location::current()) {
  const unsigned w =
      ::emu::detail::checked_width(width, "__shfl_down_sync with a width that is not a power of two in [1, 32]", where);
  const unsigned lane = ::emu::t_thread->lane;
  return ::emu::detail::shuffle(::emu::detail::WarpOp::ShflDown, mask, var,
                                (lane & (w - 1)) + delta >= w ? lane : lane + delta, where);
}
// Lanes may read from earlier width-groups but not later ones (those read their own value).
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                         std::source_location where = std::source_location::current()) {
  const unsigned w =
      ::emu::detail::checked_width(width, "__shfl_xor_sync with a width that is not a power of two in [1, 32]", where);
  const unsigned lane = ::emu::t_thread->lane;
  unsigned src = lane ^ static_cast<unsigned>(lane_mask);
  if (src >= (lane & ~(w - 1)) + w) src = lane;
  return ::emu::detail::shuffle(::emu::detail::WarpOp::ShflXor, mask, var, src & 31u, where);
}

template <class T>
inline unsigned __match_any_sync(unsigned mask, T value, std::source_location where = std::source_location::current()) {
  static_assert(std::is_arithmetic_v<T> && (sizeof(T) == 4 || sizeof(T) == 8), "32- or 64-bit value");
  return ::emu::detail::reduce(::emu::detail::WarpOp::MatchAny, mask, value, where);
}
template <class T>
inline unsigned __match_all_sync(unsigned mask, T value, int* predicate,
                                 std::source_location where = std::source_location::current()) {
  static_assert(std::is_arithmetic_v<T> && (sizeof(T) == 4 || sizeof(T) == 8), "32- or 64-bit value");
  const unsigned result = ::emu::detail::reduce(::emu::detail::WarpOp::MatchAll, mask, value, where);
  *predicate = result != 0;
  return result;
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned value,
                                  std::source_location where = std::source_location::current()) {
  return ::emu::detail::reduce(::emu::detail::WarpOp::AddU32, mask, value, where);
}
inline int __reduce_add_sync(unsigned mask, int value, std::source_location where = std::source_location::current()) {
  return static_cast<int>(::emu::detail::reduce(::emu::detail::WarpOp::AddI32, mask, value, where));
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned value,
                                  std::source_location where = std::source_location::current()) {
  return ::emu::detail::reduce(::emu::detail::WarpOp::MinU32, mask, value, where);
}
inline int __reduce_min_sync(unsigned mask, int value, std::source_location where = std::source_location::current()) {
  return static_cast<int>(::emu::detail::reduce(::emu::detail::WarpOp::MinI32, mask, value, where));
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned value,
                                  std::source_location where = std::source_location::current()) {
  return ::emu::detail::reduce(::emu::detail::WarpOp::MaxU32, mask, value, where);
}
inline int __reduce_max_sync(unsigned mask, int value, std::source_location where = std::source_location::current()) {
  return static_cast<int>(::emu::detail::reduce(::emu::detail::WarpOp::MaxI32, mask, value, where));
}
inline unsigned __reduce_and_sync(unsigned mask, unsigned value,
                                  std::source_location where = std::source_location::current()) {
  return ::emu::detail::reduce(::emu::detail::WarpOp::AndU32, mask, value, where);
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned value,
                                 std::source_location where = std::source_location::current()) {
  return ::emu::detail::reduce(::emu::detail::WarpOp::OrU32, mask, value, where);
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned value,
                                  std::source_location where = std::source_location::current()) {
  return ::emu::detail::reduce(::emu::detail::WarpOp::XorU32, mask, value, where);
}

inline void __trap(std::source_location where = std::source_location::current()) {
  ::emu::detail::trap("__trap()", where);
}

#include "engine/simt/emu_intrinsics.h"
#include "engine/simt/intrinsics_extra.h"
