#include "engine/runtime/counters.h"

#include <atomic>

#include "engine/runtime/cuda_calls.h"

namespace coco::runtime {
namespace {

// One relaxed atomic per counter; every field of Counters has one, in the same order.
struct Live {
#define COCO_COUNTER_FIELD(name, description) std::atomic<uint64_t> name{0};
  COCO_RUNTIME_COUNTERS(COCO_COUNTER_FIELD)
#undef COCO_COUNTER_FIELD
};
Live& live() {
  static Live* counters = new Live;  // never destroyed: static destructors may still free memory
  return *counters;
}

void add(std::atomic<uint64_t>& counter, uint64_t amount = 1) { counter.fetch_add(amount, std::memory_order_relaxed); }

bool on_device(const void* pointer) {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
}

void count_copy(const void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (kind == cudaMemcpyDefault) {
    const bool from_device = on_device(src), to_device = on_device(dst);
    kind = from_device ? (to_device ? cudaMemcpyDeviceToDevice : cudaMemcpyDeviceToHost)
                       : (to_device ? cudaMemcpyHostToDevice : cudaMemcpyHostToHost);
  }
  Live& c = live();
  switch (kind) {
    case cudaMemcpyHostToDevice:
      add(c.h2d_copies);
      add(c.h2d_bytes, bytes);
      break;
    case cudaMemcpyDeviceToHost:
      add(c.d2h_copies);
      add(c.d2h_bytes, bytes);
      break;
    case cudaMemcpyDeviceToDevice:
      add(c.d2d_copies);
      add(c.d2d_bytes, bytes);
      break;
    default:  // host to host: no device traffic
      break;
  }
}

}  // namespace

Counters Counters::operator-(const Counters& earlier) const {
  Counters d;
#define COCO_COUNTER_DIFF(name, description) d.name = name - earlier.name;
  COCO_RUNTIME_COUNTERS(COCO_COUNTER_DIFF)
#undef COCO_COUNTER_DIFF
  return d;
}

std::string Counters::describe() const {
  std::string text;
#define COCO_COUNTER_TEXT(name, description)                     \
  if (name) {                                                    \
    if (!text.empty()) text += ' ';                              \
    text.append(#name).append("=").append(std::to_string(name)); \
  }
  COCO_RUNTIME_COUNTERS(COCO_COUNTER_TEXT)
#undef COCO_COUNTER_TEXT
  return text.empty() ? "none" : text;
}

Counters counters() {
  const Live& c = live();
  Counters snapshot;
#define COCO_COUNTER_READ(name, description) snapshot.name = c.name.load(std::memory_order_relaxed);
  COCO_RUNTIME_COUNTERS(COCO_COUNTER_READ)
#undef COCO_COUNTER_READ
  return snapshot;
}

void count_kernel_launch() { add(live().kernel_launches); }

void count_library_call(LibraryCall call) {
  add(call == LibraryCall::gemm ? live().gemm_calls : live().collective_calls);
}

// ------------------------------------------------------------------------------------------------
// Counted wrappers (cuda_calls.h).

cudaError_t device_malloc(void** pointer, size_t bytes) {
  add(live().device_mallocs);
  return cudaMalloc(pointer, bytes);
}
cudaError_t device_free(void* pointer) {
  add(live().device_frees);
  return cudaFree(pointer);
}
cudaError_t host_malloc(void** pointer, size_t bytes) {
  add(live().host_allocs);
  return cudaMallocHost(pointer, bytes);
}
cudaError_t host_free(void* pointer) {
  add(live().host_allocs);
  return cudaFreeHost(pointer);
}

cudaError_t memcpy_async(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  count_copy(dst, src, bytes, kind);
  return cudaMemcpyAsync(dst, src, bytes, kind, stream);
}
cudaError_t memcpy_blocking(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  count_copy(dst, src, bytes, kind);
  add(live().blocking_copies);
  return cudaMemcpy(dst, src, bytes, kind);
}
cudaError_t memset_async(void* dst, int value, size_t bytes, cudaStream_t stream) {
  add(live().memsets);
  return cudaMemsetAsync(dst, value, bytes, stream);
}

cudaError_t stream_synchronize(cudaStream_t stream) {
  add(live().stream_syncs);
  return cudaStreamSynchronize(stream);
}
cudaError_t device_synchronize() {
  add(live().device_syncs);
  return cudaDeviceSynchronize();
}
cudaError_t event_synchronize(cudaEvent_t event) {
  add(live().event_syncs);
  return cudaEventSynchronize(event);
}

cudaError_t graph_launch(cudaGraphExec_t graph, cudaStream_t stream) {
  add(live().graph_launches);
  return cudaGraphLaunch(graph, stream);
}

cublasStatus_t lt_matmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A,
                         cublasLtMatrixLayout_t a_desc, const void* B, cublasLtMatrixLayout_t b_desc, const void* beta,
                         const void* C, cublasLtMatrixLayout_t c_desc, void* D, cublasLtMatrixLayout_t d_desc,
                         const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspace_bytes,
                         cudaStream_t stream) {
  count_library_call(LibraryCall::gemm);
  return cublasLtMatmul(handle, desc, alpha, A, a_desc, B, b_desc, beta, C, c_desc, D, d_desc, algo, workspace,
                        workspace_bytes, stream);
}

}  // namespace coco::runtime
