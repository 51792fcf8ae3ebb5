#include "engine/ops/scalars.h"

#include <string>

#include "engine/device.h"
#include "engine/ops/float_dispatch.h"
#include "kernels/device_metrics.h"

namespace coco::ops {

void gather_scalars(const std::vector<ScalarRef>& sources, Tensor& dst, ScalarUpdate update) {
  const char* op = "ops::gather_scalars";
  check_defined(op, dst, "the destination");
  if (dst.dtype() != DType::f64 || dst.numel() != static_cast<int64_t>(sources.size()))
    throw TensorError(std::string(op) + ": the destination must be f64 with " + std::to_string(sources.size()) +
                      " elements, got " + detail::describe(dst));
  if (sources.size() > static_cast<size_t>(kernels::kMaxScalarSources))
    throw TensorError(std::string(op) + ": at most " + std::to_string(kernels::kMaxScalarSources) + " sources, got " +
                      std::to_string(sources.size()));
  kernels::ScalarSources packed;
  packed.count = static_cast<int32_t>(sources.size());
  for (size_t k = 0; k < sources.size(); ++k) {
    const ScalarRef& s = sources[k];
    kernels::ScalarSource& p = packed.sources[k];
    p.weight = s.weight;
    if (!s.tensor.defined()) continue;
    check_same_device(op, dst, s.tensor);
    const DType d = s.tensor.dtype();
    if ((d != DType::f32 && d != DType::f64 && d != DType::i32) || s.index < 0 || s.index >= s.tensor.numel())
      throw TensorError(std::string(op) + ": source " + std::to_string(k) + " needs an f32, f64 or i32 tensor with " +
                        "element " + std::to_string(s.index) + ", got " + detail::describe(s.tensor));
    p.dtype = d;
    p.data = static_cast<const uint8_t*>(s.tensor.data()) + s.index * static_cast<int64_t>(dtype_size(d));
  }
  const kernels::ScalarUpdate how =
      update == ScalarUpdate::assign ? kernels::ScalarUpdate::assign : kernels::ScalarUpdate::accumulate;
  if (dst.is_cuda())
    kernels::cuda::gather_scalars(packed, how, dst.data_as<double>(), current_stream());
  else
    kernels::cpu::gather_scalars(packed, how, dst.data_as<double>());
}

}  // namespace coco::ops
