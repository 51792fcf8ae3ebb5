// The CUDA runtime API of emulated mode, on host memory, for the calls an engine makes. Signatures
// are those of /usr/local/cuda/include/cuda_runtime_api.h (the compiler checks them against it).
//
//  * memory: cudaMalloc is posix_memalign of exactly the requested size, so ASan sees overruns;
//    allocations are tracked (frees of unknown pointers fail like CUDA, stats() counts them);
//  * asynchronous copies and memsets go through the stream (emu_streams.cpp): they run at once, or
//    become graph nodes while the stream captures; synchronous ones and allocations obey the
//    capture rules for potentially unsafe calls;
//  * streams, events, stream capture and graphs: emu_streams.cpp;
//  * the device: one virtual "cocolm emulated sm_90" with H100-like limits.
#if defined(COCO_CUDA_EMULATED) || defined(EMU_STANDALONE)

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "engine/simt/cuda_emu.h"
#include "engine/simt/emu_control.h"
#include "engine/simt/emu_internal.h"

namespace emu::detail {
namespace {

enum class Memory : uint8_t { Device, PinnedHost };

struct Allocation {
  size_t bytes;
  Memory kind;
};

struct AllocationTable {
  std::mutex mutex;
  std::map<uintptr_t, Allocation> by_address;
};
AllocationTable& allocations() {
  static AllocationTable table;
  return table;
}

struct FunctionAttributes {
  std::mutex mutex;
  std::unordered_map<const void*, size_t> max_dynamic_shared;
};
FunctionAttributes& function_attributes() {
  static FunctionAttributes table;
  return table;
}

// Values from /proc/meminfo in bytes ("MemTotal", "MemAvailable"); 0 when absent.
size_t meminfo_bytes(const char* key) {
  std::ifstream in("/proc/meminfo");
  std::string name;
  size_t kib = 0;
  std::string unit;
  while (in >> name >> kib) {
    std::getline(in, unit);
    if (name == std::string(key) + ":") return kib * 1024;
  }
  return 0;
}

size_t total_memory_bytes() {
  static const size_t total = [] {
    const size_t from_meminfo = meminfo_bytes("MemTotal");
    if (from_meminfo) return from_meminfo;
    return static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
  }();
  return total;
}

cudaDeviceProp make_device_properties() {
  cudaDeviceProp p;
  std::memset(&p, 0, sizeof p);
  std::snprintf(p.name, sizeof p.name, "cocolm emulated sm_90");
  for (int i = 0; i < 16; ++i) p.uuid.bytes[i] = static_cast<char>(0xC0 + i);
  p.totalGlobalMem = total_memory_bytes();
  p.sharedMemPerBlock = kDefaultSharedBytesPerBlock;
  p.regsPerBlock = 65536;
  p.warpSize = 32;
  p.memPitch = 2147483647;
  p.maxThreadsPerBlock = 1024;
  p.maxThreadsDim[0] = 1024;
  p.maxThreadsDim[1] = 1024;
  p.maxThreadsDim[2] = 64;
  p.maxGridSize[0] = 2147483647;
  p.maxGridSize[1] = 65535;
  p.maxGridSize[2] = 65535;
  p.totalConstMem = 65536;
  p.major = 9;
  p.minor = 0;
  p.textureAlignment = 512;
  p.texturePitchAlignment = 32;
  p.multiProcessorCount = 132;
  p.integrated = 0;
  p.canMapHostMemory = 1;
  p.surfaceAlignment = 512;
  p.concurrentKernels = 1;
  p.asyncEngineCount = 2;
  p.unifiedAddressing = 1;
  p.memoryBusWidth = 5120;
  p.l2CacheSize = 50 * 1024 * 1024;
  p.persistingL2CacheMaxSize = 0;
  p.maxThreadsPerMultiProcessor = 2048;
  p.streamPrioritiesSupported = 1;
  p.globalL1CacheSupported = 1;
  p.localL1CacheSupported = 1;
  p.sharedMemPerMultiprocessor = 233472;  // 228 KB
  p.regsPerMultiprocessor = 65536;
  p.managedMemory = 0;
  p.computePreemptionSupported = 1;
  p.cooperativeLaunch = 0;  // no grid-wide sync in the emulator
  p.sharedMemPerBlockOptin = kMaxSharedBytesPerBlockOptin;
  p.maxBlocksPerMultiProcessor = 32;
  p.reservedSharedMemPerBlock = 1024;
  p.hostRegisterSupported = 0;
  p.memoryPoolsSupported = 1;
  p.clusterLaunch = 0;
  p.hostNumaId = -1;
  p.deviceNumaId = -1;
  return p;
}

const cudaDeviceProp& device_properties() {
  static const cudaDeviceProp properties = make_device_properties();
  return properties;
}

}  // namespace

bool range_ok(const void* address, size_t bytes) {
  if (bytes == 0) return true;
  if (!address) return false;
  const uintptr_t a = reinterpret_cast<uintptr_t>(address);
  AllocationTable& table = allocations();
  std::lock_guard<std::mutex> lock(table.mutex);
  auto it = table.by_address.upper_bound(a);
  if (it == table.by_address.begin()) return true;
  --it;
  const uintptr_t end = it->first + it->second.bytes;
  if (a >= end) return true;  // not inside this allocation
  return a + bytes <= end;
}

namespace {

cudaError_t allocate(void** out, size_t bytes, Memory kind) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  if (!out) return record_error(cudaErrorInvalidValue);
  *out = nullptr;
  if (bytes == 0) return cudaSuccess;
  void* p = nullptr;
  if (posix_memalign(&p, kind == Memory::Device ? 256 : 4096, bytes) != 0 || !p)
    return record_error(cudaErrorMemoryAllocation);
  {
    AllocationTable& table = allocations();
    std::lock_guard<std::mutex> lock(table.mutex);
    table.by_address[reinterpret_cast<uintptr_t>(p)] = Allocation{bytes, kind};
  }
  Stats& s = stats();
  if (kind == Memory::Device) {
    ++s.device_mallocs;
    const uint64_t live = s.device_bytes_live += bytes;
    uint64_t peak = s.device_bytes_peak.load();
    while (live > peak && !s.device_bytes_peak.compare_exchange_weak(peak, live)) {
    }
  } else {
    ++s.host_mallocs;
  }
  *out = p;
  return cudaSuccess;
}

cudaError_t release(void* p, Memory kind) {
  if (!p) return cudaSuccess;
  size_t bytes = 0;
  {
    AllocationTable& table = allocations();
    std::lock_guard<std::mutex> lock(table.mutex);
    auto it = table.by_address.find(reinterpret_cast<uintptr_t>(p));
    if (it == table.by_address.end() || it->second.kind != kind) return record_error(cudaErrorInvalidValue);
    bytes = it->second.bytes;
    table.by_address.erase(it);
  }
  std::free(p);
  Stats& s = stats();
  if (kind == Memory::Device) {
    ++s.device_frees;
    s.device_bytes_live -= bytes;
  } else {
    ++s.host_frees;
  }
  return emu::detail::sticky_failure();  // released, but a kernel fault stays reported
}

bool valid_kind(cudaMemcpyKind kind) {
  return kind == cudaMemcpyHostToHost || kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToHost ||
         kind == cudaMemcpyDeviceToDevice || kind == cudaMemcpyDefault;
}

cudaError_t check_copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (!valid_kind(kind)) return record_error(cudaErrorInvalidMemcpyDirection);
  if (bytes == 0) return cudaSuccess;
  if (!dst || !src || !range_ok(dst, bytes) || !range_ok(src, bytes)) return record_error(cudaErrorInvalidValue);
  return cudaSuccess;
}

cudaError_t copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  if (const cudaError_t status = check_synchronous_call(); status != cudaSuccess) return record_error(status);
  if (const cudaError_t status = check_copy(dst, src, bytes, kind); status != cudaSuccess) return status;
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t copy_async(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  if (const cudaError_t status = check_copy(dst, src, bytes, kind); status != cudaSuccess) {
    invalidate_capture_of(stream);
    return status;
  }
  return record_error(submit(stream, cudaGraphNodeTypeMemcpy, [dst, src, bytes] {
    if (bytes) std::memmove(dst, src, bytes);
  }));
}

// Stream-ordered allocation: graph memory nodes are not emulated, so it is refused inside a capture.
cudaError_t refuse_inside_capture(cudaStream_t stream) {
  bool capturing = false;
  if (const cudaError_t status = stream_work(stream, &capturing); status != cudaSuccess) return record_error(status);
  if (!capturing) return cudaSuccess;
  invalidate_capture_of(stream);
  return record_error(cudaErrorStreamCaptureUnsupported);
}

cudaError_t check_fill(void* dst, size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  if (!dst || !range_ok(dst, bytes)) return record_error(cudaErrorInvalidValue);
  return cudaSuccess;
}

#define EMU_ERRORS(X)                                                                                               \
  X(cudaSuccess, "no error")                                                                                        \
  X(cudaErrorInvalidValue, "invalid argument")                                                                      \
  X(cudaErrorMemoryAllocation, "out of memory")                                                                     \
  X(cudaErrorInitializationError, "initialization error")                                                           \
  X(cudaErrorCudartUnloading, "driver shutting down")                                                               \
  X(cudaErrorMissingConfiguration, "__global__ function call is not configured")                                    \
  X(cudaErrorInvalidConfiguration, "invalid configuration argument")                                                \
  X(cudaErrorInvalidPitchValue, "invalid pitch argument")                                                           \
  X(cudaErrorInvalidSymbol, "invalid device symbol")                                                                \
  X(cudaErrorInvalidDevicePointer, "invalid device pointer")                                                        \
  X(cudaErrorInvalidMemcpyDirection, "invalid copy direction for memcpy")                                           \
  X(cudaErrorInsufficientDriver, "CUDA driver version is insufficient for CUDA runtime version")                    \
  X(cudaErrorNoDevice, "no CUDA-capable device is detected")                                                        \
  X(cudaErrorInvalidDevice, "invalid device ordinal")                                                               \
  X(cudaErrorInvalidKernelImage, "device kernel image is invalid")                                                  \
  X(cudaErrorNoKernelImageForDevice, "no kernel image is available for execution on the device")                    \
  X(cudaErrorInvalidResourceHandle, "invalid resource handle")                                                      \
  X(cudaErrorIllegalState, "the operation cannot be performed in the present state")                                \
  X(cudaErrorNotReady, "device not ready")                                                                          \
  X(cudaErrorIllegalAddress, "an illegal memory access was encountered")                                            \
  X(cudaErrorLaunchOutOfResources, "too many resources requested for launch")                                       \
  X(cudaErrorLaunchTimeout, "the launch timed out and was terminated")                                              \
  X(cudaErrorAssert, "device-side assert triggered")                                                                \
  X(cudaErrorIllegalInstruction, "an illegal instruction was encountered")                                          \
  X(cudaErrorMisalignedAddress, "misaligned address")                                                               \
  X(cudaErrorInvalidDeviceFunction, "invalid device function")                                                      \
  X(cudaErrorLaunchFailure, "unspecified launch failure")                                                           \
  X(cudaErrorCooperativeLaunchTooLarge, "too many blocks in cooperative launch")                                    \
  X(cudaErrorNotPermitted, "operation not permitted")                                                               \
  X(cudaErrorNotSupported, "operation not supported")                                                               \
  X(cudaErrorStreamCaptureUnsupported, "operation not permitted when stream is capturing")                          \
  X(cudaErrorStreamCaptureInvalidated, "operation failed due to a previous error during capture")                   \
  X(cudaErrorStreamCaptureMerge, "operation would result in a merge of separate capture sequences")                 \
  X(cudaErrorStreamCaptureUnmatched, "capture was not ended in the same stream as it began")                        \
  X(cudaErrorStreamCaptureUnjoined, "capturing stream has unjoined work")                                           \
  X(cudaErrorStreamCaptureIsolation, "dependency created on uncaptured work in another stream")                     \
  X(cudaErrorStreamCaptureImplicit, "operation would make the legacy stream depend on a capturing blocking stream") \
  X(cudaErrorCapturedEvent, "operation not permitted on an event last recorded in a capturing stream")              \
  X(cudaErrorStreamCaptureWrongThread, "attempt to terminate a thread-local capture sequence from another thread")  \
  X(cudaErrorUnknown, "unknown error")

}  // namespace

cudaError_t& last_error() {
  thread_local cudaError_t error = cudaSuccess;
  return error;
}

namespace {
std::atomic<int> g_sticky_error{cudaSuccess};  // per process, as a CUDA context is
}  // namespace

cudaError_t sticky_error() { return static_cast<cudaError_t>(g_sticky_error.load(std::memory_order_acquire)); }

void set_sticky_error(cudaError_t status) {
  int expected = cudaSuccess;  // the first fault stays
  g_sticky_error.compare_exchange_strong(expected, status, std::memory_order_acq_rel);
}

}  // namespace emu::detail

namespace emu {
void clear_sticky_error() {
  detail::g_sticky_error.store(cudaSuccess, std::memory_order_release);
  detail::last_error() = cudaSuccess;
}
}  // namespace emu

namespace emu::detail {

size_t max_dynamic_shared_bytes(const void* kernel) {
  FunctionAttributes& table = function_attributes();
  std::lock_guard<std::mutex> lock(table.mutex);
  auto it = table.max_dynamic_shared.find(kernel);
  return it == table.max_dynamic_shared.end() ? kDefaultSharedBytesPerBlock : it->second;
}

const char* error_name(cudaError_t status) {
  switch (status) {
#define EMU_ERROR_NAME(code, text) \
  case code:                       \
    return #code;
    EMU_ERRORS(EMU_ERROR_NAME)
#undef EMU_ERROR_NAME
    default:
      return "unrecognized error code";
  }
}

}  // namespace emu::detail

using emu::detail::record_error;

extern "C" {

// ------------------------------------------------------------------------------------------------
// Errors
cudaError_t cudaGetLastError(void) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // not cleared
  const cudaError_t status = emu::detail::last_error();
  emu::detail::last_error() = cudaSuccess;
  return status;
}
cudaError_t cudaPeekAtLastError(void) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;
  return emu::detail::last_error();
}
const char* cudaGetErrorName(cudaError_t error) { return emu::detail::error_name(error); }
const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
#define EMU_ERROR_TEXT(code, text) \
  case code:                       \
    return text;
    EMU_ERRORS(EMU_ERROR_TEXT)
#undef EMU_ERROR_TEXT
    default:
      return "unrecognized error code";
  }
}

// ------------------------------------------------------------------------------------------------
// Device
cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return record_error(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return record_error(cudaErrorInvalidValue);
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) { return device == 0 ? cudaSuccess : record_error(cudaErrorInvalidDevice); }
cudaError_t cudaDeviceReset(void) { return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int* version) {
  if (!version) return record_error(cudaErrorInvalidValue);
  *version = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* version) {
  if (!version) return record_error(cudaErrorInvalidValue);
  *version = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp* prop, int device) {
  if (!prop) return record_error(cudaErrorInvalidValue);
  if (device != 0) return record_error(cudaErrorInvalidDevice);
  *prop = emu::detail::device_properties();
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, enum cudaDeviceAttr attr, int device) {
  if (!value) return record_error(cudaErrorInvalidValue);
  if (device != 0) return record_error(cudaErrorInvalidDevice);
  const cudaDeviceProp& p = emu::detail::device_properties();
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock:
      *value = p.maxThreadsPerBlock;
      break;
    case cudaDevAttrMaxBlockDimX:
      *value = p.maxThreadsDim[0];
      break;
    case cudaDevAttrMaxBlockDimY:
      *value = p.maxThreadsDim[1];
      break;
    case cudaDevAttrMaxBlockDimZ:
      *value = p.maxThreadsDim[2];
      break;
    case cudaDevAttrMaxGridDimX:
      *value = p.maxGridSize[0];
      break;
    case cudaDevAttrMaxGridDimY:
      *value = p.maxGridSize[1];
      break;
    case cudaDevAttrMaxGridDimZ:
      *value = p.maxGridSize[2];
      break;
    case cudaDevAttrMaxSharedMemoryPerBlock:
      *value = static_cast<int>(p.sharedMemPerBlock);
      break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin:
      *value = static_cast<int>(p.sharedMemPerBlockOptin);
      break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor:
      *value = static_cast<int>(p.sharedMemPerMultiprocessor);
      break;
    case cudaDevAttrReservedSharedMemoryPerBlock:
      *value = static_cast<int>(p.reservedSharedMemPerBlock);
      break;
    case cudaDevAttrTotalConstantMemory:
      *value = static_cast<int>(p.totalConstMem);
      break;
    case cudaDevAttrWarpSize:
      *value = p.warpSize;
      break;
    case cudaDevAttrMaxPitch:
      *value = static_cast<int>(p.memPitch);
      break;
    case cudaDevAttrMaxRegistersPerBlock:
      *value = p.regsPerBlock;
      break;
    case cudaDevAttrMaxRegistersPerMultiprocessor:
      *value = p.regsPerMultiprocessor;
      break;
    case cudaDevAttrClockRate:
      *value = 1980000;
      break;  // kHz
    case cudaDevAttrMemoryClockRate:
      *value = 2619000;
      break;  // kHz
    case cudaDevAttrGlobalMemoryBusWidth:
      *value = p.memoryBusWidth;
      break;
    case cudaDevAttrL2CacheSize:
      *value = p.l2CacheSize;
      break;
    case cudaDevAttrTextureAlignment:
      *value = static_cast<int>(p.textureAlignment);
      break;
    case cudaDevAttrMultiProcessorCount:
      *value = p.multiProcessorCount;
      break;
    case cudaDevAttrMaxThreadsPerMultiProcessor:
      *value = p.maxThreadsPerMultiProcessor;
      break;
    case cudaDevAttrMaxBlocksPerMultiprocessor:
      *value = p.maxBlocksPerMultiProcessor;
      break;
    case cudaDevAttrComputeCapabilityMajor:
      *value = p.major;
      break;
    case cudaDevAttrComputeCapabilityMinor:
      *value = p.minor;
      break;
    case cudaDevAttrIntegrated:
      *value = p.integrated;
      break;
    case cudaDevAttrCanMapHostMemory:
      *value = p.canMapHostMemory;
      break;
    case cudaDevAttrComputeMode:
      *value = cudaComputeModeDefault;
      break;
    case cudaDevAttrConcurrentKernels:
      *value = p.concurrentKernels;
      break;
    case cudaDevAttrEccEnabled:
      *value = p.ECCEnabled;
      break;
    case cudaDevAttrAsyncEngineCount:
      *value = p.asyncEngineCount;
      break;
    case cudaDevAttrUnifiedAddressing:
      *value = p.unifiedAddressing;
      break;
    case cudaDevAttrStreamPrioritiesSupported:
      *value = p.streamPrioritiesSupported;
      break;
    case cudaDevAttrManagedMemory:
      *value = p.managedMemory;
      break;
    case cudaDevAttrPageableMemoryAccess:
      *value = 0;
      break;
    case cudaDevAttrCooperativeLaunch:
      *value = p.cooperativeLaunch;
      break;
    case cudaDevAttrMemoryPoolsSupported:
      *value = p.memoryPoolsSupported;
      break;
    case cudaDevAttrClusterLaunch:
      *value = p.clusterLaunch;
      break;
    case cudaDevAttrKernelExecTimeout:
      *value = 0;
      break;
    case cudaDevAttrPciBusId:
      *value = p.pciBusID;
      break;
    case cudaDevAttrPciDeviceId:
      *value = p.pciDeviceID;
      break;
    case cudaDevAttrPciDomainId:
      *value = p.pciDomainID;
      break;
    default:
      return record_error(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  if (!free_bytes || !total_bytes) return record_error(cudaErrorInvalidValue);
  *total_bytes = emu::detail::total_memory_bytes();
  const size_t available = emu::detail::meminfo_bytes("MemAvailable");
  *free_bytes = available ? std::min(available, *total_bytes) : *total_bytes;
  return cudaSuccess;
}

// ------------------------------------------------------------------------------------------------
// Kernel attributes
cudaError_t cudaFuncSetAttribute(const void* func, enum cudaFuncAttribute attr, int value) {
  if (!func) return record_error(cudaErrorInvalidDeviceFunction);
  switch (attr) {
    case cudaFuncAttributeMaxDynamicSharedMemorySize: {
      if (value < 0 || static_cast<size_t>(value) > emu::kMaxSharedBytesPerBlockOptin)
        return record_error(cudaErrorInvalidValue);
      auto& table = emu::detail::function_attributes();
      std::lock_guard<std::mutex> lock(table.mutex);
      table.max_dynamic_shared[func] = static_cast<size_t>(value);
      return cudaSuccess;
    }
    case cudaFuncAttributePreferredSharedMemoryCarveout:
      return value >= -1 && value <= 100 ? cudaSuccess : record_error(cudaErrorInvalidValue);
    default:
      return cudaSuccess;  // scheduling hints without an effect here
  }
}
cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes* attr, const void* func) {
  if (!attr) return record_error(cudaErrorInvalidValue);
  if (!func) return record_error(cudaErrorInvalidDeviceFunction);
  std::memset(attr, 0, sizeof *attr);
  attr->maxThreadsPerBlock = 1024;
  attr->maxDynamicSharedSizeBytes = static_cast<int>(emu::detail::max_dynamic_shared_bytes(func));
  attr->ptxVersion = 90;
  attr->binaryVersion = 90;
  return cudaSuccess;
}

cudaError_t cudaFuncSetCacheConfig(const void* func, enum cudaFuncCache) {
  return func ? cudaSuccess : record_error(cudaErrorInvalidDeviceFunction);
}
// Resident blocks per SM as the H100 limits allow: threads, blocks and shared memory (registers
// are unknown here).
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int* numBlocks, const void* func, int blockSize,
                                                                   size_t dynamicSMemSize, unsigned int) {
  if (!numBlocks || blockSize <= 0 || blockSize > 1024) return record_error(cudaErrorInvalidValue);
  if (!func) return record_error(cudaErrorInvalidDeviceFunction);
  const cudaDeviceProp& p = emu::detail::device_properties();
  int blocks = std::min(p.maxThreadsPerMultiProcessor / blockSize, p.maxBlocksPerMultiProcessor);
  const size_t per_block = dynamicSMemSize + p.reservedSharedMemPerBlock;
  blocks = std::min<int>(blocks, static_cast<int>(p.sharedMemPerMultiprocessor / per_block));
  *numBlocks = blocks;
  return cudaSuccess;
}

// ------------------------------------------------------------------------------------------------
// Memory
cudaError_t cudaMalloc(void** devPtr, size_t size) {
  if (const cudaError_t status = emu::detail::check_unsafe_call(); status != cudaSuccess) return record_error(status);
  return emu::detail::allocate(devPtr, size, emu::detail::Memory::Device);
}
// Stream-ordered allocations are immediate here; inside a capture they would be graph memory nodes,
// which the emulator does not have.
cudaError_t cudaMallocAsync(void** devPtr, size_t size, cudaStream_t hStream) {
  if (const cudaError_t status = emu::detail::refuse_inside_capture(hStream); status != cudaSuccess) return status;
  return emu::detail::allocate(devPtr, size, emu::detail::Memory::Device);
}
cudaError_t cudaFree(void* devPtr) {
  if (const cudaError_t status = emu::detail::check_unsafe_call(); status != cudaSuccess) return record_error(status);
  return emu::detail::release(devPtr, emu::detail::Memory::Device);
}
cudaError_t cudaFreeAsync(void* devPtr, cudaStream_t hStream) {
  if (const cudaError_t status = emu::detail::refuse_inside_capture(hStream); status != cudaSuccess) return status;
  return emu::detail::release(devPtr, emu::detail::Memory::Device);
}
cudaError_t cudaMallocHost(void** ptr, size_t size) {
  if (const cudaError_t status = emu::detail::check_unsafe_call(); status != cudaSuccess) return record_error(status);
  return emu::detail::allocate(ptr, size, emu::detail::Memory::PinnedHost);
}
cudaError_t cudaHostAlloc(void** pHost, size_t size, unsigned int) {
  if (const cudaError_t status = emu::detail::check_unsafe_call(); status != cudaSuccess) return record_error(status);
  return emu::detail::allocate(pHost, size, emu::detail::Memory::PinnedHost);
}
cudaError_t cudaFreeHost(void* ptr) {
  if (const cudaError_t status = emu::detail::check_unsafe_call(); status != cudaSuccess) return record_error(status);
  return emu::detail::release(ptr, emu::detail::Memory::PinnedHost);
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind) {
  return emu::detail::copy(dst, src, count, kind);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, enum cudaMemcpyKind kind, cudaStream_t stream) {
  return emu::detail::copy_async(dst, src, count, kind, stream);
}

namespace {
cudaError_t check_copy_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                          cudaMemcpyKind kind) {
  if (!emu::detail::valid_kind(kind)) return record_error(cudaErrorInvalidMemcpyDirection);
  if (width > dpitch || width > spitch) return record_error(cudaErrorInvalidPitchValue);
  if (width == 0 || height == 0) return cudaSuccess;
  if (!dst || !src || !emu::detail::range_ok(dst, dpitch * (height - 1) + width) ||
      !emu::detail::range_ok(src, spitch * (height - 1) + width))
    return record_error(cudaErrorInvalidValue);
  return cudaSuccess;
}
void copy_2d(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height) {
  if (width == 0) return;
  for (size_t row = 0; row < height; ++row)
    std::memmove(static_cast<char*>(dst) + row * dpitch, static_cast<const char*>(src) + row * spitch, width);
}
}  // namespace

cudaError_t cudaMemcpy2D(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                         enum cudaMemcpyKind kind) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  if (const cudaError_t status = emu::detail::check_synchronous_call(); status != cudaSuccess)
    return record_error(status);
  if (const cudaError_t status = check_copy_2d(dst, dpitch, src, spitch, width, height, kind); status != cudaSuccess)
    return status;
  copy_2d(dst, dpitch, src, spitch, width, height);
  return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void* dst, size_t dpitch, const void* src, size_t spitch, size_t width, size_t height,
                              enum cudaMemcpyKind kind, cudaStream_t stream) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  if (const cudaError_t status = check_copy_2d(dst, dpitch, src, spitch, width, height, kind); status != cudaSuccess) {
    emu::detail::invalidate_capture_of(stream);
    return status;
  }
  return record_error(
      emu::detail::submit(stream, cudaGraphNodeTypeMemcpy, [=] { copy_2d(dst, dpitch, src, spitch, width, height); }));
}
cudaError_t cudaMemcpyToSymbol(const void* symbol, const void* src, size_t count, size_t offset,
                               enum cudaMemcpyKind kind) {
  if (!symbol) return record_error(cudaErrorInvalidSymbol);
  return emu::detail::copy(static_cast<char*>(const_cast<void*>(symbol)) + offset, src, count, kind);
}
cudaError_t cudaMemcpyFromSymbol(void* dst, const void* symbol, size_t count, size_t offset, enum cudaMemcpyKind kind) {
  if (!symbol) return record_error(cudaErrorInvalidSymbol);
  return emu::detail::copy(dst, static_cast<const char*>(symbol) + offset, count, kind);
}
cudaError_t cudaMemcpyToSymbolAsync(const void* symbol, const void* src, size_t count, size_t offset,
                                    enum cudaMemcpyKind kind, cudaStream_t stream) {
  if (!symbol) return record_error(cudaErrorInvalidSymbol);
  return emu::detail::copy_async(static_cast<char*>(const_cast<void*>(symbol)) + offset, src, count, kind, stream);
}
cudaError_t cudaGetSymbolAddress(void** devPtr, const void* symbol) {
  if (!devPtr) return record_error(cudaErrorInvalidValue);
  if (!symbol) return record_error(cudaErrorInvalidSymbol);
  *devPtr = const_cast<void*>(symbol);
  return cudaSuccess;
}
cudaError_t cudaMemset(void* devPtr, int value, size_t count) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  if (const cudaError_t status = emu::detail::check_synchronous_call(); status != cudaSuccess)
    return record_error(status);
  if (const cudaError_t status = emu::detail::check_fill(devPtr, count); status != cudaSuccess) return status;
  if (count) std::memset(devPtr, value, count);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* devPtr, int value, size_t count, cudaStream_t stream) {
  if (const cudaError_t sticky = emu::detail::sticky_failure(); sticky != cudaSuccess) return sticky;  // a kernel fault
  if (const cudaError_t status = emu::detail::check_fill(devPtr, count); status != cudaSuccess) {
    emu::detail::invalidate_capture_of(stream);
    return status;
  }
  return record_error(emu::detail::submit(stream, cudaGraphNodeTypeMemset, [devPtr, value, count] {
    if (count) std::memset(devPtr, value, count);
  }));
}
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes* attributes, const void* ptr) {
  if (!attributes) return record_error(cudaErrorInvalidValue);
  std::memset(attributes, 0, sizeof *attributes);
  attributes->type = cudaMemoryTypeUnregistered;
  attributes->device = cudaInvalidDeviceId;
  auto& table = emu::detail::allocations();
  std::lock_guard<std::mutex> lock(table.mutex);
  const uintptr_t a = reinterpret_cast<uintptr_t>(ptr);
  auto it = table.by_address.upper_bound(a);
  if (it == table.by_address.begin()) return cudaSuccess;
  --it;
  if (a >= it->first + it->second.bytes) return cudaSuccess;
  attributes->device = 0;
  attributes->devicePointer = const_cast<void*>(ptr);
  if (it->second.kind == emu::detail::Memory::Device) {
    attributes->type = cudaMemoryTypeDevice;
  } else {
    attributes->type = cudaMemoryTypeHost;
    attributes->hostPointer = const_cast<void*>(ptr);
  }
  return cudaSuccess;
}

}  // extern "C"

#endif  // COCO_CUDA_EMULATED || EMU_STANDALONE
