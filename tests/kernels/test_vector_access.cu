// 128-bit vector accesses (kernels/vector_access.cuh) in the memory-bound kernels (elementwise, cast,
// fill, GELU, dropout, linear bias/activation, LayerNorm, softmax, head permutes, embedding): every
// kernel that uses them runs on aligned buffers, on views one element into their allocation
// (misaligned for 16-byte accesses, so the scalar fallback runs), and on mixes of the two, at sizes
// with ragged tails and below one pack. Each result must match the CPU reference, be bitwise identical
// across the alignments (the packed and scalar paths do the same arithmetic per element, in the same
// order for the row reductions of LayerNorm and softmax), and leave the bytes before and after its
// view untouched. The vocabulary cross-entropy (still element-wise) is held to the same checks, at
// vocabularies whose rows are not all 16-byte aligned (as with BERT's 30522).
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/runtime/dtype.h"
#include "engine/rng/philox.h"
#include "kernels/cast.h"
#include "kernels/cross_entropy.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/matmul.h"
#include "kernels/permute.h"
#include "kernels/softmax.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::DType;
using coco::testing::matches_reference;
using coco::testing::OffsetDeviceView;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

// Offsets (in elements) of the inputs and of the outputs: aligned, all misaligned, and mixes.
struct Offsets {
  size_t in, out;
};
const Offsets kOffsets[] = {{0, 0}, {1, 1}, {1, 0}, {0, 1}};
std::string label(const Offsets& o) { return "in+" + std::to_string(o.in) + " out+" + std::to_string(o.out); }

// Below one pack, an exact number of packs, and ragged tails for every pack width (2, 4, 8).
const int64_t kSizes[] = {3, 64, 301, 1029};

template <class T>
std::vector<float> rounded_inputs(int64_t n, unsigned seed, float lo = -2.0f, float hi = 2.0f) {
  return round_through<T>(random_floats(static_cast<size_t>(n), seed, lo, hi));
}

template <class T>
DType dtype_for() {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return DType::bf16;
  else if constexpr (std::is_same_v<T, __half>)
    return DType::f16;
  else
    return DType::f32;
}

template <class T>
std::vector<T> to_device_type(const std::vector<float>& v) {
  return coco::testing::from_floats<T>(v);
}

// Calls `run` (which writes the views it returns) for every offset mix; each result must match the
// reference and, with `bitwise`, the aligned run bit for bit.
struct Run {
  std::vector<std::vector<double>> outputs;
  std::vector<std::vector<uint8_t>> bytes;
  bool intact = true;
};
void check_all_offsets(const std::string& what, const std::vector<std::vector<double>>& reference, double threshold,
                       const std::function<Run(const Offsets&)>& run, bool bitwise = true) {
  Run aligned;
  for (const Offsets& o : kOffsets) {
    const Run r = run(o);
    const std::string where = what + " " + label(o);
    ASSERT_EQ(r.outputs.size(), reference.size()) << where;
    for (size_t k = 0; k < reference.size(); ++k)
      EXPECT_TRUE(matches_reference(reference[k], r.outputs[k], threshold, where + " output " + std::to_string(k)));
    EXPECT_TRUE(r.intact) << where << ": wrote outside its view";
    if (o.in == 0 && o.out == 0) {
      aligned = r;
    } else if (bitwise) {
      EXPECT_EQ(r.bytes, aligned.bytes) << where << ": differs bitwise from the aligned run";
    }
  }
}

template <class T>
void collect(Run& r, const OffsetDeviceView<T>& view) {
  r.outputs.push_back(to_f64(view.download()));
  r.bytes.push_back(view.download_bytes());
  r.intact = r.intact && view.surroundings_intact();
}

template <class T>
constexpr double threshold() {
  return coco::testing::rounded_output_threshold<T>(1e-12);
}

template <class T>
class VectorAccess : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, __nv_bfloat16, __half>;
TYPED_TEST_SUITE(VectorAccess, StorageTypes);

TYPED_TEST(VectorAccess, ElementwiseOps) {
  using T = TypeParam;
  for (int64_t n : kSizes) {
    const std::vector<float> a = rounded_inputs<T>(n, 1), b = rounded_inputs<T>(n, 2), g = rounded_inputs<T>(n, 3);
    std::vector<float> sum(n), axpy(n), scaled(n), da(n), db(n), acc(n);
    coco::kernels::cpu::binary(coco::kernels::BinaryOp::add, a.data(), b.data(), sum.data(), n);
    coco::kernels::cpu::add_scaled(a.data(), b.data(), 0.75, axpy.data(), n);
    coco::kernels::cpu::scale(b.data(), -1.5, scaled.data(), n);
    coco::kernels::cpu::mul_backward(g.data(), a.data(), b.data(), da.data(), db.data(), n);
    acc = a;
    coco::kernels::cpu::add_inplace(acc.data(), b.data(), n);
    const std::vector<std::vector<double>> reference = {
        to_f64(round_through<T>(sum)), to_f64(round_through<T>(axpy)), to_f64(round_through<T>(scaled)),
        to_f64(round_through<T>(da)),  to_f64(round_through<T>(db)),   to_f64(round_through<T>(acc))};
    check_all_offsets("elementwise n=" + std::to_string(n), reference, threshold<T>(), [&](const Offsets& o) {
      OffsetDeviceView<T> d_a(to_device_type<T>(a), o.in), d_b(to_device_type<T>(b), o.in),
          d_g(to_device_type<T>(g), o.in);
      OffsetDeviceView<T> d_sum(n, o.out), d_axpy(n, o.out), d_scaled(n, o.out), d_da(n, o.out), d_db(n, o.out),
          d_acc(to_device_type<T>(a), o.out);
      for (auto* v : {&d_sum, &d_axpy, &d_scaled, &d_da, &d_db}) v->poison();
      coco::kernels::cuda::binary(coco::kernels::BinaryOp::add, d_a.data(), d_b.data(), d_sum.data(), n, nullptr);
      coco::kernels::cuda::add_scaled(d_a.data(), d_b.data(), 0.75, d_axpy.data(), n, nullptr);
      coco::kernels::cuda::scale(d_b.data(), -1.5, d_scaled.data(), n, nullptr);
      coco::kernels::cuda::mul_backward(d_g.data(), d_a.data(), d_b.data(), d_da.data(), d_db.data(), n, nullptr);
      coco::kernels::cuda::add_inplace(d_acc.data(), static_cast<const T*>(d_b.data()), n, nullptr);
      Run r;
      for (auto* v : {&d_sum, &d_axpy, &d_scaled, &d_da, &d_db, &d_acc}) collect(r, *v);
      r.intact = r.intact && d_a.surroundings_intact() && d_b.surroundings_intact();
      return r;
    });
  }
}

TYPED_TEST(VectorAccess, CastAndFill) {
  using T = TypeParam;
  const DType dtype = dtype_for<T>();
  for (int64_t n : kSizes) {
    const std::vector<float> x = random_floats(static_cast<size_t>(n), 4, -3.0f, 3.0f);
    // f32 -> T and T -> f32 (the cast kernel; f32 -> f32 is a copy and takes no kernel).
    if (dtype != DType::f32) {
      const std::vector<float> down = round_through<T>(x);
      check_all_offsets("cast n=" + std::to_string(n), {to_f64(down), to_f64(down)}, 0.0, [&](const Offsets& o) {
        OffsetDeviceView<float> d_x(x, o.in), d_back(n, o.out);
        OffsetDeviceView<T> d_down(n, o.out);
        d_down.poison();
        d_back.poison();
        coco::kernels::cuda::cast(d_x.data(), DType::f32, d_down.data(), dtype, n, nullptr);
        // T -> f32 from a view at the input offset.
        OffsetDeviceView<T> d_src(d_down.download(), o.in);
        coco::kernels::cuda::cast(d_src.data(), dtype, d_back.data(), DType::f32, n, nullptr);
        Run r;
        collect(r, d_down);
        collect(r, d_back);
        r.intact = r.intact && d_x.surroundings_intact() && d_src.surroundings_intact();
        return r;
      });
    }
    const std::vector<float> filled(static_cast<size_t>(n), static_cast<float>(to_f64(round_through<T>({0.3f}))[0]));
    check_all_offsets("fill n=" + std::to_string(n), {to_f64(filled)}, 0.0, [&](const Offsets& o) {
      OffsetDeviceView<T> d_out(n, o.out);
      d_out.poison();
      coco::kernels::cuda::fill(d_out.data(), dtype, 0.3, n, nullptr);
      Run r;
      collect(r, d_out);
      return r;
    });
  }
}

TYPED_TEST(VectorAccess, GeluForwardAndBackward) {
  using T = TypeParam;
  using coco::kernels::GeluApproximation;
  for (int64_t n : kSizes) {
    const std::vector<float> x = rounded_inputs<T>(n, 5, -5.0f, 5.0f), dout = rounded_inputs<T>(n, 6);
    std::vector<float> y(n), dx(n);
    coco::kernels::cpu::gelu_forward(y.data(), x.data(), n, GeluApproximation::erf);
    coco::kernels::cpu::gelu_backward(dx.data(), dout.data(), x.data(), n, GeluApproximation::erf);
    const double limit = std::is_same_v<T, float> ? 1e-12 : 3e-5;  // as tests/kernels/test_gelu.cu
    check_all_offsets("gelu n=" + std::to_string(n), {to_f64(y), to_f64(dx)}, limit, [&](const Offsets& o) {
      OffsetDeviceView<T> d_x(to_device_type<T>(x), o.in), d_dout(to_device_type<T>(dout), o.in), d_y(n, o.out),
          d_dx(n, o.out);
      d_y.poison();
      d_dx.poison();
      coco::kernels::cuda::gelu_forward(d_y.data(), d_x.data(), n, GeluApproximation::erf, nullptr);
      coco::kernels::cuda::gelu_backward(d_dx.data(), d_dout.data(), d_x.data(), n, GeluApproximation::erf, nullptr);
      Run r;
      collect(r, d_y);
      collect(r, d_dx);
      return r;
    });
  }
}

TYPED_TEST(VectorAccess, DropoutApply) {
  using T = TypeParam;
  const coco::rng::Stream rng(99, 7, coco::rng::Purpose::dropout_residual, 1);
  for (int64_t n : kSizes) {
    const std::vector<float> x = rounded_inputs<T>(n, 7);
    std::vector<float> y(n);
    coco::kernels::cpu::dropout_apply(y.data(), x.data(), n, 0.25, rng, 11);
    check_all_offsets("dropout n=" + std::to_string(n), {to_f64(round_through<T>(y))}, threshold<T>(),
                      [&](const Offsets& o) {
                        OffsetDeviceView<T> d_x(to_device_type<T>(x), o.in), d_y(n, o.out);
                        d_y.poison();
                        coco::kernels::cuda::dropout_apply(d_y.data(), d_x.data(), n, 0.25, rng, 11, nullptr);
                        Run r;
                        collect(r, d_y);
                        return r;
                      });
  }
}

TYPED_TEST(VectorAccess, BiasActivationAndActivationBackward) {
  using T = TypeParam;
  using coco::kernels::Activation;
  // out = 24 packs evenly, out = 13 straddles rows (scalar path); in = 0 is the bias-only kernel.
  // With in > 0 the results are not compared bitwise across alignments: cuBLASLt may take the bias
  // in its epilogue for one alignment and leave it to the kernel (after rounding the product) for
  // another.
  struct Case {
    int64_t rows, in, out;
  };
  for (const Case c : {Case{5, 6, 24}, Case{3, 5, 13}, Case{4, 0, 16}}) {
    const std::vector<float> x = rounded_inputs<T>(c.rows * c.in, 8), W = rounded_inputs<T>(c.out * c.in, 9),
                             bias = rounded_inputs<T>(c.out, 10), dy = rounded_inputs<T>(c.rows * c.out, 11);
    std::vector<float> y(c.rows * c.out), pre(c.rows * c.out);
    coco::kernels::cpu::linear_forward(x.data(), W.data(), bias.data(), Activation::gelu_erf, c.rows, c.in, c.out,
                                       y.data(), pre.data());
    // The CUDA backward differentiates at the pre-activation as saved (rounded to T).
    const std::vector<float> saved_pre = round_through<T>(pre);
    std::vector<float> dpre(dy.size());
    coco::kernels::cpu::activation_backward(Activation::gelu_erf, dy.data(), saved_pre.data(), dpre.data(),
                                            static_cast<int64_t>(dy.size()));
    const std::string what =
        "linear rows=" + std::to_string(c.rows) + " in=" + std::to_string(c.in) + " out=" + std::to_string(c.out);
    const double limit = std::is_same_v<T, float> ? 1e-10 : 3e-5;
    check_all_offsets(
        what, {to_f64(y), to_f64(pre), to_f64(dpre)}, limit,
        [&](const Offsets& o) {
          OffsetDeviceView<T> d_x(to_device_type<T>(x), o.in), d_W(to_device_type<T>(W), o.in),
              d_bias(to_device_type<T>(bias), o.in), d_dy(to_device_type<T>(dy), o.in), d_y(y.size(), o.out),
              d_pre(y.size(), o.out), d_dpre(y.size(), o.out);
          d_y.poison();
          d_pre.poison();
          d_dpre.poison();
          coco::kernels::cuda::linear_forward(d_x.data(), d_W.data(), d_bias.data(), Activation::gelu_erf, c.rows, c.in,
                                              c.out, d_y.data(), d_pre.data(), nullptr);
          coco::kernels::cuda::activation_backward(Activation::gelu_erf, d_dy.data(), d_pre.data(), d_dpre.data(),
                                                   static_cast<int64_t>(y.size()), nullptr);
          Run r;
          collect(r, d_y);
          collect(r, d_pre);
          collect(r, d_dpre);
          return r;
        },
        /*bitwise=*/c.in == 0);
  }
}

TYPED_TEST(VectorAccess, LayerNormForwardAndInputBackward) {
  using T = TypeParam;
  constexpr float kEps = 1e-5f;
  // C = 64 and 768 split into whole packs; C = 37 cannot (scalar path for every row).
  struct Shape {
    int64_t rows, C;
  };
  for (const Shape s : {Shape{5, 64}, Shape{3, 37}, Shape{2, 768}}) {
    const int64_t n = s.rows * s.C;
    const std::vector<float> x = rounded_inputs<T>(n, 12), residual = rounded_inputs<T>(n, 13),
                             gamma = rounded_inputs<T>(s.C, 14, 0.5f, 1.5f), beta = rounded_inputs<T>(s.C, 15),
                             dout = rounded_inputs<T>(n, 16), extra = rounded_inputs<T>(n, 17);
    // The kernel normalizes the sum as stored in T (rounded once from the f32 sum).
    std::vector<float> sum(n);
    for (int64_t i = 0; i < n; ++i) sum[i] = x[i] + residual[i];
    const std::vector<float> stored_sum = round_through<T>(sum);
    std::vector<float> y(n), mean(s.rows), rstd(s.rows), dx(n);
    coco::kernels::cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), stored_sum.data(), gamma.data(),
                                          beta.data(), s.rows, s.C, kEps);
    coco::kernels::cpu::layernorm_backward(dx.data(), static_cast<float*>(nullptr), static_cast<float*>(nullptr),
                                           dout.data(), extra.data(), stored_sum.data(), gamma.data(), mean.data(),
                                           rstd.data(), s.rows, s.C);
    const std::string what = "layernorm rows=" + std::to_string(s.rows) + " C=" + std::to_string(s.C);
    const double limit = std::is_same_v<T, float> ? 1e-10 : 3e-5;  // as tests/kernels/test_layernorm.cu
    check_all_offsets(what, {to_f64(y), to_f64(stored_sum), to_f64(dx)}, limit, [&](const Offsets& o) {
      OffsetDeviceView<T> d_x(to_device_type<T>(x), o.in), d_res(to_device_type<T>(residual), o.in),
          d_gamma(to_device_type<T>(gamma), o.in), d_beta(to_device_type<T>(beta), o.in),
          d_dout(to_device_type<T>(dout), o.in), d_extra(to_device_type<T>(extra), o.in), d_y(n, o.out),
          d_sum(n, o.out), d_dx(n, o.out);
      OffsetDeviceView<float> d_mean(s.rows, 0), d_rstd(s.rows, 0);
      d_y.poison();
      d_sum.poison();
      d_dx.poison();
      coco::kernels::cuda::residual_layernorm_forward(d_y.data(), d_sum.data(), d_mean.data(), d_rstd.data(),
                                                      d_x.data(), d_res.data(), d_gamma.data(), d_beta.data(), s.rows,
                                                      s.C, kEps, nullptr);
      coco::kernels::cuda::layernorm_backward<T, float>(d_dx.data(), nullptr, nullptr, d_dout.data(), d_extra.data(),
                                                        d_sum.data(), d_gamma.data(), d_mean.data(), d_rstd.data(),
                                                        s.rows, s.C, nullptr, nullptr);
      Run r;
      collect(r, d_y);
      collect(r, d_sum);
      collect(r, d_dx);
      return r;
    });
    // The plain forward (no residual) on the stored sum gives the same normalized rows.
    check_all_offsets(what + " plain", {to_f64(y)}, limit, [&](const Offsets& o) {
      OffsetDeviceView<T> d_x(to_device_type<T>(stored_sum), o.in), d_gamma(to_device_type<T>(gamma), o.in),
          d_beta(to_device_type<T>(beta), o.in), d_y(n, o.out);
      d_y.poison();
      coco::kernels::cuda::layernorm_forward(d_y.data(), static_cast<float*>(nullptr), static_cast<float*>(nullptr),
                                             d_x.data(), d_gamma.data(), d_beta.data(), s.rows, s.C, kEps, nullptr);
      Run r;
      collect(r, d_y);
      return r;
    });
  }
}

TYPED_TEST(VectorAccess, SoftmaxForwardAndBackward) {
  using T = TypeParam;
  // Warp rows that split into packs (64) or not (37), and a block row (> kSoftmaxWarpRowMaxWidth).
  struct Shape {
    int64_t rows, width;
  };
  for (const Shape s : {Shape{6, 64}, Shape{3, 37}, Shape{2, coco::kernels::kSoftmaxWarpRowMaxWidth + 40}}) {
    const int64_t n = s.rows * s.width;
    const std::vector<float> x = rounded_inputs<T>(n, 18, -4.0f, 4.0f), dy = rounded_inputs<T>(n, 19);
    std::vector<float> y(n), log_y(n);
    coco::kernels::cpu::softmax_forward(x.data(), y.data(), s.rows, s.width);
    coco::kernels::cpu::log_softmax_forward(x.data(), log_y.data(), s.rows, s.width);
    // The backward takes y as stored in T.
    const std::vector<float> y_t = round_through<T>(y), log_y_t = round_through<T>(log_y);
    std::vector<float> dx(n), log_dx(n);
    coco::kernels::cpu::softmax_backward(y_t.data(), dy.data(), dx.data(), s.rows, s.width);
    coco::kernels::cpu::log_softmax_backward(log_y_t.data(), dy.data(), log_dx.data(), s.rows, s.width);
    const std::string what = "softmax rows=" + std::to_string(s.rows) + " width=" + std::to_string(s.width);
    const double limit = std::is_same_v<T, float> ? 1e-10 : 3e-5;
    check_all_offsets(what, {to_f64(y), to_f64(log_y), to_f64(dx), to_f64(log_dx)}, limit, [&](const Offsets& o) {
      OffsetDeviceView<T> d_x(to_device_type<T>(x), o.in), d_dy(to_device_type<T>(dy), o.in),
          d_y_in(to_device_type<T>(y_t), o.in), d_log_y_in(to_device_type<T>(log_y_t), o.in), d_y(n, o.out),
          d_log_y(n, o.out), d_dx(n, o.out), d_log_dx(n, o.out);
      for (auto* v : {&d_y, &d_log_y, &d_dx, &d_log_dx}) v->poison();
      coco::kernels::cuda::softmax_forward(d_x.data(), d_y.data(), s.rows, s.width, nullptr);
      coco::kernels::cuda::log_softmax_forward(d_x.data(), d_log_y.data(), s.rows, s.width, nullptr);
      coco::kernels::cuda::softmax_backward(d_y_in.data(), d_dy.data(), d_dx.data(), s.rows, s.width, nullptr);
      coco::kernels::cuda::log_softmax_backward(d_log_y_in.data(), d_dy.data(), d_log_dx.data(), s.rows, s.width,
                                                nullptr);
      Run r;
      for (auto* v : {&d_y, &d_log_y, &d_dx, &d_log_dx}) collect(r, *v);
      return r;
    });
  }
}

TYPED_TEST(VectorAccess, HeadPermutes) {
  using T = TypeParam;
  // head_dim 16 moves in packs; 6 does not (for every width here).
  for (const int64_t head_dim : {16, 6}) {
    const coco::kernels::HeadShape shape{2, 3, 2, head_dim};
    const int64_t n = shape.numel();
    const std::vector<float> qkv = rounded_inputs<T>(3 * n, 20), heads = rounded_inputs<T>(n, 21);
    std::vector<float> q(n), k(n), v(n), merged(n);
    coco::kernels::cpu::split_qkv(q.data(), k.data(), v.data(), qkv.data(), shape);
    coco::kernels::cpu::merge_heads(merged.data(), heads.data(), shape);
    std::vector<float> merged_qkv(3 * n);
    coco::kernels::cpu::merge_qkv(merged_qkv.data(), q.data(), k.data(), v.data(), shape);
    check_all_offsets(
        "permute head_dim=" + std::to_string(head_dim),
        {to_f64(q), to_f64(k), to_f64(v), to_f64(merged), to_f64(merged_qkv)}, 0.0, [&](const Offsets& o) {
          OffsetDeviceView<T> d_qkv(to_device_type<T>(qkv), o.in), d_heads(to_device_type<T>(heads), o.in),
              d_q(n, o.out), d_k(n, o.out), d_v(n, o.out), d_merged(n, o.out), d_merged_qkv(3 * n, o.out);
          for (auto* view : {&d_q, &d_k, &d_v, &d_merged, &d_merged_qkv}) view->poison();
          coco::kernels::cuda::split_qkv(d_q.data(), d_k.data(), d_v.data(), d_qkv.data(), shape, nullptr);
          coco::kernels::cuda::merge_heads(d_merged.data(), d_heads.data(), shape, nullptr);
          // merge_qkv reads the split heads back (at the output offset).
          coco::kernels::cuda::merge_qkv(d_merged_qkv.data(), d_q.data(), d_k.data(), d_v.data(), shape, nullptr);
          Run r;
          for (auto* view : {&d_q, &d_k, &d_v, &d_merged, &d_merged_qkv}) collect(r, *view);
          return r;
        });
  }
}

TYPED_TEST(VectorAccess, EmbeddingForwardAndPositionGradient) {
  using T = TypeParam;
  // dim 24 splits into packs of 4 and 8; dim 10 does not.
  for (const int64_t dim : {24, 10}) {
    const coco::kernels::EmbeddingShape shape{3, 5, 7, dim};
    const std::vector<int32_t> ids = {0, 6, 3, 3, 1, 2, 5, 4, 0, 6, 1, 1, 2, 3, 4};
    const std::vector<float> tok = rounded_inputs<T>(shape.vocab * dim, 22),
                             pos = rounded_inputs<T>(shape.seq * dim, 23),
                             dout = rounded_inputs<T>(shape.positions() * dim, 24),
                             dpos_start = rounded_inputs<T>(shape.seq * dim, 25);
    std::vector<float> with_pos(shape.positions() * dim), tok_only(with_pos.size());
    coco::kernels::cpu::embedding_forward(with_pos.data(), ids.data(), tok.data(), pos.data(), shape);
    coco::kernels::cpu::embedding_forward(tok_only.data(), ids.data(), tok.data(), static_cast<const float*>(nullptr),
                                          shape);
    std::vector<float> dpos = dpos_start;
    coco::kernels::cpu::embedding_backward(static_cast<float*>(nullptr), dpos.data(), dout.data(), ids.data(), shape,
                                           coco::kernels::kNoPaddingId);
    check_all_offsets(
        "embedding dim=" + std::to_string(dim), {to_f64(round_through<T>(with_pos)), to_f64(tok_only), to_f64(dpos)},
        threshold<T>(), [&](const Offsets& o) {
          coco::testing::GuardedDeviceBuffer<int32_t> d_ids(ids);
          OffsetDeviceView<T> d_tok(to_device_type<T>(tok), o.in), d_pos(to_device_type<T>(pos), o.in),
              d_dout(to_device_type<T>(dout), o.in), d_with_pos(with_pos.size(), o.out),
              d_tok_only(with_pos.size(), o.out);
          OffsetDeviceView<float> d_dpos(dpos_start, o.out);
          d_with_pos.poison();
          d_tok_only.poison();
          coco::kernels::cuda::embedding_forward(d_with_pos.data(), d_ids.data(), d_tok.data(), d_pos.data(), shape,
                                                 nullptr, nullptr);
          coco::kernels::cuda::embedding_forward(d_tok_only.data(), d_ids.data(), d_tok.data(),
                                                 static_cast<const T*>(nullptr), shape, nullptr, nullptr);
          coco::kernels::cuda::embedding_backward<T, float>(nullptr, d_dpos.data(), d_dout.data(), d_ids.data(), shape,
                                                            coco::kernels::kNoPaddingId, nullptr, nullptr);
          Run r;
          collect(r, d_with_pos);
          collect(r, d_tok_only);
          collect(r, d_dpos);
          return r;
        });
  }
}

TYPED_TEST(VectorAccess, CrossEntropyForwardBackwardAndScale) {
  using T = TypeParam;
  using coco::kernels::LossReduction;
  // vocab 64: every row aligned; 30 and 37: rows alternate (or cycle through) alignments and end in a
  // partial pack, as with BERT's 30522.
  for (const int64_t vocab : {64, 30, 37}) {
    const int64_t rows = 6;
    const std::vector<float> logits = rounded_inputs<T>(rows * vocab, 26, -5.0f, 5.0f);
    const std::vector<int32_t> targets = {3, -100, 0, static_cast<int32_t>(vocab - 1), 7, 29};
    std::vector<float> row_loss(rows), row_lse(rows), dlogits(logits.size()), backward(logits.size());
    float loss = 0.0f;
    const float dloss = 0.5f;
    std::vector<int32_t> counts(coco::kernels::kCrossEntropyCounts);
    coco::kernels::cpu::cross_entropy_forward(logits.data(), targets.data(), static_cast<const float*>(nullptr), rows,
                                              vocab, -100, LossReduction::mean, &loss, row_loss.data(), row_lse.data(),
                                              counts.data(), dlogits.data(), 1.0f);
    coco::kernels::cpu::cross_entropy_backward(logits.data(), targets.data(), static_cast<const float*>(nullptr),
                                               row_lse.data(), counts.data(), rows, vocab, -100, LossReduction::mean,
                                               &dloss, backward.data());
    std::vector<float> scaled(dlogits.size());
    for (size_t i = 0; i < dlogits.size(); ++i) scaled[i] = dlogits[i] * 0.5f;
    const double limit = std::is_same_v<T, float> ? 1e-10 : 3e-5;
    check_all_offsets("cross_entropy vocab=" + std::to_string(vocab),
                      {to_f64(row_loss), to_f64(row_lse), to_f64(dlogits), to_f64(backward), to_f64(scaled)}, limit,
                      [&](const Offsets& o) {
                        coco::testing::GuardedDeviceBuffer<int32_t> d_targets(targets), d_counts(counts.size());
                        coco::testing::GuardedDeviceBuffer<float> d_loss(1), d_row_loss(rows), d_row_lse(rows),
                            d_dloss(std::vector<float>{dloss}), d_half(std::vector<float>{0.5f});
                        OffsetDeviceView<T> d_logits(to_device_type<T>(logits), o.in), d_dlogits(logits.size(), o.out),
                            d_backward(logits.size(), o.out), d_scaled(logits.size(), o.out);
                        for (auto* v : {&d_dlogits, &d_backward, &d_scaled}) v->poison();
                        coco::kernels::cuda::cross_entropy_forward(d_logits.data(), d_targets.data(), nullptr, rows,
                                                                   vocab, -100, LossReduction::mean, d_loss.data(),
                                                                   d_row_loss.data(), d_row_lse.data(), d_counts.data(),
                                                                   d_dlogits.data(), 1.0f, nullptr);
                        coco::kernels::cuda::cross_entropy_backward(
                            d_logits.data(), d_targets.data(), nullptr, d_row_lse.data(), d_counts.data(), rows, vocab,
                            -100, LossReduction::mean, d_dloss.data(), d_backward.data(), nullptr);
                        d_scaled.upload(d_dlogits.download());
                        coco::kernels::cuda::scale_by_device_scalar(
                            d_scaled.data(), static_cast<int64_t>(logits.size()), d_half.data(), nullptr);
                        EXPECT_EQ(d_counts.download(), counts);
                        Run r;
                        r.outputs.push_back(to_f64(d_row_loss.download()));
                        r.bytes.push_back(d_row_loss.download_bytes());
                        r.outputs.push_back(to_f64(d_row_lse.download()));
                        r.bytes.push_back(d_row_lse.download_bytes());
                        for (auto* v : {&d_dlogits, &d_backward, &d_scaled}) collect(r, *v);
                        r.intact = r.intact && d_logits.surroundings_intact();
                        return r;
                      });
  }
}

}  // namespace
