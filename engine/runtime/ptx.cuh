// The project's one inline-PTX wrapper: warp-level matrix instructions and asynchronous copies.
// Under nvcc each function is the PTX instruction itself; under the host compiler (emulated mode) it
// calls the SIMT emulator's implementation (engine/simt/emu_ptx.h), which is warp-collective where the
// instruction is and follows the PTX ISA's per-lane fragment layouts, so kernels written against
// these functions are checked on the CPU with the very lane mappings the GPU uses.
//
//   mma_m16n8k16<T>(d, a, b, c)   mma.sync.aligned.m16n8k16.row.col.f32.T.T.f32, T = __nv_bfloat16 | __half
//       a: 4 x .b32 (A 16x16 row-major fragment), b: 2 x .b32 (B 16x8 "col" fragment), c, d: 4 x f32
//       (d may be c). Fragment layouts (groupID g = lane / 4, t = lane % 4; element i of a register
//       pair list, low half first):
//         A: a_i at row g + 8 [i in {2,3,6,7}], col 2t + (i & 1) + 8 [i >= 4]
//         B: b_i at row (k) 2t + (i & 1) + 8 [i >= 2], col (n) g
//         C/D: c_i at row g + 8 [i >= 2], col 2t + (i & 1)
//   ldmatrix_x{1,2,4}[_trans](r, row_address)   ldmatrix.sync.aligned.m8n8.x{1,2,4}[.trans].shared.b16:
//       lanes 8m..8m+7 give the (16-byte aligned) addresses of the 8 rows of matrix m; register m of
//       lane l gets row l/4, elements 2(l%4), 2(l%4)+1 (transposed: column l/4, rows 2(l%4), 2(l%4)+1),
//       which is the A/B fragment layout above.
//   cp_async_ca<Bytes>(dst, src[, src_bytes]), cp_async_cg(dst, src[, src_bytes])
//       cp.async.{ca,cg}.shared.global: Bytes = 4, 8, 16 (cg: 16); src_bytes < Bytes zero-fills the rest.
//   cp_async_commit(), cp_async_wait<N>(), cp_async_wait_all()
//
// mma and ldmatrix must be executed by all 32 lanes of a warp, converged (.sync.aligned); the emulator
// diagnoses a partial or divergent call with the kernel, block, thread and warp.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#else
#include <source_location>

#include "engine/simt/cuda_emu.h"
#include "engine/simt/emu_ptx.h"
#endif

namespace coco::ptx {

#if defined(__CUDACC__)

template <class T>
__device__ __forceinline__ void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  } else {
    static_assert(std::is_same_v<T, __half>, "mma_m16n8k16: T is __nv_bfloat16 or __half");
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
  }
}

__device__ __forceinline__ unsigned shared_address(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldmatrix_x1(uint32_t r[1], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(shared_address(row_address)));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t r[2], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(row_address)));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row_address)));
}
__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t r[1], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(shared_address(row_address)));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t r[2], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(shared_address(row_address)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void* row_address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(row_address)));
}

template <int Bytes>
__device__ __forceinline__ void cp_async_ca(void* shared_dst, const void* global_src, unsigned src_bytes = Bytes) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async.ca copies 4, 8 or 16 bytes");
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(shared_address(shared_dst)), "l"(global_src),
               "n"(Bytes), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_cg(void* shared_dst, const void* global_src, unsigned src_bytes = 16) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(shared_dst)), "l"(global_src),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int NewestPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(NewestPending));
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::); }

#else  // emulated: engine/simt/emu_ptx.h

template <class T>
inline void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                         std::source_location where = std::source_location::current()) {
  static_assert(std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>,
                "mma_m16n8k16: T is __nv_bfloat16 or __half");
  ::emu::ptx::mma_m16n8k16(std::is_same_v<T, __nv_bfloat16> ? ::emu::ptx::MmaInput::BF16 : ::emu::ptx::MmaInput::F16, d,
                           a, b, c, where);
}

inline void ldmatrix_x1(uint32_t r[1], const void* row_address,
                        std::source_location where = std::source_location::current()) {
  ::emu::ptx::ldmatrix(1, false, r, row_address, where);
}
inline void ldmatrix_x2(uint32_t r[2], const void* row_address,
                        std::source_location where = std::source_location::current()) {
  ::emu::ptx::ldmatrix(2, false, r, row_address, where);
}
inline void ldmatrix_x4(uint32_t r[4], const void* row_address,
                        std::source_location where = std::source_location::current()) {
  ::emu::ptx::ldmatrix(4, false, r, row_address, where);
}
inline void ldmatrix_x1_trans(uint32_t r[1], const void* row_address,
                              std::source_location where = std::source_location::current()) {
  ::emu::ptx::ldmatrix(1, true, r, row_address, where);
}
inline void ldmatrix_x2_trans(uint32_t r[2], const void* row_address,
                              std::source_location where = std::source_location::current()) {
  ::emu::ptx::ldmatrix(2, true, r, row_address, where);
}
inline void ldmatrix_x4_trans(uint32_t r[4], const void* row_address,
                              std::source_location where = std::source_location::current()) {
  ::emu::ptx::ldmatrix(4, true, r, row_address, where);
}

template <int Bytes>
inline void cp_async_ca(void* shared_dst, const void* global_src, unsigned src_bytes = Bytes,
                        std::source_location where = std::source_location::current()) {
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async.ca copies 4, 8 or 16 bytes");
  ::emu::ptx::cp_async(false, shared_dst, global_src, Bytes, src_bytes, where);
}
inline void cp_async_cg(void* shared_dst, const void* global_src, unsigned src_bytes = 16,
                        std::source_location where = std::source_location::current()) {
  ::emu::ptx::cp_async(true, shared_dst, global_src, 16, src_bytes, where);
}
inline void cp_async_commit(std::source_location where = std::source_location::current()) {
  ::emu::ptx::cp_async_commit_group(where);
}
template <int NewestPending>
inline void cp_async_wait(std::source_location where = std::source_location::current()) {
  static_assert(NewestPending >= 0, "cp.async.wait_group N >= 0");
  ::emu::ptx::cp_async_wait_group(NewestPending, where);
}
inline void cp_async_wait_all(std::source_location where = std::source_location::current()) {
  ::emu::ptx::cp_async_wait_all(where);
}

#endif

// Two floats rounded to nearest even and packed as the low and high halves of a .b32 fragment register.
template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    static_assert(sizeof v == sizeof r);
    memcpy(&r, &v, sizeof r);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&r, &v, sizeof r);
  }
  return r;
}

}  // namespace coco::ptx
