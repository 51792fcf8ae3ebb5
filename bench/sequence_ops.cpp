// coco-bench cases: the COCO-LM data-path kernels between the two models: mask selection and crop
// views, masked-position lists, row gather / deterministic scatter-add of the masked hidden states,
// sampling the generator (Gumbel-max and multinomial), and building the corrupted sequence.
#include <algorithm>

#include "bench/bench_util.h"
#include "bench/naive_kernels.h"
#include "kernels/corrupt.h"
#include "kernels/gather.h"
#include "kernels/masking.h"
#include "kernels/sampling.h"

namespace coco::bench {
namespace {

constexpr int32_t kPad = 0, kCls = 1, kMask = 2;

// (B, T) token ids: [CLS] first, random ids in [4, V), odd rows right-padded by a quarter.
std::vector<int32_t> make_tokens(const Shapes& s, uint64_t seed) {
  std::vector<int32_t> tokens = random_ints(s.tokens(), seed, 4, static_cast<int32_t>(s.vocab));
  for (int64_t b = 0; b < s.batch; ++b) {
    tokens[b * s.seq_len] = kCls;
    if (b % 2 == 1)
      for (int64_t t = s.seq_len - s.seq_len / 4; t < s.seq_len; ++t) tokens[b * s.seq_len + t] = kPad;
  }
  return tokens;
}

// `count` distinct flat positions in [0, total), ascending.
std::vector<int32_t> distinct_positions(int64_t total, int64_t count, uint64_t seed) {
  std::vector<int32_t> all(total);
  for (int64_t i = 0; i < total; ++i) all[i] = static_cast<int32_t>(i);
  const std::vector<int32_t> draws = random_ints(total, seed, 0, 1 << 30);
  for (int64_t i = total - 1; i > 0; --i) std::swap(all[i], all[draws[i] % (i + 1)]);
  all.resize(count);
  std::sort(all.begin(), all.end());
  return all;
}

std::vector<Case> gather_cases(const Shapes& s) {
  const int64_t rows = s.tokens(), dim = s.d_model, count = s.masked_rows();
  const auto src_host = std::make_shared<std::vector<float>>(random_floats<bf16>(rows * dim, 301));
  const auto grad_host = std::make_shared<std::vector<float>>(random_floats<bf16>(count * dim, 302));
  const auto index_host = std::make_shared<std::vector<int32_t>>(distinct_positions(rows, count, 303));
  DeviceArray<bf16> src = device_from<bf16>(*src_host), grad = device_from<bf16>(*grad_host), out(count * dim);
  DeviceArray<int32_t> index(*index_host), invalid(1);
  DeviceArray<float> accum(rows * dim);
  DeviceArray<uint8_t> workspace(kernels::cuda::scatter_workspace_bytes(count, rows));
  const std::string shape_text = dims({{"rows", rows}, {"picked", count}, {"D", dim}}, "bf16");
  auto gather_reference = [=] {
    std::vector<float> expected(count * dim);
    kernels::cpu::gather_rows<float>(src_host->data(), rows, dim, index_host->data(), count, expected.data());
    return expected;
  };
  std::vector<Case> cases;
  for (const bool naive_variant : {false, true}) {
    Case c = make_case("gather_rows", naive_variant ? "naive" : "coco", shape_text);
    c.bytes = 2.0 * count * dim * sizeof(bf16) + count * 4.0;
    c.run = [=] {
      if (naive_variant)
        naive::gather_rows(out.get(), src.get(), index.get(), count, dim, current_stream());
      else
        kernels::cuda::gather_rows<bf16>(src.get(), rows, dim, index.get(), count, out.get(), invalid.get(),
                                         current_stream());
    };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      std::string problem = compare("out", gather_reference(), download_floats(out), 0.0);
      if (problem.empty() && !naive_variant)
        problem = compare_exact("invalid", std::vector<int32_t>{0}, invalid.download());
      return problem;
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("scatter_add_rows", "coco", shape_text + "->f32");
    c.bytes = count * dim * (sizeof(bf16) + 2.0 * sizeof(float)) + count * 4.0;  // src read, out rows rmw
    c.run = [=] {
      kernels::cuda::scatter_add_rows<bf16, float>(grad.get(), index.get(), count, dim, accum.get(), rows,
                                                   invalid.get(), workspace.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      accum.zero();
      run();
      std::vector<float> expected(rows * dim, 0.0f);
      kernels::cpu::scatter_add_rows<float>(grad_host->data(), index_host->data(), count, dim, expected.data(), rows);
      return first_problem({compare("out", expected, accum.download(), 0.0),
                            compare_exact("invalid", std::vector<int32_t>{0}, invalid.download())});
    };
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> masking_cases(const Shapes& s) {
  const int64_t B = s.batch, T = s.seq_len;
  const auto tokens_host = std::make_shared<std::vector<int32_t>>(make_tokens(s, 311));
  DeviceArray<int32_t> tokens(*tokens_host), generator_input(B * T), row_count(B), crop_tokens(B * T), crop_length(B),
      positions(B * T);
  DeviceArray<uint8_t> selected(B * T);
  const std::string shape_text = dims({{"B", B}, {"T", T}}, "i32");
  std::vector<Case> cases;
  for (const auto preset : {kernels::MaskPreset::lucidrains, kernels::MaskPreset::paper}) {
    kernels::MaskingConfig config;
    config.preset = preset;
    config.pad_id = kPad;
    config.cls_id = kCls;
    config.mask_id = kMask;
    config.random_token_prob = preset == kernels::MaskPreset::lucidrains ? 0.1 : 0.0;
    config.vocab_size = static_cast<int32_t>(s.vocab);
    config.special_ids = {kPad, kCls, kMask, 3};
    config.crop_fraction = preset == kernels::MaskPreset::lucidrains ? 0.5 : 0.9;
    const kernels::MaskKernelParams params = kernels::make_mask_params(config, 2024, 5);
    const std::string preset_name = preset == kernels::MaskPreset::lucidrains ? " lucidrains" : " paper";
    {
      Case c = make_case("masking.select_mask", "coco", shape_text + preset_name);
      c.bytes = B * T * 9.0 + B * 4.0;  // tokens read; selected, generator_input written
      c.run = [=] {
        kernels::cuda::select_mask(tokens.get(), B, T, params, selected.get(), generator_input.get(), row_count.get(),
                                   current_stream());
      };
      c.validate = [=, run = c.run] {
        selected.poison();
        generator_input.poison();
        run();
        std::vector<uint8_t> es(B * T);
        std::vector<int32_t> eg(B * T), ec(B);
        kernels::cpu::select_mask(tokens_host->data(), B, T, params, es.data(), eg.data(), ec.data());
        return first_problem({compare_exact("selected", es, selected.download()),
                              compare_exact("generator_input", eg, generator_input.download()),
                              compare_exact("row_count", ec, row_count.download())});
      };
      cases.push_back(c);
    }
    {
      Case c = make_case("masking.crop_view", "coco", shape_text + preset_name);
      c.bytes = B * T * 8.0 + B * 4.0;
      c.run = [=] {
        kernels::cuda::crop_view(tokens.get(), B, T, params, crop_tokens.get(), crop_length.get(), current_stream());
      };
      c.validate = [=, run = c.run] {
        crop_tokens.poison();
        crop_length.poison();
        run();
        std::vector<int32_t> et(B * T), el(B);
        kernels::cpu::crop_view(tokens_host->data(), B, T, params, et.data(), el.data());
        return first_problem({compare_exact("crop_tokens", et, crop_tokens.download()),
                              compare_exact("crop_length", el, crop_length.download())});
      };
      cases.push_back(c);
    }
    if (preset == kernels::MaskPreset::lucidrains) {
      Case c = make_case("masking.masked_positions", "coco", shape_text);
      c.bytes = B * T * 5.0 + B * 4.0;
      std::vector<uint8_t> sel(B * T);
      std::vector<int32_t> gen(B * T), cnt(B);
      kernels::cpu::select_mask(tokens_host->data(), B, T, params, sel.data(), gen.data(), cnt.data());
      const auto sel_host = std::make_shared<std::vector<uint8_t>>(sel);
      const auto cnt_host = std::make_shared<std::vector<int32_t>>(cnt);
      DeviceArray<uint8_t> sel_device(sel);
      DeviceArray<int32_t> cnt_device(cnt);
      c.run = [=] {
        kernels::cuda::masked_positions(sel_device.get(), cnt_device.get(), B, T, positions.get(), B * T,
                                        current_stream());
      };
      c.validate = [=, run = c.run] {
        positions.poison();
        run();
        int64_t total = 0;
        for (int32_t v : *cnt_host) total += v;
        std::vector<int32_t> expected(B * T);
        kernels::cpu::masked_positions(sel_host->data(), cnt_host->data(), B, T, expected.data(), B * T);
        std::vector<int32_t> got = positions.download();
        expected.resize(total);  // entries past the selected count are not written
        got.resize(total);
        return compare_exact("positions", expected, got);
      };
      cases.push_back(c);
    }
  }
  return cases;
}

std::vector<Case> sampling_cases(const Shapes& s) {
  const int64_t N = s.masked_rows(), V = s.vocab;
  const auto logits_host =
      std::make_shared<std::vector<bf16>>(from_floats<bf16>(random_floats<bf16>(N * V, 321, -5.0f, 5.0f)));
  DeviceArray<bf16> logits(*logits_host);
  DeviceArray<int32_t> samples(N);
  const std::string shape_text = dims({{"rows", N}, {"V", V}}, "bf16");
  std::vector<Case> cases;
  for (const bool gumbel : {true, false}) {
    const rng::Stream stream(77, 9, gumbel ? rng::Purpose::gumbel_sample : rng::Purpose::multinomial_sample);
    Case c = make_case(gumbel ? "sampling.gumbel" : "sampling.multinomial", "coco", shape_text);
    c.bytes = N * V * 2.0 + N * 4.0;
    c.run = [=] {
      if (gumbel)
        kernels::cuda::gumbel_sample<bf16>(logits.get(), N, V, 1.0f, stream, samples.get(), current_stream());
      else
        kernels::cuda::multinomial_sample<bf16>(logits.get(), N, V, 1.0f, stream, samples.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      samples.poison();
      run();
      std::vector<int32_t> expected(N);
      if (gumbel)
        kernels::cpu::gumbel_sample<bf16>(logits_host->data(), N, V, 1.0f, stream, expected.data());
      else
        kernels::cpu::multinomial_sample<bf16>(logits_host->data(), N, V, 1.0f, stream, expected.data());
      return compare_exact("samples", expected, samples.download());
    };
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> corrupt_cases(const Shapes& s) {
  const int64_t total = s.tokens(), N = s.masked_rows();
  const auto tokens_host = std::make_shared<std::vector<int32_t>>(make_tokens(s, 331));
  const auto positions_host = std::make_shared<std::vector<int32_t>>(distinct_positions(total, N, 332));
  // Half of the samples reproduce the original token (the generator guessed right).
  auto samples_vec = random_ints(N, 333, 4, static_cast<int32_t>(s.vocab));
  for (int64_t i = 0; i < N; i += 2) samples_vec[i] = (*tokens_host)[(*positions_host)[i]];
  const auto samples_host = std::make_shared<std::vector<int32_t>>(samples_vec);
  DeviceArray<int32_t> tokens(*tokens_host), positions(*positions_host), samples(*samples_host), corrupted(total),
      targets(N);
  DeviceArray<uint8_t> replaced(total);
  DeviceArray<float> labels(total);
  const auto convention = kernels::LabelConvention::original_is_one;
  std::vector<Case> cases;
  {
    Case c = make_case("corrupt.corrupt_tokens", "coco", dims({{"tokens", total}, {"masked", N}}, "i32"));
    c.bytes = total * 13.0 + N * 8.0;  // tokens read; corrupted, replaced, labels written; positions, samples
    c.run = [=] {
      kernels::cuda::corrupt_tokens(tokens.get(), total, positions.get(), samples.get(), N, kPad, convention,
                                    corrupted.get(), replaced.get(), labels.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      corrupted.poison();
      replaced.poison();
      labels.poison();
      run();
      std::vector<int32_t> ec(total);
      std::vector<uint8_t> er(total);
      std::vector<float> el(total);
      kernels::cpu::corrupt_tokens(tokens_host->data(), total, positions_host->data(), samples_host->data(), N, kPad,
                                   convention, ec.data(), er.data(), el.data());
      return first_problem({compare_exact("corrupted", ec, corrupted.download()),
                            compare_exact("replaced", er, replaced.download()),
                            compare("labels", el, labels.download(), 0.0)});
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("corrupt.gather_tokens", "coco", dims({{"tokens", total}, {"masked", N}}, "i32"));
    c.bytes = N * 12.0;
    c.run = [=] {
      kernels::cuda::gather_tokens(tokens.get(), total, positions.get(), N, targets.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      targets.poison();
      run();
      std::vector<int32_t> expected(N);
      kernels::cpu::gather_tokens(tokens_host->data(), total, positions_host->data(), N, expected.data());
      return compare_exact("targets", expected, targets.download());
    };
    cases.push_back(c);
  }
  return cases;
}

}  // namespace

COCO_BENCH(gather, gather_cases);
COCO_BENCH(masking, masking_cases);
COCO_BENCH(sampling, sampling_cases);
COCO_BENCH(corrupt, corrupt_cases);

}  // namespace coco::bench
