// CPU reference of row gather / deterministic scatter-add (semantics in kernels/gather.h).
#include "kernels/gather.h"

#include <stdexcept>
#include <string>

namespace coco::kernels::cpu {

namespace {

void check_indices(const int32_t* index, int64_t count, int64_t rows, int64_t dim, const char* op) {
  if (count < 0 || rows < 0 || dim < 1)
    throw std::invalid_argument(std::string(op) + ": expected count >= 0, rows >= 0, dim >= 1; got count " +
                                std::to_string(count) + ", rows " + std::to_string(rows) + ", dim " +
                                std::to_string(dim));
  for (int64_t m = 0; m < count; ++m)
    if (index[m] < 0 || index[m] >= rows)
      throw std::invalid_argument(std::string(op) + ": index[" + std::to_string(m) + "] = " + std::to_string(index[m]) +
                                  " is outside [0, " + std::to_string(rows) + ")");
}

}  // namespace

template <class T>
void gather_rows(const T* src, int64_t src_rows, int64_t dim, const int32_t* index, int64_t count, T* out) {
  check_indices(index, count, src_rows, dim, "kernels::cpu::gather_rows");
  for (int64_t m = 0; m < count; ++m) {
    const T* row = src + static_cast<int64_t>(index[m]) * dim;
    for (int64_t d = 0; d < dim; ++d) out[m * dim + d] = row[d];
  }
}

template <class T>
void scatter_add_rows(const T* src, const int32_t* index, int64_t count, int64_t dim, T* out, int64_t out_rows) {
  check_indices(index, count, out_rows, dim, "kernels::cpu::scatter_add_rows");
  for (int64_t m = 0; m < count; ++m) {
    T* row = out + static_cast<int64_t>(index[m]) * dim;
    for (int64_t d = 0; d < dim; ++d) row[d] += src[m * dim + d];
  }
}

template void gather_rows<float>(const float*, int64_t, int64_t, const int32_t*, int64_t, float*);
template void gather_rows<double>(const double*, int64_t, int64_t, const int32_t*, int64_t, double*);
template void scatter_add_rows<float>(const float*, const int32_t*, int64_t, int64_t, float*, int64_t);
template void scatter_add_rows<double>(const double*, const int32_t*, int64_t, int64_t, double*, int64_t);

}  // namespace coco::kernels::cpu
