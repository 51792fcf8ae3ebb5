// Fused multi-tensor AdamW: the CUDA kernel (emulated here) against the CPU reference over several
// steps with mixed tensor sizes (odd, multi-chunk), grad dtypes, decay flags and bf16 copies; a hand
// computed PyTorch step; the f64 reference; NaN propagation; schedule invariance; bad arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/ops/optim.h"
#include "kernels/adamw.h"
#include "engine/simt/schedule_oracle.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::DType;
using coco::kernels::AdamWHyper;
using coco::kernels::AdamWScalars;
using coco::kernels::AdamWTensorDesc;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;

// The emulator's schedule-invariance oracle as a gtest assertion.
::testing::AssertionResult schedule_invariant(const std::function<std::vector<uint8_t>()>& run, int random_seeds) {
  const emu::OracleResult result = emu::check_schedule_invariance(run, random_seeds);
  if (result.identical) return ::testing::AssertionSuccess() << result.runs << " schedules identical";
  return ::testing::AssertionFailure() << result.message;
}

struct TensorSpec {
  int64_t numel;
  DType grad_dtype;
  bool decay;
  bool bf16_copy;
};

// Odd sizes, one exactly a chunk, several multi-chunk tensors and an empty one.
const std::vector<TensorSpec> kSpecs = {
    {1, DType::f32, true, false},    {7, DType::bf16, false, true},    {33, DType::f16, true, true},
    {130, DType::f32, false, false}, {0, DType::f32, true, true},      {4096, DType::bf16, true, true},
    {9001, DType::f32, true, true},  {5000, DType::f16, false, false}, {257, DType::bf16, true, false},
};

// Host state of one tensor: f32 master, moments, gradient bytes of grad_dtype, bf16 copy.
struct HostTensor {
  TensorSpec spec;
  std::vector<float> param, m, v, grad_f32;
  std::vector<uint8_t> grad_bytes;
  std::vector<__nv_bfloat16> copy;
};

std::vector<uint8_t> encode_grad(const std::vector<float>& g, DType dtype) {
  std::vector<uint8_t> bytes(g.size() * coco::dtype_size(dtype));
  for (size_t i = 0; i < g.size(); ++i) {
    if (dtype == DType::f32) {
      std::memcpy(bytes.data() + 4 * i, &g[i], 4);
    } else if (dtype == DType::bf16) {
      const __nv_bfloat16 b = __float2bfloat16(g[i]);
      std::memcpy(bytes.data() + 2 * i, &b, 2);
    } else {
      const __half h = __float2half(g[i]);
      std::memcpy(bytes.data() + 2 * i, &h, 2);
    }
  }
  return bytes;
}

std::vector<HostTensor> make_tensors(unsigned seed) {
  std::vector<HostTensor> out;
  for (size_t t = 0; t < kSpecs.size(); ++t) {
    HostTensor h;
    h.spec = kSpecs[t];
    const size_t n = static_cast<size_t>(h.spec.numel);
    h.param = random_floats(n, seed + 10 * t, -1.0f, 1.0f);
    h.m = random_floats(n, seed + 10 * t + 1, -0.01f, 0.01f);
    h.v = random_floats(n, seed + 10 * t + 2, 0.0f, 1e-4f);
    h.copy.assign(n, __float2bfloat16(0.0f));
    out.push_back(std::move(h));
  }
  return out;
}

void set_grads(std::vector<HostTensor>& tensors, unsigned seed) {
  for (size_t t = 0; t < tensors.size(); ++t) {
    HostTensor& h = tensors[t];
    h.grad_f32 = random_floats(static_cast<size_t>(h.spec.numel), seed + 7 * t, -0.5f, 0.5f);
    h.grad_bytes = encode_grad(h.grad_f32, h.spec.grad_dtype);
  }
}

// Device mirror of a HostTensor list, with guard bytes behind every buffer.
struct DeviceTensors {
  std::vector<std::unique_ptr<GuardedDeviceBuffer<float>>> param, m, v;
  std::vector<std::unique_ptr<GuardedDeviceBuffer<uint8_t>>> grad;
  std::vector<std::unique_ptr<GuardedDeviceBuffer<__nv_bfloat16>>> copy;

  explicit DeviceTensors(const std::vector<HostTensor>& host) {
    for (const HostTensor& h : host) {
      param.push_back(std::make_unique<GuardedDeviceBuffer<float>>(h.param));
      m.push_back(std::make_unique<GuardedDeviceBuffer<float>>(h.m));
      v.push_back(std::make_unique<GuardedDeviceBuffer<float>>(h.v));
      grad.push_back(std::make_unique<GuardedDeviceBuffer<uint8_t>>(static_cast<size_t>(h.spec.numel) *
                                                                    coco::dtype_size(h.spec.grad_dtype)));
      copy.push_back(std::make_unique<GuardedDeviceBuffer<__nv_bfloat16>>(h.copy.size()));
      copy.back()->poison();
    }
  }
  void upload_grads(const std::vector<HostTensor>& host) {
    for (size_t t = 0; t < host.size(); ++t) grad[t]->upload(host[t].grad_bytes);
  }
  std::vector<AdamWTensorDesc> descs(const std::vector<HostTensor>& host) {
    std::vector<AdamWTensorDesc> d(host.size());
    for (size_t t = 0; t < host.size(); ++t) {
      d[t].param = param[t]->data();
      d[t].grad = grad[t]->data();
      d[t].exp_avg = m[t]->data();
      d[t].exp_avg_sq = v[t]->data();
      d[t].param_bf16 = host[t].spec.bf16_copy ? copy[t]->data() : nullptr;
      d[t].numel = host[t].spec.numel;
      d[t].grad_dtype = host[t].spec.grad_dtype;
      d[t].apply_weight_decay = host[t].spec.decay ? 1 : 0;
    }
    return d;
  }
  bool guards_intact() const {
    for (size_t t = 0; t < param.size(); ++t)
      if (!param[t]->guards_intact() || !m[t]->guards_intact() || !v[t]->guards_intact() || !grad[t]->guards_intact() ||
          !copy[t]->guards_intact())
        return false;
    return true;
  }
};

std::vector<AdamWTensorDesc> host_descs(std::vector<HostTensor>& host) {
  std::vector<AdamWTensorDesc> d(host.size());
  for (size_t t = 0; t < host.size(); ++t) {
    d[t].param = host[t].param.data();
    d[t].grad = host[t].grad_bytes.data();
    d[t].exp_avg = host[t].m.data();
    d[t].exp_avg_sq = host[t].v.data();
    d[t].param_bf16 = host[t].spec.bf16_copy ? host[t].copy.data() : nullptr;
    d[t].numel = host[t].spec.numel;
    d[t].grad_dtype = host[t].spec.grad_dtype;
    d[t].apply_weight_decay = host[t].spec.decay ? 1 : 0;
  }
  return d;
}

void run_device_step(DeviceTensors& device, const std::vector<HostTensor>& host, const AdamWScalars& scalars) {
  std::vector<AdamWTensorDesc> descs = device.descs(host);
  const int64_t chunks = coco::kernels::plan_adamw_chunks(descs);
  GuardedDeviceBuffer<AdamWTensorDesc> device_descs(descs);
  coco::kernels::cuda::adamw_multi_tensor(device_descs.data(), static_cast<int>(descs.size()), chunks, scalars,
                                          nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
}

std::vector<double> as_f64(const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); }

// Largest |got - ref| / max(|ref|, floor): a per-element check that NMSE alone could average away.
double max_relative_error(const std::vector<float>& ref, const std::vector<float>& got, double floor) {
  double worst = 0.0;
  for (size_t i = 0; i < ref.size(); ++i)
    worst = std::max(worst, std::fabs(double(got[i]) - ref[i]) / std::max(std::fabs(double(ref[i])), floor));
  return worst;
}

AdamWHyper paper_hyper(int64_t step, double lr, double grad_scale) {
  AdamWHyper h;
  h.lr = lr;
  h.beta1 = 0.9;
  h.beta2 = 0.98;
  h.eps = 1e-6;
  h.weight_decay = 0.01;
  h.step = step;
  h.grad_scale = grad_scale;
  return h;
}

TEST(AdamW, MultiTensorMatchesCpuReferenceOverSeveralSteps) {
  std::vector<HostTensor> host = make_tensors(11);
  DeviceTensors device(host);
  const double lrs[] = {5e-4, 3e-4, 1e-3, 2e-5};
  const double scales[] = {1.0, 0.25, 1.0 / 65536.0, 0.731};
  for (int step = 1; step <= 4; ++step) {
    set_grads(host, 100u * step);
    if (step == 3)  // loss-scaled gradients, as an f16 run would produce them
      for (HostTensor& h : host) {
        for (float& g : h.grad_f32) g *= 65536.0f;
        h.grad_bytes = encode_grad(h.grad_f32, h.spec.grad_dtype);
      }
    device.upload_grads(host);
    const AdamWScalars scalars = coco::kernels::adamw_scalars(paper_hyper(step, lrs[step - 1], scales[step - 1]));
    run_device_step(device, host, scalars);
    std::vector<AdamWTensorDesc> descs = host_descs(host);
    coco::kernels::cpu::adamw_multi_tensor(descs, scalars);
  }
  for (size_t t = 0; t < host.size(); ++t) {
    const std::string what = "tensor " + std::to_string(t) + " numel " + std::to_string(host[t].spec.numel);
    // f32 elementwise update, same operation order: only FMA contraction on a real GPU can differ
    // (1 ulp per operation), so NMSE ~1e-14 and a 1e-6 relative bound per element hold with margin.
    EXPECT_TRUE(matches_reference(as_f64(host[t].param), as_f64(device.param[t]->download()), 1e-12, what + " param"));
    EXPECT_TRUE(matches_reference(as_f64(host[t].m), as_f64(device.m[t]->download()), 1e-12, what + " exp_avg"));
    EXPECT_TRUE(matches_reference(as_f64(host[t].v), as_f64(device.v[t]->download()), 1e-12, what + " exp_avg_sq"));
    EXPECT_LE(max_relative_error(host[t].param, device.param[t]->download(), 1e-3), 1e-6) << what;
    if (host[t].spec.bf16_copy) {
      const auto copy = device.copy[t]->download();
      const auto params = device.param[t]->download();
      for (size_t i = 0; i < copy.size(); ++i) {
        // The working copy is exactly the round-to-nearest-even bf16 of the updated master weight.
        const __nv_bfloat16 expected = __float2bfloat16(params[i]);
        ASSERT_EQ(std::memcmp(&copy[i], &expected, 2), 0) << what << " element " << i;
      }
    }
  }
  EXPECT_TRUE(device.guards_intact());
}

// One step of torch.optim.AdamW worked out by hand (lr 0.1, betas (0.9, 0.999), eps 1e-8, wd 0.01):
// p = 1 * (1 - 0.001) = 0.999; m = 0.05; v = 0.00025; step_size = 0.1 / 0.1 = 1;
// denom = sqrt(0.00025) / sqrt(0.001) + 1e-8 = 0.5 + 1e-8; p = 0.999 - 0.05 / (0.5 + 1e-8).
TEST(AdamW, HandComputedTorchStep) {
  AdamWHyper h;
  h.lr = 0.1;
  h.beta1 = 0.9;
  h.beta2 = 0.999;
  h.eps = 1e-8;
  h.weight_decay = 0.01;
  h.step = 1;
  const AdamWScalars s = coco::kernels::adamw_scalars(h);
  const double expected = 0.999 - 0.05 / (0.5 + 1e-8);

  double p = 1.0, g = 0.5, m = 0.0, v = 0.0;
  coco::kernels::cpu::adamw_update<double, double>(&p, &g, &m, &v, nullptr, 1, true, s);
  EXPECT_NEAR(p, expected, 1e-15);
  EXPECT_NEAR(m, 0.05, 1e-16);
  EXPECT_NEAR(v, 0.00025, 1e-18);

  GuardedDeviceBuffer<float> dp(std::vector<float>{1.0f}), dm(std::vector<float>{0.0f}), dv(std::vector<float>{0.0f});
  GuardedDeviceBuffer<float> dg(std::vector<float>{0.5f});
  std::vector<AdamWTensorDesc> descs(1);
  descs[0] = {dp.data(), dg.data(), dm.data(), dv.data(), nullptr, 1, 0, DType::f32, 1};
  const int64_t chunks = coco::kernels::plan_adamw_chunks(descs);
  GuardedDeviceBuffer<AdamWTensorDesc> device_descs(descs);
  coco::kernels::cuda::adamw_multi_tensor(device_descs.data(), 1, chunks, s, nullptr);
  EXPECT_NEAR(dp.download()[0], expected, 1e-7);
  EXPECT_FLOAT_EQ(dm.download()[0], 0.05f);
}

TEST(AdamW, FloatMatchesDoubleReference) {
  // The f32 kernel against the f64 reference from the same inputs: the formula's f32 rounding only.
  const int64_t n = 3000;
  std::vector<float> p = random_floats(n, 5, -1, 1), m = random_floats(n, 6, -0.01f, 0.01f);
  std::vector<float> v = random_floats(n, 7, 0.0f, 1e-4f), g = random_floats(n, 8, -0.5f, 0.5f);
  std::vector<double> pd(p.begin(), p.end()), md(m.begin(), m.end()), vd(v.begin(), v.end()), gd(g.begin(), g.end());
  const AdamWScalars s = coco::kernels::adamw_scalars(paper_hyper(7, 5e-4, 0.5));
  coco::kernels::cpu::adamw_update<double, double>(pd.data(), gd.data(), md.data(), vd.data(), nullptr, n, true, s);

  GuardedDeviceBuffer<float> dp(p), dm(m), dv(v), dg(g);
  std::vector<AdamWTensorDesc> descs(1);
  descs[0] = {dp.data(), dg.data(), dm.data(), dv.data(), nullptr, n, 0, DType::f32, 1};
  const int64_t chunks = coco::kernels::plan_adamw_chunks(descs);
  GuardedDeviceBuffer<AdamWTensorDesc> device_descs(descs);
  coco::kernels::cuda::adamw_multi_tensor(device_descs.data(), 1, chunks, s, nullptr);
  // f32 against f64: a handful of roundings of order 6e-8 each; NMSE ~1e-15, threshold 1e-12.
  EXPECT_TRUE(matches_reference(pd, as_f64(dp.download()), 1e-12, "param f32 vs f64"));
  EXPECT_TRUE(matches_reference(md, as_f64(dm.download()), 1e-12, "exp_avg f32 vs f64"));
  EXPECT_TRUE(matches_reference(vd, as_f64(dv.download()), 1e-12, "exp_avg_sq f32 vs f64"));
}

TEST(AdamW, DecayMaskAndGradScale) {
  // Zero gradient and moments: the update term is 0 / (0 + eps) = 0, so a decayed tensor is scaled by
  // exactly (1 - lr * wd) (as f32) and an undecayed one is untouched.
  const int64_t n = 77;
  const std::vector<float> start = random_floats(n, 9, -2, 2), zeros(n, 0.0f);
  GuardedDeviceBuffer<float> p_decay(start), p_keep(start), m1(zeros), v1(zeros), m2(zeros), v2(zeros), g(zeros);
  std::vector<AdamWTensorDesc> descs(2);
  descs[0] = {p_decay.data(), g.data(), m1.data(), v1.data(), nullptr, n, 0, DType::f32, 1};
  descs[1] = {p_keep.data(), g.data(), m2.data(), v2.data(), nullptr, n, 0, DType::f32, 0};
  const int64_t chunks = coco::kernels::plan_adamw_chunks(descs);
  GuardedDeviceBuffer<AdamWTensorDesc> device_descs(descs);
  const AdamWScalars s = coco::kernels::adamw_scalars(paper_hyper(1, 0.5, 1.0));
  coco::kernels::cuda::adamw_multi_tensor(device_descs.data(), 2, chunks, s, nullptr);
  const auto decayed = p_decay.download(), kept = p_keep.download();
  const float factor = static_cast<float>(1.0 - 0.5 * 0.01);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(decayed[i], start[i] * factor) << i;
    EXPECT_EQ(kept[i], start[i]) << i;
  }

  // grad_scale s with gradients g equals scale 1 with gradients s * g when both are exact (powers of two).
  const std::vector<float> grads = random_floats(n, 10, -1, 1);
  std::vector<float> scaled(grads);
  for (float& x : scaled) x *= 0.125f;
  std::vector<float> pa = start, pb = start, ma(n, 0.0f), mb(n, 0.0f), va(n, 0.0f), vb(n, 0.0f);
  coco::kernels::cpu::adamw_update<float, float>(pa.data(), grads.data(), ma.data(), va.data(), nullptr, n, true,
                                                 coco::kernels::adamw_scalars(paper_hyper(3, 1e-3, 0.125)));
  coco::kernels::cpu::adamw_update<float, float>(pb.data(), scaled.data(), mb.data(), vb.data(), nullptr, n, true,
                                                 coco::kernels::adamw_scalars(paper_hyper(3, 1e-3, 1.0)));
  EXPECT_EQ(pa, pb);
  EXPECT_EQ(ma, mb);
  EXPECT_EQ(va, vb);
}

TEST(AdamW, NonFiniteGradientsStayLocalAndMatchCpu) {
  const int64_t n = 300;
  std::vector<float> p = random_floats(n, 21, -1, 1), m(n, 0.0f), v(n, 0.0f), g = random_floats(n, 22, -1, 1);
  g[3] = NAN;
  g[150] = INFINITY;
  g[299] = -INFINITY;
  std::vector<float> pc = p, mc = m, vc = v;
  const AdamWScalars s = coco::kernels::adamw_scalars(paper_hyper(2, 1e-3, 1.0));
  coco::kernels::cpu::adamw_update<float, float>(pc.data(), g.data(), mc.data(), vc.data(), nullptr, n, true, s);
  GuardedDeviceBuffer<float> dp(p), dm(m), dv(v), dg(g);
  std::vector<AdamWTensorDesc> descs(1);
  descs[0] = {dp.data(), dg.data(), dm.data(), dv.data(), nullptr, n, 0, DType::f32, 1};
  const int64_t chunks = coco::kernels::plan_adamw_chunks(descs);
  GuardedDeviceBuffer<AdamWTensorDesc> device_descs(descs);
  coco::kernels::cuda::adamw_multi_tensor(device_descs.data(), 1, chunks, s, nullptr);
  const auto got = dp.download();
  // NaN/Inf parity with the reference, and every other element finite and matching.
  EXPECT_TRUE(matches_reference(as_f64(pc), as_f64(got), 1e-12, "param with NaN/Inf grads"));
  EXPECT_TRUE(std::isnan(got[3]) && std::isnan(got[150]) && std::isnan(got[299]));
  int finite = 0;
  for (float x : got) finite += std::isfinite(x) ? 1 : 0;
  EXPECT_EQ(finite, n - 3);
}

// The 128-bit path (every array aligned: the buffers above) and the element-wise path (arrays one
// element off their alignment) give the same bits.
TEST(AdamW, VectorAndScalarPathsAgreeBitwise) {
  for (DType grad_dtype : {DType::f32, DType::bf16}) {
    const size_t n = 9001, g = coco::dtype_size(grad_dtype);
    const std::vector<float> param = random_floats(n, 1), m = random_floats(n, 2, -0.01f, 0.01f),
                             v = random_floats(n, 3, 0.0f, 1e-4f);
    const std::vector<uint8_t> grad = encode_grad(random_floats(n, 4, -0.5f, 0.5f), grad_dtype);
    const AdamWScalars scalars = coco::kernels::adamw_scalars(paper_hyper(3, 1e-3, 0.5));
    std::vector<std::vector<float>> results;
    for (size_t shift : {size_t{0}, size_t{1}}) {
      const auto shifted = [&](const std::vector<float>& x) {
        std::vector<float> out(shift, 0.0f);
        out.insert(out.end(), x.begin(), x.end());
        return out;
      };
      std::vector<uint8_t> grad_bytes(shift * g, 0);
      grad_bytes.insert(grad_bytes.end(), grad.begin(), grad.end());
      GuardedDeviceBuffer<float> d_param(shifted(param)), d_m(shifted(m)), d_v(shifted(v));
      GuardedDeviceBuffer<uint8_t> d_grad(grad_bytes);
      GuardedDeviceBuffer<__nv_bfloat16> d_copy(n + shift);
      std::vector<AdamWTensorDesc> descs(1);
      descs[0].param = d_param.data() + shift;
      descs[0].exp_avg = d_m.data() + shift;
      descs[0].exp_avg_sq = d_v.data() + shift;
      descs[0].grad = d_grad.data() + shift * g;
      descs[0].param_bf16 = d_copy.data() + shift;
      descs[0].numel = static_cast<int64_t>(n);
      descs[0].grad_dtype = grad_dtype;
      const int64_t chunks = coco::kernels::plan_adamw_chunks(descs);
      GuardedDeviceBuffer<AdamWTensorDesc> device_descs(descs);
      coco::kernels::cuda::adamw_multi_tensor(device_descs.data(), 1, chunks, scalars, nullptr);
      std::vector<float> out;
      for (const auto* buffer : {&d_param, &d_m, &d_v}) {
        const std::vector<float> values = buffer->download();
        out.insert(out.end(), values.begin() + static_cast<int64_t>(shift), values.end());
      }
      for (const __nv_bfloat16 b : d_copy.download()) out.push_back(__bfloat162float(b));
      out.erase(out.end() - static_cast<int64_t>(n + shift), out.end() - static_cast<int64_t>(n));
      results.push_back(out);
    }
    ASSERT_EQ(results[0].size(), results[1].size());
    EXPECT_EQ(std::memcmp(results[0].data(), results[1].data(), results[0].size() * sizeof(float)), 0)
        << "grad dtype " << static_cast<int>(grad_dtype);
  }
}

TEST(AdamW, ScheduleInvariant) {
  std::vector<HostTensor> host = make_tensors(31);
  set_grads(host, 32);
  const AdamWScalars s = coco::kernels::adamw_scalars(paper_hyper(5, 5e-4, 0.5));
  EXPECT_TRUE(schedule_invariant(
      [&] {
        DeviceTensors device(host);
        device.upload_grads(host);
        run_device_step(device, host, s);
        std::vector<uint8_t> bytes;
        for (size_t t = 0; t < host.size(); ++t)
          for (const auto& part : {device.param[t]->download_bytes(), device.m[t]->download_bytes(),
                                   device.v[t]->download_bytes(), device.copy[t]->download_bytes()})
            bytes.insert(bytes.end(), part.begin(), part.end());
        return bytes;
      },
      3));
}

TEST(AdamW, RejectsBadArguments) {
  AdamWHyper h;
  h.beta1 = 1.0;
  EXPECT_THROW(coco::kernels::adamw_scalars(h), std::invalid_argument);
  h = AdamWHyper{};
  h.step = 0;
  EXPECT_THROW(coco::kernels::adamw_scalars(h), std::invalid_argument);
  h = AdamWHyper{};
  h.lr = NAN;
  EXPECT_THROW(coco::kernels::adamw_scalars(h), std::invalid_argument);
  h = AdamWHyper{};
  h.grad_scale = INFINITY;
  EXPECT_THROW(coco::kernels::adamw_scalars(h), std::invalid_argument);

  float x = 0.0f;
  std::vector<AdamWTensorDesc> descs(1);
  descs[0] = {&x, &x, &x, nullptr, nullptr, 1, 0, DType::f32, 1};
  EXPECT_THROW(coco::kernels::plan_adamw_chunks(descs), std::invalid_argument);  // null exp_avg_sq
  descs[0] = {&x, &x, &x, &x, nullptr, 1, 0, DType::i32, 1};
  EXPECT_THROW(coco::kernels::plan_adamw_chunks(descs), std::invalid_argument);  // integer grads
  descs[0] = {&x, &x, &x, &x, nullptr, -1, 0, DType::f32, 1};
  EXPECT_THROW(coco::kernels::plan_adamw_chunks(descs), std::invalid_argument);
  EXPECT_THROW(
      coco::kernels::cuda::adamw_multi_tensor(nullptr, 0, 3, coco::kernels::adamw_scalars(AdamWHyper{}), nullptr),
      std::invalid_argument);
}

// ------------------------------------------------------------------ optim::AdamW on coco::Tensor

struct OptimRun {
  std::vector<std::vector<float>> masters;
  std::vector<std::vector<float>> working;  // bf16 copies widened to f32
  std::vector<int64_t> steps;
};

// Three parameters: f32 grads on the master; a bf16 working copy whose f32 gradient drives the
// update; an undecayed master with bf16 gradients that gets no gradient on step 2.
OptimRun run_optimizer(coco::Device device) {
  using coco::Shape;
  using coco::Tensor;
  const std::vector<Shape> shapes = {Shape{7}, Shape{33, 5}, Shape{130}};
  std::vector<coco::optim::AdamWParam> params;
  for (size_t i = 0; i < shapes.size(); ++i) {
    coco::optim::AdamWParam p;
    p.name = "p" + std::to_string(i);
    p.master =
        Tensor::from_vector(random_floats(static_cast<size_t>(shapes[i].numel()), 70 + i, -1, 1), shapes[i], device);
    if (i == 1) {
      p.working = p.master.to(DType::bf16);
      p.working.set_requires_grad(true).set_grad_dtype(DType::f32);
    } else {
      p.master.set_requires_grad(true);
    }
    p.weight_decay = i != 2;
    params.push_back(p);
  }
  coco::optim::AdamWOptions options;
  options.beta2 = 0.98;
  options.eps = 1e-6;
  coco::optim::AdamW optimizer(params, options);
  const double lrs[] = {1e-3, 5e-4, 2e-4};
  for (int step = 0; step < 3; ++step) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      const auto values = random_floats(static_cast<size_t>(shapes[i].numel()), 900 + 10 * step + i, -0.3f, 0.3f);
      Tensor grad = Tensor::from_vector(values, shapes[i], device);
      if (i == 2) grad = grad.to(DType::bf16);
      const Tensor& source = i == 1 ? params[i].working : params[i].master;
      source.autograd_meta()->grad = (i == 2 && step == 1) ? Tensor() : grad;
    }
    optimizer.step(lrs[step], step == 2 ? 0.5 : 1.0);
  }
  OptimRun run;
  for (size_t i = 0; i < shapes.size(); ++i) {
    run.masters.push_back(params[i].master.to(coco::Device::cpu).to_vector<float>());
    if (params[i].working.defined())
      run.working.push_back(params[i].working.to(DType::f32).to(coco::Device::cpu).to_vector<float>());
    run.steps.push_back(optimizer.step_count(i));
  }
  return run;
}

TEST(AdamWOptimizer, CpuAndCudaTensorsAgree) {
  const OptimRun cpu = run_optimizer(coco::Device::cpu);
  const OptimRun cuda = run_optimizer(coco::Device::cuda);
  EXPECT_EQ(cpu.steps, (std::vector<int64_t>{3, 3, 2}));  // no gradient on step 2: no update, no count
  EXPECT_EQ(cuda.steps, cpu.steps);
  for (size_t i = 0; i < cpu.masters.size(); ++i) {
    // Same f32 formula on both backends; a real GPU may fuse multiply-adds (1 ulp per operation).
    EXPECT_TRUE(
        matches_reference(as_f64(cpu.masters[i]), as_f64(cuda.masters[i]), 1e-12, "master " + std::to_string(i)));
    EXPECT_LE(max_relative_error(cpu.masters[i], cuda.masters[i], 1e-3), 1e-6);
  }
  ASSERT_EQ(cpu.working.size(), 1u);
  for (size_t k = 0; k < cpu.working[0].size(); ++k) {
    // The working copy is the bf16 rounding of the master on each backend.
    EXPECT_EQ(cpu.working[0][k], __bfloat162float(__float2bfloat16(cpu.masters[1][k])));
    EXPECT_EQ(cuda.working[0][k], __bfloat162float(__float2bfloat16(cuda.masters[1][k])));
  }
}

TEST(AdamWOptimizer, MatchesKernelReferenceAndKeepsState) {
  // One f32 parameter on the CPU, two steps, against kernels::cpu::adamw_update called directly.
  const std::vector<float> start = random_floats(50, 81, -1, 1), g1 = random_floats(50, 82, -1, 1),
                           g2 = random_floats(50, 83, -1, 1);
  coco::Tensor w = coco::Tensor::from_vector(start, coco::Shape{5, 10});
  w.set_requires_grad(true);
  coco::optim::AdamW optimizer(std::vector<coco::NamedParameter>{{"w", w, true}});
  w.autograd_meta()->grad = coco::Tensor::from_vector(g1, coco::Shape{5, 10});
  optimizer.step(0.01);
  w.autograd_meta()->grad = coco::Tensor::from_vector(g2, coco::Shape{5, 10});
  optimizer.step(0.02, 0.5);

  std::vector<float> p = start, m(50, 0.0f), v(50, 0.0f);
  AdamWHyper h;
  h.lr = 0.01;
  h.step = 1;
  coco::kernels::cpu::adamw_update<float, float>(p.data(), g1.data(), m.data(), v.data(), nullptr, 50, true,
                                                 coco::kernels::adamw_scalars(h));
  h.lr = 0.02;
  h.step = 2;
  h.grad_scale = 0.5;
  coco::kernels::cpu::adamw_update<float, float>(p.data(), g2.data(), m.data(), v.data(), nullptr, 50, true,
                                                 coco::kernels::adamw_scalars(h));
  EXPECT_EQ(w.to_vector<float>(), p);
  EXPECT_EQ(optimizer.exp_avg(0).to_vector<float>(), m);
  EXPECT_EQ(optimizer.exp_avg_sq(0).to_vector<float>(), v);
  EXPECT_EQ(optimizer.step_count(0), 2);

  // Restoring the state into a fresh optimizer continues identically.
  coco::Tensor w2 = coco::Tensor::from_vector(p, coco::Shape{5, 10});
  w2.set_requires_grad(true);
  coco::optim::AdamW restored(std::vector<coco::NamedParameter>{{"w", w2, true}});
  restored.set_state(0, optimizer.step_count(0), optimizer.exp_avg(0), optimizer.exp_avg_sq(0));
  w.autograd_meta()->grad = coco::Tensor::from_vector(g1, coco::Shape{5, 10});
  w2.autograd_meta()->grad = coco::Tensor::from_vector(g1, coco::Shape{5, 10});
  optimizer.step(0.01);
  restored.step(0.01);
  EXPECT_EQ(w.to_vector<float>(), w2.to_vector<float>());

  optimizer.zero_grad();
  for (float x : w.grad().to_vector<float>()) EXPECT_EQ(x, 0.0f);
}

TEST(AdamWOptimizer, RejectsBadParameters) {
  using coco::Tensor;
  coco::optim::AdamWParam p;
  p.master = Tensor::zeros(coco::Shape{4}, DType::i32);
  EXPECT_THROW(coco::optim::AdamW({p}), coco::TensorError);
  p.master = Tensor::zeros(coco::Shape{4}, DType::f32);
  p.working = Tensor::zeros(coco::Shape{5}, DType::bf16);
  EXPECT_THROW(coco::optim::AdamW({p}), coco::TensorError);
  p.working = Tensor();
  coco::optim::AdamWOptions bad;
  bad.beta2 = 1.0;
  EXPECT_THROW(coco::optim::AdamW({p}, bad), std::invalid_argument);
  p.master.set_requires_grad(true);
  coco::optim::AdamW optimizer({p});
  p.master.autograd_meta()->grad = Tensor::zeros(coco::Shape{3}, DType::f32);
  EXPECT_THROW(optimizer.step(1e-3), coco::TensorError);  // gradient of the wrong shape
  p.master.autograd_meta()->grad = Tensor::zeros(coco::Shape{4}, DType::f32);
  EXPECT_THROW(optimizer.step(-1.0), std::invalid_argument);
  EXPECT_THROW(optimizer.step(1e-3, NAN), std::invalid_argument);
}

}  // namespace
