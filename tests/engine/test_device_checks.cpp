// ops::DeviceChecks: inside a scope, gather_rows, cross_entropy and embedding validate CUDA data
// without a device-to-host copy or a synchronisation, and verify() reports what failed; outside a
// scope they throw at the call as before. Also the device-side helpers the objective uses instead of
// host round trips: key/length masks, count_nonzero and gather_scalars, CPU against CUDA.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/ops/device_checks.h"
#include "engine/ops/embedding.h"
#include "engine/ops/gather.h"
#include "engine/ops/losses.h"
#include "engine/ops/masking.h"
#include "engine/ops/scalars.h"
#include "engine/runtime/counters.h"

namespace coco {
namespace {

Tensor cuda_rows() { return Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, Shape{3, 2}, Device::cuda); }

TEST(DeviceChecks, ValidInputsPassWithoutReadingTheDevice) {
  ops::DeviceChecks checks(Device::cuda);
  const Tensor index = Tensor::from_vector(std::vector<int32_t>{2, 0}, Shape{2}, Device::cuda);
  const Tensor targets = Tensor::from_vector(std::vector<int32_t>{1, -100}, Shape{2}, Device::cuda);
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{0, 2, 1}, Shape{1, 3}, Device::cuda);
  const Tensor table = cuda_rows();
  runtime::StepProfile profile;
  const Tensor rows = ops::gather_rows(table, index);
  const ops::LossResult ce = ops::cross_entropy(rows, targets);
  const Tensor embedded = ops::embedding(ids, table);
  const runtime::Counters counters = profile.elapsed();
  EXPECT_EQ(counters.d2h_copies, 0u) << counters.describe();
  EXPECT_EQ(counters.synchronizations(), 0u) << counters.describe();
  EXPECT_NO_THROW(checks.verify());
  EXPECT_EQ(rows.to_vector<float>(), (std::vector<float>{5, 6, 1, 2}));
  EXPECT_EQ(ce.count(), 1);
}

TEST(DeviceChecks, FailuresAreReportedByVerify) {
  ops::DeviceChecks checks(Device::cuda);
  const Tensor bad_index = Tensor::from_vector(std::vector<int32_t>{3, 0, -2}, Shape{3}, Device::cuda);
  const Tensor rows = ops::gather_rows(cuda_rows(), bad_index);                // no throw: counted on the device
  EXPECT_EQ(rows.to_vector<float>(), (std::vector<float>{0, 0, 1, 2, 0, 0}));  // bad rows are zero
  try {
    checks.verify();
    FAIL() << "verify() accepted two bad gather indices";
  } catch (const TensorError& e) {
    EXPECT_NE(std::string(e.what()).find("2 gather_rows index"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(checks.verify());  // verify() resets the counters

  const Tensor logits = cuda_rows();
  const Tensor bad_targets = Tensor::from_vector(std::vector<int32_t>{0, 7, 1}, Shape{3}, Device::cuda);
  (void)ops::cross_entropy(logits, bad_targets);
  const Tensor bad_ids = Tensor::from_vector(std::vector<int32_t>{0, 9}, Shape{1, 2}, Device::cuda);
  (void)ops::embedding(bad_ids, cuda_rows());
  try {
    checks.verify();
    FAIL() << "verify() accepted a bad target and a bad token id";
  } catch (const TensorError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("1 cross-entropy target"), std::string::npos) << message;
    EXPECT_NE(message.find("1 embedding lookup"), std::string::npos) << message;
    EXPECT_EQ(message.find("gather_rows"), std::string::npos) << message;
  }
}

TEST(DeviceChecks, OutsideAScopeOpsThrowAtTheCall) {
  const Tensor bad_index = Tensor::from_vector(std::vector<int32_t>{3}, Shape{1}, Device::cuda);
  EXPECT_THROW(ops::gather_rows(cuda_rows(), bad_index), TensorError);
  {
    ops::DeviceChecks cpu_scope(Device::cpu);  // a CPU scope does not defer CUDA checks
    EXPECT_THROW(ops::gather_rows(cuda_rows(), bad_index), TensorError);
  }
  const Tensor bad_targets = Tensor::from_vector(std::vector<int32_t>{7, 0, 0}, Shape{3}, Device::cuda);
  EXPECT_THROW(ops::cross_entropy(cuda_rows(), bad_targets), TensorError);
}

TEST(DeviceHelpers, MasksCountsAndScalarsMatchOnBothDevices) {
  const std::vector<int32_t> tokens = {5, 6, 0, 0, 7, 0, 0, 0};
  const std::vector<int32_t> lengths = {1, 3};
  std::vector<std::vector<double>> results;
  for (Device device : {Device::cpu, Device::cuda}) {
    const Tensor t = Tensor::from_vector(tokens, Shape{2, 4}, device);
    const Tensor key = ops::key_mask(t, 0);
    const Tensor crop = ops::length_mask(Tensor::from_vector(lengths, Shape{2}, device), 4);
    const Tensor nonzero = ops::count_nonzero(key);
    Tensor gathered = Tensor::empty(Shape{3}, DType::f64, device);
    ops::gather_scalars({{nonzero, 0, 2.0}, {Tensor(), 0, 1.0}, {key.to(DType::f32), 4, 0.5}}, gathered,
                        ops::ScalarUpdate::assign);
    ops::gather_scalars({{nonzero, 0, 1.0}, {Tensor(), 0, 1.0}, {Tensor(), 0, 1.0}}, gathered,
                        ops::ScalarUpdate::accumulate);
    const auto key_values = key.to_vector<uint8_t>(), crop_values = crop.to_vector<uint8_t>();
    EXPECT_EQ(key_values, (std::vector<uint8_t>{1, 1, 0, 0, 1, 0, 0, 0}));
    EXPECT_EQ(crop_values, (std::vector<uint8_t>{1, 0, 0, 0, 1, 1, 1, 0}));
    results.push_back(gathered.to_vector<double>());
  }
  EXPECT_EQ(results[0], (std::vector<double>{9.0, 0.0, 0.5}));
  EXPECT_EQ(results[0], results[1]);
  Tensor wrong = Tensor::empty(Shape{2}, DType::f64, Device::cpu);
  EXPECT_THROW(ops::gather_scalars({{Tensor(), 0, 1.0}}, wrong, ops::ScalarUpdate::assign), TensorError);
  Tensor one = Tensor::empty(Shape{1}, DType::f64, Device::cpu);
  const Tensor small = Tensor::zeros(Shape{1}, DType::i32, Device::cpu);
  EXPECT_THROW(ops::gather_scalars({{small, 1, 1.0}}, one, ops::ScalarUpdate::assign), TensorError);
}

}  // namespace
}  // namespace coco
