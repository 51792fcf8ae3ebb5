// coco-bench cases: the attention core (materialised forward, flash-style forward, backward, and the
// tensor-core FlashAttention-2 forward and backward of kernels/attention_tc.h, variant "coco-tc") with the
// key padding mask, the relative-position bias and attention dropout p = 0.1 as in training, the
// naive three-kernel baseline, and the relative-position bias gather / scatter.
//
// cuDNN's fused SDPA baseline (variant "cudnn": cuDNN frontend graph API, same shapes and inputs) is in
// bench/cudnn_attention.cpp; it is compiled only in gpu builds that find libcudnn and the frontend
// headers, and it has not run on a GPU yet (none was available), so it has produced no timings. The
// "naive" variant here (scores, softmax and P.V as three plain kernels, no dropout) stays as a second
// baseline and is the only one in other builds; see bench/README.md.
#include <algorithm>

#include "bench/bench_util.h"
#include "bench/naive_kernels.h"
#include "kernels/attention.h"
#include "kernels/attention_tc.h"
#include "kernels/relpos.h"

namespace coco::bench {
namespace {

using kernels::AttentionDropout;
using kernels::AttentionShape;

// Above this many multiply-adds the CPU reference is run for the first sequence of the batch only
// (its dropout indices are the same as in the full problem); the batch-summed bias gradient is then
// checked in emulated mode only.
constexpr double kFullReferenceLimit = 1 << 28;

std::vector<Case> attention_cases(const Shapes& s) {
  AttentionShape shape;
  shape.batch = s.batch;
  shape.heads = s.heads;
  shape.seq_len = s.seq_len;
  shape.head_dim = s.dim_head;
  const int64_t B = shape.batch, H = shape.heads, T = shape.seq_len, Dh = shape.head_dim;
  const int64_t n_qkv = shape.qkv_elements(), n_scores = shape.score_elements(), n_bias = shape.bias_elements();
  AttentionDropout dropout;
  dropout.p = 0.1f;
  dropout.stream = rng::Stream(99, 3, rng::Purpose::dropout_attention);
  const AttentionDropout no_dropout{};

  const auto q_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n_qkv, 81, -2.0f, 2.0f));
  const auto k_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n_qkv, 82, -2.0f, 2.0f));
  const auto v_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n_qkv, 83));
  const auto dout_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n_qkv, 84));
  const auto bias_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n_bias, 85, -0.5f, 0.5f));
  // Odd sequences are right-padded by T/8 positions (at least one).
  const auto mask_host = std::make_shared<std::vector<uint8_t>>(B * T, 1);
  for (int64_t b = 1; b < B; b += 2)
    for (int64_t t = T - std::max<int64_t>(1, T / 8); t < T; ++t) (*mask_host)[b * T + t] = 0;

  DeviceArray<bf16> q = device_from<bf16>(*q_host), k = device_from<bf16>(*k_host), v = device_from<bf16>(*v_host),
                    dout = device_from<bf16>(*dout_host), bias = device_from<bf16>(*bias_host), out(n_qkv),
                    probs(n_scores), prob_workspace(n_scores), dq(n_qkv), dk(n_qkv), dv(n_qkv);
  DeviceArray<uint8_t> key_mask(*mask_host);
  DeviceArray<float> scores(n_scores), lse(B * H * T), dbias(n_bias);

  const int64_t ref_batch = static_cast<double>(n_scores) * Dh <= kFullReferenceLimit ? B : 1;
  AttentionShape ref_shape = shape;
  ref_shape.batch = ref_batch;
  const size_t ref_qkv = static_cast<size_t>(ref_shape.qkv_elements());
  const size_t ref_scores = static_cast<size_t>(ref_shape.score_elements());
  auto head = [](const std::vector<float>& all, size_t count) {
    return std::vector<float>(all.begin(), all.begin() + count);
  };

  // Reference forward of the first ref_batch sequences: {out, probs}.
  auto reference_forward = [=](const AttentionDropout& drop) {
    std::pair<std::vector<float>, std::vector<float>> result{std::vector<float>(ref_qkv),
                                                             std::vector<float>(ref_scores)};
    kernels::cpu::attention_forward<float, uint8_t>(q_host->data(), k_host->data(), v_host->data(), mask_host->data(),
                                                    bias_host->data(), ref_shape, drop, result.first.data(),
                                                    result.second.data());
    return result;
  };

  const std::string shape_text = dims({{"B", B}, {"H", H}, {"T", T}, {"Dh", Dh}}, "bf16");
  const double forward_flops = 4.0 * B * H * T * T * Dh;
  std::vector<Case> cases;
  {
    Case c = make_case("attention.forward", "coco", shape_text + " mask+bias p=0.1");
    c.flops = forward_flops;
    c.run = [=] {
      kernels::cuda::attention_forward<bf16, uint8_t>(q.get(), k.get(), v.get(), key_mask.get(), bias.get(), shape,
                                                      dropout, out.get(), probs.get(), scores.get(),
                                                      prob_workspace.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      out.poison();
      probs.poison();
      run();
      const auto [expected_out, expected_probs] = reference_forward(dropout);
      return first_problem({compare("out", expected_out, head(download_floats(out), ref_qkv), kBf16Nmse),
                            compare("probs", expected_probs, head(download_floats(probs), ref_scores), kBf16Nmse)});
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("attention.flash_forward", "coco", shape_text + " mask+bias p=0.1");
    c.flops = forward_flops;
    c.run = [=] {
      kernels::cuda::flash_attention_forward<bf16, uint8_t>(q.get(), k.get(), v.get(), key_mask.get(), bias.get(),
                                                            shape, dropout, out.get(), lse.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      return compare("out", reference_forward(dropout).first, head(download_floats(out), ref_qkv), kBf16Nmse);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("attention.forward", "naive", shape_text + " mask+bias p=0");
    c.flops = forward_flops;
    c.run = [=] {
      naive::attention_forward(out.get(), scores.get(), q.get(), k.get(), v.get(), key_mask.get(), bias.get(), B, H, T,
                               Dh, current_stream());
    };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      return compare("out", reference_forward(no_dropout).first, head(download_floats(out), ref_qkv), kBf16Nmse);
    };
    cases.push_back(c);
  }
  {
    // The backward reads the probabilities the CUDA forward saved, as in training.
    Case c = make_case("attention.backward", "coco", shape_text + " mask+bias p=0.1");
    c.flops = 2 * forward_flops;
    DeviceArray<bf16> saved_probs(n_scores);
    kernels::cuda::attention_forward<bf16, uint8_t>(q.get(), k.get(), v.get(), key_mask.get(), bias.get(), shape,
                                                    dropout, out.get(), saved_probs.get(), scores.get(),
                                                    prob_workspace.get(), current_stream());
    c.run = [=] {
      kernels::cuda::attention_backward<bf16>(q.get(), k.get(), v.get(), saved_probs.get(), dout.get(), shape, dropout,
                                              dq.get(), dk.get(), dv.get(), dbias.get(), false, scores.get(),
                                              prob_workspace.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      dq.poison();
      dk.poison();
      dv.poison();
      dbias.poison();
      run();
      const std::vector<float> p = head(download_floats(saved_probs), ref_scores);
      std::vector<float> eq(ref_qkv), ek(ref_qkv), ev(ref_qkv), edbias(n_bias);
      kernels::cpu::attention_backward<float>(q_host->data(), k_host->data(), v_host->data(), p.data(),
                                              dout_host->data(), ref_shape, dropout, eq.data(), ek.data(), ev.data(),
                                              edbias.data(), false);
      return first_problem({compare("dq", eq, head(download_floats(dq), ref_qkv), kBf16GradNmse),
                            compare("dk", ek, head(download_floats(dk), ref_qkv), kBf16GradNmse),
                            compare("dv", ev, head(download_floats(dv), ref_qkv), kBf16GradNmse),
                            ref_batch == B ? compare("dbias", edbias, dbias.download(), kBf16GradNmse) : ""});
    };
    cases.push_back(c);
  }
  if (kernels::cuda::tc_attention_supports(shape)) {
    {
      Case c = make_case("attention.forward", "coco-tc", shape_text + " mask+bias p=0.1");
      c.flops = forward_flops;
      c.run = [=] {
        kernels::cuda::tc_attention_forward<bf16, uint8_t>(q.get(), k.get(), v.get(), key_mask.get(), bias.get(), shape,
                                                           dropout, out.get(), lse.get(), current_stream());
      };
      c.validate = [=, run = c.run] {
        out.poison();
        run();
        return compare("out", reference_forward(dropout).first, head(download_floats(out), ref_qkv), kBf16Nmse);
      };
      cases.push_back(c);
    }
    {
      // Reads the out and log-sum-exp its own forward saved, as in training; recomputes P per tile.
      Case c = make_case("attention.backward", "coco-tc", shape_text + " mask+bias p=0.1");
      c.flops = 2.5 * forward_flops;  // S, dP, dV, dK, dQ: five T x T x Dh products (S twice)
      DeviceArray<bf16> saved_out(n_qkv);
      DeviceArray<float> saved_lse(B * H * T), delta(B * H * T);
      kernels::cuda::tc_attention_forward<bf16, uint8_t>(q.get(), k.get(), v.get(), key_mask.get(), bias.get(), shape,
                                                         dropout, saved_out.get(), saved_lse.get(), current_stream());
      c.run = [=] {
        kernels::cuda::tc_attention_backward<bf16, uint8_t>(
            q.get(), k.get(), v.get(), saved_out.get(), dout.get(), saved_lse.get(), key_mask.get(), bias.get(), shape,
            dropout, dq.get(), dk.get(), dv.get(), dbias.get(), false, delta.get(), current_stream());
      };
      c.validate = [=, run = c.run] {
        dq.poison();
        dk.poison();
        dv.poison();
        dbias.poison();
        run();
        const std::vector<float> p = reference_forward(dropout).second;
        std::vector<float> eq(ref_qkv), ek(ref_qkv), ev(ref_qkv), edbias(n_bias);
        kernels::cpu::attention_backward<float>(q_host->data(), k_host->data(), v_host->data(), p.data(),
                                                dout_host->data(), ref_shape, dropout, eq.data(), ek.data(), ev.data(),
                                                edbias.data(), false);
        return first_problem({compare("dq", eq, head(download_floats(dq), ref_qkv), kBf16GradNmse),
                              compare("dk", ek, head(download_floats(dk), ref_qkv), kBf16GradNmse),
                              compare("dv", ev, head(download_floats(dv), ref_qkv), kBf16GradNmse),
                              ref_batch == B ? compare("dbias", edbias, dbias.download(), kBf16GradNmse) : ""});
      };
      cases.push_back(c);
    }
    // What the model runs (ops::attention_relative): the relative-position table (32 buckets, max distance
    // 128, as in COCO-LM base) applied inside the kernels, its gradient reduced from per-(key tile, b, h)
    // partials. Checked against the reference over the dense bias gathered from the table on the CPU.
    kernels::RelativePositionConfig config;
    config.max_positions = static_cast<int>(std::max<int64_t>(T, 512));
    const int K = config.num_buckets;
    const auto layout = kernels::BiasTableLayout::buckets_by_heads;
    const auto table_host = std::make_shared<std::vector<float>>(random_floats<bf16>(K * H, 86, -0.5f, 0.5f));
    std::vector<int32_t> buckets(T * T);
    kernels::cpu::relative_position_buckets(buckets.data(), T, config);
    const auto gathered_host = std::make_shared<std::vector<float>>(n_bias);
    kernels::cpu::relative_position_bias_forward<float>(table_host->data(), layout, buckets.data(),
                                                        gathered_host->data(), H, T, K);
    const auto bucket_index = std::make_shared<std::pair<std::vector<int32_t>, std::vector<int32_t>>>(
        std::vector<int32_t>(K + 1), std::vector<int32_t>(T * T));
    kernels::cpu::relative_position_bucket_index(buckets.data(), T, K, bucket_index->first.data(),
                                                 bucket_index->second.data());
    DeviceArray<bf16> table = device_from<bf16>(*table_host);
    DeviceArray<float> dtable(K * H), partials(kernels::cuda::tc_relpos_partials_elements(shape)),
        drel(H * (2 * T - 1));
    auto table_reference_forward = [=] {
      std::pair<std::vector<float>, std::vector<float>> result{std::vector<float>(ref_qkv),
                                                               std::vector<float>(ref_scores)};
      kernels::cpu::attention_forward<float, uint8_t>(q_host->data(), k_host->data(), v_host->data(), mask_host->data(),
                                                      gathered_host->data(), ref_shape, dropout, result.first.data(),
                                                      result.second.data());
      return result;
    };
    const std::string table_text = shape_text + " mask+table p=0.1";
    {
      Case c = make_case("attention.forward", "coco-tc", table_text);
      c.flops = forward_flops;
      c.run = [=] {
        kernels::cuda::tc_attention_relpos_forward<bf16, uint8_t>(q.get(), k.get(), v.get(), key_mask.get(),
                                                                  table.get(), layout, config, shape, dropout,
                                                                  out.get(), lse.get(), current_stream());
      };
      c.validate = [=, run = c.run] {
        out.poison();
        run();
        return compare("out", table_reference_forward().first, head(download_floats(out), ref_qkv), kBf16Nmse);
      };
      cases.push_back(c);
    }
    {
      Case c = make_case("attention.backward", "coco-tc", table_text);
      c.flops = 2.5 * forward_flops;
      DeviceArray<bf16> saved_out(n_qkv);
      DeviceArray<float> saved_lse(B * H * T), delta(B * H * T);
      kernels::cuda::tc_attention_relpos_forward<bf16, uint8_t>(q.get(), k.get(), v.get(), key_mask.get(), table.get(),
                                                                layout, config, shape, dropout, saved_out.get(),
                                                                saved_lse.get(), current_stream());
      c.run = [=] {
        kernels::cuda::tc_attention_relpos_backward<bf16, uint8_t>(
            q.get(), k.get(), v.get(), saved_out.get(), dout.get(), saved_lse.get(), key_mask.get(), table.get(),
            layout, config, shape, dropout, dq.get(), dk.get(), dv.get(), dtable.get(), false,
            {delta.get(), partials.get(), drel.get()}, current_stream());
      };
      c.validate = [=, run = c.run] {
        dq.poison();
        dk.poison();
        dv.poison();
        dtable.poison();
        run();
        const std::vector<float> p = table_reference_forward().second;
        std::vector<float> eq(ref_qkv), ek(ref_qkv), ev(ref_qkv), edbias(n_bias), edtable(K * H);
        kernels::cpu::attention_backward<float>(q_host->data(), k_host->data(), v_host->data(), p.data(),
                                                dout_host->data(), ref_shape, dropout, eq.data(), ek.data(), ev.data(),
                                                edbias.data(), false);
        kernels::cpu::relative_position_bias_backward<float>(edbias.data(), bucket_index->first.data(),
                                                             bucket_index->second.data(), edtable.data(), layout, H, T,
                                                             K, false);
        return first_problem({compare("dq", eq, head(download_floats(dq), ref_qkv), kBf16GradNmse),
                              compare("dk", ek, head(download_floats(dk), ref_qkv), kBf16GradNmse),
                              compare("dv", ev, head(download_floats(dv), ref_qkv), kBf16GradNmse),
                              ref_batch == B ? compare("dtable", edtable, dtable.download(), kBf16GradNmse) : ""});
      };
      cases.push_back(c);
    }
  }
  return cases;
}

std::vector<Case> relpos_cases(const Shapes& s) {
  const int64_t H = s.heads, T = s.seq_len;
  kernels::RelativePositionConfig config;  // 32 buckets, max distance 128, as in COCO-LM base
  config.max_positions = static_cast<int>(std::max<int64_t>(T, 512));
  const int K = config.num_buckets;
  const auto layout = kernels::BiasTableLayout::buckets_by_heads;
  std::vector<int32_t> buckets_host(T * T);
  kernels::cpu::relative_position_buckets(buckets_host.data(), T, config);
  std::vector<int32_t> offsets_host(K + 1), positions_host(T * T);
  kernels::cpu::relative_position_bucket_index(buckets_host.data(), T, K, offsets_host.data(), positions_host.data());
  const auto buckets_ref = std::make_shared<std::vector<int32_t>>(buckets_host);
  const auto table_host = std::make_shared<std::vector<float>>(random_floats<bf16>(K * H, 91));
  const auto dbias_host = std::make_shared<std::vector<float>>(random_floats<float>(H * T * T, 92));
  DeviceArray<int32_t> buckets(buckets_host), bucket_out(T * T), offsets(offsets_host), positions(positions_host);
  DeviceArray<bf16> table = device_from<bf16>(*table_host), bias(H * T * T);
  DeviceArray<float> dbias(*dbias_host), dtable(K * H);
  const std::string shape_text = dims({{"H", H}, {"T", T}, {"buckets", K}}, "");
  std::vector<Case> cases;
  {
    Case c = make_case("relpos.buckets", "coco", shape_text + "i32");
    c.bytes = T * T * 4.0;
    c.run = [=] { kernels::cuda::relative_position_buckets(bucket_out.get(), T, config, current_stream()); };
    c.validate = [=, run = c.run] {
      bucket_out.poison();
      run();
      return compare_exact("buckets", *buckets_ref, bucket_out.download());
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("relpos.bias_gather", "coco", shape_text + "bf16");
    c.bytes = T * T * 4.0 + H * T * T * 2.0;  // buckets read, bias written
    c.run = [=] {
      kernels::cuda::relative_position_bias_forward<bf16>(table.get(), layout, buckets.get(), bias.get(), H, T, K,
                                                          current_stream());
    };
    c.validate = [=, run = c.run] {
      bias.poison();
      run();
      std::vector<float> expected(H * T * T);
      kernels::cpu::relative_position_bias_forward<float>(table_host->data(), layout, buckets_ref->data(),
                                                          expected.data(), H, T, K);
      return compare("bias", expected, download_floats(bias), 0.0);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("relpos.bias_scatter", "coco", shape_text + "f32");
    c.bytes = H * T * T * 4.0 + T * T * 4.0;  // dbias and the inverse index read
    c.run = [=] {
      kernels::cuda::relative_position_bias_backward<float, float>(
          dbias.get(), offsets.get(), positions.get(), dtable.get(), layout, H, T, K, false, current_stream());
    };
    c.validate = [=, run = c.run] {
      dtable.poison();
      run();
      std::vector<int32_t> offs(K + 1), pos(T * T);
      kernels::cpu::relative_position_bucket_index(buckets_ref->data(), T, K, offs.data(), pos.data());
      std::vector<float> expected(K * H);
      kernels::cpu::relative_position_bias_backward<float>(dbias_host->data(), offs.data(), pos.data(), expected.data(),
                                                           layout, H, T, K, false);
      return compare("dtable", expected, dtable.download(), kF32Nmse);
    };
    cases.push_back(c);
  }
  return cases;
}

}  // namespace

COCO_BENCH(attention, attention_cases);
COCO_BENCH(relpos, relpos_cases);

}  // namespace coco::bench
