#include "engine/ops/cast.h"

#include "engine/tape.h"

namespace coco::ops {

Tensor cast(const Tensor& x, DType dtype) {
  check_defined("cast", x, "the input");
  if (x.dtype() == dtype) return x;
  Tensor out = x.detach().to(dtype);
  if (!dtype_is_float(x.dtype()) || !dtype_is_float(dtype)) return out;
  if (Tape* tape = Tape::recording_for({&x})) {
    // Saved: nothing but the source dtype.
    tape->record("cast", {x}, {out}, [source_dtype = x.dtype()](BackwardContext& ctx) {
      const Tensor& dout = ctx.grad_output(0);
      ctx.accumulate(0, dout.dtype() == source_dtype ? dout : dout.to(source_dtype));
    });
  }
  return out;
}

}  // namespace coco::ops
