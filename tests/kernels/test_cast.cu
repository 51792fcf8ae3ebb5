// Casts, fill and copy: the CUDA kernels (emulated here) against the CPU path, bitwise, for every
// dtype pair, plus the conversion rules themselves (rounding, NaN/Inf, integer saturation).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/dtype.h"
#include "engine/runtime/check.h"
#include "kernels/cast.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::DType;
using coco::testing::GuardedDeviceBuffer;

constexpr DType kAllDtypes[] = {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8};

// Source bytes for `n` elements of `dtype`: a mix of ordinary values, values that exercise rounding
// and saturation, and (for float dtypes) NaN and +-Inf.
std::vector<uint8_t> source_bytes(DType dtype, int64_t n, unsigned seed) {
  std::vector<double> values =
      coco::testing::to_f64(coco::testing::random_floats(static_cast<size_t>(n), seed, -300.0f, 300.0f));
  const double specials[] = {0.0,
                             -0.0,
                             0.5,
                             -0.5,
                             1.5,
                             2.5,
                             -2.5,
                             255.5,
                             256.0,
                             -1.0,
                             1e10,
                             -1e10,
                             3e38,
                             70000.0,
                             1.0 + 1.0 / 256.0,
                             1.0 + 3.0 / 256.0,
                             NAN,
                             INFINITY,
                             -INFINITY};
  for (size_t i = 0; i < values.size(); i += 3) values[i] = specials[(i / 3) % std::size(specials)];
  std::vector<uint8_t> bytes(static_cast<size_t>(n) * coco::dtype_size(dtype));
  // Build the source through the CPU cast from f64 (already tested against hand values below).
  coco::kernels::cpu::cast(values.data(), DType::f64, bytes.data(), dtype, n);
  if (dtype == DType::i64) {  // values beyond 2^53 and near the i64 limits
    auto* v = reinterpret_cast<int64_t*>(bytes.data());
    for (int64_t i = 1; i < n; i += 5) v[i] = (i % 2 ? 1 : -1) * ((int64_t{1} << 62) + i * 977);
  }
  return bytes;
}

class CastAllPairs : public ::testing::TestWithParam<int64_t> {};

TEST_P(CastAllPairs, CudaMatchesCpuBitwise) {
  const int64_t n = GetParam();
  for (DType src_dtype : kAllDtypes) {
    const std::vector<uint8_t> src = source_bytes(src_dtype, n, static_cast<unsigned>(n) + 11);
    GuardedDeviceBuffer<uint8_t> device_src(src);
    for (DType dst_dtype : kAllDtypes) {
      const size_t dst_bytes = static_cast<size_t>(n) * coco::dtype_size(dst_dtype);
      std::vector<uint8_t> expected(dst_bytes);
      coco::kernels::cpu::cast(src.data(), src_dtype, expected.data(), dst_dtype, n);
      GuardedDeviceBuffer<uint8_t> device_dst(dst_bytes);
      device_dst.poison();
      coco::kernels::cuda::cast(device_src.data(), src_dtype, device_dst.data(), dst_dtype, n, nullptr);
      COCO_CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(device_dst.download(), expected)
          << coco::dtype_name(src_dtype) << " -> " << coco::dtype_name(dst_dtype) << " n=" << n;
      EXPECT_TRUE(device_dst.guards_intact()) << coco::dtype_name(src_dtype) << " -> " << coco::dtype_name(dst_dtype);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, CastAllPairs, ::testing::Values(1, 7, 33, 130, 1001));

float cpu_cast_f64_to_f32(double value) {
  float out = 0.0f;
  coco::kernels::cpu::cast(&value, DType::f64, &out, DType::f32, 1);
  return out;
}

template <class Dst, class Src>
Dst cpu_cast(Src value, DType src_dtype, DType dst_dtype) {
  Dst out{};
  coco::kernels::cpu::cast(&value, src_dtype, &out, dst_dtype, 1);
  return out;
}

uint16_t bits_of(__nv_bfloat16 v) {
  uint16_t b;
  std::memcpy(&b, &v, 2);
  return b;
}

TEST(CastRules, FloatToBf16RoundsToNearestEven) {
  // 1 + 2^-8 lies exactly between bf16 neighbours 1 and 1 + 2^-7: ties go to the even one (1.0).
  EXPECT_EQ(bits_of(cpu_cast<__nv_bfloat16>(1.0f + 1.0f / 256.0f, DType::f32, DType::bf16)), 0x3F80);
  // 1 + 3*2^-8 lies between 1 + 2^-7 (odd mantissa) and 1 + 2^-6: ties go to 1 + 2^-6.
  EXPECT_EQ(bits_of(cpu_cast<__nv_bfloat16>(1.0f + 3.0f / 256.0f, DType::f32, DType::bf16)), 0x3F82);
  EXPECT_EQ(bits_of(cpu_cast<__nv_bfloat16>(-2.0f, DType::f32, DType::bf16)), 0xC000);
  EXPECT_TRUE(std::isnan(__bfloat162float(cpu_cast<__nv_bfloat16>(NAN, DType::f32, DType::bf16))));
  EXPECT_EQ(__bfloat162float(cpu_cast<__nv_bfloat16>(std::numeric_limits<float>::max(), DType::f32, DType::bf16)),
            INFINITY);
}

TEST(CastRules, F16OverflowsToInfinity) {
  EXPECT_EQ(__half2float(cpu_cast<__half>(70000.0f, DType::f32, DType::f16)), INFINITY);
  EXPECT_EQ(__half2float(cpu_cast<__half>(-70000.0f, DType::f32, DType::f16)), -INFINITY);
  EXPECT_EQ(__half2float(cpu_cast<__half>(0.333251953125f, DType::f32, DType::f16)), 0.333251953125f);  // exact in f16
}

TEST(CastRules, FloatToIntTruncatesAndSaturates) {
  EXPECT_EQ((cpu_cast<int32_t>(2.9f, DType::f32, DType::i32)), 2);
  EXPECT_EQ((cpu_cast<int32_t>(-2.9f, DType::f32, DType::i32)), -2);
  EXPECT_EQ((cpu_cast<int32_t>(3e10f, DType::f32, DType::i32)), std::numeric_limits<int32_t>::max());
  EXPECT_EQ((cpu_cast<int32_t>(-INFINITY, DType::f32, DType::i32)), std::numeric_limits<int32_t>::min());
  EXPECT_EQ((cpu_cast<int32_t>(NAN, DType::f32, DType::i32)), 0);
  EXPECT_EQ((cpu_cast<uint8_t>(-3.0f, DType::f32, DType::u8)), 0);
  EXPECT_EQ((cpu_cast<uint8_t>(300.0f, DType::f32, DType::u8)), 255);
  EXPECT_EQ((cpu_cast<int64_t>(1e19, DType::f64, DType::i64)), std::numeric_limits<int64_t>::max());
  EXPECT_EQ((cpu_cast<int64_t>(-9.3e18, DType::f64, DType::i64)), std::numeric_limits<int64_t>::min());
}

TEST(CastRules, IntegersWidenExactlyAndWrapWhenNarrowed) {
  EXPECT_EQ((cpu_cast<double>(int32_t{-123456789}, DType::i32, DType::f64)), -123456789.0);
  EXPECT_EQ((cpu_cast<float>(int32_t{16777217}, DType::i32, DType::f32)), 16777216.0f);  // nearest f32
  EXPECT_EQ((cpu_cast<float>(int64_t{(1ll << 40) + 1}, DType::i64, DType::f32)), 1099511627776.0f);
  EXPECT_EQ((cpu_cast<int32_t>(int64_t{(1ll << 32) + 5}, DType::i64, DType::i32)), 5);
  EXPECT_EQ((cpu_cast<uint8_t>(int32_t{-1}, DType::i32, DType::u8)), 255);
  EXPECT_EQ((cpu_cast<int64_t>(uint8_t{200}, DType::u8, DType::i64)), 200);
}

TEST(CastRules, F64ToF32RoundsOnceAndKeepsSpecials) {
  EXPECT_EQ(cpu_cast_f64_to_f32(0.1), 0.1f);
  EXPECT_EQ(cpu_cast_f64_to_f32(1e300), INFINITY);
  EXPECT_TRUE(std::isnan(cpu_cast_f64_to_f32(NAN)));
  EXPECT_EQ(std::signbit(cpu_cast_f64_to_f32(-0.0)), true);
}

TEST(CastRules, SameDtypeIsACopyAndInPlaceIsANoop) {
  std::vector<float> values = {1.0f, NAN, -3.0f};
  std::vector<float> out(3, 0.0f);
  coco::kernels::cpu::cast(values.data(), DType::f32, out.data(), DType::f32, 3);
  EXPECT_EQ(std::memcmp(values.data(), out.data(), sizeof(float) * 3), 0);
  coco::kernels::cpu::cast(out.data(), DType::f32, out.data(), DType::f32, 3);
  EXPECT_EQ(out[2], -3.0f);
}

TEST(CastRules, RejectsNegativeCountAndUnknownDtype) {
  float value = 0.0f;
  EXPECT_THROW(coco::kernels::cpu::cast(&value, DType::f32, &value, DType::f64, -1), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::cast(&value, DType::f32, &value, DType::f64, -1, nullptr), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::cast(&value, static_cast<DType>(77), &value, DType::f32, 1), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::fill(&value, static_cast<DType>(77), 1.0, 1, nullptr), std::invalid_argument);
}

TEST(Cast, GridStrideLoopCoversMoreElementsThanOneLaunchWave) {
  // More elements than kMaxElementwiseBlocks * 256, so threads loop.
  const int64_t n = 8192 * 256 + 77;
  std::vector<float> src(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) src[static_cast<size_t>(i)] = static_cast<float>(i % 1000) * 0.37f - 100.0f;
  std::vector<__nv_bfloat16> expected(static_cast<size_t>(n));
  coco::kernels::cpu::cast(src.data(), DType::f32, expected.data(), DType::bf16, n);
  GuardedDeviceBuffer<float> device_src(src);
  GuardedDeviceBuffer<__nv_bfloat16> device_dst(static_cast<size_t>(n));
  device_dst.poison();
  coco::kernels::cuda::cast(device_src.data(), DType::f32, device_dst.data(), DType::bf16, n, nullptr);
  const std::vector<__nv_bfloat16> got = device_dst.download();
  EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size() * 2), 0);
  EXPECT_TRUE(device_dst.guards_intact());
}

TEST(Fill, CudaMatchesCpuForEveryDtype) {
  const double values[] = {0.0, -1.25, 3.7, 1e30, -1e30, NAN, INFINITY};
  for (DType dtype : kAllDtypes) {
    for (double value : values) {
      for (int64_t n : {1, 7, 130}) {
        const size_t bytes = static_cast<size_t>(n) * coco::dtype_size(dtype);
        std::vector<uint8_t> expected(bytes, 0x11);
        coco::kernels::cpu::fill(expected.data(), dtype, value, n);
        GuardedDeviceBuffer<uint8_t> device(bytes);
        device.poison();
        coco::kernels::cuda::fill(device.data(), dtype, value, n, nullptr);
        EXPECT_EQ(device.download(), expected) << coco::dtype_name(dtype) << " value " << value << " n=" << n;
        EXPECT_TRUE(device.guards_intact());
      }
    }
  }
}

TEST(Fill, ValuesFollowTheCastRules) {
  std::vector<__nv_bfloat16> bf(3);
  coco::kernels::cpu::fill(bf.data(), DType::bf16, 1.0 + 1.0 / 256.0, 3);
  EXPECT_EQ(bits_of(bf[2]), 0x3F80);
  std::vector<int32_t> ints(2);
  coco::kernels::cpu::fill(ints.data(), DType::i32, -7.9, 2);
  EXPECT_EQ(ints[1], -7);
  std::vector<uint8_t> bytes(4);
  coco::kernels::cpu::fill(bytes.data(), DType::u8, 1000.0, 4);
  EXPECT_EQ(bytes[3], 255);
}

TEST(Copy, DeviceCopyMovesBytesExactly) {
  std::vector<uint8_t> src(1037);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 31 + 7);
  GuardedDeviceBuffer<uint8_t> device_src(src);
  GuardedDeviceBuffer<uint8_t> device_dst(src.size());
  device_dst.poison();
  coco::kernels::cuda::copy(device_dst.data(), device_src.data(), src.size(), nullptr);
  EXPECT_EQ(device_dst.download(), src);
  EXPECT_TRUE(device_dst.guards_intact());
  std::vector<uint8_t> host(src.size());
  coco::kernels::cpu::copy(host.data(), src.data(), src.size());
  EXPECT_EQ(host, src);
}

}  // namespace
