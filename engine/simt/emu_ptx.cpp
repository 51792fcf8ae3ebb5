// Emulated PTX instructions (engine/simt/emu_ptx.h).
#if defined(COCO_CUDA_EMULATED) || defined(EMU_STANDALONE)
#include "engine/simt/emu_ptx.h"

#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "engine/simt/cuda_emu.h"

namespace emu::ptx {
namespace {

using detail::WarpCollective;

float b16_to_float(MmaInput input, uint16_t bits) {
  if (input == MmaInput::BF16) {
    const uint32_t widened = static_cast<uint32_t>(bits) << 16;
    float f;
    std::memcpy(&f, &widened, sizeof f);
    return f;
  }
  __half_raw raw;
  raw.x = bits;
  return __half2float(__half(raw));
}

// Element `index` (0 = low half) of a packed pair of 16-bit values.
uint16_t half_of(uint32_t reg, unsigned index) { return static_cast<uint16_t>(index ? reg >> 16 : reg & 0xFFFFu); }

struct MmaRecord : WarpCollective {
  MmaInput input;
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
  float* d;
};

// PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type" (.f16/.bf16), with
// groupID = lane >> 2 and threadID_in_group = lane % 4:
//   A (16 x 16, row): a_i, i = 0..7 (a_{2r}, a_{2r+1} in register r, low half first):
//       row = groupID (+8 when i is 2, 3, 6 or 7), col = 2 threadID_in_group + (i & 1) (+8 when i >= 4)
//   B (16 x 8, col):  b_i, i = 0..3: row (k) = 2 threadID_in_group + (i & 1) (+8 when i >= 2), col = groupID
//   C, D (16 x 8):    c_i, i = 0..3: row = groupID (+8 when i >= 2), col = 2 threadID_in_group + (i & 1)
void complete_mma(WarpCollective* const lanes[32]) {
  MmaInput input = MmaInput::BF16;
  for (unsigned l = 0; l < 32; ++l)
    if (lanes[l]) {
      input = static_cast<const MmaRecord*>(lanes[l])->input;
      break;
    }
  float a[16][16] = {}, b[16][8] = {}, c[16][8] = {};
  for (unsigned lane = 0; lane < 32; ++lane) {
    const auto* r = static_cast<const MmaRecord*>(lanes[lane]);
    if (!r) continue;  // diagnosed already; its elements stay zero
    const unsigned group = lane >> 2, t = lane & 3;
    for (unsigned i = 0; i < 8; ++i)
      a[group + ((i >> 1) & 1) * 8][2 * t + (i & 1) + (i >> 2) * 8] = b16_to_float(input, half_of(r->a[i >> 1], i & 1));
    for (unsigned i = 0; i < 4; ++i)
      b[2 * t + (i & 1) + (i >> 1) * 8][group] = b16_to_float(input, half_of(r->b[i >> 1], i & 1));
    for (unsigned i = 0; i < 4; ++i) c[group + (i >> 1) * 8][2 * t + (i & 1)] = r->c[i];
  }
  for (unsigned lane = 0; lane < 32; ++lane) {
    auto* r = static_cast<MmaRecord*>(lanes[lane]);
    if (!r) continue;
    const unsigned group = lane >> 2, t = lane & 3;
    for (unsigned i = 0; i < 4; ++i) {
      const unsigned row = group + (i >> 1) * 8, col = 2 * t + (i & 1);
      double sum = c[row][col];
      for (unsigned k = 0; k < 16; ++k) sum += static_cast<double>(a[row][k]) * b[k][col];
      r->d[i] = static_cast<float>(sum);
    }
  }
}

struct LdmatrixRecord : WarpCollective {
  unsigned matrices;
  bool transpose;
  const void* row_address;
  uint32_t* out;
};

// PTX ISA, ldmatrix: lanes 8m..8m+7 address the eight 16-byte rows of matrix m. Without .trans lane l
// receives row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1 of each matrix; with .trans it receives
// column l / 4, rows 2 (l % 4) and 2 (l % 4) + 1 (the matrix transposed).
void complete_ldmatrix(WarpCollective* const lanes[32]) {
  unsigned matrices = 0;
  for (unsigned l = 0; l < 32 && !matrices; ++l)
    if (lanes[l]) matrices = static_cast<const LdmatrixRecord*>(lanes[l])->matrices;
  uint16_t rows[4][8][8] = {};
  for (unsigned m = 0; m < matrices; ++m)
    for (unsigned row = 0; row < 8; ++row) {
      const auto* r = static_cast<const LdmatrixRecord*>(lanes[8 * m + row]);
      if (r) std::memcpy(rows[m][row], r->row_address, 16);
    }
  for (unsigned lane = 0; lane < 32; ++lane) {
    auto* r = static_cast<LdmatrixRecord*>(lanes[lane]);
    if (!r) continue;
    for (unsigned m = 0; m < matrices; ++m) {
      uint16_t lo, hi;
      if (r->transpose) {
        lo = rows[m][2 * (lane & 3)][lane >> 2];
        hi = rows[m][2 * (lane & 3) + 1][lane >> 2];
      } else {
        lo = rows[m][lane >> 2][2 * (lane & 3)];
        hi = rows[m][lane >> 2][2 * (lane & 3) + 1];
      }
      r->out[m] = static_cast<uint32_t>(lo) | static_cast<uint32_t>(hi) << 16;
    }
  }
}

const char* ldmatrix_name(unsigned matrices, bool transpose) {
  static const char* const names[2][3] = {
      {"ldmatrix.sync.aligned.m8n8.x1.shared.b16", "ldmatrix.sync.aligned.m8n8.x2.shared.b16",
       "ldmatrix.sync.aligned.m8n8.x4.shared.b16"},
      {"ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16", "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16",
       "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"}};
  return names[transpose][matrices == 1 ? 0 : matrices == 2 ? 1 : 2];
}

// Per emulated thread: its queued cp.async copies, uncommitted and in committed groups.
struct PendingCopy {
  void* dst;
  const void* src;
  unsigned bytes, src_bytes;
};
struct CopyQueue {
  uint64_t epoch = ~uint64_t{0};
  std::vector<PendingCopy> uncommitted;
  std::deque<std::vector<PendingCopy>> committed;  // oldest first
};
thread_local std::vector<CopyQueue> t_copy_queues;  // blocks run start to end on one OS thread

// The emulated thread calling `instruction`; outside a kernel there is none (fatal, like a GPU never gets there).
const ThreadCtx& calling_thread(const char* instruction, const std::source_location& where) {
  if (t_thread == nullptr) detail::trap((std::string(instruction) + " called outside a kernel").c_str(), where);
  return *t_thread;
}

CopyQueue& queue_of_calling_thread(const std::source_location& where) {
  const unsigned linear = calling_thread("cp.async", where).linear;
  if (t_copy_queues.size() <= linear) t_copy_queues.resize(linear + 1);
  CopyQueue& q = t_copy_queues[linear];
  const uint64_t epoch = detail::block_epoch();
  if (q.epoch != epoch) {  // left over from an earlier block of this OS thread (never waited for)
    q.epoch = epoch;
    q.uncommitted.clear();
    q.committed.clear();
  }
  return q;
}

void perform(const std::vector<PendingCopy>& group) {
  for (const PendingCopy& c : group) {
    if (c.src_bytes) std::memcpy(c.dst, c.src, c.src_bytes);
    if (c.src_bytes < c.bytes) std::memset(static_cast<char*>(c.dst) + c.src_bytes, 0, c.bytes - c.src_bytes);
  }
}

}  // namespace

void mma_m16n8k16(MmaInput input, float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4],
                  const std::source_location& where) {
  MmaRecord record;
  calling_thread("mma.sync", where);
  record.instruction = input == MmaInput::BF16 ? "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
                                               : "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32";
  record.complete = complete_mma;
  record.input = input;
  std::memcpy(record.a, a, sizeof record.a);
  std::memcpy(record.b, b, sizeof record.b);
  std::memcpy(record.c, c, sizeof record.c);  // before d is written: d may alias c
  float result[4] = {record.c[0], record.c[1], record.c[2], record.c[3]};
  record.d = result;
  detail::warp_collective(&record, where);
  std::memcpy(d, result, sizeof result);
}

void ldmatrix(unsigned matrices, bool transpose, uint32_t* out, const void* row_address,
              const std::source_location& where) {
  LdmatrixRecord record;
  record.instruction = ldmatrix_name(matrices, transpose);
  record.complete = complete_ldmatrix;
  record.matrices = matrices;
  record.transpose = transpose;
  record.row_address = row_address;
  uint32_t result[4] = {};
  record.out = result;
  const unsigned lane = calling_thread(record.instruction, where).lane;
  if (lane < 8 * matrices && reinterpret_cast<uintptr_t>(row_address) % 16 != 0) {
    // A GPU faults; here the warp goes on with the row rounded down to its 16-byte boundary.
    const std::string what = std::string(record.instruction) + " (row address of lane " + std::to_string(lane) + ")";
    detail::misaligned_access(row_address, 16, what.c_str(), where.file_name(), where.line());
    record.row_address = reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(row_address) & ~uintptr_t{15});
  }
  detail::warp_collective(&record, where);
  std::memcpy(out, result, sizeof(uint32_t) * matrices);
}

void cp_async(bool cache_global, void* shared_dst, const void* global_src, unsigned bytes, unsigned src_bytes,
              const std::source_location& where) {
  const char* name = cache_global ? "cp.async.cg.shared.global" : "cp.async.ca.shared.global";
  const bool size_ok = cache_global ? bytes == 16 : (bytes == 4 || bytes == 8 || bytes == 16);
  if (!size_ok || src_bytes > bytes) {
    const std::string what = std::string(name) + ": cp-size " + std::to_string(bytes) + ", src-size " +
                             std::to_string(src_bytes) + " (allowed: cp-size " + (cache_global ? "16" : "4, 8 or 16") +
                             ", src-size <= cp-size)";
    detail::report_misuse(what.c_str(), where);
    return;
  }
  // Both addresses must be aligned to cp-size; a GPU faults, here the copy is dropped.
  const bool shared_misaligned = reinterpret_cast<uintptr_t>(shared_dst) % bytes != 0;
  if (shared_misaligned || reinterpret_cast<uintptr_t>(global_src) % bytes != 0) {
    const std::string what = std::to_string(bytes) + "-byte " + name + " (" +
                             (shared_misaligned ? "shared destination" : "global source") + ")";
    detail::misaligned_access(shared_misaligned ? shared_dst : global_src, bytes, what.c_str(), where.file_name(),
                              where.line());
    return;
  }
  queue_of_calling_thread(where).uncommitted.push_back({shared_dst, global_src, bytes, src_bytes});
}

void cp_async_commit_group(const std::source_location& where) {
  CopyQueue& q = queue_of_calling_thread(where);
  q.committed.push_back(std::move(q.uncommitted));  // an empty group is a valid group
  q.uncommitted.clear();
}

void cp_async_wait_group(unsigned newest_pending, const std::source_location& where) {
  CopyQueue& q = queue_of_calling_thread(where);
  while (q.committed.size() > newest_pending) {
    perform(q.committed.front());
    q.committed.pop_front();
  }
}

void cp_async_wait_all(const std::source_location& where) {
  cp_async_commit_group(where);
  cp_async_wait_group(0, where);
}

}  // namespace emu::ptx
#endif
