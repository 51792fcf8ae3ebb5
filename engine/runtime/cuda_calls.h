// The CUDA calls engine and kernel code makes, through thin wrappers that keep the runtime counters
// (engine/runtime/counters.h) in both build modes. Each forwards to the CUDA runtime (cudart in
// `gpu` mode, the emulator in `emulated` mode) and returns its status unchanged, so call sites keep
// checking with COCO_CUDA_CHECK / COCO_CUBLAS_CHECK and report their own file and line. A call is
// counted whether or not it succeeds (the request reached the runtime).
//
// Outside engine/runtime and engine/simt, engine/, kernels/, model/ and coco/ call these instead of
// cudaMalloc, cudaFree, cudaMemcpy*, cudaMemset*, cuda*Synchronize, cudaGraphLaunch and
// cublasLtMatmul (tests/emu/test_runtime_counters.cpp checks the sources).
#pragma once
#include <cublasLt.h>

#include <cstddef>

#include "engine/runtime/counters.h"
#include "engine/runtime/cuda_api.h"

namespace coco::runtime {

// cudaMalloc / cudaFree (counted as device_mallocs / device_frees).
cudaError_t device_malloc(void** pointer, size_t bytes);
cudaError_t device_free(void* pointer);
// cudaMallocHost / cudaFreeHost (host_allocs).
cudaError_t host_malloc(void** pointer, size_t bytes);
cudaError_t host_free(void* pointer);

// cudaMemcpyAsync, counted by direction (cudaMemcpyDefault asks the pointers where they live).
cudaError_t memcpy_async(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream);
// cudaMemcpy: a copy by direction and a blocking call.
cudaError_t memcpy_blocking(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
// cudaMemsetAsync.
cudaError_t memset_async(void* dst, int value, size_t bytes, cudaStream_t stream);

cudaError_t stream_synchronize(cudaStream_t stream);
cudaError_t device_synchronize();
cudaError_t event_synchronize(cudaEvent_t event);

cudaError_t graph_launch(cudaGraphExec_t graph, cudaStream_t stream);

// cublasLtMatmul (gemm_calls).
cublasStatus_t lt_matmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                         cublasLtMatrixLayout_t a_desc, const void* B, cublasLtMatrixLayout_t b_desc, const void* beta,
                         const void* C, cublasLtMatrixLayout_t c_desc, void* D, cublasLtMatrixLayout_t d_desc,
                         const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspace_bytes,
                         cudaStream_t stream);

}  // namespace coco::runtime
