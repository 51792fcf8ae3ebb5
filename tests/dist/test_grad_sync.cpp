// Gradient buckets under mpirun: each rank back-propagates its shard of a global batch; after
// GradSync::finish every rank holds the gradient of the whole batch, as one process computes it,
// on the MPI path (cpu) and the NCCL path (cuda). A tied weight is synchronised once, a parameter
// backward never reaches gets zeros, and with small buckets the first all-reduces start while
// backward still runs.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "engine/dist/grad_sync.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/linear.h"

namespace coco::dist {
namespace {

constexpr int64_t kGlobalRows = 12;  // divides by 2 and 3 ranks

Communicator& comm_for(Device device) {
  static std::unique_ptr<Communicator> comms[2];
  auto& comm = comms[device == Device::cpu ? 0 : 1];
  if (!comm) comm = make_communicator(device, detect_launch());
  return *comm;
}

Tensor values(const Shape& shape, int seed, Device device) {
  std::vector<float> v(static_cast<size_t>(shape.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(std::sin(0.37 * (i + 1) + 1.3 * seed));
  return Tensor::from_vector(v, shape, device);
}

struct Model {
  Tensor w1, b1, w2, unused;
  explicit Model(Device device)
      : w1(values({6, 8}, 1, device).set_requires_grad().set_name("w1")),
        b1(values({6}, 2, device).set_requires_grad().set_name("b1")),
        w2(values({8, 6}, 3, device).set_requires_grad().set_name("w2")),
        unused(values({4}, 4, device).set_requires_grad().set_name("unused")) {}
  // The tied weight w1 is read twice: by the first and the last layer.
  Tensor loss(const Tensor& x) const {
    const Tensor h = ops::linear(x, w1, b1);
    const Tensor y = ops::linear(h, w2);
    const Tensor z = ops::linear(y, w1);
    return ops::mean(ops::mul(z, z));
  }
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

TEST_P(GradSyncTest, ShardsAverageToTheWholeBatch) {
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
      tape.backward(model.loss(x.rows(me * rows, (me + 1) * rows)));
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
