// Planted shared-memory races that the schedule/poison/bitwise oracle must detect, and their
// corrected versions, which must give bit-identical output under every schedule.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <vector>

#include "engine/runtime/launch.cuh"
#include "engine/simt/schedule_oracle.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::testing::GuardedDeviceBuffer;

enum SoftmaxVariant : int {
  kCorrect = 0,
  kNoBarrierBeforeReuse = 1,      // reads the row max from smem[0], then reuses smem without a barrier
  kNoBarrierAfterFirstStore = 2,  // the max tree starts before every thread stored its partial max
  kWarpTailWithoutSync = 3,       // the last five tree levels skip the barrier ("warp-synchronous")
};

// One block per row. in, out: (rows, cols); dynamic smem: blockDim.x floats (blockDim.x a power of 2)
template <int VARIANT>
__global__ void softmax_kernel(float* out, const float* in, int cols) {
  float* smem = coco::dynamic_smem<float>();
  const int tid = threadIdx.x;
  const float* x = in + static_cast<size_t>(blockIdx.x) * cols;
  float* y = out + static_cast<size_t>(blockIdx.x) * cols;

  float m = -FLT_MAX;
  for (int i = tid; i < cols; i += blockDim.x) m = fmaxf(m, x[i]);
  smem[tid] = m;
  if (VARIANT != kNoBarrierAfterFirstStore) __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) smem[tid] = fmaxf(smem[tid], smem[tid + s]);
    if (VARIANT != kWarpTailWithoutSync || s >= 32) __syncthreads();
  }
  const float row_max = smem[0];
  if (VARIANT != kNoBarrierBeforeReuse) __syncthreads();

  float sum = 0.0f;
  for (int i = tid; i < cols; i += blockDim.x) {
    const float e = __expf(x[i] - row_max);
    y[i] = e;
    sum += e;
  }
  smem[tid] = sum;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) smem[tid] += smem[tid + s];
    __syncthreads();
  }
  const float inverse = __fdividef(1.0f, smem[0]);
  for (int i = tid; i < cols; i += blockDim.x) y[i] *= inverse;
}

// Shift left by one within each block: out[t] = in[t + 1] (0 for the last thread). Without the
// middle barrier a thread may overwrite smem[t] before thread t - 1 has read it.
template <bool FIXED>
__global__ void shift_kernel(float* out, const float* in) {
  float* smem = coco::dynamic_smem<float>();
  const int t = threadIdx.x;
  smem[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  const float v = t + 1 < static_cast<int>(blockDim.x) ? smem[t + 1] : 0.0f;
  if (FIXED) __syncthreads();
  smem[t] = v;
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = smem[t];
}

constexpr int kRows = 8, kCols = 300, kBlock = 128;

class SoftmaxRaces : public ::testing::Test {
 protected:
  SoftmaxRaces()
      : input_(coco::testing::random_floats(static_cast<size_t>(kRows) * kCols, 31, -6.0f, 6.0f)),
        in_(input_),
        out_(input_.size()) {}

  template <int VARIANT>
  std::vector<uint8_t> run() {
    out_.poison(0);
    COCO_LAUNCH(softmax_kernel<VARIANT>, dim3(kRows), dim3(kBlock), kBlock * sizeof(float), nullptr, out_.data(),
                in_.data(), kCols);
    return out_.download_bytes();
  }

  std::vector<float> input_;
  GuardedDeviceBuffer<float> in_, out_;
};

TEST_F(SoftmaxRaces, CorrectKernelIsScheduleInvariantAndAccurate) {
  const emu::OracleResult result = emu::check_schedule_invariance([&] { return run<kCorrect>(); }, 6);
  EXPECT_TRUE(result.identical) << result.message;
  const std::vector<float> y = out_.download();
  for (int r = 0; r < kRows; ++r) {
    double m = -INFINITY, s = 0;
    for (int c = 0; c < kCols; ++c) m = std::max(m, static_cast<double>(input_[r * kCols + c]));
    for (int c = 0; c < kCols; ++c) s += std::exp(input_[r * kCols + c] - m);
    for (int c = 0; c < kCols; ++c)
      ASSERT_NEAR(y[r * kCols + c], std::exp(input_[r * kCols + c] - m) / s, 1e-6) << r << "," << c;
  }
}

#if defined(COCO_CUDA_EMULATED)
TEST_F(SoftmaxRaces, MissingBarrierBeforeSharedMemoryReuseIsDetected) {
  const emu::OracleResult result = emu::check_schedule_invariance([&] { return run<kNoBarrierBeforeReuse>(); });
  EXPECT_FALSE(result.identical);
  EXPECT_NE(result.message.find("differs from [forward, poison 0xFF] at byte"), std::string::npos) << result.message;
}

TEST_F(SoftmaxRaces, MissingBarrierAfterFirstStoreIsDetected) {
  // Invisible against a tolerance: softmax does not depend on the subtracted max. Only the bits change
  // (poison 0x7F makes the garbage max a huge finite number).
  const emu::OracleResult result = emu::check_schedule_invariance([&] { return run<kNoBarrierAfterFirstStore>(); });
  EXPECT_FALSE(result.identical);
  EXPECT_FALSE(result.differing_run.empty());
  EXPECT_LT(result.byte_offset, static_cast<size_t>(kRows) * kCols * sizeof(float));
}

TEST_F(SoftmaxRaces, WarpSynchronousTreeTailWithoutSyncIsDetected) {
  const emu::OracleResult result = emu::check_schedule_invariance([&] { return run<kWarpTailWithoutSync>(); });
  EXPECT_FALSE(result.identical);
  EXPECT_EQ(result.reference_run, "forward, poison 0xFF");
  EXPECT_EQ(result.differing_run, "reverse, poison 0xFF") << result.message;
}
#endif

class ShiftRaces : public ::testing::Test {
 protected:
  static constexpr int kBlocks = 16, kThreads = 128;
  ShiftRaces() : input_(coco::testing::random_floats(kBlocks * kThreads, 32)), in_(input_), out_(input_.size()) {}

  template <bool FIXED>
  std::vector<uint8_t> run() {
    COCO_LAUNCH(shift_kernel<FIXED>, dim3(kBlocks), dim3(kThreads), kThreads * sizeof(float), nullptr, out_.data(),
                in_.data());
    return out_.download_bytes();
  }

  std::vector<float> input_;
  GuardedDeviceBuffer<float> in_, out_;
};

TEST_F(ShiftRaces, FixedShiftIsScheduleInvariantAndExact) {
  const emu::OracleResult result = emu::check_schedule_invariance([&] { return run<true>(); }, 6);
  EXPECT_TRUE(result.identical) << result.message;
  const std::vector<float> y = out_.download();
  for (int b = 0; b < kBlocks; ++b)
    for (int t = 0; t < kThreads; ++t)
      ASSERT_EQ(y[b * kThreads + t], t + 1 < kThreads ? input_[b * kThreads + t + 1] : 0.0f) << b << "," << t;
}

#if defined(COCO_CUDA_EMULATED)
TEST_F(ShiftRaces, WriteAfterReadShiftIsDetected) {
  // The forward order happens to read before the neighbour overwrites; the reverse order does not.
  const emu::OracleResult result = emu::check_schedule_invariance([&] { return run<false>(); });
  EXPECT_FALSE(result.identical);
  EXPECT_EQ(result.differing_run, "reverse, poison 0xFF") << result.message;
  EXPECT_EQ(result.byte_offset, 0u);  // thread 0 of block 0 already reads its neighbour's new value
}
#endif

}  // namespace
