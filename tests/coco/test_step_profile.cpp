// The runtime step profile (engine/runtime/counters.h) of one training step on the (emulated) CUDA
// device: the objective's forward and backward on a tiny model, gradient clipping, the non-finite
// check and an AdamW update, measured after two warm-up steps. It holds today's line: no cudaMalloc
// once the caching allocator is warm, and at most the stated launches, synchronisations and
// device-to-host copies. Issue #14 brings the synchronisations and device-to-host copies of a
// non-logging step to zero; lower the ceilings as that lands.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>

#include "coco/objective.h"
#include "engine/ops/device_checks.h"
#include "engine/ops/optim.h"
#include "engine/runtime/counters.h"
#include "engine/tape.h"
#include "tests/common/tiny_configs.h"

namespace coco {
namespace {

struct Ceiling {
  const char* preset;
  uint64_t launches, synchronizations, d2h_copies;
};

void train_step(objective::CocoModel& model, optim::AdamW& adamw, const Tensor& tokens, uint64_t step) {
  Tape tape;
  objective::Outputs out;
  {
    Tape::Recording recording(tape);
    out = model.forward(tokens, step, true);
  }
  tape.backward(out.loss);
  const std::vector<Tensor> gradients = adamw.gradients();
  const optim::ClipResult clip = optim::clip_grad_norm(gradients, 1.0);
  if (!optim::has_nonfinite(gradients)) adamw.step(1e-3, clip.factor);
  adamw.zero_grad();
}

TEST(StepProfile, TrainingStepOnCudaStaysWithinItsCeilings) {
  // Measured when the counters landed (tiny configs, batch 4 x 12, emulated CUDA): paper 288 kernels +
  // 116 GEMMs + 7 H2D + 19 D2H + 31 D2D copies + 76 memsets = 537 launches, 26 stream syncs;
  // lucidrains 212 + 105 + 7 + 14 + 37 + 64 = 439 launches, 21 stream syncs. No cudaMalloc.
  const Ceiling ceilings[] = {{"paper", 537, 26, 19}, {"lucidrains", 439, 21, 14}};
  for (const Ceiling& ceiling : ceilings) {
    auto setup = testing::tiny_setup(ceiling.preset, true, 24, 8);
    std::mt19937 generator(7);
    std::uniform_int_distribution<int32_t> id(5, 23);
    std::vector<int32_t> ids(4 * 12);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = i % 12 == 0 ? 2 : id(generator);
    const Tensor tokens = Tensor::from_vector(ids, Shape{4, 12});
    objective::CocoModel model(setup.model, setup.objective, 3, Device::cuda);
    optim::AdamW adamw(model.named_parameters(), {0.9, 0.98, 1e-6, 0.01});
    ops::DeviceChecks checks(Device::cuda);  // validation counted on the device, read after the step
    for (uint64_t step = 0; step < 2; ++step) train_step(model, adamw, tokens, step);  // warm-up
    runtime::StepProfile profile;
    train_step(model, adamw, tokens, 2);
    const runtime::Counters step = profile.elapsed();
    EXPECT_NO_THROW(checks.verify());
    std::printf("%s step profile: %s (launches %llu, synchronizations %llu)\n", ceiling.preset, step.describe().c_str(),
                static_cast<unsigned long long>(step.launches()),
                static_cast<unsigned long long>(step.synchronizations()));
    EXPECT_EQ(step.device_mallocs, 0u) << ceiling.preset << ": " << step.describe();
    EXPECT_LE(step.launches(), ceiling.launches) << ceiling.preset << ": " << step.describe();
    EXPECT_LE(step.synchronizations(), ceiling.synchronizations) << ceiling.preset << ": " << step.describe();
    EXPECT_LE(step.d2h_copies, ceiling.d2h_copies) << ceiling.preset << ": " << step.describe();
  }
}

}  // namespace
}  // namespace coco
