// One CUDA graph per training step (issue #14, item 2), at the model level: the objective's forward
// and backward captured once on the (emulated) CUDA device, with the Philox step read from a counter
// in device memory (rng::StepKey::from_counter) and the token ids from a fixed device buffer, replay
// as steps s and s + 1 with new ids and give the same losses and gradients, bit for bit, as uncaptured
// runs keyed by the step value. Capture would fail (cudaErrorStreamCaptureUnsupported) on any
// synchronisation, synchronous copy or cudaMalloc inside the step; device-side validation goes to an
// ops::DeviceChecks scope, as in training.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "coco/objective.h"
#include "engine/allocator.h"
#include "engine/cuda_graph.h"
#include "engine/device.h"
#include "engine/ops/device_checks.h"
#include "engine/runtime/counters.h"
#include "engine/tape.h"
#include "tests/common/tiny_configs.h"

namespace coco {
namespace {

using objective::CocoModel;

// (4, 12) rows of random non-special ids with [CLS] first; the last two positions of row 1 are padding.
Tensor batch_ids(unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int32_t> id(5, 23);
  std::vector<int32_t> ids(4 * 12);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = i % 12 == 0 ? 2 : id(generator);
  ids[22] = ids[23] = 0;
  return Tensor::from_vector(ids, Shape{4, 12});
}

// The bits of a step's results: every loss component, then every parameter's gradient.
struct StepBits {
  std::vector<std::vector<uint8_t>> values;
  bool operator==(const StepBits&) const = default;
};

std::vector<uint8_t> bits_of(const Tensor& t) {
  const Tensor host = t.to(Device::cpu);
  std::vector<uint8_t> bytes(host.nbytes());
  std::memcpy(bytes.data(), host.data(), bytes.size());
  return bytes;
}

StepBits collect(const objective::Outputs& out, const CocoModel& model) {
  StepBits bits;
  for (const Tensor* loss : {&out.loss, &out.mlm_loss, &out.rtd_loss, &out.clm_loss, &out.cl_loss})
    if (loss->defined()) bits.values.push_back(bits_of(*loss));
  for (const NamedParameter& p : model.named_parameters())
    if (p.tensor.grad().defined()) bits.values.push_back(bits_of(p.tensor.grad()));
  return bits;
}

void zero_grads(const CocoModel& model) {
  for (const NamedParameter& p : model.named_parameters())
    if (p.tensor.grad().defined()) {
      Tensor handle = p.tensor;
      handle.zero_grad();
    }
}

// Forward and backward of one step with the step and ids given by value, uncaptured.
StepBits eager_step(CocoModel& model, const Tensor& ids, uint64_t step) {
  zero_grads(model);
  Tape tape;
  objective::Outputs out;
  {
    Tape::Recording recording(tape);
    out = model.forward(ids, step, /*training=*/true);
  }
  tape.backward(out.loss);
  return collect(out, model);
}

// The captured step: ids from `tokens`, the step from `counter`, gradients accumulated into the
// parameters' existing buffers.
objective::Outputs graph_step(CocoModel& model, const Tensor& tokens, const Tensor& counter) {
  Tape tape;
  objective::Outputs out;
  {
    Tape::Recording recording(tape);
    out = model.forward_device_tokens(tokens, rng::StepKey::from_counter(static_cast<const uint64_t*>(counter.data())),
                                      /*training=*/true);
  }
  tape.backward(out.loss);
  return out;
}

void set_counter(Tensor& counter, int64_t step) {
  counter.copy_from(Tensor::from_vector(std::vector<int64_t>{step}, Shape{1}));
}

TEST(GraphCapture, ReplayedForwardBackwardEqualsUncapturedStepsBitForBit) {
  for (const char* preset : {"paper", "lucidrains"}) {
    SCOPED_TRACE(preset);
    auto setup = testing::tiny_setup(preset, /*dropout=*/true, 24, 8);
    CocoModel model(setup.model, setup.objective, 3, Device::cuda);
    const Tensor ids_a = batch_ids(11), ids_b = batch_ids(12);
    // The reference: steps 5 and 6, uncaptured, step keys by value.
    const StepBits expected_5 = eager_step(model, ids_a, 5);
    const StepBits expected_6 = eager_step(model, ids_b, 6);
    ASSERT_NE(expected_5, expected_6);
    ASSERT_NE(eager_step(model, ids_a, 6), expected_5);  // the step changes the draws

    Stream stream;
    StreamScope scope(stream.get());
    // Validation (ids, gather indices, targets) counted on the device, read after the replays.
    ops::DeviceChecks checks(Device::cuda);
    Tensor counter = Tensor::zeros(Shape{1}, DType::i64, Device::cuda);
    Tensor tokens = model.device_tokens(ids_a);
    set_counter(counter, 5);
    zero_grads(model);
    (void)graph_step(model, tokens, counter);  // warm-up: the allocator's cache holds the step's blocks
    zero_grads(model);
    stream.synchronize();

    const AllocatorStats before = CachingAllocator::instance().stats();
    CudaGraph graph;
    objective::Outputs captured;
    graph.capture(stream.get(), [&] { captured = graph_step(model, tokens, counter); });
    EXPECT_EQ(CachingAllocator::instance().stats().backing_allocations, before.backing_allocations);
    // Nothing ran during the capture: the gradients are still zero.
    for (const NamedParameter& p : model.named_parameters()) {
      if (!p.tensor.grad().defined()) continue;
      for (double g : p.tensor.grad().to_f64()) ASSERT_EQ(g, 0.0) << p.name;
    }

    runtime::StepProfile profile;
    graph.replay(stream.get());
    const runtime::Counters replay = profile.elapsed();
    stream.synchronize();
    EXPECT_EQ(collect(captured, model), expected_5);
    EXPECT_EQ(replay.graph_launches, 1u) << replay.describe();
    EXPECT_EQ(replay.launches(), 1u) << "one graph launch, nothing else: " << replay.describe();

    // Step 6 on the next batch: new ids into the same buffer, the counter moved on, no re-capture.
    tokens.copy_from(model.device_tokens(ids_b));
    set_counter(counter, 6);
    zero_grads(model);
    graph.replay(stream.get());
    stream.synchronize();
    EXPECT_EQ(collect(captured, model), expected_6);
    EXPECT_NO_THROW(checks.verify());
  }
}

}  // namespace
}  // namespace coco
