// Relative-position buckets and bias: the bucket function against hand-computed values and the
// research tables, the CUDA bucket / gather / scatter kernels (emulated here) against the CPU
// reference, the inverse index, special values, and bitwise schedule invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#include "engine/simt/schedule_oracle.h"
#include "kernels/relpos.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::kernels::BiasTableLayout;
using coco::kernels::RelativePositionConfig;
using coco::testing::from_floats;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

const RelativePositionConfig kBase{32, 128, 512};
const RelativePositionConfig kBasePlus{64, 128, 512};
const RelativePositionConfig kLargePlus{128, 256, 512};

std::vector<int32_t> cpu_buckets(int64_t seq_len, const RelativePositionConfig& c) {
  std::vector<int32_t> b(static_cast<size_t>(seq_len * seq_len));
  coco::kernels::cpu::relative_position_buckets(b.data(), seq_len, c);
  return b;
}

// Worked by hand from the formula: base config (32 buckets, max distance 128, offset 15).
//   n = 9:  ln(9/8)/ln(127/8)*7 = 0.298  -> ceil 1 -> 8 + 1 = 9
//   n = 11: ln(11/8)/ln(127/8)*7 = 0.806 -> 9;   n = 12: 1.027 -> 10;  n = 17: 1.908 -> 10;  n = 18: 2.053 -> 11
//   n = 85: 5.983 -> 14;  n = 86: 6.013 -> 15 (= half - 1, the cap)
TEST(RelposBuckets, HandComputedValues) {
  const std::vector<int32_t> b = cpu_buckets(130, kBase);
  auto at = [&](int i, int j) { return b[static_cast<size_t>(i * 130 + j)]; };
  EXPECT_EQ(at(0, 0), 15);
  EXPECT_EQ(at(0, 7), 22);
  EXPECT_EQ(at(0, 8), 23);
  EXPECT_EQ(at(0, 9), 24);
  EXPECT_EQ(at(0, 11), 24);
  EXPECT_EQ(at(0, 12), 25);
  EXPECT_EQ(at(3, 20), 25);  // rel 17
  EXPECT_EQ(at(2, 20), 26);  // rel 18
  EXPECT_EQ(at(0, 85), 29);
  EXPECT_EQ(at(0, 86), 30);
  EXPECT_EQ(at(10, 129), 30);  // rel 119, capped
  EXPECT_EQ(at(5, 0), 10);     // rel -5
  EXPECT_EQ(at(12, 0), 5);     // rel -12 -> -10
  EXPECT_EQ(at(100, 0), 0);    // rel -100 -> -15
  EXPECT_EQ(at(129, 129), 15);

  // base++ (64 buckets, max distance 128, offset 31): n = 16 -> 16 (ln 1 = 0), n = 17 -> 17,
  // n = 110 -> 30, n = 111 -> 31.
  const std::vector<int32_t> c = cpu_buckets(130, kBasePlus);
  auto at2 = [&](int i, int j) { return c[static_cast<size_t>(i * 130 + j)]; };
  EXPECT_EQ(at2(0, 15), 46);
  EXPECT_EQ(at2(0, 16), 47);
  EXPECT_EQ(at2(0, 17), 48);
  EXPECT_EQ(at2(0, 110), 61);
  EXPECT_EQ(at2(0, 111), 62);
  EXPECT_EQ(at2(17, 0), 14);
  EXPECT_EQ(at2(111, 0), 0);
}

// "First n of each new bucket" columns of the table in coco-lm-research.md section 3.2.
void expect_bucket_starts(const RelativePositionConfig& c, int exact_below, int first_log_bucket,
                          const std::vector<int>& starts) {
  const int half = c.num_buckets / 2;
  for (int n = 0; n < 512; ++n) {
    int expected;
    if (n < exact_below) {
      expected = n;
    } else {
      expected = first_log_bucket;
      for (int s : starts)
        if (n >= s) ++expected;
    }
    ASSERT_EQ(coco::kernels::relative_position_bucket_signed(n, c.num_buckets, c.max_distance), expected)
        << "num_buckets " << c.num_buckets << " n " << n;
    ASSERT_EQ(coco::kernels::relative_position_bucket_signed(-n, c.num_buckets, c.max_distance), -expected);
    ASSERT_EQ(coco::kernels::relative_position_bucket(0, n, c), expected + half - 1);
  }
}

TEST(RelposBuckets, MatchesResearchTables) {
  expect_bucket_starts(kBase, 8, 8, {9, 12, 18, 27, 39, 58, 86});
  expect_bucket_starts(kBasePlus, 16, 16, {17, 19, 22, 25, 28, 32, 37, 43, 49, 56, 64, 74, 84, 97, 111});
  expect_bucket_starts(kLargePlus, 32, 32, {33, 35,  37,  40,  42,  45,  48,  52,  55,  59,  63,  67,  72,  77,  82, 88,
                                            94, 100, 107, 115, 123, 131, 140, 150, 160, 171, 183, 196, 209, 224, 239});
}

TEST(RelposBuckets, CudaTableMatchesCpuBitwise) {
  for (const RelativePositionConfig& c : {kBase, kBasePlus, kLargePlus, RelativePositionConfig{8, 20, 40}}) {
    for (int64_t t : {1, 7, 33, 130}) {
      if (t > c.max_positions) continue;
      GuardedDeviceBuffer<int32_t> device(static_cast<size_t>(t * t));
      device.poison();
      coco::kernels::cuda::relative_position_buckets(device.data(), t, c, nullptr);
      COCO_CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(device.download(), cpu_buckets(t, c)) << "num_buckets " << c.num_buckets << " T " << t;
      EXPECT_TRUE(device.guards_intact());
    }
  }
}

TEST(RelposBuckets, InvalidConfigsThrow) {
  std::vector<int32_t> b(16);
  EXPECT_THROW(coco::kernels::cpu::relative_position_buckets(b.data(), 4, {2, 128, 512}), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::relative_position_buckets(b.data(), 4, {32, 9, 512}), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::relative_position_buckets(b.data(), 4, {32, 128, 3}), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::relative_position_buckets(b.data(), 0, kBase), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::relative_position_buckets(nullptr, 600, kBase, nullptr), std::invalid_argument);
}

TEST(RelposBuckets, InverseIndexListsEveryPositionOnceAscending) {
  const int64_t t = 33;
  const std::vector<int32_t> b = cpu_buckets(t, kBase);
  std::vector<int32_t> offsets(kBase.num_buckets + 1), positions(static_cast<size_t>(t * t));
  coco::kernels::cpu::relative_position_bucket_index(b.data(), t, kBase.num_buckets, offsets.data(), positions.data());
  EXPECT_EQ(offsets.front(), 0);
  EXPECT_EQ(offsets.back(), t * t);
  std::vector<int> seen(static_cast<size_t>(t * t), 0);
  for (int k = 0; k < kBase.num_buckets; ++k) {
    for (int32_t q = offsets[k]; q < offsets[k + 1]; ++q) {
      const int32_t p = positions[static_cast<size_t>(q)];
      EXPECT_EQ(b[static_cast<size_t>(p)], k);
      if (q > offsets[k]) {
        EXPECT_LT(positions[static_cast<size_t>(q - 1)], p);
      }
      ++seen[static_cast<size_t>(p)];
    }
  }
  for (int count : seen) EXPECT_EQ(count, 1);
  std::vector<int32_t> bad = b;
  bad[5] = kBase.num_buckets;
  EXPECT_THROW(coco::kernels::cpu::relative_position_bucket_index(bad.data(), t, kBase.num_buckets, offsets.data(),
                                                                  positions.data()),
               std::invalid_argument);
}

struct BucketIndex {
  std::vector<int32_t> buckets, offsets, positions;
};

BucketIndex make_index(int64_t t, const RelativePositionConfig& c) {
  BucketIndex index{cpu_buckets(t, c), std::vector<int32_t>(static_cast<size_t>(c.num_buckets) + 1),
                    std::vector<int32_t>(static_cast<size_t>(t * t))};
  coco::kernels::cpu::relative_position_bucket_index(index.buckets.data(), t, c.num_buckets, index.offsets.data(),
                                                     index.positions.data());
  return index;
}

template <class T>
void check_gather(int64_t heads, int64_t t, const RelativePositionConfig& c, BiasTableLayout layout, unsigned seed) {
  const BucketIndex index = make_index(t, c);
  const std::vector<float> table = round_through<T>(random_floats(static_cast<size_t>(heads * c.num_buckets), seed));
  std::vector<float> expected(static_cast<size_t>(heads * t * t));
  coco::kernels::cpu::relative_position_bias_forward(table.data(), layout, index.buckets.data(), expected.data(), heads,
                                                     t, c.num_buckets);
  GuardedDeviceBuffer<T> device_table(from_floats<T>(table));
  GuardedDeviceBuffer<int32_t> device_buckets(index.buckets);
  GuardedDeviceBuffer<T> device_bias(expected.size());
  device_bias.poison();
  coco::kernels::cuda::relative_position_bias_forward(device_table.data(), layout, device_buckets.data(),
                                                      device_bias.data(), heads, t, c.num_buckets, nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  // A gather is a copy: exact.
  EXPECT_EQ(to_f64(device_bias.download()), to_f64(from_floats<T>(expected))) << "H " << heads << " T " << t;
  EXPECT_TRUE(device_bias.guards_intact());
}

TEST(RelposBias, GatherMatchesCpuExactly) {
  const BiasTableLayout hb = BiasTableLayout::heads_by_buckets, bh = BiasTableLayout::buckets_by_heads;
  check_gather<float>(3, 1, kBase, hb, 1);
  check_gather<float>(2, 7, kBase, bh, 2);
  check_gather<float>(4, 33, kBasePlus, hb, 3);
  check_gather<float>(3, 33, kBasePlus, bh, 3);
  check_gather<float>(1, 130, kLargePlus, bh, 4);
  check_gather<__nv_bfloat16>(3, 33, kBase, bh, 5);
  check_gather<__half>(2, 7, kBase, hb, 6);
}

// The layout only changes where (h, k) lives: table (NB, H) is the transpose of table (H, NB).
TEST(RelposBias, LayoutsAreTransposes) {
  const int64_t heads = 3, t = 7;
  const BucketIndex index = make_index(t, kBase);
  const std::vector<float> by_heads = random_floats(static_cast<size_t>(heads * kBase.num_buckets), 9);
  std::vector<float> by_buckets(by_heads.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int k = 0; k < kBase.num_buckets; ++k)
      by_buckets[static_cast<size_t>(k * heads + h)] = by_heads[static_cast<size_t>(h * kBase.num_buckets + k)];
  std::vector<float> a(static_cast<size_t>(heads * t * t)), b(a.size());
  coco::kernels::cpu::relative_position_bias_forward(by_heads.data(), BiasTableLayout::heads_by_buckets,
                                                     index.buckets.data(), a.data(), heads, t, kBase.num_buckets);
  coco::kernels::cpu::relative_position_bias_forward(by_buckets.data(), BiasTableLayout::buckets_by_heads,
                                                     index.buckets.data(), b.data(), heads, t, kBase.num_buckets);
  EXPECT_EQ(a, b);
  // bias[h=1, i=0, j=3] = table(1, bucket 18)
  EXPECT_EQ(a[static_cast<size_t>(t * t + 3)], by_heads[static_cast<size_t>(kBase.num_buckets + 18)]);
}

template <class TGrad, class TOut>
void check_scatter(int64_t heads, int64_t t, const RelativePositionConfig& c, BiasTableLayout layout, bool accumulate,
                   unsigned seed, double threshold) {
  const BucketIndex index = make_index(t, c);
  const size_t table_size = static_cast<size_t>(heads * c.num_buckets);
  const std::vector<float> dbias = round_through<TGrad>(random_floats(static_cast<size_t>(heads * t * t), seed));
  const std::vector<float> initial = round_through<TOut>(random_floats(table_size, seed + 1));
  std::vector<double> expected(initial.begin(), initial.end());
  const std::vector<double> dbias64(dbias.begin(), dbias.end());
  coco::kernels::cpu::relative_position_bias_backward(dbias64.data(), index.offsets.data(), index.positions.data(),
                                                      expected.data(), layout, heads, t, c.num_buckets, accumulate);
  GuardedDeviceBuffer<TGrad> device_dbias(from_floats<TGrad>(dbias));
  GuardedDeviceBuffer<int32_t> device_offsets(index.offsets);
  GuardedDeviceBuffer<int32_t> device_positions(index.positions);
  GuardedDeviceBuffer<TOut> device_table(from_floats<TOut>(initial));
  if (!accumulate) device_table.poison();
  coco::kernels::cuda::relative_position_bias_backward(device_dbias.data(), device_offsets.data(),
                                                       device_positions.data(), device_table.data(), layout, heads, t,
                                                       c.num_buckets, accumulate, nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(matches_reference(expected, to_f64(device_table.download()), threshold,
                                "bias backward H " + std::to_string(heads) + " T " + std::to_string(t)));
  EXPECT_TRUE(device_table.guards_intact());
}

TEST(RelposBias, ScatterMatchesCpuReference) {
  // f32 sums of up to T^2 terms against a double reference: ~1e-14.
  const BiasTableLayout hb = BiasTableLayout::heads_by_buckets, bh = BiasTableLayout::buckets_by_heads;
  check_scatter<float, float>(3, 1, kBase, hb, false, 10, 1e-12);
  check_scatter<float, float>(2, 7, kBase, bh, false, 11, 1e-12);
  check_scatter<float, float>(4, 33, kBasePlus, hb, true, 12, 1e-12);
  check_scatter<float, float>(2, 130, kLargePlus, bh, false, 13, 1e-12);
  // bf16 gradients summed in f32 into an f32 buffer: only the inputs are rounded (same in the reference).
  check_scatter<__nv_bfloat16, float>(3, 33, kBase, bh, true, 14, 1e-12);
  // bf16 output: one bf16 rounding of each sum.
  check_scatter<__nv_bfloat16, __nv_bfloat16>(2, 130, kBase, hb, false, 15, 1e-5);
  check_scatter<__half, float>(2, 7, kBase, bh, false, 16, 1e-12);
  // f64 end to end: summation order only.
  check_scatter<double, double>(3, 33, kBasePlus, bh, true, 17, 1e-24);
}

TEST(RelposBias, NanGradientStaysInItsBucket) {
  const int64_t heads = 2, t = 7;
  const BucketIndex index = make_index(t, kBase);
  std::vector<float> dbias = random_floats(static_cast<size_t>(heads * t * t), 21);
  dbias[static_cast<size_t>(t * t + 3)] = NAN;       // head 1, (0, 3)
  dbias[static_cast<size_t>(2 * t + 2)] = INFINITY;  // head 0, diagonal
  std::vector<float> expected(static_cast<size_t>(heads * kBase.num_buckets));
  coco::kernels::cpu::relative_position_bias_backward(dbias.data(), index.offsets.data(), index.positions.data(),
                                                      expected.data(), BiasTableLayout::heads_by_buckets, heads, t,
                                                      kBase.num_buckets, false);
  EXPECT_TRUE(std::isnan(expected[static_cast<size_t>(kBase.num_buckets + 18)]));
  EXPECT_TRUE(std::isinf(expected[15]));
  GuardedDeviceBuffer<float> device_dbias(dbias);
  GuardedDeviceBuffer<int32_t> device_offsets(index.offsets);
  GuardedDeviceBuffer<int32_t> device_positions(index.positions);
  GuardedDeviceBuffer<float> device_table(expected.size());
  device_table.poison();
  coco::kernels::cuda::relative_position_bias_backward(
      device_dbias.data(), device_offsets.data(), device_positions.data(), device_table.data(),
      BiasTableLayout::heads_by_buckets, heads, t, kBase.num_buckets, false, nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  // f32 against f32 with a different summation order.
  EXPECT_TRUE(matches_reference(to_f64(expected), to_f64(device_table.download()), 1e-11, "NaN/Inf scatter"));
}

TEST(RelposBias, ScatterBitwiseInvariantUnderSchedules) {
  const int64_t heads = 2, t = 33;
  const BucketIndex index = make_index(t, kBase);
  const std::vector<float> dbias = random_floats(static_cast<size_t>(heads * t * t), 31);
  auto run = [&] {
    GuardedDeviceBuffer<float> device_dbias(dbias);
    GuardedDeviceBuffer<int32_t> device_offsets(index.offsets);
    GuardedDeviceBuffer<int32_t> device_positions(index.positions);
    GuardedDeviceBuffer<float> device_table(static_cast<size_t>(heads * kBase.num_buckets));
    coco::kernels::cuda::relative_position_bias_backward(
        device_dbias.data(), device_offsets.data(), device_positions.data(), device_table.data(),
        BiasTableLayout::buckets_by_heads, heads, t, kBase.num_buckets, false, nullptr);
    COCO_CUDA_CHECK(cudaDeviceSynchronize());
    return device_table.download_bytes();
  };
  const emu::OracleResult result = emu::check_schedule_invariance(run, 2);
  EXPECT_TRUE(result.identical) << result.message;
}

}  // namespace

// ---- op level: ops::relative_position_bias on Device::cuda (emulated) against Device::cpu.
#include "engine/ops/relpos.h"
#include "engine/tape.h"
#include "engine/tensor.h"

namespace {

struct OpRun {
  std::vector<double> bias, dtable;
};

OpRun run_op(const coco::Tensor& table_host, int64_t seq_len, const RelativePositionConfig& config, coco::Device device,
             coco::DType dtype, coco::DType grad_dtype, const coco::Tensor& seed) {
  coco::Tensor table = table_host.to(dtype).to(device);
  table.set_requires_grad(true).set_grad_dtype(grad_dtype);
  coco::Tape tape;
  coco::Tensor bias;
  {
    coco::Tape::Recording recording(tape);
    bias = coco::ops::relative_position_bias(table, seq_len, config);
  }
  tape.backward(bias, seed.to(dtype).to(device));
  EXPECT_EQ(table.grad().dtype(), grad_dtype);
  return {bias.to(coco::Device::cpu).to_f64(), table.grad().to(coco::Device::cpu).to_f64()};
}

TEST(RelposOps, CudaMatchesCpu) {
  const int64_t heads = 3, seq_len = 33;
  const coco::Tensor table = coco::Tensor::from_vector(
      round_through<__nv_bfloat16>(random_floats(static_cast<size_t>(kBase.num_buckets * heads), 41)),
      coco::Shape{kBase.num_buckets, heads});
  const coco::Tensor seed = coco::Tensor::from_vector(
      round_through<__nv_bfloat16>(random_floats(static_cast<size_t>(heads * seq_len * seq_len), 42)),
      coco::Shape{heads, seq_len, seq_len});
  const OpRun cpu = run_op(table, seq_len, kBase, coco::Device::cpu, coco::DType::f32, coco::DType::f32, seed);
  const OpRun f32 = run_op(table, seq_len, kBase, coco::Device::cuda, coco::DType::f32, coco::DType::f32, seed);
  EXPECT_EQ(cpu.bias, f32.bias);  // a gather: exact
  // f32 sums against double-accumulated CPU sums.
  EXPECT_TRUE(matches_reference(cpu.dtable, f32.dtable, 1e-12, "f32 dtable"));
  // bf16 table with an f32 gradient buffer: inputs are bf16-exact, sums in f32 into f32.
  const OpRun bf16 = run_op(table, seq_len, kBase, coco::Device::cuda, coco::DType::bf16, coco::DType::f32, seed);
  EXPECT_EQ(cpu.bias, bf16.bias);
  EXPECT_TRUE(matches_reference(cpu.dtable, bf16.dtable, 1e-12, "bf16 table, f32 dtable"));
  // bf16 gradient buffer: one bf16 rounding of each sum.
  const OpRun bf16_grad = run_op(table, seq_len, kBase, coco::Device::cuda, coco::DType::bf16, coco::DType::bf16, seed);
  EXPECT_TRUE(matches_reference(cpu.dtable, bf16_grad.dtable, 1e-5, "bf16 dtable"));
  // The cached bucket table on each device.
  EXPECT_EQ(coco::ops::relative_position_buckets(seq_len, kBase, coco::Device::cuda)
                .to(coco::Device::cpu)
                .to_vector<int32_t>(),
            cpu_buckets(seq_len, kBase));
}

TEST(RelposOps, RejectsBadTables) {
  const coco::Tensor wrong_buckets = coco::Tensor::zeros({16, 2}, coco::DType::f32);
  EXPECT_THROW(coco::ops::relative_position_bias(wrong_buckets, 5, kBase), coco::TensorError);
  const coco::Tensor table = coco::Tensor::zeros({32, 2}, coco::DType::f32);
  EXPECT_THROW(coco::ops::relative_position_bias(table, 513, kBase), std::invalid_argument);
  EXPECT_THROW(coco::ops::relative_position_bias(coco::Tensor::zeros({32, 2}, coco::DType::i32), 5, kBase),
               coco::TensorError);
}

}  // namespace
