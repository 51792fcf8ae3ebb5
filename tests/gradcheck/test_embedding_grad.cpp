// Embedding gradients: f64 finite differences of the CPU kernels (token and position tables,
// repeated ids; the padding row gets no gradient), ops::embedding on the tape (including a token
// table tied to a second use), out-of-range ids, and the op on CUDA (emulated) against the CPU
// including bf16 tables with f32 gradient buffers and bitwise run-to-run reproducibility.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/embedding.h"
#include "engine/ops/linear.h"
#include "engine/tape.h"
#include "kernels/embedding.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;
using coco::kernels::EmbeddingShape;

std::vector<int32_t> ids_with_repeats(int64_t count, int64_t vocab, unsigned seed) {
  std::mt19937 generator(seed);
  std::vector<int32_t> ids(static_cast<size_t>(count));
  for (auto& id : ids) id = static_cast<int32_t>(generator() % static_cast<unsigned>(vocab));
  if (count > 2) ids[2] = ids[0];
  return ids;
}

TEST(EmbeddingGradcheck, KernelBackward) {
  for (const EmbeddingShape s : {EmbeddingShape{1, 1, 3, 2}, EmbeddingShape{2, 7, 5, 3}, EmbeddingShape{3, 4, 9, 5}}) {
    for (int64_t padding_id : {int64_t{-1}, int64_t{1}}) {
      const std::vector<int32_t> ids = ids_with_repeats(s.positions(), s.vocab, 3);
      const int64_t max_positions = s.seq + 1;
      std::vector<double> tok = coco::gradcheck_weights(static_cast<size_t>(s.vocab * s.dim), 1);
      std::vector<double> pos = coco::gradcheck_weights(static_cast<size_t>(max_positions * s.dim), 2);
      const std::vector<double> w = coco::gradcheck_weights(static_cast<size_t>(s.positions() * s.dim), 4);
      std::vector<double> dtok(tok.size(), 0.0), dpos(pos.size(), 0.0);
      coco::kernels::cpu::embedding_backward(dtok.data(), dpos.data(), w.data(), ids.data(), s, padding_id);
      auto loss = [&] {
        std::vector<double> y(w.size());
        coco::kernels::cpu::embedding_forward(y.data(), ids.data(), tok.data(), pos.data(), s);
        double total = 0.0;
        for (size_t i = 0; i < y.size(); ++i) total += y[i] * w[i];
        return total;
      };
      std::vector<coco::GradcheckInput> inputs = {{"pos", pos, dpos}};
      if (padding_id < 0) {
        inputs.push_back({"tok", tok, dtok});
      } else {
        // The padding row is used by the forward but deliberately gets no gradient: check the other
        // rows by finite differences and the padding row for exact zeros.
        const size_t row = static_cast<size_t>(padding_id * s.dim), dim = static_cast<size_t>(s.dim);
        inputs.push_back({"tok rows before padding", std::span<double>(tok).subspan(0, row),
                          std::span<const double>(dtok).subspan(0, row)});
        inputs.push_back({"tok rows after padding", std::span<double>(tok).subspan(row + dim),
                          std::span<const double>(dtok).subspan(row + dim)});
        for (size_t e = 0; e < dim; ++e) EXPECT_EQ(dtok[row + e], 0.0);
      }
      const coco::GradcheckReport report = coco::gradcheck_raw(inputs, loss);
      EXPECT_TRUE(report.ok) << "B=" << s.batch << " T=" << s.seq << " pad=" << padding_id << ": " << report.worst;
    }
  }
}

TEST(EmbeddingGradcheck, OpOnTheTapeWithATiedTable) {
  Tensor tok = Tensor::from_vector(coco::gradcheck_weights(6 * 4, 1), Shape{6, 4});
  tok.set_requires_grad(true).set_name("token_table");
  Tensor pos = Tensor::from_vector(coco::gradcheck_weights(9 * 4, 2), Shape{9, 4});
  pos.set_requires_grad(true).set_name("position_table");
  const Tensor ids = Tensor::from_vector(ids_with_repeats(2 * 7, 6, 5), Shape{2, 7});
  // The token table is used twice: as the embedding and as the output projection (tied weights).
  coco::GradcheckReport report = coco::gradcheck(
      [&](const std::vector<Tensor>& in) {
        const Tensor h = coco::ops::embedding(ids, in[0], in[1]);  // (2, 7, 4)
        return coco::ops::linear(h, in[0]);                        // (2, 7, 6)
      },
      {tok, pos});
  EXPECT_TRUE(report.ok) << report.worst;
  report = coco::gradcheck([&](const std::vector<Tensor>& in) { return coco::ops::embedding(ids, in[0]); }, {tok});
  EXPECT_TRUE(report.ok) << "no position table: " << report.worst;
}

TEST(EmbeddingOps, OutOfRangeIdsThrowNamingIdAndPosition) {
  const Tensor tok = Tensor::zeros(Shape{5, 3}, DType::f32), pos = Tensor::zeros(Shape{4, 3}, DType::f32);
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{0, 1, 2, 3, 4, 7, 1, 2}, Shape{2, 4});
  for (Device device : {Device::cpu, Device::cuda}) {
    try {
      coco::ops::embedding(ids.to(device), tok.to(device), pos.to(device));
      FAIL() << "expected TokenIdError on " << coco::device_name(device);
    } catch (const coco::kernels::TokenIdError& error) {
      EXPECT_NE(std::string(error.what()).find("token id 7 at position (b=1, t=1)"), std::string::npos) << error.what();
    }
  }
  EXPECT_THROW(coco::ops::embedding(ids, tok, Tensor::zeros(Shape{3, 3}, DType::f32)), coco::TensorError);  // Tmax < T
  EXPECT_THROW(coco::ops::embedding(ids.to(DType::i64), tok, pos), coco::TensorError);
  EXPECT_THROW(coco::ops::embedding(ids, tok, Tensor::zeros(Shape{4, 2}, DType::f32)), coco::TensorError);
}

struct EmbeddingRun {
  std::vector<double> out, dtok, dpos;
};

EmbeddingRun run_embedding(Device device, DType dtype, DType grad_dtype, const std::vector<float>& tok_values,
                           const std::vector<float>& pos_values, const std::vector<int32_t>& id_values,
                           const std::vector<float>& seed, int64_t padding_id) {
  Tensor tok = Tensor::from_vector(tok_values, Shape{40, 37}).to(dtype).to(device);
  Tensor pos = Tensor::from_vector(pos_values, Shape{33, 37}).to(dtype).to(device);
  tok.set_requires_grad(true).set_grad_dtype(grad_dtype);
  pos.set_requires_grad(true).set_grad_dtype(grad_dtype);
  const Tensor ids = Tensor::from_vector(id_values, Shape{3, 33}).to(device);
  coco::Tape tape;
  EmbeddingRun r;
  {
    coco::Tape::Recording recording(tape);
    const Tensor y = coco::ops::embedding(ids, tok, pos, padding_id);
    r.out = y.to_f64();
    tape.backward(y, Tensor::from_vector(seed, y.shape()).to(dtype).to(device));
  }
  r.dtok = tok.grad().to_f64();
  r.dpos = pos.grad().to_f64();
  return r;
}

TEST(EmbeddingOps, CudaMatchesCpu) {
  using coco::testing::random_floats;
  using coco::testing::round_through;
  const auto tok = round_through<__nv_bfloat16>(random_floats(40 * 37, 1));
  const auto pos = round_through<__nv_bfloat16>(random_floats(33 * 37, 2));
  const auto seed = round_through<__nv_bfloat16>(random_floats(3 * 33 * 37, 3));
  std::vector<int32_t> ids = ids_with_repeats(3 * 33, 40, 4);
  for (size_t i = 0; i < ids.size(); i += 4) ids[i] = 0;  // padding id 0, often
  const EmbeddingRun cpu = run_embedding(Device::cpu, DType::f32, DType::f32, tok, pos, ids, seed, 0);
  const EmbeddingRun cuda = run_embedding(Device::cuda, DType::f32, DType::f32, tok, pos, ids, seed, 0);
  EXPECT_EQ(cpu.out, cuda.out);  // one f32 add each
  // Gradients: the same f32 terms summed in another order.
  EXPECT_TRUE(coco::testing::matches_reference(cpu.dtok, cuda.dtok, 1e-12, "f32 dtok"));
  EXPECT_TRUE(coco::testing::matches_reference(cpu.dpos, cuda.dpos, 1e-12, "f32 dpos"));
  for (size_t e = 0; e < 37; ++e) EXPECT_EQ(cuda.dtok[e], 0.0) << "padding row got a gradient";
  // bf16 tables with f32 gradient buffers: bf16-exact terms summed in f32: same as f32 up to order.
  const EmbeddingRun mixed = run_embedding(Device::cuda, DType::bf16, DType::f32, tok, pos, ids, seed, 0);
  EXPECT_TRUE(coco::testing::matches_reference(cpu.dtok, mixed.dtok, 1e-12, "bf16/f32 dtok"));
  EXPECT_TRUE(coco::testing::matches_reference(cpu.dpos, mixed.dpos, 1e-12, "bf16/f32 dpos"));
  // bf16 output: one rounding of the f32 sum (<= 2^-8 relative): NMSE <= 1.5e-5.
  EXPECT_TRUE(coco::testing::matches_reference(cpu.out, mixed.out, 3e-5, "bf16 out"));
  // Bitwise reproducible run to run.
  const EmbeddingRun again = run_embedding(Device::cuda, DType::bf16, DType::f32, tok, pos, ids, seed, 0);
  EXPECT_EQ(mixed.dtok, again.dtok);
  EXPECT_EQ(mixed.dpos, again.dpos);
}

}  // namespace
