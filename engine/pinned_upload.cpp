#include "engine/pinned_upload.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "engine/runtime/check.h"
#include "engine/runtime/cuda_calls.h"

namespace coco {

PinnedUpload::PinnedUpload(int slots) {
  if (slots < 1) throw std::invalid_argument("PinnedUpload: slots must be >= 1, got " + std::to_string(slots));
  slots_.resize(static_cast<size_t>(slots));
}

PinnedUpload::~PinnedUpload() {
  for (Slot& slot : slots_) {
    // The device may still be reading the pinned bytes: wait before giving them back.
    if (slot.copied) slot.copied->wait_if_pending();
    if (slot.pinned) (void)runtime::host_free(slot.pinned);
  }
}

Tensor PinnedUpload::upload(const void* host, const Shape& shape, DType dtype) {
  const size_t bytes = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  if (bytes > 0 && !host) throw std::invalid_argument("PinnedUpload::upload: null host pointer for " + shape.str());
  Slot& slot = slots_[next_];
  next_ = (next_ + 1) % slots_.size();
  if (!slot.copied) slot.copied = std::make_unique<Event>();
  // The slot's previous copy must have left the pinned buffer before the host overwrites it.
  if (!slot.copied->query()) {
    ++waits_;
    slot.copied->synchronize();
  }
  if (bytes > slot.capacity) {
    if (slot.pinned) COCO_CUDA_CHECK(runtime::host_free(slot.pinned));
    slot.pinned = nullptr;
    slot.capacity = 0;
    COCO_CUDA_CHECK(runtime::host_malloc(&slot.pinned, bytes));
    slot.capacity = bytes;
  }
  if (!slot.device.defined() || slot.device.shape() != shape || slot.device.dtype() != dtype)
    slot.device = Tensor::empty(shape, dtype, Device::cuda);
  if (bytes == 0) return slot.device;
  std::memcpy(slot.pinned, host, bytes);
  COCO_CUDA_CHECK(
      runtime::memcpy_async(slot.device.data(), slot.pinned, bytes, cudaMemcpyHostToDevice, current_stream()));
  slot.copied->record(current_stream());
  return slot.device;
}

}  // namespace coco
