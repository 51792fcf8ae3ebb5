// Gradient buckets under mpirun: each rank back-propagates its shard of a global batch, its loss seeded
// with 1 / world size (its share of the batch, as the trainer seeds it); after GradSync::finish (a sum over
// the ranks) every rank holds the gradient of the whole batch, as one process computes it,
// on the MPI path (cpu) and the NCCL path (cuda). A tied weight is synchronised once, a parameter
// backward never reaches gets zeros, and with small buckets the first all-reduces start while
// backward still runs.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "engine/dist/grad_sync.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/linear.h"
#include "tests/dist/dist_test_util.h"

namespace coco::dist {
namespace {

constexpr int64_t kGlobalRows = 12;  // divides by 2 and 3 ranks

using testutil::comm_for;
using testutil::values;

struct Model : testutil::TiedModel {
  explicit Model(Device device) : TiedModel(device, 4) {}
  std::vector<Tensor> params() const { return {w1, b1, w2, w1, unused}; }  // w1 listed twice
};

void expect_close(const Tensor& got, const Tensor& want, double rel, const char* what) {
  const std::vector<double> g = got.to(Device::cpu).to_f64(), w = want.to(Device::cpu).to_f64();
  ASSERT_EQ(g.size(), w.size()) << what;
  double scale = 0;
  for (double v : w) scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < g.size(); ++i) ASSERT_NEAR(g[i], w[i], rel * scale + 1e-12) << what << " index " << i;
}

class GradSyncTest : public testing::TestWithParam<std::tuple<Device, DType>> {};

TEST_P(GradSyncTest, ShardsSumToTheWholeBatch) {
  const auto [device, reduce_dtype] = GetParam();
  Communicator& comm = comm_for(device);
  const int n = comm.world_size(), me = comm.rank();
  const Tensor x = values({kGlobalRows, 8}, 7, device);
  const int64_t rows = kGlobalRows / n;

  // The reference: one process, the whole batch.
  Model reference(device);
  {
    Tape tape;
    Tape::Recording recording(tape);
    tape.backward(reference.loss(x));
  }

  Model model(device);
  GradSyncOptions options;
  options.bucket_bytes = 64;  // several buckets
  options.reduce_dtype = reduce_dtype;
  GradSync sync(comm, model.params(), options);
  EXPECT_EQ(sync.parameters().size(), 4u);  // w1 once
  const double rel = reduce_dtype == DType::bf16 ? 2e-2 : 1e-5;
  for (int step = 0; step < 2; ++step) {  // the second step runs on the buckets laid out from the first
    for (const Tensor& p : sync.parameters()) const_cast<Tensor&>(p).clear_grad();
    Tape tape;
    sync.attach(tape);
    {
      Tape::Recording recording(tape);
      tape.backward(ops::scale(model.loss(x.rows(me * rows, (me + 1) * rows)), 1.0 / n));
    }
    sync.finish();
    sync.detach(tape);
    EXPECT_GT(sync.bucket_count(), 2u);
    EXPECT_GE(sync.overlapped_buckets(), 1u) << "no bucket started before backward ended";
    expect_close(model.w1.grad(), reference.w1.grad(), rel, "w1");
    expect_close(model.b1.grad(), reference.b1.grad(), rel, "b1");
    expect_close(model.w2.grad(), reference.w2.grad(), rel, "w2");
    ASSERT_TRUE(model.unused.grad().defined());
    for (double v : model.unused.grad().to(Device::cpu).to_f64()) ASSERT_EQ(v, 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Dist, GradSyncTest,
                         testing::Values(std::make_tuple(Device::cpu, DType::f32),
                                         std::make_tuple(Device::cpu, DType::bf16),
                                         std::make_tuple(Device::cuda, DType::f32),
                                         std::make_tuple(Device::cuda, DType::bf16)));

TEST(GradSyncOptions, BadOptionsAreRefused) {
  Communicator& comm = comm_for(Device::cpu);
  Model model(Device::cpu);
  GradSyncOptions options;
  options.reduce_dtype = DType::f16;
  EXPECT_THROW(GradSync(comm, model.params(), options), DistConfigError);
  options = {};
  options.bucket_bytes = 0;
  EXPECT_THROW(GradSync(comm, model.params(), options), DistConfigError);
  const Tensor frozen = values({3}, 9, Device::cpu);
  EXPECT_THROW(GradSync(comm, {frozen}, {}), CommError);
}

}  // namespace
}  // namespace coco::dist
