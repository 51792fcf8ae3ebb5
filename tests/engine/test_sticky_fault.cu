// A kernel fault (here a misaligned store) leaves a GPU's CUDA context unusable: the error is "sticky", every later
// call that does device work fails with it (the emulator does the same, engine/simt/emu_control.h). The engine must
// then report it and unwind: the next checked call throws a CudaError naming it, and destroying what a training run
// holds -- tensors (their blocks go back to the caching allocator), a stream, events, a pinned upload ring with a
// copy in flight, a captured CUDA graph -- neither throws nor terminates the process; a GEMM fails too (a destructor
// that checked its CUDA calls would call std::terminate: Event::wait_if_pending). Emulated mode only: on a GPU the
// process could not go on to the next test.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "engine/cuda_graph.h"
#include "engine/device.h"
#include "engine/pinned_upload.h"
#include "engine/runtime/check.h"
#include "engine/runtime/launch.cuh"
#include "engine/tensor.h"
#include "kernels/matmul.h"
#if defined(COCO_CUDA_EMULATED)
#include "engine/simt/emu_control.h"
#endif

// External linkage: on a GPU build, where the test is compiled out, nvcc would warn that it is unused.
namespace sticky_fault_test {
// A 4-byte store 2 bytes past a 4-byte boundary: a misaligned address on any GPU.
__global__ void misaligned_store_kernel(char* bytes) { *reinterpret_cast<float*>(bytes + 2) = 1.0f; }
}  // namespace sticky_fault_test

namespace {

#if defined(COCO_CUDA_EMULATED)

using namespace coco;

TEST(StickyFault, TheEngineReportsAKernelFaultAndUnwindsWithoutThrowingFromDestructors) {
  const emu::StickyErrorScope start_over;  // destroyed last: after everything below
  Stream stream;
  const StreamScope on_stream(stream.get());
  Event recorded;
  PinnedUpload uploads(2);
  const std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6};
  const Tensor uploaded = uploads.upload(ids.data(), Shape{2, 3}, DType::i32);
  Tensor weights = Tensor::zeros({64}, DType::f32, Device::cuda);
  CudaGraph graph;
  graph.capture(stream.get(), [&] { weights.fill_(2.0); });
  graph.replay(stream.get());
  recorded.record(stream.get());
  EXPECT_EQ(weights.to_vector<float>()[63], 2.0f);
  Tensor product = Tensor::zeros({8, 8}, DType::f32, Device::cuda);
  const auto gemm = [&] {  // product = weights (8 x 8) . weights
    const float* w = static_cast<const float*>(weights.data());
    kernels::cuda::gemm<float, float>(false, false, 8, 8, 8, 1.0, w, 8, w, 8, 0.0, static_cast<float*>(product.data()),
                                      8, stream.get());
  };
  gemm();
  EXPECT_EQ(product.to_vector<float>()[0], 8 * 2.0f * 2.0f);

  Tensor bytes = Tensor::zeros({16}, DType::u8, Device::cuda);
  EXPECT_EQ(launch(sticky_fault_test::misaligned_store_kernel, dim3(1), dim3(1), 0, stream.get(),
                   static_cast<char*>(bytes.data())),
            cudaErrorMisalignedAddress);
  // Every later checked call reports the fault: a kernel, a graph replay, a copy back, an event.
  const auto expect_fault = [](const std::function<void()>& call, const char* what) {
    try {
      call();
      ADD_FAILURE() << what << " succeeded after the fault";
    } catch (const CudaError& e) {
      EXPECT_NE(std::string(e.what()).find("misaligned address"), std::string::npos) << what << ": " << e.what();
    }
  };
  expect_fault([&] { weights.fill_(3.0); }, "fill_");
  expect_fault([&] { graph.replay(stream.get()); }, "graph replay");
  expect_fault([&] { (void)weights.to_vector<float>(); }, "to_vector");
  expect_fault([&] { recorded.synchronize(); }, "event synchronize");
  expect_fault([&] { (void)uploads.upload(ids.data(), Shape{2, 3}, DType::i32); }, "upload");
  // An allocation the cache cannot serve reaches cudaMalloc, which fails with the fault: reported as such, not as
  // "out of device memory" (the cache is not freed for it).
  expect_fault([] { (void)Tensor::zeros({1 << 20}, DType::f32, Device::cuda); }, "a new block");
  // The vendor libraries' calls fail too: the GEMM (cuBLASLt) that ran before the fault.
  try {
    gemm();
    ADD_FAILURE() << "a GEMM succeeded after the fault";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("CUBLAS_STATUS_EXECUTION_FAILED"), std::string::npos) << e.what();
  }
  // Leaving the scope destroys the graph, the tensors, the upload ring (its slots' events pending or not), the
  // events and the stream: none of them throws, so the test ends normally.
}

#endif  // COCO_CUDA_EMULATED

}  // namespace
