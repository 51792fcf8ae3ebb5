// The device-side step decision (kernels/step_control.h): the CUDA kernel (emulated) against the CPU
// reference over a sequence of steps that skips, clips, grows and backs off the loss scale; and
// optim::StepControl + AdamW::step(StepControl) against the host-decided step it replaces
// (gradient_stats, GradScaler, AdamW::step(lr, grad_scale)), bit for bit, on both devices.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <set>
#include <stdexcept>
#include <vector>

#include "engine/ops/optim.h"
#include "engine/ops/step_control.h"
#include "engine/runtime/counters.h"
#include "kernels/gradnorm.h"
#include "kernels/step_control.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;
using coco::kernels::StepState;
using coco::testing::GuardedDeviceBuffer;

// Field by field (the struct's padding is not compared); doubles by their bits, so NaN == NaN.
void expect_same_state(const StepState& a, const StepState& b, int step) {
  const auto bits = [](double x) {
    uint64_t u;
    std::memcpy(&u, &x, sizeof u);
    return u;
  };
  EXPECT_EQ(a.step, b.step) << step;
  EXPECT_EQ(a.applied, b.applied) << step;
  EXPECT_EQ(a.growth_tracker, b.growth_tracker) << step;
  EXPECT_EQ(a.hysteresis_left, b.hysteresis_left) << step;
  EXPECT_EQ(a.skipped_total, b.skipped_total) << step;
  EXPECT_EQ(a.consecutive_skips, b.consecutive_skips) << step;
  EXPECT_EQ(a.scaler_skipped, b.scaler_skipped) << step;
  EXPECT_EQ(bits(a.loss_scale), bits(b.loss_scale)) << step;
  EXPECT_EQ(a.force_skip, b.force_skip) << step;
  EXPECT_EQ(a.apply, b.apply) << step;
  EXPECT_EQ(bits(a.grad_norm), bits(b.grad_norm)) << step;
  EXPECT_EQ(bits(a.lr), bits(b.lr)) << step;
  EXPECT_EQ(bits(a.step_loss_scale), bits(b.step_loss_scale)) << step;
  EXPECT_EQ(bits(a.grad_scale), bits(b.grad_scale)) << step;
  EXPECT_EQ(bits(a.step_size), bits(b.step_size)) << step;
  EXPECT_EQ(bits(a.decay_factor), bits(b.decay_factor)) << step;
  EXPECT_EQ(bits(a.bias_correction2_sqrt), bits(b.bias_correction2_sqrt)) << step;
  EXPECT_EQ(a.backward_seed, b.backward_seed) << step;
}

struct StepCase {
  double sum_sq;
  int32_t nonfinite;
  double loss_sum;
  int32_t force_skip;
};

TEST(StepControlKernel, CudaMatchesTheCpuReferenceOverSkipsClipsAndScaleChanges) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  const std::vector<StepCase> cases = {
      {4.0e10, 0, 3.5, 0}, {1.0e-3, 0, 2.0, 0}, {2.5e9, 1, 2.0, 0},  {7.0, 0, nan, 0},
      {9.0, 0, 1.0, 1},    {3.0e8, 0, 1.5, 0},  {inf, 0, 1.5, 0},    {0.0, 0, 0.0, 0},
      {1.0e12, 0, 4.0, 0}, {6.0, 0, inf, 0},    {2.0e4, 0, 1.25, 0}, {5.0e6, 0, 1.0, 0},
  };
  const int64_t steps = static_cast<int64_t>(cases.size());
  std::vector<double> tables(static_cast<size_t>(4 * steps));
  for (int64_t s = 0; s < steps; ++s) {
    tables[s] = 1e-3 * (1.0 + 0.1 * static_cast<double>(s));
    tables[steps + s] = 1.0 - tables[s] * 0.01;
    tables[2 * steps + s] = 1.0 - std::pow(0.9, static_cast<double>(s + 1));
    tables[3 * steps + s] = std::sqrt(1.0 - std::pow(0.98, static_cast<double>(s + 1)));
  }
  for (const bool dynamic : {false, true})
    for (const double clip : {0.0, 1.0}) {
      SCOPED_TRACE(::testing::Message() << "dynamic " << dynamic << ", clip " << clip);
      coco::kernels::StepControlSettings settings;
      settings.clip_norm = clip;
      settings.seed_divisor = 3.0;
      settings.dynamic_scale = dynamic ? 1 : 0;
      settings.growth_interval = 2;
      settings.hysteresis = 2;
      settings.min_scale = 1024.0;
      settings.table_steps = steps;
      StepState cpu_state;
      cpu_state.loss_scale = dynamic ? 65536.0 : 1.0;
      cpu_state.hysteresis_left = dynamic ? 2 : 0;
      GuardedDeviceBuffer<double> device_tables(tables);
      const double* t = device_tables.data();
      const coco::kernels::StepTables cuda_tables{t, t + steps, t + 2 * steps, t + 3 * steps};
      const coco::kernels::StepTables cpu_tables{tables.data(), tables.data() + steps, tables.data() + 2 * steps,
                                                 tables.data() + 3 * steps};
      GuardedDeviceBuffer<StepState> device_state(std::vector<StepState>{cpu_state});
      std::set<double> scales_seen;
      for (int64_t s = 0; s < steps; ++s) {
        const StepCase& c = cases[static_cast<size_t>(s)];
        double sum_sq = c.sum_sq, loss = c.loss_sum;
        int32_t flag = c.nonfinite;
        float seed = -1.0f;
        cpu_state.force_skip = c.force_skip;
        coco::kernels::cpu::decide_step({&sum_sq, &flag, &loss, &seed}, cpu_tables, settings, cpu_state);

        GuardedDeviceBuffer<double> device_sum(std::vector<double>{c.sum_sq}), device_loss(std::vector<double>{loss});
        GuardedDeviceBuffer<int32_t> device_flag(std::vector<int32_t>{c.nonfinite});
        GuardedDeviceBuffer<float> device_seed(std::vector<float>{-1.0f});
        if (c.force_skip) coco::kernels::cuda::force_skip(device_state.data(), nullptr);
        coco::kernels::cuda::decide_step(
            {device_sum.data(), device_flag.data(), device_loss.data(), device_seed.data()}, cuda_tables, settings,
            device_state.data(), nullptr);
        const StepState cuda_state = device_state.download()[0];
        expect_same_state(cpu_state, cuda_state, static_cast<int>(s));
        EXPECT_EQ(device_seed.download()[0], seed);
        EXPECT_EQ(seed, cpu_state.backward_seed);
        EXPECT_TRUE(device_state.guards_intact() && device_seed.guards_intact());
        scales_seen.insert(cpu_state.loss_scale);
      }
      // What the sequence must have done: 5 skips (flag, NaN loss, forced, Inf norm, Inf loss).
      EXPECT_EQ(cpu_state.skipped_total, 5);
      EXPECT_EQ(cpu_state.applied, steps - 5);
      EXPECT_EQ(cpu_state.step, steps);
      if (dynamic) {
        EXPECT_EQ(cpu_state.scaler_skipped, 5);
        EXPECT_GE(scales_seen.size(), 3u) << "the scale grew and backed off";
      }
      EXPECT_THROW(coco::kernels::cpu::decide_step({&tables[0], &settings.dynamic_scale, nullptr, nullptr}, cpu_tables,
                                                   settings, cpu_state),
                   std::invalid_argument);  // the tables are used up
    }
}

// ------------------------------------------------------------------------------------------------
// optim::StepControl against the host-decided step.

struct Model {
  std::vector<Tensor> masters;
  std::vector<Tensor> working;  // bf16 copies (mixed precision) or empty
  std::unique_ptr<coco::optim::AdamW> adamw;
};

Model make_model(Device device, bool bf16) {
  Model m;
  const std::vector<int64_t> sizes = {5000, 37, 4096, 1};
  std::vector<coco::optim::AdamWParam> params;
  for (size_t i = 0; i < sizes.size(); ++i) {
    const std::vector<float> values = coco::testing::random_floats(static_cast<size_t>(sizes[i]), 90 + i, -1.0f, 1.0f);
    Tensor master = Tensor::from_vector(values, Shape{sizes[i]}, device);
    Tensor work = bf16 ? master.to(DType::bf16) : Tensor();
    if (bf16) work.set_requires_grad(true).set_grad_dtype(DType::f32);
    std::string name = "p";  // (not "p" + to_string: GCC 12's -Wrestrict false positive once this is inlined)
    name += std::to_string(i);
    params.push_back({name, master, work, Tensor(), i != 1});
    m.masters.push_back(master);
    m.working.push_back(work);
  }
  m.adamw = std::make_unique<coco::optim::AdamW>(params, coco::optim::AdamWOptions{0.9, 0.98, 1e-6, 0.01});
  return m;
}

// Gradients of step s: random, scaled by the loss scale, with a NaN when `nonfinite`.
void set_gradients(Model& m, int step, double loss_scale, bool nonfinite) {
  for (size_t i = 0; i < m.masters.size(); ++i) {
    Tensor source = m.working[i].defined() ? m.working[i] : m.masters[i];
    std::vector<float> g = coco::testing::random_floats(static_cast<size_t>(source.numel()),
                                                        1000 * step + static_cast<unsigned>(i), -3.0f, 3.0f);
    for (float& x : g) x = static_cast<float>(x * loss_scale);
    if (nonfinite && i == 2) g[17] = std::numeric_limits<float>::quiet_NaN();
    source.set_requires_grad(true);
    source.autograd_meta()->grad = Tensor::from_vector(g, source.shape(), source.device());
  }
}

std::vector<std::vector<float>> snapshot(const Model& m) {
  std::vector<std::vector<float>> out;
  for (const Tensor& t : m.masters) out.push_back(t.to_vector<float>());
  return out;
}

TEST(StepControl, AppliesTheSameUpdatesAsTheHostDecidedStep) {
  const int steps = 7;
  const std::vector<bool> bad = {false, false, true, false, true, false, false};
  std::vector<double> lr(steps);
  for (int s = 0; s < steps; ++s) lr[s] = 1e-2 / (1 + s);
  for (const Device device : {Device::cpu, Device::cuda})
    for (const bool f16_scaling : {false, true}) {
      SCOPED_TRACE(::testing::Message() << coco::device_name(device) << (f16_scaling ? ", loss scaling" : ""));
      Model host = make_model(device, f16_scaling);
      Model controlled = make_model(device, f16_scaling);
      coco::optim::GradScalerOptions scaler_options;
      scaler_options.growth_interval = 2;
      coco::optim::GradScaler scaler(scaler_options);
      coco::optim::StepControlOptions options;
      options.lr = lr;
      options.clip_norm = 1.0;
      options.grad_accum = 2;
      if (f16_scaling) options.loss_scaler = scaler_options;
      coco::optim::StepControl control(device, options, controlled.adamw->options());
      double seed_expected = (f16_scaling ? scaler.scale() : 1.0) / 2;
      for (int s = 0; s < steps; ++s) {
        const double scale = f16_scaling ? scaler.scale() : 1.0;
        EXPECT_EQ(control.backward_seed().to_vector<float>()[0], static_cast<float>(seed_expected)) << s;
        set_gradients(host, s, scale, bad[s]);
        set_gradients(controlled, s, scale, bad[s]);
        // The host-decided step, as the trainer took it.
        const coco::optim::GradientStats stats = coco::optim::gradient_stats(host.adamw->gradients(), 1.0 / scale);
        if (!stats.nonfinite) host.adamw->step(lr[s], coco::kernels::clip_factor(stats.norm, 1.0) / scale);
        if (f16_scaling) scaler.update(stats.nonfinite);
        seed_expected = (f16_scaling ? scaler.scale() : 1.0) / 2;
        // The device-decided one.
        control.decide(controlled.adamw->gradients());
        controlled.adamw->step(control);
        const StepState state = control.read();
        EXPECT_EQ(state.apply, bad[s] ? 0 : 1) << s;
        if (!bad[s]) {
          EXPECT_EQ(state.grad_norm, stats.norm) << s;
        }
        EXPECT_EQ(state.loss_scale, f16_scaling ? scaler.scale() : 1.0) << s;
        EXPECT_EQ(snapshot(controlled), snapshot(host)) << "step " << s;
        if (!controlled.working[0].defined()) continue;
        for (size_t i = 0; i < controlled.working.size(); ++i)
          EXPECT_EQ(controlled.working[i].to(DType::f32).to_vector<float>(),
                    host.working[i].to(DType::f32).to_vector<float>());
      }
      controlled.adamw->sync_step_counts(control.read().applied);
      for (size_t i = 0; i < controlled.masters.size(); ++i)
        EXPECT_EQ(controlled.adamw->step_count(i), host.adamw->step_count(i));
      EXPECT_EQ(control.read().skipped_total, 2);
      // The schedule is used up: one more decision is refused before anything is launched.
      EXPECT_THROW(control.decide(controlled.adamw->gradients()), std::out_of_range);
      // A controlled parameter's count lives on the device: the host-decided step refuses it.
      EXPECT_THROW(controlled.adamw->step(1e-3), std::invalid_argument);
    }
}

// A decision from a part of the gradients whose statistics a combine function completes (what ZeRO-1 does
// with the shard statistics of every rank, summed by an all-reduce) decides what the whole gradients decide:
// the same skip and the norm to the rounding of the sum's order; a NaN in the other part skips the step.
TEST(StepControl, CombinedStatisticsDecideLikeTheWholeGradients) {
  for (const Device device : {Device::cpu, Device::cuda}) {
    SCOPED_TRACE(coco::device_name(device));
    Model m = make_model(device, false);
    coco::optim::StepControlOptions options;
    options.lr.assign(3, 1e-3);
    options.clip_norm = 1.0;
    coco::optim::StepControl whole(device, options, m.adamw->options());
    coco::optim::StepControl part(device, options, m.adamw->options());
    for (int s = 0; s < 3; ++s) {
      const bool bad = s == 1;  // the NaN is in gradient 2: the other part
      set_gradients(m, s, 1.0, bad);
      const std::vector<Tensor> grads = m.adamw->gradients();
      const std::vector<Tensor> mine(grads.begin(), grads.begin() + 2), other(grads.begin() + 2, grads.end());
      const coco::optim::GradientStats other_stats = coco::optim::gradient_stats(other, 1.0);
      int calls = 0;
      part.decide(mine, Tensor(), [&](const Tensor& sum_sq, const Tensor& nonfinite) {
        ++calls;
        ASSERT_EQ(sum_sq.dtype(), DType::f64);
        ASSERT_EQ(nonfinite.dtype(), DType::i32);
        const double combined = sum_sq.to_vector<double>()[0] + other_stats.norm * other_stats.norm;
        const int32_t flag = nonfinite.to_vector<int32_t>()[0] + (other_stats.nonfinite ? 1 : 0);
        Tensor sum_sq_out = sum_sq, nonfinite_out = nonfinite;  // handles to the control's buffers
        sum_sq_out.copy_from(Tensor::from_vector(std::vector<double>{combined}, Shape{1}, Device::cpu));
        nonfinite_out.copy_from(Tensor::from_vector(std::vector<int32_t>{flag}, Shape{1}, Device::cpu));
      });
      whole.decide(grads);
      EXPECT_EQ(calls, 1);
      const StepState a = whole.read(), b = part.read();
      EXPECT_EQ(a.apply, bad ? 0 : 1) << s;
      EXPECT_EQ(b.apply, a.apply) << s;
      EXPECT_EQ(b.skipped_total, a.skipped_total) << s;
      if (!bad) {
        EXPECT_NEAR(b.grad_norm, a.grad_norm, 1e-12 * a.grad_norm) << s;
        EXPECT_NEAR(b.grad_scale, a.grad_scale, 1e-12 * a.grad_scale) << s;
      }
    }
  }
}

// A state loaded while the control counts (ZeRO-1's re-layout): its count is not the one the control started
// from, so step(control) refuses it until adopt_control_counts() hands the count to the control.
TEST(StepControl, AStateLoadedMidRunIsAdoptedByTheControl) {
  Model m = make_model(Device::cpu, false);
  coco::optim::StepControlOptions options;
  options.lr.assign(3, 1e-3);
  coco::optim::StepControl control(Device::cpu, options, m.adamw->options());
  set_gradients(m, 0, 1.0, false);
  control.decide(m.adamw->gradients());
  m.adamw->step(control);
  for (size_t i = 0; i < m.masters.size(); ++i)
    m.adamw->set_state(i, 1, m.adamw->exp_avg(i).clone(), m.adamw->exp_avg_sq(i).clone());
  control.decide(m.adamw->gradients());
  EXPECT_THROW(m.adamw->step(control), std::invalid_argument);
  m.adamw->adopt_control_counts();
  m.adamw->step(control);
  m.adamw->sync_step_counts(control.read().applied);
  for (size_t i = 0; i < m.masters.size(); ++i) EXPECT_EQ(m.adamw->step_count(i), 2);
}

TEST(StepControl, ASteadyStepOnCudaReadsNothingBack) {
  Model m = make_model(Device::cuda, false);
  coco::optim::StepControlOptions options;
  options.lr.assign(4, 1e-3);
  coco::optim::StepControl control(Device::cuda, options, m.adamw->options());
  set_gradients(m, 0, 1.0, false);
  control.decide(m.adamw->gradients());  // warm-up: descriptors uploaded, scratch allocated
  m.adamw->step(control);
  coco::runtime::StepProfile profile;
  control.decide(m.adamw->gradients());
  m.adamw->step(control);
  const coco::runtime::Counters step = profile.elapsed();
  EXPECT_EQ(step.d2h_copies, 0u) << step.describe();
  EXPECT_EQ(step.h2d_copies, 0u) << step.describe();
  EXPECT_EQ(step.synchronizations(), 0u) << step.describe();
  EXPECT_EQ(step.device_mallocs, 0u) << step.describe();
  EXPECT_EQ(control.read().applied, 2);
}

TEST(StepControl, RefusesBadSchedulesAndCounters) {
  const coco::optim::AdamWOptions adam{0.9, 0.98, 1e-6, 0.01};
  coco::optim::StepControlOptions options;
  EXPECT_THROW(coco::optim::StepControl(Device::cpu, options, adam), std::invalid_argument);  // empty table
  options.lr.assign(static_cast<size_t>(coco::optim::StepControl::kMaxSteps + 1), 1e-3);
  try {
    coco::optim::StepControl control(Device::cpu, options, adam);
    ADD_FAILURE() << "a schedule longer than kMaxSteps was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("longer than"), std::string::npos) << e.what();
  }
  options.lr = {1e-3, std::nan(""), 1e-3};
  EXPECT_THROW(coco::optim::StepControl(Device::cpu, options, adam), std::invalid_argument);
  options.lr = {1e-3, 1e-3, 1e-3};
  coco::optim::StepControl control(Device::cpu, options, adam);
  StepState state = control.initial_state();
  state.step = 2;
  state.applied = 3;  // more updates than steps
  EXPECT_THROW(control.load(state), std::invalid_argument);
  state.applied = 1;
  state.skipped_total = 1;
  control.load(state);
  EXPECT_EQ(control.steps(), 2);
  EXPECT_EQ(control.applied_at_start(), 1);
  EXPECT_EQ(control.read().applied, 1);
}

}  // namespace
