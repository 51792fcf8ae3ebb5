// Global gradient norm: the two-stage CUDA reduction (emulated here) against the f64 CPU reference
// over many tensors of mixed dtypes and odd sizes, bitwise schedule invariance, NaN/Inf, empty
// inputs, and the clipping factor.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/gradnorm.h"
#include "engine/ops/optim.h"
#include "engine/simt/schedule_oracle.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::DType;
using coco::kernels::NormTensorDesc;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::random_floats;

// The emulator's schedule-invariance oracle as a gtest assertion.
::testing::AssertionResult schedule_invariant(const std::function<std::vector<uint8_t>()>& run, int random_seeds) {
  const emu::OracleResult result = emu::check_schedule_invariance(run, random_seeds);
  if (result.identical) return ::testing::AssertionSuccess() << result.runs << " schedules identical";
  return ::testing::AssertionFailure() << result.message;
}

struct HostGrad {
  DType dtype;
  std::vector<uint8_t> bytes;
  int64_t numel;
};

HostGrad make_grad(int64_t numel, DType dtype, unsigned seed, float scale) {
  const std::vector<float> values = random_floats(static_cast<size_t>(numel), seed, -scale, scale);
  HostGrad g{dtype, std::vector<uint8_t>(static_cast<size_t>(numel) * coco::dtype_size(dtype)), numel};
  for (int64_t i = 0; i < numel; ++i) {
    if (dtype == DType::f32) {
      std::memcpy(g.bytes.data() + 4 * i, &values[i], 4);
    } else if (dtype == DType::bf16) {
      const __nv_bfloat16 b = __float2bfloat16(values[i]);
      std::memcpy(g.bytes.data() + 2 * i, &b, 2);
    } else {
      const __half h = __float2half(values[i]);
      std::memcpy(g.bytes.data() + 2 * i, &h, 2);
    }
  }
  return g;
}

std::vector<HostGrad> mixed_grads(unsigned seed) {
  return {make_grad(1, DType::f32, seed, 1.0f),          make_grad(7, DType::bf16, seed + 1, 3.0f),
          make_grad(33, DType::f16, seed + 2, 0.01f),    make_grad(130, DType::f32, seed + 3, 100.0f),
          make_grad(0, DType::f32, seed + 4, 1.0f),      make_grad(4096, DType::bf16, seed + 5, 0.1f),
          make_grad(10001, DType::f32, seed + 6, 1e-3f), make_grad(4097, DType::f16, seed + 7, 2.0f)};
}

std::vector<NormTensorDesc> host_descs(const std::vector<HostGrad>& grads) {
  std::vector<NormTensorDesc> d;
  for (const HostGrad& g : grads) d.push_back({g.bytes.data(), g.numel, 0, g.dtype});
  return d;
}

// Uploads the gradients and runs both stages; returns the f64 sum of squares.
double device_sum_of_squares(const std::vector<HostGrad>& grads) {
  std::vector<std::unique_ptr<GuardedDeviceBuffer<uint8_t>>> buffers;
  std::vector<NormTensorDesc> descs;
  for (const HostGrad& g : grads) {
    buffers.push_back(std::make_unique<GuardedDeviceBuffer<uint8_t>>(g.bytes));
    descs.push_back({buffers.back()->data(), g.numel, 0, g.dtype});
  }
  const int64_t chunks = coco::kernels::plan_norm_chunks(descs);
  GuardedDeviceBuffer<NormTensorDesc> device_descs(descs);
  GuardedDeviceBuffer<float> partials(static_cast<size_t>(std::max<int64_t>(chunks, 1)));
  partials.poison();
  GuardedDeviceBuffer<double> result(1);
  result.poison();
  coco::kernels::cuda::sum_of_squares(device_descs.data(), static_cast<int>(descs.size()), chunks, partials.data(),
                                      result.data(), nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(partials.guards_intact());
  EXPECT_TRUE(result.guards_intact());
  for (const auto& b : buffers) EXPECT_TRUE(b->guards_intact());
  return result.download()[0];
}

TEST(GradNorm, MatchesDoubleReferenceOverMixedTensors) {
  for (unsigned seed : {1u, 2u, 3u}) {
    const std::vector<HostGrad> grads = mixed_grads(seed);
    std::vector<NormTensorDesc> descs = host_descs(grads);
    const double reference = coco::kernels::cpu::sum_of_squares(descs);
    const double got = device_sum_of_squares(grads);
    // f32 per-chunk partials (at most 4096 terms through 16-term sums and a 256-leaf tree) against an
    // f64 sum: relative error a few 1e-7 at worst.
    EXPECT_NEAR(got, reference, 1e-6 * reference) << "seed " << seed;
  }
}

TEST(GradNorm, KnownValue) {
  // 3-4-5 triangle spread over two tensors of different dtypes, plus a many-chunk tensor of ones.
  std::vector<HostGrad> grads(3);
  grads[0] = {DType::f32, std::vector<uint8_t>(4), 1};
  const float three = 3.0f;
  std::memcpy(grads[0].bytes.data(), &three, 4);
  grads[1] = {DType::bf16, std::vector<uint8_t>(2), 1};
  const __nv_bfloat16 four = __float2bfloat16(4.0f);
  std::memcpy(grads[1].bytes.data(), &four, 2);
  const int64_t ones = 3 * 4096 + 5;
  grads[2] = {DType::f16, std::vector<uint8_t>(2 * ones), ones};
  const __half one = __float2half(1.0f);
  for (int64_t i = 0; i < ones; ++i) std::memcpy(grads[2].bytes.data() + 2 * i, &one, 2);
  EXPECT_EQ(device_sum_of_squares(grads), 25.0 + static_cast<double>(ones));  // all partial sums are exact
}

TEST(GradNorm, EmptyInputsGiveZero) {
  EXPECT_EQ(device_sum_of_squares({}), 0.0);
  EXPECT_EQ(device_sum_of_squares({make_grad(0, DType::f32, 1, 1.0f)}), 0.0);
  EXPECT_EQ(coco::kernels::cpu::sum_of_squares({}), 0.0);
}

TEST(GradNorm, NonFiniteElementsPropagate) {
  std::vector<HostGrad> grads = mixed_grads(4);
  const float nan = NAN, inf = INFINITY;
  std::memcpy(grads[6].bytes.data() + 4 * 5000, &nan, 4);
  EXPECT_TRUE(std::isnan(device_sum_of_squares(grads)));
  EXPECT_TRUE(std::isnan(coco::kernels::cpu::sum_of_squares(host_descs(grads))));
  grads = mixed_grads(4);
  std::memcpy(grads[3].bytes.data() + 4 * 129, &inf, 4);
  EXPECT_EQ(device_sum_of_squares(grads), INFINITY);
  EXPECT_EQ(coco::kernels::cpu::sum_of_squares(host_descs(grads)), INFINITY);
}

TEST(GradNorm, ScheduleInvariant) {
  const std::vector<HostGrad> grads = mixed_grads(9);
  EXPECT_TRUE(schedule_invariant(
      [&] {
        const double s = device_sum_of_squares(grads);
        std::vector<uint8_t> bytes(sizeof s);
        std::memcpy(bytes.data(), &s, sizeof s);
        return bytes;
      },
      4));
}

TEST(GradNorm, ClipFactor) {
  using coco::kernels::clip_factor;
  EXPECT_EQ(clip_factor(1.0, 2.0), 1.0);
  EXPECT_EQ(clip_factor(0.0, 2.0), 1.0);
  EXPECT_DOUBLE_EQ(clip_factor(4.0, 2.0), 2.0 / (4.0 + 1e-6));
  EXPECT_DOUBLE_EQ(clip_factor(2.0, 2.0), 2.0 / (2.0 + 1e-6));  // torch clips (slightly) at equality too
  EXPECT_TRUE(std::isnan(clip_factor(NAN, 1.0)));
  EXPECT_TRUE(std::isnan(clip_factor(INFINITY, 1.0)));
  EXPECT_THROW(clip_factor(1.0, 0.0), std::invalid_argument);
  EXPECT_THROW(clip_factor(1.0, -1.0), std::invalid_argument);
  EXPECT_THROW(clip_factor(1.0, NAN), std::invalid_argument);
}

TEST(GradNorm, RejectsBadDescriptors) {
  std::vector<NormTensorDesc> descs = {{nullptr, 5, 0, DType::f32}};
  EXPECT_THROW(coco::kernels::plan_norm_chunks(descs), std::invalid_argument);
  float x = 0.0f;
  descs = {{&x, 1, 0, DType::i64}};
  EXPECT_THROW(coco::kernels::plan_norm_chunks(descs), std::invalid_argument);
  descs = {{&x, -2, 0, DType::f32}};
  EXPECT_THROW(coco::kernels::plan_norm_chunks(descs), std::invalid_argument);
  double out = 0.0;
  EXPECT_THROW(coco::kernels::cuda::sum_of_squares(nullptr, 0, 2, nullptr, &out, nullptr), std::invalid_argument);
}

// ------------------------------------------------------------ optim::clip_grad_norm on coco::Tensor

TEST(ClipGradNorm, TensorsOnBothDevices) {
  const std::vector<float> a = random_floats(5000, 61, -1, 1), b = random_floats(77, 62, -3, 3);
  double sum_sq = 0.0;
  for (float x : a) sum_sq += double(x) * x;
  for (float x : b) sum_sq += double(x) * x;
  const double norm = std::sqrt(sum_sq);
  for (coco::Device device : {coco::Device::cpu, coco::Device::cuda}) {
    const coco::Tensor ta = coco::Tensor::from_vector(a, coco::Shape{50, 100}, device);
    const coco::Tensor tb = coco::Tensor::from_vector(b, coco::Shape{77}, device);
    // f32 partial sums on the device: relative error well under 1e-6.
    EXPECT_NEAR(coco::optim::grad_norm({ta, tb}), norm, 1e-6 * norm);
    const coco::optim::ClipResult clip = coco::optim::clip_grad_norm({ta, tb}, 1.0, 0.25);
    EXPECT_NEAR(clip.norm, 0.25 * norm, 1e-6 * norm);
    EXPECT_NEAR(clip.factor, 1.0 / (0.25 * norm + 1e-6), 1e-6);
    EXPECT_EQ(coco::optim::clip_grad_norm({ta, tb}, 1e6).factor, 1.0);
  }
  // Mixed devices and an f64 CPU gradient add up too.
  const coco::Tensor on_cpu = coco::Tensor::from_vector(a, coco::Shape{5000}).to(coco::DType::f64);
  const coco::Tensor on_cuda = coco::Tensor::from_vector(b, coco::Shape{77}, coco::Device::cuda).to(coco::DType::bf16);
  double mixed = 0.0;
  for (float x : a) mixed += double(x) * x;
  for (float x : b) {
    const double r = __bfloat162float(__float2bfloat16(x));
    mixed += r * r;
  }
  EXPECT_NEAR(coco::optim::grad_norm({on_cpu, on_cuda}), std::sqrt(mixed), 1e-6 * std::sqrt(mixed));
  EXPECT_EQ(coco::optim::grad_norm({}), 0.0);
  EXPECT_TRUE(
      std::isnan(coco::optim::clip_grad_norm({coco::Tensor::full(coco::Shape{3}, NAN, coco::DType::f32)}, 1.0).factor));
  EXPECT_THROW(coco::optim::grad_norm({coco::Tensor::zeros(coco::Shape{3}, coco::DType::i32)}), coco::TensorError);
}

}  // namespace
