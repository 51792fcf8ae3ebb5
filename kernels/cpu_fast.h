// Fast f32 paths of the CPU backend, beside the plain references of kernels/*.cpp (which stay the
// oracle of the cross-backend tests and the f64 path). Each function runs its rows / blocks on the
// CPU thread pool (engine/runtime/cpu_backend.h) with a fixed partition of the work into items whose
// results do not depend on which thread computes them, so every result has the same bits for any
// thread count. The element loops are compiled for AVX-512, AVX2 + FMA and baseline x86-64 and
// chosen at load time (function multiversioning), so one binary serves every x86-64 CPU.
//
// Two kinds:
//  - bitwise equal to the reference (tests compare exactly): dropout, the attention dropout mask,
//    Gumbel sampling (integer Philox draws, the exact-rounding log of kernels/sampling_math.h);
//  - approximations within stated bounds of the reference (tests compare with tolerances): GELU
//    through a rational erf (|error| < 4e-7 against libm's erff), the GELU epilogue of a linear layer
//    and its derivative, and the gradient norm, whose f64 sum runs in fixed blocks of 8 lanes instead
//    of element order.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/rng/philox.h"
#include "kernels/cross_entropy.h"
#include "kernels/gelu.h"
#include "kernels/gradnorm.h"
#include "kernels/matmul.h"

namespace coco::kernels::cpu_fast {

// erf(x) in f32 by a rational approximation on [-3.83, 3.83] (+-1 beyond); branch-free, so loops
// over it vectorise. NaN propagates.
float erf(float x);

// = cpu::dropout_apply<float>, bitwise.
void dropout_apply(float* out, const float* x, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset);
// = cpu::dropout_mask, bitwise.
void dropout_mask(uint8_t* mask, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset);
// keep[e] = detail::dropout_keeps(stream, first + e, p) for e < count (the attention probabilities'
// dropout), single-threaded: the attention fast path calls it per (batch, head).
void attention_keep_mask(const rng::Stream& stream, float p, uint64_t first, int64_t count, uint8_t* keep);

// = cpu::gumbel_sample<float>, bitwise.
void gumbel_sample(const float* logits, int64_t N, int64_t V, float temperature, const rng::Stream& stream,
                   int32_t* samples, const int32_t* row_keys = nullptr);

// cpu::linear_forward<float> with linear_epilogue after the GEMM.
void linear_forward(const float* x, const float* W, const float* bias, Activation act, int64_t rows, int64_t in,
                    int64_t out, float* y, float* pre_act);
// The epilogue of cpu::linear_forward<float> after its GEMM: y = act(y + bias) per row, pre_act (if
// not null and act != none) = y + bias. y, pre_act: (rows, out); bias: (out) or null.
void linear_epilogue(float* y, const float* bias, Activation act, int64_t rows, int64_t out, float* pre_act);
// dpre = dy * act'(pre), as cpu::activation_backward<float>.
void activation_backward(Activation act, const float* dy, const float* pre, float* dpre, int64_t n);
// As cpu::gelu_forward / gelu_backward for float.
void gelu_forward(float* out, const float* x, int64_t n, GeluApproximation approximation);
void gelu_backward(float* dx, const float* dout, const float* x, int64_t n, GeluApproximation approximation);

// cpu::cross_entropy_forward / cross_entropy_backward for f32 logits, same contract: the rows on the
// pool, each row's maximum, exp-sum (f32 lanes added in a fixed order, then in double) and gradient
// in vectorised f32 (exp within a few ulp) instead of per-element double exp; the loss and the
// correct-row count added in row order, so the bits do not depend on the thread count. Rows with a
// NaN or an infinity take the reference's double path. Tests compare with the reference within 1e-5.
void cross_entropy_forward(const float* logits, const int32_t* targets, const float* row_weights, int64_t rows,
                           int64_t vocab, int32_t ignore_index, LossReduction reduction, float* loss, float* row_loss,
                           float* row_lse, int32_t* counts, float* dlogits, float dlogits_scale);
void cross_entropy_backward(const float* logits, const int32_t* targets, const float* row_weights, const float* row_lse,
                            const int32_t* counts, int64_t rows, int64_t vocab, int32_t ignore_index,
                            LossReduction reduction, const float* dloss, float* dlogits);

// cpu::layernorm_forward / residual_layernorm_forward / layernorm_backward for f32, same contracts
// (residual null: plain LayerNorm; otherwise sum = x + residual is written and normalised). Rows on
// the pool; each row's sums in 16 f32 lanes added in lane order in double, the element loops in f32
// vectors (the reference works in double per element). dgamma / dbeta: f64 partials over fixed blocks
// of rows, added in block order, then once into the buffers. No result depends on the thread count;
// tests compare with the reference within 1e-5 relative.
void layernorm_forward(float* out, float* sum, float* mean, float* rstd, const float* x, const float* residual,
                       const float* gamma, const float* beta, int64_t rows, int64_t C, double eps);
void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* dout, const float* dx_extra,
                        const float* x, const float* gamma, const float* mean, const float* rstd, int64_t rows,
                        int64_t C);

// Sum of squares of every element (f32, bf16, f16 or f64 tensors) in f64: each tensor in blocks of
// kSumBlock elements, each block in 8 f64 lanes added in lane order, blocks and tensors in order.
// Non-finite elements make the result non-finite. Throws like cpu::sum_of_squares.
inline constexpr int64_t kSumBlock = 16384;
double sum_of_squares(const std::vector<NormTensorDesc>& descs);
// Whether any element is NaN or +-Inf (as cpu::any_nonfinite).
bool any_nonfinite(const std::vector<NormTensorDesc>& descs);

}  // namespace coco::kernels::cpu_fast
