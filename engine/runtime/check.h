// Checked calls into CUDA, cuBLAS(Lt), cuDNN and NCCL. A failure throws coco::CudaError whose
// message names the call, the file and the line, so a failing step reports where it failed.
#pragma once
#include <stdexcept>
#include <string>

#include "engine/runtime/cuda_api.h"

namespace coco {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_cuda_error(const char* library, const char* call, const char* file, int line, int code,
                                   const char* what);

inline void check_cuda(cudaError_t status, const char* call, const char* file, int line) {
  if (status != cudaSuccess)
    throw_cuda_error("CUDA", call, file, line, static_cast<int>(status), cudaGetErrorString(status));
}

// cuBLAS / cuBLASLt status (a cublasStatus_t passed as int, so this header needs no cuBLAS include
// and compiles in the emulated build, where only the gpu-only call sites are left out).
[[noreturn]] void throw_cublas_error(const char* call, const char* file, int line, int status);
// "CUBLAS_STATUS_NOT_SUPPORTED" for 15; "unknown cublasStatus_t" for a value cuBLAS does not define.
const char* cublas_status_name(int status);

inline void check_cublas(int status, const char* call, const char* file, int line) {
  if (status != 0) throw_cublas_error(call, file, line, status);  // 0 == CUBLAS_STATUS_SUCCESS
}

}  // namespace coco

#define COCO_CUDA_CHECK(call) ::coco::check_cuda((call), #call, __FILE__, __LINE__)

// Checks a cuBLAS or cuBLASLt call: the error names the call, file, line and the cublasStatus_t.
#define COCO_CUBLAS_CHECK(call) ::coco::check_cublas(static_cast<int>(call), #call, __FILE__, __LINE__)

// Checks the error state left by the last kernel launch.
#define COCO_CUDA_CHECK_LAST() ::coco::check_cuda(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)
