// Host implementations of the PTX instructions that engine/runtime/ptx.cuh wraps (emulated mode):
// mma.sync.aligned.m16n8k16 (bf16/f16 in, f32 accumulate), ldmatrix.sync.aligned.m8n8.x{1,2,4}
// (.trans).shared.b16, and cp.async.{ca,cg}.shared.global with commit_group / wait_group.
//
// mma and ldmatrix are warp-collective (emu::detail::warp_collective): the lanes' operands are
// gathered, the instruction runs once for the warp with the per-lane fragment layouts of the PTX ISA,
// and each lane gets exactly the registers the hardware would give it, so a kernel that mixes up a
// lane mapping computes the wrong matrix here as on the GPU. A call by fewer than 32 lanes or a
// cp-size not allowed for the variant is diagnosed with the kernel, block, thread and warp; a
// misaligned ldmatrix row or cp.async address fails the launch with cudaErrorMisalignedAddress, as
// a GPU does (emu::detail::misaligned_access).
//
// Numerics of the emulated mma: bf16/f16 operands are exact in float and so are their products; the
// 16 products and the f32 accumulator are summed in double and rounded once to f32 (round to nearest
// even). Real tensor cores sum with a wider-than-f32 internal accumulator and truncate, so results may
// differ from the GPU in the last bit or two of f32; kernels are checked against references with NMSE
// tolerances, never bit for bit against the GPU.
//
// cp.async: a copy is queued per emulated thread when issued and performed when that thread's
// cp.async.wait_group retires its group (or never, if it never waits), so a kernel that reads the
// destination before waiting reads stale or poisoned shared memory, as it may on the GPU.
#pragma once
#include <cstdint>
#include <source_location>

namespace emu::ptx {

enum class MmaInput : uint8_t { BF16, F16 };

// d = a * b + c for one m16n8k16 tile: a 4 x .b32 (8 x 16-bit), b 2 x .b32, c/d 4 x f32 per lane.
void mma_m16n8k16(MmaInput input, float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                  const std::source_location& where);

// matrices = 1, 2 or 4; lanes 8m..8m+7 give the row addresses of matrix m (16-byte aligned).
void ldmatrix(unsigned matrices, bool transpose, uint32_t* out, const void* row_address,
              const std::source_location& where);

// cache_global: the .cg variant (cp-size 16 only); otherwise .ca (4, 8 or 16). src_bytes < bytes
// zero-fills the rest of the destination (the src-size operand).
void cp_async(bool cache_global, void* shared_dst, const void* global_src, unsigned bytes, unsigned src_bytes,
              const std::source_location& where);
void cp_async_commit_group(const std::source_location& where);
// Completes every committed group of the calling thread except the `newest_pending` most recent.
void cp_async_wait_group(unsigned newest_pending, const std::source_location& where);
// cp.async.wait_all: commit_group, then wait_group 0.
void cp_async_wait_all(const std::source_location& where);

}  // namespace emu::ptx
