// Validation of device data without a host round trip. Outside a DeviceChecks scope, an op that
// validates device data (gather_rows' index range, cross_entropy's target range, embedding's
// token ids) reads its error
// count back at once and throws: one device-to-host copy and one synchronisation per call. Inside a
// scope those counts accumulate into the scope's device counters instead, and the owner reads them
// when it reads the device anyway (a training loop at its logging cadence):
//
//   ops::DeviceChecks checks(Device::cuda);   // installed for this thread until destroyed
//   ...many steps...
//   checks.verify();                          // one copy; throws TensorError naming each failed check
//
// CPU tensors are validated immediately either way (their checks cost no synchronisation). Scopes nest;
// the innermost one collects.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace coco::ops {

class DeviceChecks {
 public:
  enum Check : int { gather_index = 0, cross_entropy_target, embedding_id, kChecks };

  explicit DeviceChecks(Device device = Device::cuda);
  ~DeviceChecks();
  DeviceChecks(const DeviceChecks&) = delete;
  DeviceChecks& operator=(const DeviceChecks&) = delete;

  // The innermost scope of this thread collecting checks for `device`, or nullptr.
  static DeviceChecks* active(Device device);

  // (1) i32 counter of `check` on the scope's device: kernels add their error counts to it.
  int32_t* counter(Check check);
  // Adds the i32 element `count` (a device pointer) to the counter of `check` (one launch).
  void add(Check check, const int32_t* count);
  // Adds 1 to the counter of `check` when the u32 at `flag` (a device pointer) is not `unset`.
  void add_flag(Check check, const uint32_t* flag, uint32_t unset);

  // Reads the counters (one device-to-host copy), zeroes them and throws TensorError naming every
  // check that failed since the last verify().
  void verify();
  // The same from counts the owner copied off the device itself (kChecks values of counters(), copied
  // after the work they cover, e.g. with a training step's record, so that the step waits once): when a
  // count is not zero, zeroes the counters (one memset) and throws as verify() does.
  // std::invalid_argument for another number of counts.
  void verify(const std::vector<int32_t>& counts);
  // The (kChecks) i32 counters on the scope's device, for an asynchronous copy.
  const Tensor& counters() const { return counters_; }

 private:
  Device device_;
  Tensor counters_;  // (kChecks) i32
  DeviceChecks* previous_;
};

}  // namespace coco::ops
