// The CUDA runtime API as seen by host code. In `gpu` mode this is NVIDIA's cudart; in `emulated`
// mode the same declarations are implemented by engine/simt/emu_runtime.cpp on host memory.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace coco {

// True when CUDA kernels run on the CPU through the SIMT emulator.
constexpr bool kCudaEmulated =
#if defined(COCO_CUDA_EMULATED)
    true;
#else
    false;
#endif

}  // namespace coco
