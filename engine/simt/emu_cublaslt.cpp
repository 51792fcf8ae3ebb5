// cuBLASLt for the emulated build: the subset of NVIDIA's API that kernels/matmul.cu calls (handles,
// matmul descriptors, matrix layouts, preferences, the heuristic query and cublasLtMatmul), declared
// by the real <cublasLt.h> and implemented here on the CPU with OpenBLAS, so that the gpu GEMM path
// runs unchanged in CI.
//
// It is strict on purpose. Every argument is checked as cublasLt.h documents it, and the answer is
// the status the real library gives: CUBLAS_STATUS_INVALID_VALUE for arguments in conflict or in an
// impossible configuration (a leading dimension smaller than the rows it must step over, shapes of
// op(A), op(B), C and D that do not agree, an attribute buffer of the wrong size, a bias or aux
// pointer missing for an epilogue that needs it, an aux leading dimension not divisible by 8, a
// pointer less aligned than the algorithm was chosen for, an algorithm obtained for another
// operation), CUBLAS_STATUS_NOT_SUPPORTED for what is valid but not implemented here (the shim
// knows the column/row orders, f32/f64 compute, f32/f16/bf16/f64 data and the DEFAULT, BIAS, GELU,
// GELU_BIAS, GELU_AUX and GELU_AUX_BIAS epilogues with the backward forms DGELU, DGELU_BGRAD, BGRADA
// and BGRADB; the ReLU family is NOT_SUPPORTED), and
// CUBLAS_STATUS_NOT_INITIALIZED for a handle that cublasLtCreate did not make. On top of that a
// matrix that would reach past the end of its cudaMalloc allocation fails the call with
// CUBLAS_STATUS_EXECUTION_FAILED (on a GPU the kernel would fault), which turns a too-large leading
// dimension or batch stride into an error instead of a silent read of a neighbour. The reason for
// the last refusal is kept: emu::cublaslt_last_error().
//
// Arithmetic: op(A) . op(B) in the compute type (f32, or f64 for CUBLAS_COMPUTE_64F) by OpenBLAS
// sgemm/dgemm, 16-bit operands widened exactly first; then alpha, beta * C, the bias and GELU (the
// tanh approximation cuBLASLt documents) in the compute type, and one rounding to D's type (the aux
// output rounds the GELU input to its type once). The backward epilogues: DGELU multiplies the
// product by the tanh-GELU derivative at the aux matrix (the saved GELU input); DGELU_BGRAD also
// writes the row sums of that result (length m, D's rows) to the bias-gradient pointer; BGRADA writes
// the sums of op(A) over k (length m), BGRADB those of op(B) over k (length n). The bias gradient is
// always D's data type (cublasLt.h: "the same type as the output elements") and is written, not
// accumulated. Whether alpha scales the BGRADA/BGRADB sums the documentation does not say: the shim
// sums the operand as stored (the project calls them with alpha = 1 only). The work is submitted to the stream like a
// kernel: during stream capture it becomes a graph node that cudaGraphLaunch replays.
#if defined(COCO_CUDA_EMULATED) || defined(EMU_STANDALONE)

#include <cblas.h>
#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include "engine/runtime/check.h"
#include "engine/simt/cuda_emu.h"
#include "engine/simt/emu_internal.h"

namespace emu::detail {
namespace {

constexpr uint32_t kLayoutMagic = 0x4C61794Fu;  // "LayO"
constexpr uint32_t kDescMagic = 0x44657363u;    // "Desc"
constexpr uint32_t kPrefMagic = 0x50726566u;    // "Pref"
constexpr uint32_t kAlgoMagic = 0x416C676Fu;    // "Algo"
constexpr int32_t kDefaultType = -1;            // "same as D" for the bias and aux data types
constexpr uint32_t kDefaultAlignment = 256;     // cublasLt.h: the MIN_ALIGNMENT_* defaults
constexpr uint32_t kWidestAccess = 16;          // the shim's algorithm: 128-bit accesses at most

// The reason for the most recent refusal (per host thread, like cudaGetLastError).
std::string& last_error_text() {
  thread_local std::string text;
  return text;
}

cublasStatus_t refuse(cublasStatus_t status, std::string why) {
  last_error_text() = std::move(why);
  return status;
}

// Live handles from cublasLtCreate.
struct Handles {
  std::mutex mutex;
  std::unordered_set<const void*> live;
};
Handles& handles() {
  static Handles* h = new Handles;  // never destroyed: calls may come from static destructors
  return *h;
}
struct Context {
  uint32_t magic = 0x4C74436Fu;
};

bool live_handle(cublasLtHandle_t handle) {
  Handles& h = handles();
  std::lock_guard<std::mutex> lock(h.mutex);
  return handle && h.live.count(handle) != 0;
}

// The descriptors live inside NVIDIA's semi-opaque structs, so that both the Create and the Init
// (caller-allocated) forms work.
struct Layout {
  uint32_t magic;
  int32_t type;
  int32_t order;
  int32_t batch_count;
  uint64_t rows, cols;
  int64_t ld;
  int64_t batch_stride;
  int64_t plane_offset;
  uint32_t batch_mode;
};
static_assert(sizeof(Layout) <= sizeof(cublasLtMatrixLayoutOpaque_t));

struct Desc {
  uint32_t magic;
  int32_t compute_type, scale_type, pointer_mode, trans_a, trans_b, trans_c, fill_mode;
  uint32_t epilogue;
  int32_t aux_type, bias_type, sm_count_target;
  int32_t scale_mode_a, scale_mode_b, scale_mode_c, scale_mode_d, scale_mode_aux, scale_mode_d_out;
  int8_t fast_accum;
  const void* bias;
  int64_t bias_batch_stride;
  void* aux;
  int64_t aux_ld, aux_batch_stride, alpha_vector_batch_stride;
  const void *scale_a, *scale_b, *scale_c, *scale_d;
  void *amax_d, *aux_scale, *aux_amax, *d_out_scale, *emulation;
};
static_assert(sizeof(Desc) <= sizeof(cublasLtMatmulDescOpaque_t));

struct Preference {
  uint32_t magic;
  uint32_t search_mode, reduction_mask;
  uint32_t align_a, align_b, align_c, align_d;
  float max_waves;
  uint64_t max_workspace, impl_mask;
};
static_assert(sizeof(Preference) <= sizeof(cublasLtMatmulPreferenceOpaque_t));

// What the heuristic chose: the operation it is valid for (a fingerprint of types, transposes and
// epilogue) and the alignment it needs from each pointer.
struct Algo {
  uint32_t magic;
  uint32_t align_a, align_b, align_c, align_d, align_bias, align_aux;
  uint64_t fingerprint;
};
static_assert(sizeof(Algo) <= sizeof(cublasLtMatmulAlgo_t));

Layout* as_layout(cublasLtMatrixLayout_t p) {
  auto* l = reinterpret_cast<Layout*>(p);
  return l && l->magic == kLayoutMagic ? l : nullptr;
}
Desc* as_desc(cublasLtMatmulDesc_t p) {
  auto* d = reinterpret_cast<Desc*>(p);
  return d && d->magic == kDescMagic ? d : nullptr;
}
Preference* as_pref(cublasLtMatmulPreference_t p) {
  auto* q = reinterpret_cast<Preference*>(p);
  return q && q->magic == kPrefMagic ? q : nullptr;
}

// ------------------------------------------------------------------------------------------------
// Attribute access: each attribute has one storage size, and a buffer of another size is refused
// (cublasLt.h: "sizeInBytes doesn't match size of internal storage for selected attribute").
struct Field {
  void* storage = nullptr;
  size_t bytes = 0;
};

cublasStatus_t set_field(const Field& f, const char* what, const void* buf, size_t size) {
  if (!f.storage) return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string("unknown attribute of ") + what);
  if (!buf) return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string("null buffer for an attribute of ") + what);
  if (size != f.bytes)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string("attribute of ") + what + " has " + std::to_string(f.bytes) +
                                                   " bytes, not " + std::to_string(size));
  std::memcpy(f.storage, buf, size);
  return CUBLAS_STATUS_SUCCESS;
}

// sizeInBytes == 0 asks for the size only (sizeWritten then required).
cublasStatus_t get_field(const Field& f, const char* what, void* buf, size_t size, size_t* written) {
  if (!f.storage) return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string("unknown attribute of ") + what);
  if (size == 0) {
    if (!written) return refuse(CUBLAS_STATUS_INVALID_VALUE, "sizeInBytes is 0 and sizeWritten is null");
    *written = f.bytes;
    return CUBLAS_STATUS_SUCCESS;
  }
  if (!buf || size != f.bytes)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string("attribute of ") + what + " has " + std::to_string(f.bytes) +
                                                   " bytes, not " + std::to_string(size));
  std::memcpy(buf, f.storage, size);
  if (written) *written = size;
  return CUBLAS_STATUS_SUCCESS;
}

template <class T>
Field field(T& member) {
  return Field{&member, sizeof(T)};
}

Field layout_field(Layout& l, cublasLtMatrixLayoutAttribute_t attr) {
  switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE:
      return Field{&l.type, sizeof(uint32_t)};
    case CUBLASLT_MATRIX_LAYOUT_ORDER:
      return field(l.order);
    case CUBLASLT_MATRIX_LAYOUT_ROWS:
      return field(l.rows);
    case CUBLASLT_MATRIX_LAYOUT_COLS:
      return field(l.cols);
    case CUBLASLT_MATRIX_LAYOUT_LD:
      return field(l.ld);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT:
      return field(l.batch_count);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET:
      return field(l.batch_stride);
    case CUBLASLT_MATRIX_LAYOUT_PLANE_OFFSET:
      return field(l.plane_offset);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_MODE:
      return field(l.batch_mode);
  }
  return {};
}

Field desc_field(Desc& d, cublasLtMatmulDescAttributes_t attr) {
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE:
      return field(d.compute_type);
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE:
      return field(d.scale_type);
    case CUBLASLT_MATMUL_DESC_POINTER_MODE:
      return field(d.pointer_mode);
    case CUBLASLT_MATMUL_DESC_TRANSA:
      return field(d.trans_a);
    case CUBLASLT_MATMUL_DESC_TRANSB:
      return field(d.trans_b);
    case CUBLASLT_MATMUL_DESC_TRANSC:
      return field(d.trans_c);
    case CUBLASLT_MATMUL_DESC_FILL_MODE:
      return field(d.fill_mode);
    case CUBLASLT_MATMUL_DESC_EPILOGUE:
      return field(d.epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
      return field(d.bias);
    case CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE:
      return field(d.bias_batch_stride);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER:
      return field(d.aux);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD:
      return field(d.aux_ld);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_BATCH_STRIDE:
      return field(d.aux_batch_stride);
    case CUBLASLT_MATMUL_DESC_ALPHA_VECTOR_BATCH_STRIDE:
      return field(d.alpha_vector_batch_stride);
    case CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET:
      return field(d.sm_count_target);
    case CUBLASLT_MATMUL_DESC_A_SCALE_POINTER:
      return field(d.scale_a);
    case CUBLASLT_MATMUL_DESC_B_SCALE_POINTER:
      return field(d.scale_b);
    case CUBLASLT_MATMUL_DESC_C_SCALE_POINTER:
      return field(d.scale_c);
    case CUBLASLT_MATMUL_DESC_D_SCALE_POINTER:
      return field(d.scale_d);
    case CUBLASLT_MATMUL_DESC_AMAX_D_POINTER:
      return field(d.amax_d);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE:
      return field(d.aux_type);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_POINTER:
      return field(d.aux_scale);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_AMAX_POINTER:
      return field(d.aux_amax);
    case CUBLASLT_MATMUL_DESC_FAST_ACCUM:
      return field(d.fast_accum);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
      return field(d.bias_type);
    case CUBLASLT_MATMUL_DESC_A_SCALE_MODE:
      return field(d.scale_mode_a);
    case CUBLASLT_MATMUL_DESC_B_SCALE_MODE:
      return field(d.scale_mode_b);
    case CUBLASLT_MATMUL_DESC_C_SCALE_MODE:
      return field(d.scale_mode_c);
    case CUBLASLT_MATMUL_DESC_D_SCALE_MODE:
      return field(d.scale_mode_d);
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_SCALE_MODE:
      return field(d.scale_mode_aux);
    case CUBLASLT_MATMUL_DESC_D_OUT_SCALE_POINTER:
      return field(d.d_out_scale);
    case CUBLASLT_MATMUL_DESC_D_OUT_SCALE_MODE:
      return field(d.scale_mode_d_out);
    case CUBLASLT_MATMUL_DESC_EMULATION_DESCRIPTOR:
      return field(d.emulation);
  }
  return {};
}

Field pref_field(Preference& p, cublasLtMatmulPreferenceAttributes_t attr) {
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE:
      return field(p.search_mode);
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
      return field(p.max_workspace);
    case CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK:
      return field(p.reduction_mask);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
      return field(p.align_a);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
      return field(p.align_b);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
      return field(p.align_c);
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      return field(p.align_d);
    case CUBLASLT_MATMUL_PREF_MAX_WAVES_COUNT:
      return field(p.max_waves);
    case CUBLASLT_MATMUL_PREF_IMPL_MASK:
      return field(p.impl_mask);
  }
  return {};
}

void init_layout(Layout* l, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld) {
  *l = Layout{};
  l->magic = kLayoutMagic;
  l->type = static_cast<int32_t>(type);
  l->order = CUBLASLT_ORDER_COL;
  l->batch_count = 1;
  l->rows = rows;
  l->cols = cols;
  l->ld = ld;
}

void init_desc(Desc* d, cublasComputeType_t compute, cudaDataType_t scale) {
  *d = Desc{};
  d->magic = kDescMagic;
  d->compute_type = static_cast<int32_t>(compute);
  d->scale_type = static_cast<int32_t>(scale);
  d->pointer_mode = CUBLASLT_POINTER_MODE_HOST;
  d->trans_a = d->trans_b = d->trans_c = CUBLAS_OP_N;
  d->fill_mode = CUBLAS_FILL_MODE_FULL;
  d->epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  d->aux_type = d->bias_type = kDefaultType;
}

void init_pref(Preference* p) {
  *p = Preference{};
  p->magic = kPrefMagic;
  p->search_mode = CUBLASLT_SEARCH_BEST_FIT;
  p->reduction_mask = CUBLASLT_REDUCTION_SCHEME_MASK;
  p->align_a = p->align_b = p->align_c = p->align_d = kDefaultAlignment;
  p->impl_mask = ~uint64_t{0};
}

// ------------------------------------------------------------------------------------------------
// The operation, resolved and checked.

size_t element_bytes(int32_t type) {
  switch (type) {
    case CUDA_R_64F:
      return 8;
    case CUDA_R_32F:
      return 4;
    case CUDA_R_16F:
    case CUDA_R_16BF:
      return 2;
    default:
      return 0;
  }
}

const char* type_name(int32_t type) {
  switch (type) {
    case CUDA_R_64F:
      return "CUDA_R_64F";
    case CUDA_R_32F:
      return "CUDA_R_32F";
    case CUDA_R_16F:
      return "CUDA_R_16F";
    case CUDA_R_16BF:
      return "CUDA_R_16BF";
    default:
      return "an unimplemented data type";
  }
}

// One matrix as column-major storage: element (r, c) of the stored matrix at r * row_step +
// c * col_step (a ROW-order layout is the column-major transpose).
struct Matrix {
  const char* name;
  int32_t type;
  int64_t rows, cols;  // as declared in the layout
  int64_t ld, batch_stride;
  bool row_order;
  int64_t row_step() const { return row_order ? ld : 1; }
  int64_t col_step() const { return row_order ? 1 : ld; }
  // Elements from the first to one past the last one the batch touches.
  int64_t span(int64_t batch) const {
    return (batch - 1) * batch_stride + (row_order ? (rows - 1) * ld + cols : (cols - 1) * ld + rows);
  }
};

struct Problem {
  Matrix a, b, c, d;
  int64_t m = 0, n = 0, k = 0, batch = 1;
  bool trans_a = false, trans_b = false;
  bool f64 = false;  // CUBLAS_COMPUTE_64F (else f32)
  bool device_scalars = false;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  bool bias = false, gelu = false, aux = false;
  // Backward epilogues: D *= gelu'(aux); the bias gradient's source and length.
  enum class BiasGrad { none, from_d, from_a, from_b };
  bool dgelu = false;
  BiasGrad bias_grad = BiasGrad::none;
  int64_t bias_length = 0;  // m or n: the bias (input or gradient) vector's elements per batch
  int32_t bias_type = 0, aux_type = 0;
  int64_t bias_batch_stride = 0, aux_ld = 0, aux_batch_stride = 0;
  uint64_t fingerprint = 0;
};

bool known_compute_type(int32_t t) {
  switch (t) {
    case CUBLAS_COMPUTE_16F:
    case CUBLAS_COMPUTE_16F_PEDANTIC:
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
    case CUBLAS_COMPUTE_32F_FAST_16F:
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32:
    case CUBLAS_COMPUTE_32F_EMULATED_16BFX9:
    case CUBLAS_COMPUTE_64F:
    case CUBLAS_COMPUTE_64F_PEDANTIC:
    case CUBLAS_COMPUTE_64F_EMULATED_FIXEDPOINT:
    case CUBLAS_COMPUTE_32I:
    case CUBLAS_COMPUTE_32I_PEDANTIC:
      return true;
    default:
      return false;
  }
}

bool known_epilogue(uint32_t e) {
  switch (e) {
    case CUBLASLT_EPILOGUE_DEFAULT:
    case CUBLASLT_EPILOGUE_RELU:
    case CUBLASLT_EPILOGUE_RELU_AUX:
    case CUBLASLT_EPILOGUE_BIAS:
    case CUBLASLT_EPILOGUE_RELU_BIAS:
    case CUBLASLT_EPILOGUE_RELU_AUX_BIAS:
    case CUBLASLT_EPILOGUE_DRELU:
    case CUBLASLT_EPILOGUE_DRELU_BGRAD:
    case CUBLASLT_EPILOGUE_GELU:
    case CUBLASLT_EPILOGUE_GELU_AUX:
    case CUBLASLT_EPILOGUE_GELU_BIAS:
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
    case CUBLASLT_EPILOGUE_DGELU:
    case CUBLASLT_EPILOGUE_DGELU_BGRAD:
    case CUBLASLT_EPILOGUE_BGRADA:
    case CUBLASLT_EPILOGUE_BGRADB:
      return true;
    default:
      return false;
  }
}

bool parse_op(int32_t op, bool* transposed) {
  if (op == CUBLAS_OP_N) {
    *transposed = false;
    return true;
  }
  if (op == CUBLAS_OP_T || op == CUBLAS_OP_C) {  // C == T for real types
    *transposed = true;
    return true;
  }
  return false;
}

std::string dims(int64_t r, int64_t c) { return std::to_string(r) + " x " + std::to_string(c); }

cublasStatus_t check_layout(const Layout* l, const char* name, Matrix* out) {
  if (!l) return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string(name) + "desc is not a matrix layout descriptor");
  const std::string who = std::string("matrix ") + name;
  if (element_bytes(l->type) == 0)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                  who + ": data type " + std::to_string(l->type) + " is not implemented by the emulated cuBLASLt");
  if (l->order != CUBLASLT_ORDER_COL && l->order != CUBLASLT_ORDER_ROW)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                  who + ": only CUBLASLT_ORDER_COL and CUBLASLT_ORDER_ROW are implemented");
  if (l->batch_mode != CUBLASLT_BATCH_MODE_STRIDED)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, who + ": only strided batches are implemented");
  if (l->plane_offset != 0)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, who + ": a planar-complex layout needs a complex data type");
  if (l->rows == 0 || l->cols == 0)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, who + " is empty (" + dims(l->rows, l->cols) + ")");
  if (l->rows > INT32_MAX || l->cols > INT32_MAX)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, who + ": dimensions beyond int32_t (" +
                                                   dims(static_cast<int64_t>(l->rows), static_cast<int64_t>(l->cols)) +
                                                   ")");
  const bool row_order = l->order == CUBLASLT_ORDER_ROW;
  const int64_t rows = static_cast<int64_t>(l->rows), cols = static_cast<int64_t>(l->cols);
  // cublasLt.h: ld must be non-negative and large enough that elements do not overlap.
  const int64_t needed = row_order ? cols : rows;
  if (l->ld < needed)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, who + ": leading dimension " + std::to_string(l->ld) + " < " +
                                                   std::to_string(needed) + " (" +
                                                   (row_order ? "columns of a ROW-order" : "rows of a COL-order") +
                                                   " " + dims(rows, cols) + " matrix)");
  if (l->batch_count < 1)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, who + ": batch count " + std::to_string(l->batch_count) + " < 1");
  if (l->batch_stride < 0)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, who + ": negative batch stride " + std::to_string(l->batch_stride));
  *out = Matrix{name, l->type, rows, cols, l->ld, l->batch_stride, row_order};
  return CUBLAS_STATUS_SUCCESS;
}

// Checks the operation (descriptor and the four layouts); pointers are checked by cublasLtMatmul.
cublasStatus_t resolve(const Desc* desc, cublasLtMatrixLayout_t a_desc, cublasLtMatrixLayout_t b_desc,
                       cublasLtMatrixLayout_t c_desc, cublasLtMatrixLayout_t d_desc, Problem* p) {
  if (!desc) return refuse(CUBLAS_STATUS_INVALID_VALUE, "computeDesc is not a matmul descriptor");
  if (!known_compute_type(desc->compute_type))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "unknown compute type " + std::to_string(desc->compute_type));
  const bool c32 = desc->compute_type == CUBLAS_COMPUTE_32F || desc->compute_type == CUBLAS_COMPUTE_32F_PEDANTIC;
  const bool c64 = desc->compute_type == CUBLAS_COMPUTE_64F || desc->compute_type == CUBLAS_COMPUTE_64F_PEDANTIC;
  if (!c32 && !c64)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "compute type " + std::to_string(desc->compute_type) +
                                                   " is not implemented by the emulated cuBLASLt (32F and 64F are)");
  if (desc->scale_type != (c64 ? CUDA_R_64F : CUDA_R_32F))
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, std::string("scale type ") + type_name(desc->scale_type) +
                                                   " with compute type " + (c64 ? "64F" : "32F"));
  if (desc->pointer_mode != CUBLASLT_POINTER_MODE_HOST && desc->pointer_mode != CUBLASLT_POINTER_MODE_DEVICE) {
    if (desc->pointer_mode >= CUBLASLT_POINTER_MODE_DEVICE_VECTOR &&
        desc->pointer_mode <= CUBLASLT_POINTER_MODE_ALPHA_DEVICE_VECTOR_BETA_HOST)
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "vector pointer modes are not implemented by the emulated cuBLASLt");
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "unknown pointer mode " + std::to_string(desc->pointer_mode));
  }
  if (!parse_op(desc->trans_a, &p->trans_a) || !parse_op(desc->trans_b, &p->trans_b))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "TRANSA/TRANSB must be CUBLAS_OP_N, CUBLAS_OP_T or CUBLAS_OP_C");
  if (desc->trans_c != CUBLAS_OP_N)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "TRANSC: only CUBLAS_OP_N is supported (cublasLt.h)");
  if (desc->fill_mode != CUBLAS_FILL_MODE_FULL)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "FILL_MODE: only CUBLAS_FILL_MODE_FULL is implemented");
  // Scaling factors and amax exist for FP8 data only: cublasLt.h says setting them for other
  // types makes cublasLtMatmul return CUBLAS_STATUS_INVALID_VALUE.
  if (desc->scale_a || desc->scale_b || desc->scale_c || desc->scale_d || desc->amax_d || desc->aux_scale ||
      desc->aux_amax || desc->d_out_scale)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "scale or amax pointers are set for a non-FP8 operation");
  if (desc->scale_mode_a || desc->scale_mode_b || desc->scale_mode_c || desc->scale_mode_d || desc->scale_mode_aux ||
      desc->scale_mode_d_out)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "block-scaling modes are not implemented by the emulated cuBLASLt");
  if (desc->emulation)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "an emulation descriptor is not implemented by the emulated cuBLASLt");
  if (!known_epilogue(desc->epilogue))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "unknown epilogue " + std::to_string(desc->epilogue));

  if (cublasStatus_t s = check_layout(as_layout(a_desc), "A", &p->a); s != CUBLAS_STATUS_SUCCESS) return s;
  if (cublasStatus_t s = check_layout(as_layout(b_desc), "B", &p->b); s != CUBLAS_STATUS_SUCCESS) return s;
  if (cublasStatus_t s = check_layout(as_layout(c_desc), "C", &p->c); s != CUBLAS_STATUS_SUCCESS) return s;
  if (cublasStatus_t s = check_layout(as_layout(d_desc), "D", &p->d); s != CUBLAS_STATUS_SUCCESS) return s;

  // D (m, n) = op(A) (m, k) . op(B) (k, n) + C (m, n)
  p->m = p->d.rows;
  p->n = p->d.cols;
  const int64_t a_rows = p->trans_a ? p->a.cols : p->a.rows, a_cols = p->trans_a ? p->a.rows : p->a.cols;
  const int64_t b_rows = p->trans_b ? p->b.cols : p->b.rows, b_cols = p->trans_b ? p->b.rows : p->b.cols;
  p->k = a_cols;
  if (a_rows != p->m || b_cols != p->n || b_rows != p->k || p->c.rows != p->m || p->c.cols != p->n)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "shapes do not agree: op(A) " + dims(a_rows, a_cols) + ", op(B) " +
                                                   dims(b_rows, b_cols) + ", C " + dims(p->c.rows, p->c.cols) + ", D " +
                                                   dims(p->m, p->n));
  const auto* la = as_layout(a_desc);
  const int32_t batch = la->batch_count;
  for (cublasLtMatrixLayout_t l : {b_desc, c_desc, d_desc})
    if (as_layout(l)->batch_count != batch)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, "batch counts of A, B, C and D differ");
  p->batch = batch;
  // The D matrices of a batch are written concurrently: they must not overlap.
  const int64_t d_matrix = p->d.row_order ? p->d.ld * p->d.rows : p->d.ld * p->d.cols;
  if (batch > 1 && p->d.batch_stride < d_matrix)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "matrix D: batch stride " + std::to_string(p->d.batch_stride) +
                                                   " makes the " + std::to_string(batch) +
                                                   " output matrices overlap (each spans " + std::to_string(d_matrix) +
                                                   " elements)");

  // Data types, as in the cuBLASLt guide's table for CUBLAS_COMPUTE_32F / 64F.
  if (p->a.type != p->b.type)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                  std::string("A is ") + type_name(p->a.type) + " but B is " + type_name(p->b.type));
  if (p->c.type != p->d.type)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                  std::string("C is ") + type_name(p->c.type) + " but D is " + type_name(p->d.type));
  const bool types_ok = c64 ? p->a.type == CUDA_R_64F && p->d.type == CUDA_R_64F
                            : (p->a.type == CUDA_R_32F && p->d.type == CUDA_R_32F) ||
                                  ((p->a.type == CUDA_R_16F || p->a.type == CUDA_R_16BF) &&
                                   (p->d.type == p->a.type || p->d.type == CUDA_R_32F));
  if (!types_ok)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, std::string("A/B ") + type_name(p->a.type) + " with D " +
                                                   type_name(p->d.type) + " and compute type " + (c64 ? "64F" : "32F"));
  p->f64 = c64;
  p->device_scalars = desc->pointer_mode == CUBLASLT_POINTER_MODE_DEVICE;

  // Epilogue.
  p->epilogue = desc->epilogue;
  switch (desc->epilogue) {
    case CUBLASLT_EPILOGUE_DEFAULT:
      break;
    case CUBLASLT_EPILOGUE_BIAS:
      p->bias = true;
      break;
    case CUBLASLT_EPILOGUE_GELU:
      p->gelu = true;
      break;
    case CUBLASLT_EPILOGUE_GELU_BIAS:
      p->gelu = p->bias = true;
      break;
    case CUBLASLT_EPILOGUE_GELU_AUX:
      p->gelu = p->aux = true;
      break;
    case CUBLASLT_EPILOGUE_GELU_AUX_BIAS:
      p->gelu = p->aux = p->bias = true;
      break;
    case CUBLASLT_EPILOGUE_DGELU:
      p->dgelu = p->aux = true;
      break;
    case CUBLASLT_EPILOGUE_DGELU_BGRAD:
      p->dgelu = p->aux = true;
      p->bias_grad = Problem::BiasGrad::from_d;
      break;
    case CUBLASLT_EPILOGUE_BGRADA:
      p->bias_grad = Problem::BiasGrad::from_a;
      break;
    case CUBLASLT_EPILOGUE_BGRADB:
      p->bias_grad = Problem::BiasGrad::from_b;
      break;
    default:  // the ReLU family (RELU, RELU_AUX, RELU_BIAS, RELU_AUX_BIAS, DRELU, DRELU_BGRAD)
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "epilogue " + std::to_string(desc->epilogue) +
                                                     " is not implemented by the emulated cuBLASLt (DEFAULT, BIAS, "
                                                     "GELU, GELU_BIAS, GELU_AUX, GELU_AUX_BIAS, DGELU, DGELU_BGRAD, "
                                                     "BGRADA and BGRADB are)");
  }
  // cublasLt.h: the bias vector has D's rows; BGRADB's gradient has D's columns.
  p->bias_length = p->bias_grad == Problem::BiasGrad::from_b ? p->n : p->m;
  if (desc->epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    if (c64) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "epilogues with CUBLAS_COMPUTE_64F");
    if (p->d.row_order) return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "epilogues need a COL-order D");
  }
  if (p->bias_grad != Problem::BiasGrad::none) {
    // cublasLt.h: "Bias gradient vector elements are the same type as the output elements".
    p->bias_type = desc->bias_type == kDefaultType ? p->d.type : desc->bias_type;
    if (p->bias_type != p->d.type)
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED, std::string("bias gradient data type ") + type_name(p->bias_type) +
                                                     " differs from D's " + type_name(p->d.type));
    if (desc->bias_batch_stride < 0) return refuse(CUBLAS_STATUS_INVALID_VALUE, "negative bias batch stride");
    // Every batch entry writes its own gradient vector: they must not overlap.
    if (batch > 1 && desc->bias_batch_stride < p->bias_length)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, "BIAS_BATCH_STRIDE " + std::to_string(desc->bias_batch_stride) +
                                                     " makes the " + std::to_string(batch) +
                                                     " bias gradients overlap (each has " +
                                                     std::to_string(p->bias_length) + " elements)");
    p->bias_batch_stride = desc->bias_batch_stride;
  }
  if (p->bias) {
    p->bias_type = desc->bias_type == kDefaultType ? p->d.type : desc->bias_type;
    if (p->bias_type != p->d.type && p->bias_type != CUDA_R_32F)
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                    std::string("bias data type ") + type_name(p->bias_type) + " with D " + type_name(p->d.type));
    if (desc->bias_batch_stride < 0) return refuse(CUBLAS_STATUS_INVALID_VALUE, "negative bias batch stride");
    p->bias_batch_stride = desc->bias_batch_stride;
  }
  if (p->aux) {
    p->aux_type = desc->aux_type == kDefaultType ? p->d.type : desc->aux_type;
    if (p->aux_type != p->d.type)
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                    std::string("aux data type ") + type_name(p->aux_type) + " with D " + type_name(p->d.type));
    // cublasLt.h: the GELU input's leading dimension "must be divisible by 8 and be no less than
    // the number of rows in the output matrix"; its batch stride must be divisible by 8.
    if (desc->aux_ld % 8 != 0 || desc->aux_ld < p->m)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, "EPILOGUE_AUX_LD " + std::to_string(desc->aux_ld) +
                                                     " must be divisible by 8 and >= the " + std::to_string(p->m) +
                                                     " rows of D");
    if (desc->aux_batch_stride % 8 != 0 || desc->aux_batch_stride < 0)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, "EPILOGUE_AUX_BATCH_STRIDE " + std::to_string(desc->aux_batch_stride) +
                                                     " must be a non-negative multiple of 8");
    // The forward epilogues write the aux matrices (DGELU only reads them): they must not overlap.
    if (!p->dgelu && batch > 1 && desc->aux_batch_stride < desc->aux_ld * p->n)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, "EPILOGUE_AUX_BATCH_STRIDE makes the aux matrices overlap");
    p->aux_ld = desc->aux_ld;
    p->aux_batch_stride = desc->aux_batch_stride;
  }
  // What an algorithm is specialised for.
  uint64_t f = 1469598103934665603ull;
  for (int64_t v : {int64_t(desc->compute_type), int64_t(p->a.type), int64_t(p->d.type), int64_t(p->trans_a),
                    int64_t(p->trans_b), int64_t(desc->epilogue), int64_t(p->a.row_order), int64_t(p->b.row_order),
                    int64_t(p->c.row_order), int64_t(p->d.row_order), int64_t(p->bias_type), int64_t(p->aux_type)})
    f = (f ^ static_cast<uint64_t>(v)) * 1099511628211ull;
  p->fingerprint = f;
  return CUBLAS_STATUS_SUCCESS;
}

uint32_t pointer_alignment(const void* pointer) {
  const uintptr_t bits = reinterpret_cast<uintptr_t>(pointer) | kDefaultAlignment;
  return static_cast<uint32_t>(bits & (~bits + 1));
}

// The alignment the shim's algorithm asks for when the caller promises `promised` bytes: the
// promise capped at 16 (its widest access), and never less than one element.
uint32_t required_alignment(uint32_t promised, int32_t type) {
  const uint32_t element = static_cast<uint32_t>(element_bytes(type));
  uint32_t pow2 = 1;
  while (pow2 * 2 <= promised && pow2 < kWidestAccess) pow2 *= 2;
  return std::max(pow2, element);
}

// ------------------------------------------------------------------------------------------------
// Arithmetic

float to_float(const void* base, int32_t type, int64_t index) {
  switch (type) {
    case CUDA_R_32F:
      return static_cast<const float*>(base)[index];
    case CUDA_R_16F:
      return __half2float(static_cast<const __half*>(base)[index]);
    case CUDA_R_16BF:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[index]);
    default:
      return static_cast<float>(static_cast<const double*>(base)[index]);
  }
}

template <class C>
C load(const void* base, int32_t type, int64_t index) {
  if (type == CUDA_R_64F) return static_cast<C>(static_cast<const double*>(base)[index]);
  return static_cast<C>(to_float(base, type, index));
}

// One rounding from the compute type to the storage type.
template <class C>
void store(void* base, int32_t type, int64_t index, C value) {
  switch (type) {
    case CUDA_R_64F:
      static_cast<double*>(base)[index] = static_cast<double>(value);
      break;
    case CUDA_R_32F:
      static_cast<float*>(base)[index] = static_cast<float>(value);
      break;
    case CUDA_R_16F:
      static_cast<__half*>(base)[index] = __float2half_rn(static_cast<float>(value));
      break;
    default:
      static_cast<__nv_bfloat16*>(base)[index] = __float2bfloat16_rn(static_cast<float>(value));
      break;
  }
}

// cuBLASLt's GELU epilogue: the tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
float gelu_tanh(float x) {
  const float sqrt_2_over_pi = 0.79788456080286535588f, cubic = 0.044715f;
  const float inner = sqrt_2_over_pi * (x + cubic * x * x * x);
  return 0.5f * x * (1.0f + tanhf(inner));
}

// Its derivative, for DGELU: 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2).
float gelu_tanh_derivative(float x) {
  const float sqrt_2_over_pi = 0.79788456080286535588f, cubic = 0.044715f;
  const float t = tanhf(sqrt_2_over_pi * (x + cubic * x * x * x));
  const float sech2 = 1.0f - t * t;
  // For large |x| sech2 is exactly 0 while x^2 may overflow: skip the term rather than form 0 * inf.
  const float slope = sech2 == 0.0f ? 0.0f : 0.5f * x * sech2 * sqrt_2_over_pi * (1.0f + 3.0f * cubic * x * x);
  return 0.5f * (1.0f + t) + slope;
}

const char* byte_at(const void* base, int64_t elements, int32_t type) {
  return static_cast<const char*>(base) + elements * static_cast<int64_t>(element_bytes(type));
}

// Everything one cublasLtMatmul call needs to run later (a captured graph replays it).
struct Call {
  Problem p;
  double alpha = 1.0, beta = 0.0;                              // host pointer mode: read at the call
  const void *alpha_device = nullptr, *beta_device = nullptr;  // device pointer mode: read at execution
  const void *A = nullptr, *B = nullptr, *C = nullptr, *bias = nullptr;
  void *D = nullptr, *aux = nullptr;
  void* bias_grad = nullptr;  // the backward epilogues' output (the descriptor's BIAS_POINTER)
};

// op(X) of matrix `x` (one batch entry at `base`) as a dense column-major compute-type buffer
// (m or k rows); returns the pointer and leading dimension to hand to BLAS, and whether it is
// transposed for BLAS. Matrices already in the compute type and column order are used in place.
template <class Cmp>
const Cmp* blas_operand(const Matrix& x, const void* base, bool transposed, std::vector<Cmp>& scratch, int64_t* ld,
                        bool* blas_trans) {
  const bool same_type =
      (std::is_same_v<Cmp, double> && x.type == CUDA_R_64F) || (std::is_same_v<Cmp, float> && x.type == CUDA_R_32F);
  if (same_type) {
    // A ROW-order (r, c) matrix with leading dimension ld is the COL-order (c, r) one transposed.
    *ld = x.ld;
    *blas_trans = x.row_order ? !transposed : transposed;
    return static_cast<const Cmp*>(base);
  }
  scratch.resize(static_cast<size_t>(x.rows * x.cols));
  for (int64_t c = 0; c < x.cols; ++c)
    for (int64_t r = 0; r < x.rows; ++r)
      scratch[static_cast<size_t>(c * x.rows + r)] = load<Cmp>(base, x.type, r * x.row_step() + c * x.col_step());
  *ld = x.rows;
  *blas_trans = transposed;
  return scratch.data();
}

void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const float* a, int64_t lda,
               const float* b, int64_t ldb, float* c) {
  cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), static_cast<float>(alpha), a, static_cast<int>(lda), b,
              static_cast<int>(ldb), 0.0f, c, static_cast<int>(m));
}
void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a, int64_t lda,
               const double* b, int64_t ldb, double* c) {
  cblas_dgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(m),
              static_cast<int>(n), static_cast<int>(k), alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), 0.0,
              c, static_cast<int>(m));
}

template <class Cmp>
void run(const Call& call) {
  const Problem& p = call.p;
  double alpha = call.alpha, beta = call.beta;
  if (p.device_scalars) {
    alpha = static_cast<double>(*static_cast<const Cmp*>(call.alpha_device));
    beta = static_cast<double>(*static_cast<const Cmp*>(call.beta_device));
  }
  std::vector<Cmp> a_scratch, b_scratch, product(static_cast<size_t>(p.m * p.n));
  for (int64_t batch = 0; batch < p.batch; ++batch) {
    const void* a = byte_at(call.A, batch * p.a.batch_stride, p.a.type);
    const void* b = byte_at(call.B, batch * p.b.batch_stride, p.b.type);
    int64_t lda = 0, ldb = 0;
    bool ta = false, tb = false;
    const Cmp* a_op = blas_operand<Cmp>(p.a, a, p.trans_a, a_scratch, &lda, &ta);
    const Cmp* b_op = blas_operand<Cmp>(p.b, b, p.trans_b, b_scratch, &ldb, &tb);
    blas_gemm(ta, tb, p.m, p.n, p.k, alpha, a_op, lda, b_op, ldb, product.data());

    const void* c = beta != 0.0 ? byte_at(call.C, batch * p.c.batch_stride, p.c.type) : nullptr;
    void* d = const_cast<char*>(byte_at(call.D, batch * p.d.batch_stride, p.d.type));
    const void* bias = p.bias ? byte_at(call.bias, batch * p.bias_batch_stride, p.bias_type) : nullptr;
    void* aux = p.aux ? const_cast<char*>(byte_at(call.aux, batch * p.aux_batch_stride, p.aux_type)) : nullptr;
    // Bias gradient: sums in the compute type, one rounding to D's type at the end.
    std::vector<Cmp> bias_grad(p.bias_grad == Problem::BiasGrad::none ? 0 : static_cast<size_t>(p.bias_length));
    for (int64_t j = 0; j < p.n; ++j)
      for (int64_t i = 0; i < p.m; ++i) {
        Cmp t = product[static_cast<size_t>(j * p.m + i)];
        // beta == 0 does not read C (NaN in C stays out), as in BLAS.
        if (c) t += static_cast<Cmp>(beta) * load<Cmp>(c, p.c.type, i * p.c.row_step() + j * p.c.col_step());
        if (p.dgelu) {  // aux holds the forward's GELU input
          t *= static_cast<Cmp>(gelu_tanh_derivative(static_cast<float>(load<Cmp>(aux, p.aux_type, j * p.aux_ld + i))));
        } else {
          if (bias) t += load<Cmp>(bias, p.bias_type, i);
          if (aux) store<Cmp>(aux, p.aux_type, j * p.aux_ld + i, t);
          if (p.gelu) t = static_cast<Cmp>(gelu_tanh(static_cast<float>(t)));
        }
        if (p.bias_grad == Problem::BiasGrad::from_d) bias_grad[static_cast<size_t>(i)] += t;
        store<Cmp>(d, p.d.type, i * p.d.row_step() + j * p.d.col_step(), t);
      }
    // BGRADA: sums of op(A) (m, k) over k; BGRADB: sums of op(B) (k, n) over k, as stored.
    if (p.bias_grad == Problem::BiasGrad::from_a)
      for (int64_t i = 0; i < p.m; ++i)
        for (int64_t q = 0; q < p.k; ++q)
          bias_grad[static_cast<size_t>(i)] +=
              load<Cmp>(a, p.a.type,
                        p.trans_a ? q * p.a.row_step() + i * p.a.col_step() : i * p.a.row_step() + q * p.a.col_step());
    if (p.bias_grad == Problem::BiasGrad::from_b)
      for (int64_t j = 0; j < p.n; ++j)
        for (int64_t q = 0; q < p.k; ++q)
          bias_grad[static_cast<size_t>(j)] +=
              load<Cmp>(b, p.b.type,
                        p.trans_b ? j * p.b.row_step() + q * p.b.col_step() : q * p.b.row_step() + j * p.b.col_step());
    if (!bias_grad.empty()) {
      void* out = const_cast<char*>(byte_at(call.bias_grad, batch * p.bias_batch_stride, p.bias_type));
      for (int64_t e = 0; e < p.bias_length; ++e) store<Cmp>(out, p.bias_type, e, bias_grad[static_cast<size_t>(e)]);
    }
  }
}

cublasStatus_t heuristic(const Problem& p, const Desc& desc, const Preference& pref, Algo* algo) {
  if (pref.search_mode != CUBLASLT_SEARCH_BEST_FIT)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "only CUBLASLT_SEARCH_BEST_FIT is implemented");
  // The one algorithm: FMA in the compute type, no reduction workspace.
  const uint64_t impl = CUBLASLT_NUMERICAL_IMPL_FLAGS_FMA | (p.f64 ? CUBLASLT_NUMERICAL_IMPL_FLAGS_ACCUMULATOR_64F
                                                                   : CUBLASLT_NUMERICAL_IMPL_FLAGS_ACCUMULATOR_32F);
  if ((pref.impl_mask & impl) != impl)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "IMPL_MASK excludes the emulated cuBLASLt's FMA algorithm");
  if ((pref.reduction_mask & CUBLASLT_REDUCTION_SCHEME_MASK) == 0)
    return refuse(CUBLAS_STATUS_NOT_SUPPORTED, "REDUCTION_SCHEME_MASK allows no reduction scheme");
  const struct {
    uint32_t promised;
    int32_t type;
    const char* name;
  } promises[] = {{pref.align_a, p.a.type, "A"},
                  {pref.align_b, p.b.type, "B"},
                  {pref.align_c, p.c.type, "C"},
                  {pref.align_d, p.d.type, "D"}};
  for (const auto& promise : promises)
    if (promise.promised < element_bytes(promise.type))
      return refuse(CUBLAS_STATUS_NOT_SUPPORTED, std::string("MIN_ALIGNMENT_") + promise.name + "_BYTES " +
                                                     std::to_string(promise.promised) + " is below one element");
  *algo = Algo{};
  algo->magic = kAlgoMagic;
  algo->align_a = required_alignment(pref.align_a, p.a.type);
  algo->align_b = required_alignment(pref.align_b, p.b.type);
  algo->align_c = required_alignment(pref.align_c, p.c.type);
  algo->align_d = required_alignment(pref.align_d, p.d.type);
  // The bias and aux pointers in the descriptor tell the heuristic how they are aligned.
  algo->align_bias = p.bias || p.bias_grad != Problem::BiasGrad::none
                         ? required_alignment(pointer_alignment(desc.bias), p.bias_type)
                         : 1;
  algo->align_aux = p.aux ? required_alignment(pointer_alignment(desc.aux), p.aux_type) : 1;
  algo->fingerprint = p.fingerprint;
  return CUBLAS_STATUS_SUCCESS;
}

bool aligned(const void* pointer, uint32_t alignment) { return reinterpret_cast<uintptr_t>(pointer) % alignment == 0; }

}  // namespace
}  // namespace emu::detail

namespace emu {
std::string cublaslt_last_error() { return detail::last_error_text(); }
}  // namespace emu

using emu::detail::refuse;

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  if (!handle) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtCreate: null handle pointer");
  auto* context = new emu::detail::Context;
  *handle = reinterpret_cast<cublasLtHandle_t>(context);
  emu::detail::Handles& h = emu::detail::handles();
  std::lock_guard<std::mutex> lock(h.mutex);
  h.live.insert(context);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  emu::detail::Handles& h = emu::detail::handles();
  std::lock_guard<std::mutex> lock(h.mutex);
  if (!handle || !h.live.erase(handle))
    return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasLtDestroy: not a live cuBLASLt handle");
  delete reinterpret_cast<emu::detail::Context*>(handle);
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasLtGetStatusName(cublasStatus_t status) { return coco::cublas_status_name(status); }

const char* cublasLtGetStatusString(cublasStatus_t status) { return cublasLtGetStatusName(status); }

size_t cublasLtGetVersion(void) { return CUBLAS_VERSION; }

// --- matrix layouts
cublasStatus_t cublasLtMatrixLayoutInit_internal(cublasLtMatrixLayout_t layout, size_t size, cudaDataType type,
                                                 uint64_t rows, uint64_t cols, int64_t ld) {
  if (!layout) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatrixLayoutInit: null descriptor");
  if (size < sizeof(cublasLtMatrixLayoutOpaque_t))
    return refuse(CUBLAS_STATUS_ALLOC_FAILED, "cublasLtMatrixLayoutInit: pre-allocated space too small");
  emu::detail::init_layout(reinterpret_cast<emu::detail::Layout*>(layout), type, rows, cols, ld);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (!layout) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatrixLayoutCreate: null descriptor pointer");
  auto* storage = new (std::nothrow) cublasLtMatrixLayoutOpaque_t;
  if (!storage) return refuse(CUBLAS_STATUS_ALLOC_FAILED, "cublasLtMatrixLayoutCreate: out of memory");
  emu::detail::init_layout(reinterpret_cast<emu::detail::Layout*>(storage), type, rows, cols, ld);
  *layout = storage;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  if (layout) {
    reinterpret_cast<emu::detail::Layout*>(layout)->magic = 0;  // a later use is refused
    delete layout;
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr,
                                                const void* buf, size_t size) {
  emu::detail::Layout* l = emu::detail::as_layout(layout);
  if (!l) return refuse(CUBLAS_STATUS_INVALID_VALUE, "not a matrix layout descriptor");
  return emu::detail::set_field(emu::detail::layout_field(*l, attr), "a matrix layout", buf, size);
}

cublasStatus_t cublasLtMatrixLayoutGetAttribute(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr,
                                                void* buf, size_t size, size_t* written) {
  emu::detail::Layout* l = emu::detail::as_layout(layout);
  if (!l) return refuse(CUBLAS_STATUS_INVALID_VALUE, "not a matrix layout descriptor");
  return emu::detail::get_field(emu::detail::layout_field(*l, attr), "a matrix layout", buf, size, written);
}

// --- matmul descriptors
cublasStatus_t cublasLtMatmulDescInit_internal(cublasLtMatmulDesc_t desc, size_t size, cublasComputeType_t compute,
                                               cudaDataType_t scale) {
  if (!desc) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescInit: null descriptor");
  if (size < sizeof(cublasLtMatmulDescOpaque_t))
    return refuse(CUBLAS_STATUS_ALLOC_FAILED, "cublasLtMatmulDescInit: pre-allocated space too small");
  emu::detail::init_desc(reinterpret_cast<emu::detail::Desc*>(desc), compute, scale);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t compute, cudaDataType_t scale) {
  if (!desc) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescCreate: null descriptor pointer");
  auto* storage = new (std::nothrow) cublasLtMatmulDescOpaque_t;
  if (!storage) return refuse(CUBLAS_STATUS_ALLOC_FAILED, "cublasLtMatmulDescCreate: out of memory");
  emu::detail::init_desc(reinterpret_cast<emu::detail::Desc*>(storage), compute, scale);
  *desc = storage;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  if (desc) {
    reinterpret_cast<emu::detail::Desc*>(desc)->magic = 0;
    delete desc;
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  emu::detail::Desc* d = emu::detail::as_desc(desc);
  if (!d) return refuse(CUBLAS_STATUS_INVALID_VALUE, "not a matmul descriptor");
  return emu::detail::set_field(emu::detail::desc_field(*d, attr), "a matmul descriptor", buf, size);
}

cublasStatus_t cublasLtMatmulDescGetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, void* buf,
                                              size_t size, size_t* written) {
  emu::detail::Desc* d = emu::detail::as_desc(desc);
  if (!d) return refuse(CUBLAS_STATUS_INVALID_VALUE, "not a matmul descriptor");
  return emu::detail::get_field(emu::detail::desc_field(*d, attr), "a matmul descriptor", buf, size, written);
}

// --- preferences
cublasStatus_t cublasLtMatmulPreferenceInit_internal(cublasLtMatmulPreference_t pref, size_t size) {
  if (!pref) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceInit: null descriptor");
  if (size < sizeof(cublasLtMatmulPreferenceOpaque_t))
    return refuse(CUBLAS_STATUS_ALLOC_FAILED, "cublasLtMatmulPreferenceInit: pre-allocated space too small");
  emu::detail::init_pref(reinterpret_cast<emu::detail::Preference*>(pref));
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (!pref) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceCreate: null descriptor pointer");
  auto* storage = new (std::nothrow) cublasLtMatmulPreferenceOpaque_t;
  if (!storage) return refuse(CUBLAS_STATUS_ALLOC_FAILED, "cublasLtMatmulPreferenceCreate: out of memory");
  emu::detail::init_pref(reinterpret_cast<emu::detail::Preference*>(storage));
  *pref = storage;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  if (pref) {
    reinterpret_cast<emu::detail::Preference*>(pref)->magic = 0;
    delete pref;
  }
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  emu::detail::Preference* p = emu::detail::as_pref(pref);
  if (!p) return refuse(CUBLAS_STATUS_INVALID_VALUE, "not a matmul preference descriptor");
  return emu::detail::set_field(emu::detail::pref_field(*p, attr), "a matmul preference", buf, size);
}

cublasStatus_t cublasLtMatmulPreferenceGetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, void* buf, size_t size,
                                                    size_t* written) {
  emu::detail::Preference* p = emu::detail::as_pref(pref);
  if (!p) return refuse(CUBLAS_STATUS_INVALID_VALUE, "not a matmul preference descriptor");
  return emu::detail::get_field(emu::detail::pref_field(*p, attr), "a matmul preference", buf, size, written);
}

// --- heuristics and the multiplication
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t operation,
                                              cublasLtMatrixLayout_t a_desc, cublasLtMatrixLayout_t b_desc,
                                              cublasLtMatrixLayout_t c_desc, cublasLtMatrixLayout_t d_desc,
                                              cublasLtMatmulPreference_t preference, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  if (!emu::detail::live_handle(handle))
    return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasLtMatmulAlgoGetHeuristic: not a live cuBLASLt handle");
  if (requested <= 0)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "requestedAlgoCount " + std::to_string(requested) + " <= 0");
  if (!results || !returned) return refuse(CUBLAS_STATUS_INVALID_VALUE, "null heuristic result array or count");
  const emu::detail::Preference* pref = emu::detail::as_pref(preference);
  if (!pref) return refuse(CUBLAS_STATUS_INVALID_VALUE, "preference is not a matmul preference descriptor");
  *returned = 0;
  emu::detail::Problem problem;
  const emu::detail::Desc* desc = emu::detail::as_desc(operation);
  if (cublasStatus_t s = emu::detail::resolve(desc, a_desc, b_desc, c_desc, d_desc, &problem);
      s != CUBLAS_STATUS_SUCCESS)
    return s;
  emu::detail::Algo algo;
  if (cublasStatus_t s = emu::detail::heuristic(problem, *desc, *pref, &algo); s != CUBLAS_STATUS_SUCCESS) return s;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  std::memcpy(&results[0].algo, &algo, sizeof algo);
  results[0].workspaceSize = 0;
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t operation, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t a_desc, const void* B, cublasLtMatrixLayout_t b_desc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t c_desc, void* D,
                              cublasLtMatrixLayout_t d_desc, const cublasLtMatmulAlgo_t* algo_in, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
  using namespace emu::detail;
  if (!live_handle(handle)) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasLtMatmul: not a live cuBLASLt handle");
  Call call;
  Problem& p = call.p;
  const Desc* desc = as_desc(operation);
  if (cublasStatus_t s = resolve(desc, a_desc, b_desc, c_desc, d_desc, &p); s != CUBLAS_STATUS_SUCCESS) return s;
  if (!alpha || !beta) return refuse(CUBLAS_STATUS_INVALID_VALUE, "null alpha or beta");
  if (p.device_scalars) {
    call.alpha_device = alpha;
    call.beta_device = beta;
  } else {
    call.alpha = p.f64 ? *static_cast<const double*>(alpha) : *static_cast<const float*>(alpha);
    call.beta = p.f64 ? *static_cast<const double*>(beta) : *static_cast<const float*>(beta);
  }
  if (!A || !B || !D) return refuse(CUBLAS_STATUS_INVALID_VALUE, "null A, B or D pointer");
  if (!C && (p.device_scalars || call.beta != 0.0))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "null C pointer with a non-zero beta");
  // In place (C == D) needs C and D laid out alike.
  if (C == D && (p.c.ld != p.d.ld || p.c.row_order != p.d.row_order || p.c.batch_stride != p.d.batch_stride))
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "C == D (in place) but Cdesc and Ddesc differ");
  const bool bias_grad = p.bias_grad != Problem::BiasGrad::none;
  if ((p.bias || bias_grad) && !desc->bias)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "the epilogue needs BIAS_POINTER");
  if (p.aux && !desc->aux) return refuse(CUBLAS_STATUS_INVALID_VALUE, "the epilogue needs EPILOGUE_AUX_POINTER");
  if (workspace_bytes > 0 && !workspace)
    return refuse(CUBLAS_STATUS_INVALID_VALUE, "workspaceSizeInBytes > 0 with a null workspace");

  // The algorithm: the caller's (valid for this operation) or, with none, an implicit heuristic
  // query with default preferences (cublasLt.h).
  Algo algo;
  if (algo_in) {
    std::memcpy(&algo, algo_in, sizeof algo);
    if (algo.magic != kAlgoMagic)
      return refuse(CUBLAS_STATUS_INVALID_VALUE, "algo was not produced by cublasLtMatmulAlgoGetHeuristic");
    if (algo.fingerprint != p.fingerprint)
      return refuse(CUBLAS_STATUS_INVALID_VALUE,
                    "algo was chosen for another operation (types, transposes, orders or epilogue differ)");
  } else {
    Preference defaults;
    init_pref(&defaults);
    if (cublasStatus_t s = heuristic(p, *desc, defaults, &algo); s != CUBLAS_STATUS_SUCCESS) return s;
  }
  const struct {
    const void* pointer;
    uint32_t alignment;
    const char* name;
  } pointers[] = {{A, algo.align_a, "A"},
                  {B, algo.align_b, "B"},
                  {C, C ? algo.align_c : 1, "C"},
                  {D, algo.align_d, "D"},
                  {p.bias || bias_grad ? desc->bias : nullptr, algo.align_bias, "bias"},
                  {p.aux ? desc->aux : nullptr, algo.align_aux, "aux"}};
  for (const auto& x : pointers)
    if (!aligned(x.pointer, x.alignment))
      return refuse(CUBLAS_STATUS_INVALID_VALUE, std::string("pointer ") + x.name + " is not aligned to the " +
                                                     std::to_string(x.alignment) +
                                                     " bytes the algorithm was chosen for");

  // Every matrix must lie inside its allocation: on a GPU an overrun faults the kernel.
  const struct {
    const void* pointer;
    int64_t elements;
    int32_t type;
    const char* name;
  } extents[] = {{A, p.a.span(p.batch), p.a.type, "A"},
                 {B, p.b.span(p.batch), p.b.type, "B"},
                 {C, C && (p.device_scalars || call.beta != 0.0) ? p.c.span(p.batch) : 0, p.c.type, "C"},
                 {D, p.d.span(p.batch), p.d.type, "D"},
                 {p.bias || bias_grad ? desc->bias : nullptr,
                  p.bias || bias_grad ? (p.batch - 1) * p.bias_batch_stride + p.bias_length : 0, p.bias_type, "bias"},
                 {p.aux ? desc->aux : nullptr,
                  p.aux ? (p.batch - 1) * p.aux_batch_stride + (p.n - 1) * p.aux_ld + p.m : 0, p.aux_type, "aux"}};
  for (const auto& x : extents)
    if (x.elements > 0 && !range_ok(x.pointer, static_cast<size_t>(x.elements) * element_bytes(x.type)))
      return refuse(CUBLAS_STATUS_EXECUTION_FAILED,
                    std::string("matrix ") + x.name + " (" + std::to_string(x.elements) +
                        " elements from its pointer) runs past the end of its device allocation");

  call.A = A;
  call.B = B;
  call.C = C;
  call.D = D;
  call.bias = p.bias ? desc->bias : nullptr;
  call.bias_grad = bias_grad ? const_cast<void*>(desc->bias) : nullptr;
  call.aux = p.aux ? desc->aux : nullptr;
  const cudaError_t status = submit(stream, cudaGraphNodeTypeKernel, [call] {
    if (call.p.f64)
      run<double>(call);
    else
      run<float>(call);
  });
  if (status != cudaSuccess)
    return refuse(CUBLAS_STATUS_EXECUTION_FAILED, std::string("cublasLtMatmul on its stream: ") + error_name(status));
  return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"

#endif  // COCO_CUDA_EMULATED || EMU_STANDALONE
