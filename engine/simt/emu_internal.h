// Shared between the emulator's translation units (emu_scheduler.cpp, emu_runtime.cpp); not for
// kernels or tests.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace emu::detail {

// The calling host thread's last error (cudaGetLastError / cudaPeekAtLastError).
cudaError_t& last_error();
// Records `status` as the last error when it is one; returns it.
inline cudaError_t record_error(cudaError_t status) {
  if (status != cudaSuccess) last_error() = status;
  return status;
}

// Dynamic shared memory a kernel may use: 48 KB unless raised with cudaFuncSetAttribute(kernel,
// cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
size_t max_dynamic_shared_bytes(const void* kernel);

// Human-readable name of an error code, as cudaGetErrorName would return it.
const char* error_name(cudaError_t status);

}  // namespace emu::detail
