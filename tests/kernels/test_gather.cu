// Row gather and deterministic scatter-add: the CUDA kernels (emulated here) against the CPU
// reference at odd shapes, f32 / bf16 / f16 (with f32 accumulation targets), repeated indices,
// out-of-range indices (counted, never read or written), and bitwise schedule invariance of the
// scatter with many repeats.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#include "kernels/gather.h"
#include "tests/common/kernel_check.h"
#include "engine/simt/schedule_oracle.h"

namespace {

using coco::testing::expect_schedule_invariant;

using coco::testing::from_floats;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

// f32 scatter: f32 sums of a few terms, the same order as the reference: NMSE ~1e-15.
constexpr double kF32Threshold = 1e-12;
// bf16 outputs: one round-to-nearest at unit roundoff 2^-8 per element: NMSE ~5e-6 over many
// elements, at most 1.5e-5 for a single element (several cases have 1 to 5 outputs).
constexpr double kBf16Threshold = 2e-5;

struct Case {
  int64_t rows, dim, count;
};
std::string label(const Case& c) {
  return "rows=" + std::to_string(c.rows) + " dim=" + std::to_string(c.dim) + " count=" + std::to_string(c.count);
}

const Case kCases[] = {{1, 1, 1}, {7, 33, 5}, {33, 130, 40}, {130, 7, 33}, {20, 768, 9}, {5, 3, 0}};

// Indices with repeats (every 4th position repeats an earlier one).
std::vector<int32_t> make_index(const Case& c, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.rows - 1));
  std::vector<int32_t> index(static_cast<size_t>(c.count));
  for (int64_t m = 0; m < c.count; ++m)
    index[static_cast<size_t>(m)] = (m % 4 == 3) ? index[static_cast<size_t>(m / 2)] : pick(generator);
  return index;
}

template <class T>
std::vector<double> cuda_gather(const std::vector<float>& src, const Case& c, const std::vector<int32_t>& index,
                                int32_t* invalid_out, bool* guards_ok) {
  GuardedDeviceBuffer<T> d_src(from_floats<T>(src)), d_out(static_cast<size_t>(c.count * c.dim));
  GuardedDeviceBuffer<int32_t> d_index(index), d_invalid(1);
  d_out.poison();
  d_invalid.poison();
  coco::kernels::cuda::gather_rows(d_src.data(), c.rows, c.dim, d_index.data(), c.count, d_out.data(), d_invalid.data(),
                                   nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  *invalid_out = d_invalid.download()[0];
  *guards_ok = d_out.guards_intact() && d_invalid.guards_intact();
  return to_f64(d_out.download());
}

template <class Src, class Dst>
std::vector<double> cuda_scatter(const std::vector<float>& src, const std::vector<float>& initial, const Case& c,
                                 const std::vector<int32_t>& index, int32_t* invalid_out, bool* guards_ok) {
  GuardedDeviceBuffer<Src> d_src(from_floats<Src>(src));
  GuardedDeviceBuffer<Dst> d_out(from_floats<Dst>(initial));
  GuardedDeviceBuffer<int32_t> d_index(index), d_invalid(1);
  GuardedDeviceBuffer<uint8_t> workspace(coco::kernels::cuda::scatter_workspace_bytes(c.count, c.rows));
  workspace.poison();
  d_invalid.poison();
  coco::kernels::cuda::scatter_add_rows(d_src.data(), d_index.data(), c.count, c.dim, d_out.data(), c.rows,
                                        d_invalid.data(), workspace.data(), nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  *invalid_out = d_invalid.download()[0];
  *guards_ok = d_out.guards_intact() && workspace.guards_intact() && d_invalid.guards_intact();
  return to_f64(d_out.download());
}

template <class T>
class GatherCuda : public ::testing::Test {};
using RowTypes = ::testing::Types<float, __nv_bfloat16, __half>;
TYPED_TEST_SUITE(GatherCuda, RowTypes);

TYPED_TEST(GatherCuda, GatherCopiesRowsExactly) {
  using T = TypeParam;
  for (const Case& c : kCases) {
    const std::vector<float> src = round_through<T>(random_floats(static_cast<size_t>(c.rows * c.dim), 3));
    const std::vector<int32_t> index = make_index(c, 4);
    std::vector<float> ref(static_cast<size_t>(c.count * c.dim));
    coco::kernels::cpu::gather_rows(src.data(), c.rows, c.dim, index.data(), c.count, ref.data());
    int32_t invalid = -1;
    bool guards_ok = false;
    EXPECT_EQ(to_f64(ref), cuda_gather<T>(src, c, index, &invalid, &guards_ok)) << label(c);
    EXPECT_EQ(invalid, 0) << label(c);
    EXPECT_TRUE(guards_ok) << label(c);
  }
}

template <class Src, class Dst>
void check_scatter(double threshold) {
  for (const Case& c : kCases) {
    const std::vector<float> src = round_through<Src>(random_floats(static_cast<size_t>(c.count * c.dim), 5));
    const std::vector<float> initial = round_through<Dst>(random_floats(static_cast<size_t>(c.rows * c.dim), 6));
    const std::vector<int32_t> index = make_index(c, 7);
    std::vector<float> ref = initial;
    coco::kernels::cpu::scatter_add_rows(src.data(), index.data(), c.count, c.dim, ref.data(), c.rows);
    int32_t invalid = -1;
    bool guards_ok = false;
    EXPECT_TRUE(matches_reference(to_f64(ref), cuda_scatter<Src, Dst>(src, initial, c, index, &invalid, &guards_ok),
                                  threshold, "scatter " + label(c)));
    EXPECT_EQ(invalid, 0) << label(c);
    EXPECT_TRUE(guards_ok) << label(c);
  }
}

TEST(ScatterCuda, F32MatchesCpu) { check_scatter<float, float>(kF32Threshold); }
TEST(ScatterCuda, Bf16MatchesCpu) { check_scatter<__nv_bfloat16, __nv_bfloat16>(kBf16Threshold); }
TEST(ScatterCuda, Bf16IntoF32MatchesCpu) {
  // bf16 sources are exact in f32; the sums are f32 on both sides: f32 threshold.
  check_scatter<__nv_bfloat16, float>(kF32Threshold);
}
TEST(ScatterCuda, F16MatchesCpu) {
  // f16 destination: one rounding at 11 significant bits: NMSE ~1e-8.
  check_scatter<__half, __half>(kBf16Threshold);
  check_scatter<__half, float>(kF32Threshold);
}

TEST(ScatterCuda, RepeatedIndicesSumInPositionOrder) {
  // Three positions add to row 1. In position order (0, 2, 3) f32 gives (1e8 + 1) - 1e8 = 0, since
  // 1e8 + 1 rounds to 1e8; the order (0, 3, 2) would give 1.
  const Case c{3, 1, 4};
  const std::vector<float> src = {1e8f, 5.0f, 1.0f, -1e8f};
  const std::vector<int32_t> index = {1, 0, 1, 1};
  int32_t invalid = -1;
  bool guards_ok = false;
  const std::vector<double> got =
      cuda_scatter<float, float>(src, std::vector<float>(3, 0.0f), c, index, &invalid, &guards_ok);
  EXPECT_EQ(got, (std::vector<double>{5.0, 0.0, 0.0}));
  // The CPU reference adds in the same order.
  std::vector<float> ref(3, 0.0f);
  coco::kernels::cpu::scatter_add_rows(src.data(), index.data(), c.count, c.dim, ref.data(), c.rows);
  EXPECT_EQ(to_f64(ref), got);
}

TEST(GatherCuda, OutOfRangeIndicesAreCountedNotRead) {
  const Case c{4, 9, 5};
  const std::vector<float> src = random_floats(36, 1);
  const std::vector<int32_t> index = {0, 4, -1, 3, 1 << 30};
  int32_t invalid = -1;
  bool guards_ok = false;
  const std::vector<double> got = cuda_gather<float>(src, c, index, &invalid, &guards_ok);
  EXPECT_EQ(invalid, 3);
  EXPECT_TRUE(guards_ok);
  for (int64_t d = 0; d < c.dim; ++d) {
    EXPECT_EQ(got[static_cast<size_t>(d)], src[static_cast<size_t>(d)]);
    EXPECT_EQ(got[static_cast<size_t>(1 * c.dim + d)], 0.0);
    EXPECT_EQ(got[static_cast<size_t>(3 * c.dim + d)], src[static_cast<size_t>(3 * c.dim + d)]);
  }
  std::vector<float> out(45);
  EXPECT_THROW(coco::kernels::cpu::gather_rows(src.data(), c.rows, c.dim, index.data(), c.count, out.data()),
               std::invalid_argument);
  // Scatter: bad positions are skipped, the others still land.
  const std::vector<float> initial(36, 0.0f), rows5 = random_floats(45, 2);
  const std::vector<double> scattered = cuda_scatter<float, float>(rows5, initial, c, index, &invalid, &guards_ok);
  EXPECT_EQ(invalid, 3);
  EXPECT_TRUE(guards_ok);
  for (int64_t d = 0; d < c.dim; ++d) {
    EXPECT_EQ(scattered[static_cast<size_t>(d)], rows5[static_cast<size_t>(d)]);
    EXPECT_EQ(scattered[static_cast<size_t>(3 * c.dim + d)], rows5[static_cast<size_t>(3 * c.dim + d)]);
    EXPECT_EQ(scattered[static_cast<size_t>(1 * c.dim + d)], 0.0);
  }
  std::vector<float> target(36, 0.0f);
  EXPECT_THROW(coco::kernels::cpu::scatter_add_rows(rows5.data(), index.data(), c.count, c.dim, target.data(), c.rows),
               std::invalid_argument);
  for (float v : target) EXPECT_EQ(v, 0.0f);  // validated before any write
}

TEST(ScatterCuda, IsScheduleInvariantWithManyRepeats) {
  // 300 positions onto 7 rows: long buckets whose placement order depends on the schedule.
  const Case c{7, 19, 300};
  std::vector<int32_t> index(300);
  for (int m = 0; m < 300; ++m) index[static_cast<size_t>(m)] = (m * 5 + m / 7) % 7;
  const std::vector<float> src = random_floats(static_cast<size_t>(c.count * c.dim), 8, -1e3f, 1e3f);
  GuardedDeviceBuffer<float> d_src(src), d_out(static_cast<size_t>(c.rows * c.dim));
  GuardedDeviceBuffer<int32_t> d_index(index), d_invalid(1);
  GuardedDeviceBuffer<uint8_t> workspace(coco::kernels::cuda::scatter_workspace_bytes(c.count, c.rows));
  expect_schedule_invariant(
      [&] {
        COCO_CUDA_CHECK(cudaMemset(d_out.data(), 0, d_out.bytes()));
        workspace.poison(0x7F);
        coco::kernels::cuda::scatter_add_rows(d_src.data(), d_index.data(), c.count, c.dim, d_out.data(), c.rows,
                                              d_invalid.data(), workspace.data(), nullptr);
        COCO_CUDA_CHECK(cudaDeviceSynchronize());
        return d_out.download_bytes();
      },
      4);
  // And the result is the reference's (same summation order): exact.
  std::vector<float> ref(static_cast<size_t>(c.rows * c.dim), 0.0f);
  coco::kernels::cpu::scatter_add_rows(src.data(), index.data(), c.count, c.dim, ref.data(), c.rows);
  EXPECT_EQ(to_f64(ref), to_f64(d_out.download()));
}

TEST(GatherCuda, NanAndInfTravelWithTheirRows) {
  const Case c{4, 6, 5};
  std::vector<float> src = random_floats(24, 9);
  src[1 * 6 + 2] = NAN;
  src[3 * 6 + 0] = INFINITY;
  const std::vector<int32_t> index = {1, 3, 0, 1, 2};
  std::vector<float> ref(30);
  coco::kernels::cpu::gather_rows(src.data(), c.rows, c.dim, index.data(), c.count, ref.data());
  int32_t invalid = -1;
  bool guards_ok = false;
  EXPECT_TRUE(matches_reference(to_f64(ref), cuda_gather<float>(src, c, index, &invalid, &guards_ok), kF32Threshold,
                                "gather with NaN/Inf"));
  // Scatter back (rows 0 and 3 of the gathered block both land on source row 1): NaN and Inf
  // reach exactly the destination rows the reference has them in.
  std::vector<float> back(24, 0.0f);
  coco::kernels::cpu::scatter_add_rows(ref.data(), index.data(), c.count, c.dim, back.data(), c.rows);
  ASSERT_TRUE(std::isnan(back[1 * 6 + 2]) && std::isinf(back[3 * 6 + 0]) && std::isfinite(back[0]));
  EXPECT_TRUE(matches_reference(
      to_f64(back), cuda_scatter<float, float>(ref, std::vector<float>(24, 0.0f), c, index, &invalid, &guards_ok),
      kF32Threshold, "scatter with NaN/Inf"));
}

TEST(GatherCuda, GatherIsScheduleInvariant) {
  const Case c{30, 45, 50};
  const std::vector<int32_t> index = make_index(c, 3);
  using T = __nv_bfloat16;
  GuardedDeviceBuffer<T> d_src(from_floats<T>(random_floats(static_cast<size_t>(c.rows * c.dim), 4))),
      d_out(static_cast<size_t>(c.count * c.dim));
  GuardedDeviceBuffer<int32_t> d_index(index), d_invalid(1);
  expect_schedule_invariant(
      [&] {
        d_out.poison(0xFF);
        coco::kernels::cuda::gather_rows(d_src.data(), c.rows, c.dim, d_index.data(), c.count, d_out.data(),
                                         d_invalid.data(), nullptr);
        COCO_CUDA_CHECK(cudaDeviceSynchronize());
        return d_out.download_bytes();
      },
      2);
}

TEST(GatherCuda, RejectsBadSizes) {
  float dummy = 0.0f;
  int32_t index = 0, invalid = 0;
  EXPECT_THROW(coco::kernels::cuda::gather_rows(&dummy, 1, 0, &index, 1, &dummy, &invalid, nullptr),
               std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::scatter_add_rows(&dummy, &index, -1, 1, &dummy, 1, &invalid, nullptr, nullptr),
               std::invalid_argument);
}

}  // namespace
