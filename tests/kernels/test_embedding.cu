// Embedding kernels: CUDA (emulated) forward/backward against the CPU path at odd shapes and
// vocabularies needing 1, 2 and 3 radix passes; padding skip; accumulation into existing gradients;
// out-of-range ids (CPU throws, CUDA clamps and reports); bitwise schedule invariance of the backward.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#if defined(COCO_CUDA_EMULATED)
#include <sys/mman.h>
#include <unistd.h>
#endif
#include <string>
#include <vector>

#include "kernels/embedding.h"
#include "tests/common/kernel_check.h"
#include "engine/simt/schedule_oracle.h"

namespace {

using coco::kernels::EmbeddingShape;
using coco::kernels::TokenIdError;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

// f32 gradients: the same f32 terms summed in another order (<= 260 terms): NMSE ~1e-14.
constexpr double kF32Threshold = 1e-10;
// bf16 gradient buffers: one rounding per accumulation, <= 2^-8 relative: NMSE <= 1.5e-5; 3e-5 margin.
constexpr double kBf16Threshold = 3e-5;

std::string label(const EmbeddingShape& s) {
  return "B=" + std::to_string(s.batch) + " T=" + std::to_string(s.seq) + " V=" + std::to_string(s.vocab) +
         " E=" + std::to_string(s.dim);
}

// Ids drawn from a skewed distribution so that some ids repeat many times (long runs) and others
// once; `padding_id` is sprinkled in when >= 0.
std::vector<int32_t> make_ids(const EmbeddingShape& s, unsigned seed, int64_t padding_id) {
  std::mt19937 generator(seed);
  std::vector<int32_t> ids(static_cast<size_t>(s.positions()));
  for (auto& id : ids) {
    const unsigned r = generator() % 10;
    if (r < 3)
      id = static_cast<int32_t>(s.vocab - 1);  // a heavy hitter (long run)
    else if (r == 3 && padding_id >= 0)
      id = static_cast<int32_t>(padding_id);
    else
      id = static_cast<int32_t>(generator() % static_cast<unsigned>(s.vocab));
  }
  return ids;
}

const EmbeddingShape kShapes[] = {
    {1, 1, 7, 5}, {2, 7, 11, 37}, {3, 33, 300, 12}, {2, 130, 257, 9}, {1, 130, 70000, 3}, {4, 33, 3, 40},
};

template <class T>
class EmbeddingCuda : public ::testing::Test {};
using ActivationTypes = ::testing::Types<float, __nv_bfloat16>;
TYPED_TEST_SUITE(EmbeddingCuda, ActivationTypes);

TYPED_TEST(EmbeddingCuda, ForwardMatchesCpuBitwise) {
  using T = TypeParam;
  for (const EmbeddingShape& s : kShapes) {
    for (bool with_pos : {true, false}) {
      const std::vector<int32_t> ids = make_ids(s, 5, -1);
      const int64_t max_positions = s.seq + 3;
      const std::vector<float> tok = round_through<T>(random_floats(static_cast<size_t>(s.vocab * s.dim), 1));
      const std::vector<float> pos = round_through<T>(random_floats(static_cast<size_t>(max_positions * s.dim), 2));
      std::vector<float> out(static_cast<size_t>(s.positions() * s.dim));
      coco::kernels::cpu::embedding_forward(out.data(), ids.data(), tok.data(), with_pos ? pos.data() : nullptr, s);
      // The kernel adds in f32 and rounds once to T: round the f32 reference the same way.
      out = round_through<T>(out);

      GuardedDeviceBuffer<int32_t> d_ids(ids);
      GuardedDeviceBuffer<T> d_tok(coco::testing::from_floats<T>(tok)), d_pos(coco::testing::from_floats<T>(pos)),
          d_out(out.size());
      GuardedDeviceBuffer<uint32_t> d_bad(1);
      d_out.poison();
      coco::kernels::cuda::embedding_forward(d_out.data(), d_ids.data(), d_tok.data(),
                                             with_pos ? d_pos.data() : nullptr, s, d_bad.data(), nullptr);
      EXPECT_EQ(to_f64(d_out.download()), to_f64(out)) << label(s) << " pos=" << with_pos;
      EXPECT_EQ(d_bad.download()[0], coco::kernels::cuda::kNoBadPosition);
      EXPECT_NO_THROW(coco::kernels::cuda::embedding_throw_if_bad_id(d_bad.data(), d_ids.data(), s, nullptr));
      EXPECT_TRUE(d_out.guards_intact()) << label(s);
    }
  }
}

template <class T, class GradT>
void check_backward(const EmbeddingShape& s, int64_t padding_id, double threshold) {
  const std::vector<int32_t> ids = make_ids(s, 7, padding_id);
  const int64_t max_positions = s.seq + 2;
  const std::vector<float> dout = round_through<T>(random_floats(static_cast<size_t>(s.positions() * s.dim), 3));
  const std::vector<float> initial_tok = round_through<GradT>(random_floats(static_cast<size_t>(s.vocab * s.dim), 4));
  const std::vector<float> initial_pos =
      round_through<GradT>(random_floats(static_cast<size_t>(max_positions * s.dim), 5));
  std::vector<float> dtok = initial_tok, dpos = initial_pos;
  coco::kernels::cpu::embedding_backward(dtok.data(), dpos.data(), dout.data(), ids.data(), s, padding_id);

  GuardedDeviceBuffer<int32_t> d_ids(ids);
  GuardedDeviceBuffer<T> d_dout(coco::testing::from_floats<T>(dout));
  GuardedDeviceBuffer<GradT> d_dtok(coco::testing::from_floats<GradT>(initial_tok)),
      d_dpos(coco::testing::from_floats<GradT>(initial_pos));
  GuardedDeviceBuffer<uint8_t> workspace(coco::kernels::cuda::embedding_backward_workspace_bytes(s));
  workspace.poison();
  coco::kernels::cuda::embedding_backward(d_dtok.data(), d_dpos.data(), d_dout.data(), d_ids.data(), s, padding_id,
                                          workspace.data(), nullptr);
  const std::vector<double> got_tok = to_f64(d_dtok.download()), got_pos = to_f64(d_dpos.download());
  EXPECT_TRUE(matches_reference(to_f64(dtok), got_tok, threshold, "dtok " + label(s)));
  EXPECT_TRUE(matches_reference(to_f64(dpos), got_pos, threshold, "dpos " + label(s)));
  // Rows nobody touched keep their exact previous contents: the padding row, unused ids, and
  // position rows >= T.
  std::vector<bool> used(static_cast<size_t>(s.vocab), false);
  for (int32_t id : ids)
    if (id != padding_id) used[static_cast<size_t>(id)] = true;
  for (int64_t v = 0; v < s.vocab; ++v) {
    if (used[static_cast<size_t>(v)]) continue;
    for (int64_t e = 0; e < s.dim; ++e)
      ASSERT_EQ(got_tok[static_cast<size_t>(v * s.dim + e)], initial_tok[static_cast<size_t>(v * s.dim + e)])
          << "untouched row " << v << " changed, " << label(s);
  }
  for (size_t i = static_cast<size_t>(s.seq * s.dim); i < got_pos.size(); ++i) ASSERT_EQ(got_pos[i], initial_pos[i]);
  EXPECT_TRUE(d_dtok.guards_intact() && d_dpos.guards_intact() && workspace.guards_intact()) << label(s);
}

TEST(EmbeddingCudaBackward, F32MatchesCpu) {
  for (const EmbeddingShape& s : kShapes) {
    check_backward<float, float>(s, coco::kernels::kNoPaddingId, kF32Threshold);
    check_backward<float, float>(s, 0, kF32Threshold);
  }
}

TEST(EmbeddingCudaBackward, Bf16ActivationsWithF32Grads) {
  for (const EmbeddingShape& s : kShapes) check_backward<__nv_bfloat16, float>(s, 1, kF32Threshold);
}

TEST(EmbeddingCudaBackward, Bf16ActivationsWithBf16Grads) {
  for (const EmbeddingShape& s : kShapes) check_backward<__nv_bfloat16, __nv_bfloat16>(s, 2, kBf16Threshold);
}

TEST(EmbeddingCudaBackward, F16WithF32Grads) { check_backward<__half, float>({2, 33, 50, 21}, 3, kF32Threshold); }

TEST(EmbeddingCudaBackward, OnlyOneTableWanted) {
  const EmbeddingShape s{2, 7, 5, 6};
  const std::vector<int32_t> ids = make_ids(s, 9, -1);
  const std::vector<float> dout = random_floats(static_cast<size_t>(s.positions() * s.dim), 3);
  std::vector<float> dpos(static_cast<size_t>(s.seq * s.dim), 0.0f), dtok(static_cast<size_t>(s.vocab * s.dim), 0.0f);
  coco::kernels::cpu::embedding_backward(dtok.data(), dpos.data(), dout.data(), ids.data(), s, -1);
  GuardedDeviceBuffer<int32_t> d_ids(ids);
  GuardedDeviceBuffer<float> d_dout(dout), d_dpos(dpos.size()), d_dtok(dtok.size());
  coco::kernels::cuda::embedding_backward(static_cast<float*>(nullptr), d_dpos.data(), d_dout.data(), d_ids.data(), s,
                                          -1, nullptr, nullptr);
  EXPECT_TRUE(matches_reference(to_f64(dpos), to_f64(d_dpos.download()), kF32Threshold, "dpos only"));
  GuardedDeviceBuffer<uint8_t> workspace(coco::kernels::cuda::embedding_backward_workspace_bytes(s));
  coco::kernels::cuda::embedding_backward(d_dtok.data(), static_cast<float*>(nullptr), d_dout.data(), d_ids.data(), s,
                                          -1, workspace.data(), nullptr);
  EXPECT_TRUE(matches_reference(to_f64(dtok), to_f64(d_dtok.download()), kF32Threshold, "dtok only"));
  EXPECT_THROW(coco::kernels::cuda::embedding_backward(d_dtok.data(), static_cast<float*>(nullptr), d_dout.data(),
                                                       d_ids.data(), s, -1, nullptr, nullptr),
               std::invalid_argument);
}

TEST(EmbeddingCuda, BackwardIsBitwiseScheduleInvariant) {
  const EmbeddingShape s{3, 130, 300, 37};
  const std::vector<int32_t> ids = make_ids(s, 21, 0);
  using T = __nv_bfloat16;
  GuardedDeviceBuffer<int32_t> d_ids(ids);
  GuardedDeviceBuffer<T> d_dout(
      coco::testing::from_floats<T>(random_floats(static_cast<size_t>(s.positions() * s.dim), 8)));
  GuardedDeviceBuffer<float> d_dtok(static_cast<size_t>(s.vocab * s.dim)), d_dpos(static_cast<size_t>(s.seq * s.dim));
  GuardedDeviceBuffer<uint8_t> workspace(coco::kernels::cuda::embedding_backward_workspace_bytes(s));
  const emu::OracleResult result = emu::check_schedule_invariance(
      [&] {
        COCO_CUDA_CHECK(cudaMemset(d_dtok.data(), 0, d_dtok.bytes()));
        COCO_CUDA_CHECK(cudaMemset(d_dpos.data(), 0, d_dpos.bytes()));
        workspace.poison(0x5A);
        coco::kernels::cuda::embedding_backward(d_dtok.data(), d_dpos.data(), d_dout.data(), d_ids.data(), s, 0,
                                                workspace.data(), nullptr);
        std::vector<uint8_t> bytes = d_dtok.download_bytes();
        const std::vector<uint8_t> pos_bytes = d_dpos.download_bytes();
        bytes.insert(bytes.end(), pos_bytes.begin(), pos_bytes.end());
        return bytes;
      },
      3);
  EXPECT_TRUE(result.identical) << result.message;
}

TEST(EmbeddingCpu, OutOfRangeIdThrowsNamingIdAndPosition) {
  const EmbeddingShape s{2, 3, 10, 4};
  std::vector<int32_t> ids = {1, 2, 3, 4, 12, 5};
  std::vector<float> tok(40, 1.0f), pos(12, 0.5f), out(24);
  try {
    coco::kernels::cpu::embedding_forward(out.data(), ids.data(), tok.data(), pos.data(), s);
    FAIL() << "expected TokenIdError";
  } catch (const TokenIdError& error) {
    EXPECT_NE(std::string(error.what()).find("token id 12 at position (b=1, t=1)"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("[0, 10)"), std::string::npos) << error.what();
  }
  ids[4] = -3;
  EXPECT_THROW(coco::kernels::cpu::embedding_forward(out.data(), ids.data(), tok.data(), pos.data(), s), TokenIdError);
}

TEST(EmbeddingCuda, OutOfRangeIdsAreClampedAndReported) {
  const EmbeddingShape s{2, 7, 11, 5};
  std::vector<int32_t> ids = make_ids(s, 3, -1);
  ids[9] = 11;   // b=1, t=2: first offender
  ids[12] = -1;  // b=1, t=5
  ids[13] = 1 << 30;
  const std::vector<float> tok = random_floats(static_cast<size_t>(s.vocab * s.dim), 1);
  const std::vector<float> pos = random_floats(static_cast<size_t>(s.seq * s.dim), 2);
  GuardedDeviceBuffer<int32_t> d_ids(ids);
  GuardedDeviceBuffer<float> d_tok(tok), d_pos(pos), d_out(static_cast<size_t>(s.positions() * s.dim));
  GuardedDeviceBuffer<uint32_t> d_bad(1);
  coco::kernels::cuda::embedding_forward(d_out.data(), d_ids.data(), d_tok.data(), d_pos.data(), s, d_bad.data(),
                                         nullptr);
  EXPECT_EQ(d_bad.download()[0], 9u);
  // Clamped reads: the offending rows hold tok[V-1] + pos (high ids) and tok[0] + pos (negative).
  const std::vector<float> out = d_out.download();
  for (int64_t e = 0; e < s.dim; ++e) {
    EXPECT_EQ(out[static_cast<size_t>(9 * s.dim + e)],
              tok[static_cast<size_t>(10 * s.dim + e)] + pos[static_cast<size_t>(2 * s.dim + e)]);
    EXPECT_EQ(out[static_cast<size_t>(12 * s.dim + e)],
              tok[static_cast<size_t>(e)] + pos[static_cast<size_t>(5 * s.dim + e)]);
  }
  try {
    coco::kernels::cuda::embedding_throw_if_bad_id(d_bad.data(), d_ids.data(), s, nullptr);
    FAIL() << "expected TokenIdError";
  } catch (const TokenIdError& error) {
    EXPECT_NE(std::string(error.what()).find("token id 11 at position (b=1, t=2)"), std::string::npos) << error.what();
  }
  // A clean launch resets the flag.
  ids[9] = 0, ids[12] = 0, ids[13] = 0;
  d_ids.upload(ids);
  coco::kernels::cuda::embedding_forward(d_out.data(), d_ids.data(), d_tok.data(), d_pos.data(), s, d_bad.data(),
                                         nullptr);
  EXPECT_NO_THROW(coco::kernels::cuda::embedding_throw_if_bad_id(d_bad.data(), d_ids.data(), s, nullptr));
}

#if defined(COCO_CUDA_EMULATED)
// In emulated mode device memory is host memory: put the token table flush against inaccessible
// pages on both sides, so any read outside it (an unclamped id) faults.
TEST(EmbeddingCuda, OutOfRangeIdsNeverReadOutsideTheTable) {
  const EmbeddingShape s{2, 33, 64, 16};  // table = 64 * 16 * 4 bytes = one 4 KiB page
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t table_bytes = static_cast<size_t>(s.vocab * s.dim) * sizeof(float);
  ASSERT_EQ(table_bytes % page, 0u);
  void* region = mmap(nullptr, table_bytes + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(region, MAP_FAILED);
  auto* base = static_cast<uint8_t*>(region);
  ASSERT_EQ(mprotect(base, page, PROT_NONE), 0);
  ASSERT_EQ(mprotect(base + page + table_bytes, page, PROT_NONE), 0);
  float* tok = reinterpret_cast<float*>(base + page);
  const std::vector<float> values = random_floats(static_cast<size_t>(s.vocab * s.dim), 3);
  std::memcpy(tok, values.data(), table_bytes);
  std::vector<int32_t> ids = make_ids(s, 4, -1);
  ids[0] = -1;
  ids[5] = static_cast<int32_t>(s.vocab);
  ids[40] = INT32_MIN;
  ids[65] = INT32_MAX;
  GuardedDeviceBuffer<int32_t> d_ids(ids);
  GuardedDeviceBuffer<float> d_out(static_cast<size_t>(s.positions() * s.dim));
  GuardedDeviceBuffer<uint32_t> d_bad(1);
  coco::kernels::cuda::embedding_forward(d_out.data(), d_ids.data(), tok, static_cast<const float*>(nullptr), s,
                                         d_bad.data(), nullptr);
  EXPECT_EQ(d_bad.download()[0], 0u);
  EXPECT_THROW(coco::kernels::cuda::embedding_throw_if_bad_id(d_bad.data(), d_ids.data(), s, nullptr), TokenIdError);
  munmap(region, table_bytes + 2 * page);
}
#endif

TEST(EmbeddingCuda, BackwardIgnoresOutOfRangeIds) {
  // Out-of-range ids (a forward would have reported them) must not write outside dtok.
  const EmbeddingShape s{1, 7, 4, 3};
  const std::vector<int32_t> ids = {0, 9, -2, 3, 3, 1 << 30, 0};
  const std::vector<float> dout = random_floats(21, 4);
  std::vector<float> dtok(12, 0.0f), dpos(21, 0.0f);
  coco::kernels::cpu::embedding_backward(dtok.data(), dpos.data(), dout.data(), ids.data(), s, -1);
  GuardedDeviceBuffer<int32_t> d_ids(ids);
  GuardedDeviceBuffer<float> d_dout(dout), d_dtok(12), d_dpos(21);
  GuardedDeviceBuffer<uint8_t> workspace(coco::kernels::cuda::embedding_backward_workspace_bytes(s));
  coco::kernels::cuda::embedding_backward(d_dtok.data(), d_dpos.data(), d_dout.data(), d_ids.data(), s, -1,
                                          workspace.data(), nullptr);
  EXPECT_TRUE(matches_reference(to_f64(dtok), to_f64(d_dtok.download()), kF32Threshold, "dtok"));
  EXPECT_TRUE(d_dtok.guards_intact());
}

TEST(EmbeddingCuda, NanInDoutStaysInItsRows) {
  const EmbeddingShape s{2, 7, 6, 5};
  const std::vector<int32_t> ids = {0, 1, 2, 3, 4, 5, 0, 1, 1, 1, 2, 2, 3, 3};
  std::vector<float> dout = random_floats(70, 6);
  dout[5 * 3 + 2] = NAN;       // position 3 (id 3), column 2
  dout[5 * 8 + 0] = INFINITY;  // position 8 (id 1), column 0
  std::vector<float> dtok(30, 0.0f), dpos(35, 0.0f);
  coco::kernels::cpu::embedding_backward(dtok.data(), dpos.data(), dout.data(), ids.data(), s, -1);
  GuardedDeviceBuffer<int32_t> d_ids(ids);
  GuardedDeviceBuffer<float> d_dout(dout), d_dtok(30), d_dpos(35);
  GuardedDeviceBuffer<uint8_t> workspace(coco::kernels::cuda::embedding_backward_workspace_bytes(s));
  coco::kernels::cuda::embedding_backward(d_dtok.data(), d_dpos.data(), d_dout.data(), d_ids.data(), s, -1,
                                          workspace.data(), nullptr);
  EXPECT_TRUE(matches_reference(to_f64(dtok), to_f64(d_dtok.download()), kF32Threshold, "dtok with NaN/Inf"));
  EXPECT_TRUE(matches_reference(to_f64(dpos), to_f64(d_dpos.download()), kF32Threshold, "dpos with NaN/Inf"));
}

TEST(EmbeddingCuda, RejectsBadShapes) {
  float value = 0.0f;
  int32_t id = 0;
  EXPECT_THROW(
      coco::kernels::cuda::embedding_forward(&value, &id, &value, &value, EmbeddingShape{1, 1, 0, 4}, nullptr, nullptr),
      std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::embedding_forward(&value, &id, &value, &value, EmbeddingShape{1, 1, 3, 0}),
               std::invalid_argument);
}

}  // namespace
