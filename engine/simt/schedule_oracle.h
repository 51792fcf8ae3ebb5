// Schedule-invariance oracle for kernel tests: a deterministic kernel must produce bit-identical
// output whatever order the emulator runs its threads in and whatever garbage uninitialised shared
// memory holds. A missing __syncthreads()/__syncwarp() almost always breaks that.
//
//   auto result = emu::check_schedule_invariance([&] {
//     COCO_LAUNCH(my_kernel, grid, block, smem, nullptr, d_out, d_in, n);
//     std::vector<float> out(n);
//     COCO_CUDA_CHECK(cudaMemcpy(out.data(), d_out, n * sizeof(float), cudaMemcpyDeviceToHost));
//     return emu::as_bytes(out);
//   });
//   EXPECT_TRUE(result.identical) << result.message;
//
// `run` is called once per configuration: forward, reverse, forward and reverse with poison 0x7F,
// then `random_seeds` random schedules (seeds 1..N, poison alternating 0xFF / 0x7F); everything else
// (strictness, EMU_THREADS) stays as configured. Inputs must be re-initialised by `run` if the kernel
// modifies them in place. Kernels with float atomics across blocks are not deterministic with more
// than one OS thread; compare them with a tolerance instead (or set threads = 1).
//
// In `gpu` mode (no emulator) `run` is called once and the result is `identical` by definition.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#if defined(COCO_CUDA_EMULATED)
#include "engine/simt/emu_control.h"
#endif

namespace emu {

struct OracleResult {
  bool identical = true;
  int runs = 0;               // configurations executed
  std::string reference_run;  // the first configuration, e.g. "forward, poison 0xFF"
  std::string differing_run;  // the first configuration whose output differed ("" if none)
  size_t byte_offset = 0;     // first differing byte (or the shorter size if the sizes differ)
  std::string message;        // human-readable summary
  explicit operator bool() const { return identical; }
};

namespace oracle_detail {
inline std::string hex_byte(const std::vector<uint8_t>& bytes, size_t offset) {
  if (offset >= bytes.size()) return "<end>";
  char buffer[8];
  std::snprintf(buffer, sizeof buffer, "0x%02X", bytes[offset]);
  return buffer;
}
}  // namespace oracle_detail

// Compares two outputs; fills byte_offset/identical and returns whether they are equal.
inline bool compare_outputs(const std::vector<uint8_t>& reference, const std::vector<uint8_t>& other,
                            OracleResult& result) {
  const size_t common = reference.size() < other.size() ? reference.size() : other.size();
  for (size_t i = 0; i < common; ++i) {
    if (reference[i] != other[i]) {
      result.byte_offset = i;
      return false;
    }
  }
  if (reference.size() != other.size()) {
    result.byte_offset = common;
    return false;
  }
  return true;
}

inline OracleResult check_schedule_invariance(const std::function<std::vector<uint8_t>()>& run, int random_seeds = 4) {
  OracleResult result;
#if defined(COCO_CUDA_EMULATED)
  struct Variant {
    Schedule schedule;
    uint32_t seed;
    int poison;
  };
  std::vector<Variant> variants = {{Schedule::Forward, 1, 0xFF},
                                   {Schedule::Reverse, 1, 0xFF},
                                   {Schedule::Forward, 1, 0x7F},
                                   {Schedule::Reverse, 1, 0x7F}};
  for (int seed = 1; seed <= random_seeds; ++seed)
    variants.push_back({Schedule::Random, static_cast<uint32_t>(seed), seed % 2 ? 0xFF : 0x7F});
  std::vector<uint8_t> reference;
  for (const Variant& v : variants) {
    std::vector<uint8_t> output;
    std::string label;
    {
      ScopedSchedule scope(v.schedule, v.seed, v.poison);
      label = describe(config());
      output = run();
    }
    ++result.runs;
    if (result.runs == 1) {
      reference = std::move(output);
      result.reference_run = label;
      continue;
    }
    if (!compare_outputs(reference, output, result)) {
      result.identical = false;
      result.differing_run = label;
      result.message = "output of [" + label + "] differs from [" + result.reference_run + "] at byte " +
                       std::to_string(result.byte_offset) + " (" + oracle_detail::hex_byte(output, result.byte_offset) +
                       " vs " + oracle_detail::hex_byte(reference, result.byte_offset) + "; sizes " +
                       std::to_string(output.size()) + " and " + std::to_string(reference.size()) +
                       "): a race between threads (missing __syncthreads/__syncwarp) or a read of uninitialised "
                       "shared memory";
      return result;
    }
  }
  result.message = "bit-identical across " + std::to_string(result.runs) + " schedules";
#else
  (void)random_seeds;
  (void)run();
  result.runs = 1;
  result.reference_run = "gpu";
  result.message = "gpu mode: schedules are emulator-only, ran once";
#endif
  return result;
}

// Convenience for `run`: the object representation of a vector's elements.
template <class T>
std::vector<uint8_t> as_bytes(const std::vector<T>& values) {
  const auto* begin = reinterpret_cast<const uint8_t*>(values.data());
  return std::vector<uint8_t>(begin, begin + values.size() * sizeof(T));
}

}  // namespace emu
