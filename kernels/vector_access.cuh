// 128-bit global loads and stores for memory-bound kernels.
//
// A warp that moves 16 bytes per thread per instruction (LDG.E.128 / STG.E.128) needs a quarter of
// the load instructions of f32 scalar code and an eighth of 16-bit code, which is what keeps an
// elementwise kernel at DRAM bandwidth instead of at the load/store unit's issue rate. A 16-byte
// access needs a 16-byte aligned address, and tensors here are often views (a row slice, an offset
// into a packed buffer), so every kernel checks its pointers at run time: aligned pointers take the
// packed path for the whole packs and a scalar loop for the ragged tail; any unaligned pointer sends
// the whole range through the scalar loop. Both paths give every element the same arithmetic, so the
// results do not depend on the alignment.
//
// The packs are plain aligned structs copied through a pointer of the pack type: nvcc turns the copy
// into one vector instruction, and the SIMT emulator (host compiler) runs the same source.
//
//   for_each_pack<N>(n, vector_ok, [&](auto width, int64_t first) {
//     constexpr int W = decltype(width)::value;          // N on the packed path, 1 on the scalar one
//     const auto x = load_pack<W>(in + first);
//     Pack<T, W> y;
//     for (int k = 0; k < W; ++k) y.v[k] = f(x.v[k]);
//     store_pack<W>(out + first, y);
//   });
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "engine/runtime/launch.cuh"

namespace coco::kernels::detail {

inline constexpr int kVectorAccessBytes = 16;

// W consecutive elements, aligned to their total size so that one copy is one access.
template <class T, int W>
struct alignas(sizeof(T) * W) Pack {
  T v[W];
};

// Elements per 16-byte access of the widest type among Ts (4 for f32, 8 for bf16/f16, 2 for f64).
template <class... Ts>
inline constexpr int kPackElements = static_cast<int>(kVectorAccessBytes / std::max({sizeof(Ts)...}));

// Whether p can be read or written W elements at a time. A null pointer counts as aligned (kernels
// with optional operands test for null before touching them).
template <int W, class T>
__device__ __forceinline__ bool pack_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * W) == 0;
}

template <int W, class... Ts>
__device__ __forceinline__ bool packs_aligned(const Ts*... p) {
  return (pack_aligned<W>(p) && ...);
}

// p must satisfy pack_aligned<W>(p).
template <int W, class T>
__device__ __forceinline__ Pack<T, W> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, W>*>(p);
}

template <int W, class T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, W>& value) {
  *reinterpret_cast<Pack<T, W>*>(p) = value;
}

// Grid-stride loop over [begin, end): body(i).
template <class Body>
__device__ __forceinline__ void grid_stride(int64_t begin, int64_t end, Body&& body) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = begin + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < end; i += stride) body(i);
}

// Covers the elements [0, n) across the grid: with `vector_ok`, body(integral_constant<int, N>, first)
// for every whole pack (first = 0, N, 2N, ...) and then body(integral_constant<int, 1>, i) for the
// tail; without it, body(integral_constant<int, 1>, i) for every element. `vector_ok` must be the
// same for every thread (it is meant to come from packs_aligned on the kernel's pointers).
template <int N, class Body>
__device__ __forceinline__ void for_each_pack(int64_t n, bool vector_ok, Body&& body) {
  int64_t scalar_begin = 0;
  if (vector_ok) {
    const int64_t packs = n / N;
    grid_stride(0, packs, [&](int64_t p) { body(std::integral_constant<int, N>{}, p * N); });
    scalar_begin = packs * N;
  }
  grid_stride(scalar_begin, n, [&](int64_t i) { body(std::integral_constant<int, 1>{}, i); });
}

// One worker's share of a row of `length` elements split among `workers` (a warp's lanes, say): the
// worker takes the packs first = worker * N, (worker + workers) * N, ... and calls
// body(integral_constant<int, N>, first) for each whole pack when `vector_ok` (the row's pointers are
// pack-aligned), and body(integral_constant<int, 1>, i) for each element of the other packs (all of
// them without `vector_ok`, else a partial last pack) in order. Either way a worker sees the same
// elements in the same order, so a sum it accumulates does not depend on the path.
template <int N, class Body>
__device__ __forceinline__ void for_each_pack_of_worker(int64_t length, bool vector_ok, int worker, int workers,
                                                        Body&& body) {
  for (int64_t first = static_cast<int64_t>(worker) * N; first < length; first += static_cast<int64_t>(workers) * N) {
    if (vector_ok && first + N <= length) {
      body(std::integral_constant<int, N>{}, first);
    } else {
      const int64_t end = first + N < length ? first + N : length;
      for (int64_t i = first; i < end; ++i) body(std::integral_constant<int, 1>{}, i);
    }
  }
}

// One worker's share of a row of `length` elements at `row` split among `workers`, for work whose
// per-element result does not depend on which worker does it or in what order (a gradient written
// element by element, say). Unlike for_each_pack_of_worker, a row that starts part-way into a 16-byte
// pack still gets 128-bit accesses: the elements before row's first pack boundary and after its last
// whole pack go body(integral_constant<int, 1>, i) one by one, the whole packs between them
// body(integral_constant<int, N>, first). `vector_ok` says that the other pointers the body indexes
// with the same offsets are misaligned by as much as `row` (same_pack_offset); without it, every
// element goes one by one. Indices are int: a row is shorter than 2^31 elements.
template <int N, class T, class Body>
__device__ __forceinline__ void for_each_aligned_pack_of_worker(const T* row, int length, bool vector_ok, int worker,
                                                                int workers, Body&& body) {
  const int into_pack = static_cast<int>(reinterpret_cast<uintptr_t>(row) / sizeof(T) % N);
  const int head = vector_ok ? std::min(length, (N - into_pack) % N) : length;
  const int packs = (length - head) / N;
#pragma unroll 1
  for (int i = worker; i < head; i += workers) body(std::integral_constant<int, 1>{}, i);
#pragma unroll 1
  for (int p = worker; p < packs; p += workers) body(std::integral_constant<int, N>{}, head + p * N);
#pragma unroll 1
  for (int i = head + packs * N + worker; i < length; i += workers) body(std::integral_constant<int, 1>{}, i);
}

// Whether a and b sit at the same offset within a 16-byte pack of W elements (then a row of a and the
// same row of b reach their pack boundaries at the same element). Equal pointers always do.
template <int W, class T>
__device__ __forceinline__ bool same_pack_offset(const T* a, const T* b) {
  return (reinterpret_cast<uintptr_t>(a) - reinterpret_cast<uintptr_t>(b)) % (sizeof(T) * W) == 0;
}

// One step of map_elements: W elements from `first`, inputs already loaded.
template <int W, class F, class Out, class... In>
__device__ __forceinline__ void map_loaded_pack(F& f, int64_t first, Out* out, const Pack<In, W>&... x) {
  Pack<Out, W> y;
#pragma unroll
  for (int k = 0; k < W; ++k) y.v[k] = f(first + k, x.v[k]...);
  store_pack<W>(out + first, y);
}

template <int W, class F, class Out, class... In>
__device__ __forceinline__ void map_pack(F& f, int64_t first, Out* out, const In*... in) {
  map_loaded_pack<W>(f, first, out, load_pack<W>(in + first)...);
}

// out[i] = f(i, in[i]...) for i in [0, n), 128-bit accesses when out and every input are aligned.
// f receives the input elements as stored and returns an Out. (Plain loops rather than for_each_pack:
// nvcc does not expand a parameter pack captured by a generic lambda.)
template <class Out, class F, class... In>
__device__ __forceinline__ void map_elements(int64_t n, F&& f, Out* out, const In*... in) {
  constexpr int N = kPackElements<Out, In...>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t thread = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t scalar_begin = 0;
  if (packs_aligned<N>(out, in...)) {
    const int64_t packs = n / N;
    for (int64_t p = thread; p < packs; p += stride) map_pack<N>(f, p * N, out, in...);
    scalar_begin = packs * N;
  }
  for (int64_t i = scalar_begin + thread; i < n; i += stride) map_pack<1>(f, i, out, in...);
}

// Elements per 16-byte access for T, and the grid of `block`-thread blocks (at most max_blocks) that
// gives each thread one pack of n elements.
template <class T>
inline unsigned pack_grid(int64_t n, int block, int64_t max_blocks) {
  const int64_t threads = (n + kPackElements<T> - 1) / kPackElements<T>;
  return static_cast<unsigned>(std::min<int64_t>(max_blocks, (threads + block - 1) / block));
}

}  // namespace coco::kernels::detail
