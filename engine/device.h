// Where a tensor lives, and the stream CUDA work is issued on.
#pragma once
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco {

enum class Device : uint8_t { cpu, cuda };

constexpr const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

// True when a CUDA device can run kernels: a real GPU in `gpu` mode, always in `emulated` mode.
bool cuda_available();

// The stream this thread issues CUDA work on (nullptr: the legacy default stream).
cudaStream_t current_stream();

// Makes `stream` the current stream of this thread for the scope's lifetime.
class StreamScope {
 public:
  explicit StreamScope(cudaStream_t stream);
  ~StreamScope();
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  cudaStream_t previous_;
};

// Owning wrappers; every call is checked.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  void synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(cudaStream_t stream);
  void synchronize() const;
  // True when the work before the last record() has completed (or the event was never recorded);
  // never waits.
  bool query() const;
  // For destructors: waits for the work before the last record() if it has not completed, and never throws (after a
  // kernel fault every CUDA call fails, "sticky", and a destructor can only let the error reach the caller through
  // the calls that follow).
  void wait_if_pending() const noexcept;
  // Milliseconds between `start` and this event (both recorded and complete).
  float elapsed_ms_since(const Event& start) const;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace coco
