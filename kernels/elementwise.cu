// CUDA elementwise kernels. Memory-bound grid-stride loops with 128-bit accesses where the pointers
// allow (kernels/vector_access.cuh); 16-bit values are widened to f32 for the
// arithmetic (conversions from kernels/cast_convert.h, shared with the CPU casts) and rounded once.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "engine/runtime/launch.cuh"
#include "kernels/cast_convert.h"
#include "kernels/elementwise.h"
#include "kernels/vector_access.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kBlock = 256;
// Enough blocks to fill any current GPU several times over; larger inputs loop inside the kernel.
constexpr int64_t kMaxBlocks = 8192;

template <class T>
unsigned grid_for(int64_t n) {
  return pack_grid<T>(n, kBlock, kMaxBlocks);
}

// Arithmetic type: f64 for double, f32 for everything else.
template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

// a, b, out: (n)
template <class T, BinaryOp Op>
__global__ void binary_kernel(const T* a, const T* b, T* out, int64_t n) {
  using A = Acc<T>;
  map_elements(
      n,
      [](int64_t, T a_value, T b_value) {
        const A x = convert_element<A>(a_value), y = convert_element<A>(b_value);
        A r;
        if constexpr (Op == BinaryOp::add)
          r = x + y;
        else if constexpr (Op == BinaryOp::sub)
          r = x - y;
        else
          r = x * y;
        return convert_element<T>(r);
      },
      out, a, b);
}

// out = a + s * b; a null `a` means out = s * b.  a, b, out: (n)
template <class T>
__global__ void axpy_kernel(const T* a, const T* b, Acc<T> s, T* out, int64_t n) {
  using A = Acc<T>;
  if (a)
    map_elements(
        n,
        [s](int64_t, T a_value, T b_value) {
          return convert_element<T>(convert_element<A>(a_value) + s * convert_element<A>(b_value));
        },
        out, a, b);
  else
    map_elements(
        n, [s](int64_t, T b_value) { return convert_element<T>(s * convert_element<A>(b_value)); }, out, b);
}

// dst += src.  dst, src: (n)
template <class Dst, class Src>
__global__ void add_inplace_kernel(Dst* dst, const Src* src, int64_t n) {
  using A = std::conditional_t<std::is_same_v<Dst, double> || std::is_same_v<Src, double>, double, float>;
  map_elements(
      n, [](int64_t, Dst d, Src v) { return convert_element<Dst>(convert_element<A>(d) + convert_element<A>(v)); }, dst,
      static_cast<const Dst*>(dst), src);
}

// da = dout * b, db = dout * a (null outputs skipped).  all: (n)
template <class T>
__global__ void mul_backward_kernel(const T* dout, const T* a, const T* b, T* da, T* db, int64_t n) {
  using A = Acc<T>;
  constexpr int N = kPackElements<T>;
  for_each_pack<N>(n, packs_aligned<N>(dout, a, b, da, db), [&](auto width, int64_t first) {
    constexpr int W = decltype(width)::value;
    const Pack<T, W> g = load_pack<W>(dout + first);
    if (da) {
      const Pack<T, W> bv = load_pack<W>(b + first);
      Pack<T, W> r;
#pragma unroll
      for (int k = 0; k < W; ++k) r.v[k] = convert_element<T>(convert_element<A>(g.v[k]) * convert_element<A>(bv.v[k]));
      store_pack<W>(da + first, r);
    }
    if (db) {
      const Pack<T, W> av = load_pack<W>(a + first);
      Pack<T, W> r;
#pragma unroll
      for (int k = 0; k < W; ++k) r.v[k] = convert_element<T>(convert_element<A>(g.v[k]) * convert_element<A>(av.v[k]));
      store_pack<W>(db + first, r);
    }
  });
}

bool check_count(int64_t n, const char* op) {
  if (n < 0)
    throw std::invalid_argument(std::string("kernels::cuda::") + op + ": negative element count " + std::to_string(n));
  return n > 0;
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class T>
void binary(BinaryOp op, const T* a, const T* b, T* out, int64_t n, cudaStream_t stream) {
  if (!detail::check_count(n, binary_op_name(op))) return;
  const dim3 grid(detail::grid_for<T>(n)), block(detail::kBlock);
  switch (op) {
    case BinaryOp::add:
      COCO_LAUNCH((detail::binary_kernel<T, BinaryOp::add>), grid, block, 0, stream, a, b, out, n);
      return;
    case BinaryOp::sub:
      COCO_LAUNCH((detail::binary_kernel<T, BinaryOp::sub>), grid, block, 0, stream, a, b, out, n);
      return;
    case BinaryOp::mul:
      COCO_LAUNCH((detail::binary_kernel<T, BinaryOp::mul>), grid, block, 0, stream, a, b, out, n);
      return;
  }
  throw std::invalid_argument("kernels::cuda::binary: unknown op code " + std::to_string(static_cast<int>(op)));
}

template <class T>
void scale(const T* x, double s, T* out, int64_t n, cudaStream_t stream) {
  if (!detail::check_count(n, "scale")) return;
  COCO_LAUNCH(detail::axpy_kernel<T>, dim3(detail::grid_for<T>(n)), dim3(detail::kBlock), 0, stream,
              static_cast<const T*>(nullptr), x, static_cast<detail::Acc<T>>(s), out, n);
}

template <class T>
void add_scaled(const T* a, const T* b, double s, T* out, int64_t n, cudaStream_t stream) {
  if (!detail::check_count(n, "add_scaled")) return;
  if (!a) throw std::invalid_argument("kernels::cuda::add_scaled: `a` is a null pointer");
  COCO_LAUNCH(detail::axpy_kernel<T>, dim3(detail::grid_for<T>(n)), dim3(detail::kBlock), 0, stream, a, b,
              static_cast<detail::Acc<T>>(s), out, n);
}

template <class Dst, class Src>
void add_inplace(Dst* dst, const Src* src, int64_t n, cudaStream_t stream) {
  if (!detail::check_count(n, "add_inplace")) return;
  COCO_LAUNCH((detail::add_inplace_kernel<Dst, Src>), dim3(detail::grid_for<Dst>(n)), dim3(detail::kBlock), 0, stream,
              dst, src, n);
}

template <class T>
void mul_backward(const T* dout, const T* a, const T* b, T* da, T* db, int64_t n, cudaStream_t stream) {
  if (!detail::check_count(n, "mul_backward") || (!da && !db)) return;
  COCO_LAUNCH(detail::mul_backward_kernel<T>, dim3(detail::grid_for<T>(n)), dim3(detail::kBlock), 0, stream, dout, a, b,
              da, db, n);
}

#define COCO_INSTANTIATE_ELEMENTWISE_CUDA(T)                                          \
  template void binary<T>(BinaryOp, const T*, const T*, T*, int64_t, cudaStream_t);   \
  template void scale<T>(const T*, double, T*, int64_t, cudaStream_t);                \
  template void add_scaled<T>(const T*, const T*, double, T*, int64_t, cudaStream_t); \
  template void add_inplace<T, T>(T*, const T*, int64_t, cudaStream_t);               \
  template void mul_backward<T>(const T*, const T*, const T*, T*, T*, int64_t, cudaStream_t);

COCO_INSTANTIATE_ELEMENTWISE_CUDA(float)
COCO_INSTANTIATE_ELEMENTWISE_CUDA(double)
COCO_INSTANTIATE_ELEMENTWISE_CUDA(__nv_bfloat16)
COCO_INSTANTIATE_ELEMENTWISE_CUDA(__half)
#undef COCO_INSTANTIATE_ELEMENTWISE_CUDA

template void add_inplace<float, __nv_bfloat16>(float*, const __nv_bfloat16*, int64_t, cudaStream_t);
template void add_inplace<float, __half>(float*, const __half*, int64_t, cudaStream_t);

}  // namespace coco::kernels::cuda
