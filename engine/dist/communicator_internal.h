// Shared by the communicator implementations in engine/dist; not for other code.
#pragma once
#include <memory>

#include "engine/dist/communicator.h"

namespace coco::dist::detail {

// Element count `count` of `dtype` as bytes, refusing an overflow.
size_t byte_count(size_t count, DType dtype, const char* call);

#if defined(COCO_HAVE_MPI)
std::unique_ptr<Communicator> make_mpi_communicator(const LaunchInfo& launch, const CommOptions& options);
std::unique_ptr<Communicator> make_nccl_communicator(const LaunchInfo& launch, const CommOptions& options);
#endif

}  // namespace coco::dist::detail
