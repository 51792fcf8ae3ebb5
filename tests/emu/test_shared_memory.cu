// Static and dynamic shared memory: a 2-D tiled transpose with a static __shared__ tile, a block
// reduction in dynamic shared memory, and the emulator's poisoning of both kinds.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "engine/runtime/launch.cuh"
#include "engine/simt/schedule_oracle.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::testing::GuardedDeviceBuffer;

constexpr int kTile = 32;

// in: (rows, cols) -> out: (cols, rows); block (32, 8), grid (ceil(cols/32), ceil(rows/32))
__global__ void transpose_kernel(float* out, const float* in, int rows, int cols) {
  __shared__ float tile[kTile][kTile + 1];  // +1: no bank conflicts on the column read
  COCO_POISON_SHARED(tile);
  int x = blockIdx.x * kTile + threadIdx.x, y = blockIdx.y * kTile + threadIdx.y;
  for (int j = 0; j < kTile; j += blockDim.y)
    if (x < cols && y + j < rows) tile[threadIdx.y + j][threadIdx.x] = in[static_cast<size_t>(y + j) * cols + x];
  __syncthreads();
  x = blockIdx.y * kTile + threadIdx.x;
  y = blockIdx.x * kTile + threadIdx.y;
  for (int j = 0; j < kTile; j += blockDim.y)
    if (x < rows && y + j < cols) out[static_cast<size_t>(y + j) * rows + x] = tile[threadIdx.x][threadIdx.y + j];
}

TEST(SharedMemory, StaticTileTransposeIn2DBlocks) {
  const int rows = 100, cols = 77;
  const std::vector<float> a = coco::testing::random_floats(static_cast<size_t>(rows) * cols, 11);
  GuardedDeviceBuffer<float> in(a), out(a.size());
  auto run = [&] {
    out.poison();
    COCO_LAUNCH(transpose_kernel, dim3(coco::ceil_div(cols, kTile), coco::ceil_div(rows, kTile)), dim3(kTile, 8), 0,
                nullptr, out.data(), in.data(), rows, cols);
    return out.download_bytes();
  };
  const emu::OracleResult oracle = emu::check_schedule_invariance(run);
  EXPECT_TRUE(oracle.identical) << oracle.message;
  const std::vector<float> t = out.download();
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j)
      ASSERT_EQ(t[static_cast<size_t>(j) * rows + i], a[static_cast<size_t>(i) * cols + j]) << i << "," << j;
  EXPECT_TRUE(out.guards_intact());
}

// out: (rows); one block per row of (rows, cols); dynamic smem: blockDim.x floats
__global__ void row_sum_kernel(float* out, const float* in, int cols) {
  float* partial = coco::dynamic_smem<float>();
  float sum = 0.0f;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) sum += in[static_cast<size_t>(blockIdx.x) * cols + i];
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

TEST(SharedMemory, DynamicSharedBlockReduction) {
  const int rows = 24, cols = 1000, block = 128;
  const std::vector<float> a = coco::testing::random_floats(static_cast<size_t>(rows) * cols, 12);
  GuardedDeviceBuffer<float> in(a), out(rows);
  auto run = [&] {
    COCO_LAUNCH(row_sum_kernel, dim3(rows), dim3(block), block * sizeof(float), nullptr, out.data(), in.data(), cols);
    return out.download_bytes();
  };
  const emu::OracleResult oracle = emu::check_schedule_invariance(run);
  EXPECT_TRUE(oracle.identical) << oracle.message;
  const std::vector<float> sums = out.download();
  for (int r = 0; r < rows; ++r) {
    double reference = 0.0;
    for (int c = 0; c < cols; ++c) reference += a[static_cast<size_t>(r) * cols + c];
    EXPECT_NEAR(sums[r], reference, 1e-3) << r;
  }
}

#if defined(COCO_CUDA_EMULATED)
// Reads shared memory before writing it: in the emulator that is the poison byte.
// out: (blocks, 64, 3) = dynamic before, static before, static neighbour after the block's writes
__global__ void uninitialised_read_kernel(unsigned* out) {
  __shared__ unsigned tile[64];
  COCO_POISON_SHARED(tile);
  const unsigned* dynamic = coco::dynamic_smem<unsigned>();
  const unsigned t = threadIdx.x;
  unsigned* o = out + (static_cast<size_t>(blockIdx.x) * 64 + t) * 3;
  o[0] = dynamic[t];
  o[1] = tile[t];
  __syncthreads();
  tile[t] = 1000 * blockIdx.x + t;
  __syncthreads();
  o[2] = tile[(t + 1) % 64];
}

TEST(SharedMemory, DynamicAndRegisteredStaticSharedMemoryArePoisonedPerBlock) {
  const int blocks = 3;
  GuardedDeviceBuffer<unsigned> out(blocks * 64 * 3);
  for (const int poison : {0xFF, 0x7F, 0x00}) {
    emu::ScopedConfig scope;
    scope->poison = poison;
    COCO_LAUNCH(uninitialised_read_kernel, dim3(blocks), dim3(64), 64 * sizeof(unsigned), nullptr, out.data());
    const std::vector<unsigned> r = out.download();
    const unsigned word = 0x01010101u * static_cast<unsigned>(poison);
    for (int b = 0; b < blocks; ++b) {
      for (unsigned t = 0; t < 64; ++t) {
        const unsigned* o = &r[(static_cast<size_t>(b) * 64 + t) * 3];
        ASSERT_EQ(o[0], word) << "dynamic, block " << b << " thread " << t;
        ASSERT_EQ(o[1], word) << "static, block " << b << " thread " << t;
        ASSERT_EQ(o[2], 1000u * b + (t + 1) % 64) << "block " << b << " thread " << t;
      }
    }
  }
}
#endif

}  // namespace
