// f64 finite-difference checks of the attention backward (CPU kernels) for Q, K, V and the shared
// bias, with padding, a fully padded batch row and dropout (a fixed Philox mask makes the function
// deterministic); and through ops::attention on the tape.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/attention.h"
#include "engine/ops/relpos.h"
#include "engine/rng/philox.h"
#include "engine/tensor.h"
#include "kernels/attention.h"

namespace {

using coco::kernels::AttentionDropout;
using coco::kernels::AttentionShape;

struct Case {
  AttentionShape shape;
  bool bias;
  float dropout_p;
  std::vector<int> valid_keys;  // per batch row: keys [0, valid) attend
};

void check_kernel_gradient(const Case& c, unsigned seed) {
  const AttentionShape& s = c.shape;
  const size_t n = static_cast<size_t>(s.qkv_elements());
  std::vector<double> q = coco::gradcheck_weights(n, seed), k = coco::gradcheck_weights(n, seed + 1),
                      v = coco::gradcheck_weights(n, seed + 2);
  for (double& x : q) x *= 2.0;
  std::vector<double> bias =
      c.bias ? coco::gradcheck_weights(static_cast<size_t>(s.bias_elements()), seed + 3) : std::vector<double>{};
  std::vector<int32_t> mask(static_cast<size_t>(s.batch * s.seq_len), 0);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t j = 0; j < c.valid_keys[static_cast<size_t>(b)]; ++j) mask[static_cast<size_t>(b * s.seq_len + j)] = 1;
  const AttentionDropout dropout{c.dropout_p, coco::rng::Stream(99, 3, coco::rng::Purpose::dropout_attention)};
  const std::vector<double> w = coco::gradcheck_weights(n, seed + 4);

  std::vector<double> out(n), probs(static_cast<size_t>(s.score_elements()));
  coco::kernels::cpu::attention_forward(q.data(), k.data(), v.data(), mask.data(), c.bias ? bias.data() : nullptr, s,
                                        dropout, out.data(), probs.data());
  std::vector<double> dq(n), dk(n), dv(n), dbias(bias.size());
  coco::kernels::cpu::attention_backward(q.data(), k.data(), v.data(), probs.data(), w.data(), s, dropout, dq.data(),
                                         dk.data(), dv.data(), c.bias ? dbias.data() : nullptr, false);
  auto loss = [&] {
    std::vector<double> o(n), p(probs.size());
    coco::kernels::cpu::attention_forward(q.data(), k.data(), v.data(), mask.data(), c.bias ? bias.data() : nullptr, s,
                                          dropout, o.data(), p.data());
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) total += o[i] * w[i];
    return total;
  };
  std::vector<coco::GradcheckInput> inputs = {{"q", q, dq}, {"k", k, dk}, {"v", v, dv}};
  if (c.bias) inputs.push_back({"bias", bias, dbias});
  const coco::GradcheckReport report = coco::gradcheck_raw(inputs, loss);
  EXPECT_TRUE(report.ok) << "B=" << s.batch << " H=" << s.heads << " T=" << s.seq_len << " Dh=" << s.head_dim
                         << " p=" << c.dropout_p << ": " << report.worst;
}

TEST(AttentionGradcheck, Kernel) {
  check_kernel_gradient({{2, 2, 1, 3}, true, 0.0f, {1, 1}}, 1);
  check_kernel_gradient({{2, 2, 5, 3}, true, 0.0f, {5, 3}}, 2);
  check_kernel_gradient({{2, 3, 7, 4}, true, 0.3f, {7, 4}}, 3);     // dropout
  check_kernel_gradient({{3, 2, 6, 2}, true, 0.2f, {6, 0, 2}}, 4);  // batch row 1 fully padded
  check_kernel_gradient({{1, 2, 9, 5}, false, 0.0f, {8}}, 5);
}

coco::Tensor input(const coco::Shape& shape, unsigned seed, const char* name, double scale = 1.0) {
  std::vector<double> values = coco::gradcheck_weights(static_cast<size_t>(shape.numel()), seed);
  for (double& v : values) v *= scale;
  coco::Tensor t = coco::Tensor::from_vector(values, shape);
  t.set_requires_grad(true).set_name(name);
  return t;
}

// ops::attention on the tape: Q, K, V and the bias, u8 and i32 masks, dropout in training mode.
TEST(AttentionGradcheck, OpOnTheTape) {
  const int64_t B = 2, H = 2, T = 6, Dh = 3;
  const coco::Tensor q = input({B, H, T, Dh}, 11, "q", 2.0), k = input({B, H, T, Dh}, 12, "k"),
                     v = input({B, H, T, Dh}, 13, "v"), bias = input({H, T, T}, 14, "bias");
  const coco::Tensor mask_u8 =
      coco::Tensor::from_vector(std::vector<uint8_t>{1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0}, coco::Shape{B, T});
  const coco::Tensor mask_i32 = mask_u8.to(coco::DType::i32);
  const coco::rng::Stream stream(5, 1, coco::rng::Purpose::dropout_attention);
  for (const coco::Tensor* mask : {&mask_u8, &mask_i32}) {
    for (double p : {0.0, 0.25}) {
      const coco::GradcheckReport report = coco::gradcheck(
          [&](const auto& in) { return coco::ops::attention(in[0], in[1], in[2], *mask, in[3], p, stream, true); },
          {q, k, v, bias});
      EXPECT_TRUE(report.ok) << coco::dtype_name(mask->dtype()) << " mask, p=" << p << ": " << report.worst;
    }
  }
  // No mask, no bias, evaluation mode (p ignored).
  const coco::GradcheckReport plain = coco::gradcheck(
      [&](const auto& in) {
        return coco::ops::attention(in[0], in[1], in[2], coco::Tensor(), coco::Tensor(), 0.5, stream, false);
      },
      {q, k, v});
  EXPECT_TRUE(plain.ok) << plain.worst;
}

// The relative-position bias feeding attention: the table's gradient through both ops.
TEST(AttentionGradcheck, RelativePositionBiasThroughAttention) {
  const int64_t B = 2, H = 3, T = 7, Dh = 2;
  const coco::ops::RelativePositionConfig config{8, 20, 40};
  const coco::Tensor q = input({B, H, T, Dh}, 21, "q", 2.0), k = input({B, H, T, Dh}, 22, "k"),
                     v = input({B, H, T, Dh}, 23, "v"), table = input({8, H}, 24, "table", 2.0);
  const coco::Tensor mask =
      coco::Tensor::from_vector(std::vector<int32_t>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0}, coco::Shape{B, T});
  const coco::rng::Stream stream(6, 2, coco::rng::Purpose::dropout_attention);
  const coco::GradcheckReport report = coco::gradcheck(
      [&](const auto& in) {
        const coco::Tensor bias = coco::ops::relative_position_bias(in[3], T, config);
        return coco::ops::attention(in[0], in[1], in[2], mask, bias, 0.2, stream, true);
      },
      {q, k, v, table});
  EXPECT_TRUE(report.ok) << report.worst;
}

TEST(AttentionGradcheck, OpRejectsBadArguments) {
  const coco::Tensor q = input({1, 2, 3, 4}, 1, "q"), bad = input({1, 2, 4, 4}, 2, "k");
  const coco::rng::Stream stream;
  EXPECT_THROW(coco::ops::attention(q, bad, q, coco::Tensor(), coco::Tensor(), 0.0, stream, false), coco::TensorError);
  const coco::Tensor mask_f = coco::Tensor::zeros({1, 3}, coco::DType::f64);
  EXPECT_THROW(coco::ops::attention(q, q, q, mask_f, coco::Tensor(), 0.0, stream, false), coco::TensorError);
  const coco::Tensor bias_bad = coco::Tensor::zeros({2, 3, 4}, coco::DType::f64);
  EXPECT_THROW(coco::ops::attention(q, q, q, coco::Tensor(), bias_bad, 0.0, stream, false), coco::TensorError);
  EXPECT_THROW(coco::ops::attention(q, q, q, coco::Tensor(), coco::Tensor(), 1.0, stream, true), coco::TensorError);
}

}  // namespace
