// coco-bench cases: the loss kernels. Vocabulary cross-entropy over the masked rows (V = 30522 at
// paper-base), binary cross-entropy over every token, the L2 normalisation of the sequence vectors and
// the two sequence contrastive losses (B sequences, D = d_model).
#include <cmath>

#include "bench/bench_util.h"
#include "bench/naive_kernels.h"
#include "kernels/bce.h"
#include "kernels/contrastive.h"
#include "kernels/cross_entropy.h"
#include "kernels/l2norm.h"

namespace coco::bench {
namespace {

using kernels::LossReduction;

constexpr int32_t kIgnoreIndex = -100;

std::vector<Case> cross_entropy_cases(const Shapes& s) {
  const int64_t rows = s.masked_rows(), V = s.vocab, n = rows * V;
  const auto logits_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n, 201, -8.0f, 8.0f));
  const auto targets_host = std::make_shared<std::vector<int32_t>>(random_ints(rows, 202, 0, static_cast<int32_t>(V)));
  for (int64_t r = 0; r < rows; r += 16) (*targets_host)[r] = kIgnoreIndex;  // a few ignored rows
  DeviceArray<bf16> logits = device_from<bf16>(*logits_host), dlogits(n);
  DeviceArray<int32_t> targets(*targets_host), counts(kernels::kCrossEntropyCounts);
  DeviceArray<float> loss(1), row_loss(rows), row_lse(rows), dloss(std::vector<float>{0.5f});

  struct Reference {
    float loss;
    std::vector<float> row_loss, row_lse;
    std::vector<int32_t> counts;
  };
  auto reference = [=] {
    Reference ref{0.0f, std::vector<float>(rows), std::vector<float>(rows),
                  std::vector<int32_t>(kernels::kCrossEntropyCounts)};
    kernels::cpu::cross_entropy_forward<float>(logits_host->data(), targets_host->data(), nullptr, rows, V,
                                               kIgnoreIndex, LossReduction::mean, &ref.loss, ref.row_loss.data(),
                                               ref.row_lse.data(), ref.counts.data());
    return ref;
  };
  auto reference_grad = [=](float g) {
    const Reference ref = reference();
    std::vector<float> expected(n);
    kernels::cpu::cross_entropy_backward<float>(logits_host->data(), targets_host->data(), nullptr, ref.row_lse.data(),
                                                ref.counts.data(), rows, V, kIgnoreIndex, LossReduction::mean, &g,
                                                expected.data());
    return expected;
  };
  auto check_forward = [=] {
    const Reference ref = reference();
    return first_problem({compare("loss", {ref.loss}, loss.download(), 1e-8),
                          compare("row_lse", ref.row_lse, row_lse.download(), 1e-10),
                          compare("row_loss", ref.row_loss, row_loss.download(), 1e-8),
                          compare_exact("counts", ref.counts, counts.download())});
  };

  const std::string shape_text = dims({{"rows", rows}, {"V", V}}, "bf16");
  const double logit_bytes = static_cast<double>(n) * sizeof(bf16);
  std::vector<Case> cases;
  {
    Case c = make_case("cross_entropy.forward", "coco", shape_text);
    c.bytes = logit_bytes + rows * 12.0;
    c.run = [=] {
      kernels::cuda::cross_entropy_forward<bf16>(logits.get(), targets.get(), nullptr, rows, V, kIgnoreIndex,
                                                 LossReduction::mean, loss.get(), row_loss.get(), row_lse.get(),
                                                 counts.get(), nullptr, 1.0f, current_stream());
    };
    c.validate = [=, run = c.run] {
      row_lse.poison();
      row_loss.poison();
      run();
      return check_forward();
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("cross_entropy.forward(rows)", "naive", shape_text);
    c.bytes = logit_bytes + rows * 12.0;
    c.run = [=] {
      naive::cross_entropy_rows(row_loss.get(), row_lse.get(), logits.get(), targets.get(), rows, V, current_stream());
    };
    c.validate = [=, run = c.run] {
      row_lse.poison();
      row_loss.poison();
      run();
      const Reference ref = reference();
      return first_problem({compare("row_lse", ref.row_lse, row_lse.download(), 1e-10),
                            compare("row_loss", ref.row_loss, row_loss.download(), 1e-8)});
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("cross_entropy.forward+grad", "coco", shape_text + " fused dlogits");
    c.bytes = 2 * logit_bytes + rows * 12.0;
    c.run = [=] {
      kernels::cuda::cross_entropy_forward<bf16>(logits.get(), targets.get(), nullptr, rows, V, kIgnoreIndex,
                                                 LossReduction::mean, loss.get(), row_loss.get(), row_lse.get(),
                                                 counts.get(), dlogits.get(), 1.0f, current_stream());
    };
    c.validate = [=, run = c.run] {
      dlogits.poison();
      run();
      return first_problem(
          {check_forward(), compare("dlogits", reference_grad(1.0f), download_floats(dlogits), kBf16Nmse)});
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("cross_entropy.backward", "coco", shape_text);
    c.bytes = 2 * logit_bytes + rows * 8.0;
    // row_lse and counts of the CUDA forward, as in training.
    kernels::cuda::cross_entropy_forward<bf16>(logits.get(), targets.get(), nullptr, rows, V, kIgnoreIndex,
                                               LossReduction::mean, loss.get(), row_loss.get(), row_lse.get(),
                                               counts.get(), nullptr, 1.0f, current_stream());
    DeviceArray<float> saved_lse(rows);
    COCO_CUDA_CHECK(cudaMemcpy(saved_lse.get(), row_lse.get(), rows * sizeof(float), cudaMemcpyDeviceToDevice));
    DeviceArray<int32_t> saved_counts(kernels::kCrossEntropyCounts);
    COCO_CUDA_CHECK(cudaMemcpy(saved_counts.get(), counts.get(), saved_counts.bytes(), cudaMemcpyDeviceToDevice));
    c.run = [=] {
      kernels::cuda::cross_entropy_backward<bf16>(logits.get(), targets.get(), nullptr, saved_lse.get(),
                                                  saved_counts.get(), rows, V, kIgnoreIndex, LossReduction::mean,
                                                  dloss.get(), dlogits.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      dlogits.poison();
      run();
      return compare("dlogits", reference_grad(0.5f), download_floats(dlogits), kBf16Nmse);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("cross_entropy.scale_by_scalar", "coco", shape_text);
    c.bytes = 2 * logit_bytes;
    DeviceArray<bf16> values(n);
    c.run = [=] { kernels::cuda::scale_by_device_scalar<bf16>(values.get(), n, dloss.get(), current_stream()); };
    c.validate = [=, run = c.run] {
      values.upload(from_floats<bf16>(*logits_host));
      run();
      std::vector<float> expected(n);
      for (int64_t i = 0; i < n; ++i) expected[i] = to_float(from_float<bf16>((*logits_host)[i] * 0.5f));
      return compare("values", expected, download_floats(values), 0.0);
    };
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> bce_cases(const Shapes& s) {
  const int64_t n = s.tokens();
  const auto logits_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n, 211, -6.0f, 6.0f));
  const auto replaced_host = std::make_shared<std::vector<uint8_t>>(n);
  const auto valid_host = std::make_shared<std::vector<uint8_t>>(n);
  const std::vector<int32_t> draws = random_ints(n, 212, 0, 100);
  for (int64_t i = 0; i < n; ++i) {
    (*replaced_host)[i] = draws[i] < 12 ? 1 : 0;  // ~12% of the tokens replaced by the generator
    (*valid_host)[i] = draws[i] < 95 ? 1 : 0;     // ~5% padding
  }
  const auto labels = kernels::BceLabels::replaced_is_one;
  DeviceArray<bf16> logits = device_from<bf16>(*logits_host), dlogits(n);
  DeviceArray<uint8_t> replaced(*replaced_host), valid(*valid_host), workspace(kernels::cuda::bce_workspace_bytes(n));
  DeviceArray<float> loss(1), dloss(std::vector<float>{1.0f});
  DeviceArray<int32_t> counts(kernels::kBceCounts);
  const auto ref_counts = std::make_shared<std::vector<int32_t>>(kernels::kBceCounts);
  const auto ref_loss = std::make_shared<float>(0.0f);
  kernels::cpu::bce_with_logits_forward<float>(logits_host->data(), replaced_host->data(), valid_host->data(), n,
                                               labels, ref_loss.get(), ref_counts->data());
  const std::string shape_text = dims({{"n", n}}, "bf16");
  std::vector<Case> cases;
  {
    Case c = make_case("bce.forward", "coco", shape_text);
    c.bytes = n * 4.0;
    c.run = [=] {
      kernels::cuda::bce_with_logits_forward<bf16>(logits.get(), replaced.get(), valid.get(), n, labels, loss.get(),
                                                   counts.get(), workspace.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      loss.poison();
      run();
      return first_problem({compare("loss", {*ref_loss}, loss.download(), 1e-10),
                            compare_exact("counts", *ref_counts, counts.download())});
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("bce.backward", "coco", shape_text);
    c.bytes = n * 6.0;
    DeviceArray<int32_t> saved_counts(*ref_counts);
    c.run = [=] {
      kernels::cuda::bce_with_logits_backward<bf16>(logits.get(), replaced.get(), valid.get(), saved_counts.get(), n,
                                                    labels, dloss.get(), dlogits.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      dlogits.poison();
      run();
      std::vector<float> expected(n);
      const float g = 1.0f;
      kernels::cpu::bce_with_logits_backward<float>(logits_host->data(), replaced_host->data(), valid_host->data(),
                                                    ref_counts->data(), n, labels, &g, expected.data());
      return compare("dlogits", expected, download_floats(dlogits), kBf16Nmse);
    };
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> l2norm_cases(const Shapes& s) {
  const int64_t rows = 2 * s.batch, dim = s.d_model;  // both views' sequence vectors
  const float eps = 1e-12f;
  const auto x_host = std::make_shared<std::vector<float>>(random_floats<bf16>(rows * dim, 221));
  const auto dy_host = std::make_shared<std::vector<float>>(random_floats<bf16>(rows * dim, 222));
  DeviceArray<bf16> x = device_from<bf16>(*x_host), dy = device_from<bf16>(*dy_host), y(rows * dim), dx(rows * dim);
  DeviceArray<float> norms(rows);
  auto reference = [=] {
    std::pair<std::vector<float>, std::vector<float>> r{std::vector<float>(rows * dim), std::vector<float>(rows)};
    kernels::cpu::l2_normalize_forward<float>(x_host->data(), rows, dim, eps, r.first.data(), r.second.data());
    return r;
  };
  const std::string shape_text = dims({{"rows", rows}, {"D", dim}}, "bf16");
  const double act = static_cast<double>(rows) * dim * sizeof(bf16);
  std::vector<Case> cases;
  for (const bool naive_variant : {false, true}) {
    Case c = make_case("l2norm.forward", naive_variant ? "naive" : "coco", shape_text);
    c.bytes = 2 * act + rows * 4.0;
    c.run = [=] {
      if (naive_variant)
        naive::l2_normalize_forward(y.get(), norms.get(), x.get(), rows, dim, eps, current_stream());
      else
        kernels::cuda::l2_normalize_forward<bf16>(x.get(), rows, dim, eps, y.get(), norms.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      y.poison();
      norms.poison();
      run();
      const auto [expected_y, expected_norms] = reference();
      return first_problem({compare("y", expected_y, download_floats(y), kBf16Nmse),
                            compare("norms", expected_norms, norms.download(), 1e-10)});
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("l2norm.backward", "coco", shape_text);
    c.bytes = 3 * act + rows * 4.0;
    DeviceArray<float> saved_norms(rows);
    kernels::cuda::l2_normalize_forward<bf16>(x.get(), rows, dim, eps, y.get(), saved_norms.get(), current_stream());
    c.run = [=] {
      kernels::cuda::l2_normalize_backward<bf16>(x.get(), saved_norms.get(), dy.get(), rows, dim, eps, dx.get(),
                                                 current_stream());
    };
    c.validate = [=, run = c.run] {
      dx.poison();
      run();
      const auto [unused, expected_norms] = reference();
      std::vector<float> expected(rows * dim);
      kernels::cpu::l2_normalize_backward<float>(x_host->data(), expected_norms.data(), dy_host->data(), rows, dim, eps,
                                                 expected.data());
      return compare("dx", expected, download_floats(dx), kBf16Nmse);
    };
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> contrastive_cases(const Shapes& s) {
  const int64_t B = s.batch, D = s.d_model;
  const float tau = 0.1f;
  // Unit rows, as the L2 normalisation delivers them, rounded to bf16.
  auto unit_rows = [&](uint64_t seed) {
    std::vector<float> x = random_floats<float>(B * D, seed);
    for (int64_t r = 0; r < B; ++r) {
      double sum = 0;
      for (int64_t c = 0; c < D; ++c) sum += double(x[r * D + c]) * x[r * D + c];
      for (int64_t c = 0; c < D; ++c)
        x[r * D + c] = to_float(from_float<bf16>(static_cast<float>(x[r * D + c] / std::sqrt(sum))));
    }
    return std::make_shared<std::vector<float>>(std::move(x));
  };
  const auto a_host = unit_rows(231), b_host = unit_rows(232);
  // Make the positives more similar than the negatives: b_i leans towards a_i.
  for (int64_t i = 0; i < B * D; ++i)
    (*b_host)[i] = to_float(from_float<bf16>(0.5f * (*b_host)[i] + 0.05f * (*a_host)[i]));
  const float theta_value = std::log(1.0f / 0.07f);
  DeviceArray<bf16> a = device_from<bf16>(*a_host), b = device_from<bf16>(*b_host), da(B * D), db(B * D);
  DeviceArray<float> theta(std::vector<float>{theta_value}), loss(1), dloss(std::vector<float>{1.0f}), dtheta(1);
  DeviceArray<int32_t> counts(kernels::kContrastiveCounts);
  const std::string shape_text = dims({{"B", B}, {"D", D}}, "bf16");
  std::vector<Case> cases;
  for (const auto kind : {kernels::ContrastiveKind::info_nce, kernels::ContrastiveKind::nt_xent}) {
    const bool info = kind == kernels::ContrastiveKind::info_nce;
    const std::string name = info ? "info_nce" : "nt_xent";
    const int64_t saved_size = kernels::contrastive_saved_size(kind, B);
    DeviceArray<float> saved(saved_size), workspace(kernels::cuda::contrastive_workspace_size(kind, B));
    const int64_t anchors = info ? B : 2 * B;
    const double gemm_flops = 2.0 * anchors * anchors * D;
    auto run_forward = [=] {
      if (info)
        kernels::cuda::info_nce_forward<bf16>(a.get(), b.get(), theta.get(), B, D, loss.get(), saved.get(),
                                              counts.get(), workspace.get(), current_stream());
      else
        kernels::cuda::nt_xent_forward<bf16>(a.get(), b.get(), B, D, tau, loss.get(), saved.get(), counts.get(),
                                             workspace.get(), current_stream());
    };
    auto reference_forward = [=](float* ref_loss, std::vector<float>& ref_saved, std::vector<int32_t>& ref_counts) {
      ref_saved.assign(saved_size, 0.0f);
      ref_counts.assign(kernels::kContrastiveCounts, 0);
      if (info)
        kernels::cpu::info_nce_forward<float>(a_host->data(), b_host->data(), &theta_value, B, D, ref_loss,
                                              ref_saved.data(), ref_counts.data());
      else
        kernels::cpu::nt_xent_forward<float>(a_host->data(), b_host->data(), B, D, tau, ref_loss, ref_saved.data(),
                                             ref_counts.data());
    };
    {
      Case c = make_case(name + ".forward", "coco", shape_text);
      c.flops = gemm_flops;
      c.run = run_forward;
      c.validate = [=] {
        loss.poison();
        run_forward();
        float ref_loss = 0;
        std::vector<float> ref_saved;
        std::vector<int32_t> ref_counts;
        reference_forward(&ref_loss, ref_saved, ref_counts);
        return first_problem({compare("loss", {ref_loss}, loss.download(), 1e-8),
                              compare_exact("counts", ref_counts, counts.download())});
      };
      cases.push_back(c);
    }
    {
      Case c = make_case(name + ".backward", "coco", shape_text);
      c.flops = 2 * gemm_flops;
      auto run_backward = [=] {
        if (info)
          kernels::cuda::info_nce_backward<bf16>(a.get(), b.get(), theta.get(), saved.get(), B, D, dloss.get(),
                                                 da.get(), db.get(), dtheta.get(), workspace.get(), current_stream());
        else
          kernels::cuda::nt_xent_backward<bf16>(a.get(), b.get(), saved.get(), B, D, tau, dloss.get(), da.get(),
                                                db.get(), workspace.get(), current_stream());
      };
      c.run = run_backward;
      c.validate = [=] {
        run_forward();  // `saved` is shared with the forward case: refill it for this backward
        da.poison();
        db.poison();
        run_backward();
        float ref_loss = 0, ref_dtheta = 0, g = 1.0f;
        std::vector<float> ref_saved, eda(B * D), edb(B * D);
        std::vector<int32_t> ref_counts;
        reference_forward(&ref_loss, ref_saved, ref_counts);
        if (info)
          kernels::cpu::info_nce_backward<float>(a_host->data(), b_host->data(), &theta_value, ref_saved.data(), B, D,
                                                 &g, eda.data(), edb.data(), &ref_dtheta);
        else
          kernels::cpu::nt_xent_backward<float>(a_host->data(), b_host->data(), ref_saved.data(), B, D, tau, &g,
                                                eda.data(), edb.data());
        return first_problem({compare("da", eda, download_floats(da), kBf16Nmse),
                              compare("db", edb, download_floats(db), kBf16Nmse),
                              info ? compare("dtheta", {ref_dtheta}, dtheta.download(), 1e-8) : ""});
      };
      cases.push_back(c);
    }
  }
  return cases;
}

}  // namespace

COCO_BENCH(cross_entropy, cross_entropy_cases);
COCO_BENCH(bce, bce_cases);
COCO_BENCH(l2norm, l2norm_cases);
COCO_BENCH(contrastive, contrastive_cases);

}  // namespace coco::bench
