// Checked NCCL calls: COCO_NCCL_CHECK(call) throws coco::CudaError naming the call, file, line and
// NCCL's error string. Included only by the distributed communicators.
#pragma once
#include <nccl.h>

#include "engine/runtime/check.h"

namespace coco {

inline void check_nccl(ncclResult_t status, const char* call, const char* file, int line) {
  if (status != ncclSuccess)
    throw_cuda_error("NCCL", call, file, line, static_cast<int>(status), ncclGetErrorString(status));
}

}  // namespace coco

#define COCO_NCCL_CHECK(call) ::coco::check_nccl((call), #call, __FILE__, __LINE__)
