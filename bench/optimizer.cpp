// coco-bench cases: the optimizer step over a BERT-base-sized parameter set (about 110M parameters at
// paper-base; 2 layers of the reduced shapes in emulated mode): fused multi-tensor AdamW, the global
// gradient norm and the non-finite check.
#include <cmath>

#include "bench/bench_util.h"
#include "bench/naive_kernels.h"
#include "kernels/adamw.h"
#include "kernels/gradnorm.h"
#include "kernels/loss_scale.h"

namespace coco::bench {
namespace {

struct ParameterShape {
  int64_t numel;
  bool decay;  // weight matrices decay; biases, LayerNorm and embeddings-free vectors do not
};

// The parameter tensors of the main model (token + position embeddings, encoder layers, MLM head).
std::vector<ParameterShape> model_parameters(const Shapes& s) {
  const int64_t d = s.d_model, E = s.embed_dim, FF = s.d_ff;
  const int64_t layers = s.config == "emulated-small" ? 2 : 12;
  std::vector<ParameterShape> p = {
      {s.vocab * E, true}, {std::max<int64_t>(s.seq_len, 512) * E, true}, {E, false}, {E, false}};
  if (E != d) p.insert(p.end(), {{E * d, true}, {d, false}});
  for (int64_t l = 0; l < layers; ++l)
    p.insert(p.end(), {{3 * d * d, true},
                       {3 * d, false},
                       {d * d, true},
                       {d, false},
                       {d, false},
                       {d, false},
                       {FF * d, true},
                       {FF, false},
                       {d * FF, true},
                       {d, false},
                       {d, false},
                       {d, false}});
  p.insert(p.end(), {{d * d, true}, {d, false}, {d, false}, {d, false}, {s.vocab, false}});
  return p;
}

std::vector<Case> optimizer_cases(const Shapes& s) {
  const std::vector<ParameterShape> shapes = model_parameters(s);
  int64_t total = 0;
  for (const ParameterShape& p : shapes) total += p.numel;
  const auto param_host = std::make_shared<std::vector<float>>(random_floats<float>(total, 401, -0.1f, 0.1f));
  const auto grad_host = std::make_shared<std::vector<float>>(random_floats<float>(total, 402, -1e-2f, 1e-2f));
  const auto m_host = std::make_shared<std::vector<float>>(random_floats<float>(total, 403, -1e-3f, 1e-3f));
  const auto v_host = std::make_shared<std::vector<float>>(random_floats<float>(total, 404, 0.0f, 1e-5f));
  DeviceArray<float> param(total), grad(*grad_host), m(total), v(total);
  DeviceArray<bf16> param_bf16(total);

  kernels::AdamWHyper hyper;
  hyper.lr = 2e-4;
  hyper.weight_decay = 0.01;
  hyper.eps = 1e-6;
  hyper.step = 1000;
  const kernels::AdamWScalars scalars = kernels::adamw_scalars(hyper);

  std::vector<kernels::AdamWTensorDesc> descs;
  std::vector<kernels::NormTensorDesc> norm_descs;
  int64_t offset = 0;
  for (const ParameterShape& p : shapes) {
    kernels::AdamWTensorDesc desc;
    desc.param = param.get() + offset;
    desc.grad = grad.get() + offset;
    desc.exp_avg = m.get() + offset;
    desc.exp_avg_sq = v.get() + offset;
    desc.param_bf16 = param_bf16.get() + offset;
    desc.numel = p.numel;
    desc.grad_dtype = DType::f32;
    desc.apply_weight_decay = p.decay ? 1 : 0;
    descs.push_back(desc);
    kernels::NormTensorDesc norm;
    norm.data = grad.get() + offset;
    norm.numel = p.numel;
    norm.dtype = DType::f32;
    norm_descs.push_back(norm);
    offset += p.numel;
  }
  const int64_t adam_chunks = kernels::plan_adamw_chunks(descs);
  const int64_t norm_chunks = kernels::plan_norm_chunks(norm_descs);
  DeviceArray<kernels::AdamWTensorDesc> device_descs(descs);
  DeviceArray<kernels::NormTensorDesc> device_norm_descs(norm_descs);
  const int num_tensors = static_cast<int>(descs.size());
  DeviceArray<float> partials(std::max<int64_t>(1, norm_chunks));
  DeviceArray<double> sum_sq(1);
  DeviceArray<int32_t> flag(1);

  auto reset_state = [=] {
    param.upload(*param_host);
    m.upload(*m_host);
    v.upload(*v_host);
  };
  // Reference: the CPU update of each tensor on host copies, laid out like the device buffers.
  auto reference_step = [=](bool per_tensor_decay) {
    std::vector<std::vector<float>> state = {*param_host, *m_host, *v_host};
    std::vector<bf16> working(total);
    int64_t at = 0;
    for (const ParameterShape& p : shapes) {
      kernels::cpu::adamw_update<float, float>(state[0].data() + at, grad_host->data() + at, state[1].data() + at,
                                               state[2].data() + at, working.data() + at, p.numel,
                                               per_tensor_decay ? p.decay : true, scalars);
      at += p.numel;
    }
    return std::make_pair(state, working);
  };
  auto check_step = [=](bool per_tensor_decay, bool check_working_copy) {
    const auto [expected, working] = reference_step(per_tensor_decay);
    return first_problem(
        {compare("param", expected[0], param.download(), kF32Nmse),
         compare("exp_avg", expected[1], m.download(), kF32Nmse),
         compare("exp_avg_sq", expected[2], v.download(), kF32Nmse),
         check_working_copy ? compare("param_bf16", to_floats(working), download_floats(param_bf16), 1e-5) : ""});
  };

  const std::string shape_text = dims({{"params", total}, {"tensors", num_tensors}}, "f32");
  std::vector<Case> cases;
  {
    Case c = make_case("adamw.multi_tensor", "coco", shape_text + " +bf16 copy");
    c.bytes = total * (3 * 8.0 + 4.0 + 2.0);  // param, m, v read+written; grad read; bf16 copy written
    c.run = [=] {
      kernels::cuda::adamw_multi_tensor(device_descs.get(), num_tensors, adam_chunks, scalars, current_stream());
    };
    c.validate = [=, run = c.run] {
      reset_state();
      param_bf16.poison();
      run();
      return check_step(true, true);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("adamw.flat", "naive", shape_text);
    c.bytes = total * (3 * 8.0 + 4.0);
    c.run = [=] {
      naive::adamw_flat(param.get(), grad.get(), m.get(), v.get(), total, static_cast<float>(scalars.decay_factor),
                        static_cast<float>(hyper.beta1), static_cast<float>(hyper.beta2),
                        static_cast<float>(scalars.step_size), static_cast<float>(scalars.bias_correction2_sqrt),
                        static_cast<float>(scalars.eps), current_stream());
    };
    c.validate = [=, run = c.run] {
      reset_state();
      run();
      // The naive kernel decays every tensor and uses the textbook moment update instead of
      // torch's lerp: equal to the reference within f32 rounding.
      return check_step(false, false);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("grad_norm.sum_of_squares", "coco", shape_text);
    c.bytes = total * 4.0;
    c.run = [=] {
      kernels::cuda::sum_of_squares(device_norm_descs.get(), num_tensors, norm_chunks, partials.get(), sum_sq.get(),
                                    current_stream());
    };
    c.validate = [=, run = c.run] {
      sum_sq.poison();
      run();
      std::vector<kernels::NormTensorDesc> host_descs;
      int64_t at = 0;
      for (const ParameterShape& p : shapes) {
        kernels::NormTensorDesc d;
        d.data = grad_host->data() + at;
        d.numel = p.numel;
        host_descs.push_back(d);
        at += p.numel;
      }
      const double expected = kernels::cpu::sum_of_squares(host_descs);
      const double got = sum_sq.download()[0];
      // f32 partial sums of kGradNormChunk squares: relative error far below 1e-5.
      if (!(std::fabs(got - expected) <= 1e-5 * expected))
        return "sum of squares " + std::to_string(got) + ", reference " + std::to_string(expected);
      return std::string();
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("nonfinite_check", "coco", shape_text);
    c.bytes = total * 4.0;
    c.run = [=] {
      kernels::cuda::mark_nonfinite(device_norm_descs.get(), num_tensors, norm_chunks, flag.get(), current_stream());
    };
    c.validate = [=, run = c.run]() -> std::string {
      flag.zero();
      run();
      if (flag.download()[0] != 0) return "flag set on finite gradients";
      // A single NaN in the middle of the gradients must be found.
      const int64_t where = total / 2;
      const float nan = std::nanf("");
      COCO_CUDA_CHECK(cudaMemcpy(grad.get() + where, &nan, sizeof(float), cudaMemcpyHostToDevice));
      run();
      const int32_t got = flag.download()[0];
      COCO_CUDA_CHECK(cudaMemcpy(grad.get() + where, grad_host->data() + where, sizeof(float), cudaMemcpyHostToDevice));
      if (got != 1) return "flag not set with a NaN at element " + std::to_string(where);
      return "";
    };
    cases.push_back(c);
  }
  return cases;
}

}  // namespace

COCO_BENCH(optimizer, optimizer_cases);

}  // namespace coco::bench
