#include "engine/ops/device_checks.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "engine/device.h"
#include "kernels/device_metrics.h"

namespace coco::ops {
namespace {

thread_local DeviceChecks* t_innermost = nullptr;

const char* describe_check(DeviceChecks::Check check) {
  switch (check) {
    case DeviceChecks::gather_index:
      return "gather_rows index value(s) outside the source's rows";
    case DeviceChecks::cross_entropy_target:
      return "cross-entropy target(s) outside [0, V) that are not the ignore index";
    case DeviceChecks::embedding_id:
      return "embedding lookup(s) with a token id outside the vocabulary";
    case DeviceChecks::kChecks:
      break;
  }
  return "?";
}

}  // namespace

DeviceChecks::DeviceChecks(Device device)
    : device_(device), counters_(Tensor::zeros(Shape{kChecks}, DType::i32, device)), previous_(t_innermost) {
  t_innermost = this;
}

DeviceChecks::~DeviceChecks() { t_innermost = previous_; }

DeviceChecks* DeviceChecks::active(Device device) {
  for (DeviceChecks* scope = t_innermost; scope; scope = scope->previous_)
    if (scope->device_ == device) return scope;
  return nullptr;
}

int32_t* DeviceChecks::counter(Check check) { return counters_.data_as<int32_t>() + check; }

void DeviceChecks::add(Check check, const int32_t* count) {
  if (device_ == Device::cuda)
    kernels::cuda::add_count(count, counter(check), current_stream());
  else
    *counter(check) += *count;
}

void DeviceChecks::add_flag(Check check, const uint32_t* flag, uint32_t unset) {
  if (device_ == Device::cuda)
    kernels::cuda::add_flag(flag, unset, counter(check), current_stream());
  else
    *counter(check) += *flag != unset ? 1 : 0;
}

void DeviceChecks::verify() { verify(counters_.to_vector<int32_t>()); }

void DeviceChecks::verify(const std::vector<int32_t>& counts) {
  if (counts.size() != static_cast<size_t>(kChecks))
    throw std::invalid_argument("DeviceChecks::verify: expected " + std::to_string(kChecks) + " counts, got " +
                                std::to_string(counts.size()));
  std::string failures;
  for (int c = 0; c < kChecks; ++c)
    if (counts[static_cast<size_t>(c)] != 0)
      failures += (failures.empty() ? "" : "; ") + std::to_string(counts[static_cast<size_t>(c)]) + " " +
                  describe_check(static_cast<Check>(c));
  if (failures.empty()) return;
  counters_.zero_();
  throw TensorError("device checks failed: " + failures);
}

}  // namespace coco::ops
