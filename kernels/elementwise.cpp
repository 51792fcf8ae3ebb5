// CPU reference for the elementwise kernels (float and double).
#include "kernels/elementwise.h"

#include <stdexcept>
#include <string>

#include "engine/runtime/cpu_backend.h"

namespace coco::kernels::cpu {
namespace {

void check_count(int64_t n, const char* op) {
  if (n < 0)
    throw std::invalid_argument(std::string("kernels::cpu::") + op + ": negative element count " + std::to_string(n));
}

// Element ranges on the CPU pool: every element is computed alone, so the bits do not depend on the
// thread count (and an output may alias an input at the same index).
constexpr int64_t kElementsPerRange = 16384;

template <class Body>
void for_elements(int64_t n, Body&& body) {
  runtime::cpu::parallel_for(n, kElementsPerRange, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) body(i);
  });
}

}  // namespace

template <class T>
void binary(BinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  check_count(n, binary_op_name(op));
  switch (op) {
    case BinaryOp::add:
      for_elements(n, [=](int64_t i) { out[i] = a[i] + b[i]; });
      return;
    case BinaryOp::sub:
      for_elements(n, [=](int64_t i) { out[i] = a[i] - b[i]; });
      return;
    case BinaryOp::mul:
      for_elements(n, [=](int64_t i) { out[i] = a[i] * b[i]; });
      return;
  }
  throw std::invalid_argument("kernels::cpu::binary: unknown op code " + std::to_string(static_cast<int>(op)));
}

template <class T>
void scale(const T* x, double s, T* out, int64_t n) {
  check_count(n, "scale");
  const T factor = static_cast<T>(s);
  for_elements(n, [=](int64_t i) { out[i] = factor * x[i]; });
}

template <class T>
void add_scaled(const T* a, const T* b, double s, T* out, int64_t n) {
  check_count(n, "add_scaled");
  const T factor = static_cast<T>(s);
  for_elements(n, [=](int64_t i) { out[i] = a[i] + factor * b[i]; });
}

template <class T>
void add_inplace(T* dst, const T* src, int64_t n) {
  check_count(n, "add_inplace");
  for_elements(n, [=](int64_t i) { dst[i] += src[i]; });
}

template <class T>
void mul_backward(const T* dout, const T* a, const T* b, T* da, T* db, int64_t n) {
  check_count(n, "mul_backward");
  for_elements(n, [=](int64_t i) {
    const T g = dout[i], av = a[i], bv = b[i];  // read first: da or db may alias an input
    if (da) da[i] = g * bv;
    if (db) db[i] = g * av;
  });
}

#define COCO_INSTANTIATE_ELEMENTWISE_CPU(T)                             \
  template void binary<T>(BinaryOp, const T*, const T*, T*, int64_t);   \
  template void scale<T>(const T*, double, T*, int64_t);                \
  template void add_scaled<T>(const T*, const T*, double, T*, int64_t); \
  template void add_inplace<T>(T*, const T*, int64_t);                  \
  template void mul_backward<T>(const T*, const T*, const T*, T*, T*, int64_t);

COCO_INSTANTIATE_ELEMENTWISE_CPU(float)
COCO_INSTANTIATE_ELEMENTWISE_CPU(double)
#undef COCO_INSTANTIATE_ELEMENTWISE_CPU

}  // namespace coco::kernels::cpu
