// CUDA reductions (under the SIMT emulator here) against the f64 CPU reference: full sum / mean,
// row sums, column sums (the bias gradient, with beta and mixed f32 output), and their broadcasts.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/simt/schedule_oracle.h"
#include "kernels/reduce.h"
#include "tests/common/kernel_check.h"

namespace coco {
namespace {

using testing::from_floats;
using testing::GuardedDeviceBuffer;
using testing::matches_reference;
using testing::random_floats;
using testing::round_through;
using testing::to_f64;

// NMSE limits for sums of rounded inputs, reference in f64 over the same inputs. Inputs are drawn
// from [0.1, 1) so no sum cancels and relative error is meaningful.
//   f32: f32 accumulation; each element passes through at most ~8 sequential adds plus a tree of
//        depth <= 16, relative error <= ~24 * 2^-24 = 1.4e-6 -> NMSE <= 2e-12; 1e-10.
//   bf16: the result is rounded once to bf16, relative error <= 2^-8 -> NMSE <= 1.5e-5; 2e-5.
//   f16: rounded once to f16, relative error <= 2^-11 -> NMSE <= 2.4e-7; 1e-6.
//   f64: f64 accumulation -> 1e-24.
template <class T>
constexpr double threshold() {
  return testing::rounded_output_threshold<T>(1e-10);
}

template <class T>
std::vector<float> rounded_positive(size_t count, unsigned seed) {
  return round_through<T>(random_floats(count, seed, 0.1f, 1.0f));
}

template <class T>
class ReduceKernel : public ::testing::Test {};
using ElementTypes = ::testing::Types<float, __nv_bfloat16, __half, double>;
TYPED_TEST_SUITE(ReduceKernel, ElementTypes);

TYPED_TEST(ReduceKernel, SumAndMeanMatchReference) {
  using T = TypeParam;
  // 5000 and 70000 need several stage-1 blocks; 70000 / 2048 > 32 blocks of partials.
  for (int64_t n : {1, 7, 33, 130, 5000, 70000}) {
    const std::vector<float> x = rounded_positive<T>(n, 100 + n);
    double total = 0.0;
    for (float v : x) total += v;
    GuardedDeviceBuffer<T> dx(from_floats<T>(x)), out(1);
    GuardedDeviceBuffer<uint8_t> workspace(kernels::cuda::sum_workspace_bytes(n));
    for (bool mean : {false, true}) {
      const double scale = mean ? 1.0 / static_cast<double>(n) : 1.0;
      out.poison();
      kernels::cuda::sum<T>(dx.data(), n, scale, out.data(), workspace.data(), nullptr);
      const std::string what = std::string(mean ? "mean" : "sum") + " n=" + std::to_string(n);
      EXPECT_TRUE(matches_reference({total * scale}, to_f64(out.download()), threshold<T>(), what));
      EXPECT_TRUE(out.guards_intact() && workspace.guards_intact()) << what;
    }
  }
}

TYPED_TEST(ReduceKernel, RowSumMatchesReference) {
  using T = TypeParam;
  for (int64_t rows : {1, 7, 33, 130}) {
    for (int64_t cols : {1, 7, 33, 130}) {
      const std::vector<float> x = rounded_positive<T>(rows * cols, 7 * rows + cols);
      std::vector<double> reference(rows, 0.0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) reference[r] += x[r * cols + c];
      GuardedDeviceBuffer<T> dx(from_floats<T>(x)), out(rows);
      out.poison();
      kernels::cuda::row_sum<T>(dx.data(), rows, cols, out.data(), nullptr);
      const std::string what = "row_sum " + std::to_string(rows) + "x" + std::to_string(cols);
      EXPECT_TRUE(matches_reference(reference, to_f64(out.download()), threshold<T>(), what));
      EXPECT_TRUE(out.guards_intact()) << what;
    }
  }
}

template <class In, class Out>
void check_column_sum(double out_threshold) {
  // 300 and 1100 rows split into several row chunks (partials + finalize kernel).
  for (int64_t rows : {1, 7, 33, 130, 300, 1100}) {
    for (int64_t cols : {1, 7, 33, 130}) {
      if (rows * cols > 40000) continue;  // keep emulated thread counts small
      const std::vector<float> x = rounded_positive<In>(rows * cols, 3 * rows + cols);
      const std::vector<float> previous = rounded_positive<Out>(cols, 5 * rows + cols);
      for (double beta : {0.0, 1.0}) {
        std::vector<double> reference(cols);
        for (int64_t c = 0; c < cols; ++c) {
          reference[c] = beta * previous[c];
          for (int64_t r = 0; r < rows; ++r) reference[c] += x[r * cols + c];
        }
        GuardedDeviceBuffer<In> dx(from_floats<In>(x));
        GuardedDeviceBuffer<Out> out(cols);
        if (beta == 0.0)
          out.poison();  // beta == 0 must ignore NaN garbage
        else
          out.upload(from_floats<Out>(previous));
        GuardedDeviceBuffer<uint8_t> workspace(kernels::cuda::column_sum_workspace_bytes(rows, cols));
        kernels::cuda::column_sum<In, Out>(dx.data(), rows, cols, beta, out.data(), workspace.data(), nullptr);
        const std::string what =
            "column_sum " + std::to_string(rows) + "x" + std::to_string(cols) + " beta=" + std::to_string(beta);
        EXPECT_TRUE(matches_reference(reference, to_f64(out.download()), out_threshold, what));
        EXPECT_TRUE(out.guards_intact() && workspace.guards_intact()) << what;
      }
    }
  }
}

TYPED_TEST(ReduceKernel, ColumnSumMatchesReference) {
  using T = TypeParam;
  check_column_sum<T, T>(threshold<T>());
}

TEST(ReduceKernel, ColumnSumIntoF32FromSixteenBit) {
  // f32 output: the f32 accumulation error only (see threshold<float>).
  check_column_sum<__nv_bfloat16, float>(threshold<float>());
  check_column_sum<__half, float>(threshold<float>());
}

TYPED_TEST(ReduceKernel, BroadcastBackwardsMatchReference) {
  using T = TypeParam;
  for (int64_t rows : {1, 7, 33, 130}) {
    for (int64_t cols : {1, 7, 33}) {
      const int64_t n = rows * cols;
      const std::vector<float> dy = rounded_positive<T>(rows, rows + cols);
      GuardedDeviceBuffer<T> d_dy(from_floats<T>(dy)), dx(n);
      dx.poison();
      kernels::cuda::row_sum_backward<T>(d_dy.data(), rows, cols, dx.data(), nullptr);
      std::vector<double> reference(n);
      for (int64_t i = 0; i < n; ++i) reference[i] = dy[i / cols];
      EXPECT_TRUE(matches_reference(reference, to_f64(dx.download()), 0.0, "row_sum_backward (a copy: exact)"));
      EXPECT_TRUE(dx.guards_intact());

      dx.poison();
      const double scale = 0.25;  // a power of two: scale * dy is exact in every type
      kernels::cuda::sum_backward<T>(d_dy.data(), n, scale, dx.data(), nullptr);
      for (int64_t i = 0; i < n; ++i) reference[i] = scale * dy[0];
      EXPECT_TRUE(matches_reference(reference, to_f64(dx.download()), 0.0, "sum_backward (exact)"));
      EXPECT_TRUE(dx.guards_intact());
    }
  }
}

TEST(ReduceKernel, NonFiniteInputsPropagate) {
  const int64_t rows = 9, cols = 5;
  std::vector<float> x = random_floats(rows * cols, 8);
  x[2 * cols + 1] = NAN;       // column 1 and row 2 become NaN
  x[4 * cols + 3] = INFINITY;  // column 3 and row 4 become +Inf
  std::vector<double> rows_ref(rows, 0.0), cols_ref(cols, 0.0);
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      rows_ref[r] += x[r * cols + c];
      cols_ref[c] += x[r * cols + c];
      total += x[r * cols + c];
    }
  GuardedDeviceBuffer<float> dx(x), row_out(rows), col_out(cols), sum_out(1);
  GuardedDeviceBuffer<uint8_t> workspace(kernels::cuda::sum_workspace_bytes(rows * cols));
  kernels::cuda::row_sum<float>(dx.data(), rows, cols, row_out.data(), nullptr);
  kernels::cuda::column_sum<float, float>(dx.data(), rows, cols, 0.0, col_out.data(), nullptr, nullptr);
  kernels::cuda::sum<float>(dx.data(), rows * cols, 1.0, sum_out.data(), workspace.data(), nullptr);
  // Values in [-1, 1): the finite sums may cancel, so compare with a loose f32 limit.
  EXPECT_TRUE(matches_reference(rows_ref, to_f64(row_out.download()), 1e-10, "row_sum with NaN/Inf"));
  EXPECT_TRUE(matches_reference(cols_ref, to_f64(col_out.download()), 1e-10, "column_sum with NaN/Inf"));
  EXPECT_TRUE(matches_reference({total}, to_f64(sum_out.download()), 1e-10, "sum with NaN/Inf"));
}

// Bitwise-identical results under every emulator schedule and shared-memory poison, and across
// repeated runs: the reductions use fixed trees and a shape-determined number of partials.
TEST(ReduceKernel, ScheduleInvariant) {
  const int64_t rows = 300, cols = 33, n = rows * cols;  // 5 sum blocks; 3 column chunks
  const std::vector<float> x = random_floats(n, 77);
  GuardedDeviceBuffer<float> dx(x), sum_out(1), row_out(rows), col_out(cols);
  GuardedDeviceBuffer<__nv_bfloat16> dx16(from_floats<__nv_bfloat16>(x));
  GuardedDeviceBuffer<uint8_t> sum_workspace(kernels::cuda::sum_workspace_bytes(n));
  GuardedDeviceBuffer<uint8_t> col_workspace(kernels::cuda::column_sum_workspace_bytes(rows, cols));
  const emu::OracleResult result = emu::check_schedule_invariance([&] {
    sum_out.poison();
    row_out.poison();
    col_out.poison();
    kernels::cuda::sum<float>(dx.data(), n, 1.0, sum_out.data(), sum_workspace.data(), nullptr);
    kernels::cuda::row_sum<float>(dx.data(), rows, cols, row_out.data(), nullptr);
    kernels::cuda::column_sum<__nv_bfloat16, float>(dx16.data(), rows, cols, 0.0, col_out.data(), col_workspace.data(),
                                                    nullptr);
    std::vector<uint8_t> bytes = sum_out.download_bytes();
    for (const auto* buffer : {&row_out, &col_out}) {
      const std::vector<uint8_t> more = buffer->download_bytes();
      bytes.insert(bytes.end(), more.begin(), more.end());
    }
    return bytes;
  });
  EXPECT_TRUE(result.identical) << result.message;
  EXPECT_GE(result.runs, 5);
}

TEST(ReduceKernel, RejectsBadArguments) {
  float value = 0.0f;
  EXPECT_THROW((kernels::cuda::sum<float>(&value, 100, 1.0, &value, nullptr, nullptr)), std::invalid_argument);
  EXPECT_THROW((kernels::cuda::row_sum<float>(&value, -1, 3, &value, nullptr)), std::invalid_argument);
  EXPECT_THROW((kernels::cuda::column_sum<float, float>(&value, 1000, 3, 0.0, &value, nullptr, nullptr)),
               std::invalid_argument);
  EXPECT_THROW((kernels::cpu::sum<float>(&value, -2, 1.0, &value)), std::invalid_argument);
  EXPECT_EQ(kernels::cuda::column_sum_workspace_bytes(100, 8), 0u);  // one chunk: no partials
  EXPECT_GT(kernels::cuda::column_sum_workspace_bytes(1000, 8), 0u);
}

TEST(ReduceKernel, CpuReferenceDefinitions) {
  const std::vector<double> x = {1, 2, 3, 4, 5, 6};  // (2, 3)
  std::vector<double> rows(2), cols = {10, 20, 30};
  double total = 0;
  kernels::cpu::sum<double>(x.data(), 6, 0.5, &total);
  EXPECT_EQ(total, 10.5);
  kernels::cpu::row_sum<double>(x.data(), 2, 3, rows.data());
  EXPECT_EQ(rows, (std::vector<double>{6, 15}));
  kernels::cpu::column_sum<double>(x.data(), 2, 3, 1.0, cols.data());
  EXPECT_EQ(cols, (std::vector<double>{15, 27, 39}));
  std::vector<double> dx(6);
  kernels::cpu::row_sum_backward<double>(rows.data(), 2, 3, dx.data());
  EXPECT_EQ(dx, (std::vector<double>{6, 6, 6, 15, 15, 15}));
}

}  // namespace
}  // namespace coco
