// Helpers for cross-backend kernel tests (ggml test-backend-ops style): device buffers with guard
// bytes after the payload, output poisoning, normalized MSE and NaN/Inf parity.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#include "engine/simt/schedule_oracle.h"

namespace coco::testing {

inline constexpr size_t kGuardBytes = 64;
inline constexpr uint8_t kGuardPattern = 0xA5;

// A device allocation of `count` elements followed by kGuardBytes of a known pattern. A kernel that
// writes past the end of its output is caught by guards_intact().
template <class T>
class GuardedDeviceBuffer {
 public:
  explicit GuardedDeviceBuffer(size_t count) : count_(count) {
    COCO_CUDA_CHECK(cudaMalloc(&raw_, bytes() + kGuardBytes));
    COCO_CUDA_CHECK(cudaMemset(raw_, 0, bytes()));
    COCO_CUDA_CHECK(cudaMemset(static_cast<uint8_t*>(raw_) + bytes(), kGuardPattern, kGuardBytes));
  }
  explicit GuardedDeviceBuffer(const std::vector<T>& host) : GuardedDeviceBuffer(host.size()) { upload(host); }
  GuardedDeviceBuffer(const GuardedDeviceBuffer&) = delete;
  GuardedDeviceBuffer& operator=(const GuardedDeviceBuffer&) = delete;
  ~GuardedDeviceBuffer() { (void)cudaFree(raw_); }

  T* data() { return static_cast<T*>(raw_); }
  const T* data() const { return static_cast<const T*>(raw_); }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

  void upload(const std::vector<T>& host) {
    if (host.size() != count_) throw std::invalid_argument("GuardedDeviceBuffer::upload: size mismatch");
    COCO_CUDA_CHECK(cudaMemcpy(raw_, host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    COCO_CUDA_CHECK(cudaMemcpy(host.data(), raw_, bytes(), cudaMemcpyDeviceToHost));
    return host;
  }
  // Fills the payload with `byte` so that any element a kernel forgets to write is visible
  // (0xFF reads as NaN for floats).
  void poison(uint8_t byte = 0xFF) { COCO_CUDA_CHECK(cudaMemset(raw_, byte, bytes())); }
  bool guards_intact() const {
    std::vector<uint8_t> guard(kGuardBytes);
    COCO_CUDA_CHECK(
        cudaMemcpy(guard.data(), static_cast<const uint8_t*>(raw_) + bytes(), kGuardBytes, cudaMemcpyDeviceToHost));
    for (uint8_t b : guard)
      if (b != kGuardPattern) return false;
    return true;
  }
  // Raw bytes of the payload, for bitwise comparisons across emulator schedules.
  std::vector<uint8_t> download_bytes() const {
    std::vector<uint8_t> host(bytes());
    COCO_CUDA_CHECK(cudaMemcpy(host.data(), raw_, bytes(), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  void* raw_ = nullptr;
  size_t count_ = 0;
};

// A device array of `count` elements that starts `offset` elements into a guarded allocation, so a
// kernel sees a pointer misaligned for vector accesses (offset 1) or aligned (offset 0) -- tensor
// views into packed buffers look like this. The skipped prefix holds a known pattern and must
// survive the kernel, as must the guard bytes after the payload.
template <class T>
class OffsetDeviceView {
 public:
  static constexpr uint8_t kPrefixPattern = 0x5A;
  OffsetDeviceView(size_t count, size_t offset) : buffer_(count + offset), count_(count), offset_(offset) {
    COCO_CUDA_CHECK(cudaMemset(buffer_.data(), kPrefixPattern, offset * sizeof(T)));
  }
  OffsetDeviceView(const std::vector<T>& host, size_t offset) : OffsetDeviceView(host.size(), offset) { upload(host); }

  T* data() { return buffer_.data() + offset_; }
  const T* data() const { return buffer_.data() + offset_; }
  size_t size() const { return count_; }

  void upload(const std::vector<T>& host) {
    if (host.size() != count_) throw std::invalid_argument("OffsetDeviceView::upload: size mismatch");
    COCO_CUDA_CHECK(cudaMemcpy(data(), host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    COCO_CUDA_CHECK(cudaMemcpy(host.data(), data(), count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  std::vector<uint8_t> download_bytes() const {
    std::vector<uint8_t> host(count_ * sizeof(T));
    COCO_CUDA_CHECK(cudaMemcpy(host.data(), data(), host.size(), cudaMemcpyDeviceToHost));
    return host;
  }
  void poison(uint8_t byte = 0xFF) { COCO_CUDA_CHECK(cudaMemset(data(), byte, count_ * sizeof(T))); }
  // The prefix before the view and the guard bytes after it are untouched.
  bool surroundings_intact() const {
    std::vector<uint8_t> prefix(offset_ * sizeof(T));
    COCO_CUDA_CHECK(cudaMemcpy(prefix.data(), buffer_.data(), prefix.size(), cudaMemcpyDeviceToHost));
    for (uint8_t b : prefix)
      if (b != kPrefixPattern) return false;
    return buffer_.guards_intact();
  }

 private:
  GuardedDeviceBuffer<T> buffer_;
  size_t count_, offset_;
};

template <class T>
double to_double(T value) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return static_cast<double>(__bfloat162float(value));
  else if constexpr (std::is_same_v<T, __half>)
    return static_cast<double>(__half2float(value));
  else
    return static_cast<double>(value);
}

template <class T>
std::vector<double> to_f64(const std::vector<T>& values) {
  std::vector<double> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = to_double(values[i]);
  return out;
}

template <class T>
T from_float(float value) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16(value);
  else if constexpr (std::is_same_v<T, __half>)
    return __float2half(value);
  else
    return static_cast<T>(value);
}

template <class T>
std::vector<T> from_floats(const std::vector<float>& values) {
  std::vector<T> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = from_float<T>(values[i]);
  return out;
}

// Rounds each value to T's precision and back, so a float reference sees exactly the inputs the
// low-precision kernel sees.
template <class T>
std::vector<float> round_through(const std::vector<float>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = static_cast<float>(to_double(from_float<T>(values[i])));
  return out;
}

// NMSE limit for outputs rounded once to T, against an f64 reference over the same rounded inputs:
// bf16 keeps 8 significant bits (relative error <= 2^-8, NMSE <= 1.5e-5): 2e-5; f16 keeps 11 bits
// (NMSE <= 2.4e-7): 1e-6; f64 arithmetic: 1e-24. f32 outputs take `f32_limit`, which depends on how much
// f32 arithmetic produced them (the caller justifies it).
template <class T>
constexpr double rounded_output_threshold(double f32_limit) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return 2e-5;
  else if constexpr (std::is_same_v<T, __half>)
    return 1e-6;
  else if constexpr (std::is_same_v<T, double>)
    return 1e-24;
  else
    return f32_limit;
}

inline std::vector<float> random_floats(size_t count, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> uniform(lo, hi);
  std::vector<float> out(count);
  for (float& v : out) v = uniform(generator);
  return out;
}

// Normalized mean squared error: sum (ref - got)^2 / sum ref^2 over finite reference elements
// (ggml's NMSE). Zero when both are all zero.
inline double nmse(const std::vector<double>& reference, const std::vector<double>& got) {
  double error = 0.0, norm = 0.0;
  for (size_t i = 0; i < reference.size() && i < got.size(); ++i) {
    if (!std::isfinite(reference[i])) continue;
    const double d = reference[i] - got[i];
    error += d * d;
    norm += reference[i] * reference[i];
  }
  if (norm == 0.0) return error == 0.0 ? 0.0 : INFINITY;
  return error / norm;
}

// NaN and Inf must appear at the same positions (with the same sign for Inf) in both results, and
// nowhere else; then NMSE over the finite elements must be at most `threshold`.
inline ::testing::AssertionResult matches_reference(const std::vector<double>& reference,
                                                    const std::vector<double>& got, double threshold,
                                                    const std::string& what) {
  if (reference.size() != got.size())
    return ::testing::AssertionFailure() << what << ": size " << got.size() << " vs reference " << reference.size();
  for (size_t i = 0; i < reference.size(); ++i) {
    const bool ref_nan = std::isnan(reference[i]), got_nan = std::isnan(got[i]);
    const bool ref_inf = std::isinf(reference[i]), got_inf = std::isinf(got[i]);
    if (ref_nan != got_nan || ref_inf != got_inf || (ref_inf && (reference[i] > 0) != (got[i] > 0)))
      return ::testing::AssertionFailure() << what << ": NaN/Inf parity broken at element " << i << ": reference "
                                           << reference[i] << ", got " << got[i];
  }
  const double error = nmse(reference, got);
  if (!(error <= threshold))
    return ::testing::AssertionFailure() << what << ": NMSE " << error << " above threshold " << threshold;
  return ::testing::AssertionSuccess() << what << ": NMSE " << error;
}

// The output bytes of `run` must be bitwise identical under the emulator's forward, reverse and random
// schedules and its shared-memory poison patterns (a single run in gpu mode).
inline void expect_schedule_invariant(const std::function<std::vector<uint8_t>()>& run, int random_seeds = 4) {
  const emu::OracleResult result = emu::check_schedule_invariance(run, random_seeds);
  EXPECT_TRUE(result.identical) << result.message;
}

}  // namespace coco::testing
