// The checked-call macros: a failing call throws CudaError whose message names the library, the call,
// the file and the line; cuDNN and NCCL statuses are reported with their own error strings.
#include <gtest/gtest.h>

#include "engine/runtime/check.h"
#if defined(COCO_HAVE_CUDNN_NCCL)
#include "engine/runtime/check_cudnn.h"
#include "engine/runtime/check_nccl.h"
#endif

namespace coco {
namespace {

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const CudaError& e) {
    return e.what();
  }
  return "";
}

TEST(Checks, CudaFailureNamesCallFileAndLine) {
  const std::string m = message_of([] { COCO_CUDA_CHECK(cudaErrorInvalidValue); });
  EXPECT_NE(m.find("CUDA error"), std::string::npos) << m;
  EXPECT_NE(m.find("cudaErrorInvalidValue"), std::string::npos) << m;
  EXPECT_NE(m.find("test_checks.cpp"), std::string::npos) << m;
  EXPECT_NO_THROW(COCO_CUDA_CHECK(cudaSuccess));
}

TEST(Checks, CublasStatus) {
  const std::string blas = message_of([] { COCO_CUBLAS_CHECK(7); });
  EXPECT_NE(blas.find("test_checks.cpp"), std::string::npos) << blas;
}

#if defined(COCO_HAVE_CUDNN_NCCL)
TEST(Checks, CudnnAndNcclStatuses) {
  const std::string dnn = message_of([] { COCO_CUDNN_CHECK(CUDNN_STATUS_BAD_PARAM); });
  EXPECT_NE(dnn.find("cuDNN"), std::string::npos) << dnn;
  EXPECT_NE(dnn.find("CUDNN_STATUS_BAD_PARAM"), std::string::npos) << dnn;
  const std::string nccl = message_of([] { COCO_NCCL_CHECK(ncclInvalidArgument); });
  EXPECT_NE(nccl.find("NCCL"), std::string::npos) << nccl;
  EXPECT_NE(nccl.find("ncclInvalidArgument"), std::string::npos) << nccl;
  EXPECT_NO_THROW(COCO_CUDNN_CHECK(CUDNN_STATUS_SUCCESS));
  EXPECT_NO_THROW(COCO_NCCL_CHECK(ncclSuccess));
}
#endif

}  // namespace
}  // namespace coco
