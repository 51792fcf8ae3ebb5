// coco-bench cases: the deterministic reductions and elementwise helpers of the linear backward: the
// bias gradient (column sum of dY into an f32 buffer) and gradient accumulation (dst += src).
#include "bench/bench_util.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace coco::bench {
namespace {

std::vector<Case> reduce_cases(const Shapes& s) {
  const int64_t rows = s.tokens(), cols = s.d_ff;  // dY of FF1: (B*T, FF)
  const auto dy_host = std::make_shared<std::vector<float>>(random_floats<bf16>(rows * cols, 501));
  DeviceArray<bf16> dy = device_from<bf16>(*dy_host);
  DeviceArray<float> dbias(cols), accum(rows * cols);
  DeviceArray<uint8_t> workspace(kernels::cuda::column_sum_workspace_bytes(rows, cols));
  const auto accum_host = std::make_shared<std::vector<float>>(random_floats<float>(rows * cols, 502));
  const std::string shape_text = dims({{"rows", rows}, {"cols", cols}}, "bf16->f32");
  std::vector<Case> cases;
  {
    Case c = make_case("reduce.column_sum(dbias)", "coco", shape_text);
    c.bytes = rows * cols * 2.0 + cols * 8.0;
    c.run = [=] {
      kernels::cuda::column_sum<bf16, float>(dy.get(), rows, cols, 1.0, dbias.get(), workspace.get(), current_stream());
    };
    c.validate = [=, run = c.run] {
      dbias.zero();
      run();
      std::vector<float> expected(cols, 0.0f);
      kernels::cpu::column_sum<float>(dy_host->data(), rows, cols, 1.0, expected.data());
      return compare("dbias", expected, dbias.download(), kF32Nmse);
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("elementwise.add_inplace", "coco", shape_text);
    c.bytes = rows * cols * (2.0 + 8.0);  // src read, dst read + written
    c.run = [=] { kernels::cuda::add_inplace<float, bf16>(accum.get(), dy.get(), rows * cols, current_stream()); };
    c.validate = [=, run = c.run] {
      accum.upload(*accum_host);
      run();
      std::vector<float> expected(*accum_host);
      kernels::cpu::add_inplace<float>(expected.data(), dy_host->data(), rows * cols);
      return compare("dst", expected, accum.download(), 0.0);
    };
    cases.push_back(c);
  }
  return cases;
}

}  // namespace

COCO_BENCH(reduce, reduce_cases);

}  // namespace coco::bench
