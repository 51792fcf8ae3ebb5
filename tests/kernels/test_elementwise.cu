// CUDA elementwise kernels (run under the SIMT emulator here) against the CPU reference, at odd sizes,
// for f32, bf16, f16 (and f64), with guard bytes and poisoned outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/simt/schedule_oracle.h"
#include "kernels/elementwise.h"
#include "tests/common/kernel_check.h"

namespace coco {
namespace {

using kernels::BinaryOp;
using testing::from_floats;
using testing::GuardedDeviceBuffer;
using testing::matches_reference;
using testing::random_floats;
using testing::round_through;
using testing::to_f64;

const int64_t kSizes[] = {1, 7, 33, 130, 1031};

// NMSE limits. The reference sees the same (rounded) inputs and computes in f64, so the only error
// is the kernel's own arithmetic and the single rounding of each output:
//   f32:  one f32 operation, relative error <= 2^-24 per element -> NMSE <= 4e-15; 1e-12 leaves room.
//   bf16: output rounded to 8 significant bits, relative error <= 2^-8 -> NMSE <= 1.5e-5; 2e-5.
//   f16:  output rounded to 11 bits, relative error <= 2^-11 -> NMSE <= 2.4e-7; 1e-6.
//   f64:  computed in f64 -> 1e-24.
template <class T>
constexpr double threshold() {
  return testing::rounded_output_threshold<T>(1e-12);
}

template <class T>
class ElementwiseKernel : public ::testing::Test {};
using ElementTypes = ::testing::Types<float, __nv_bfloat16, __half, double>;
TYPED_TEST_SUITE(ElementwiseKernel, ElementTypes);

TYPED_TEST(ElementwiseKernel, BinaryOpsMatchReference) {
  using T = TypeParam;
  for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul}) {
    for (int64_t n : kSizes) {
      const std::vector<float> a = round_through<T>(random_floats(n, 11 + n)),
                               b = round_through<T>(random_floats(n, 23 + n));
      std::vector<double> reference(n);
      for (int64_t i = 0; i < n; ++i) {
        const double x = a[i], y = b[i];
        reference[i] = op == BinaryOp::add ? x + y : op == BinaryOp::sub ? x - y : x * y;
      }
      GuardedDeviceBuffer<T> da(from_floats<T>(a)), db(from_floats<T>(b)), out(n);
      out.poison();
      kernels::cuda::binary<T>(op, da.data(), db.data(), out.data(), n, nullptr);
      const std::string what = std::string(kernels::binary_op_name(op)) + " n=" + std::to_string(n);
      EXPECT_TRUE(matches_reference(reference, to_f64(out.download()), threshold<T>(), what));
      EXPECT_TRUE(out.guards_intact()) << what;
    }
  }
}

TYPED_TEST(ElementwiseKernel, ScaleAndAddScaledMatchReference) {
  using T = TypeParam;
  const double s = -0.375;  // exact in every type, so the reference sees the kernel's factor
  for (int64_t n : kSizes) {
    const std::vector<float> a = round_through<T>(random_floats(n, 5 + n)),
                             b = round_through<T>(random_floats(n, 9 + n));
    std::vector<double> scaled(n), axpy(n);
    for (int64_t i = 0; i < n; ++i) {
      scaled[i] = s * b[i];
      axpy[i] = a[i] + s * b[i];
    }
    GuardedDeviceBuffer<T> da(from_floats<T>(a)), db(from_floats<T>(b)), out(n);
    out.poison();
    kernels::cuda::scale<T>(db.data(), s, out.data(), n, nullptr);
    EXPECT_TRUE(matches_reference(scaled, to_f64(out.download()), threshold<T>(), "scale n=" + std::to_string(n)));
    out.poison();
    kernels::cuda::add_scaled<T>(da.data(), db.data(), s, out.data(), n, nullptr);
    EXPECT_TRUE(matches_reference(axpy, to_f64(out.download()), threshold<T>(), "add_scaled n=" + std::to_string(n)));
    EXPECT_TRUE(out.guards_intact());
  }
}

TYPED_TEST(ElementwiseKernel, InPlaceOutputAliasingAnInput) {
  using T = TypeParam;
  const int64_t n = 130;
  const std::vector<float> a = round_through<T>(random_floats(n, 1)), b = round_through<T>(random_floats(n, 2));
  std::vector<double> reference(n);
  for (int64_t i = 0; i < n; ++i) reference[i] = static_cast<double>(a[i]) * b[i];
  GuardedDeviceBuffer<T> da(from_floats<T>(a)), db(from_floats<T>(b));
  kernels::cuda::binary<T>(BinaryOp::mul, da.data(), db.data(), da.data(), n, nullptr);
  EXPECT_TRUE(matches_reference(reference, to_f64(da.download()), threshold<T>(), "a *= b"));
  kernels::cuda::add_inplace<T, T>(db.data(), db.data(), n, nullptr);  // b += b
  std::vector<double> doubled(n);
  for (int64_t i = 0; i < n; ++i) doubled[i] = 2.0 * b[i];
  EXPECT_TRUE(matches_reference(doubled, to_f64(db.download()), 0.0, "b += b (exact)"));
}

TYPED_TEST(ElementwiseKernel, AddInplaceAndMulBackwardMatchReference) {
  using T = TypeParam;
  for (int64_t n : kSizes) {
    const std::vector<float> g = round_through<T>(random_floats(n, 31 + n)),
                             a = round_through<T>(random_floats(n, 37 + n)),
                             b = round_through<T>(random_floats(n, 41 + n));
    std::vector<double> sum(n), grad_a(n), grad_b(n);
    for (int64_t i = 0; i < n; ++i) {
      sum[i] = static_cast<double>(a[i]) + b[i];
      grad_a[i] = static_cast<double>(g[i]) * b[i];
      grad_b[i] = static_cast<double>(g[i]) * a[i];
    }
    GuardedDeviceBuffer<T> dst(from_floats<T>(a)), src(from_floats<T>(b));
    kernels::cuda::add_inplace<T, T>(dst.data(), src.data(), n, nullptr);
    EXPECT_TRUE(matches_reference(sum, to_f64(dst.download()), threshold<T>(), "add_inplace n=" + std::to_string(n)));
    EXPECT_TRUE(dst.guards_intact());

    GuardedDeviceBuffer<T> dg(from_floats<T>(g)), da(from_floats<T>(a)), db(from_floats<T>(b)), ga(n), gb(n);
    ga.poison();
    gb.poison();
    kernels::cuda::mul_backward<T>(dg.data(), da.data(), db.data(), ga.data(), gb.data(), n, nullptr);
    EXPECT_TRUE(matches_reference(grad_a, to_f64(ga.download()), threshold<T>(), "mul_backward da"));
    EXPECT_TRUE(matches_reference(grad_b, to_f64(gb.download()), threshold<T>(), "mul_backward db"));
    EXPECT_TRUE(ga.guards_intact() && gb.guards_intact());
    // A null output is skipped (its buffer stays poisoned).
    gb.poison();
    kernels::cuda::mul_backward<T>(dg.data(), da.data(), db.data(), ga.data(), nullptr, n, nullptr);
    for (double v : to_f64(gb.download())) ASSERT_TRUE(std::isnan(v));
  }
}

// f32 gradient buffers of 16-bit tensors: dst f32 += src bf16/f16, summed in f32 (no rounding to 16 bits).
template <class Src>
void check_mixed_add_inplace() {
  for (int64_t n : kSizes) {
    const std::vector<float> dst_values = random_floats(n, 3 + n),
                             src_values = round_through<Src>(random_floats(n, 4 + n));
    std::vector<double> reference(n);
    for (int64_t i = 0; i < n; ++i) reference[i] = static_cast<double>(dst_values[i]) + src_values[i];
    GuardedDeviceBuffer<float> dst(dst_values);
    GuardedDeviceBuffer<Src> src(from_floats<Src>(src_values));
    kernels::cuda::add_inplace<float, Src>(dst.data(), src.data(), n, nullptr);
    // f32 sum of two f32-representable values: one rounding, NMSE <= 4e-15.
    EXPECT_TRUE(
        matches_reference(reference, to_f64(dst.download()), 1e-12, "mixed add_inplace n=" + std::to_string(n)));
    EXPECT_TRUE(dst.guards_intact());
  }
}

TEST(ElementwiseKernel, MixedPrecisionAddInplace) {
  check_mixed_add_inplace<__nv_bfloat16>();
  check_mixed_add_inplace<__half>();
}

TEST(ElementwiseKernel, CpuReferenceMatchesDefinition) {
  const int64_t n = 33;
  const std::vector<float> a = random_floats(n, 1), b = random_floats(n, 2);
  std::vector<float> out(n), da(n), db(n), g(a);
  kernels::cpu::binary<float>(BinaryOp::sub, a.data(), b.data(), out.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], a[i] - b[i]);
  kernels::cpu::add_scaled<float>(a.data(), b.data(), 2.0, out.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(out[i], a[i] + 2.0f * b[i]);
  kernels::cpu::mul_backward<float>(g.data(), a.data(), b.data(), da.data(), db.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(da[i], a[i] * b[i]);
    EXPECT_EQ(db[i], a[i] * a[i]);
  }
  EXPECT_THROW((kernels::cpu::add_inplace<float>(out.data(), a.data(), -1)), std::invalid_argument);
  EXPECT_THROW((kernels::cuda::scale<float>(a.data(), 1.0, out.data(), -1, nullptr)), std::invalid_argument);
}

// NaN and Inf propagate to the same positions as in the reference (Inf - Inf = NaN, 0 * Inf = NaN).
TYPED_TEST(ElementwiseKernel, NanAndInfPropagate) {
  using T = TypeParam;
  const float inf = INFINITY, nan = NAN;
  const std::vector<float> a = {1.0f, nan, inf, -inf, inf, 0.0f, 2.0f}, b = {nan, 1.0f, inf, 1.0f, -inf, inf, -inf};
  const int64_t n = static_cast<int64_t>(a.size());
  for (BinaryOp op : {BinaryOp::add, BinaryOp::sub, BinaryOp::mul}) {
    std::vector<double> reference(n);
    for (int64_t i = 0; i < n; ++i) {
      const double x = a[i], y = b[i];
      reference[i] = op == BinaryOp::add ? x + y : op == BinaryOp::sub ? x - y : x * y;
    }
    GuardedDeviceBuffer<T> da(from_floats<T>(a)), db(from_floats<T>(b)), out(n);
    kernels::cuda::binary<T>(op, da.data(), db.data(), out.data(), n, nullptr);
    EXPECT_TRUE(matches_reference(reference, to_f64(out.download()), threshold<T>(),
                                  std::string("non-finite ") + kernels::binary_op_name(op)));
  }
}

// Elementwise kernels have no cross-thread communication: any schedule gives the same bits.
TEST(ElementwiseKernel, ScheduleInvariant) {
  const int64_t n = 1031;
  const std::vector<float> a = random_floats(n, 1), b = random_floats(n, 2);
  GuardedDeviceBuffer<__nv_bfloat16> da(from_floats<__nv_bfloat16>(a)), db(from_floats<__nv_bfloat16>(b)), out(n);
  GuardedDeviceBuffer<float> accumulator(n);
  const emu::OracleResult result = emu::check_schedule_invariance([&] {
    out.poison();
    accumulator.upload(a);
    kernels::cuda::binary<__nv_bfloat16>(BinaryOp::mul, da.data(), db.data(), out.data(), n, nullptr);
    kernels::cuda::add_inplace<float, __nv_bfloat16>(accumulator.data(), out.data(), n, nullptr);
    std::vector<uint8_t> bytes = out.download_bytes(), more = accumulator.download_bytes();
    bytes.insert(bytes.end(), more.begin(), more.end());
    return bytes;
  });
  EXPECT_TRUE(result.identical) << result.message;
}

}  // namespace
}  // namespace coco
