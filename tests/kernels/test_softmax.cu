// Softmax / log-softmax: the CUDA kernels (emulated here) against the CPU reference at odd widths
// (warp-per-row and block-per-row paths), f32 / bf16 / f16, forward and backward, special values,
// in-place use, and bitwise schedule invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#include "engine/simt/schedule_oracle.h"
#include "kernels/softmax.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::testing::from_floats;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

struct RowShape {
  int64_t rows;
  int64_t width;
};

// T = 1, 7, 33, 130 style widths, one exactly at the warp/block switch and two above it.
const RowShape kShapes[] = {{3, 1}, {5, 7}, {4, 33}, {3, 130}, {9, 64}, {2, 1024}, {2, 1025}, {2, 1500}};

enum class Kind { softmax, log_softmax };

const char* kind_name(Kind kind) { return kind == Kind::softmax ? "softmax" : "log_softmax"; }

std::vector<float> cpu_forward(Kind kind, const std::vector<float>& x, const RowShape& s) {
  std::vector<float> y(x.size());
  if (kind == Kind::softmax)
    coco::kernels::cpu::softmax_forward(x.data(), y.data(), s.rows, s.width);
  else
    coco::kernels::cpu::log_softmax_forward(x.data(), y.data(), s.rows, s.width);
  return y;
}

std::vector<float> cpu_backward(Kind kind, const std::vector<float>& y, const std::vector<float>& dy,
                                const RowShape& s) {
  std::vector<float> dx(y.size());
  if (kind == Kind::softmax)
    coco::kernels::cpu::softmax_backward(y.data(), dy.data(), dx.data(), s.rows, s.width);
  else
    coco::kernels::cpu::log_softmax_backward(y.data(), dy.data(), dx.data(), s.rows, s.width);
  return dx;
}

template <class T>
void cuda_forward(Kind kind, const T* x, T* y, const RowShape& s) {
  if (kind == Kind::softmax)
    coco::kernels::cuda::softmax_forward(x, y, s.rows, s.width, nullptr);
  else
    coco::kernels::cuda::log_softmax_forward(x, y, s.rows, s.width, nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
}

template <class T>
void cuda_backward(Kind kind, const T* y, const T* dy, T* dx, const RowShape& s) {
  if (kind == Kind::softmax)
    coco::kernels::cuda::softmax_backward(y, dy, dx, s.rows, s.width, nullptr);
  else
    coco::kernels::cuda::log_softmax_backward(y, dy, dx, s.rows, s.width, nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
}

// Forward and backward of one shape at one precision against the float CPU reference fed the same
// (rounded) inputs.
template <class T>
void check_against_reference(Kind kind, const RowShape& s, unsigned seed, double threshold) {
  const size_t n = static_cast<size_t>(s.rows * s.width);
  const std::vector<float> x = round_through<T>(random_floats(n, seed, -6.0f, 6.0f));
  const std::vector<float> y_ref = cpu_forward(kind, x, s);
  const std::string what =
      std::string(kind_name(kind)) + " rows=" + std::to_string(s.rows) + " width=" + std::to_string(s.width);

  GuardedDeviceBuffer<T> device_x(from_floats<T>(x));
  GuardedDeviceBuffer<T> device_y(n);
  device_y.poison();
  cuda_forward(kind, device_x.data(), device_y.data(), s);
  EXPECT_TRUE(matches_reference(to_f64(y_ref), to_f64(device_y.download()), threshold, what + " forward"));
  EXPECT_TRUE(device_y.guards_intact()) << what;

  // Backward from the kernel's own (rounded) forward output, as training would run it.
  const std::vector<float> y = round_through<T>(y_ref);
  const std::vector<float> dy = round_through<T>(random_floats(n, seed + 1));
  const std::vector<float> dx_ref = cpu_backward(kind, y, dy, s);
  GuardedDeviceBuffer<T> device_yr(from_floats<T>(y));
  GuardedDeviceBuffer<T> device_dy(from_floats<T>(dy));
  GuardedDeviceBuffer<T> device_dx(n);
  device_dx.poison();
  cuda_backward(kind, device_yr.data(), device_dy.data(), device_dx.data(), s);
  EXPECT_TRUE(matches_reference(to_f64(dx_ref), to_f64(device_dx.download()), threshold, what + " backward"));
  EXPECT_TRUE(device_dx.guards_intact()) << what;
}

TEST(SoftmaxKernels, F32MatchesCpuReference) {
  unsigned seed = 100;
  for (Kind kind : {Kind::softmax, Kind::log_softmax})
    for (const RowShape& s : kShapes)
      // f32 statistics with expf vs a double reference: a few ulp per element.
      check_against_reference<float>(kind, s, seed++, 1e-11);
}

TEST(SoftmaxKernels, Bf16MatchesCpuReference) {
  unsigned seed = 200;
  for (Kind kind : {Kind::softmax, Kind::log_softmax})
    for (const RowShape& s : kShapes)
      // bf16 outputs carry 8 significant bits: rounding alone gives NMSE ~1e-6.
      check_against_reference<__nv_bfloat16>(kind, s, seed++, 1e-5);
}

TEST(SoftmaxKernels, F16MatchesCpuReference) {
  unsigned seed = 300;
  for (Kind kind : {Kind::softmax, Kind::log_softmax})
    for (const RowShape& s : {RowShape{5, 7}, RowShape{3, 130}, RowShape{2, 1500}})
      // f16 outputs carry 11 significant bits: rounding gives NMSE ~1e-7.
      check_against_reference<__half>(kind, s, seed++, 1e-6);
}

// Rows with NaN, one or two +Inf, some -Inf and all -Inf (a fully masked row), in both kernel paths.
TEST(SoftmaxKernels, SpecialValuesMatchCpuParity) {
  for (int64_t width : {int64_t{7}, int64_t{40}, int64_t{1100}}) {
    const RowShape s{6, width};
    std::vector<float> x =
        random_floats(static_cast<size_t>(s.rows * width), 7 + static_cast<unsigned>(width), -3.0f, 3.0f);
    auto at = [&](int64_t r, int64_t j) -> float& { return x[static_cast<size_t>(r * width + j)]; };
    at(0, width / 2) = NAN;
    at(1, width - 1) = INFINITY;
    at(2, 0) = INFINITY;
    at(2, width - 1) = INFINITY;
    for (int64_t j = 0; j < width; ++j) at(3, j) = -INFINITY;
    for (int64_t j = 0; j < width; j += 2) at(4, j) = -INFINITY;
    // row 5 stays ordinary
    for (Kind kind : {Kind::softmax, Kind::log_softmax}) {
      const std::string what = std::string(kind_name(kind)) + " specials width=" + std::to_string(width);
      const std::vector<float> y_ref = cpu_forward(kind, x, s);
      GuardedDeviceBuffer<float> device_x(x);
      GuardedDeviceBuffer<float> device_y(x.size());
      device_y.poison();
      cuda_forward(kind, device_x.data(), device_y.data(), s);
      const std::vector<float> y = device_y.download();
      // f32 kernel against a double-accumulated reference, finite elements only.
      EXPECT_TRUE(matches_reference(to_f64(y_ref), to_f64(y), 1e-11, what));
      // The fully masked row: zeros / -Inf, never NaN.
      for (int64_t j = 0; j < width; ++j) {
        const float v = y[static_cast<size_t>(3 * width + j)];
        if (kind == Kind::softmax)
          EXPECT_EQ(v, 0.0f) << what << " j=" << j;
        else
          EXPECT_EQ(v, -INFINITY) << what << " j=" << j;
      }
      // A NaN input makes its row NaN.
      EXPECT_TRUE(std::isnan(y[0])) << what;

      const std::vector<float> dy = random_floats(x.size(), 99);
      const std::vector<float> dx_ref = cpu_backward(kind, y_ref, dy, s);
      GuardedDeviceBuffer<float> device_dy(dy);
      GuardedDeviceBuffer<float> device_dx(x.size());
      device_dx.poison();
      cuda_backward(kind, device_y.data(), device_dy.data(), device_dx.data(), s);
      const std::vector<float> dx = device_dx.download();
      EXPECT_TRUE(matches_reference(to_f64(dx_ref), to_f64(dx), 1e-11, what + " backward"));
      for (int64_t j = 0; j < width; ++j)
        EXPECT_EQ(dx[static_cast<size_t>(3 * width + j)], 0.0f) << what << " masked row j=" << j;
    }
  }
}

TEST(SoftmaxKernels, InPlaceForwardAndBackward) {
  for (const RowShape& s : {RowShape{5, 33}, RowShape{2, 1200}}) {
    const size_t n = static_cast<size_t>(s.rows * s.width);
    const std::vector<float> x = random_floats(n, 5);
    const std::vector<float> dy = random_floats(n, 6);
    for (Kind kind : {Kind::softmax, Kind::log_softmax}) {
      const std::vector<float> y_ref = cpu_forward(kind, x, s);
      const std::vector<float> dx_ref = cpu_backward(kind, y_ref, dy, s);
      GuardedDeviceBuffer<float> buffer(x);
      cuda_forward(kind, buffer.data(), buffer.data(), s);
      EXPECT_TRUE(matches_reference(to_f64(y_ref), to_f64(buffer.download()), 1e-11, "in-place forward"));
      buffer.upload(y_ref);
      GuardedDeviceBuffer<float> grad(dy);
      cuda_backward(kind, buffer.data(), grad.data(), grad.data(), s);
      EXPECT_TRUE(matches_reference(to_f64(dx_ref), to_f64(grad.download()), 1e-11, "in-place backward"));
    }
  }
}

TEST(SoftmaxKernels, BitwiseInvariantUnderSchedules) {
  for (const RowShape& s : {RowShape{5, 37}, RowShape{2, 1100}}) {
    const size_t n = static_cast<size_t>(s.rows * s.width);
    const std::vector<float> x = random_floats(n, 17, -5.0f, 5.0f);
    const std::vector<float> dy = random_floats(n, 18);
    for (Kind kind : {Kind::softmax, Kind::log_softmax}) {
      auto run = [&] {
        GuardedDeviceBuffer<__nv_bfloat16> device_x(from_floats<__nv_bfloat16>(x));
        GuardedDeviceBuffer<__nv_bfloat16> device_y(n);
        GuardedDeviceBuffer<__nv_bfloat16> device_dy(from_floats<__nv_bfloat16>(dy));
        GuardedDeviceBuffer<__nv_bfloat16> device_dx(n);
        cuda_forward(kind, device_x.data(), device_y.data(), s);
        cuda_backward(kind, device_y.data(), device_dy.data(), device_dx.data(), s);
        std::vector<uint8_t> bytes = device_y.download_bytes();
        const std::vector<uint8_t> dx_bytes = device_dx.download_bytes();
        bytes.insert(bytes.end(), dx_bytes.begin(), dx_bytes.end());
        return bytes;
      };
      const emu::OracleResult result = emu::check_schedule_invariance(run, 2);
      EXPECT_TRUE(result.identical) << kind_name(kind) << " width " << s.width << ": " << result.message;
    }
  }
}

TEST(SoftmaxKernels, RejectsNegativeSizes) {
  EXPECT_THROW(coco::kernels::cuda::softmax_forward<float>(nullptr, nullptr, -1, 4, nullptr), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::log_softmax_backward<double>(nullptr, nullptr, nullptr, 2, -3),
               std::invalid_argument);
  // Empty shapes are a no-op.
  EXPECT_NO_THROW(coco::kernels::cuda::softmax_forward<float>(nullptr, nullptr, 0, 4, nullptr));
}

}  // namespace

// ---- op level: ops::softmax / ops::log_softmax on Device::cuda (emulated) against Device::cpu.
#include "engine/ops/softmax.h"
#include "engine/tape.h"
#include "engine/tensor.h"

namespace {

struct OpRun {
  std::vector<double> y, dx;
};

OpRun run_op(bool log, const coco::Tensor& x_host, coco::Device device, coco::DType dtype, const coco::Tensor& seed) {
  coco::Tensor x = x_host.to(dtype).to(device);
  x.set_requires_grad(true);
  coco::Tape tape;
  coco::Tensor y;
  {
    coco::Tape::Recording recording(tape);
    y = log ? coco::ops::log_softmax(x) : coco::ops::softmax(x);
  }
  tape.backward(y, seed.to(dtype).to(device));
  return {y.to(coco::Device::cpu).to_f64(), x.grad().to(coco::Device::cpu).to_f64()};
}

TEST(SoftmaxOps, CudaMatchesCpu) {
  for (const coco::Shape& shape : {coco::Shape{7}, coco::Shape{3, 33}, coco::Shape{2, 2, 1100}}) {
    const coco::Tensor x =
        coco::Tensor::from_vector(random_floats(static_cast<size_t>(shape.numel()), 3, -4.0f, 4.0f), shape);
    const coco::Tensor seed = coco::Tensor::from_vector(random_floats(static_cast<size_t>(shape.numel()), 4), shape);
    for (bool log : {false, true}) {
      const OpRun cpu = run_op(log, x, coco::Device::cpu, coco::DType::f32, seed);
      const std::string what = std::string(log ? "log_softmax " : "softmax ") + shape.str();
      const OpRun f32 = run_op(log, x, coco::Device::cuda, coco::DType::f32, seed);
      // Same f32 inputs, f32 vs double-accumulated statistics.
      EXPECT_TRUE(matches_reference(cpu.y, f32.y, 1e-11, what + " f32 forward"));
      EXPECT_TRUE(matches_reference(cpu.dx, f32.dx, 1e-11, what + " f32 backward"));
      // bf16 against the f32 CPU op fed the same bf16-rounded input and gradient: output rounding only.
      const coco::Tensor x_bf16 = x.to(coco::DType::bf16).to(coco::DType::f32);
      const coco::Tensor seed_bf16 = seed.to(coco::DType::bf16).to(coco::DType::f32);
      const OpRun cpu_rounded = run_op(log, x_bf16, coco::Device::cpu, coco::DType::f32, seed_bf16);
      const OpRun bf16 = run_op(log, x, coco::Device::cuda, coco::DType::bf16, seed);
      EXPECT_TRUE(matches_reference(cpu_rounded.y, bf16.y, 1e-5, what + " bf16 forward"));
      // The backward reads the bf16-rounded forward output: one more rounding.
      EXPECT_TRUE(matches_reference(cpu_rounded.dx, bf16.dx, 2e-5, what + " bf16 backward"));
      const OpRun f64 = run_op(log, x, coco::Device::cuda, coco::DType::f64, seed);
      // f64 on both backends: reduction order only.
      EXPECT_TRUE(
          matches_reference(run_op(log, x, coco::Device::cpu, coco::DType::f64, seed).y, f64.y, 1e-24, what + " f64"));
    }
  }
}

TEST(SoftmaxOps, RejectsUnsupportedInputs) {
  EXPECT_THROW(coco::ops::softmax(coco::Tensor()), coco::TensorError);
  EXPECT_THROW(coco::ops::softmax(coco::Tensor::zeros({3}, coco::DType::i32)), coco::TensorError);
  EXPECT_THROW(coco::ops::log_softmax(coco::Tensor::zeros({3}, coco::DType::bf16)), coco::TensorError);  // CPU bf16
}

}  // namespace
