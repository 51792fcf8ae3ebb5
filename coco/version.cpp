// cocolm::version() and cocolm::cuda_mode() of the umbrella header.
#include "cocolm/cocolm.h"

#include "engine/runtime/cuda_api.h"

#ifndef COCO_LIBRARY_VERSION
#error "COCO_LIBRARY_VERSION is set by CMake (cmake/install.cmake) from the project's version"
#endif

namespace cocolm {

const char* version() { return COCO_LIBRARY_VERSION; }
const char* cuda_mode() { return coco::kCudaEmulated ? "emulated" : "gpu"; }

}  // namespace cocolm
