// Helpers shared by the coco-bench case files: device arrays that case lambdas can hold by value,
// deterministic host data, bf16 round trips and the NMSE / exact comparisons validate() reports.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "bench/bench.h"
#include "engine/device.h"
#include "engine/runtime/check.h"
#include "engine/runtime/cuda_api.h"

namespace coco::bench {

// Activations are benchmarked in bf16, the training precision.
using bf16 = __nv_bfloat16;

inline void sync() { COCO_CUDA_CHECK(cudaStreamSynchronize(current_stream())); }

// A device allocation of `count` elements owned by a shared_ptr, so copies captured by a case's
// run/validate lambdas keep it alive as long as the case exists.
template <class T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t count) : count_(count) {
    void* raw = nullptr;
    COCO_CUDA_CHECK(cudaMalloc(&raw, std::max<size_t>(1, count) * sizeof(T)));
    memory_ = std::shared_ptr<void>(raw, [](void* p) { (void)cudaFree(p); });
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }

  T* get() const { return static_cast<T*>(memory_.get()); }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

  void upload(const std::vector<T>& host) const {
    if (host.size() != count_)
      throw std::invalid_argument("bench DeviceArray::upload: " + std::to_string(host.size()) + " elements for " +
                                  std::to_string(count_));
    COCO_CUDA_CHECK(cudaMemcpy(get(), host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    sync();
    std::vector<T> host(count_);
    COCO_CUDA_CHECK(cudaMemcpy(host.data(), get(), bytes(), cudaMemcpyDeviceToHost));
    return host;
  }
  void zero() const { COCO_CUDA_CHECK(cudaMemset(get(), 0, bytes())); }
  // 0xFF bytes read as NaN for floats: an element a kernel forgets to write shows up in validate().
  void poison() const { COCO_CUDA_CHECK(cudaMemset(get(), 0xFF, bytes())); }

 private:
  std::shared_ptr<void> memory_;
  size_t count_ = 0;
};

template <class T>
float to_float(T value) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(value);
  else if constexpr (std::is_same_v<T, __half>)
    return __half2float(value);
  else
    return static_cast<float>(value);
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
std::vector<float> to_floats(const std::vector<T>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = to_float(values[i]);
  return out;
}

template <class T>
std::vector<T> from_floats(const std::vector<float>& values) {
  std::vector<T> out(values.size());
  for (size_t i = 0; i < values.size(); ++i) out[i] = from_float<T>(values[i]);
  return out;
}

// splitmix64: fast deterministic host data (hundreds of millions of elements for AdamW at 110M
// parameters; mt19937 would dominate the set-up time).
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [lo, hi), already rounded through T so that an f32 reference sees exactly the kernel's
// inputs.
template <class T = float>
std::vector<float> random_floats(size_t count, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> out(count);
  const uint64_t base = mix64(seed * 0x2545F4914F6CDD1Dull);
  for (size_t i = 0; i < count; ++i) {
    const float u = static_cast<float>(mix64(base + i) >> 40) * 0x1.0p-24f;
    out[i] = to_float(from_float<T>(lo + (hi - lo) * u));
  }
  return out;
}

inline std::vector<int32_t> random_ints(size_t count, uint64_t seed, int32_t lo, int32_t hi_exclusive) {
  std::vector<int32_t> out(count);
  const uint64_t base = mix64(seed * 0x2545F4914F6CDD1Dull + 17);
  const uint64_t span = static_cast<uint64_t>(hi_exclusive - lo);
  for (size_t i = 0; i < count; ++i) out[i] = lo + static_cast<int32_t>(mix64(base + i) % span);
  return out;
}

// A device copy of host floats stored as T.
template <class T>
DeviceArray<T> device_from(const std::vector<float>& host) {
  return DeviceArray<T>(from_floats<T>(host));
}

template <class T>
std::vector<float> download_floats(const DeviceArray<T>& array) {
  return to_floats(array.download());
}

// Normalised mean squared error sum (ref - got)^2 / sum ref^2 over the elements, with NaN/Inf
// parity: a non-finite element must be non-finite in both (same class). "" when within `threshold`.
inline std::string compare(const std::string& what, const std::vector<float>& reference, const std::vector<float>& got,
                           double threshold) {
  if (reference.size() != got.size())
    return what + ": " + std::to_string(got.size()) + " elements, reference has " + std::to_string(reference.size());
  double error = 0.0, norm = 0.0;
  for (size_t i = 0; i < reference.size(); ++i) {
    const double r = reference[i], g = got[i];
    if (!std::isfinite(r) || !std::isfinite(g)) {
      const bool same = (std::isnan(r) && std::isnan(g)) || r == g;
      if (!same)
        return what + ": element " + std::to_string(i) + " is " + std::to_string(g) + ", reference " +
               std::to_string(r);
      continue;
    }
    error += (r - g) * (r - g);
    norm += r * r;
  }
  const double nmse = norm > 0 ? error / norm : error;
  if (nmse > threshold) {
    char buffer[160];
    std::snprintf(buffer, sizeof buffer, ": NMSE %.3g above %.1g", nmse, threshold);
    return what + buffer;
  }
  return "";
}

template <class T>
std::string compare_exact(const std::string& what, const std::vector<T>& reference, const std::vector<T>& got) {
  if (reference.size() != got.size())
    return what + ": " + std::to_string(got.size()) + " elements, reference has " + std::to_string(reference.size());
  for (size_t i = 0; i < reference.size(); ++i)
    if (!(reference[i] == got[i]))
      return what + ": element " + std::to_string(i) + " is " + std::to_string(static_cast<long long>(got[i])) +
             ", reference " + std::to_string(static_cast<long long>(reference[i]));
  return "";
}

// First non-empty message.
inline std::string first_problem(std::initializer_list<std::string> problems) {
  for (const std::string& p : problems)
    if (!p.empty()) return p;
  return "";
}

// NMSE thresholds. bf16 storage has a relative rounding error of 2^-9, i.e. an NMSE near 4e-6 per
// rounded value; a reference that rounds its inputs identically and differs only by the output
// rounding and f32-vs-f64 accumulation stays well below 1e-4.
inline constexpr double kBf16Nmse = 1e-4;
// Gradients reduced over thousands of bf16 terms (dW, dgamma, dbias) or rounded twice.
inline constexpr double kBf16GradNmse = 1e-3;
inline constexpr double kF32Nmse = 1e-9;

inline Case make_case(std::string op, std::string variant, std::string shape) {
  Case c;
  c.op = std::move(op);
  c.variant = std::move(variant);
  c.shape = std::move(shape);
  return c;
}

inline std::string dims(std::initializer_list<std::pair<const char*, int64_t>> named, const char* dtype) {
  std::string s;
  for (const auto& [name, value] : named) s += std::string(s.empty() ? "" : " ") + name + "=" + std::to_string(value);
  return s + " " + dtype;
}

}  // namespace coco::bench
