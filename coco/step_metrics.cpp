#include "coco/step_metrics.h"

#include <vector>

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

StepMetrics::StepMetrics(Device device) : sums_(Tensor::zeros(Shape{kSlots}, DType::f64, device)) {}

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

StepSums StepMetrics::read() const {
  const std::vector<double> v = sums_.to_vector<double>();
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

}  // namespace coco::objective
