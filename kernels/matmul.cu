// CUDA GEMM entry points: cuBLASLt (row-major calls mapped onto its column-major API, bias / GELU
// epilogues fused where supported), and the bias/activation kernels for what the epilogues do not
// cover. The same code runs in both build modes: in `emulated` mode the cuBLASLt calls reach the
// runtime layer's strict CPU implementation (engine/simt/emu_cublaslt.cpp).
#include <cublasLt.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "engine/runtime/cuda_calls.h"
#include "engine/runtime/launch.cuh"
#include "kernels/cast_convert.h"
#include "kernels/matmul.h"
#include "kernels/vector_access.cuh"

namespace coco::kernels::detail {
namespace {

// Arithmetic type: f64 for double, f32 for everything else.
template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

constexpr int kBlock = 256;
constexpr int64_t kMaxBlocks = 8192;
unsigned grid_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(kMaxBlocks, (n + kBlock - 1) / kBlock)); }

// Linear epilogue where cuBLASLt's does not apply. in: (rows, cols) GEMM result x.W^T [+ bias], null
// for an empty product (in == 0 features); bias: (cols) or null; pre_out: (rows, cols) or null;
// y: (rows, cols).
//   pre = in + bias; pre_out = round(pre); y = round(act(pre))
// `in` may alias y (in-place); pointers are therefore not __restrict__.
template <class T>
__global__ void __launch_bounds__(kBlock)
    bias_activation_kernel(const T* in, const T* bias, Activation act, T* pre_out, T* y, int64_t rows, int64_t cols) {
  using A = Acc<T>;
  constexpr int N = kPackElements<T>;
  // Packs never straddle a row when cols is a multiple of the pack, so the bias pack is contiguous.
  const bool vector_ok = cols % N == 0 && packs_aligned<N>(in, bias, pre_out, y);
  for_each_pack<N>(rows * cols, vector_ok, [&](auto width, int64_t first) {
    constexpr int W = decltype(width)::value;
    A pre[W];
    if (in) {
      const Pack<T, W> x = load_pack<W>(in + first);
#pragma unroll
      for (int k = 0; k < W; ++k) pre[k] = convert_element<A>(x.v[k]);
    } else {
#pragma unroll
      for (int k = 0; k < W; ++k) pre[k] = A(0);
    }
    if (bias) {
      const Pack<T, W> b = load_pack<W>(bias + first % cols);
#pragma unroll
      for (int k = 0; k < W; ++k) pre[k] += convert_element<A>(b.v[k]);
    }
    if (pre_out) {
      Pack<T, W> p;
#pragma unroll
      for (int k = 0; k < W; ++k) p.v[k] = convert_element<T>(pre[k]);
      store_pack<W>(pre_out + first, p);
    }
    Pack<T, W> out;
#pragma unroll
    for (int k = 0; k < W; ++k) out.v[k] = convert_element<T>(apply_activation<A>(act, pre[k]));
    store_pack<W>(y + first, out);
  });
}

// dpre = dy * act'(pre). dpre may alias dy.  all: (n)
template <class T>
__global__ void __launch_bounds__(kBlock)
    activation_backward_kernel(Activation act, const T* dy, const T* pre, T* dpre, int64_t n) {
  using A = Acc<T>;
  map_elements(
      n,
      [act](int64_t, T g, T p) {
        return convert_element<T>(convert_element<A>(g) * activation_derivative<A>(act, convert_element<A>(p)));
      },
      dpre, dy, pre);
}

// sum += add, element-wise in the arithmetic type (the bias gradient into its accumulating buffer).
template <class T>
__global__ void __launch_bounds__(kBlock) accumulate_kernel(T* sum, const T* add, int64_t n) {
  using A = Acc<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    sum[i] = convert_element<T>(convert_element<A>(sum[i]) + convert_element<A>(add[i]));
}

template <class T>
void launch_bias_activation(const T* in, const T* bias, Activation act, T* pre_out, T* y, int64_t rows, int64_t cols,
                            cudaStream_t stream) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  COCO_LAUNCH(bias_activation_kernel<T>, dim3(pack_grid<T>(n, kBlock, kMaxBlocks)), dim3(kBlock), 0, stream, in, bias,
              act, pre_out, y, rows, cols);
}

std::string gemm_description(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                             int64_t ldc, int64_t batch) {
  return "(trans_a=" + std::to_string(trans_a) + ", trans_b=" + std::to_string(trans_b) + ", M=" + std::to_string(M) +
         ", N=" + std::to_string(N) + ", K=" + std::to_string(K) + ", lda=" + std::to_string(lda) +
         ", ldb=" + std::to_string(ldb) + ", ldc=" + std::to_string(ldc) + ", batch=" + std::to_string(batch) + ")";
}

void check_linear_arguments(const char* op, const void* x, const void* W, const void* y, Activation act, int64_t rows,
                            int64_t in, int64_t out) {
  if (rows < 0 || in < 0 || out < 0)
    throw std::invalid_argument(std::string(op) + ": negative dimension (rows=" + std::to_string(rows) +
                                ", in=" + std::to_string(in) + ", out=" + std::to_string(out) + ")");
  if (rows * out > 0 && (!y || (in > 0 && (!x || !W))))
    throw std::invalid_argument(std::string(op) + ": null x, W or y pointer");
  if (act != Activation::none && act != Activation::gelu_erf && act != Activation::gelu_tanh)
    throw std::invalid_argument(std::string(op) + ": unknown activation code " + std::to_string(static_cast<int>(act)));
}

// ------------------------------------------------------------------------------------------------
// cuBLASLt

constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// Handles per device, workspaces per (device, stream): work queued on one stream runs in order, so a
// workspace is never used by two GEMMs at once. Never freed at exit (the CUDA context may already be
// gone when static destructors run); release_gemm_resources() frees them explicitly.
struct LtResources {
  std::mutex mutex;
  std::map<int, cublasLtHandle_t> handles;
  std::map<std::pair<int, cudaStream_t>, void*> workspaces;
};

LtResources& lt_resources() {
  static LtResources* resources = new LtResources;
  return *resources;
}

struct LtContext {
  cublasLtHandle_t handle;
  void* workspace;
};

LtContext lt_context(cudaStream_t stream) {
  int device = 0;
  COCO_CUDA_CHECK(cudaGetDevice(&device));
  LtResources& resources = lt_resources();
  std::lock_guard<std::mutex> lock(resources.mutex);
  cublasLtHandle_t& handle = resources.handles[device];
  if (!handle) COCO_CUBLAS_CHECK(cublasLtCreate(&handle));
  void*& workspace = resources.workspaces[{device, stream}];
  if (!workspace) COCO_CUDA_CHECK(runtime::device_malloc(&workspace, kWorkspaceBytes));
  return {handle, workspace};
}

template <class T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>)
    return CUDA_R_32F;
  else if constexpr (std::is_same_v<T, double>)
    return CUDA_R_64F;
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return CUDA_R_16BF;
  else
    return CUDA_R_16F;
}

// Owning wrappers so that a failing call does not leak descriptors.
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  ~MatmulDesc() {
    if (desc) (void)cublasLtMatmulDescDestroy(desc);
  }
  template <class V>
  void set(cublasLtMatmulDescAttributes_t attribute, const V& value) {
    COCO_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof(value)));
  }
};
struct Layout {
  cublasLtMatrixLayout_t layout = nullptr;
  ~Layout() {
    if (layout) (void)cublasLtMatrixLayoutDestroy(layout);
  }
};
struct Preference {
  cublasLtMatmulPreference_t preference = nullptr;
  ~Preference() {
    if (preference) (void)cublasLtMatmulPreferenceDestroy(preference);
  }
  template <class V>
  void set(cublasLtMatmulPreferenceAttributes_t attribute, const V& value) {
    COCO_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof(value)));
  }
};

void make_layout(Layout& out, cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                 int64_t stride) {
  COCO_CUBLAS_CHECK(
      cublasLtMatrixLayoutCreate(&out.layout, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    COCO_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(out.layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
    COCO_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(out.layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                       sizeof(stride)));
  }
}

// Largest power of two (<= 256) dividing the address of every matrix of a batch.
uint32_t alignment_of(const void* pointer, int64_t stride_bytes) {
  uint64_t bits = reinterpret_cast<uintptr_t>(pointer) | static_cast<uint64_t>(stride_bytes) | 256u;
  return static_cast<uint32_t>(bits & (~bits + 1));
}

// One row-major GEMM as cuBLASLt sees it: C^T (N, M) = op(B)^T (N, K) . op(A)^T (K, M), column-major.
struct LtGemm {
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  const void* A = nullptr;
  int64_t lda = 0, stride_a = 0;
  const void* B = nullptr;
  int64_t ldb = 0, stride_b = 0;
  void* C = nullptr;
  int64_t ldc = 0, stride_c = 0;
  int64_t batch = 1;
  cudaDataType_t in_type = CUDA_R_32F, out_type = CUDA_R_32F;
  double alpha = 1.0, beta = 0.0;
  cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;  // (N), the output's type
  void* aux = nullptr;         // GELU input (M, N) with row stride aux_ld
  int64_t aux_ld = 0;
};

size_t type_bytes(cudaDataType_t type) {
  switch (type) {
    case CUDA_R_64F:
      return 8;
    case CUDA_R_32F:
      return 4;
    default:
      return 2;
  }
}

// Runs the GEMM; returns false (without running anything) when cuBLASLt has no algorithm for this
// combination of types, epilogue and alignment, so the caller can fall back to a plainer form.
bool lt_matmul(const LtGemm& g, cudaStream_t stream) {
  const LtContext context = lt_context(stream);
  const bool f64 = g.out_type == CUDA_R_64F;
  MatmulDesc desc;
  COCO_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.desc, f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F,
                                             f64 ? CUDA_R_64F : CUDA_R_32F));
  // cuBLAS "A" is our B and cuBLAS "B" our A (the transposed problem).
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N);
  if (g.epilogue != CUBLASLT_EPILOGUE_DEFAULT) desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, g.epilogue);
  if (g.bias) desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias);
  if (g.aux) {
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, g.aux);
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, g.aux_ld);
  }
  Layout b_layout, a_layout, c_layout;
  make_layout(b_layout, g.in_type, g.trans_b ? g.K : g.N, g.trans_b ? g.N : g.K, g.ldb, g.batch, g.stride_b);
  make_layout(a_layout, g.in_type, g.trans_a ? g.M : g.K, g.trans_a ? g.K : g.M, g.lda, g.batch, g.stride_a);
  make_layout(c_layout, g.out_type, g.N, g.M, g.ldc, g.batch, g.stride_c);

  Preference preference;
  COCO_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference.preference));
  preference.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(kWorkspaceBytes));
  const int64_t in_bytes = static_cast<int64_t>(type_bytes(g.in_type)),
                out_bytes = static_cast<int64_t>(type_bytes(g.out_type));
  preference.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment_of(g.B, g.stride_b * in_bytes));
  preference.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment_of(g.A, g.stride_a * in_bytes));
  preference.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment_of(g.C, g.stride_c * out_bytes));
  preference.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment_of(g.C, g.stride_c * out_bytes));

  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(context.handle, desc.desc, b_layout.layout, a_layout.layout, c_layout.layout,
                                     c_layout.layout, preference.preference, 1, &heuristic, &found);
  if (status == CUBLAS_STATUS_SUCCESS && found == 0) return false;
  // Some type / epilogue combinations are refused with INVALID_VALUE rather than NOT_SUPPORTED; an
  // epilogue request is allowed to fail either way (the caller retries without it).
  if (status == CUBLAS_STATUS_NOT_SUPPORTED ||
      (status != CUBLAS_STATUS_SUCCESS && g.epilogue != CUBLASLT_EPILOGUE_DEFAULT))
    return false;
  COCO_CUBLAS_CHECK(status);

  const float alpha32 = static_cast<float>(g.alpha), beta32 = static_cast<float>(g.beta);
  const void* alpha = f64 ? static_cast<const void*>(&g.alpha) : static_cast<const void*>(&alpha32);
  const void* beta = f64 ? static_cast<const void*>(&g.beta) : static_cast<const void*>(&beta32);
  COCO_CUBLAS_CHECK(runtime::lt_matmul(context.handle, desc.desc, alpha, g.B, b_layout.layout, g.A, a_layout.layout,
                                       beta, g.C, c_layout.layout, g.C, c_layout.layout, &heuristic.algo,
                                       context.workspace, kWorkspaceBytes, stream));
  return true;
}

// C = beta * C for the K == 0 case (cuBLASLt rejects k = 0). C: (M, N) with row stride ldc.
template <class Out>
__global__ void __launch_bounds__(kBlock)
    scale_matrix_kernel(Out* C, int64_t M, int64_t N, int64_t ldc, Acc<Out> beta) {
  const int64_t n = M * N;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    Out& c = C[(i / N) * ldc + i % N];
    const Acc<Out> scaled = beta == Acc<Out>(0) ? Acc<Out>(0) : beta * convert_element<Acc<Out>>(c);
    c = convert_element<Out>(scaled);
  }
}

template <class In, class Out>
void gpu_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const In* A, int64_t lda,
              int64_t stride_a, const In* B, int64_t ldb, int64_t stride_b, double beta, Out* C, int64_t ldc,
              int64_t stride_c, int64_t batch, cudaStream_t stream) {
  if (M == 0 || N == 0 || batch == 0) return;
  if (K == 0) {
    for (int64_t i = 0; i < batch; ++i)
      COCO_LAUNCH(scale_matrix_kernel<Out>, dim3(grid_for(M * N)), dim3(kBlock), 0, stream, C + i * stride_c, M, N, ldc,
                  static_cast<Acc<Out>>(beta));
    return;
  }
  LtGemm g;
  g.trans_a = trans_a;
  g.trans_b = trans_b;
  g.M = M;
  g.N = N;
  g.K = K;
  g.A = A;
  g.lda = lda;
  g.stride_a = stride_a;
  g.B = B;
  g.ldb = ldb;
  g.stride_b = stride_b;
  g.C = C;
  g.ldc = ldc;
  g.stride_c = stride_c;
  g.batch = batch;
  g.in_type = cuda_type<In>();
  g.out_type = cuda_type<Out>();
  g.alpha = alpha;
  g.beta = beta;
  if (!lt_matmul(g, stream))
    throw std::runtime_error("kernels::cuda::gemm: cuBLASLt has no algorithm for " +
                             gemm_description(trans_a, trans_b, M, N, K, lda, ldb, ldc, batch));
}
void check_gemm_arguments(const char* op, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda,
                          int64_t ldb, int64_t ldc, int64_t batch, int64_t stride_a, int64_t stride_b,
                          int64_t stride_c) {
  const auto fail = [&](const char* why) {
    throw std::invalid_argument(std::string(op) + ": " + why + " " +
                                gemm_description(trans_a, trans_b, M, N, K, lda, ldb, ldc, batch));
  };
  if (M < 0 || N < 0 || K < 0 || batch < 0) fail("negative dimension");
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || batch > INT32_MAX) fail("dimension beyond the 32-bit range");
  if (lda < std::max<int64_t>(1, trans_a ? M : K)) fail("lda smaller than the stored row length of A");
  if (ldb < std::max<int64_t>(1, trans_b ? K : N)) fail("ldb smaller than the stored row length of B");
  if (ldc < std::max<int64_t>(1, N)) fail("ldc smaller than N");
  if (stride_a < 0 || stride_b < 0 || stride_c < 0) fail("negative batch stride");
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class In, class Out>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const In* A, int64_t lda,
          const In* B, int64_t ldb, double beta, Out* C, int64_t ldc, cudaStream_t stream) {
  detail::check_gemm_arguments("kernels::cuda::gemm", trans_a, trans_b, M, N, K, lda, ldb, ldc, 1, 0, 0, 0);
  detail::gpu_gemm<In, Out>(trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1, stream);
}

template <class In, class Out>
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const In* A,
                          int64_t lda, int64_t stride_a, const In* B, int64_t ldb, int64_t stride_b, double beta,
                          Out* C, int64_t ldc, int64_t stride_c, int64_t batch, cudaStream_t stream) {
  detail::check_gemm_arguments("kernels::cuda::gemm_strided_batched", trans_a, trans_b, M, N, K, lda, ldb, ldc, batch,
                               stride_a, stride_b, stride_c);
  detail::gpu_gemm<In, Out>(trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb, stride_b, beta, C, ldc,
                            stride_c, batch, stream);
}

template <class T>
void linear_forward(const T* x, const T* W, const T* bias, Activation act, int64_t rows, int64_t in, int64_t out, T* y,
                    T* pre_act, cudaStream_t stream) {
  detail::check_linear_arguments("kernels::cuda::linear_forward", x, W, y, act, rows, in, out);
  if (rows == 0 || out == 0) return;
  // pre_act is only written when there is an activation to differentiate through.
  T* pre_out = act == Activation::none ? nullptr : pre_act;
  // y (rows, out) = x (rows, in) . W^T with W stored (out, in).
  detail::LtGemm g;
  g.trans_b = true;
  g.M = rows;
  g.N = out;
  g.K = in;
  g.A = x;
  g.lda = std::max<int64_t>(1, in);
  g.B = W;
  g.ldb = std::max<int64_t>(1, in);
  g.ldc = out;
  g.in_type = g.out_type = detail::cuda_type<T>();
  if (in == 0) {  // no products: y = act(bias)
    detail::launch_bias_activation<T>(nullptr, bias, act, pre_out, y, rows, out, stream);
    return;
  }
  constexpr bool is_16bit = std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;
  // Fully fused: cuBLASLt's GELU is the tanh approximation; its aux output (the GELU input) needs a
  // leading dimension divisible by 8.
  if (is_16bit && act == Activation::gelu_tanh && pre_out && out % 8 == 0) {
    g.C = y;
    g.epilogue = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
    g.bias = bias;
    g.aux = pre_out;
    g.aux_ld = out;
    if (detail::lt_matmul(g, stream)) return;
    g.aux = nullptr;
    g.aux_ld = 0;
  }
  // GEMM (+ bias) into the pre-activation buffer, then the activation kernel.
  // (f64 GEMMs take no epilogue: the bias is added by the kernel.)
  T* gemm_out = pre_out ? pre_out : y;
  g.C = gemm_out;
  const bool bias_epilogue = bias != nullptr && !std::is_same_v<T, double>;
  g.epilogue = bias_epilogue ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  g.bias = bias_epilogue ? bias : nullptr;
  bool bias_done = bias_epilogue;
  if (!detail::lt_matmul(g, stream)) {
    g.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    g.bias = nullptr;
    bias_done = false;
    if (!detail::lt_matmul(g, stream))
      throw std::runtime_error("kernels::cuda::linear_forward: cuBLASLt has no algorithm for rows=" +
                               std::to_string(rows) + ", in=" + std::to_string(in) + ", out=" + std::to_string(out));
  }
  // Without the bias epilogue the saved pre-activation still lacks the bias: the kernel rewrites it
  // in place (each element is read before it is written, by the same thread).
  if (act != Activation::none || (bias && !bias_done))
    detail::launch_bias_activation<T>(gemm_out, bias_done ? nullptr : bias, act, bias_done ? nullptr : pre_out, y, rows,
                                      out, stream);
}

template <class In, class Out>
bool linear_backward_weight(const In* dy, const In* x, int64_t rows, int64_t in, int64_t out, Out* dW, Out* db,
                            Out* db_scratch, cudaStream_t stream) {
  // dW (out, in) += dy^T (out, rows) . x (rows, in)
  detail::check_gemm_arguments("kernels::cuda::linear_backward_weight", true, false, out, in, rows,
                               std::max<int64_t>(1, out), std::max<int64_t>(1, in), std::max<int64_t>(1, in), 1, 0, 0,
                               0);
  const bool want_bias = db != nullptr && db_scratch != nullptr;
  // The epilogue needs a product to ride on (cuBLASLt refuses k = 0 and empty matrices), and
  // cuBLASLt has no epilogues for f64.
  if (want_bias && rows > 0 && in > 0 && out > 0 && !std::is_same_v<In, double>) {
    detail::LtGemm g;
    g.trans_a = true;
    g.M = out;
    g.N = in;
    g.K = rows;
    g.A = dy;
    g.lda = out;
    g.B = x;
    g.ldb = in;
    g.C = dW;
    g.ldc = in;
    g.in_type = detail::cuda_type<In>();
    g.out_type = detail::cuda_type<Out>();
    g.beta = 1.0;
    // cuBLASLt's "B" is dy (our A, transposed): BGRADB sums op(B) over k = rows, one value per
    // column of its D (in, out), i.e. per output feature, in D's type.
    g.epilogue = CUBLASLT_EPILOGUE_BGRADB;
    g.bias = db_scratch;
    if (detail::lt_matmul(g, stream)) {
      COCO_LAUNCH(detail::accumulate_kernel<Out>, dim3(detail::grid_for(out)), dim3(detail::kBlock), 0, stream, db,
                  static_cast<const Out*>(db_scratch), out);
      return true;
    }
  }
  detail::gpu_gemm<In, Out>(true, false, out, in, rows, 1.0, dy, std::max<int64_t>(1, out), 0, x,
                            std::max<int64_t>(1, in), 0, 1.0, dW, std::max<int64_t>(1, in), 0, 1, stream);
  return false;
}

template <class T>
void activation_backward(Activation act, const T* dy, const T* pre, T* dpre, int64_t n, cudaStream_t stream) {
  if (n < 0)
    throw std::invalid_argument("kernels::cuda::activation_backward: negative element count " + std::to_string(n));
  if (n == 0) return;
  COCO_LAUNCH(detail::activation_backward_kernel<T>, dim3(detail::pack_grid<T>(n, detail::kBlock, detail::kMaxBlocks)),
              dim3(detail::kBlock), 0, stream, act, dy, pre, dpre, n);
}

void release_gemm_resources() {
  detail::LtResources& resources = detail::lt_resources();
  std::lock_guard<std::mutex> lock(resources.mutex);
  for (auto& [key, workspace] : resources.workspaces) COCO_CUDA_CHECK(runtime::device_free(workspace));
  resources.workspaces.clear();
  for (auto& [device, handle] : resources.handles) COCO_CUBLAS_CHECK(cublasLtDestroy(handle));
  resources.handles.clear();
}

#define COCO_INSTANTIATE_GEMM_CUDA(In, Out)                                                                          \
  template void gemm<In, Out>(bool, bool, int64_t, int64_t, int64_t, double, const In*, int64_t, const In*, int64_t, \
                              double, Out*, int64_t, cudaStream_t);                                                  \
  template void gemm_strided_batched<In, Out>(bool, bool, int64_t, int64_t, int64_t, double, const In*, int64_t,     \
                                              int64_t, const In*, int64_t, int64_t, double, Out*, int64_t, int64_t,  \
                                              int64_t, cudaStream_t);                                                \
  template bool linear_backward_weight<In, Out>(const In*, const In*, int64_t, int64_t, int64_t, Out*, Out*, Out*,   \
                                                cudaStream_t);
COCO_INSTANTIATE_GEMM_CUDA(float, float)
COCO_INSTANTIATE_GEMM_CUDA(double, double)
COCO_INSTANTIATE_GEMM_CUDA(__nv_bfloat16, __nv_bfloat16)
COCO_INSTANTIATE_GEMM_CUDA(__half, __half)
COCO_INSTANTIATE_GEMM_CUDA(__nv_bfloat16, float)
COCO_INSTANTIATE_GEMM_CUDA(__half, float)
#undef COCO_INSTANTIATE_GEMM_CUDA

#define COCO_INSTANTIATE_LINEAR_CUDA(T)                                                                        \
  template void linear_forward<T>(const T*, const T*, const T*, Activation, int64_t, int64_t, int64_t, T*, T*, \
                                  cudaStream_t);                                                               \
  template void activation_backward<T>(Activation, const T*, const T*, T*, int64_t, cudaStream_t);
COCO_INSTANTIATE_LINEAR_CUDA(float)
COCO_INSTANTIATE_LINEAR_CUDA(double)
COCO_INSTANTIATE_LINEAR_CUDA(__nv_bfloat16)
COCO_INSTANTIATE_LINEAR_CUDA(__half)
#undef COCO_INSTANTIATE_LINEAR_CUDA

}  // namespace coco::kernels::cuda
