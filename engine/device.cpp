#include "engine/device.h"

#include "engine/runtime/check.h"
#include "engine/runtime/cuda_calls.h"

namespace coco {

bool cuda_available() {
  static const bool available = [] {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) (void)cudaGetLastError();
    return status == cudaSuccess && count > 0;
  }();
  return available;
}

namespace {
thread_local cudaStream_t t_current_stream = nullptr;
}

cudaStream_t current_stream() { return t_current_stream; }

StreamScope::StreamScope(cudaStream_t stream) : previous_(t_current_stream) { t_current_stream = stream; }
StreamScope::~StreamScope() { t_current_stream = previous_; }

Stream::Stream() { COCO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
Stream::~Stream() { (void)cudaStreamDestroy(stream_); }
void Stream::synchronize() const { COCO_CUDA_CHECK(runtime::stream_synchronize(stream_)); }

Event::Event() { COCO_CUDA_CHECK(cudaEventCreate(&event_)); }
Event::~Event() { (void)cudaEventDestroy(event_); }
void Event::record(cudaStream_t stream) { COCO_CUDA_CHECK(cudaEventRecord(event_, stream)); }
void Event::synchronize() const { COCO_CUDA_CHECK(runtime::event_synchronize(event_)); }
bool Event::query() const {
  const cudaError_t status = cudaEventQuery(event_);
  if (status == cudaErrorNotReady) return false;
  COCO_CUDA_CHECK(status);
  return true;
}
void Event::wait_if_pending() const noexcept {
  if (cudaEventQuery(event_) == cudaErrorNotReady) (void)runtime::event_synchronize(event_);
}
float Event::elapsed_ms_since(const Event& start) const {
  float ms = 0.0f;
  COCO_CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
  return ms;
}

}  // namespace coco
