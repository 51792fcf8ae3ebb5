// CPU reference of row L2 normalisation (semantics in kernels/l2norm.h).
#include "kernels/l2norm.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace coco::kernels::cpu {

namespace {

void check_sizes(int64_t rows, int64_t dim, double eps, const char* op) {
  if (rows < 0 || dim < 1 || !(eps > 0.0))
    throw std::invalid_argument(std::string(op) + ": expected rows >= 0, dim >= 1, eps > 0; got rows " +
                                std::to_string(rows) + ", dim " + std::to_string(dim) + ", eps " + std::to_string(eps));
}

}  // namespace

template <class T>
void l2_normalize_forward(const T* x, int64_t rows, int64_t dim, double eps, T* y, T* norms) {
  check_sizes(rows, dim, eps, "kernels::cpu::l2_normalize_forward");
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    double squares = 0.0;
    for (int64_t d = 0; d < dim; ++d) squares += static_cast<double>(xr[d]) * static_cast<double>(xr[d]);
    const T norm = static_cast<T>(std::sqrt(squares));
    norms[r] = norm;
    const T denom = norm < static_cast<T>(eps) ? static_cast<T>(eps) : norm;
    for (int64_t d = 0; d < dim; ++d) y[r * dim + d] = xr[d] / denom;
  }
}

template <class T>
void l2_normalize_backward(const T* x, const T* norms, const T* dy, int64_t rows, int64_t dim, double eps, T* dx) {
  check_sizes(rows, dim, eps, "kernels::cpu::l2_normalize_backward");
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    const T* dyr = dy + r * dim;
    T* dxr = dx + r * dim;
    const T norm = norms[r];
    if (norm < static_cast<T>(eps)) {
      for (int64_t d = 0; d < dim; ++d) dxr[d] = dyr[d] / static_cast<T>(eps);
      continue;
    }
    double dot = 0.0;
    for (int64_t d = 0; d < dim; ++d) dot += static_cast<double>(xr[d]) * static_cast<double>(dyr[d]);
    const T inv = T(1) / norm;
    const T projection = static_cast<T>(dot) * inv * inv * inv;
    for (int64_t d = 0; d < dim; ++d) dxr[d] = dyr[d] * inv - xr[d] * projection;
  }
}

template void l2_normalize_forward<float>(const float*, int64_t, int64_t, double, float*, float*);
template void l2_normalize_forward<double>(const double*, int64_t, int64_t, double, double*, double*);
template void l2_normalize_backward<float>(const float*, const float*, const float*, int64_t, int64_t, double, float*);
template void l2_normalize_backward<double>(const double*, const double*, const double*, int64_t, int64_t, double,
                                            double*);

}  // namespace coco::kernels::cpu
