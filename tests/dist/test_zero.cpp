// ZeRO-1 under mpirun: each rank back-propagates its shard of the global batch (its loss seeded with
// 1 / world size, its share, as the trainer seeds it: the reduce-scatter sums) and ZeroAdamW updates
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
#include "engine/ops/step_control.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/linear.h"
#include "kernels/gradnorm.h"
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
  // `share`: the seed of the backward (a rank's share of the global batch).
  void backward(const Tensor& x, double share = 1.0) const {
    for (Tensor t : {w1, b1, w2, unused}) t.clear_grad();
    Tape tape;
    Tape::Recording recording(tape);
    tape.backward(share == 1.0 ? loss(x) : ops::scale(loss(x), share));
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

    model.backward(x.rows(me * rows, (me + 1) * rows), 1.0 / n);
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
  model.backward(x.rows(me * rows, (me + 1) * rows), 1.0 / n);
  zero.step(kLr, kMaxNorm);
  resumed.backward(x.rows(me * rows, (me + 1) * rows), 1.0 / n);
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
// bucket, and the result still equals one process's AdamW on the whole batch, also after the first step's update has
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
    log.clear();
    zero.attach(tape);  // the first step's update laid the buckets out again already: no collective here
    EXPECT_TRUE(log.empty()) << "step " << step << ": attach() issued " << log.front();
    {
      Tape::Recording recording(tape);
      Tensor input = x.rows(me * rows, (me + 1) * rows).clone();
      tape.record("marker", {probe}, {input}, [&log](BackwardContext&) { log.push_back("backward of node 0"); });
      tape.backward(ops::scale(model.loss(input), 1.0 / n));
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

    log.clear();
    log.clear();
    const ZeroAdamW::StepResult result = zero.step(kLr, kMaxNorm);
    // The first step's update ends by laying the buckets out in the order its backward finished the gradients
    // (the state gathered, one broadcast of the step count), so that every later step is the same (what a CUDA
    // graph capture of the step needs); later steps do not.
    EXPECT_EQ(std::count(log.begin(), log.end(), std::string("broadcast")), step == 0 ? 1 : 0) << "step " << step;
    // The first step's update ends by laying the buckets out in the order its backward finished the gradients
    // (the state gathered, one broadcast of the step count), so that every later step is the same (what a CUDA
    // graph capture of the step needs); later steps do not.
    EXPECT_EQ(std::count(log.begin(), log.end(), std::string("broadcast")), step == 0 ? 1 : 0) << "step " << step;
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

// ---- Mixed precision ------------------------------------------------------------------------------------
// The parameters are 16-bit working copies (f32 gradient buffers) of f32 masters. The reference is plain data
// parallelism's mixed-precision step, the same on every rank: the ranks' gradients summed, then one
// process's AdamW over the whole masters with their working copies (bf16 written by the AdamW kernel, f16
// converted after the step, as the trainer's refresh_working_copies does), the loss scale undone in the norm
// and the update, the step skipped when the summed gradients are not finite, a GradScaler fed the flag.

struct MixedParams {
  std::vector<Tensor> masters, working;  // w1 (6, 8), b1 (6), w2 (8, 6), unused (5)
  std::vector<NamedParameter> named;     // with a tied repeat of w1
  std::vector<Tensor> named_masters;     // parallel to named
};

MixedParams mixed_params(DType dtype, Device device) {
  MixedParams m;
  const std::vector<std::pair<const char*, Shape>> shapes = {
      {"w1", {6, 8}}, {"b1", {6}}, {"w2", {8, 6}}, {"unused", {5}}};
  for (size_t k = 0; k < shapes.size(); ++k) {
    m.masters.push_back(values(shapes[k].second, static_cast<int>(k + 1), device));
    Tensor w = m.masters.back().to(dtype).set_requires_grad().set_name(shapes[k].first);
    w.set_grad_dtype(DType::f32);
    m.working.push_back(w);
    m.named.push_back({shapes[k].first, w, k != 1});
    m.named_masters.push_back(m.masters.back());
  }
  m.named.push_back({"w1_tied", m.working[0], true});
  m.named_masters.push_back(m.masters[0]);
  return m;
}

// Rank r's f32 gradient of parameter k at `step`, times `scale`. `coarse`: multiples of 1/16 below 2 in
// magnitude, so that a sum over 3 ranks is exact in bf16 (a bf16 reduction then rounds nothing, and never
// turns a near-cancelling sum around).
Tensor rank_gradient(const Shape& shape, int step, int rank, size_t k, double scale, Device device,
                     bool coarse = false) {
  std::vector<double> v = values(shape, 1000 * step + 10 * rank + static_cast<int>(k), Device::cpu).to_f64();
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double g = v[i] * 0.3 * static_cast<double>(k + 1);
    f[i] = static_cast<float>((coarse ? std::round(g * 16) / 16 : g) * scale);
  }
  return Tensor::from_vector(f, shape, device);
}

struct MixedCase {
  DType working;
  DType reduce;
  double master_tolerance;  // absolute, masters after each step
};

// Equality with plain data parallelism's mixed-precision step over 5 steps with clipping active, bucketed
// (64 bytes) and padded shards; for f16 a dynamic loss scale whose search runs (growth every 2 good steps,
// backoff on the first overflow) and one step where one rank's gradient holds +Inf: every rank finds the
// step non-finite, skips it, and the scale follows the reference's exactly. Then the gathered state (f32
// masters and moments) resumes a fresh ZeroAdamW over fresh working copies exactly.
TEST_P(ZeroTest, MixedPrecisionEqualsDataParallel) {
  const Device device = GetParam();
  Communicator& comm = comm_for(device);
  const int n = comm.world_size(), me = comm.rank();
  for (const MixedCase c : {MixedCase{DType::bf16, DType::f32, 2e-6}, MixedCase{DType::f16, DType::f32, 2e-6},
                            MixedCase{DType::bf16, DType::bf16, 2e-6}}) {
    const std::string label = std::string(dtype_name(c.working)) + " working copies, " + dtype_name(c.reduce) +
                              " reduce-scatter on " + device_name(device);
    SCOPED_TRACE(label);
    const bool f16 = c.working == DType::f16, coarse = c.reduce == DType::bf16;
    MixedParams ref = mixed_params(c.working, device), mine = mixed_params(c.working, device);
    std::vector<optim::AdamWParam> ref_params;
    for (size_t k = 0; k < 4; ++k)
      ref_params.push_back({ref.named[k].name, ref.masters[k], f16 ? Tensor() : ref.working[k], ref.working[k],
                            ref.named[k].weight_decay});
    optim::AdamW ref_adamw(ref_params);
    optim::GradScalerOptions scaler_options;
    scaler_options.initial_scale = 1024;
    scaler_options.growth_interval = 2;
    scaler_options.hysteresis = 1;
    optim::GradScaler ref_scaler(scaler_options), my_scaler(scaler_options);

    ZeroOptions options;
    options.bucket_bytes = 64;
    options.reduce_dtype = c.reduce;
    ZeroAdamW zero(comm, mine.named, mine.named_masters, {}, options);
    ASSERT_EQ(zero.parameters().size(), 4u);
    EXPECT_EQ(zero.working_dtype(), c.working);
    EXPECT_GE(zero.bucket_count(), 3u);
    mine.masters.clear();  // the optimizer keeps its shard of them only
    mine.named_masters.clear();

    const int overflow_step = f16 ? 2 : -1;
    std::vector<double> scales;
    for (int step = 0; step < 5; ++step) {
      const double scale = f16 ? my_scaler.scale() : 1.0;
      ASSERT_EQ(scale, f16 ? ref_scaler.scale() : 1.0);
      scales.push_back(scale);
      // The reference's summed gradients.
      for (size_t k = 0; k < 4; ++k) {
        const Shape shape = ref.working[k].shape();
        std::vector<double> sum(static_cast<size_t>(shape.numel()), 0.0);
        for (int r = 0; r < n; ++r) {
          const std::vector<double> gv = rank_gradient(shape, step, r, k, scale, device, coarse).to_f64();
          for (size_t i = 0; i < sum.size(); ++i) sum[i] += gv[i];
        }
        if (step == overflow_step && k == 2) sum[5] = INFINITY;
        std::vector<float> f(sum.begin(), sum.end());
        ref.working[k].autograd_meta()->grad = Tensor::from_vector(f, shape, device);
        Tensor mine_grad = rank_gradient(shape, step, me, k, scale, device, coarse);
        if (step == overflow_step && k == 2 && me == n - 1) {
          std::vector<float> g = mine_grad.to(Device::cpu).to_vector<float>();
          g[5] = INFINITY;
          mine_grad = Tensor::from_vector(g, shape, device);
        }
        mine.working[k].autograd_meta()->grad = mine_grad;
      }
      const optim::GradientStats want = optim::gradient_stats(ref_adamw.gradients(), 1.0 / scale);
      const bool ref_apply = f16 ? ref_scaler.update(want.nonfinite) : !want.nonfinite;
      if (ref_apply) {
        const double factor = kernels::clip_factor(want.norm, kMaxNorm);
        ref_adamw.step(kLr, factor / scale);
        if (f16)
          for (size_t k = 0; k < 4; ++k) ref.working[k].copy_from(ref.masters[k].to(DType::f16));
      }
      ref_adamw.zero_grad();

      const optim::GradientStats got = zero.reduce_gradients(1.0 / scale);
      ASSERT_EQ(got.nonfinite, step == overflow_step) << "step " << step;
      ASSERT_EQ(got.nonfinite, want.nonfinite) << "step " << step;
      const bool apply = f16 ? my_scaler.update(got.nonfinite) : !got.nonfinite;
      if (apply) {
        EXPECT_NEAR(got.norm, want.norm, 1e-6 * want.norm) << "step " << step;
        const double factor = kernels::clip_factor(got.norm, kMaxNorm);
        EXPECT_LT(factor, 1.0) << "clipping should be active";
        zero.apply(kLr, factor / scale);
      }
      zero.zero_grad();

      const std::vector<ZeroAdamW::ParamState> state = zero.gathered_state();
      for (size_t k = 0; k < 4; ++k) {
        const std::string what = ref.named[k].name + " after step " + std::to_string(step);
        expect_close(state[k].master, ref.masters[k], c.master_tolerance, "master " + what);
        // The working copies are this optimizer's masters rounded, bit for bit, and so the reference's to
        // within one rounding step where the masters differ by the reduction order.
        expect_close(mine.working[k], state[k].master.to(c.working), 0.0, "working copy " + what);
        expect_close(mine.working[k], ref.working[k], f16 ? 2e-3 : (c.reduce == DType::bf16 ? 2e-2 : 8e-3),
                     "working copy vs reference " + what);
        EXPECT_EQ(state[k].step, ref_adamw.step_count(k)) << what;
      }
    }
    if (f16) {
      EXPECT_EQ(scales, (std::vector<double>{1024, 1024, 2048, 1024, 1024}));
      EXPECT_EQ(my_scaler.scale(), 2048);
      EXPECT_EQ(my_scaler.skipped_steps(), 1);
      EXPECT_EQ(ref_scaler.state().skipped_steps, 1);
    }

    // Resume: fresh working copies and a fresh optimizer from the gathered state (masters and moments).
    const std::vector<ZeroAdamW::ParamState> state = zero.gathered_state();
    MixedParams resumed = mixed_params(c.working, device);
    std::vector<Tensor> resumed_masters;
    for (size_t k = 0; k < resumed.named.size(); ++k) {
      const size_t whole = k < 4 ? k : 0;
      resumed.named[k].tensor.copy_from(mine.working[whole]);
      resumed_masters.push_back(state[whole].master);
    }
    ZeroAdamW restarted(comm, resumed.named, resumed_masters, {}, options);
    restarted.load_state(state);
    for (size_t k = 0; k < 4; ++k) {
      const Tensor g = rank_gradient(mine.working[k].shape(), 7, me, k, 1.0, device);
      mine.working[k].autograd_meta()->grad = g.clone();
      resumed.working[k].autograd_meta()->grad = g.clone();
    }
    zero.step(kLr, kMaxNorm);
    restarted.step(kLr, kMaxNorm);
    const std::vector<ZeroAdamW::ParamState> after = zero.gathered_state(), again = restarted.gathered_state();
    for (size_t k = 0; k < 4; ++k) {
      expect_close(resumed.working[k], mine.working[k], 0.0, "working copy after resume " + ref.named[k].name);
      expect_close(again[k].master, after[k].master, 0.0, "master after resume " + ref.named[k].name);
    }
  }
}

// Parameters that do not fit the mixed-precision constructor are refused by name.
TEST_P(ZeroTest, MixedPrecisionRefusesMismatches) {
  const Device device = GetParam();
  Communicator& comm = comm_for(device);
  MixedParams m = mixed_params(DType::bf16, device);
  std::vector<Tensor> short_masters(m.named_masters.begin(), m.named_masters.end() - 1);
  EXPECT_THROW(ZeroAdamW(comm, m.named, short_masters, {}, {}), TensorError);
  std::vector<Tensor> wrong = m.named_masters;
  wrong[1] = wrong[1].to(DType::bf16);
  try {
    ZeroAdamW zero(comm, m.named, wrong, {}, {});
    ADD_FAILURE() << "a bf16 master was accepted";
  } catch (const TensorError& e) {
    EXPECT_NE(std::string(e.what()).find("'b1'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ZeroAdamW(comm, m.named), TensorError);  // 16-bit parameters without masters
  ZeroOptions f16_reduce;
  f16_reduce.reduce_dtype = DType::f16;
  EXPECT_THROW(ZeroAdamW(comm, m.named, m.named_masters, {}, f16_reduce), DistConfigError);
}

// The device-decided step (optim::StepControl) on ZeRO-1: each rank decides from its gradient shard's statistics
// summed over the ranks on the device (StepControl::decide's combine), and ZeroAdamW::apply(control) updates the
// shard with the decision's scalars. Every step equals one process's controlled AdamW on the whole batch: the same
// skip (step 2 is forced to skip), clip factor and weights, across the re-layout at the end of the first step's
// update and after the step counts were synced and the state gathered (a checkpoint) on the new layout; the counts
// gathered at the end are the control's applied count.
TEST_P(ZeroTest, DeviceDecidedStepEqualsTheWholeControlledStep) {
  const Device device = GetParam();
  Communicator& comm = comm_for(device);
  const int n = comm.world_size(), me = comm.rank();
  const Tensor x = values({kGlobalRows, 8}, 7, device);
  const int64_t rows = kGlobalRows / n;
  optim::StepControlOptions control_options;
  control_options.lr.assign(4, kLr);
  control_options.clip_norm = kMaxNorm;

  Model reference(device);
  std::vector<NamedParameter> ref_params = reference.named();
  ref_params.erase(ref_params.begin() + 3);  // the tied repeat
  optim::AdamW ref_adamw(ref_params);
  optim::StepControl ref_control(device, control_options, ref_adamw.options());

  Model model(device);
  ZeroAdamW zero(comm, model.named(), {}, /*bucket_bytes=*/64);
  optim::StepControl control(device, control_options, ref_adamw.options());
  const auto combine = [&comm](const Tensor& sum_sq, const Tensor& nonfinite) {
    comm.all_reduce(sum_sq, ReduceOp::sum);
    comm.all_reduce(nonfinite, ReduceOp::sum);
    comm.wait();
  };
  for (int step = 0; step < 4; ++step) {
    reference.backward(x);
    reference.unused.autograd_meta()->grad = Tensor::zeros({5}, DType::f32, device);
    if (step == 2) ref_control.force_skip();
    ref_control.decide(ref_adamw.gradients());
    ref_adamw.step(ref_control);

    for (Tensor t : {model.w1, model.b1, model.w2, model.unused}) t.clear_grad();
    Tape tape;
    zero.attach(tape);  // the first step's apply() laid the buckets out again
    {
      Tape::Recording recording(tape);
      tape.backward(ops::scale(model.loss(x.rows(me * rows, (me + 1) * rows)), 1.0 / n));
    }
    zero.detach(tape);
    zero.finish();
    if (step == 2) control.force_skip();
    control.decide({zero.gradient_shard()}, Tensor(), combine);
    zero.apply(control);

    const kernels::StepState want = ref_control.read(), got = control.read();
    EXPECT_EQ(got.apply, step == 2 ? 0 : 1) << "step " << step;
    EXPECT_EQ(got.apply, want.apply) << "step " << step;
    EXPECT_EQ(got.applied, want.applied) << "step " << step;
    if (want.apply) {
      EXPECT_NEAR(got.grad_norm, want.grad_norm, 1e-6 * want.grad_norm) << "step " << step;
      EXPECT_LT(got.grad_scale, 1.0) << "clipping should be active";
    }
    expect_close(model.w1, reference.w1, 2e-6, "w1 after step " + std::to_string(step));
    expect_close(model.b1, reference.b1, 2e-6, "b1 after step " + std::to_string(step));
    expect_close(model.w2, reference.w2, 2e-6, "w2 after step " + std::to_string(step));
    expect_close(model.unused, reference.unused, 2e-6, "unused after step " + std::to_string(step));
    if (step == 0) {  // a checkpoint: the counts synced, the state gathered (a collective)
      zero.sync_step_counts(got.applied);
      for (const ZeroAdamW::ParamState& s : zero.gathered_state()) EXPECT_EQ(s.step, 1);
    }
  }
  zero.sync_step_counts(control.read().applied);
  ref_adamw.sync_step_counts(ref_control.read().applied);
  const std::vector<ZeroAdamW::ParamState> state = zero.gathered_state();
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(state[i].step, 3);
    EXPECT_EQ(state[i].step, ref_adamw.step_count(i));
    expect_close(state[i].exp_avg, ref_adamw.exp_avg(i), 1e-6, "exp_avg " + ref_params[i].name);
    expect_close(state[i].exp_avg_sq, ref_adamw.exp_avg_sq(i), 1e-7, "exp_avg_sq " + ref_params[i].name);
  }
}

INSTANTIATE_TEST_SUITE_P(Dist, ZeroTest, testing::Values(Device::cpu, Device::cuda),
                         [](const testing::TestParamInfo<Device>& info) { return device_name(info.param); });

}  // namespace
}  // namespace coco::dist
