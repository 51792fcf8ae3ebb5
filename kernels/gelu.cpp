// CPU GELU reference (f32 computes in f32, f64 in f64; the same formulas as the CUDA kernels).
#include "kernels/gelu.h"

#include <cmath>

#include "kernels/gelu_math.h"

namespace coco::kernels::cpu {

template <class T>
void gelu_forward(T* out, const T* x, int64_t n, GeluApproximation approximation) {
  for (int64_t i = 0; i < n; ++i) out[i] = detail::gelu_value<T>(x[i], approximation);
}

template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, int64_t n, GeluApproximation approximation) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dout[i] * detail::gelu_derivative<T>(x[i], approximation);
}

template void gelu_forward<float>(float*, const float*, int64_t, GeluApproximation);
template void gelu_forward<double>(double*, const double*, int64_t, GeluApproximation);
template void gelu_backward<float>(float*, const float*, const float*, int64_t, GeluApproximation);
template void gelu_backward<double>(double*, const double*, const double*, int64_t, GeluApproximation);

}  // namespace coco::kernels::cpu
