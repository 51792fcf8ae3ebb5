// coco-bench cases: the transformer's GEMMs at training shapes. Variants:
//   coco-lt   kernels::cuda::linear_forward / gemm: cuBLASLt with the bias / GELU epilogue fused
//             (in the emulated build a CPU GEMM plus the epilogue kernel under the emulator)
//   cublas    plain cublasGemmEx (bf16 in/out, f32 compute, default algorithm, no epilogue): the
//             baseline the fused path is compared with; gpu build only
#include <stdexcept>

#include "bench/bench_util.h"
#include "kernels/matmul.h"

#if !defined(COCO_CUDA_EMULATED)
#include <cublas_v2.h>
#endif

namespace coco::bench {
namespace {

using kernels::Activation;

#if !defined(COCO_CUDA_EMULATED)
cublasHandle_t cublas_handle() {
  static cublasHandle_t handle = [] {
    cublasHandle_t h = nullptr;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) throw CudaError("coco-bench: cublasCreate failed");
    return h;
  }();
  return handle;
}

// Row-major C (M, N) = op(A) . op(B) with bf16 operands and output, f32 accumulation. cuBLAS is
// column-major, so it computes C^T = op(B)^T . op(A)^T with the operands swapped.
void cublas_gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bf16* A, int64_t lda,
                      const bf16* B, int64_t ldb, float beta, bf16* C, int64_t ldc) {
  cublasHandle_t handle = cublas_handle();
  cublasSetStream(handle, current_stream());
  const float alpha = 1.0f;
  const cublasStatus_t status = cublasGemmEx(
      handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(N),
      static_cast<int>(M), static_cast<int>(K), &alpha, B, CUDA_R_16BF, static_cast<int>(ldb), A, CUDA_R_16BF,
      static_cast<int>(lda), &beta, C, CUDA_R_16BF, static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (status != CUBLAS_STATUS_SUCCESS)
    throw CudaError("coco-bench: cublasGemmEx failed with status " + std::to_string(static_cast<int>(status)));
}
#endif

struct LinearLayer {
  const char* name;  // which projection of the model
  int64_t rows, in, out;
  Activation act;
};

std::vector<Case> matmul_cases(const Shapes& s) {
  const int64_t BT = s.tokens(), d = s.d_model;
  const std::vector<LinearLayer> layers = {
      {"qkv", BT, d, 3 * d, Activation::none},
      {"attn_out", BT, d, d, Activation::none},
      {"ff1+gelu", BT, d, s.d_ff, Activation::gelu_tanh},
      {"ff2", BT, s.d_ff, d, Activation::none},
      {"mlm_head", s.masked_rows(), s.embed_dim, s.vocab, Activation::none},
  };
  std::vector<Case> cases;
  uint64_t seed = 100;
  for (const LinearLayer& layer : layers) {
    const int64_t M = layer.rows, K = layer.in, N = layer.out;
    // x: (M, K), W: (N, K), bias: (N), y, pre, dy: (M, N), dx: (M, K), dW: (N, K) f32
    const auto x_host = std::make_shared<std::vector<float>>(random_floats<bf16>(M * K, ++seed));
    const auto w_host = std::make_shared<std::vector<float>>(random_floats<bf16>(N * K, ++seed, -0.05f, 0.05f));
    const auto bias_host = std::make_shared<std::vector<float>>(random_floats<bf16>(N, ++seed));
    const auto dy_host = std::make_shared<std::vector<float>>(random_floats<bf16>(M * N, ++seed));
    DeviceArray<bf16> x = device_from<bf16>(*x_host), w = device_from<bf16>(*w_host),
                      bias = device_from<bf16>(*bias_host), dy = device_from<bf16>(*dy_host), y(M * N), pre(M * N),
                      dx(M * K);
    DeviceArray<float> dw(N * K);
    const std::string shape_text = std::string(layer.name) + " " + dims({{"M", M}, {"N", N}, {"K", K}}, "bf16");
    const double flops = 2.0 * M * N * K;
    const bool gelu = layer.act != Activation::none;

    {
      Case c = make_case(gelu ? "linear.forward+bias+gelu" : "linear.forward+bias", "coco-lt", shape_text);
      c.flops = flops;
      c.run = [=] {
        kernels::cuda::linear_forward<bf16>(x.get(), w.get(), bias.get(), layer.act, M, K, N, y.get(),
                                            gelu ? pre.get() : nullptr, current_stream());
      };
      c.validate = [=, run = c.run] {
        y.poison();
        run();
        std::vector<float> expected(M * N), expected_pre(M * N);
        kernels::cpu::linear_forward<float>(x_host->data(), w_host->data(), bias_host->data(), layer.act, M, K, N,
                                            expected.data(), expected_pre.data());
        std::string problem = compare("y", expected, download_floats(y), kBf16Nmse);
        if (problem.empty() && gelu) problem = compare("pre_act", expected_pre, download_floats(pre), kBf16Nmse);
        return problem;
      };
      cases.push_back(c);
    }
#if !defined(COCO_CUDA_EMULATED)
    {
      Case c = make_case("linear.forward (no epilogue)", "cublas", shape_text);
      c.flops = flops;
      c.run = [=] { cublas_gemm_bf16(false, true, M, N, K, x.get(), K, w.get(), K, 0.0f, y.get(), N); };
      c.validate = [=, run = c.run] {
        y.poison();
        run();
        std::vector<float> expected(M * N);
        kernels::cpu::linear_forward<float>(x_host->data(), w_host->data(), nullptr, Activation::none, M, K, N,
                                            expected.data(), nullptr);
        return compare("y", expected, download_floats(y), kBf16Nmse);
      };
      cases.push_back(c);
    }
#endif
    // dX = dY . W: (M, N) . (N, K)
    {
      Case c = make_case("linear.backward_dx", "coco-lt", shape_text);
      c.flops = flops;
      c.run = [=] {
        kernels::cuda::gemm<bf16, bf16>(false, false, M, K, N, 1.0, dy.get(), N, w.get(), K, 0.0, dx.get(), K,
                                        current_stream());
      };
      c.validate = [=, run = c.run] {
        dx.poison();
        run();
        std::vector<float> expected(M * K);
        kernels::cpu::gemm<float, float>(false, false, M, K, N, 1.0, dy_host->data(), N, w_host->data(), K, 0.0,
                                         expected.data(), K);
        return compare("dx", expected, download_floats(dx), kBf16Nmse);
      };
      cases.push_back(c);
    }
#if !defined(COCO_CUDA_EMULATED)
    {
      Case c = make_case("linear.backward_dx", "cublas", shape_text);
      c.flops = flops;
      c.run = [=] { cublas_gemm_bf16(false, false, M, K, N, dy.get(), N, w.get(), K, 0.0f, dx.get(), K); };
      c.validate = [=, run = c.run] {
        dx.poison();
        run();
        std::vector<float> expected(M * K);
        kernels::cpu::gemm<float, float>(false, false, M, K, N, 1.0, dy_host->data(), N, w_host->data(), K, 0.0,
                                         expected.data(), K);
        return compare("dx", expected, download_floats(dx), kBf16Nmse);
      };
      cases.push_back(c);
    }
#endif
    // dW += dY^T . X: (N, M) . (M, K), accumulated into the f32 gradient buffer.
    {
      Case c = make_case("linear.backward_dw", "coco-lt", shape_text + " f32 dW");
      c.flops = flops;
      c.run = [=] {
        kernels::cuda::gemm<bf16, float>(true, false, N, K, M, 1.0, dy.get(), N, x.get(), K, 1.0, dw.get(), K,
                                         current_stream());
      };
      c.validate = [=, run = c.run] {
        dw.zero();
        run();
        std::vector<float> expected(N * K, 0.0f);
        kernels::cpu::gemm<float, float>(true, false, N, K, M, 1.0, dy_host->data(), N, x_host->data(), K, 0.0,
                                         expected.data(), K);
        return compare("dW", expected, download_floats(dw), kBf16GradNmse);
      };
      cases.push_back(c);
    }
    if (gelu) {
      Case c = make_case("linear.activation_backward(gelu)", "coco", shape_text);
      c.bytes = 3.0 * M * N * sizeof(bf16);  // dy, pre read; dpre written
      DeviceArray<bf16> dpre(M * N);
      const auto pre_host = std::make_shared<std::vector<float>>(random_floats<bf16>(M * N, ++seed, -3.0f, 3.0f));
      DeviceArray<bf16> pre_in = device_from<bf16>(*pre_host);
      c.run = [=] {
        kernels::cuda::activation_backward<bf16>(layer.act, dy.get(), pre_in.get(), dpre.get(), M * N,
                                                 current_stream());
      };
      c.validate = [=, run = c.run] {
        dpre.poison();
        run();
        std::vector<float> expected(M * N);
        kernels::cpu::activation_backward<float>(layer.act, dy_host->data(), pre_host->data(), expected.data(), M * N);
        return compare("dpre", expected, download_floats(dpre), kBf16Nmse);
      };
      cases.push_back(c);
    }
  }
  {
    // Attention-score-shaped strided-batched GEMM: S = Q . K^T per (b, h), (T, Dh) . (Dh, T).
    const int64_t batch = s.batch * s.heads, T = s.seq_len, Dh = s.dim_head;
    const auto q_host = std::make_shared<std::vector<float>>(random_floats<bf16>(batch * T * Dh, ++seed));
    const auto k_host = std::make_shared<std::vector<float>>(random_floats<bf16>(batch * T * Dh, ++seed));
    DeviceArray<bf16> q = device_from<bf16>(*q_host), k = device_from<bf16>(*k_host);
    DeviceArray<float> scores(batch * T * T);
    Case c = make_case("gemm_strided_batched(q.k^T)", "coco-lt",
                       dims({{"batch", batch}, {"T", T}, {"Dh", Dh}}, "bf16->f32"));
    c.flops = 2.0 * batch * T * T * Dh;
    c.run = [=] {
      kernels::cuda::gemm_strided_batched<bf16, float>(false, true, T, T, Dh, 1.0, q.get(), Dh, T * Dh, k.get(), Dh,
                                                       T * Dh, 0.0, scores.get(), T, T * T, batch, current_stream());
    };
    c.validate = [=, run = c.run] {
      scores.poison();
      run();
      std::vector<float> expected(batch * T * T);
      kernels::cpu::gemm_strided_batched<float, float>(false, true, T, T, Dh, 1.0, q_host->data(), Dh, T * Dh,
                                                       k_host->data(), Dh, T * Dh, 0.0, expected.data(), T, T * T,
                                                       batch);
      return compare("scores", expected, download_floats(scores), kBf16Nmse);
    };
    cases.push_back(c);
  }
  return cases;
}

}  // namespace

COCO_BENCH(matmul, matmul_cases);

}  // namespace coco::bench
