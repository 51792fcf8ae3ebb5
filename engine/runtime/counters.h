// Counters of the work the host asks of the CUDA runtime, maintained in both build modes: kernel
// launches (COCO_LAUNCH), graph launches, library calls (cuBLASLt GEMMs; collectives once they
// exist, through count_library_call), copies by direction with their bytes, memsets,
// synchronisations and the allocations that reach cudaMalloc / cudaFree. Engine code makes these
// calls through the counted wrappers of engine/runtime/cuda_calls.h, so a step's profile is exact.
//
// The counters are process-wide (relaxed atomics), not per thread: a training step's CUDA work may
// be issued by more than one host thread (a prefetching loader uploading the next batch, a
// checkpoint writer downloading weights), and a profile that silently missed those calls would
// hide exactly the synchronisations it exists to find. One process drives one device, so
// process-wide is per device. Graph replays count one graph launch, not the kernels inside: the
// counters measure host-side work.
//
//   runtime::StepProfile profile;   // snapshot now
//   ...one step...
//   runtime::Counters step = profile.elapsed();   // step.kernel_launches, step.synchronizations(), ...
#pragma once
#include <cstdint>
#include <string>

// X(name, description) for every counter.
#define COCO_RUNTIME_COUNTERS(X)                                                             \
  X(kernel_launches, "kernel launches (COCO_LAUNCH)")                                        \
  X(graph_launches, "CUDA graph launches")                                                   \
  X(gemm_calls, "cuBLASLt matmuls")                                                          \
  X(collective_calls, "collective communication calls")                                      \
  X(h2d_copies, "host-to-device copies")                                                     \
  X(h2d_bytes, "host-to-device bytes")                                                       \
  X(d2h_copies, "device-to-host copies")                                                     \
  X(d2h_bytes, "device-to-host bytes")                                                       \
  X(d2d_copies, "device-to-device copies")                                                   \
  X(d2d_bytes, "device-to-device bytes")                                                     \
  X(memsets, "memsets")                                                                      \
  X(blocking_copies, "synchronous cudaMemcpy / cudaMemset calls (they wait for the device)") \
  X(stream_syncs, "stream synchronizations")                                                 \
  X(device_syncs, "device synchronizations")                                                 \
  X(event_syncs, "event synchronizations")                                                   \
  X(device_mallocs, "cudaMalloc calls")                                                      \
  X(device_frees, "cudaFree calls")                                                          \
  X(host_allocs, "pinned host allocations and frees")

namespace coco::runtime {

struct Counters {
#define COCO_COUNTER_FIELD(name, description) uint64_t name = 0;
  COCO_RUNTIME_COUNTERS(COCO_COUNTER_FIELD)
#undef COCO_COUNTER_FIELD

  // Every call that makes the host wait for the device: stream, device and event synchronizations
  // and synchronous copies.
  uint64_t synchronizations() const { return stream_syncs + device_syncs + event_syncs + blocking_copies; }
  // Device work the host queued one call at a time (kernels, graphs, library calls, copies, memsets).
  uint64_t launches() const {
    return kernel_launches + graph_launches + gemm_calls + collective_calls + h2d_copies + d2h_copies + d2d_copies +
           memsets;
  }

  Counters operator-(const Counters& earlier) const;
  bool operator==(const Counters&) const = default;

  // "kernel_launches=12 gemm_calls=4 ..." (non-zero counters only; "none" when all are zero).
  std::string describe() const;
};

// A snapshot of the process-wide counters.
Counters counters();

// The counters since construction (or the last restart()).
class StepProfile {
 public:
  StepProfile() : start_(counters()) {}
  Counters elapsed() const { return counters() - start_; }
  void restart() { start_ = counters(); }

 private:
  Counters start_;
};

enum class LibraryCall : uint8_t { gemm, collective };

void count_kernel_launch();
void count_library_call(LibraryCall call);

}  // namespace coco::runtime
