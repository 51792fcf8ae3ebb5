#include "coco/step_metrics.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <vector>

#include "engine/runtime/check.h"
#include "engine/runtime/cuda_calls.h"

#include "engine/ops/scalars.h"

namespace coco::objective {
namespace {

enum Slot : int {
  kLoss,
  kMlmLoss,
  kRtdLoss,
  kClmLoss,
  kClLoss,
  kSumMasked,
  kSumMlmCorrect,
  kSumRtdCorrect,
  kSumRtdCount,
  kSumClCorrect,
  kSumClCount,
  kSumClmCorrect,
  kSlots
};

}  // namespace

StepMetrics::StepMetrics(Device device) : sums_(Tensor::zeros(Shape{StepMetrics::kSlots}, DType::f64, device)) {}

void StepMetrics::add(const Outputs& out, int64_t rows) {
  const double w = static_cast<double>(rows);
  std::vector<ops::ScalarRef> sources(kSlots);
  sources[kLoss] = {out.loss, 0, w};
  sources[kMlmLoss] = {out.mlm_loss, 0, w};
  sources[kRtdLoss] = {out.rtd_loss, 0, w};
  sources[kClmLoss] = {out.clm_loss, 0, w};
  sources[kClLoss] = {out.cl_loss, 0, w};
  sources[kSumMasked] = {out.counts, kMasked};
  sources[kSumMlmCorrect] = {out.counts, kMlmCorrect};
  sources[kSumRtdCorrect] = {out.counts, kRtdCorrect};
  sources[kSumRtdCount] = {out.counts, kRtdCount};
  sources[kSumClCorrect] = {out.counts, kClCorrect};
  sources[kSumClCount] = {out.counts, kClCount};
  sources[kSumClmCorrect] = {out.counts, kClmCorrect};
  ops::gather_scalars(sources, sums_, ops::ScalarUpdate::accumulate);
}

static_assert(StepMetrics::kSlots == kSlots);

StepSums StepMetrics::read() const {
  const std::vector<double> v = sums_.to_vector<double>();
  return decode(v.data());
}

Tensor StepMetrics::loss_sum() const { return sums_.rows(kLoss, kLoss + 1); }

StepSums StepMetrics::decode(const double* v) {
  const auto count = [&](Slot slot) { return static_cast<int64_t>(v[static_cast<size_t>(slot)]); };
  StepSums s;
  s.loss = v[kLoss];
  s.mlm = v[kMlmLoss];
  s.rtd = v[kRtdLoss];
  s.clm = v[kClmLoss];
  s.cl = v[kClLoss];
  s.masked = count(kSumMasked);
  s.mlm_correct = count(kSumMlmCorrect);
  s.rtd_correct = count(kSumRtdCorrect);
  s.rtd_count = count(kSumRtdCount);
  s.cl_correct = count(kSumClCorrect);
  s.cl_count = count(kSumClCount);
  s.clm_correct = count(kSumClmCorrect);
  return s;
}

void StepMetrics::reset() { sums_.zero_(); }

// ------------------------------------------------------------------------------------ StepRecordCopy

namespace {
constexpr size_t kSumsBytes = sizeof(double) * StepMetrics::kSlots;
constexpr size_t kRecordBytes =
    kSumsBytes + sizeof(kernels::StepState) + sizeof(int32_t) * static_cast<size_t>(StepRecordCopy::kMaxChecks);
}  // namespace

StepRecordCopy::StepRecordCopy(Device device) : device_(device) {
  if (device_ == Device::cuda) {
    COCO_CUDA_CHECK(runtime::host_malloc(&pinned_, kRecordBytes));
    copied_ = std::make_unique<Event>();
  } else {
    pinned_ = std::malloc(kRecordBytes);
    if (!pinned_) throw std::bad_alloc();
  }
}

StepRecordCopy::~StepRecordCopy() {
  if (device_ == Device::cuda) {
    if (copied_) copied_->wait_if_pending();
    (void)runtime::host_free(pinned_);
  } else {
    std::free(pinned_);
  }
}

void StepRecordCopy::capture(const StepMetrics& metrics, const Tensor& state, const Tensor& checks) {
  if (pending_) throw std::logic_error("StepRecordCopy::capture: the previous record has not been taken");
  if (state.nbytes() != sizeof(kernels::StepState) || state.device() != device_ || metrics.sums().device() != device_)
    throw TensorError("StepRecordCopy::capture: expected a " + std::to_string(sizeof(kernels::StepState)) +
                      "-byte step state and metric sums on " + device_name(device_));
  if (checks.defined() && (checks.dtype() != DType::i32 || checks.numel() > kMaxChecks || checks.device() != device_))
    throw TensorError("StepRecordCopy::capture: expected up to " + std::to_string(kMaxChecks) +
                      " i32 check counts on " + device_name(device_) + ", got " + std::to_string(checks.numel()) + " " +
                      dtype_name(checks.dtype()) + " on " + device_name(checks.device()));
  const size_t check_bytes = checks.defined() ? checks.nbytes() : 0;
  auto* bytes = static_cast<uint8_t*>(pinned_);
  constexpr size_t kChecksAt = kSumsBytes + sizeof(kernels::StepState);
  if (device_ == Device::cuda) {
    COCO_CUDA_CHECK(
        runtime::memcpy_async(bytes, metrics.sums().data(), kSumsBytes, cudaMemcpyDeviceToHost, current_stream()));
    COCO_CUDA_CHECK(runtime::memcpy_async(bytes + kSumsBytes, state.data(), sizeof(kernels::StepState),
                                          cudaMemcpyDeviceToHost, current_stream()));
    if (check_bytes)
      COCO_CUDA_CHECK(runtime::memcpy_async(bytes + kChecksAt, checks.data(), check_bytes, cudaMemcpyDeviceToHost,
                                            current_stream()));
    copied_->record(current_stream());
  } else {
    std::memcpy(bytes, metrics.sums().data(), kSumsBytes);
    std::memcpy(bytes + kSumsBytes, state.data(), sizeof(kernels::StepState));
    if (check_bytes) std::memcpy(bytes + kChecksAt, checks.data(), check_bytes);
  }
  checks_ = checks.defined() ? checks.numel() : 0;
  pending_ = true;
}

StepRecordCopy::Record StepRecordCopy::take() {
  if (!pending_) throw std::logic_error("StepRecordCopy::take: nothing was captured");
  if (copied_ && !copied_->query()) copied_->synchronize();
  pending_ = false;
  Record r;
  double sums[StepMetrics::kSlots];
  std::memcpy(sums, pinned_, kSumsBytes);
  r.sums = StepMetrics::decode(sums);
  std::memcpy(&r.state, static_cast<const uint8_t*>(pinned_) + kSumsBytes, sizeof r.state);
  r.checks.resize(static_cast<size_t>(checks_));
  if (checks_)
    std::memcpy(r.checks.data(), static_cast<const uint8_t*>(pinned_) + kSumsBytes + sizeof r.state,
                sizeof(int32_t) * r.checks.size());
  return r;
}

}  // namespace coco::objective
