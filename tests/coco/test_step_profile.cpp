// The runtime step profile (engine/runtime/counters.h) of one training step on the (emulated) CUDA
// device: the objective's forward and backward on a tiny model, the gradients' norm and finiteness,
// and an AdamW update, measured after two warm-up steps. It holds the line of issue #14: no
// cudaMalloc once the caching allocator is warm; the objective reads nothing back (fixed-capacity
// masked rows, counts and masks on the device, validation through ops::DeviceChecks), so the step's
// only device-to-host copy is the one read of the gradients' norm and non-finite flag that decides
// the update, and its only other synchronisation is the upload of the token ids from pageable memory.
// Those two go when the skip and clip decisions move to the device and the ids to a pinned staging
// buffer; lower the ceilings then.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>

#include "coco/objective.h"
#include "coco/step_metrics.h"
#include "engine/ops/device_checks.h"
#include "engine/ops/optim.h"
#include "engine/runtime/counters.h"
#include "engine/tape.h"
#include "kernels/gradnorm.h"
#include "tests/common/tiny_configs.h"

namespace coco {
namespace {

struct Ceiling {
  const char* preset;
  uint64_t launches, synchronizations, d2h_copies;
};

void train_step(objective::CocoModel& model, optim::AdamW& adamw, objective::StepMetrics& metrics, const Tensor& tokens,
                uint64_t step) {
  Tape tape;
  objective::Outputs out;
  {
    Tape::Recording recording(tape);
    out = model.forward(tokens, step, true);
  }
  tape.backward(out.loss);
  metrics.add(out, tokens.size(0));  // the step's metric sums stay on the device
  const optim::GradientStats stats = optim::gradient_stats(adamw.gradients());  // the step's one read
  if (!stats.nonfinite) adamw.step(1e-3, kernels::clip_factor(stats.norm, 1.0));
  adamw.zero_grad();
  metrics.reset();
}

TEST(StepProfile, TrainingStepOnCudaStaysWithinItsCeilings) {
  // Measured when the counters landed (tiny configs, batch 4 x 12, emulated CUDA): paper 537 launches
  // (19 of them D2H copies), 26 stream syncs; lucidrains 439 launches (14 D2H), 21 syncs. Now: paper
  // 301 kernels + 116 GEMMs + 1 H2D + 1 D2H + 31 D2D copies + 73 memsets = 523 launches, 2 syncs;
  // lucidrains 223 + 105 + 1 + 1 + 37 + 64 = 431 launches, 2 syncs (with the metric sums' launch and
  // reset).
  const Ceiling ceilings[] = {{"paper", 523, 2, 1}, {"lucidrains", 431, 2, 1}};
  for (const Ceiling& ceiling : ceilings) {
    auto setup = testing::tiny_setup(ceiling.preset, true, 24, 8);
    std::mt19937 generator(7);
    std::uniform_int_distribution<int32_t> id(5, 23);
    std::vector<int32_t> ids(4 * 12);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = i % 12 == 0 ? 2 : id(generator);
    const Tensor tokens = Tensor::from_vector(ids, Shape{4, 12});
    objective::CocoModel model(setup.model, setup.objective, 3, Device::cuda);
    optim::AdamW adamw(model.named_parameters(), {0.9, 0.98, 1e-6, 0.01});
    objective::StepMetrics metrics(Device::cuda);
    ops::DeviceChecks checks(Device::cuda);  // validation counted on the device, read after the step
    for (uint64_t step = 0; step < 2; ++step) train_step(model, adamw, metrics, tokens, step);  // warm-up
    runtime::StepProfile profile;
    train_step(model, adamw, metrics, tokens, 2);
    const runtime::Counters step = profile.elapsed();
    EXPECT_NO_THROW(checks.verify());
    std::printf("%s step profile: %s (launches %llu, synchronizations %llu)\n", ceiling.preset, step.describe().c_str(),
                static_cast<unsigned long long>(step.launches()),
                static_cast<unsigned long long>(step.synchronizations()));
    EXPECT_EQ(step.device_mallocs, 0u) << ceiling.preset << ": " << step.describe();
    EXPECT_LE(step.launches(), ceiling.launches) << ceiling.preset << ": " << step.describe();
    EXPECT_LE(step.synchronizations(), ceiling.synchronizations) << ceiling.preset << ": " << step.describe();
    EXPECT_LE(step.d2h_copies, ceiling.d2h_copies) << ceiling.preset << ": " << step.describe();
    EXPECT_LE(step.h2d_copies, 1u) << ceiling.preset << ": only the token ids go up: " << step.describe();
  }
}

}  // namespace
}  // namespace coco
