// The CPU kernels that run on the thread pool (engine/runtime/cpu_backend.h) give bitwise the same
// results at 1, 2, 3 and 8 threads (issue #18: fixed partitioning, reductions in a fixed order): the
// f32 attention fast path (per (batch, head), bias gradient summed over the batch afterwards), the
// vocabulary cross-entropy, column sums, the layer-norm gamma/beta gradients, the embedding backward
// with repeated ids, the log-softmax backward and the element-wise kernels. The shapes are large
// enough that every kernel splits its work at 2 threads and more.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>
#include <vector>

#include "engine/rng/philox.h"
#include "engine/runtime/cpu_backend.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/layernorm.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"

namespace coco::kernels {
namespace {

namespace cpu_backend = runtime::cpu;

std::vector<float> random_floats(size_t n, float scale, uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(generator);
  return v;
}

// Runs `compute` (which returns every output's bytes) at 1, 2, 3 and 8 threads; all must be equal.
void expect_same_bits_at_every_thread_count(const char* what, const std::function<std::vector<char>()>& compute) {
  const int saved = cpu_backend::threads();
  cpu_backend::set_threads(1);
  const std::vector<char> one = compute();
  ASSERT_FALSE(one.empty()) << what;
  for (int threads : {2, 3, 8}) {
    cpu_backend::set_threads(threads);
    EXPECT_TRUE(compute() == one) << what << ": results differ at " << threads << " threads";
  }
  cpu_backend::set_threads(saved);
}

template <class... Vectors>
std::vector<char> bytes_of(const Vectors&... vectors) {
  std::vector<char> out;
  const auto append = [&](const auto& v) {
    const size_t at = out.size(), bytes = v.size() * sizeof(v[0]);
    out.resize(at + bytes);
    if (bytes > 0) std::memcpy(out.data() + at, v.data(), bytes);
  };
  (append(vectors), ...);
  return out;
}

TEST(CpuParallel, AttentionFastPathForwardAndBackward) {
  const AttentionShape shape{3, 4, 24, 16};
  const size_t qkv = static_cast<size_t>(shape.qkv_elements()), scores = static_cast<size_t>(shape.score_elements());
  const auto q = random_floats(qkv, 1.0f, 1), k = random_floats(qkv, 1.0f, 2), v = random_floats(qkv, 1.0f, 3);
  const auto dout = random_floats(qkv, 1.0f, 4);
  const auto bias = random_floats(static_cast<size_t>(shape.heads * shape.seq_len * shape.seq_len), 0.5f, 5);
  std::vector<uint8_t> mask(static_cast<size_t>(shape.batch * shape.seq_len), 1);
  for (int64_t t = 20; t < shape.seq_len; ++t) mask[static_cast<size_t>(shape.seq_len + t)] = 0;  // padded keys
  const AttentionDropout dropout{0.2f, rng::Stream(7, 3, rng::Purpose::dropout_attention)};
  const auto initial_dbias = random_floats(bias.size(), 0.1f, 6);
  expect_same_bits_at_every_thread_count("attention", [&] {
    std::vector<float> out(qkv), probs(scores), dq(qkv), dk(qkv), dv(qkv), dbias = initial_dbias;
    cpu::attention_forward_fast<float, uint8_t>(q.data(), k.data(), v.data(), mask.data(), bias.data(), shape, dropout,
                                                out.data(), probs.data());
    cpu::attention_backward_fast<float>(q.data(), k.data(), v.data(), probs.data(), dout.data(), shape, dropout,
                                        dq.data(), dk.data(), dv.data(), dbias.data(), true);
    return bytes_of(out, probs, dq, dk, dv, dbias);
  });
}

TEST(CpuParallel, CrossEntropyForwardWithGradientAndBackward) {
  constexpr int64_t rows = 37, vocab = 1500;
  const auto logits = random_floats(rows * vocab, 3.0f, 8);
  const auto weights = random_floats(rows, 1.0f, 9);
  std::vector<int32_t> targets(rows);
  for (int64_t i = 0; i < rows; ++i) targets[static_cast<size_t>(i)] = i % 5 == 0 ? -1 : static_cast<int32_t>(i * 31);
  expect_same_bits_at_every_thread_count("cross_entropy", [&] {
    std::vector<float> loss(1), row_loss(rows), row_lse(rows), dlogits(logits.size()), dlogits2(logits.size());
    std::vector<int32_t> counts(kCrossEntropyCounts);
    cpu::cross_entropy_forward<float>(logits.data(), targets.data(), weights.data(), rows, vocab, -1,
                                      LossReduction::mean, loss.data(), row_loss.data(), row_lse.data(), counts.data(),
                                      dlogits.data(), 1.0f);
    const float dloss = 0.75f;
    cpu::cross_entropy_backward<float>(logits.data(), targets.data(), weights.data(), row_lse.data(), counts.data(),
                                       rows, vocab, -1, LossReduction::mean, &dloss, dlogits2.data());
    return bytes_of(loss, row_loss, row_lse, dlogits, dlogits2, counts);
  });
}

TEST(CpuParallel, ColumnSumAndLayerNormParameterGradients) {
  constexpr int64_t rows = 300, C = 96;
  const auto x = random_floats(rows * C, 1.0f, 10), dout = random_floats(rows * C, 1.0f, 11);
  const auto gamma = random_floats(C, 1.0f, 12), beta = random_floats(C, 1.0f, 13);
  const auto start = random_floats(C, 1.0f, 14);
  expect_same_bits_at_every_thread_count("column_sum + layernorm", [&] {
    std::vector<float> sums = start, y(x.size()), mean(rows), rstd(rows), dx(x.size()), dgamma = start, dbeta = start;
    cpu::column_sum<float>(x.data(), rows, C, 1.0, sums.data());
    cpu::layernorm_forward<float>(y.data(), mean.data(), rstd.data(), x.data(), gamma.data(), beta.data(), rows, C,
                                  1e-5);
    cpu::layernorm_backward<float>(dx.data(), dgamma.data(), dbeta.data(), dout.data(), nullptr, x.data(), gamma.data(),
                                   mean.data(), rstd.data(), rows, C);
    return bytes_of(sums, y, mean, rstd, dx, dgamma, dbeta);
  });
}

TEST(CpuParallel, EmbeddingBackwardWithRepeatedIds) {
  const EmbeddingShape shape{8, 40, 50, 64};
  const auto dout = random_floats(static_cast<size_t>(shape.positions() * shape.dim), 1.0f, 15);
  std::vector<int32_t> ids(static_cast<size_t>(shape.positions()));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7) % 50);  // every id many times
  expect_same_bits_at_every_thread_count("embedding_backward", [&] {
    std::vector<float> dtok(static_cast<size_t>(shape.vocab * shape.dim), 0.5f);
    std::vector<float> dpos(static_cast<size_t>(shape.seq * shape.dim), 0.25f);
    cpu::embedding_backward<float>(dtok.data(), dpos.data(), dout.data(), ids.data(), shape, 0);
    return bytes_of(dtok, dpos);
  });
}

TEST(CpuParallel, LogSoftmaxBackwardAndElementwise) {
  constexpr int64_t rows = 64, width = 700, n = rows * width;
  const auto x = random_floats(n, 2.0f, 16), dy = random_floats(n, 1.0f, 17), b = random_floats(n, 1.0f, 18);
  expect_same_bits_at_every_thread_count("log_softmax_backward + elementwise", [&] {
    std::vector<float> y(n), dx(n), sum(n), scaled(n), da(n), db(n), accumulated = b;
    cpu::log_softmax_forward<float>(x.data(), y.data(), rows, width);
    cpu::log_softmax_backward<float>(y.data(), dy.data(), dx.data(), rows, width);
    cpu::binary<float>(BinaryOp::add, x.data(), b.data(), sum.data(), n);
    cpu::add_scaled<float>(x.data(), b.data(), 0.3, scaled.data(), n);
    cpu::add_inplace<float>(accumulated.data(), x.data(), n);
    cpu::mul_backward<float>(dy.data(), x.data(), b.data(), da.data(), db.data(), n);
    return bytes_of(y, dx, sum, scaled, accumulated, da, db);
  });
}

}  // namespace
}  // namespace coco::kernels
