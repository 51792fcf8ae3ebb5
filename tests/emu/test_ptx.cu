// The PTX wrapper (engine/runtime/ptx.cuh): mma.sync m16n8k16 (bf16, f16), ldmatrix x1/x2/x4 (.trans)
// and cp.async against scalar references built from the PTX ISA's fragment tables; a kernel with a
// planted wrong lane mapping must fail; a small tensor-core GEMM from shared memory; and, under the
// emulator, the diagnostics for partial warps and misaligned addresses and cp.async's group semantics.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/runtime/launch.cuh"
#include "engine/runtime/ptx.cuh"
#include "tests/common/kernel_check.h"
#if defined(COCO_CUDA_EMULATED)
#include "engine/simt/emu_control.h"
#endif

namespace ptx_test {

// Element (row, col) of a row-major matrix with `cols` columns, packed with its right neighbour.
template <class T>
__device__ uint32_t load_pair(const T* m, int cols, int row, int col) {
  uint32_t r;
  memcpy(&r, m + row * cols + col, sizeof r);
  return r;
}

// One warp: D (16x8 f32) = A (16x16 row-major) * B (16x8 given as B^T: 8x16 row-major, i.e. "col") + C.
// `planted_bug` swaps registers a1 and a2 (rows g+8 and columns +8 mixed up), a plausible mapping error.
template <class T>
__global__ void mma_tile_kernel(const T* a, const T* b_transposed, const float* c, float* d, bool planted_bug) {
  const int lane = static_cast<int>(threadIdx.x), g = lane >> 2, t = lane & 3;
  uint32_t fa[4] = {load_pair(a, 16, g, 2 * t), load_pair(a, 16, g + 8, 2 * t), load_pair(a, 16, g, 2 * t + 8),
                    load_pair(a, 16, g + 8, 2 * t + 8)};
  if (planted_bug) {
    const uint32_t swap = fa[1];
    fa[1] = fa[2];
    fa[2] = swap;
  }
  const uint32_t fb[2] = {load_pair(b_transposed, 16, g, 2 * t), load_pair(b_transposed, 16, g, 2 * t + 8)};
  float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
  coco::ptx::mma_m16n8k16<T>(acc, fa, fb, acc);
  d[g * 8 + 2 * t] = acc[0];
  d[g * 8 + 2 * t + 1] = acc[1];
  d[(g + 8) * 8 + 2 * t] = acc[2];
  d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

// One warp: a 16x16 b16 matrix (row-major, rows padded to `stride` elements) staged in shared memory,
// read with ldmatrix; every lane writes its registers in lane order: out[lane * 4 + m].
template <int Matrices, bool Transpose>
__global__ void ldmatrix_kernel(const uint16_t* matrix, uint32_t* out) {
  constexpr int kStride = 24;  // 48-byte rows: 16-byte aligned, not contiguous
  __shared__ __align__(16) uint16_t tile[16 * kStride];
  COCO_POISON_SHARED(tile);
  const int lane = static_cast<int>(threadIdx.x);
  for (int e = lane; e < 256; e += 32) tile[(e / 16) * kStride + e % 16] = matrix[e];
  __syncwarp();
  // Matrix m = lanes 8m..8m+7: m & 1 selects rows 0-7 / 8-15, m >> 1 columns 0-7 / 8-15.
  const int m = lane / 8, row = (m & 1) * 8 + lane % 8, col = (m >> 1) * 8;
  const uint16_t* address = &tile[row * kStride + col];
  uint32_t r[4] = {};
  if constexpr (Matrices == 1) {
    if constexpr (Transpose)
      coco::ptx::ldmatrix_x1_trans(r, address);
    else
      coco::ptx::ldmatrix_x1(r, address);
  } else if constexpr (Matrices == 2) {
    if constexpr (Transpose)
      coco::ptx::ldmatrix_x2_trans(r, address);
    else
      coco::ptx::ldmatrix_x2(r, address);
  } else {
    if constexpr (Transpose)
      coco::ptx::ldmatrix_x4_trans(r, address);
    else
      coco::ptx::ldmatrix_x4(r, address);
  }
  for (int i = 0; i < 4; ++i) out[lane * 4 + i] = r[i];
}

// C (M x N f32) = A (M x K) * B (K x N), both row-major in global memory, with M, N multiples of 16 and
// K a multiple of 16. One warp per 16x16 output tile (two m16n8k16 per k step); A and B are copied to
// shared memory with cp.async (16 bytes per copy) and read with ldmatrix (x4 for A, x4.trans for B).
template <class T, int M, int N, int K>
__global__ void tc_gemm_kernel(const T* a, const T* b, float* c) {
  constexpr int kPad = 8;  // row padding (elements): keeps rows 16-byte aligned
  __shared__ __align__(16) T as[M][K + kPad];
  __shared__ __align__(16) T bs[K][N + kPad];
  COCO_POISON_SHARED(as);
  COCO_POISON_SHARED(bs);
  const int threads = static_cast<int>(blockDim.x);
  for (int e = static_cast<int>(threadIdx.x); e < M * K / 8; e += threads)
    coco::ptx::cp_async_cg(&as[e / (K / 8)][(e % (K / 8)) * 8], a + e * 8);
  for (int e = static_cast<int>(threadIdx.x); e < K * N / 8; e += threads)
    coco::ptx::cp_async_ca<16>(&bs[e / (N / 8)][(e % (N / 8)) * 8], b + e * 8);
  coco::ptx::cp_async_commit();
  coco::ptx::cp_async_wait<0>();
  __syncthreads();
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int tiles_n = N / 16;
  for (int tile = warp; tile < (M / 16) * tiles_n; tile += threads / 32) {
    const int m0 = (tile / tiles_n) * 16, n0 = (tile % tiles_n) * 16;
    float acc[2][4] = {};
    for (int k0 = 0; k0 < K; k0 += 16) {
      uint32_t fa[4], fb[4];
      // A 16x16: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
      coco::ptx::ldmatrix_x4(fa, &as[m0 + (lane % 16)][k0 + (lane / 16) * 8]);
      // B 16x16 (k x n) transposed: matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
      coco::ptx::ldmatrix_x4_trans(fb, &bs[k0 + (lane % 16)][n0 + (lane / 16) * 8]);
      coco::ptx::mma_m16n8k16<T>(acc[0], fa, fb, acc[0]);
      coco::ptx::mma_m16n8k16<T>(acc[1], fa, fb + 2, acc[1]);
    }
    const int g = lane >> 2, t = lane & 3;
    for (int half = 0; half < 2; ++half)
      for (int i = 0; i < 4; ++i) c[(m0 + g + (i >> 1) * 8) * N + n0 + half * 8 + 2 * t + (i & 1)] = acc[half][i];
  }
}

// Lanes 0..15 only: a partial-warp mma (misuse).
__global__ void partial_mma_kernel(float* out) {
  uint32_t a[4] = {}, b[2] = {};
  float acc[4] = {};
  if (threadIdx.x < 16) coco::ptx::mma_m16n8k16<__nv_bfloat16>(acc, a, b, acc);
  out[threadIdx.x] = acc[0];
}

// The two halves of the warp reach mma at different call sites (divergent .aligned instruction).
__global__ void divergent_mma_kernel(float* out) {
  uint32_t a[4] = {}, b[2] = {};
  float acc[4] = {};
  if (threadIdx.x < 16)
    coco::ptx::mma_m16n8k16<__half>(acc, a, b, acc);
  else
    coco::ptx::mma_m16n8k16<__half>(acc, a, b, acc);
  out[threadIdx.x] = acc[0];
}

// cp.async of 16 bytes from an address 4 bytes past a multiple of 16 (a GPU faults).
__global__ void misaligned_cp_async_kernel(const int* src, int* out) {
  __shared__ __align__(16) int s[8];
  if (threadIdx.x == 0) {
    coco::ptx::cp_async_cg(&s[0], src + 1);
    coco::ptx::cp_async_wait_all();
    out[0] = 1;
  }
}

// Lane 3's ldmatrix row address is 8 bytes off (a GPU faults).
__global__ void misaligned_ldmatrix_kernel(uint32_t* out) {
  __shared__ __align__(16) uint16_t tile[8 * 16];
  for (int e = static_cast<int>(threadIdx.x); e < 8 * 16; e += 32) tile[e] = static_cast<uint16_t>(e);
  __syncwarp();
  uint32_t r[1];
  coco::ptx::ldmatrix_x1(r, &tile[(threadIdx.x % 8) * 16 + (threadIdx.x == 3 ? 4 : 0)]);
  out[threadIdx.x] = r[0];
}

// Two cp.async groups; after wait_group 1 only the first has landed (emulator: the second is still
// queued), after wait_group 0 both. A src-size of 4 zero-fills the rest of a 16-byte copy.
__global__ void cp_async_groups_kernel(const int* src, int* out) {
  __shared__ __align__(16) int s[12];
  if (threadIdx.x == 0) {
    for (int i = 0; i < 12; ++i) s[i] = -1;
    coco::ptx::cp_async_cg(&s[0], src);
    coco::ptx::cp_async_commit();
    coco::ptx::cp_async_ca<16>(&s[4], src + 4);
    coco::ptx::cp_async_ca<4>(&s[8], src + 8, 0);  // src-size 0: writes zero
    coco::ptx::cp_async_cg(&s[8], src + 8, 4);     // overwrites: s[8] = src[8], s[9..11] = 0
    coco::ptx::cp_async_commit();
    coco::ptx::cp_async_wait<1>();
    for (int i = 0; i < 12; ++i) out[i] = s[i];
    coco::ptx::cp_async_wait<0>();
    for (int i = 0; i < 12; ++i) out[12 + i] = s[i];
  }
}

}  // namespace ptx_test

namespace {

using coco::testing::GuardedDeviceBuffer;
using namespace ptx_test;

template <class T>
uint16_t bits_of(T v) {
  uint16_t r;
  std::memcpy(&r, &v, sizeof r);
  return r;
}
float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
float to_float(__half v) { return __half2float(v); }
template <class T>
T from_float(float f);
template <>
__nv_bfloat16 from_float<__nv_bfloat16>(float f) {
  return __float2bfloat16_rn(f);
}
template <>
__half from_float<__half>(float f) {
  return __float2half_rn(f);
}

template <class T>
std::vector<T> random_narrow(size_t n, unsigned seed, float scale = 2.0f) {
  std::vector<T> out;
  for (float f : coco::testing::random_floats(n, seed, -scale, scale)) out.push_back(from_float<T>(f));
  return out;
}

// D = A B + C computed from the same 16-bit inputs in double.
template <class T>
std::vector<double> mma_reference(const std::vector<T>& a, const std::vector<T>& b_transposed,
                                  const std::vector<float>& c) {
  std::vector<double> d(16 * 8);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double sum = c[m * 8 + n];
      for (int k = 0; k < 16; ++k)
        sum += static_cast<double>(to_float(a[m * 16 + k])) * to_float(b_transposed[n * 16 + k]);
      d[m * 8 + n] = sum;
    }
  return d;
}

template <class T>
std::vector<double> run_mma(const std::vector<T>& a, const std::vector<T>& bt, const std::vector<float>& c, bool bug) {
  GuardedDeviceBuffer<T> da(a), db(bt);
  GuardedDeviceBuffer<float> dc(c), dd(16 * 8);
  dd.poison();
  COCO_LAUNCH((mma_tile_kernel<T>), dim3(1), dim3(32), 0, nullptr, da.data(), db.data(), dc.data(), dd.data(), bug);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(dd.guards_intact());
  const std::vector<float> d = dd.download();
  return std::vector<double>(d.begin(), d.end());
}

template <class T>
class PtxMma : public ::testing::Test {};
using NarrowTypes = ::testing::Types<__nv_bfloat16, __half>;
TYPED_TEST_SUITE(PtxMma, NarrowTypes);

TYPED_TEST(PtxMma, MatchesScalarReferenceOnRandomFragments) {
  for (unsigned seed = 1; seed <= 4; ++seed) {
    const auto a = random_narrow<TypeParam>(16 * 16, seed);
    const auto bt = random_narrow<TypeParam>(8 * 16, seed + 100);
    const auto c = coco::testing::random_floats(16 * 8, seed + 200, -4.0f, 4.0f);
    const std::vector<double> reference = mma_reference(a, bt, c);
    const std::vector<double> got = run_mma(a, bt, c, false);
    // f32 accumulation of exact products: within a few f32 ulps of the exact sum (the GPU's tensor cores
    // truncate inside their accumulator; the emulator rounds the exact sum once).
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], reference[i], 1e-5 * (1.0 + std::fabs(reference[i]))) << "element " << i << " seed " << seed;
  }
}

TYPED_TEST(PtxMma, PlantedWrongLayoutIsDetected) {
  const auto a = random_narrow<TypeParam>(16 * 16, 7);
  const auto bt = random_narrow<TypeParam>(8 * 16, 8);
  const std::vector<float> c(16 * 8, 0.0f);
  const std::vector<double> reference = mma_reference(a, bt, c);
  EXPECT_TRUE(coco::testing::matches_reference(reference, run_mma(a, bt, c, false), 1e-12, "right layout"));
  EXPECT_FALSE(coco::testing::matches_reference(reference, run_mma(a, bt, c, true), 1e-2, "swapped a1/a2"));
}

TYPED_TEST(PtxMma, InputsAreTheRoundedSixteenBitValues) {
  // 1 + 2^-10 is exact in f16 but rounds to 1 in bf16; products must use the stored 16-bit value.
  std::vector<TypeParam> a(16 * 16, from_float<TypeParam>(0.0f)), bt(8 * 16, from_float<TypeParam>(0.0f));
  a[0] = from_float<TypeParam>(1.0f + 1.0f / 1024.0f);
  bt[0] = from_float<TypeParam>(1.0f);
  const std::vector<double> got = run_mma(a, bt, std::vector<float>(16 * 8, 0.0f), false);
  EXPECT_EQ(got[0], static_cast<double>(to_float(a[0])));
  EXPECT_EQ(got[0], (std::is_same_v<TypeParam, __half> ? 1.0 + 1.0 / 1024.0 : 1.0));
}

// The register each lane should get, from the PTX ISA's ldmatrix description.
std::vector<uint32_t> ldmatrix_reference(const std::vector<uint16_t>& matrix, int matrices, bool transpose) {
  std::vector<uint32_t> out(32 * 4, 0);
  for (int lane = 0; lane < 32; ++lane)
    for (int m = 0; m < matrices; ++m) {
      const int row0 = (m & 1) * 8, col0 = (m >> 1) * 8;
      auto at = [&](int r, int c) { return static_cast<uint32_t>(matrix[(row0 + r) * 16 + col0 + c]); };
      const int q = lane / 4, p = 2 * (lane % 4);
      out[lane * 4 + m] = transpose ? at(p, q) | at(p + 1, q) << 16 : at(q, p) | at(q, p + 1) << 16;
    }
  return out;
}

template <int Matrices, bool Transpose>
void check_ldmatrix() {
  std::vector<uint16_t> matrix(256);
  for (int i = 0; i < 256; ++i) matrix[i] = static_cast<uint16_t>(1000 + i * 7);
  GuardedDeviceBuffer<uint16_t> dm(matrix);
  GuardedDeviceBuffer<uint32_t> out(32 * 4);
  COCO_LAUNCH((ldmatrix_kernel<Matrices, Transpose>), dim3(1), dim3(32), 0, nullptr, dm.data(), out.data());
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(out.download(), ldmatrix_reference(matrix, Matrices, Transpose))
      << "x" << Matrices << (Transpose ? ".trans" : "");
}

TEST(PtxLdmatrix, MatchesThePtxLaneMapping) {
  check_ldmatrix<1, false>();
  check_ldmatrix<2, false>();
  check_ldmatrix<4, false>();
  check_ldmatrix<1, true>();
  check_ldmatrix<2, true>();
  check_ldmatrix<4, true>();
}

template <class T>
void check_gemm() {
  constexpr int M = 32, N = 32, K = 48;
  const auto a = random_narrow<T>(M * K, 11, 1.0f);
  const auto b = random_narrow<T>(K * N, 12, 1.0f);
  std::vector<double> reference(M * N, 0.0);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j)
      for (int k = 0; k < K; ++k)
        reference[i * N + j] += static_cast<double>(to_float(a[i * K + k])) * to_float(b[k * N + j]);
  GuardedDeviceBuffer<T> da(a), db(b);
  GuardedDeviceBuffer<float> dc(M * N);
  dc.poison();
  COCO_LAUNCH((tc_gemm_kernel<T, M, N, K>), dim3(1), dim3(64), 0, nullptr, da.data(), db.data(), dc.data());
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> c = dc.download();
  EXPECT_TRUE(coco::testing::matches_reference(reference, std::vector<double>(c.begin(), c.end()), 1e-12, "tc gemm"));
  EXPECT_TRUE(dc.guards_intact());
}

TEST(PtxGemm, SmallTensorCoreGemmMatchesReference) {
  check_gemm<__nv_bfloat16>();
  check_gemm<__half>();
}

#if defined(COCO_CUDA_EMULATED)

TEST(PtxGemm, ScheduleInvariant) {
  coco::testing::expect_schedule_invariant([] {
    constexpr int M = 32, N = 32, K = 48;
    GuardedDeviceBuffer<__nv_bfloat16> da(random_narrow<__nv_bfloat16>(M * K, 3)),
        db(random_narrow<__nv_bfloat16>(K * N, 4));
    GuardedDeviceBuffer<float> dc(M * N);
    COCO_LAUNCH((tc_gemm_kernel<__nv_bfloat16, M, N, K>), dim3(1), dim3(64), 0, nullptr, da.data(), db.data(),
                dc.data());
    return dc.download_bytes();
  });
}

TEST(PtxCpAsync, GroupsLandWhenWaitedFor) {
  std::vector<int> src(12);
  for (int i = 0; i < 12; ++i) src[i] = 100 + i;
  GuardedDeviceBuffer<int> dsrc(src), out(24);
  COCO_LAUNCH(cp_async_groups_kernel, dim3(1), dim3(32), 0, nullptr, dsrc.data(), out.data());
  const std::vector<int> r = out.download();
  const std::vector<int> after_wait1{100, 101, 102, 103, -1, -1, -1, -1, -1, -1, -1, -1};
  const std::vector<int> after_wait0{100, 101, 102, 103, 104, 105, 106, 107, 108, 0, 0, 0};
  EXPECT_EQ(std::vector<int>(r.begin(), r.begin() + 12), after_wait1);
  EXPECT_EQ(std::vector<int>(r.begin() + 12, r.end()), after_wait0);
}

TEST(PtxMisuse, PartialWarpMmaIsDiagnosedWithKernelBlockAndWarp) {
  emu::ScopedConfig scope;
  scope->strict = false;
  GuardedDeviceBuffer<float> out(64);
  const uint64_t warnings = emu::stats().warnings;
  COCO_LAUNCH(partial_mma_kernel, dim3(2), dim3(64), 0, nullptr, out.data());
  EXPECT_GE(emu::stats().warnings - warnings, 1u);
  const std::string message = emu::last_diagnostic();
  EXPECT_NE(message.find("kernel partial_mma_kernel block ("), std::string::npos) << message;
  EXPECT_NE(message.find("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"), std::string::npos) << message;
  EXPECT_NE(message.find("in warp 0 is executed by lanes 0x0000ffff only"), std::string::npos) << message;
}

TEST(PtxMisuse, PartialWarpMmaAbortsInStrictMode) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        emu::config().strict = true;
        GuardedDeviceBuffer<float> out(32);
        COCO_LAUNCH(partial_mma_kernel, dim3(1), dim3(32), 0, nullptr, out.data());
      },
      "kernel partial_mma_kernel block \\(0,0,0\\) thread \\(0,0,0\\): mma.sync.aligned");
}

// A kernel fault is sticky (engine/simt/emu_control.h): the two tests below start over at their end.
TEST(PtxMisuse, MisalignedLdmatrixRowFailsTheLaunch) {
  const emu::StickyErrorScope start_over;
  GuardedDeviceBuffer<uint32_t> out(32);
  EXPECT_EQ(coco::launch_named("misaligned_ldmatrix_kernel", misaligned_ldmatrix_kernel, dim3(1), dim3(32), 0, nullptr,
                               out.data()),
            cudaErrorMisalignedAddress);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMisalignedAddress);
  const std::string message = emu::last_diagnostic();
  EXPECT_NE(message.find("kernel misaligned_ldmatrix_kernel block (0,0,0) thread (3,0,0): misaligned address"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("ldmatrix.sync.aligned.m8n8.x1.shared.b16 (row address of lane 3) needs 16-byte alignment "
                         "(the address is 8 bytes past a multiple of 16) at test_ptx.cu:"),
            std::string::npos)
      << message;
}

TEST(PtxMisuse, DivergentCallSitesAreDiagnosed) {
  emu::ScopedConfig scope;
  scope->strict = false;
  GuardedDeviceBuffer<float> out(32);
  const uint64_t warnings = emu::stats().warnings;
  COCO_LAUNCH(divergent_mma_kernel, dim3(1), dim3(32), 0, nullptr, out.data());
  EXPECT_EQ(emu::stats().warnings - warnings, 1u);
  const std::string message = emu::last_diagnostic();
  EXPECT_NE(message.find("kernel divergent_mma_kernel block (0,0,0) thread (16,0,0): warp 0: lane 16 executes "
                         "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 at test_ptx.cu:"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("must be the same instruction for every lane"), std::string::npos) << message;
}

TEST(PtxMisuse, MisalignedCpAsyncFailsTheLaunch) {
  const emu::StickyErrorScope start_over;
  GuardedDeviceBuffer<int> src(8), out(1);
  EXPECT_EQ(coco::launch(misaligned_cp_async_kernel, dim3(1), dim3(32), 0, nullptr, src.data(), out.data()),
            cudaErrorMisalignedAddress);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMisalignedAddress);
  const std::string message = emu::last_diagnostic();
  EXPECT_NE(message.find("16-byte cp.async.cg.shared.global (global source) needs 16-byte alignment (the address is "
                         "4 bytes past a multiple of 16)"),
            std::string::npos)
      << message;
}

#endif  // COCO_CUDA_EMULATED

}  // namespace
