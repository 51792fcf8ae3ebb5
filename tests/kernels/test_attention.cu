// Attention core: the CUDA path (GEMMs + fused row kernels, emulated here) against the CPU reference
// at odd T (1, 7, 33, 130) and head sizes, u8 / i32 key masks, with and without the shared bias and
// dropout, f32 / bf16 / f16; the dropout mask itself (bitwise, CPU vs CUDA); fully padded rows;
// NaN inputs; bitwise schedule invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/rng/philox.h"
#include "engine/runtime/check.h"
#include "engine/simt/schedule_oracle.h"
#include "kernels/attention.h"
#include "tests/common/attention_cases.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::kernels::AttentionDropout;
using coco::kernels::AttentionShape;
using coco::testing::from_floats;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

using Case = coco::testing::AttentionCase;
using Inputs = coco::testing::AttentionInputs;
using coco::testing::attention_inputs;
using coco::testing::attention_key_mask;
using coco::testing::attention_test_dropout;
using coco::testing::describe;

struct Results {
  std::vector<double> out, probs, dq, dk, dv, dbias;
};

template <class Mask>
Results cpu_reference(const Case& c, const Inputs& in, const std::vector<Mask>& mask) {
  const AttentionDropout dropout = attention_test_dropout(c.dropout_p);
  const size_t n = static_cast<size_t>(c.shape.qkv_elements());
  std::vector<float> out(n), probs(static_cast<size_t>(c.shape.score_elements())), dq(n), dk(n), dv(n);
  std::vector<float> dbias(in.bias.size());
  coco::kernels::cpu::attention_forward(in.q.data(), in.k.data(), in.v.data(), mask.data(),
                                        c.bias ? in.bias.data() : nullptr, c.shape, dropout, out.data(), probs.data());
  coco::kernels::cpu::attention_backward(in.q.data(), in.k.data(), in.v.data(), probs.data(), in.dout.data(), c.shape,
                                         dropout, dq.data(), dk.data(), dv.data(), c.bias ? dbias.data() : nullptr,
                                         false);
  return {to_f64(out), to_f64(probs), to_f64(dq), to_f64(dk), to_f64(dv), to_f64(dbias)};
}

template <class T, class Mask>
Results cuda_run(const Case& c, const Inputs& in, const std::vector<Mask>& mask) {
  const AttentionDropout dropout = attention_test_dropout(c.dropout_p);
  const size_t n = static_cast<size_t>(c.shape.qkv_elements());
  const size_t scores = static_cast<size_t>(c.shape.score_elements());
  GuardedDeviceBuffer<T> q(from_floats<T>(in.q)), k(from_floats<T>(in.k)), v(from_floats<T>(in.v));
  GuardedDeviceBuffer<T> dout(from_floats<T>(in.dout));
  GuardedDeviceBuffer<T> bias(c.bias ? from_floats<T>(in.bias) : std::vector<T>(1));
  GuardedDeviceBuffer<Mask> device_mask(mask);
  GuardedDeviceBuffer<T> out(n), probs(scores), dq(n), dk(n), dv(n), prob_ws(scores);
  GuardedDeviceBuffer<float> score_ws(scores), dbias(c.bias ? in.bias.size() : 1);
  for (auto* buffer : {&out, &probs, &dq, &dk, &dv, &prob_ws}) buffer->poison();
  score_ws.poison();
  dbias.poison();
  coco::kernels::cuda::attention_forward(q.data(), k.data(), v.data(), device_mask.data(),
                                         c.bias ? bias.data() : nullptr, c.shape, dropout, out.data(), probs.data(),
                                         score_ws.data(), prob_ws.data(), nullptr);
  score_ws.poison();
  prob_ws.poison();
  coco::kernels::cuda::attention_backward(q.data(), k.data(), v.data(), probs.data(), dout.data(), c.shape, dropout,
                                          dq.data(), dk.data(), dv.data(), c.bias ? dbias.data() : nullptr, false,
                                          score_ws.data(), prob_ws.data(), nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto* buffer : {&out, &probs, &dq, &dk, &dv, &prob_ws}) EXPECT_TRUE(buffer->guards_intact()) << describe(c);
  EXPECT_TRUE(score_ws.guards_intact() && dbias.guards_intact()) << describe(c);
  Results r{to_f64(out.download()), to_f64(probs.download()), to_f64(dq.download()),
            to_f64(dk.download()),  to_f64(dv.download()),    {}};
  if (c.bias) r.dbias = to_f64(dbias.download());
  return r;
}

void expect_close(const Results& ref, const Results& got, double threshold, const std::string& what) {
  EXPECT_TRUE(matches_reference(ref.out, got.out, threshold, what + " out"));
  EXPECT_TRUE(matches_reference(ref.probs, got.probs, threshold, what + " probs"));
  EXPECT_TRUE(matches_reference(ref.dq, got.dq, threshold, what + " dq"));
  EXPECT_TRUE(matches_reference(ref.dk, got.dk, threshold, what + " dk"));
  EXPECT_TRUE(matches_reference(ref.dv, got.dv, threshold, what + " dv"));
  if (!ref.dbias.empty()) {
    EXPECT_TRUE(matches_reference(ref.dbias, got.dbias, threshold, what + " dbias"));
  }
}

const Case kCases[] = {
    {{2, 2, 1, 8}, true, 0.0f, 0},     // T = 1
    {{2, 3, 7, 5}, true, 0.2f, 3},     // odd T and Dh, padding, dropout
    {{3, 2, 33, 16}, false, 0.1f, 5},  // no bias
    {{2, 1, 33, 12}, true, 0.0f, 33},  // batch rows 1.. fully padded
    {{1, 2, 130, 8}, true, 0.1f, 0},   // T > 4 warps of lanes
};

template <class T, class Mask>
void check_cases(double threshold, const char* label) {
  unsigned seed = 40;
  for (const Case& c : kCases) {
    const Inputs in = attention_inputs<T>(c, seed += 10);
    const std::vector<Mask> mask = attention_key_mask<Mask>(c);
    expect_close(cpu_reference(c, in, mask), cuda_run<T, Mask>(c, in, mask), threshold,
                 std::string(label) + " " + describe(c));
  }
}

TEST(AttentionKernels, F32MatchesCpuReferenceU8Mask) {
  // f32 GEMMs and softmax against the same math with double accumulation: rounding only.
  check_cases<float, uint8_t>(1e-12, "f32/u8");
}

TEST(AttentionKernels, F32MatchesCpuReferenceI32Mask) { check_cases<float, int32_t>(1e-12, "f32/i32"); }

TEST(AttentionKernels, Bf16MatchesCpuReference) {
  // bf16 keeps 8 bits: P, P_drop, dS and every output are rounded once or twice (NMSE ~1e-6 .. 1e-5).
  check_cases<__nv_bfloat16, uint8_t>(3e-5, "bf16/u8");
}

TEST(AttentionKernels, F16MatchesCpuReference) {
  // f16 keeps 11 bits: the same roundings at 1/8 the bf16 step.
  check_cases<__half, int32_t>(1e-6, "f16/i32");
}

// With V = identity (Dh = T) the output is P_drop itself: the CUDA dropout pattern must equal the
// CPU one element for element, and drop about a fraction p.
TEST(AttentionKernels, DropoutMaskIsIdenticalOnBothBackends) {
  const Case c{{2, 3, 33, 33}, true, 0.25f, 4};
  const Inputs in = coco::testing::identity_value_inputs(c, 5);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const Results ref = cpu_reference(c, in, mask);
  const Results got = cuda_run<float, uint8_t>(c, in, mask);
  const AttentionDropout dropout = attention_test_dropout(c.dropout_p);
  int64_t dropped = 0, total = 0;
  for (size_t e = 0; e < got.out.size(); ++e) {
    const bool keep = coco::kernels::detail::dropout_keeps(dropout.stream, e, dropout.p);
    ASSERT_EQ(got.out[e] == 0.0, ref.out[e] == 0.0) << "element " << e;
    if (!keep) {
      ASSERT_EQ(got.out[e], 0.0) << "element " << e << " should be dropped";
      ++dropped;
    }
    ++total;
  }
  const double rate = static_cast<double>(dropped) / static_cast<double>(total);
  EXPECT_NEAR(rate, 0.25, 0.03) << dropped << " of " << total;
  EXPECT_TRUE(matches_reference(ref.out, got.out, 1e-12, "P_drop via identity V"));
}

TEST(AttentionKernels, FullyPaddedRowsGiveZerosWithoutNan) {
  const Case c{{2, 2, 7, 4}, true, 0.3f, 7};  // batch row 1 has every key padded
  const Inputs in = attention_inputs<float>(c, 77);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const Results ref = cpu_reference(c, in, mask);
  const Results got = cuda_run<float, uint8_t>(c, in, mask);
  const size_t per_batch = static_cast<size_t>(c.shape.heads * c.shape.seq_len * c.shape.head_dim);
  for (const Results* r : {&ref, &got}) {
    for (const std::vector<double>* t : {&r->out, &r->dq, &r->dk, &r->dv, &r->probs, &r->dbias})
      for (double x : *t) ASSERT_FALSE(std::isnan(x));
    for (size_t e = per_batch; e < 2 * per_batch; ++e) {
      EXPECT_EQ(r->out[e], 0.0);
      EXPECT_EQ(r->dq[e], 0.0);
      EXPECT_EQ(r->dk[e], 0.0);
      EXPECT_EQ(r->dv[e], 0.0);
    }
  }
  expect_close(ref, got, 1e-12, "fully padded");
}

TEST(AttentionKernels, NanInputsPropagateLikeTheReference) {
  const Case c{{2, 2, 7, 4}, true, 0.1f, 2};
  Inputs in = attention_inputs<float>(c, 91);
  in.q[3] = NAN;                                                     // (b0, h0, i0): its row
  in.k[static_cast<size_t>(c.shape.qkv_elements() - 1)] = INFINITY;  // (b1, h1, key 6), a padded key
  in.bias[static_cast<size_t>(c.shape.seq_len + 2)] = NAN;           // bias (h0, i1, j2): row i1 of every batch
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const Results ref = cpu_reference(c, in, mask);
  const Results got = cuda_run<float, uint8_t>(c, in, mask);
  EXPECT_TRUE(std::isnan(ref.out[0]));
  expect_close(ref, got, 1e-12, "NaN inputs");
}

TEST(AttentionKernels, DbiasAccumulates) {
  const Case c{{3, 2, 7, 4}, true, 0.0f, 2};
  const Inputs in = attention_inputs<float>(c, 55);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const Results ref = cpu_reference(c, in, mask);
  const AttentionDropout dropout = attention_test_dropout(0.0f);
  const size_t n = static_cast<size_t>(c.shape.qkv_elements()), scores = static_cast<size_t>(c.shape.score_elements());
  GuardedDeviceBuffer<float> q(in.q), k(in.k), v(in.v), dout(in.dout), bias(in.bias), out(n), probs(scores),
      ws_p(scores), ws_s(scores);
  GuardedDeviceBuffer<uint8_t> device_mask(mask);
  const std::vector<float> initial = random_floats(in.bias.size(), 8);
  GuardedDeviceBuffer<float> dbias(initial);
  coco::kernels::cuda::attention_forward(q.data(), k.data(), v.data(), device_mask.data(), bias.data(), c.shape,
                                         dropout, out.data(), probs.data(), ws_s.data(), ws_p.data(), nullptr);
  coco::kernels::cuda::attention_backward<float>(q.data(), k.data(), v.data(), probs.data(), dout.data(), c.shape,
                                                 dropout, nullptr, nullptr, nullptr, dbias.data(), true, ws_s.data(),
                                                 ws_p.data(), nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<double> expected = ref.dbias;
  for (size_t e = 0; e < expected.size(); ++e) expected[e] += initial[e];
  EXPECT_TRUE(matches_reference(expected, to_f64(dbias.download()), 1e-12, "accumulated dbias"));
}

TEST(AttentionKernels, BitwiseInvariantUnderSchedules) {
  const Case c{{2, 2, 33, 8}, true, 0.2f, 6};
  const Inputs in = attention_inputs<__nv_bfloat16>(c, 61);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  auto run = [&] {
    const Results r = cuda_run<__nv_bfloat16, uint8_t>(c, in, mask);
    std::vector<uint8_t> bytes;
    for (const std::vector<double>* t : {&r.out, &r.probs, &r.dq, &r.dk, &r.dv, &r.dbias}) {
      const auto* p = reinterpret_cast<const uint8_t*>(t->data());
      bytes.insert(bytes.end(), p, p + t->size() * sizeof(double));
    }
    return bytes;
  };
  const emu::OracleResult result = emu::check_schedule_invariance(run, 2);
  EXPECT_TRUE(result.identical) << result.message;
}

TEST(AttentionKernels, RejectsBadArguments) {
  float dummy = 0.0f;
  const AttentionShape shape{1, 1, 2, 2};
  auto cpu_forward = [&](float p) {
    coco::kernels::cpu::attention_forward<float, uint8_t>(&dummy, &dummy, &dummy, nullptr, nullptr, shape,
                                                          attention_test_dropout(p), &dummy, &dummy);
  };
  auto cuda_forward = [&](float p) {
    coco::kernels::cuda::attention_forward<float, uint8_t>(&dummy, &dummy, &dummy, nullptr, nullptr, shape,
                                                           attention_test_dropout(p), &dummy, &dummy, nullptr, nullptr,
                                                           nullptr);
  };
  EXPECT_THROW(cpu_forward(1.0f), std::invalid_argument);
  EXPECT_THROW(cuda_forward(-0.5f), std::invalid_argument);
  EXPECT_THROW(cuda_forward(NAN), std::invalid_argument);
  EXPECT_THROW(cuda_forward(0.1f), std::invalid_argument);  // dropout without a prob workspace
  auto cpu_backward = [] {
    coco::kernels::cpu::attention_backward<double>(nullptr, nullptr, nullptr, nullptr, nullptr,
                                                   AttentionShape{-1, 1, 1, 1}, attention_test_dropout(0.0f), nullptr,
                                                   nullptr, nullptr, nullptr, false);
  };
  EXPECT_THROW(cpu_backward(), std::invalid_argument);
  EXPECT_THROW(
      coco::kernels::check_attention_arguments(AttentionShape{1, 1, 3, 0}, attention_test_dropout(0.0f), "test"),
      std::invalid_argument);
  EXPECT_NO_THROW(
      coco::kernels::check_attention_arguments(AttentionShape{0, 1, 3, 0}, attention_test_dropout(0.0f), "test"));
}

}  // namespace

// ---- op level: ops::attention on Device::cuda (emulated) against Device::cpu, forward and backward.
#include "engine/ops/attention.h"
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
  // The bias stays f32 (as an f32 relative-position table would give) whatever q's dtype.
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

TEST(AttentionOps, CudaMatchesCpu) {
  const Case c{{2, 2, 33, 8}, true, 0.15f, 5};
  const Inputs in = attention_inputs<__nv_bfloat16>(c, 300);  // bf16-exact values: every dtype sees the same inputs
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const coco::Tensor mask_u8 = coco::Tensor::from_vector(mask, coco::Shape{c.shape.batch, c.shape.seq_len});
  const OpRun cpu = run_op(in, c, mask_u8, coco::Device::cpu, coco::DType::f32);
  struct Variant {
    coco::DType dtype;
    coco::Tensor mask;
    double threshold;
  };
  const Variant variants[] = {
      {coco::DType::f32, mask_u8, 1e-12},                       // f32 GEMMs vs double loops: rounding only
      {coco::DType::f32, mask_u8.to(coco::DType::i32), 1e-12},  // i32 mask, same result
      {coco::DType::bf16, mask_u8, 3e-5},                       // bf16 P, P_drop, dS and outputs
      {coco::DType::f64, mask_u8, 1e-12},                       // f64 kernels, f32-exact inputs vs f32 CPU outputs
  };
  for (const Variant& variant : variants) {
    const OpRun got = run_op(in, c, variant.mask, coco::Device::cuda, variant.dtype);
    const std::string what =
        std::string("cuda ") + coco::dtype_name(variant.dtype) + " mask " + coco::dtype_name(variant.mask.dtype());
    EXPECT_TRUE(matches_reference(cpu.out, got.out, variant.threshold, what + " out"));
    EXPECT_TRUE(matches_reference(cpu.dq, got.dq, variant.threshold, what + " dq"));
    EXPECT_TRUE(matches_reference(cpu.dk, got.dk, variant.threshold, what + " dk"));
    EXPECT_TRUE(matches_reference(cpu.dv, got.dv, variant.threshold, what + " dv"));
    EXPECT_TRUE(matches_reference(cpu.dbias, got.dbias, variant.threshold, what + " dbias"));
  }
}

}  // namespace

// ---- the fused flash-style forward against the CPU reference and the GEMM path.
namespace {

// lse[b, h, i] = log sum_j exp(s_ij) over the attended keys, in double (-Inf when none).
std::vector<double> reference_lse(const Case& c, const Inputs& in, const std::vector<uint8_t>& mask) {
  const AttentionShape& s = c.shape;
  std::vector<double> lse(static_cast<size_t>(s.batch * s.heads * s.seq_len));
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.head_dim));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t i = 0; i < s.seq_len; ++i) {
        std::vector<double> scores;
        for (int64_t j = 0; j < s.seq_len; ++j) {
          if (!mask[static_cast<size_t>(b * s.seq_len + j)]) continue;
          double dot = 0.0;
          for (int64_t d = 0; d < s.head_dim; ++d)
            dot +=
                static_cast<double>(in.q[static_cast<size_t>(((b * s.heads + h) * s.seq_len + i) * s.head_dim + d)]) *
                in.k[static_cast<size_t>(((b * s.heads + h) * s.seq_len + j) * s.head_dim + d)];
          scores.push_back(dot * scale +
                           (c.bias ? in.bias[static_cast<size_t>((h * s.seq_len + i) * s.seq_len + j)] : 0.0));
        }
        double m = -INFINITY, sum = 0.0;
        for (double x : scores) m = std::max(m, x);
        for (double x : scores) sum += std::exp(x - m);
        lse[static_cast<size_t>((b * s.heads + h) * s.seq_len + i)] = scores.empty() ? -INFINITY : m + std::log(sum);
      }
  return lse;
}

template <class T>
std::vector<double> flash_run(const Case& c, const Inputs& in, const std::vector<uint8_t>& mask,
                              std::vector<double>* lse) {
  const size_t n = static_cast<size_t>(c.shape.qkv_elements());
  GuardedDeviceBuffer<T> q(from_floats<T>(in.q)), k(from_floats<T>(in.k)), v(from_floats<T>(in.v));
  GuardedDeviceBuffer<T> bias(c.bias ? from_floats<T>(in.bias) : std::vector<T>(1));
  GuardedDeviceBuffer<uint8_t> device_mask(mask);
  GuardedDeviceBuffer<T> out(n);
  GuardedDeviceBuffer<float> device_lse(static_cast<size_t>(c.shape.batch * c.shape.heads * c.shape.seq_len));
  out.poison();
  device_lse.poison();
  coco::kernels::cuda::flash_attention_forward(
      q.data(), k.data(), v.data(), device_mask.data(), c.bias ? bias.data() : nullptr, c.shape,
      attention_test_dropout(c.dropout_p), out.data(), device_lse.data(), nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(out.guards_intact() && device_lse.guards_intact()) << describe(c);
  if (lse) *lse = to_f64(device_lse.download());
  return to_f64(out.download());
}

const Case kFlashCases[] = {
    {{2, 2, 1, 8}, true, 0.0f, 0},     // T = 1
    {{2, 3, 7, 5}, true, 0.2f, 3},     // odd T and Dh, padding, dropout
    {{3, 2, 33, 16}, false, 0.1f, 5},  // several key tiles, a partial last one
    {{2, 1, 33, 12}, true, 0.0f, 33},  // fully padded batch rows
    {{1, 2, 130, 8}, true, 0.1f, 0},   // many query tiles
    {{1, 1, 40, 128}, true, 0.1f, 7},  // the largest head_dim (4 dims per lane)
    {{1, 1, 17, 70}, false, 0.0f, 2},  // head_dim not a multiple of 32
};

TEST(FlashAttention, ForwardMatchesCpuReferenceAndGemmPath) {
  unsigned seed = 500;
  for (const Case& c : kFlashCases) {
    const Inputs in = attention_inputs<float>(c, seed += 10);
    const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
    const Results ref = cpu_reference(c, in, mask);
    std::vector<double> lse;
    const std::vector<double> flash = flash_run<float>(c, in, mask, &lse);
    // f32 online softmax against double loops: rounding only.
    EXPECT_TRUE(matches_reference(ref.out, flash, 1e-12, "flash f32 " + describe(c)));
    EXPECT_TRUE(matches_reference(reference_lse(c, in, mask), lse, 1e-12, "flash lse " + describe(c)));
    const Results gemm = cuda_run<float, uint8_t>(c, in, mask);
    EXPECT_TRUE(matches_reference(gemm.out, flash, 1e-12, "flash vs GEMM path " + describe(c)));
    // bf16: the unfused path rounds P and P_drop to bf16, the fused one does not.
    const Inputs in16 = attention_inputs<__nv_bfloat16>(c, seed);
    EXPECT_TRUE(matches_reference(cpu_reference(c, in16, mask).out, flash_run<__nv_bfloat16>(c, in16, mask, nullptr),
                                  1e-5, "flash bf16 " + describe(c)));
  }
}

TEST(FlashAttention, FullyPaddedRowsAndNanParity) {
  Case c{{2, 2, 7, 4}, true, 0.3f, 7};
  Inputs in = attention_inputs<float>(c, 701);
  in.q[3] = NAN;  // (b0, h0, i0)
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  const Results ref = cpu_reference(c, in, mask);
  std::vector<double> lse;
  const std::vector<double> flash = flash_run<float>(c, in, mask, &lse);
  EXPECT_TRUE(matches_reference(ref.out, flash, 1e-12, "flash specials"));
  const size_t per_batch = static_cast<size_t>(c.shape.heads * c.shape.seq_len * c.shape.head_dim);
  for (size_t e = per_batch; e < 2 * per_batch; ++e) EXPECT_EQ(flash[e], 0.0) << e;
  for (size_t r = static_cast<size_t>(c.shape.heads * c.shape.seq_len); r < lse.size(); ++r)
    EXPECT_EQ(lse[r], -INFINITY);
  EXPECT_TRUE(std::isnan(flash[0]) && std::isnan(lse[0]));
}

TEST(FlashAttention, BitwiseInvariantUnderSchedules) {
  const Case c{{1, 2, 40, 20}, true, 0.2f, 0};
  const Inputs in = attention_inputs<__nv_bfloat16>(c, 801);
  const std::vector<uint8_t> mask = attention_key_mask<uint8_t>(c);
  auto run = [&] {
    std::vector<double> lse;
    std::vector<double> out = flash_run<__nv_bfloat16>(c, in, mask, &lse);
    out.insert(out.end(), lse.begin(), lse.end());
    return emu::as_bytes(out);
  };
  const emu::OracleResult result = emu::check_schedule_invariance(run, 2);
  EXPECT_TRUE(result.identical) << result.message;
}

TEST(FlashAttention, RejectsUnsupportedHeadDims) {
  float dummy = 0.0f;
  double dummy64 = 0.0;
  auto f32 = [&](int64_t head_dim) {
    coco::kernels::cuda::flash_attention_forward<float, uint8_t>(
        &dummy, &dummy, &dummy, nullptr, nullptr, AttentionShape{1, 1, 4, head_dim}, attention_test_dropout(0.0f),
        &dummy, nullptr, nullptr);
  };
  auto f64 = [&](int64_t head_dim) {
    coco::kernels::cuda::flash_attention_forward<double, uint8_t>(
        &dummy64, &dummy64, &dummy64, nullptr, nullptr, AttentionShape{1, 1, 4, head_dim}, attention_test_dropout(0.0f),
        &dummy64, nullptr, nullptr);
  };
  EXPECT_THROW(f32(129), std::invalid_argument);
  EXPECT_THROW(f64(100), std::invalid_argument);  // double tiles need more than 48 KiB of shared memory
}

}  // namespace
