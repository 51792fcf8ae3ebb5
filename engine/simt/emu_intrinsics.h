// Device functions for the SIMT emulator (included by cuda_emu.h): atomics, fast-math and bit
// intrinsics, and the fp16/bf16 functions that cuda_fp16.h / cuda_bf16.h declare only for device
// code. Each is a host implementation of the CUDA function of the same name and signature.
//
// Precision notes: fast-math intrinsics (__expf, __logf, __fdividef, rsqrtf, ...) are computed
// exactly rounded here, while the GPU uses approximations; __hfma rounds through double (one extra
// rounding is possible only in extreme exponent ranges); half/bf16 math functions evaluate in float.
#pragma once
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ------------------------------------------------------------------------------------------------
// Atomics: real atomics, since blocks run concurrently on several OS threads. CUDA's atomics are
// relaxed; so are these. Each checks that its address is aligned to the word it updates (a GPU
// faults otherwise: engine/simt/cuda_emu.h, misaligned_access).
namespace emu::detail {

template <class T>
using atomic_word_t =
    std::conditional_t<sizeof(T) == 2, uint16_t, std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;

// Compare-and-swap loop applying `op(old, value)`; returns the old value.
template <class T, class Op>
inline T atomic_update(T* address, T value, Op op, const char* intrinsic, const std::source_location& where) {
  static_assert(sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8, "atomic word size");
  using Word = atomic_word_t<T>;
  Word* word = reinterpret_cast<Word*>(checked_atomic_address(address, intrinsic, where));
  Word expected = __atomic_load_n(word, __ATOMIC_RELAXED), desired;
  T old;
  do {
    std::memcpy(static_cast<void*>(&old), &expected, sizeof(T));
    const T updated = op(old, value);
    std::memcpy(&desired, static_cast<const void*>(&updated), sizeof(T));
  } while (!__atomic_compare_exchange_n(word, &expected, desired, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return old;
}

}  // namespace emu::detail

#define EMU_ATOMIC_WHERE std::source_location where = std::source_location::current()
#define EMU_ATOMIC_ADDRESS(name) ::emu::detail::checked_atomic_address(address, name, where)
#define EMU_ATOMIC_UPDATE(T, name, expression) \
  ::emu::detail::atomic_update(                \
      address, value, [](T a, T b) { return expression; }, name, where)
#define EMU_INTEGER_ATOMICS(T)                                                                             \
  inline T atomicAdd(T* address, T value, EMU_ATOMIC_WHERE) {                                              \
    return __atomic_fetch_add(EMU_ATOMIC_ADDRESS("atomicAdd"), value, __ATOMIC_RELAXED);                   \
  }                                                                                                        \
  inline T atomicAnd(T* address, T value, EMU_ATOMIC_WHERE) {                                              \
    return __atomic_fetch_and(EMU_ATOMIC_ADDRESS("atomicAnd"), value, __ATOMIC_RELAXED);                   \
  }                                                                                                        \
  inline T atomicOr(T* address, T value, EMU_ATOMIC_WHERE) {                                               \
    return __atomic_fetch_or(EMU_ATOMIC_ADDRESS("atomicOr"), value, __ATOMIC_RELAXED);                     \
  }                                                                                                        \
  inline T atomicXor(T* address, T value, EMU_ATOMIC_WHERE) {                                              \
    return __atomic_fetch_xor(EMU_ATOMIC_ADDRESS("atomicXor"), value, __ATOMIC_RELAXED);                   \
  }                                                                                                        \
  inline T atomicExch(T* address, T value, EMU_ATOMIC_WHERE) {                                             \
    return __atomic_exchange_n(EMU_ATOMIC_ADDRESS("atomicExch"), value, __ATOMIC_RELAXED);                 \
  }                                                                                                        \
  inline T atomicMax(T* address, T value, EMU_ATOMIC_WHERE) {                                              \
    return EMU_ATOMIC_UPDATE(T, "atomicMax", a > b ? a : b);                                               \
  }                                                                                                        \
  inline T atomicMin(T* address, T value, EMU_ATOMIC_WHERE) {                                              \
    return EMU_ATOMIC_UPDATE(T, "atomicMin", a < b ? a : b);                                               \
  }                                                                                                        \
  inline T atomicCAS(T* address, T compare, T value, EMU_ATOMIC_WHERE) {                                   \
    __atomic_compare_exchange_n(EMU_ATOMIC_ADDRESS("atomicCAS"), &compare, value, false, __ATOMIC_RELAXED, \
                                __ATOMIC_RELAXED);                                                         \
    return compare;                                                                                        \
  }
EMU_INTEGER_ATOMICS(int)
EMU_INTEGER_ATOMICS(unsigned int)
EMU_INTEGER_ATOMICS(unsigned long long)
#undef EMU_INTEGER_ATOMICS
inline int atomicSub(int* address, int value, EMU_ATOMIC_WHERE) {
  return __atomic_fetch_sub(EMU_ATOMIC_ADDRESS("atomicSub"), value, __ATOMIC_RELAXED);
}
inline unsigned atomicSub(unsigned* address, unsigned value, EMU_ATOMIC_WHERE) {
  return __atomic_fetch_sub(EMU_ATOMIC_ADDRESS("atomicSub"), value, __ATOMIC_RELAXED);
}
inline long long atomicMax(long long* address, long long value, EMU_ATOMIC_WHERE) {
  return EMU_ATOMIC_UPDATE(long long, "atomicMax", a > b ? a : b);
}
inline long long atomicMin(long long* address, long long value, EMU_ATOMIC_WHERE) {
  return EMU_ATOMIC_UPDATE(long long, "atomicMin", a < b ? a : b);
}
inline unsigned short atomicCAS(unsigned short* address, unsigned short compare, unsigned short value,
                                EMU_ATOMIC_WHERE) {
  __atomic_compare_exchange_n(EMU_ATOMIC_ADDRESS("atomicCAS"), &compare, value, false, __ATOMIC_RELAXED,
                              __ATOMIC_RELAXED);
  return compare;
}
// ((old >= limit) ? 0 : old + 1) and (((old == 0) || (old > limit)) ? limit : old - 1)
inline unsigned atomicInc(unsigned* address, unsigned limit, EMU_ATOMIC_WHERE) {
  return ::emu::detail::atomic_update(
      address, limit, [](unsigned old, unsigned l) { return old >= l ? 0u : old + 1; }, "atomicInc", where);
}
inline unsigned atomicDec(unsigned* address, unsigned limit, EMU_ATOMIC_WHERE) {
  return ::emu::detail::atomic_update(
      address, limit, [](unsigned old, unsigned l) { return old == 0 || old > l ? l : old - 1; }, "atomicDec", where);
}
inline float atomicAdd(float* address, float value, EMU_ATOMIC_WHERE) {
  return EMU_ATOMIC_UPDATE(float, "atomicAdd", a + b);
}
inline double atomicAdd(double* address, double value, EMU_ATOMIC_WHERE) {
  return EMU_ATOMIC_UPDATE(double, "atomicAdd", a + b);
}
inline float atomicExch(float* address, float value, EMU_ATOMIC_WHERE) {
  return EMU_ATOMIC_UPDATE(float, "atomicExch", ((void)a, b));
}
inline __half atomicAdd(__half* address, __half value, EMU_ATOMIC_WHERE) {
  return EMU_ATOMIC_UPDATE(__half, "atomicAdd", __hadd(a, b));
}
inline __half2 atomicAdd(__half2* address, __half2 value, EMU_ATOMIC_WHERE) {
  return EMU_ATOMIC_UPDATE(__half2, "atomicAdd", __hadd2(a, b));
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* address, __nv_bfloat16 value, EMU_ATOMIC_WHERE) {
  return EMU_ATOMIC_UPDATE(__nv_bfloat16, "atomicAdd", __hadd(a, b));
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* address, __nv_bfloat162 value, EMU_ATOMIC_WHERE) {
  return EMU_ATOMIC_UPDATE(__nv_bfloat162, "atomicAdd", __hadd2(a, b));
}
#undef EMU_ATOMIC_UPDATE
#undef EMU_ATOMIC_ADDRESS
#undef EMU_ATOMIC_WHERE
// Scoped variants: every scope is the whole (host) memory system here.
#define EMU_SCOPED_ATOMIC(name)                             \
  template <class... A>                                     \
  inline auto name##_block(A... a)->decltype(name(a...)) {  \
    return name(a...);                                      \
  }                                                         \
  template <class... A>                                     \
  inline auto name##_system(A... a)->decltype(name(a...)) { \
    return name(a...);                                      \
  }
EMU_SCOPED_ATOMIC(atomicAdd)
EMU_SCOPED_ATOMIC(atomicSub)
EMU_SCOPED_ATOMIC(atomicExch)
EMU_SCOPED_ATOMIC(atomicMin)
EMU_SCOPED_ATOMIC(atomicMax)
EMU_SCOPED_ATOMIC(atomicInc)
EMU_SCOPED_ATOMIC(atomicDec)
EMU_SCOPED_ATOMIC(atomicCAS)
EMU_SCOPED_ATOMIC(atomicAnd)
EMU_SCOPED_ATOMIC(atomicOr)
EMU_SCOPED_ATOMIC(atomicXor)
#undef EMU_SCOPED_ATOMIC

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_signal_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// ------------------------------------------------------------------------------------------------
// Cache-hinted loads and stores.
template <class T>
inline T __ldg(const T* p) {
  return *p;
}
template <class T>
inline T __ldca(const T* p) {
  return *p;
}
template <class T>
inline T __ldcg(const T* p) {
  return *p;
}
template <class T>
inline T __ldcs(const T* p) {
  return *p;
}
template <class T>
inline T __ldlu(const T* p) {
  return *p;
}
template <class T>
inline T __ldcv(const T* p) {
  return *p;
}
template <class T>
inline void __stwb(T* p, T v) {
  *p = v;
}
template <class T>
inline void __stcg(T* p, T v) {
  *p = v;
}
template <class T>
inline void __stcs(T* p, T v) {
  *p = v;
}
template <class T>
inline void __stwt(T* p, T v) {
  *p = v;
}

// ------------------------------------------------------------------------------------------------
// Single-precision intrinsics (rounding-mode suffixes map to round-to-nearest here).
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) {
  *s = std::sin(x);
  *c = std::cos(x);
}
inline void sincosf(float x, float* s, float* c) {
  *s = std::sin(x);
  *c = std::cos(x);
}
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float exp10f(float x) { return std::pow(10.0f, x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / std::cbrt(x); }
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : (x > 0.0f ? x : 0.0f); }  // NaN -> 0
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fadd_rz(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fmul_rz(float a, float b) { return a * b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fmaf_rz(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float normcdff(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * std::erfc(-x * 0.70710678118654752); }
inline float sinpif(float x) { return std::sin(x * 3.14159265358979323846f); }
inline float cospif(float x) { return std::cos(x * 3.14159265358979323846f); }

// ------------------------------------------------------------------------------------------------
// Conversions and reinterpretation.
inline int __float_as_int(float x) {
  int i;
  std::memcpy(&i, &x, 4);
  return i;
}
inline unsigned __float_as_uint(float x) {
  unsigned i;
  std::memcpy(&i, &x, 4);
  return i;
}
inline float __int_as_float(int i) {
  float x;
  std::memcpy(&x, &i, 4);
  return x;
}
inline float __uint_as_float(unsigned i) {
  float x;
  std::memcpy(&x, &i, 4);
  return x;
}
inline long long __double_as_longlong(double x) {
  long long i;
  std::memcpy(&i, &x, 8);
  return i;
}
inline double __longlong_as_double(long long i) {
  double x;
  std::memcpy(&x, &i, 8);
  return x;
}
inline int __double2hiint(double x) { return static_cast<int>(__double_as_longlong(x) >> 32); }
inline int __double2loint(double x) { return static_cast<int>(static_cast<uint32_t>(__double_as_longlong(x))); }
inline double __hiloint2double(int hi, int lo) {
  return __longlong_as_double(
      static_cast<long long>((static_cast<uint64_t>(static_cast<uint32_t>(hi)) << 32) | static_cast<uint32_t>(lo)));
}
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(std::trunc(x)); }
inline int __float2int_rd(float x) { return static_cast<int>(std::floor(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(std::ceil(x)); }
inline unsigned __float2uint_rn(float x) { return static_cast<unsigned>(std::nearbyint(x)); }
inline unsigned __float2uint_rz(float x) { return static_cast<unsigned>(std::trunc(x)); }
inline long long __float2ll_rn(float x) { return static_cast<long long>(std::nearbyint(x)); }
inline long long __float2ll_rz(float x) { return static_cast<long long>(std::trunc(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline float __uint2float_rn(unsigned x) { return static_cast<float>(x); }
inline float __ll2float_rn(long long x) { return static_cast<float>(x); }
inline float __double2float_rn(double x) { return static_cast<float>(x); }
inline int __double2int_rn(double x) { return static_cast<int>(std::nearbyint(x)); }

// ------------------------------------------------------------------------------------------------
// Integer and bit intrinsics.
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(static_cast<unsigned>(x)) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll(static_cast<unsigned long long>(x)) : 64; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
  return (x >> 16) | (x << 16);
}
inline unsigned long long __brevll(unsigned long long x) {
  return (static_cast<unsigned long long>(__brev(static_cast<unsigned>(x))) << 32) |
         __brev(static_cast<unsigned>(x >> 32));
}
// Result byte i = byte (selector nibble i & 7) of the 8-byte value {y:x}.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const unsigned long long bytes = (static_cast<unsigned long long>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((bytes >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return r;
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (shift & 31)) >> 32);
}
inline unsigned __funnelshift_lc(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>((v << (shift > 32 ? 32 : shift)) >> 32);
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (shift & 31));
}
inline unsigned __funnelshift_rc(unsigned lo, unsigned hi, unsigned shift) {
  const unsigned long long v = (static_cast<unsigned long long>(hi) << 32) | lo;
  return static_cast<unsigned>(v >> (shift > 32 ? 32 : shift));
}
inline unsigned __umulhi(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline long long __mul64hi(long long a, long long b) {
  return static_cast<long long>((static_cast<__int128>(a) * b) >> 64);
}
inline int __mul24(int a, int b) { return static_cast<int>(static_cast<long long>((a << 8) >> 8) * ((b << 8) >> 8)); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xFFFFFFu) * (b & 0xFFFFFFu); }
inline int __hadd(int a, int b) { return static_cast<int>((static_cast<long long>(a) + b) >> 1); }
inline int __rhadd(int a, int b) { return static_cast<int>((static_cast<long long>(a) + b + 1) >> 1); }
inline unsigned __uhadd(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) + b) >> 1);
}
inline unsigned __urhadd(unsigned a, unsigned b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) + b + 1) >> 1);
}
inline unsigned __sad(int a, int b, unsigned c) { return c + static_cast<unsigned>(a > b ? a - b : b - a); }
inline unsigned __usad(unsigned a, unsigned b, unsigned c) { return c + (a > b ? a - b : b - a); }

// CUDA device code calls unqualified min/max on scalars (mixed signedness goes unsigned, like CUDA).
#define EMU_MIN_MAX(R, A, B)                                                                                       \
  inline R max(A a, B b) { return static_cast<R>(a) > static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); } \
  inline R min(A a, B b) { return static_cast<R>(a) < static_cast<R>(b) ? static_cast<R>(a) : static_cast<R>(b); }
EMU_MIN_MAX(int, int, int)
EMU_MIN_MAX(unsigned, unsigned, unsigned)
EMU_MIN_MAX(unsigned, int, unsigned)
EMU_MIN_MAX(unsigned, unsigned, int)
EMU_MIN_MAX(long, long, long)
EMU_MIN_MAX(unsigned long, unsigned long, unsigned long)
EMU_MIN_MAX(long long, long long, long long)
EMU_MIN_MAX(unsigned long long, unsigned long long, unsigned long long)
EMU_MIN_MAX(unsigned long long, long long, unsigned long long)
EMU_MIN_MAX(unsigned long long, unsigned long long, long long)
#undef EMU_MIN_MAX
inline float max(float a, float b) { return std::fmax(a, b); }
inline float min(float a, float b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(float a, double b) { return std::fmax(a, b); }
inline double min(float a, double b) { return std::fmin(a, b); }
inline double max(double a, float b) { return std::fmax(a, b); }
inline double min(double a, float b) { return std::fmin(a, b); }

inline long long clock64() { return static_cast<long long>(__builtin_ia32_rdtsc()); }
inline void __nanosleep(unsigned) {}

// ------------------------------------------------------------------------------------------------
// fp16 / bf16 functions that the NVIDIA headers declare for device code only.
// Fused multiply-add in double, then a single rounding to the narrow type.
inline __half __hfma(__half a, __half b, __half c) {
  return __double2half(static_cast<double>(__half2float(a)) * __half2float(b) + __half2float(c));
}
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return __double2bfloat16(static_cast<double>(__bfloat162float(a)) * __bfloat162float(b) + __bfloat162float(c));
}
inline __half __hfma_sat(__half a, __half b, __half c) {
  return __float2half(__saturatef(__half2float(__hfma(a, b, c))));
}
inline __nv_bfloat16 __hfma_sat(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return __float2bfloat16(__saturatef(__bfloat162float(__hfma(a, b, c))));
}
inline __half __hfma_relu(__half a, __half b, __half c) {
  const __half r = __hfma(a, b, c);
  return __hisnan(r) ? r : (__half2float(r) < 0.0f ? __float2half(0.0f) : r);
}
inline __nv_bfloat16 __hfma_relu(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  const __nv_bfloat16 r = __hfma(a, b, c);
  return __hisnan(r) ? r : (__bfloat162float(r) < 0.0f ? __float2bfloat16(0.0f) : r);
}
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  return __halves2half2(__hfma(__low2half(a), __low2half(b), __low2half(c)),
                        __hfma(__high2half(a), __high2half(b), __high2half(c)));
}
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
  return __halves2bfloat162(__hfma(__low2bfloat16(a), __low2bfloat16(b), __low2bfloat16(c)),
                            __hfma(__high2bfloat16(a), __high2bfloat16(b), __high2bfloat16(c)));
}
inline __half2 __hfma2_sat(__half2 a, __half2 b, __half2 c) {
  return __halves2half2(__hfma_sat(__low2half(a), __low2half(b), __low2half(c)),
                        __hfma_sat(__high2half(a), __high2half(b), __high2half(c)));
}
inline __half2 __hfma2_relu(__half2 a, __half2 b, __half2 c) {
  return __halves2half2(__hfma_relu(__low2half(a), __low2half(b), __low2half(c)),
                        __hfma_relu(__high2half(a), __high2half(b), __high2half(c)));
}
inline __nv_bfloat162 __hfma2_relu(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
  return __halves2bfloat162(__hfma_relu(__low2bfloat16(a), __low2bfloat16(b), __low2bfloat16(c)),
                            __hfma_relu(__high2bfloat16(a), __high2bfloat16(b), __high2bfloat16(c)));
}
// Complex multiply-add on (real, imaginary) pairs: a * b + c.
inline __half2 __hcmadd(__half2 a, __half2 b, __half2 c) {
  const float ar = __low2float(a), ai = __high2float(a), br = __low2float(b), bi = __high2float(b);
  return __floats2half2_rn(ar * br - ai * bi + __low2float(c), ar * bi + ai * br + __high2float(c));
}
inline __nv_bfloat162 __hcmadd(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
  const float ar = __low2float(a), ai = __high2float(a), br = __low2float(b), bi = __high2float(b);
  return __floats2bfloat162_rn(ar * br - ai * bi + __low2float(c), ar * bi + ai * br + __high2float(c));
}

// Element-wise math through float: h<fn>(half), h<fn>(bf16), h2<fn>(half2), h2<fn>(bf162).
#define EMU_HALF_MATH(name, expr)                                                                                \
  inline __half h##name(__half a) {                                                                              \
    const float x = __half2float(a);                                                                             \
    return __float2half(expr);                                                                                   \
  }                                                                                                              \
  inline __nv_bfloat16 h##name(__nv_bfloat16 a) {                                                                \
    const float x = __bfloat162float(a);                                                                         \
    return __float2bfloat16(expr);                                                                               \
  }                                                                                                              \
  inline __half2 h2##name(__half2 a) { return __halves2half2(h##name(__low2half(a)), h##name(__high2half(a))); } \
  inline __nv_bfloat162 h2##name(__nv_bfloat162 a) {                                                             \
    return __halves2bfloat162(h##name(__low2bfloat16(a)), h##name(__high2bfloat16(a)));                          \
  }
EMU_HALF_MATH(exp, std::exp(x))
EMU_HALF_MATH(exp2, std::exp2(x))
EMU_HALF_MATH(exp10, std::pow(10.0f, x))
EMU_HALF_MATH(log, std::log(x))
EMU_HALF_MATH(log2, std::log2(x))
EMU_HALF_MATH(log10, std::log10(x))
EMU_HALF_MATH(sqrt, std::sqrt(x))
EMU_HALF_MATH(rsqrt, 1.0f / std::sqrt(x))
EMU_HALF_MATH(rcp, 1.0f / x)
EMU_HALF_MATH(sin, std::sin(x))
EMU_HALF_MATH(cos, std::cos(x))
EMU_HALF_MATH(tanh, std::tanh(x))
EMU_HALF_MATH(ceil, std::ceil(x))
EMU_HALF_MATH(floor, std::floor(x))
EMU_HALF_MATH(rint, std::nearbyint(x))
EMU_HALF_MATH(trunc, std::trunc(x))
#undef EMU_HALF_MATH

// Narrow float -> integer with an explicit rounding direction (exact: the narrow value is exact in float).
#define EMU_NARROW_TO_INT(prefix, Narrow, to_float, suffix, T)                                      \
  inline T prefix##2##suffix##_rn(Narrow a) { return static_cast<T>(std::nearbyint(to_float(a))); } \
  inline T prefix##2##suffix##_rd(Narrow a) { return static_cast<T>(std::floor(to_float(a))); }     \
  inline T prefix##2##suffix##_ru(Narrow a) { return static_cast<T>(std::ceil(to_float(a))); }
#define EMU_NARROW_TO_INTS(prefix, Narrow, to_float)                  \
  EMU_NARROW_TO_INT(prefix, Narrow, to_float, int, int)               \
  EMU_NARROW_TO_INT(prefix, Narrow, to_float, uint, unsigned)         \
  EMU_NARROW_TO_INT(prefix, Narrow, to_float, short, short)           \
  EMU_NARROW_TO_INT(prefix, Narrow, to_float, ushort, unsigned short) \
  EMU_NARROW_TO_INT(prefix, Narrow, to_float, ll, long long)          \
  EMU_NARROW_TO_INT(prefix, Narrow, to_float, ull, unsigned long long)
EMU_NARROW_TO_INTS(__half, __half, __half2float)
EMU_NARROW_TO_INTS(__bfloat16, __nv_bfloat16, __bfloat162float)
#undef EMU_NARROW_TO_INTS
#undef EMU_NARROW_TO_INT
