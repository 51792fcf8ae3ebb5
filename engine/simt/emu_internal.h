// Shared between the emulator's translation units (emu_scheduler.cpp, emu_runtime.cpp); not for
// kernels or tests.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <string>

namespace emu::detail {

// The calling host thread's last error (cudaGetLastError / cudaPeekAtLastError).
cudaError_t& last_error();
// The process's sticky error: cudaSuccess, or the kernel fault (cudaErrorMisalignedAddress) that corrupted the
// emulated context. As on a GPU, from then on every call that does device work -- allocations and frees,
// copies, memsets, launches, synchronisations, streams, events, captures and graph launches -- fails with it, and
// cudaGetLastError returns it without clearing it (emu::clear_sticky_error() starts over, for tests).
cudaError_t sticky_error();
void set_sticky_error(cudaError_t status);
// A kernel fault, which leaves a GPU's context unusable.
inline bool is_sticky(cudaError_t status) {
  return status == cudaErrorMisalignedAddress || status == cudaErrorIllegalAddress ||
         status == cudaErrorIllegalInstruction || status == cudaErrorLaunchFailure;
}
// Records `status` as the last error when it is one (and as the sticky error when it is a kernel fault);
// returns it.
inline cudaError_t record_error(cudaError_t status) {
  if (status != cudaSuccess) last_error() = status;
  if (is_sticky(status)) set_sticky_error(status);
  return status;
}
// The sticky error, recorded as the last error, or cudaSuccess: the first statement of a call that does device work.
inline cudaError_t sticky_failure() {
  const cudaError_t sticky = sticky_error();
  if (sticky != cudaSuccess) last_error() = sticky;
  return sticky;
}

// Dynamic shared memory a kernel may use: 48 KB unless raised with cudaFuncSetAttribute(kernel,
// cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
size_t max_dynamic_shared_bytes(const void* kernel);

// Human-readable name of an error code, as cudaGetErrorName would return it.
const char* error_name(cudaError_t status);

// [address, address + bytes) does not run past the end of a cudaMalloc/cudaMallocHost allocation
// it starts in; pointers of unknown origin (host memory) are not judged. False for a null address
// with bytes > 0.
bool range_ok(const void* address, size_t bytes);

// The first error of the kernels that graph launches on this OS thread ran since the last call
// (cudaErrorMisalignedAddress after a misaligned access), and resets it; cudaSuccess if none.
cudaError_t take_graph_kernel_status();

// ------------------------------------------------------------------------------------------------
// Streams and stream capture (emu_streams.cpp).

// Where asynchronous work for `stream` goes: *capturing is set when the stream is capturing, so the
// work must be recorded with record_node instead of run. The error is the one real CUDA gives for
// the stream: an unknown handle, the legacy stream while a blocking stream captures
// (cudaErrorStreamCaptureImplicit), an invalidated capture.
cudaError_t stream_work(cudaStream_t stream, bool* capturing);
// Appends `work` to the capture of `stream` as a node of `type` (it runs when the graph is launched).
cudaError_t record_node(cudaStream_t stream, cudaGraphNodeType type, std::function<void()> work);
// stream_work, then either work() now or record_node.
cudaError_t submit(cudaStream_t stream, cudaGraphNodeType type, std::function<void()> work);
// Work submitted to `stream` failed: its capture, if any, is invalidated.
void invalidate_capture_of(cudaStream_t stream);
// Before a potentially unsafe call (cudaMalloc, cudaFree, pinned host allocations):
// cudaErrorStreamCaptureUnsupported when the thread's capture mode forbids it.
cudaError_t check_unsafe_call();
// Before a synchronous copy or memset (potentially unsafe, and on the legacy stream).
cudaError_t check_synchronous_call();

}  // namespace emu::detail
