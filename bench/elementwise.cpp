// coco-bench cases: memory-bound elementwise and layout kernels at training shapes: GELU, softmax /
// log-softmax, dropout, head split/merge permutes, casts / fill / copy.
#include "bench/bench_util.h"
#include "bench/naive_kernels.h"
#include "kernels/cast.h"
#include "kernels/dropout.h"
#include "kernels/gelu.h"
#include "kernels/permute.h"
#include "kernels/softmax.h"

namespace coco::bench {
namespace {

using kernels::GeluApproximation;

std::vector<Case> gelu_cases(const Shapes& s) {
  const int64_t n = s.tokens() * s.d_ff;  // the FF1 activation (B*T, FF)
  const auto x_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n, 31, -4.0f, 4.0f));
  const auto dout_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n, 32));
  DeviceArray<bf16> x = device_from<bf16>(*x_host), dout = device_from<bf16>(*dout_host), out(n);
  const std::string shape_text = dims({{"n", n}}, "bf16 erf");
  const double bytes2 = 2.0 * n * sizeof(bf16), bytes3 = 3.0 * n * sizeof(bf16);
  auto forward_reference = [=] {
    std::vector<float> expected(n);
    kernels::cpu::gelu_forward<float>(expected.data(), x_host->data(), n, GeluApproximation::erf);
    return expected;
  };
  auto backward_reference = [=] {
    std::vector<float> expected(n);
    kernels::cpu::gelu_backward<float>(expected.data(), dout_host->data(), x_host->data(), n, GeluApproximation::erf);
    return expected;
  };
  auto make = [&](const char* op, const char* variant, double bytes, std::function<void()> run, bool backward) {
    Case c = make_case(op, variant, shape_text);
    c.bytes = bytes;
    c.run = run;
    c.validate = [=] {
      out.poison();
      run();
      return compare("out", backward ? backward_reference() : forward_reference(), download_floats(out), kBf16Nmse);
    };
    return c;
  };
  return {
      make(
          "gelu.forward", "coco", bytes2,
          [=] { kernels::cuda::gelu_forward<bf16>(out.get(), x.get(), n, GeluApproximation::erf, current_stream()); },
          false),
      make(
          "gelu.forward", "naive", bytes2, [=] { naive::gelu_forward(out.get(), x.get(), n, current_stream()); },
          false),
      make(
          "gelu.backward", "coco", bytes3,
          [=] {
            kernels::cuda::gelu_backward<bf16>(out.get(), dout.get(), x.get(), n, GeluApproximation::erf,
                                               current_stream());
          },
          true),
      make(
          "gelu.backward", "naive", bytes3,
          [=] { naive::gelu_backward(out.get(), dout.get(), x.get(), n, current_stream()); }, true),
  };
}

std::vector<Case> softmax_cases(const Shapes& s) {
  // Attention-probability rows (B*H*T, T) and vocabulary rows (masked rows, V).
  struct Problem {
    const char* name;
    int64_t rows, width;
  };
  const std::vector<Problem> problems = {{"attn", s.batch * s.heads * s.seq_len, s.seq_len},
                                         {"vocab", s.masked_rows(), s.vocab}};
  std::vector<Case> cases;
  uint64_t seed = 40;
  for (const Problem& problem : problems) {
    const int64_t rows = problem.rows, width = problem.width, n = rows * width;
    const auto x_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n, ++seed, -6.0f, 6.0f));
    const auto dy_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n, ++seed));
    DeviceArray<bf16> x = device_from<bf16>(*x_host), dy = device_from<bf16>(*dy_host), y(n), dx(n);
    const std::string shape_text = std::string(problem.name) + " " + dims({{"rows", rows}, {"width", width}}, "bf16");
    for (const bool log : {false, true}) {
      // The backward consumes the reference output of the same inputs, rounded to bf16.
      std::vector<float> y_ref(n);
      if (log)
        kernels::cpu::log_softmax_forward<float>(x_host->data(), y_ref.data(), rows, width);
      else
        kernels::cpu::softmax_forward<float>(x_host->data(), y_ref.data(), rows, width);
      const auto y_saved_host = std::make_shared<std::vector<float>>(to_floats(from_floats<bf16>(y_ref)));
      DeviceArray<bf16> y_saved = device_from<bf16>(*y_saved_host);
      const auto forward_reference = std::make_shared<std::vector<float>>(std::move(y_ref));
      const std::string op = log ? "log_softmax" : "softmax";
      {
        Case c = make_case(op + ".forward", "coco", shape_text);
        c.bytes = 2.0 * n * sizeof(bf16);
        c.run = [=] {
          if (log)
            kernels::cuda::log_softmax_forward<bf16>(x.get(), y.get(), rows, width, current_stream());
          else
            kernels::cuda::softmax_forward<bf16>(x.get(), y.get(), rows, width, current_stream());
        };
        c.validate = [=, run = c.run] {
          y.poison();
          run();
          return compare("y", *forward_reference, download_floats(y), kBf16Nmse);
        };
        cases.push_back(c);
      }
      if (!log) {
        Case c = make_case(op + ".forward", "naive", shape_text);
        c.bytes = 2.0 * n * sizeof(bf16);
        c.run = [=] { naive::softmax_forward(y.get(), x.get(), rows, width, current_stream()); };
        c.validate = [=, run = c.run] {
          y.poison();
          run();
          return compare("y", *forward_reference, download_floats(y), kBf16Nmse);
        };
        cases.push_back(c);
      }
      {
        Case c = make_case(op + ".backward", "coco", shape_text);
        c.bytes = 3.0 * n * sizeof(bf16);
        c.run = [=] {
          if (log)
            kernels::cuda::log_softmax_backward<bf16>(y_saved.get(), dy.get(), dx.get(), rows, width, current_stream());
          else
            kernels::cuda::softmax_backward<bf16>(y_saved.get(), dy.get(), dx.get(), rows, width, current_stream());
        };
        c.validate = [=, run = c.run] {
          dx.poison();
          run();
          std::vector<float> expected(n);
          if (log)
            kernels::cpu::log_softmax_backward<float>(y_saved_host->data(), dy_host->data(), expected.data(), rows,
                                                      width);
          else
            kernels::cpu::softmax_backward<float>(y_saved_host->data(), dy_host->data(), expected.data(), rows, width);
          return compare("dx", expected, download_floats(dx), kBf16Nmse);
        };
        cases.push_back(c);
      }
    }
  }
  return cases;
}

std::vector<Case> dropout_cases(const Shapes& s) {
  const int64_t n = s.tokens() * s.d_model;  // a residual-stream activation (B*T, d)
  const double p = 0.1;
  const rng::Stream stream(1234, 7, rng::Purpose::dropout_residual);
  const auto x_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n, 51));
  DeviceArray<bf16> x = device_from<bf16>(*x_host), out(n);
  DeviceArray<uint8_t> mask(n);
  const std::string shape_text = dims({{"n", n}}, "bf16 p=0.1");
  auto reference = [=] {
    std::vector<float> expected(n);
    kernels::cpu::dropout_apply<float>(expected.data(), x_host->data(), n, p, stream, 0);
    return expected;
  };
  std::vector<Case> cases;
  {
    Case c = make_case("dropout.apply", "coco", shape_text);
    c.bytes = 2.0 * n * sizeof(bf16);
    c.run = [=] { kernels::cuda::dropout_apply<bf16>(out.get(), x.get(), n, p, stream, 0, current_stream()); };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      return compare("out", reference(), download_floats(out), kBf16Nmse);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("dropout.apply", "naive", shape_text);
    c.bytes = 2.0 * n * sizeof(bf16);
    c.run = [=] { naive::dropout_apply(out.get(), x.get(), n, static_cast<float>(p), stream, current_stream()); };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      return compare("out", reference(), download_floats(out), kBf16Nmse);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("dropout.mask", "coco", dims({{"n", n}}, "u8 p=0.1"));
    c.bytes = static_cast<double>(n);
    c.run = [=] { kernels::cuda::dropout_mask(mask.get(), n, p, stream, 0, current_stream()); };
    c.validate = [=, run = c.run] {
      mask.poison();
      run();
      std::vector<uint8_t> expected(n);
      kernels::cpu::dropout_mask(expected.data(), n, p, stream, 0);
      return compare_exact("mask", expected, mask.download());
    };
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> permute_cases(const Shapes& s) {
  kernels::HeadShape shape;
  shape.batch = s.batch;
  shape.seq = s.seq_len;
  shape.heads = s.heads;
  shape.head_dim = s.dim_head;
  const int64_t n = shape.numel();
  const auto qkv_host = std::make_shared<std::vector<float>>(random_floats<bf16>(3 * n, 61));
  const auto in_host = std::make_shared<std::vector<float>>(qkv_host->begin(), qkv_host->begin() + n);
  DeviceArray<bf16> qkv = device_from<bf16>(*qkv_host), in = device_from<bf16>(*in_host), out(n), q(n), k(n), v(n),
                    qkv_out(3 * n);
  const std::string shape_text =
      dims({{"B", shape.batch}, {"T", shape.seq}, {"H", shape.heads}, {"Dh", shape.head_dim}}, "bf16");
  const double bytes = 2.0 * n * sizeof(bf16);
  auto split_reference = [=] {
    std::vector<float> expected(n);
    kernels::cpu::split_heads<float>(expected.data(), in_host->data(), shape);
    return expected;
  };
  std::vector<Case> cases;
  {
    Case c = make_case("permute.split_heads", "coco", shape_text);
    c.bytes = bytes;
    c.run = [=] { kernels::cuda::split_heads<bf16>(out.get(), in.get(), shape, current_stream()); };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      return compare("out", split_reference(), download_floats(out), 0.0);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("permute.split_heads", "naive", shape_text);
    c.bytes = bytes;
    c.run = [=] {
      naive::split_heads(out.get(), in.get(), shape.batch, shape.seq, shape.heads, shape.head_dim, current_stream());
    };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      return compare("out", split_reference(), download_floats(out), 0.0);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("permute.merge_heads", "coco", shape_text);
    c.bytes = bytes;
    c.run = [=] { kernels::cuda::merge_heads<bf16>(out.get(), in.get(), shape, current_stream()); };
    c.validate = [=, run = c.run] {
      out.poison();
      run();
      std::vector<float> expected(n);
      kernels::cpu::merge_heads<float>(expected.data(), in_host->data(), shape);
      return compare("out", expected, download_floats(out), 0.0);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("permute.split_qkv", "coco", shape_text);
    c.bytes = 3 * bytes;
    c.run = [=] { kernels::cuda::split_qkv<bf16>(q.get(), k.get(), v.get(), qkv.get(), shape, current_stream()); };
    c.validate = [=, run = c.run] {
      q.poison();
      k.poison();
      v.poison();
      run();
      std::vector<float> eq(n), ek(n), ev(n);
      kernels::cpu::split_qkv<float>(eq.data(), ek.data(), ev.data(), qkv_host->data(), shape);
      return first_problem({compare("q", eq, download_floats(q), 0.0), compare("k", ek, download_floats(k), 0.0),
                            compare("v", ev, download_floats(v), 0.0)});
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("permute.merge_qkv", "coco", shape_text);
    c.bytes = 3 * bytes;
    // The inputs are the three thirds of the qkv buffer viewed as (B, H, T, Dh) tensors; the lambda
    // captures `qkv` itself so that the buffer lives as long as the case.
    c.run = [=] {
      kernels::cuda::merge_qkv<bf16>(qkv_out.get(), qkv.get(), qkv.get() + n, qkv.get() + 2 * n, shape,
                                     current_stream());
    };
    c.validate = [=, run = c.run] {
      qkv_out.poison();
      run();
      std::vector<float> expected(3 * n);
      kernels::cpu::merge_qkv<float>(expected.data(), qkv_host->data(), qkv_host->data() + n, qkv_host->data() + 2 * n,
                                     shape);
      return compare("qkv", expected, download_floats(qkv_out), 0.0);
    };
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> cast_cases(const Shapes& s) {
  const int64_t n = s.tokens() * s.d_model;
  const auto x_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n, 71, -100.0f, 100.0f));
  DeviceArray<bf16> x = device_from<bf16>(*x_host), back(n);
  DeviceArray<float> wide(n);
  const std::string shape_text = dims({{"n", n}}, "");
  std::vector<Case> cases;
  {
    Case c = make_case("cast.bf16->f32", "coco", shape_text);
    c.bytes = n * 6.0;
    c.run = [=] { kernels::cuda::cast(x.get(), DType::bf16, wide.get(), DType::f32, n, current_stream()); };
    c.validate = [=, run = c.run] {
      wide.poison();
      run();
      return compare("f32", *x_host, wide.download(), 0.0);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("cast.bf16->f32", "naive", shape_text);
    c.bytes = n * 6.0;
    c.run = [=] { naive::cast_bf16_to_f32(wide.get(), x.get(), n, current_stream()); };
    c.validate = [=, run = c.run] {
      wide.poison();
      run();
      return compare("f32", *x_host, wide.download(), 0.0);
    };
    cases.push_back(c);
  }
  {
    // f32 -> bf16 round to nearest even (master weights to the working copy).
    const auto w_host = std::make_shared<std::vector<float>>(random_floats<float>(n, 72, -3.0f, 3.0f));
    DeviceArray<float> w(*w_host);
    Case c = make_case("cast.f32->bf16", "coco", shape_text);
    c.bytes = n * 6.0;
    c.run = [=] { kernels::cuda::cast(w.get(), DType::f32, back.get(), DType::bf16, n, current_stream()); };
    c.validate = [=, run = c.run] {
      back.poison();
      run();
      std::vector<bf16> expected(n);
      kernels::cpu::cast(w_host->data(), DType::f32, expected.data(), DType::bf16, n);
      return compare("bf16", to_floats(expected), download_floats(back), 0.0);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("fill(f32)", "coco", shape_text);
    c.bytes = n * 4.0;
    c.run = [=] { kernels::cuda::fill(wide.get(), DType::f32, 0.25, n, current_stream()); };
    c.validate = [=, run = c.run] {
      wide.poison();
      run();
      return compare("filled", std::vector<float>(n, 0.25f), wide.download(), 0.0);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("copy(bf16)", "coco", shape_text);
    c.bytes = n * 4.0;
    c.run = [=] { kernels::cuda::copy(back.get(), x.get(), n * sizeof(bf16), current_stream()); };
    c.validate = [=, run = c.run] {
      back.poison();
      run();
      return compare("copy", *x_host, download_floats(back), 0.0);
    };
    cases.push_back(c);
  }
  return cases;
}

}  // namespace

COCO_BENCH(gelu, gelu_cases);
COCO_BENCH(softmax, softmax_cases);
COCO_BENCH(dropout, dropout_cases);
COCO_BENCH(permute, permute_cases);
COCO_BENCH(cast, cast_cases);

}  // namespace coco::bench
