// Host-to-device uploads through pinned staging memory (issue #14): a copy from pageable memory makes
// the host wait for the device, one from pinned memory does not. Each upload copies the host bytes
// into a pinned slot on the host (waiting only when the device has not yet finished that slot's
// previous copy, which an event records), queues an asynchronous copy into the slot's device buffer
// and returns that buffer as a tensor.
//
// With one slot (the default) every upload of a given shape goes from the same pinned address to the
// same device address, so the copy is the same operation every step: a captured CUDA graph replays it
// after the host has refreshed the pinned bytes. More slots let the host run further ahead of the
// device at the price of varying addresses.
//
//   PinnedUpload ids(1);
//   const Tensor tokens = ids.upload(host_ids.data(), Shape{B, T}, DType::i32);   // no synchronisation
#pragma once
#include <cstddef>
#include <memory>
#include <vector>

#include "engine/device.h"
#include "engine/tensor.h"

namespace coco {

class PinnedUpload {
 public:
  // Throws std::invalid_argument for slots < 1.
  explicit PinnedUpload(int slots = 1);
  ~PinnedUpload();
  PinnedUpload(const PinnedUpload&) = delete;
  PinnedUpload& operator=(const PinnedUpload&) = delete;

  // The `shape` x `dtype` bytes at `host` as a CUDA tensor, copied on the current stream. The tensor
  // is the slot's buffer: it holds these values until the slot is used again (`slots` uploads later);
  // work queued on the stream before then reads them, stream order keeps it so. A slot keeps its
  // buffers while the shape and dtype stay the same (no allocation in steady state).
  Tensor upload(const void* host, const Shape& shape, DType dtype);

  int slots() const { return static_cast<int>(slots_.size()); }
  // Uploads that had to wait for the device to finish with their slot.
  int64_t waits() const { return waits_; }

 private:
  struct Slot {
    void* pinned = nullptr;
    size_t capacity = 0;
    Tensor device;
    std::unique_ptr<Event> copied;  // recorded after the slot's last copy
  };
  std::vector<Slot> slots_;
  size_t next_ = 0;
  int64_t waits_ = 0;
};

}  // namespace coco
