// Gather / scatter gradients: f64 finite differences of the CPU kernels with repeated indices,
// through ops::gather_rows / ops::scatter_rows on the tape, and the ops on CUDA (emulated) against
// the CPU, including bf16 rows with an f32 gradient buffer.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/gather.h"
#include "engine/tape.h"
#include "kernels/gather.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;

std::vector<int32_t> index_with_repeats(int64_t count, int64_t rows, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(rows - 1));
  std::vector<int32_t> index(static_cast<size_t>(count));
  for (int64_t m = 0; m < count; ++m)
    index[static_cast<size_t>(m)] = (m % 3 == 2) ? index[static_cast<size_t>(m - 1)] : pick(generator);
  return index;
}

TEST(GatherGradcheck, KernelGatherBackwardIsTheScatter) {
  for (auto [rows, dim, count] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {7, 3, 5}, {6, 9, 14}, {20, 4, 3}}) {
    std::vector<double> src = coco::gradcheck_weights(static_cast<size_t>(rows * dim), 3);
    const std::vector<int32_t> index = index_with_repeats(count, rows, 4);
    const std::vector<double> w = coco::gradcheck_weights(static_cast<size_t>(count * dim), 5);
    std::vector<double> dsrc(src.size(), 0.0);
    coco::kernels::cpu::scatter_add_rows(w.data(), index.data(), count, dim, dsrc.data(), rows);
    auto loss = [&] {
      std::vector<double> out(static_cast<size_t>(count * dim));
      coco::kernels::cpu::gather_rows(src.data(), rows, dim, index.data(), count, out.data());
      double total = 0.0;
      for (size_t i = 0; i < out.size(); ++i) total += out[i] * w[i];
      return total;
    };
    const coco::GradcheckReport report = coco::gradcheck_raw({{"src", src, dsrc}}, loss);
    EXPECT_TRUE(report.ok) << "rows=" << rows << " dim=" << dim << " count=" << count << ": " << report.worst;
  }
}

TEST(GatherGradcheck, OpsOnTheTape) {
  Tensor src = Tensor::from_vector(coco::gradcheck_weights(2 * 5 * 3, 1), Shape{2, 5, 3});
  src.set_requires_grad(true).set_name("src");
  const Tensor index = Tensor::from_vector(index_with_repeats(8, 10, 2), Shape{8});
  coco::GradcheckReport report =
      coco::gradcheck([&](const std::vector<Tensor>& in) { return coco::ops::gather_rows(in[0], index); }, {src});
  EXPECT_TRUE(report.ok) << "gather: " << report.worst;

  Tensor rows = Tensor::from_vector(coco::gradcheck_weights(8 * 3, 6), Shape{8, 3});
  rows.set_requires_grad(true).set_name("rows");
  report =
      coco::gradcheck([&](const std::vector<Tensor>& in) { return coco::ops::scatter_rows(in[0], index, 10); }, {rows});
  EXPECT_TRUE(report.ok) << "scatter: " << report.worst;
}

TEST(GatherOps, OutOfRangeIndicesThrow) {
  const Tensor src = Tensor::from_vector(std::vector<double>(12, 1.0), Shape{4, 3});
  const Tensor bad = Tensor::from_vector(std::vector<int32_t>{0, 4}, Shape{2});
  EXPECT_THROW(coco::ops::gather_rows(src, bad), coco::TensorError);
  EXPECT_THROW(coco::ops::gather_rows(src.to(DType::f32).to(Device::cuda), bad.to(Device::cuda)), coco::TensorError);
  const Tensor rows = Tensor::from_vector(std::vector<double>(6, 1.0), Shape{2, 3});
  EXPECT_THROW(coco::ops::scatter_rows(rows, bad, 4), coco::TensorError);
  EXPECT_THROW(coco::ops::scatter_rows(rows.to(DType::f32).to(Device::cuda), bad.to(Device::cuda), 4),
               coco::TensorError);
  EXPECT_THROW(coco::ops::gather_rows(src, Tensor::from_vector(std::vector<int64_t>{0}, Shape{1})), coco::TensorError);
}

// gather on `device` in `dtype` with a gradient buffer of `grad_dtype`; returns (out, src grad).
std::pair<std::vector<double>, std::vector<double>> run_gather(Device device, DType dtype, DType grad_dtype,
                                                               const std::vector<float>& src_values,
                                                               const std::vector<int32_t>& index,
                                                               const std::vector<float>& seed_values) {
  Tensor src = Tensor::from_vector(src_values, Shape{9, 2, 17}).to(dtype).to(device);
  src.set_requires_grad(true).set_grad_dtype(grad_dtype);
  const Tensor idx = Tensor::from_vector(index, Shape{static_cast<int64_t>(index.size())}).to(device);
  coco::Tape tape;
  std::vector<double> out;
  {
    coco::Tape::Recording recording(tape);
    const Tensor y = coco::ops::gather_rows(src, idx);
    out = y.to_f64();
    tape.backward(y, Tensor::from_vector(seed_values, y.shape()).to(dtype).to(device));
  }
  return {out, src.grad().to_f64()};
}

TEST(GatherOps, CudaMatchesCpu) {
  const std::vector<int32_t> index = index_with_repeats(25, 18, 7);
  const std::vector<float> src =
      coco::testing::round_through<__nv_bfloat16>(coco::testing::random_floats(9 * 2 * 17, 8));
  const std::vector<float> dy = coco::testing::round_through<__nv_bfloat16>(coco::testing::random_floats(25 * 17, 9));
  const auto cpu = run_gather(Device::cpu, DType::f32, DType::f32, src, index, dy);
  // f32 on CUDA: a copy and f32 sums of the same terms in the same order: exact.
  const auto cuda = run_gather(Device::cuda, DType::f32, DType::f32, src, index, dy);
  EXPECT_EQ(cpu.first, cuda.first);
  EXPECT_EQ(cpu.second, cuda.second);
  // bf16 rows with an f32 gradient buffer: the values are bf16-exact, the sums f32: exact again.
  const auto mixed = run_gather(Device::cuda, DType::bf16, DType::f32, src, index, dy);
  EXPECT_EQ(cpu.first, mixed.first);
  EXPECT_EQ(cpu.second, mixed.second);
  // bf16 gradient buffer: one rounding of each sum at 2^-8: NMSE ~5e-6.
  const auto bf16 = run_gather(Device::cuda, DType::bf16, DType::bf16, src, index, dy);
  EXPECT_TRUE(coco::testing::matches_reference(cpu.second, bf16.second, 2e-5, "bf16 gradient"));
}

}  // namespace
