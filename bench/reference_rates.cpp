#include "bench/reference_rates.h"

#include <algorithm>
#include <vector>

#include "engine/device.h"
#include "engine/runtime/check.h"

#if !defined(COCO_CUDA_EMULATED)
#include <cublas_v2.h>
#endif

namespace coco::bench {

namespace {
template <class F>
double median_ms(F&& run, int repeats) {
  cudaStream_t stream = current_stream();
  run();
  COCO_CUDA_CHECK(cudaStreamSynchronize(stream));
  Event start, stop;
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    start.record(stream);
    run();
    stop.record(stream);
    stop.synchronize();
    ms.push_back(stop.elapsed_ms_since(start));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}
}  // namespace

double measure_copy_bandwidth_gbps() {
  const size_t bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  COCO_CUDA_CHECK(cudaMalloc(&a, bytes));
  COCO_CUDA_CHECK(cudaMalloc(&b, bytes));
  COCO_CUDA_CHECK(cudaMemset(a, 1, bytes));
  const double ms =
      median_ms([&] { COCO_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, current_stream())); }, 20);
  COCO_CUDA_CHECK(cudaFree(a));
  COCO_CUDA_CHECK(cudaFree(b));
  return 2.0 * static_cast<double>(bytes) / (ms * 1e-3) / 1e9;
}

double measure_bf16_gemm_tflops() {
#if defined(COCO_CUDA_EMULATED)
  return 0.0;
#else
  const int n = 8192;
  void *a = nullptr, *b = nullptr, *c = nullptr;
  const size_t bytes = size_t{2} * n * n;
  COCO_CUDA_CHECK(cudaMalloc(&a, bytes));
  COCO_CUDA_CHECK(cudaMalloc(&b, bytes));
  COCO_CUDA_CHECK(cudaMalloc(&c, bytes));
  COCO_CUDA_CHECK(cudaMemset(a, 0, bytes));
  COCO_CUDA_CHECK(cudaMemset(b, 0, bytes));
  cublasHandle_t handle;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) throw CudaError("cublasCreate failed");
  cublasSetStream(handle, current_stream());
  const float alpha = 1.0f, beta = 0.0f;
  const double ms = median_ms(
      [&] {
        const cublasStatus_t status =
            cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a, CUDA_R_16BF, n, b, CUDA_R_16BF, n, &beta,
                         c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (status != CUBLAS_STATUS_SUCCESS) throw CudaError("cublasGemmEx (bf16 reference GEMM) failed");
      },
      20);
  cublasDestroy(handle);
  COCO_CUDA_CHECK(cudaFree(a));
  COCO_CUDA_CHECK(cudaFree(b));
  COCO_CUDA_CHECK(cudaFree(c));
  return 2.0 * n * double(n) * n / (ms * 1e-3) / 1e12;
#endif
}

}  // namespace coco::bench
