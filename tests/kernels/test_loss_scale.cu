// Non-finite gradient detection (the CUDA flag kernel, emulated here, against the CPU reference for
// every dtype and position, including chunk and tensor boundaries) and the dynamic loss scaler's
// state machine (overflow -> skip and back off after the hysteresis budget; growth after the
// interval; min scale; checkpoint state), plus the optim::has_nonfinite tensor wrapper.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "engine/ops/optim.h"
#include "engine/simt/schedule_oracle.h"
#include "kernels/loss_scale.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::DType;
using coco::kernels::NormTensorDesc;
using coco::optim::GradScaler;
using coco::optim::GradScalerOptions;
using coco::testing::GuardedDeviceBuffer;

// The emulator's schedule-invariance oracle as a gtest assertion.
::testing::AssertionResult schedule_invariant(const std::function<std::vector<uint8_t>()>& run, int random_seeds) {
  const emu::OracleResult result = emu::check_schedule_invariance(run, random_seeds);
  if (result.identical) return ::testing::AssertionSuccess() << result.runs << " schedules identical";
  return ::testing::AssertionFailure() << result.message;
}

// Finite random values stored as `dtype`.
std::vector<uint8_t> finite_bytes(int64_t numel, DType dtype, unsigned seed) {
  const std::vector<float> v = coco::testing::random_floats(static_cast<size_t>(numel), seed, -100.0f, 100.0f);
  std::vector<uint8_t> bytes(static_cast<size_t>(numel) * coco::dtype_size(dtype));
  for (int64_t i = 0; i < numel; ++i) {
    if (dtype == DType::f32)
      std::memcpy(bytes.data() + 4 * i, &v[i], 4);
    else if (dtype == DType::bf16) {
      const __nv_bfloat16 b = __float2bfloat16(v[i]);
      std::memcpy(bytes.data() + 2 * i, &b, 2);
    } else {
      const __half h = __float2half(v[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  return bytes;
}

void store(std::vector<uint8_t>& bytes, DType dtype, int64_t i, float value) {
  if (dtype == DType::f32)
    std::memcpy(bytes.data() + 4 * i, &value, 4);
  else if (dtype == DType::bf16) {
    const __nv_bfloat16 b = __float2bfloat16(value);
    std::memcpy(bytes.data() + 2 * i, &b, 2);
  } else {
    const __half h = __float2half(value);
    std::memcpy(bytes.data() + 2 * i, &h, 2);
  }
}

struct Tensors {
  std::vector<DType> dtypes;
  std::vector<int64_t> sizes;
  std::vector<std::vector<uint8_t>> bytes;
};

Tensors make_tensors() {
  Tensors t;
  t.dtypes = {DType::f32, DType::bf16, DType::f16, DType::f32, DType::f16};
  t.sizes = {7, 4096, 130, 9000, 1};
  for (size_t i = 0; i < t.sizes.size(); ++i) t.bytes.push_back(finite_bytes(t.sizes[i], t.dtypes[i], 40 + i));
  return t;
}

bool cpu_flag(const Tensors& t) {
  std::vector<NormTensorDesc> descs;
  for (size_t i = 0; i < t.sizes.size(); ++i) descs.push_back({t.bytes[i].data(), t.sizes[i], 0, t.dtypes[i]});
  return coco::kernels::cpu::any_nonfinite(descs);
}

int32_t cuda_flag(const Tensors& t, int32_t initial = 0) {
  std::vector<std::unique_ptr<GuardedDeviceBuffer<uint8_t>>> buffers;
  std::vector<NormTensorDesc> descs;
  for (size_t i = 0; i < t.sizes.size(); ++i) {
    buffers.push_back(std::make_unique<GuardedDeviceBuffer<uint8_t>>(t.bytes[i]));
    descs.push_back({buffers.back()->data(), t.sizes[i], 0, t.dtypes[i]});
  }
  const int64_t chunks = coco::kernels::plan_norm_chunks(descs);
  GuardedDeviceBuffer<NormTensorDesc> device_descs(descs);
  GuardedDeviceBuffer<int32_t> flag(std::vector<int32_t>{initial});
  coco::kernels::cuda::mark_nonfinite(device_descs.data(), static_cast<int>(descs.size()), chunks, flag.data(),
                                      nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(flag.guards_intact());
  return flag.download()[0];
}

TEST(NonFinite, FlagMatchesCpuForEveryDtypeAndBoundary) {
  const Tensors clean = make_tensors();
  EXPECT_FALSE(cpu_flag(clean));
  EXPECT_EQ(cuda_flag(clean), 0);
  EXPECT_EQ(cuda_flag(clean, 1), 1) << "the flag is only ever set, so launches can OR into it";
  // One bad value at a time: first/last element of each tensor and across the 4096-element chunk
  // boundary of the multi-chunk tensor; NaN, +Inf, -Inf.
  for (size_t t = 0; t < clean.sizes.size(); ++t) {
    std::vector<int64_t> at = {0, clean.sizes[t] - 1};
    if (clean.sizes[t] > 4096) at.insert(at.end(), {4095, 4096, 8191, 8192});
    for (int64_t i : at) {
      for (float bad : {NAN, INFINITY, -INFINITY}) {
        Tensors dirty = clean;
        store(dirty.bytes[t], dirty.dtypes[t], i, bad);
        EXPECT_TRUE(cpu_flag(dirty)) << "tensor " << t << " element " << i << " value " << bad;
        EXPECT_EQ(cuda_flag(dirty), 1) << "tensor " << t << " element " << i << " value " << bad;
      }
    }
  }
  // Largest finite values are finite: f16 65504, bf16 / f32 near FLT_MAX.
  Tensors big = clean;
  store(big.bytes[2], DType::f16, 3, 65504.0f);
  store(big.bytes[1], DType::bf16, 3, 3.38e38f);
  store(big.bytes[0], DType::f32, 3, 3.4028235e38f);
  EXPECT_FALSE(cpu_flag(big));
  EXPECT_EQ(cuda_flag(big), 0);
}

TEST(NonFinite, ScheduleInvariant) {
  Tensors dirty = make_tensors();
  store(dirty.bytes[3], DType::f32, 5000, NAN);
  EXPECT_TRUE(schedule_invariant(
      [&] {
        const int32_t f = cuda_flag(dirty);
        return std::vector<uint8_t>{static_cast<uint8_t>(f)};
      },
      3));
}

TEST(NonFinite, TensorWrapperOnBothDevices) {
  const std::vector<float> values = coco::testing::random_floats(5000, 3, -1.0f, 1.0f);
  for (coco::Device device : {coco::Device::cpu, coco::Device::cuda}) {
    coco::Tensor a = coco::Tensor::from_vector(values, coco::Shape{50, 100}, device);
    coco::Tensor b = coco::Tensor::from_vector(std::vector<float>(33, 0.5f), coco::Shape{33}, device);
    EXPECT_FALSE(coco::optim::has_nonfinite({a, b.to(DType::bf16)}));
    std::vector<float> with_inf(33, 0.5f);
    with_inf[32] = INFINITY;
    coco::Tensor c = coco::Tensor::from_vector(with_inf, coco::Shape{33}, device);
    EXPECT_TRUE(coco::optim::has_nonfinite({a, c.to(DType::f16)}));
    EXPECT_THROW(coco::optim::has_nonfinite({coco::Tensor()}), coco::TensorError);
  }
}

GradScalerOptions small_options() {
  GradScalerOptions o;
  o.initial_scale = 1024.0;
  o.growth_interval = 3;
  o.hysteresis = 1;
  o.min_scale = 64.0;
  return o;
}

TEST(GradScaler, DefaultsFollowDeepSpeedAndMegatron) {
  const GradScaler scaler;
  EXPECT_EQ(scaler.scale(), 65536.0);
  EXPECT_EQ(scaler.options().growth_factor, 2.0);
  EXPECT_EQ(scaler.options().backoff_factor, 0.5);
  EXPECT_EQ(scaler.options().growth_interval, 1000);
  EXPECT_EQ(scaler.options().hysteresis, 2);
  EXPECT_EQ(scaler.options().min_scale, 1.0);
}

TEST(GradScaler, OverflowSkipsAndBacksOff) {
  GradScaler scaler(small_options());
  EXPECT_FALSE(scaler.update(true));  // skip
  EXPECT_EQ(scaler.scale(), 512.0);
  EXPECT_FALSE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 256.0);
  EXPECT_EQ(scaler.skipped_steps(), 2);
  // The floor holds however many overflows follow.
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 64.0);
  EXPECT_EQ(scaler.skipped_steps(), 12);
}

TEST(GradScaler, GrowsAfterIntervalOfGoodSteps) {
  GradScaler scaler(small_options());
  EXPECT_TRUE(scaler.update(false));
  EXPECT_TRUE(scaler.update(false));
  EXPECT_EQ(scaler.scale(), 1024.0);
  EXPECT_TRUE(scaler.update(false));  // third good step in a row
  EXPECT_EQ(scaler.scale(), 2048.0);
  // An overflow resets the growth count: two good steps, overflow, then three more are needed.
  EXPECT_TRUE(scaler.update(false));
  EXPECT_TRUE(scaler.update(false));
  EXPECT_FALSE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 1024.0);
  EXPECT_TRUE(scaler.update(false));
  EXPECT_TRUE(scaler.update(false));
  EXPECT_EQ(scaler.scale(), 1024.0);
  EXPECT_TRUE(scaler.update(false));
  EXPECT_EQ(scaler.scale(), 2048.0);
  EXPECT_EQ(scaler.skipped_steps(), 1);
}

TEST(GradScaler, HysteresisToleratesOverflowsBeforeBackingOff) {
  GradScalerOptions o = small_options();
  o.hysteresis = 2;
  GradScaler scaler(o);
  EXPECT_FALSE(scaler.update(true));  // skipped, but the scale holds (budget 2 -> 1)
  EXPECT_EQ(scaler.scale(), 1024.0);
  EXPECT_FALSE(scaler.update(true));  // budget exhausted: back off
  EXPECT_EQ(scaler.scale(), 512.0);
  EXPECT_FALSE(scaler.update(true));  // still exhausted: back off again
  EXPECT_EQ(scaler.scale(), 256.0);
  // Good steps alone do not refill the budget (Megatron); a growth does.
  EXPECT_TRUE(scaler.update(false));
  EXPECT_FALSE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 128.0);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(scaler.update(false));
  EXPECT_EQ(scaler.scale(), 256.0);
  EXPECT_FALSE(scaler.update(true));  // refilled budget: tolerated
  EXPECT_EQ(scaler.scale(), 256.0);
  EXPECT_EQ(scaler.state().hysteresis_left, 1);
}

TEST(GradScaler, StateRoundTripsAndIsValidated) {
  GradScaler a(small_options());
  a.update(false);
  a.update(true);
  a.update(false);
  GradScaler b(small_options());
  b.load_state(a.state());
  for (bool overflow : {false, false, true, false, false, false, false})
    EXPECT_EQ(a.update(overflow), b.update(overflow));
  EXPECT_EQ(a.state().scale, b.state().scale);
  EXPECT_EQ(a.state().growth_tracker, b.state().growth_tracker);
  EXPECT_EQ(a.state().skipped_steps, b.state().skipped_steps);
  EXPECT_THROW(b.load_state({-1.0, 0, 1, 0}), std::invalid_argument);
  EXPECT_THROW(b.load_state({8.0, 3, 1, 0}), std::invalid_argument);  // tracker must be < interval
  EXPECT_THROW(b.load_state({8.0, 0, 5, 0}), std::invalid_argument);  // more budget than hysteresis
}

TEST(GradScaler, RejectsBadOptions) {
  const auto bad = [](auto mutate) {
    GradScalerOptions o;
    mutate(o);
    EXPECT_THROW(GradScaler{o}, std::invalid_argument);
  };
  bad([](GradScalerOptions& o) { o.initial_scale = 0.0; });
  bad([](GradScalerOptions& o) { o.initial_scale = INFINITY; });
  bad([](GradScalerOptions& o) { o.growth_factor = 1.0; });
  bad([](GradScalerOptions& o) { o.backoff_factor = 1.0; });
  bad([](GradScalerOptions& o) { o.growth_interval = 0; });
  bad([](GradScalerOptions& o) { o.hysteresis = 0; });
  bad([](GradScalerOptions& o) { o.min_scale = 1e9; });
}

}  // namespace
