// ZeRO-1 under mpirun: each rank back-propagates its shard of the global batch and ZeroAdamW updates
// its shard of the optimizer; after every step the weights equal one process's AdamW on the whole
// batch (plain data parallelism's result), with gradient clipping active, on the MPI and NCCL paths.
// The gathered optimizer state equals that process's, and loading it into a fresh ZeroAdamW continues
// identically (the checkpoint is independent of the world size). With the tape hook, the buckets'
// reduce-scatters are issued while backward runs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/dist/zero.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/linear.h"
#include "engine/tape.h"
#include "tests/dist/dist_test_util.h"

namespace coco::dist {
namespace {

constexpr int64_t kGlobalRows = 12;
constexpr double kLr = 0.05, kMaxNorm = 0.5;

using testutil::comm_for;
using testutil::values;

// 6*8 + 6 + 8*6 + 5 = 107 elements: shards of 54 / 36 with padding, pieces that split parameters.
struct Model : testutil::TiedModel {
  explicit Model(Device device) : TiedModel(device, 5) {}
  std::vector<NamedParameter> named() const {
    return {{"w1", w1, true}, {"b1", b1, false}, {"w2", w2, true}, {"w1_tied", w1, true}, {"unused", unused, true}};
  }
  void backward(const Tensor& x) const {
    for (Tensor t : {w1, b1, w2, unused}) t.clear_grad();
    Tape tape;
    Tape::Recording recording(tape);
    tape.backward(loss(x));
  }
};

void expect_close(const Tensor& got, const Tensor& want, double tolerance, const std::string& what) {
  const std::vector<double> g = got.to(Device::cpu).to_f64(), w = want.to(Device::cpu).to_f64();
  ASSERT_EQ(g.size(), w.size()) << what;
  for (size_t i = 0; i < g.size(); ++i) ASSERT_NEAR(g[i], w[i], tolerance) << what << " index " << i;
}

class ZeroTest : public testing::TestWithParam<Device> {};

TEST_P(ZeroTest, EqualsOneProcessAdamWOnTheWholeBatch) {
  const Device device = GetParam();
  Communicator& comm = comm_for(device);
  const int n = comm.world_size(), me = comm.rank();
  const Tensor x = values({kGlobalRows, 8}, 7, device);
  const int64_t rows = kGlobalRows / n;

  Model reference(device);  // one process, whole batch, plain AdamW with clipping
  std::vector<NamedParameter> ref_params = reference.named();
  ref_params.erase(ref_params.begin() + 3);  // the tied repeat
  optim::AdamW ref_adamw(ref_params);

  Model model(device);
  ZeroAdamW zero(comm, model.named());
  EXPECT_EQ(zero.parameters().size(), 4u);
  EXPECT_EQ(zero.total_elements(), 107);
  EXPECT_EQ(zero.shard_size() * n, (107 + n - 1) / n * n);

  for (int step = 0; step < 3; ++step) {
    reference.backward(x);
    // backward gives the unused parameter no gradient; ZeRO counts it as zeros, so does the reference.
    reference.unused.autograd_meta()->grad = Tensor::zeros({5}, DType::f32, device);
    const optim::ClipResult clip = optim::clip_grad_norm(ref_adamw.gradients(), kMaxNorm);
    ref_adamw.step(kLr, clip.factor);

    model.backward(x.rows(me * rows, (me + 1) * rows));
    const ZeroAdamW::StepResult result = zero.step(kLr, kMaxNorm);
    EXPECT_NEAR(result.grad_norm, clip.norm, 1e-6 * clip.norm) << "step " << step;
    EXPECT_LT(result.clip_factor, 1.0) << "clipping should be active";
    for (const char* name : {"w1", "b1", "w2", "unused"}) {
      const Tensor got = name == std::string("w1")   ? model.w1
                         : name == std::string("b1") ? model.b1
                         : name == std::string("w2") ? model.w2
                                                     : model.unused;
      const Tensor want = name == std::string("w1")   ? reference.w1
                          : name == std::string("b1") ? reference.b1
                          : name == std::string("w2") ? reference.w2
                                                      : reference.unused;
      expect_close(got, want, 2e-6, std::string(name) + " after step " + std::to_string(step));
    }
  }

  // The gathered state is the whole-model state of the reference.
  const std::vector<ZeroAdamW::ParamState> state = zero.gathered_state();
  ASSERT_EQ(state.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(state[i].step, 3);
    expect_close(state[i].exp_avg, ref_adamw.exp_avg(i), 1e-6, "exp_avg " + ref_params[i].name);
    expect_close(state[i].exp_avg_sq, ref_adamw.exp_avg_sq(i), 1e-7, "exp_avg_sq " + ref_params[i].name);
  }

  // A fresh optimizer over a copy of the weights, resumed from the state, steps like the original.
  Model resumed(device);
  for (auto [to, from] : {std::pair{resumed.w1, model.w1},
                          {resumed.b1, model.b1},
                          {resumed.w2, model.w2},
                          {resumed.unused, model.unused}})
    to.copy_from(from);
  ZeroAdamW restarted(comm, resumed.named());
  restarted.load_state(state);
  model.backward(x.rows(me * rows, (me + 1) * rows));
  zero.step(kLr, kMaxNorm);
  resumed.backward(x.rows(me * rows, (me + 1) * rows));
  restarted.step(kLr, kMaxNorm);
  expect_close(resumed.w1, model.w1, 0.0, "w1 after resume");
  expect_close(resumed.w2, model.w2, 0.0, "w2 after resume");
  expect_close(resumed.unused, model.unused, 0.0, "unused after resume");
}

// Forwards every collective to the test's communicator and logs its name, so the test sees the order in
// which ZeroAdamW issues them relative to the tape's backward.
class LoggingCommunicator final : public Communicator {
 public:
  LoggingCommunicator(Communicator& inner, std::vector<std::string>& log) : inner_(inner), log_(log) {}
  int rank() const override { return inner_.rank(); }
  int world_size() const override { return inner_.world_size(); }
  Device device() const override { return inner_.device(); }
  const char* backend() const override { return inner_.backend(); }
  void all_reduce(void* data, size_t count, DType dtype, ReduceOp op) override {
    log_.push_back("all_reduce");
    inner_.all_reduce(data, count, dtype, op);
  }
  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op) override {
    log_.push_back("reduce_scatter");
    inner_.reduce_scatter(send, recv, recv_count, dtype, op);
  }
  void all_gather(const void* send, void* recv, size_t send_count, DType dtype) override {
    log_.push_back("all_gather");
    inner_.all_gather(send, recv, send_count, dtype);
  }
  void broadcast(void* data, size_t count, DType dtype, int root) override {
    log_.push_back("broadcast");
    inner_.broadcast(data, count, dtype, root);
  }
  void barrier() override { inner_.barrier(); }
  void wait() override { inner_.wait(); }
  void synchronize() override { inner_.synchronize(); }
  [[noreturn]] void abort(int exit_code) override {
    inner_.abort(exit_code);
    std::_Exit(exit_code);  // not reached (the attribute does not travel through the virtual call)
  }

 private:
  Communicator& inner_;
  std::vector<std::string>& log_;
};

// With the hook on the tape and small buckets, the buckets' reduce-scatters are issued while backward still
// runs (before the backward of the tape's first node, a marker the test records ahead of the model), one per
// bucket, and the result still equals one process's AdamW on the whole batch, also after the second step has
// laid the buckets out again in the order backward finished the gradients (the state moving along).
TEST_P(ZeroTest, HookedReduceScatterOverlapsBackward) {
  const Device device = GetParam();
  Communicator& comm = comm_for(device);
  const int n = comm.world_size(), me = comm.rank();
  const Tensor x = values({kGlobalRows, 8}, 7, device);
  const int64_t rows = kGlobalRows / n;

  Model reference(device);
  std::vector<NamedParameter> ref_params = reference.named();
  ref_params.erase(ref_params.begin() + 3);  // the tied repeat
  optim::AdamW ref_adamw(ref_params);

  std::vector<std::string> log;
  LoggingCommunicator logging(comm, log);
  Model model(device);
  ZeroAdamW zero(logging, model.named(), {}, /*bucket_bytes=*/64);
  EXPECT_EQ(zero.bucket_count(), 4u);  // unused | w2 | b1 | w1, each over 64 bytes or alone
  const Tensor probe = Tensor::zeros({1}, DType::f32, device).set_requires_grad().set_name("probe");  // no parameter
  for (int step = 0; step < 3; ++step) {
    reference.backward(x);
    reference.unused.autograd_meta()->grad = Tensor::zeros({5}, DType::f32, device);
    const optim::ClipResult clip = optim::clip_grad_norm(ref_adamw.gradients(), kMaxNorm);
    ref_adamw.step(kLr, clip.factor);

    for (Tensor t : {model.w1, model.b1, model.w2, model.unused}) t.clear_grad();
    Tape tape;
    zero.attach(tape);  // the second step lays the buckets out again here
    log.clear();
    {
      Tape::Recording recording(tape);
      Tensor input = x.rows(me * rows, (me + 1) * rows).clone();
      tape.record("marker", {probe}, {input}, [&log](BackwardContext&) { log.push_back("backward of node 0"); });
      tape.backward(model.loss(input));
    }
    zero.detach(tape);
    zero.finish();
    const auto marker = std::find(log.begin(), log.end(), "backward of node 0");
    ASSERT_NE(marker, log.end()) << "step " << step;
    const auto before = std::count(log.begin(), marker, std::string("reduce_scatter"));
    EXPECT_GE(before, 1) << "step " << step << ": no reduce-scatter issued before backward ended";
    EXPECT_EQ(std::count(log.begin(), log.end(), std::string("reduce_scatter")),
              static_cast<std::ptrdiff_t>(zero.bucket_count()))
        << "step " << step;
    EXPECT_GE(zero.overlapped_buckets(), 1u) << "step " << step;
    EXPECT_EQ(zero.overlapped_buckets(), static_cast<size_t>(before)) << "step " << step;

    const ZeroAdamW::StepResult result = zero.step(kLr, kMaxNorm);
    EXPECT_NEAR(result.grad_norm, clip.norm, 1e-6 * clip.norm) << "step " << step;
    expect_close(model.w1, reference.w1, 2e-6, "w1 after step " + std::to_string(step));
    expect_close(model.b1, reference.b1, 2e-6, "b1 after step " + std::to_string(step));
    expect_close(model.w2, reference.w2, 2e-6, "w2 after step " + std::to_string(step));
    expect_close(model.unused, reference.unused, 2e-6, "unused after step " + std::to_string(step));
  }
  const std::vector<ZeroAdamW::ParamState> state = zero.gathered_state();
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(state[i].step, 3);
    expect_close(state[i].exp_avg, ref_adamw.exp_avg(i), 1e-6, "exp_avg " + ref_params[i].name);
    expect_close(state[i].exp_avg_sq, ref_adamw.exp_avg_sq(i), 1e-7, "exp_avg_sq " + ref_params[i].name);
  }
}

INSTANTIATE_TEST_SUITE_P(Dist, ZeroTest, testing::Values(Device::cpu, Device::cuda),
                         [](const testing::TestParamInfo<Device>& info) { return device_name(info.param); });

}  // namespace
}  // namespace coco::dist
