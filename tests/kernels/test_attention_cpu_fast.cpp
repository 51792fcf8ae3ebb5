// The fast CPU attention (kernels::cpu::attention_forward_fast / attention_backward_fast, the f32 CPU
// tensor path) against the double-accumulating reference at odd T (1, 7, 33, 130) and head sizes that
// are not multiples of 8, u8 / i32 / no key mask, with and without the shared bias and dropout: the
// outputs, saved probabilities and every gradient incl. dbias; the dropout mask itself; fully padded
// rows; NaN/Inf parity; dbias accumulation and skipped gradients; bitwise run-to-run determinism;
// ops::attention on f32 CPU tensors using it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "engine/ops/attention.h"
#include "engine/rng/philox.h"
#include "engine/tape.h"
#include "engine/tensor.h"
#include "kernels/attention.h"
#include "tests/common/attention_cases.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::kernels::AttentionDropout;
using coco::kernels::AttentionShape;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::to_f64;

// Fast f32 against the reference (double sums, outputs rounded to f32): the fast path forms S, P_drop v
// and the backward products with f32 GEMMs (relative error ~sqrt(K) 2^-24, K <= 130), the softmax
// and dS = P (dP - sum dP P) in f32 (a <= 1 ulp exp; dS loses a few bits to cancellation where dP is
// near the row mean). Measured NMSE <= ~1e-13 at these shapes; 1e-11 leaves two orders of margin and
// is still far below what a wrong mask, scale or index would give (>= 1e-4).
constexpr double kF32Nmse = 1e-11;
// Fast f64 against the reference f64: the same algorithm, rounding of double sums only (~1e-31).
constexpr double kF64Nmse = 1e-26;

using Case = coco::testing::AttentionCase;
using Inputs = coco::testing::AttentionInputs;
using coco::testing::attention_inputs;
using coco::testing::attention_key_mask;
using coco::testing::attention_test_dropout;
using coco::testing::describe;

template <class T>
std::vector<T> cast_to(const std::vector<float>& values) {
  return std::vector<T>(values.begin(), values.end());
}

template <class T>
struct Results {
  std::vector<T> out, probs, dq, dk, dv, dbias;
};

// Runs the reference (fast == false) or the fast path on T copies of the inputs. Every output starts
// as NaN, so an element the kernel forgets to write shows up.
template <class T, class Mask>
Results<T> run(bool fast, const Case& c, const Inputs& in, const Mask* mask) {
  const AttentionDropout dropout = attention_test_dropout(c.dropout_p);
  const size_t n = static_cast<size_t>(c.shape.qkv_elements());
  const T nan = std::numeric_limits<T>::quiet_NaN();
  const std::vector<T> q = cast_to<T>(in.q), k = cast_to<T>(in.k), v = cast_to<T>(in.v), bias = cast_to<T>(in.bias),
                       dout = cast_to<T>(in.dout);
  Results<T> r{std::vector<T>(n, nan), std::vector<T>(static_cast<size_t>(c.shape.score_elements()), nan),
               std::vector<T>(n, nan), std::vector<T>(n, nan),
               std::vector<T>(n, nan), std::vector<T>(bias.size(), nan)};
  const T* bias_data = c.bias ? bias.data() : nullptr;
  T* dbias_data = c.bias ? r.dbias.data() : nullptr;
  if (fast) {
    coco::kernels::cpu::attention_forward_fast(q.data(), k.data(), v.data(), mask, bias_data, c.shape, dropout,
                                               r.out.data(), r.probs.data());
    coco::kernels::cpu::attention_backward_fast(q.data(), k.data(), v.data(), r.probs.data(), dout.data(), c.shape,
                                                dropout, r.dq.data(), r.dk.data(), r.dv.data(), dbias_data, false);
  } else {
    coco::kernels::cpu::attention_forward(q.data(), k.data(), v.data(), mask, bias_data, c.shape, dropout, r.out.data(),
                                          r.probs.data());
    coco::kernels::cpu::attention_backward(q.data(), k.data(), v.data(), r.probs.data(), dout.data(), c.shape, dropout,
                                           r.dq.data(), r.dk.data(), r.dv.data(), dbias_data, false);
  }
  return r;
}

template <class T>
void expect_close(const Results<T>& ref, const Results<T>& got, double threshold, const std::string& what) {
  EXPECT_TRUE(matches_reference(to_f64(ref.out), to_f64(got.out), threshold, what + " out"));
  EXPECT_TRUE(matches_reference(to_f64(ref.probs), to_f64(got.probs), threshold, what + " probs"));
  EXPECT_TRUE(matches_reference(to_f64(ref.dq), to_f64(got.dq), threshold, what + " dq"));
  EXPECT_TRUE(matches_reference(to_f64(ref.dk), to_f64(got.dk), threshold, what + " dk"));
  EXPECT_TRUE(matches_reference(to_f64(ref.dv), to_f64(got.dv), threshold, what + " dv"));
  EXPECT_TRUE(matches_reference(to_f64(ref.dbias), to_f64(got.dbias), threshold, what + " dbias"));
}

const Case kCases[] = {
    {{2, 2, 1, 8}, true, 0.0f, 0},     // T = 1
    {{2, 3, 7, 5}, true, 0.2f, 3},     // odd T and Dh, padding, dropout
    {{3, 2, 33, 12}, false, 0.1f, 5},  // no bias
    {{2, 1, 33, 3}, true, 0.0f, 33},   // batch rows 1.. fully padded
    {{1, 2, 130, 20}, true, 0.1f, 0},  // T beyond the 128 of the demo model
    {{2, 2, 130, 13}, true, 0.3f, 9},  // long, padded, heavy dropout
    {{3, 1, 7, 1}, false, 0.0f, 2},    // Dh = 1
};

template <class T, class Mask>
void check_cases(double threshold, const char* label) {
  unsigned seed = 40;
  for (const Case& c : kCases) {
    const Inputs in = attention_inputs<float>(c, seed += 10);
    const std::vector<Mask> mask = attention_key_mask<Mask>(c);
    expect_close(run<T>(false, c, in, mask.data()), run<T>(true, c, in, mask.data()), threshold,
                 std::string(label) + " " + describe(c));
  }
}

TEST(AttentionCpuFast, F32MatchesReferenceU8Mask) { check_cases<float, uint8_t>(kF32Nmse, "f32/u8"); }

TEST(AttentionCpuFast, F32MatchesReferenceI32Mask) { check_cases<float, int32_t>(kF32Nmse, "f32/i32"); }

TEST(AttentionCpuFast, F32MatchesReferenceWithoutMask) {
  unsigned seed = 140;
  for (const Case& c : kCases) {
    const Inputs in = attention_inputs<float>(c, seed += 10);
    const uint8_t* no_mask = nullptr;
    expect_close(run<float>(false, c, in, no_mask), run<float>(true, c, in, no_mask), kF32Nmse,
                 "f32/no mask " + describe(c));
  }
}

TEST(AttentionCpuFast, F64MatchesReference) { check_cases<double, uint8_t>(kF64Nmse, "f64/u8"); }

// Scores spread over ~[-100, 100]: most probabilities are tiny or underflow, which exercises the
// range reduction and the flush to zero of the vectorised exp.
TEST(AttentionCpuFast, WideScoreRangeMatchesReference) {
  const Case c{{2, 2, 33, 16}, true, 0.1f, 4};
  const Inputs in = attention_inputs<float>(c, 7, 5.0f);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const Results<float> ref = run<float>(false, c, in, mask.data());
  const Results<float> got = run<float>(true, c, in, mask.data());
  // Outputs still f32 rounding; relative errors of probabilities below 1e-30 do not move the NMSE.
  expect_close(ref, got, kF32Nmse, "wide scores");
  for (int64_t row = 0; row < c.shape.batch * c.shape.heads * c.shape.seq_len; ++row) {
    double sum = 0.0;
    for (int64_t j = 0; j < c.shape.seq_len; ++j) sum += got.probs[static_cast<size_t>(row * c.shape.seq_len + j)];
    EXPECT_NEAR(sum, 1.0, 1e-5) << "row " << row;  // f32 sum of <= 33 terms
  }
}

// With V = identity (Dh = T) the output is P_drop itself: the fast path must drop exactly the
// elements the reference (and so the CUDA kernels) drop, and scale the kept ones by the same f32
// factor, bit for bit relative to its own probabilities.
TEST(AttentionCpuFast, DropoutMaskIsTheReferenceMask) {
  const Case c{{2, 3, 33, 33}, true, 0.25f, 4};
  const Inputs in = coco::testing::identity_value_inputs(c, 5);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const Results<float> ref = run<float>(false, c, in, mask.data());
  const Results<float> got = run<float>(true, c, in, mask.data());
  const AttentionDropout dropout = attention_test_dropout(c.dropout_p);
  const float keep_scale = coco::kernels::detail::dropout_keep_scale(dropout.p);
  int64_t dropped = 0;
  for (size_t e = 0; e < got.out.size(); ++e) {
    const bool keep = coco::kernels::detail::dropout_keeps(dropout.stream, e, dropout.p);
    ASSERT_EQ(got.out[e], keep ? got.probs[e] * keep_scale : 0.0f) << "element " << e;
    ASSERT_EQ(got.out[e] == 0.0f, ref.out[e] == 0.0f) << "element " << e;
    dropped += keep ? 0 : 1;
  }
  const double rate = static_cast<double>(dropped) / static_cast<double>(got.out.size());
  EXPECT_NEAR(rate, 0.25, 0.03) << dropped << " of " << got.out.size();
  expect_close(ref, got, kF32Nmse, "P_drop via identity V");
}

TEST(AttentionCpuFast, FullyPaddedRowsGiveZerosWithoutNan) {
  const Case c{{2, 2, 7, 5}, true, 0.3f, 7};  // batch row 1 has every key padded
  const Inputs in = attention_inputs<float>(c, 77);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const Results<float> ref = run<float>(false, c, in, mask.data());
  const Results<float> got = run<float>(true, c, in, mask.data());
  const size_t per_batch = static_cast<size_t>(c.shape.heads * c.shape.seq_len * c.shape.head_dim);
  for (const std::vector<float>* t : {&got.out, &got.dq, &got.dk, &got.dv, &got.probs, &got.dbias})
    for (float x : *t) ASSERT_FALSE(std::isnan(x));
  for (size_t e = per_batch; e < 2 * per_batch; ++e) {
    EXPECT_EQ(got.out[e], 0.0f);
    EXPECT_EQ(got.dq[e], 0.0f);
    EXPECT_EQ(got.dk[e], 0.0f);
    EXPECT_EQ(got.dv[e], 0.0f);
  }
  expect_close(ref, got, kF32Nmse, "fully padded");
}

// NaN and Inf reach the same elements as in the reference: a NaN query (its row), an Inf key behind
// the padding (ignored), a NaN bias (one row of every batch), a single +Inf score (NaN at that
// element, zeros elsewhere), two +Inf scores in a row (all NaN), -Inf biases (zero probabilities), an
// Inf value at a padded key (0 * Inf = NaN in the output row, as in a GEMM) and an Inf upstream
// gradient.
TEST(AttentionCpuFast, NanAndInfPropagateLikeTheReference) {
  const Case c{{2, 2, 7, 4}, true, 0.1f, 2};
  const AttentionShape& s = c.shape;
  Inputs in = attention_inputs<float>(c, 91);
  auto bias_at = [&](int64_t h, int64_t i, int64_t j) -> float& {
    return in.bias[static_cast<size_t>((h * s.seq_len + i) * s.seq_len + j)];
  };
  in.q[3] = NAN;                                               // (b0, h0, i0)
  in.k[static_cast<size_t>(s.qkv_elements() - 1)] = INFINITY;  // (b1, h1, key 6), padded
  bias_at(0, 1, 2) = NAN;                                      // (h0, i1): row i1 of every batch
  bias_at(0, 2, 3) = INFINITY;                                 // (h0, i2): one +Inf
  bias_at(1, 3, 0) = INFINITY;                                 // (h1, i3): two +Inf
  bias_at(1, 3, 4) = INFINITY;                                 //
  bias_at(1, 4, 1) = -INFINITY;                                // (h1, i4): two -Inf
  bias_at(1, 4, 5) = -INFINITY;                                //
  in.v[static_cast<size_t>(((1 * s.heads + 0) * s.seq_len + 6) * s.head_dim)] = INFINITY;  // (b1, h0, key 6)
  in.dout[static_cast<size_t>(((0 * s.heads + 1) * s.seq_len + 5) * s.head_dim + 1)] = -INFINITY;
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const Results<float> ref = run<float>(false, c, in, mask.data());
  const Results<float> got = run<float>(true, c, in, mask.data());
  EXPECT_TRUE(std::isnan(ref.out[0]));
  EXPECT_TRUE(std::isnan(ref.probs[static_cast<size_t>(2 * s.seq_len + 3)]));
  EXPECT_EQ(ref.probs[static_cast<size_t>(2 * s.seq_len + 4)], 0.0f);
  expect_close(ref, got, kF32Nmse, "NaN/Inf inputs");
}

TEST(AttentionCpuFast, DbiasAccumulatesAndGradientsCanBeSkipped) {
  const Case c{{3, 2, 7, 5}, true, 0.2f, 2};
  const AttentionShape& s = c.shape;
  const Inputs in = attention_inputs<float>(c, 55);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const Results<float> ref = run<float>(false, c, in, mask.data());
  const Results<float> full = run<float>(true, c, in, mask.data());
  const std::vector<float> initial = random_floats(in.bias.size(), 8);
  std::vector<float> dbias = initial;
  coco::kernels::cpu::attention_backward_fast<float>(in.q.data(), in.k.data(), in.v.data(), full.probs.data(),
                                                     in.dout.data(), s, attention_test_dropout(c.dropout_p), nullptr,
                                                     nullptr, nullptr, dbias.data(), true);
  std::vector<double> expected = to_f64(ref.dbias);
  for (size_t e = 0; e < expected.size(); ++e) expected[e] += initial[e];
  EXPECT_TRUE(matches_reference(expected, to_f64(dbias), kF32Nmse, "accumulated dbias"));
  // Only dk requested: bitwise the dk of the full call.
  std::vector<float> dk(full.dk.size(), NAN);
  coco::kernels::cpu::attention_backward_fast<float>(in.q.data(), in.k.data(), in.v.data(), full.probs.data(),
                                                     in.dout.data(), s, attention_test_dropout(c.dropout_p), nullptr,
                                                     dk.data(), nullptr, nullptr, false);
  EXPECT_EQ(0, std::memcmp(dk.data(), full.dk.data(), dk.size() * sizeof(float)));
}

template <class T>
std::vector<uint8_t> bytes_of(const Results<T>& r) {
  std::vector<uint8_t> bytes;
  for (const std::vector<T>* t : {&r.out, &r.probs, &r.dq, &r.dk, &r.dv, &r.dbias}) {
    const auto* p = reinterpret_cast<const uint8_t*>(t->data());
    bytes.insert(bytes.end(), p, p + t->size() * sizeof(T));
  }
  return bytes;
}

// The project's resume tests need bitwise reproducibility: the same inputs give the same bytes, call
// after call (no threads racing on sums, no dependence on buffer contents or alignment).
TEST(AttentionCpuFast, BitwiseIdenticalRunToRun) {
  for (const Case& c : {Case{{2, 3, 33, 12}, true, 0.2f, 6}, Case{{1, 2, 130, 20}, true, 0.1f, 3}}) {
    const Inputs in = attention_inputs<float>(c, 61);
    const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
    const std::vector<uint8_t> first = bytes_of(run<float>(true, c, in, mask.data()));
    for (int repeat = 0; repeat < 3; ++repeat)
      EXPECT_TRUE(first == bytes_of(run<float>(true, c, in, mask.data()))) << describe(c) << " repeat " << repeat;
  }
}

TEST(AttentionCpuFast, RejectsBadArguments) {
  float dummy = 0.0f;
  const AttentionShape shape{1, 1, 2, 2};
  auto forward = [&](float p) {
    coco::kernels::cpu::attention_forward_fast<float, uint8_t>(&dummy, &dummy, &dummy, nullptr, nullptr, shape,
                                                               attention_test_dropout(p), &dummy, &dummy);
  };
  auto backward = [] {
    coco::kernels::cpu::attention_backward_fast<float>(nullptr, nullptr, nullptr, nullptr, nullptr,
                                                       AttentionShape{-1, 1, 1, 1}, attention_test_dropout(0.0f),
                                                       nullptr, nullptr, nullptr, nullptr, false);
  };
  EXPECT_THROW(forward(1.0f), std::invalid_argument);
  EXPECT_THROW(forward(NAN), std::invalid_argument);
  EXPECT_THROW(backward(), std::invalid_argument);
  // Empty problems write nothing (and dbias, overwritten, becomes zero as in the reference).
  std::vector<float> dbias(4, 5.0f);
  coco::kernels::cpu::attention_backward_fast<float>(nullptr, nullptr, nullptr, nullptr, nullptr,
                                                     AttentionShape{0, 1, 2, 3}, attention_test_dropout(0.0f), nullptr,
                                                     nullptr, nullptr, dbias.data(), false);
  EXPECT_EQ(dbias, std::vector<float>(4, 0.0f));
}

// ops::attention on f32 CPU tensors runs the fast path (bitwise its outputs and gradients); f64
// tensors keep the reference (bitwise too), so the f64 gradchecks test the oracle.
TEST(AttentionCpuFast, OpsAttentionUsesFastPathForF32AndReferenceForF64) {
  const Case c{{2, 2, 7, 5}, true, 0.2f, 3};
  const AttentionShape& s = c.shape;
  const Inputs in = attention_inputs<float>(c, 300);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  for (const bool f64 : {false, true}) {
    const coco::DType dtype = f64 ? coco::DType::f64 : coco::DType::f32;
    const coco::Shape qkv{s.batch, s.heads, s.seq_len, s.head_dim};
    auto make = [&](const std::vector<float>& values, const coco::Shape& shape) {
      coco::Tensor t = coco::Tensor::from_vector(values, shape).to(dtype);
      t.set_requires_grad(true);
      return t;
    };
    coco::Tensor q = make(in.q, qkv), k = make(in.k, qkv), v = make(in.v, qkv);
    coco::Tensor bias = make(in.bias, coco::Shape{s.heads, s.seq_len, s.seq_len});
    const coco::Tensor key_mask = coco::Tensor::from_vector(mask, coco::Shape{s.batch, s.seq_len});
    coco::Tape tape;
    coco::Tensor out;
    {
      coco::Tape::Recording recording(tape);
      out =
          coco::ops::attention(q, k, v, key_mask, bias, c.dropout_p, attention_test_dropout(c.dropout_p).stream, true);
    }
    tape.backward(out, coco::Tensor::from_vector(in.dout, qkv).to(dtype));
    auto expect_bitwise = [&](const coco::Tensor& got, const auto& expected, const char* what) {
      const std::vector<double> got_values = got.to_f64();
      ASSERT_EQ(got_values.size(), expected.size()) << what;
      for (size_t e = 0; e < expected.size(); ++e)
        ASSERT_EQ(got_values[e], static_cast<double>(expected[e])) << (f64 ? "f64 " : "f32 ") << what << " " << e;
    };
    auto check = [&](const auto& expected) {
      expect_bitwise(out, expected.out, "out");
      expect_bitwise(q.grad(), expected.dq, "dq");
      expect_bitwise(k.grad(), expected.dk, "dk");
      expect_bitwise(v.grad(), expected.dv, "dv");
      expect_bitwise(bias.grad(), expected.dbias, "dbias");
    };
    if (f64)
      check(run<double>(false, c, in, mask.data()));
    else
      check(run<float>(true, c, in, mask.data()));
  }
}

}  // namespace
