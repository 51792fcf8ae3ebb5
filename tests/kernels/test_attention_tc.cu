// Tensor-core attention (kernels/attention_tc.h), run under the emulator's mma/ldmatrix/cp.async, against
// the CPU reference (kernels/attention.h) over the same 16-bit inputs: head dims 16, 32, 64 and 128, ragged
// T (1, 17, 64, 100: partial and several tiles), u8 / i32 key masks with padding and fully padded rows,
// with and without the bias and dropout; forward out and log-sum-exp, backward dq, dk, dv and dbias;
// dbias accumulation; bitwise schedule invariance; argument checks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#include "engine/simt/schedule_oracle.h"
#include "kernels/attention.h"
#include "kernels/attention_tc.h"
#include "kernels/relpos.h"
#include "kernels/softmax_math.h"
#include "tests/common/attention_cases.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::kernels::AttentionDropout;
using coco::kernels::AttentionShape;
using coco::testing::from_floats;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::to_f64;

using Case = coco::testing::AttentionCase;
using Inputs = coco::testing::AttentionInputs;
using coco::testing::attention_inputs;
using coco::testing::attention_key_mask;
using coco::testing::attention_test_dropout;
using coco::testing::describe;

struct Results {
  std::vector<double> out, lse, dq, dk, dv, dbias;
};

// The reference over the (already 16-bit-exact) inputs in float with double accumulation, plus the
// log-sum-exp of each row's masked scores in double.
template <class Mask>
Results cpu_reference(const Case& c, const Inputs& in, const std::vector<Mask>& mask) {
  const AttentionDropout dropout = attention_test_dropout(c.dropout_p);
  const AttentionShape& s = c.shape;
  const size_t n = static_cast<size_t>(s.qkv_elements());
  std::vector<double> q(in.q.begin(), in.q.end()), k(in.k.begin(), in.k.end()), v(in.v.begin(), in.v.end());
  std::vector<double> bias(in.bias.begin(), in.bias.end()), dout(in.dout.begin(), in.dout.end());
  std::vector<double> out(n), probs(static_cast<size_t>(s.score_elements())), dq(n), dk(n), dv(n), dbias(bias.size());
  coco::kernels::cpu::attention_forward(q.data(), k.data(), v.data(), mask.data(), c.bias ? bias.data() : nullptr, s,
                                        dropout, out.data(), probs.data());
  coco::kernels::cpu::attention_backward(q.data(), k.data(), v.data(), probs.data(), dout.data(), s, dropout, dq.data(),
                                         dk.data(), dv.data(), c.bias ? dbias.data() : nullptr, false);
  // lse = max + log(sum) with softmax_math.h's rules: -Inf for an empty row, NaN for a NaN score or two
  // +Inf, +Inf for one +Inf.
  std::vector<double> lse(static_cast<size_t>(s.batch * s.heads * s.seq_len));
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.seq_len; ++i) {
        coco::kernels::detail::SoftmaxStats<double> stats = coco::kernels::detail::softmax_stats_empty<double>();
        for (int64_t j = 0; j < s.seq_len; ++j) {
          if (!mask[static_cast<size_t>(b * s.seq_len + j)]) continue;
          double dot = 0.0;
          for (int64_t d = 0; d < s.head_dim; ++d)
            dot += q[static_cast<size_t>(((b * s.heads + h) * s.seq_len + i) * s.head_dim + d)] *
                   k[static_cast<size_t>(((b * s.heads + h) * s.seq_len + j) * s.head_dim + d)];
          coco::kernels::detail::softmax_stats_add(
              stats, dot * scale + (c.bias ? bias[static_cast<size_t>((h * s.seq_len + i) * s.seq_len + j)] : 0.0));
        }
        lse[static_cast<size_t>((b * s.heads + h) * s.seq_len + i)] =
            coco::kernels::detail::softmax_row_empty(stats) ? -INFINITY : stats.max + std::log(stats.sum);
      }
  return {out, lse, dq, dk, dv, dbias};
}

template <class T, class Mask>
Results tc_run(const Case& c, const Inputs& in, const std::vector<Mask>& mask, bool accumulate_dbias = false,
               const std::vector<float>* dbias_start = nullptr) {
  const AttentionDropout dropout = attention_test_dropout(c.dropout_p);
  const size_t n = static_cast<size_t>(c.shape.qkv_elements());
  const size_t rows = static_cast<size_t>(c.shape.batch * c.shape.heads * c.shape.seq_len);
  GuardedDeviceBuffer<T> q(from_floats<T>(in.q)), k(from_floats<T>(in.k)), v(from_floats<T>(in.v));
  GuardedDeviceBuffer<T> dout(from_floats<T>(in.dout));
  GuardedDeviceBuffer<T> bias(c.bias ? from_floats<T>(in.bias) : std::vector<T>(1));
  GuardedDeviceBuffer<Mask> device_mask(mask);
  GuardedDeviceBuffer<T> out(n), dq(n), dk(n), dv(n);
  GuardedDeviceBuffer<float> lse(rows), delta(rows), dbias(c.bias ? in.bias.size() : 1);
  for (auto* buffer : {&out, &dq, &dk, &dv}) buffer->poison();
  lse.poison();
  delta.poison();
  if (dbias_start)
    dbias.upload(*dbias_start);
  else
    dbias.poison();
  coco::kernels::cuda::tc_attention_forward(q.data(), k.data(), v.data(), device_mask.data(),
                                            c.bias ? bias.data() : nullptr, c.shape, dropout, out.data(), lse.data(),
                                            nullptr);
  coco::kernels::cuda::tc_attention_backward(q.data(), k.data(), v.data(), out.data(), dout.data(), lse.data(),
                                             device_mask.data(), c.bias ? bias.data() : nullptr, c.shape, dropout,
                                             dq.data(), dk.data(), dv.data(), c.bias ? dbias.data() : nullptr,
                                             accumulate_dbias, delta.data(), nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto* buffer : {&out, &dq, &dk, &dv}) EXPECT_TRUE(buffer->guards_intact()) << describe(c);
  EXPECT_TRUE(lse.guards_intact() && delta.guards_intact() && dbias.guards_intact()) << describe(c);
  Results r{to_f64(out.download()), to_f64(lse.download()), to_f64(dq.download()),
            to_f64(dk.download()),  to_f64(dv.download()),  {}};
  if (c.bias) r.dbias = to_f64(dbias.download());
  return r;
}

// NMSE thresholds: outputs rounded once to T (2e-5 bf16, 1e-6 f16, kernel_check.h) plus P and dS rounded
// to T before their products, as in every FlashAttention: a few times the single-rounding limit.
template <class T>
constexpr double tc_threshold() {
  return std::is_same_v<T, __nv_bfloat16> ? 1e-4 : 5e-6;
}

// NMSE against the reference; a reference that is exactly zero (T = 1: dS = P (dP - P dP) = 0) instead
// bounds the absolute values, which come from dP and delta = dO . O being summed in different orders.
::testing::AssertionResult close_to(const std::vector<double>& ref, const std::vector<double>& got, double threshold,
                                    const std::string& what) {
  if (std::all_of(ref.begin(), ref.end(), [](double x) { return x == 0.0; }) && ref.size() == got.size()) {
    for (size_t e = 0; e < got.size(); ++e)
      if (!(std::fabs(got[e]) <= 1e-5))
        return ::testing::AssertionFailure() << what << ": element " << e << " = " << got[e] << ", reference 0";
    return ::testing::AssertionSuccess();
  }
  return matches_reference(ref, got, threshold, what);
}

void expect_close(const Results& ref, const Results& got, double threshold, const std::string& what) {
  EXPECT_TRUE(close_to(ref.out, got.out, threshold, what + " out"));
  EXPECT_TRUE(matches_reference(ref.lse, got.lse, 1e-10, what + " lse"));
  EXPECT_TRUE(close_to(ref.dq, got.dq, threshold, what + " dq"));
  EXPECT_TRUE(close_to(ref.dk, got.dk, threshold, what + " dk"));
  EXPECT_TRUE(close_to(ref.dv, got.dv, threshold, what + " dv"));
  if (!ref.dbias.empty()) {
    EXPECT_TRUE(close_to(ref.dbias, got.dbias, threshold, what + " dbias"));
  }
}

const Case kCases[] = {
    {{2, 2, 1, 64}, true, 0.0f, 0},     // T = 1
    {{2, 2, 17, 64}, true, 0.2f, 5},    // partial tile, padding, dropout, bias
    {{2, 1, 64, 32}, false, 0.1f, 9},   // one full tile, no bias
    {{2, 1, 100, 64}, true, 0.1f, 30},  // two key/query tiles, the second partial
    {{2, 1, 33, 64}, true, 0.0f, 33},   // batch row 1 fully padded
    {{1, 2, 40, 128}, true, 0.15f, 0},  // the largest head dim
    {{3, 2, 16, 16}, true, 0.1f, 3},    // the smallest head dim (the tiny test models')
};

template <class T, class Mask>
void check_cases(const char* label) {
  unsigned seed = 900;
  for (const Case& c : kCases) {
    const Inputs in = attention_inputs<T>(c, seed += 10);
    const std::vector<Mask> mask = attention_key_mask<Mask>(c);
    expect_close(cpu_reference(c, in, mask), tc_run<T, Mask>(c, in, mask), tc_threshold<T>(),
                 std::string(label) + " " + describe(c));
  }
}

TEST(TensorCoreAttention, Bf16MatchesCpuReference) { check_cases<__nv_bfloat16, uint8_t>("tc bf16/u8"); }
TEST(TensorCoreAttention, F16MatchesCpuReference) { check_cases<__half, int32_t>("tc f16/i32"); }

TEST(TensorCoreAttention, FullyPaddedRowsGiveZerosAndMinusInfinityLse) {
  const Case c{{2, 1, 20, 32}, true, 0.2f, 20};
  const Inputs in = attention_inputs<__nv_bfloat16>(c, 77);
  const Results got = tc_run<__nv_bfloat16, uint8_t>(c, in, attention_key_mask<uint8_t>(c));
  const size_t per_batch = static_cast<size_t>(c.shape.heads * c.shape.seq_len * c.shape.head_dim);
  for (size_t e = per_batch; e < 2 * per_batch; ++e) {
    ASSERT_EQ(got.out[e], 0.0) << e;
    ASSERT_EQ(got.dq[e], 0.0) << e;
    ASSERT_EQ(got.dk[e], 0.0) << e;
    ASSERT_EQ(got.dv[e], 0.0) << e;
  }
  for (size_t r = static_cast<size_t>(c.shape.heads * c.shape.seq_len); r < got.lse.size(); ++r)
    EXPECT_EQ(got.lse[r], -INFINITY) << r;
}

// NaN and Inf where kernels/softmax_math.h puts them (the reference's rules), planted through the bias
// (shared by both batch rows) and q: a lone +Inf score that dropout keeps (its row's output NaN, lse
// +Inf) or drops (output 0 there: the old kernel's poisoned row sum gave NaN), two +Inf and a NaN score
// (the row NaN), a -Inf bias (probability 0), a +Inf in the first key tile of a row that goes on into a
// second tile, and a NaN in q. Gradients: such rows make every dS of their row NaN, masked keys
// included, so NaN reaches dK of the padded keys as in the reference. One and two key tiles.
TEST(TensorCoreAttention, NanAndInfFollowTheReferenceSoftmax) {
  for (const Case& c : {Case{{2, 1, 20, 16}, true, 0.3f, 6}, Case{{2, 1, 70, 16}, true, 0.3f, 9}}) {
    const AttentionShape& s = c.shape;
    Inputs in = attention_inputs<__nv_bfloat16>(c, 4200 + static_cast<unsigned>(s.seq_len));
    const AttentionDropout dropout = attention_test_dropout(c.dropout_p);
    const int64_t T = s.seq_len;
    auto bias_at = [&](int64_t i, int64_t j) -> float& { return in.bias[static_cast<size_t>(i * T + j)]; };
    // The first key of query row i that dropout drops (keeps, when `kept`) in batch row 0.
    auto key_with = [&](int64_t i, bool kept) {
      for (int64_t j = 0; j < std::min<int64_t>(T, 64); ++j)
        if (coco::kernels::detail::dropout_keeps(dropout.stream, static_cast<uint64_t>(i * T + j), dropout.p) == kept)
          return j;
      return int64_t{0};
    };
    bias_at(1, key_with(1, true)) = INFINITY;
    bias_at(2, key_with(2, false)) = INFINITY;
    bias_at(4, 3) = INFINITY;
    bias_at(4, 5) = INFINITY;
    bias_at(5, 7) = NAN;
    bias_at(6, 2) = -INFINITY;
    bias_at(T - 1, key_with(T - 1, false)) = INFINITY;  // with T = 70 its row has a second key tile
    in.q[static_cast<size_t>(((1 * s.heads) * T + 9) * s.head_dim + 3)] = NAN;
    const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
    const Results ref = cpu_reference(c, in, mask);
    ASSERT_TRUE(std::isinf(ref.lse[1]) && std::isnan(ref.out[2 * s.head_dim]) == false);
    expect_close(ref, tc_run<__nv_bfloat16, uint8_t>(c, in, mask), tc_threshold<__nv_bfloat16>(),
                 "non-finite " + describe(c));
  }
}

TEST(TensorCoreAttention, DbiasAccumulates) {
  const Case c{{2, 2, 24, 32}, true, 0.1f, 4};
  const Inputs in = attention_inputs<__nv_bfloat16>(c, 88);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const std::vector<float> start = coco::testing::random_floats(in.bias.size(), 89);
  const Results fresh = tc_run<__nv_bfloat16, uint8_t>(c, in, mask);
  const Results accumulated = tc_run<__nv_bfloat16, uint8_t>(c, in, mask, true, &start);
  // The kernel adds each batch entry's dS to the running cell: (start + dS_0) + dS_1, vs start + (dS_0 + dS_1).
  for (size_t e = 0; e < start.size(); ++e)
    ASSERT_NEAR(accumulated.dbias[e], start[e] + fresh.dbias[e], 1e-6 * (1.0 + std::fabs(start[e]))) << e;
}

// Forward and backward with the table inside the kernels; Results::dbias holds dtable (layout buckets x heads).
template <class T>
Results tc_relpos_run(const Case& c, const Inputs& in, const std::vector<float>& table,
                      const std::vector<uint8_t>& mask, const coco::kernels::RelativePositionConfig& config) {
  const AttentionShape& s = c.shape;
  const auto layout = coco::kernels::BiasTableLayout::buckets_by_heads;
  const AttentionDropout dropout = attention_test_dropout(c.dropout_p);
  const size_t n = static_cast<size_t>(s.qkv_elements()), rows = static_cast<size_t>(s.batch * s.heads * s.seq_len);
  GuardedDeviceBuffer<T> q(from_floats<T>(in.q)), k(from_floats<T>(in.k)), v(from_floats<T>(in.v));
  GuardedDeviceBuffer<T> dout(from_floats<T>(in.dout)), device_table(from_floats<T>(table));
  GuardedDeviceBuffer<uint8_t> device_mask(mask);
  GuardedDeviceBuffer<T> out(n), dq(n), dk(n), dv(n);
  GuardedDeviceBuffer<float> lse(rows), delta(rows),
      partials(static_cast<size_t>(coco::kernels::cuda::tc_relpos_partials_elements(s))),
      drel(static_cast<size_t>(s.heads * (2 * s.seq_len - 1))), dtable(table.size());
  for (auto* buffer : {&out, &dq, &dk, &dv}) buffer->poison();
  for (auto* buffer : {&partials, &drel, &dtable}) buffer->poison();
  coco::kernels::cuda::tc_attention_relpos_forward(q.data(), k.data(), v.data(), device_mask.data(),
                                                   device_table.data(), layout, config, s, dropout, out.data(),
                                                   lse.data(), nullptr);
  coco::kernels::cuda::tc_attention_relpos_backward(q.data(), k.data(), v.data(), out.data(), dout.data(), lse.data(),
                                                    device_mask.data(), device_table.data(), layout, config, s, dropout,
                                                    dq.data(), dk.data(), dv.data(), dtable.data(), false,
                                                    {delta.data(), partials.data(), drel.data()}, nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto* buffer : {&out, &dq, &dk, &dv}) EXPECT_TRUE(buffer->guards_intact()) << describe(c);
  EXPECT_TRUE(dtable.guards_intact() && drel.guards_intact() && partials.guards_intact()) << describe(c);
  return {to_f64(out.download()), to_f64(lse.download()), to_f64(dq.download()),
          to_f64(dk.download()),  to_f64(dv.download()),  to_f64(dtable.download())};
}

// The relative-position table applied inside the kernels (the case's bias flag makes the reference use
// the dense bias gathered below): the same results as the dense bias gathered
// from the table by the CPU (kernels/relpos.h), and dtable equal to the CPU scatter of the reference dbias.
template <class T>
void check_relpos(const Case& c, const coco::kernels::RelativePositionConfig& config, unsigned seed) {
  using coco::kernels::BiasTableLayout;
  const AttentionShape& s = c.shape;
  const int K = config.num_buckets;
  const BiasTableLayout layout = BiasTableLayout::buckets_by_heads;
  const std::vector<float> table =
      coco::testing::round_through<T>(coco::testing::random_floats(K * s.heads, seed, -1.0f, 1.0f));
  std::vector<int32_t> buckets(static_cast<size_t>(s.seq_len * s.seq_len));
  coco::kernels::cpu::relative_position_buckets(buckets.data(), s.seq_len, config);
  Inputs in = attention_inputs<T>(c, seed + 1);
  in.bias.assign(static_cast<size_t>(s.bias_elements()), 0.0f);
  coco::kernels::cpu::relative_position_bias_forward(table.data(), layout, buckets.data(), in.bias.data(), s.heads,
                                                     s.seq_len, K);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const Results ref = cpu_reference(c, in, mask);
  std::vector<int32_t> offsets(K + 1), positions(buckets.size());
  coco::kernels::cpu::relative_position_bucket_index(buckets.data(), s.seq_len, K, offsets.data(), positions.data());
  std::vector<double> ref_dtable(static_cast<size_t>(K * s.heads));
  coco::kernels::cpu::relative_position_bias_backward(ref.dbias.data(), offsets.data(), positions.data(),
                                                      ref_dtable.data(), layout, s.heads, s.seq_len, K, false);

  const Results got = tc_relpos_run<T>(c, in, table, mask, config);
  const std::string what = std::string("tc relpos ") + describe(c);
  const double threshold = tc_threshold<T>();
  EXPECT_TRUE(close_to(ref.out, got.out, threshold, what + " out"));
  EXPECT_TRUE(matches_reference(ref.lse, got.lse, 1e-10, what + " lse"));
  EXPECT_TRUE(close_to(ref.dq, got.dq, threshold, what + " dq"));
  EXPECT_TRUE(close_to(ref.dk, got.dk, threshold, what + " dk"));
  EXPECT_TRUE(close_to(ref.dv, got.dv, threshold, what + " dv"));
  EXPECT_TRUE(close_to(ref_dtable, got.dbias, threshold, what + " dtable"));
}

TEST(TensorCoreAttention, RelativePositionTableInsideTheKernels) {
  coco::kernels::RelativePositionConfig config;
  config.num_buckets = 8;
  config.max_distance = 16;
  config.max_positions = 100;
  check_relpos<__nv_bfloat16>({{2, 2, 70, 32}, true, 0.1f, 9}, config, 1500);
  check_relpos<__half>({{3, 1, 23, 16}, true, 0.0f, 4}, config, 1600);
  // A sequence longer than max_positions, or no table: rejected with the op's name before any launch.
  GuardedDeviceBuffer<__nv_bfloat16> table(8);
  __nv_bfloat16* null = nullptr;
  try {
    coco::kernels::cuda::tc_attention_relpos_forward<__nv_bfloat16, uint8_t>(
        null, null, null, nullptr, table.data(), coco::kernels::BiasTableLayout::buckets_by_heads, config,
        {1, 1, 101, 16}, attention_test_dropout(0.0f), null, nullptr, nullptr);
    FAIL() << "T > max_positions accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("tc_attention_relpos_forward: sequence length 101"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW((coco::kernels::cuda::tc_attention_relpos_forward<__nv_bfloat16, uint8_t>(
                   null, null, null, nullptr, nullptr, coco::kernels::BiasTableLayout::buckets_by_heads, config,
                   {1, 1, 10, 16}, attention_test_dropout(0.0f), null, nullptr, nullptr)),
               std::invalid_argument);
}

#if defined(COCO_CUDA_EMULATED)
TEST(TensorCoreAttention, BitwiseInvariantUnderSchedules) {
  const Case c{{2, 1, 70, 32}, true, 0.2f, 6};
  const Inputs in = attention_inputs<__nv_bfloat16>(c, 99);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  auto run = [&] {
    const Results r = tc_run<__nv_bfloat16, uint8_t>(c, in, mask);
    std::vector<double> all;
    for (const auto* part : {&r.out, &r.lse, &r.dq, &r.dk, &r.dv, &r.dbias})
      all.insert(all.end(), part->begin(), part->end());
    return emu::as_bytes(all);
  };
  const emu::OracleResult result = emu::check_schedule_invariance(run, 2);
  EXPECT_TRUE(result.identical) << result.message;
}
#endif

#if defined(COCO_CUDA_EMULATED)
// The table's gradient (per-CTA diagonal sums in shared memory, partials reduced in a fixed order) and
// the double-buffered dK/dV kernel: bitwise the same under every schedule.
TEST(TensorCoreAttention, RelativeTableGradientBitwiseInvariantUnderSchedules) {
  const Case c{{2, 1, 70, 16}, true, 0.1f, 5};
  coco::kernels::RelativePositionConfig config;
  config.num_buckets = 8;
  config.max_distance = 16;
  config.max_positions = 80;
  const std::vector<float> table = coco::testing::round_through<__nv_bfloat16>(coco::testing::random_floats(8, 61));
  const Inputs in = attention_inputs<__nv_bfloat16>(c, 62);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  auto run = [&] {
    const Results r = tc_relpos_run<__nv_bfloat16>(c, in, table, mask, config);
    std::vector<double> all;
    for (const auto* part : {&r.out, &r.lse, &r.dq, &r.dk, &r.dv, &r.dbias})
      all.insert(all.end(), part->begin(), part->end());
    return emu::as_bytes(all);
  };
  const emu::OracleResult result = emu::check_schedule_invariance(run, 1);
  EXPECT_TRUE(result.identical) << result.message;
}
#endif

TEST(TensorCoreAttention, RejectsUnsupportedShapes) {
  EXPECT_FALSE(coco::kernels::cuda::tc_attention_supports({1, 1, 8, 48}));
  EXPECT_TRUE(coco::kernels::cuda::tc_attention_supports({1, 1, 8, 64}));
  __nv_bfloat16* null = nullptr;
  try {
    coco::kernels::cuda::tc_attention_forward<__nv_bfloat16, uint8_t>(
        null, null, null, nullptr, nullptr, {1, 1, 8, 48}, attention_test_dropout(0.0f), null, nullptr, nullptr);
    FAIL() << "head_dim 48 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("tc_attention_forward: head_dim 48"), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      (coco::kernels::cuda::tc_attention_forward<__nv_bfloat16, uint8_t>(
          null, null, null, nullptr, nullptr, {1, 1, 8, 64}, attention_test_dropout(1.0f), null, nullptr, nullptr)),
      std::invalid_argument);
  EXPECT_THROW((coco::kernels::cuda::tc_attention_backward<__nv_bfloat16, uint8_t>(
                   null, null, null, null, null, nullptr, nullptr, nullptr, {1, 1, 8, 64}, attention_test_dropout(0.0f),
                   null, null, null, nullptr, false, nullptr, nullptr)),
               std::invalid_argument);
}

}  // namespace

// ---- op level: ops::attention picks the tensor-core kernels for bf16/f16 on Device::cuda (emulated);
// against Device::cpu f32 on the same bf16-exact inputs, forward and backward through the tape.
#include "engine/ops/attention.h"
#include "engine/runtime/counters.h"
#include "engine/tape.h"
#include "engine/tensor.h"

namespace {

struct OpRun {
  std::vector<double> out, dq, dk, dv, dbias;
};

OpRun run_op(const Inputs& in, const Case& c, const coco::Tensor& mask_host, coco::Device device, coco::DType dtype) {
  const AttentionShape& s = c.shape;
  const coco::Shape qkv{s.batch, s.heads, s.seq_len, s.head_dim};
  auto make = [&](const std::vector<float>& values, const coco::Shape& shape) {
    coco::Tensor t = coco::Tensor::from_vector(values, shape).to(dtype).to(device);
    t.set_requires_grad(true);
    return t;
  };
  coco::Tensor q = make(in.q, qkv), k = make(in.k, qkv), v = make(in.v, qkv);
  coco::Tensor bias = coco::Tensor::from_vector(in.bias, coco::Shape{s.heads, s.seq_len, s.seq_len}).to(device);
  bias.set_requires_grad(true);
  const coco::Tensor mask = mask_host.to(device);
  const AttentionDropout dropout = attention_test_dropout(c.dropout_p);
  coco::Tape tape;
  coco::Tensor out;
  {
    coco::Tape::Recording recording(tape);
    out = coco::ops::attention(q, k, v, mask, bias, c.dropout_p, dropout.stream, true);
  }
  tape.backward(out, coco::Tensor::from_vector(in.dout, qkv).to(dtype).to(device));
  EXPECT_EQ(bias.grad().dtype(), coco::DType::f32);
  auto host = [](const coco::Tensor& t) { return t.to(coco::Device::cpu).to_f64(); };
  return {host(out), host(q.grad()), host(k.grad()), host(v.grad()), host(bias.grad())};
}

TEST(TensorCoreAttentionOp, CudaBf16AndF16MatchCpu) {
  const Case c{{2, 2, 40, 32}, true, 0.15f, 6};
  const Inputs in = attention_inputs<__nv_bfloat16>(c, 1300);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const coco::Tensor mask_u8 = coco::Tensor::from_vector(mask, coco::Shape{c.shape.batch, c.shape.seq_len});
  const OpRun cpu = run_op(in, c, mask_u8, coco::Device::cpu, coco::DType::f32);
  for (const coco::DType dtype : {coco::DType::bf16, coco::DType::f16}) {
    const uint64_t gemms = coco::runtime::counters().gemm_calls;
    const OpRun got =
        run_op(in, c, dtype == coco::DType::f16 ? mask_u8.to(coco::DType::i32) : mask_u8, coco::Device::cuda, dtype);
    // The SIMT path multiplies with cuBLASLt GEMMs; the tensor-core kernels make none.
    EXPECT_EQ(coco::runtime::counters().gemm_calls, gemms);
    const double threshold = dtype == coco::DType::bf16 ? tc_threshold<__nv_bfloat16>() : 2e-5;
    const std::string what = std::string("op tc ") + coco::dtype_name(dtype);
    EXPECT_TRUE(matches_reference(cpu.out, got.out, threshold, what + " out"));
    EXPECT_TRUE(matches_reference(cpu.dq, got.dq, threshold, what + " dq"));
    EXPECT_TRUE(matches_reference(cpu.dk, got.dk, threshold, what + " dk"));
    EXPECT_TRUE(matches_reference(cpu.dv, got.dv, threshold, what + " dv"));
    EXPECT_TRUE(matches_reference(cpu.dbias, got.dbias, threshold, what + " dbias"));
  }
}

}  // namespace

// ---- ops::attention_relative: the table inside the kernels on cuda bf16 against the CPU composition
// relative_position_bias + attention (f32), forward and backward including the table's gradient.
#include "engine/ops/relpos.h"

namespace {

struct RelativeRun {
  std::vector<double> out, dq, dk, dv, dtable;
};

RelativeRun run_relative(const Inputs& in, const std::vector<float>& table_values, const Case& c,
                         const coco::kernels::RelativePositionConfig& config, const coco::Tensor& mask_host,
                         coco::Device device, coco::DType dtype) {
  const AttentionShape& s = c.shape;
  const coco::Shape qkv{s.batch, s.heads, s.seq_len, s.head_dim};
  auto make = [&](const std::vector<float>& values, const coco::Shape& shape) {
    coco::Tensor t = coco::Tensor::from_vector(values, shape).to(dtype).to(device);
    t.set_requires_grad(true);
    return t;
  };
  coco::Tensor q = make(in.q, qkv), k = make(in.k, qkv), v = make(in.v, qkv);
  coco::Tensor table = coco::Tensor::from_vector(table_values, coco::Shape{config.num_buckets, s.heads}).to(device);
  table.set_requires_grad(true);
  const AttentionDropout dropout = attention_test_dropout(c.dropout_p);
  coco::Tape tape;
  coco::Tensor out;
  {
    coco::Tape::Recording recording(tape);
    out =
        coco::ops::attention_relative(q, k, v, mask_host.to(device), table, config, c.dropout_p, dropout.stream, true);
  }
  tape.backward(out, coco::Tensor::from_vector(in.dout, qkv).to(dtype).to(device));
  auto host = [](const coco::Tensor& t) { return t.to(coco::Device::cpu).to_f64(); };
  return {host(out), host(q.grad()), host(k.grad()), host(v.grad()), host(table.grad())};
}

TEST(TensorCoreAttentionOp, RelativeTableMatchesCpuComposition) {
  const Case c{{2, 2, 37, 32}, false, 0.1f, 5};
  coco::kernels::RelativePositionConfig config;
  config.num_buckets = 8;
  config.max_distance = 16;
  config.max_positions = 64;
  const Inputs in = attention_inputs<__nv_bfloat16>(c, 1900);
  const std::vector<float> table = coco::testing::round_through<__nv_bfloat16>(
      coco::testing::random_floats(static_cast<size_t>(config.num_buckets * c.shape.heads), 1901));
  const coco::Tensor mask =
      coco::Tensor::from_vector(attention_key_mask<uint8_t>(c), coco::Shape{c.shape.batch, c.shape.seq_len});
  const RelativeRun cpu = run_relative(in, table, c, config, mask, coco::Device::cpu, coco::DType::f32);
  const uint64_t gemms = coco::runtime::counters().gemm_calls;
  const RelativeRun got = run_relative(in, table, c, config, mask, coco::Device::cuda, coco::DType::bf16);
  EXPECT_EQ(coco::runtime::counters().gemm_calls, gemms);  // the tensor-core path, not the GEMM one
  const double threshold = tc_threshold<__nv_bfloat16>();
  EXPECT_TRUE(matches_reference(cpu.out, got.out, threshold, "relative out"));
  EXPECT_TRUE(matches_reference(cpu.dq, got.dq, threshold, "relative dq"));
  EXPECT_TRUE(matches_reference(cpu.dk, got.dk, threshold, "relative dk"));
  EXPECT_TRUE(matches_reference(cpu.dv, got.dv, threshold, "relative dv"));
  EXPECT_TRUE(matches_reference(cpu.dtable, got.dtable, threshold, "relative dtable"));
  // f32 on cuda composes the dense bias with the SIMT kernels: same results at f32 rounding.
  const RelativeRun f32 = run_relative(in, table, c, config, mask, coco::Device::cuda, coco::DType::f32);
  EXPECT_TRUE(matches_reference(cpu.dtable, f32.dtable, 1e-10, "relative f32 dtable"));
}

}  // namespace
