// coco-bench cases: token + position embedding (forward, deterministic backward) and LayerNorm
// (forward, fused residual forward, backward with and without the residual gradient).
#include <set>

#include "bench/bench_util.h"
#include "bench/naive_kernels.h"
#include "kernels/embedding.h"
#include "kernels/layernorm.h"

namespace coco::bench {
namespace {

constexpr int64_t kPaddingId = 0;

std::vector<Case> embedding_cases(const Shapes& s) {
  kernels::EmbeddingShape shape;
  shape.batch = s.batch;
  shape.seq = s.seq_len;
  shape.vocab = s.vocab;
  shape.dim = s.embed_dim;
  const int64_t BT = shape.positions(), E = shape.dim, V = shape.vocab, T = shape.seq;
  // ids: (B, T) i32, tok: (V, E), pos: (T, E), out / dout: (B, T, E)
  const auto ids_host = std::make_shared<std::vector<int32_t>>(random_ints(BT, 11, 0, static_cast<int32_t>(V)));
  const auto tok_host = std::make_shared<std::vector<float>>(random_floats<bf16>(V * E, 12));
  const auto pos_host = std::make_shared<std::vector<float>>(random_floats<bf16>(T * E, 13));
  const auto dout_host = std::make_shared<std::vector<float>>(random_floats<bf16>(BT * E, 14));
  DeviceArray<int32_t> ids(*ids_host);
  DeviceArray<bf16> tok = device_from<bf16>(*tok_host), pos = device_from<bf16>(*pos_host),
                    dout = device_from<bf16>(*dout_host), out(BT * E);
  DeviceArray<uint32_t> bad_position(1);
  DeviceArray<float> dtok(V * E), dpos(T * E);
  DeviceArray<uint8_t> workspace(kernels::cuda::embedding_backward_workspace_bytes(shape));
  const std::string shape_text = dims({{"B", s.batch}, {"T", T}, {"V", V}, {"E", E}}, "bf16");

  auto forward_reference = [=] {
    std::vector<float> expected(BT * E);
    kernels::cpu::embedding_forward<float>(expected.data(), ids_host->data(), tok_host->data(), pos_host->data(),
                                           shape);
    return expected;
  };

  std::vector<Case> cases;
  {
    Case c = make_case("embedding.forward", "coco", shape_text);
    c.bytes = BT * 4.0 + 3.0 * BT * E * sizeof(bf16);  // ids, tok rows, pos rows, out
    c.run = [=] {
      kernels::cuda::embedding_forward<bf16>(out.get(), ids.get(), tok.get(), pos.get(), shape, bad_position.get(),
                                             current_stream());
    };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      kernels::cuda::embedding_throw_if_bad_id(bad_position.get(), ids.get(), shape, current_stream());
      return compare("out", forward_reference(), download_floats(out), kBf16Nmse);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("embedding.forward", "naive", shape_text);
    c.bytes = BT * 4.0 + 3.0 * BT * E * sizeof(bf16);
    c.run = [=] {
      naive::embedding_forward(out.get(), ids.get(), tok.get(), pos.get(), s.batch, T, E, current_stream());
    };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      return compare("out", forward_reference(), download_floats(out), kBf16Nmse);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("embedding.backward", "coco", shape_text + " f32 grads");
    const std::set<int32_t> distinct(ids_host->begin(), ids_host->end());
    // dout and ids read; the touched dtok rows and dpos read-modify-written in f32.
    c.bytes = BT * 4.0 + BT * E * sizeof(bf16) + 2.0 * (static_cast<double>(distinct.size()) + T) * E * sizeof(float);
    c.run = [=] {
      kernels::cuda::embedding_backward<bf16, float>(dtok.get(), dpos.get(), dout.get(), ids.get(), shape, kPaddingId,
                                                     workspace.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      dtok.zero();
      dpos.zero();
      run();
      std::vector<float> expected_tok(V * E, 0.0f), expected_pos(T * E, 0.0f);
      kernels::cpu::embedding_backward<float>(expected_tok.data(), expected_pos.data(), dout_host->data(),
                                              ids_host->data(), shape, kPaddingId);
      return first_problem({compare("dtok", expected_tok, download_floats(dtok), kF32Nmse),
                            compare("dpos", expected_pos, download_floats(dpos), kF32Nmse)});
    };
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> layernorm_cases(const Shapes& s) {
  const int64_t rows = s.tokens(), C = s.d_model;
  const float eps = 1e-5f;
  // x, residual, dout, dextra: (rows, C); gamma, beta: (C)
  const auto x_host = std::make_shared<std::vector<float>>(random_floats<bf16>(rows * C, 21, -2.0f, 2.0f));
  const auto residual_host = std::make_shared<std::vector<float>>(random_floats<bf16>(rows * C, 22));
  const auto gamma_host = std::make_shared<std::vector<float>>(random_floats<bf16>(C, 23, 0.5f, 1.5f));
  const auto beta_host = std::make_shared<std::vector<float>>(random_floats<bf16>(C, 24));
  const auto dout_host = std::make_shared<std::vector<float>>(random_floats<bf16>(rows * C, 25));
  const auto dextra_host = std::make_shared<std::vector<float>>(random_floats<bf16>(rows * C, 26));
  DeviceArray<bf16> x = device_from<bf16>(*x_host), residual = device_from<bf16>(*residual_host),
                    gamma = device_from<bf16>(*gamma_host), beta = device_from<bf16>(*beta_host),
                    dout = device_from<bf16>(*dout_host), dextra = device_from<bf16>(*dextra_host), out(rows * C),
                    sum(rows * C), dx(rows * C);
  DeviceArray<float> mean(rows), rstd(rows), dgamma(C), dbeta(C);
  DeviceArray<uint8_t> workspace(kernels::cuda::layernorm_backward_workspace_bytes(rows, C));
  // The backward's saved statistics come from the CUDA forward, as in training.
  kernels::cuda::layernorm_forward<bf16>(out.get(), mean.get(), rstd.get(), x.get(), gamma.get(), beta.get(), rows, C,
                                         eps, current_stream());
  sync();
  const std::string shape_text = dims({{"N", rows}, {"C", C}}, "bf16");
  const double act = static_cast<double>(rows) * C * sizeof(bf16);

  auto forward_reference = [=] {
    std::vector<float> expected(rows * C);
    kernels::cpu::layernorm_forward<float>(expected.data(), nullptr, nullptr, x_host->data(), gamma_host->data(),
                                           beta_host->data(), rows, C, eps);
    return expected;
  };

  std::vector<Case> cases;
  {
    Case c = make_case("layernorm.forward", "coco", shape_text);
    c.bytes = 2 * act + rows * 8.0;  // x, out, mean and rstd
    c.run = [=] {
      kernels::cuda::layernorm_forward<bf16>(out.get(), mean.get(), rstd.get(), x.get(), gamma.get(), beta.get(), rows,
                                             C, eps, current_stream());
    };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      return compare("out", forward_reference(), download_floats(out), kBf16Nmse);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("layernorm.forward", "naive", shape_text);
    c.bytes = 2 * act;
    c.run = [=] {
      naive::layernorm_forward(out.get(), x.get(), gamma.get(), beta.get(), rows, C, eps, current_stream());
    };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      return compare("out", forward_reference(), download_floats(out), kBf16Nmse);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("layernorm.residual_forward", "coco", shape_text);
    c.bytes = 4 * act + rows * 8.0;  // x, residual, sum, out, statistics
    // Its own sum/out/statistics buffers: the backward cases keep the plain forward's statistics.
    DeviceArray<bf16> res_out(rows * C), res_sum(rows * C);
    DeviceArray<float> res_mean(rows), res_rstd(rows);
    c.run = [=] {
      kernels::cuda::residual_layernorm_forward<bf16>(res_out.get(), res_sum.get(), res_mean.get(), res_rstd.get(),
                                                      x.get(), residual.get(), gamma.get(), beta.get(), rows, C, eps,
                                                      current_stream());
    };
    c.validate = [=, run = c.run] {
      res_out.poison();
      res_sum.poison();
      run();
      // f32 reference of the bf16 inputs; the kernel's bf16 rounding of `sum` stays within kBf16Nmse.
      std::vector<float> exact_sum(rows * C), exact_out(rows * C);
      kernels::cpu::residual_layernorm_forward<float>(exact_out.data(), exact_sum.data(), nullptr, nullptr,
                                                      x_host->data(), residual_host->data(), gamma_host->data(),
                                                      beta_host->data(), rows, C, eps);
      return first_problem({compare("sum", exact_sum, download_floats(res_sum), kBf16Nmse),
                            compare("out", exact_out, download_floats(res_out), kBf16Nmse)});
    };
    cases.push_back(c);
  }
  for (const bool with_residual : {false, true}) {
    Case c = make_case(with_residual ? "layernorm.backward+residual" : "layernorm.backward", "coco",
                       shape_text + " f32 dgamma");
    c.bytes = (with_residual ? 4 : 3) * act + rows * 8.0;  // dout, x, (dextra), dx, statistics
    // The lambda captures `dextra` itself (not a raw pointer into it) so the buffer lives as long as the case.
    c.run = [=] {
      const bf16* extra = with_residual ? dextra.get() : nullptr;
      kernels::cuda::layernorm_backward<bf16, float>(dx.get(), dgamma.get(), dbeta.get(), dout.get(), extra, x.get(),
                                                     gamma.get(), mean.get(), rstd.get(), rows, C, workspace.get(),
                                                     current_stream());
    };
    c.validate = [=, run = c.run] {
      dx.poison();
      dgamma.zero();
      dbeta.zero();
      run();
      std::vector<float> m(rows), r(rows), unused(rows * C);
      kernels::cpu::layernorm_forward<float>(unused.data(), m.data(), r.data(), x_host->data(), gamma_host->data(),
                                             beta_host->data(), rows, C, eps);
      std::vector<float> expected_dx(rows * C), expected_dgamma(C, 0.0f), expected_dbeta(C, 0.0f);
      kernels::cpu::layernorm_backward<float>(expected_dx.data(), expected_dgamma.data(), expected_dbeta.data(),
                                              dout_host->data(), with_residual ? dextra_host->data() : nullptr,
                                              x_host->data(), gamma_host->data(), m.data(), r.data(), rows, C);
      return first_problem({compare("dx", expected_dx, download_floats(dx), kBf16Nmse),
                            compare("dgamma", expected_dgamma, download_floats(dgamma), kBf16GradNmse),
                            compare("dbeta", expected_dbeta, download_floats(dbeta), kBf16GradNmse)});
    };
    cases.push_back(c);
  }
  return cases;
}

}  // namespace

COCO_BENCH(embedding, embedding_cases);
COCO_BENCH(layernorm, layernorm_cases);

}  // namespace coco::bench
