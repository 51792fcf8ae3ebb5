// Checked cuDNN calls: COCO_CUDNN_CHECK(call) throws coco::CudaError naming the call, file, line and
// cuDNN's error string. Included only by code that uses cuDNN (the attention baseline in gpu builds).
#pragma once
#include <cudnn.h>

#include "engine/runtime/check.h"

namespace coco {

inline void check_cudnn(cudnnStatus_t status, const char* call, const char* file, int line) {
  if (status != CUDNN_STATUS_SUCCESS)
    throw_cuda_error("cuDNN", call, file, line, static_cast<int>(status), cudnnGetErrorString(status));
}

}  // namespace coco

#define COCO_CUDNN_CHECK(call) ::coco::check_cudnn((call), #call, __FILE__, __LINE__)
