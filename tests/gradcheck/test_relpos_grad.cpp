// f64 finite-difference check of the relative-position bias gather's backward (CPU kernels), and
// through ops::relative_position_bias on the tape.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/relpos.h"
#include "engine/tape.h"
#include "engine/tensor.h"
#include "kernels/relpos.h"

namespace {

using coco::kernels::RelativePositionConfig;

void check_kernel_gradient(int64_t heads, int64_t seq_len, const RelativePositionConfig& c,
                           coco::kernels::BiasTableLayout layout, unsigned seed) {
  std::vector<int32_t> buckets(static_cast<size_t>(seq_len * seq_len));
  coco::kernels::cpu::relative_position_buckets(buckets.data(), seq_len, c);
  std::vector<int32_t> offsets(static_cast<size_t>(c.num_buckets) + 1), positions(buckets.size());
  coco::kernels::cpu::relative_position_bucket_index(buckets.data(), seq_len, c.num_buckets, offsets.data(),
                                                     positions.data());
  std::vector<double> table = coco::gradcheck_weights(static_cast<size_t>(heads * c.num_buckets), seed);
  const size_t bias_size = static_cast<size_t>(heads * seq_len * seq_len);
  const std::vector<double> w = coco::gradcheck_weights(bias_size, seed + 1);
  std::vector<double> dtable(table.size(), 123.0);  // overwritten (accumulate = false)
  coco::kernels::cpu::relative_position_bias_backward(w.data(), offsets.data(), positions.data(), dtable.data(), layout,
                                                      heads, seq_len, c.num_buckets, false);
  auto loss = [&] {
    std::vector<double> bias(bias_size);
    coco::kernels::cpu::relative_position_bias_forward(table.data(), layout, buckets.data(), bias.data(), heads,
                                                       seq_len, c.num_buckets);
    double total = 0.0;
    for (size_t i = 0; i < bias_size; ++i) total += bias[i] * w[i];
    return total;
  };
  const coco::GradcheckReport report = coco::gradcheck_raw({{"table", table, dtable}}, loss);
  EXPECT_TRUE(report.ok) << "H=" << heads << " T=" << seq_len << ": " << report.worst;
}

TEST(RelposGradcheck, BiasGatherKernel) {
  using coco::kernels::BiasTableLayout;
  check_kernel_gradient(2, 1, {8, 20, 40}, BiasTableLayout::heads_by_buckets, 1);
  check_kernel_gradient(3, 7, {8, 20, 40}, BiasTableLayout::buckets_by_heads, 2);
  check_kernel_gradient(2, 33, {32, 128, 512}, BiasTableLayout::buckets_by_heads, 3);  // unused buckets get 0
}

TEST(RelposGradcheck, OpOnTheTape) {
  for (int64_t seq_len : {int64_t{1}, int64_t{7}, int64_t{12}}) {
    const RelativePositionConfig config{8, 20, 40};
    coco::Tensor table = coco::Tensor::from_vector(coco::gradcheck_weights(8 * 3, 5), coco::Shape{8, 3});
    table.set_requires_grad(true).set_name("table");
    const coco::GradcheckReport report = coco::gradcheck(
        [&](const auto& in) { return coco::ops::relative_position_bias(in[0], seq_len, config); }, {table});
    EXPECT_TRUE(report.ok) << "T=" << seq_len << ": " << report.worst;
  }
}

// The table is shared by every layer: gradients of several uses accumulate into one buffer, and
// equal the scatter computed by hand from the bucket table.
TEST(RelposGradcheck, OpAccumulatesAcrossUses) {
  const RelativePositionConfig config{8, 20, 40};
  const int64_t heads = 2, seq_len = 5;
  coco::Tensor table = coco::Tensor::from_vector(coco::gradcheck_weights(8 * heads, 6), coco::Shape{8, heads});
  table.set_requires_grad(true);
  const std::vector<double> w = coco::gradcheck_weights(static_cast<size_t>(heads * seq_len * seq_len), 7);
  coco::Tape tape;
  coco::Tensor total;
  {
    coco::Tape::Recording recording(tape);
    const coco::Tensor first = coco::ops::relative_position_bias(table, seq_len, config);
    const coco::Tensor second = coco::ops::relative_position_bias(table, seq_len, config);
    total = coco::ops::add(first, second);
  }
  tape.backward(total, coco::Tensor::from_vector(w, coco::Shape{heads, seq_len, seq_len}));
  std::vector<int32_t> buckets(static_cast<size_t>(seq_len * seq_len));
  coco::kernels::cpu::relative_position_buckets(buckets.data(), seq_len, config);
  std::vector<double> expected(static_cast<size_t>(8 * heads), 0.0);
  for (int64_t h = 0; h < heads; ++h)
    for (size_t p = 0; p < buckets.size(); ++p)
      expected[static_cast<size_t>(buckets[p] * heads + h)] += 2.0 * w[static_cast<size_t>(h) * buckets.size() + p];
  const std::vector<double> got = table.grad().to_f64();
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-12) << "table element " << i;
}

}  // namespace
