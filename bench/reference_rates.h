// The device's own yardsticks, measured in the same run as the kernels: device-to-device copy
// bandwidth (read + write bytes per second) and the cuBLAS bf16 GEMM rate at a large square shape.
#pragma once

namespace coco::bench {
double measure_copy_bandwidth_gbps();
double measure_bf16_gemm_tflops();
}  // namespace coco::bench
