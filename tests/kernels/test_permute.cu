// Head split/merge permutes: CUDA (emulated) against the CPU versions and an index-formula
// reference, bitwise (pure data movement), at odd shapes; round trips; qkv split/merge.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "kernels/permute.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::kernels::HeadShape;
using coco::testing::GuardedDeviceBuffer;

const HeadShape kShapes[] = {{1, 1, 1, 1}, {2, 7, 3, 5}, {1, 33, 2, 12}, {2, 130, 4, 7}, {3, 1, 5, 64}};

std::string label(const HeadShape& s) {
  return "B=" + std::to_string(s.batch) + " T=" + std::to_string(s.seq) + " H=" + std::to_string(s.heads) +
         " Dh=" + std::to_string(s.head_dim);
}

// Distinct, exactly representable values so any misplaced element is visible.
template <class T>
std::vector<T> iota_values(size_t n, float start) {
  std::vector<float> values(n);
  for (size_t i = 0; i < n; ++i)
    values[i] = start + static_cast<float>(i % 251) + 0.5f * static_cast<float>(i / 251 % 2);
  return coco::testing::from_floats<T>(values);
}

template <class T>
bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

template <class T>
class PermuteCuda : public ::testing::Test {};
using ElementTypes = ::testing::Types<float, __nv_bfloat16, double>;
TYPED_TEST_SUITE(PermuteCuda, ElementTypes);

TYPED_TEST(PermuteCuda, SplitAndMergeHeadsMatchCpuAndIndexFormula) {
  using T = TypeParam;
  for (const HeadShape& s : kShapes) {
    const size_t n = static_cast<size_t>(s.numel());
    const std::vector<T> tokens = iota_values<T>(n, 1.0f);
    std::vector<T> heads(n), expected(n);
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t t = 0; t < s.seq; ++t)
        for (int64_t h = 0; h < s.heads; ++h)
          for (int64_t d = 0; d < s.head_dim; ++d)
            expected[static_cast<size_t>(((b * s.heads + h) * s.seq + t) * s.head_dim + d)] =
                tokens[static_cast<size_t>((b * s.seq + t) * s.heads * s.head_dim + h * s.head_dim + d)];
    coco::kernels::cpu::split_heads(heads.data(), tokens.data(), s);
    EXPECT_TRUE(same_bytes(heads, expected)) << "cpu split " << label(s);

    GuardedDeviceBuffer<T> d_tokens(tokens), d_heads(n), d_back(n);
    d_heads.poison();
    d_back.poison();
    coco::kernels::cuda::split_heads(d_heads.data(), d_tokens.data(), s, nullptr);
    EXPECT_TRUE(same_bytes(d_heads.download(), expected)) << "cuda split " << label(s);
    coco::kernels::cuda::merge_heads(d_back.data(), d_heads.data(), s, nullptr);
    EXPECT_TRUE(same_bytes(d_back.download(), tokens)) << "cuda merge round trip " << label(s);
    std::vector<T> cpu_back(n);
    coco::kernels::cpu::merge_heads(cpu_back.data(), heads.data(), s);
    EXPECT_TRUE(same_bytes(cpu_back, tokens)) << "cpu merge round trip " << label(s);
    EXPECT_TRUE(d_heads.guards_intact() && d_back.guards_intact()) << label(s);
  }
}

TYPED_TEST(PermuteCuda, SplitAndMergeQkvMatchCpuAndIndexFormula) {
  using T = TypeParam;
  for (const HeadShape& s : kShapes) {
    const size_t n = static_cast<size_t>(s.numel());
    const int64_t width = s.heads * s.head_dim;
    const std::vector<T> qkv = iota_values<T>(3 * n, -100.0f);
    std::vector<std::vector<T>> expected(3, std::vector<T>(n));
    for (int part = 0; part < 3; ++part)
      for (int64_t b = 0; b < s.batch; ++b)
        for (int64_t t = 0; t < s.seq; ++t)
          for (int64_t h = 0; h < s.heads; ++h)
            for (int64_t d = 0; d < s.head_dim; ++d)
              expected[part][static_cast<size_t>(((b * s.heads + h) * s.seq + t) * s.head_dim + d)] =
                  qkv[static_cast<size_t>((b * s.seq + t) * 3 * width + part * width + h * s.head_dim + d)];
    std::vector<T> q(n), k(n), v(n);
    coco::kernels::cpu::split_qkv(q.data(), k.data(), v.data(), qkv.data(), s);
    EXPECT_TRUE(same_bytes(q, expected[0]) && same_bytes(k, expected[1]) && same_bytes(v, expected[2]))
        << "cpu " << label(s);

    GuardedDeviceBuffer<T> d_qkv(qkv), d_q(n), d_k(n), d_v(n), d_back(3 * n);
    for (auto* b : {&d_q, &d_k, &d_v, &d_back}) b->poison();
    coco::kernels::cuda::split_qkv(d_q.data(), d_k.data(), d_v.data(), d_qkv.data(), s, nullptr);
    EXPECT_TRUE(same_bytes(d_q.download(), expected[0])) << "q " << label(s);
    EXPECT_TRUE(same_bytes(d_k.download(), expected[1])) << "k " << label(s);
    EXPECT_TRUE(same_bytes(d_v.download(), expected[2])) << "v " << label(s);
    coco::kernels::cuda::merge_qkv(d_back.data(), d_q.data(), d_k.data(), d_v.data(), s, nullptr);
    EXPECT_TRUE(same_bytes(d_back.download(), qkv)) << "cuda merge_qkv round trip " << label(s);
    std::vector<T> cpu_back(3 * n);
    coco::kernels::cpu::merge_qkv(cpu_back.data(), q.data(), k.data(), v.data(), s);
    EXPECT_TRUE(same_bytes(cpu_back, qkv)) << "cpu merge_qkv round trip " << label(s);
    for (auto* b : {&d_q, &d_k, &d_v, &d_back}) EXPECT_TRUE(b->guards_intact()) << label(s);
  }
}

TEST(PermuteCuda, NanAndInfMoveUnchanged) {
  const HeadShape s{1, 3, 2, 2};
  const std::vector<float> tokens = {NAN, 1, INFINITY, 2, 3, -INFINITY, 4, 5, 6, 7, 8, -0.0f};
  GuardedDeviceBuffer<float> d_tokens(tokens), d_heads(12), d_back(12);
  coco::kernels::cuda::split_heads(d_heads.data(), d_tokens.data(), s, nullptr);
  coco::kernels::cuda::merge_heads(d_back.data(), d_heads.data(), s, nullptr);
  EXPECT_TRUE(same_bytes(d_back.download(), tokens));
}

TEST(PermuteCuda, EmptyAndNegativeShapes) {
  float value = 0.0f;
  EXPECT_NO_THROW(coco::kernels::cuda::split_heads(&value, &value, HeadShape{0, 5, 2, 3}, nullptr));
  EXPECT_THROW(coco::kernels::cuda::split_heads(&value, &value, HeadShape{1, -1, 2, 3}, nullptr),
               std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::merge_qkv(&value, &value, &value, &value, HeadShape{1, 1, -2, 3}),
               std::invalid_argument);
}

}  // namespace
