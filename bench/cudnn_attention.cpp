// coco-bench cases: cuDNN's fused scaled-dot-product attention, the baseline next to coco's attention
// kernels (bench/attention.cpp). Built only in gpu mode when CMake finds libcudnn and the header-only
// cuDNN frontend (COCO_HAVE_CUDNN_FRONTEND); it uses the frontend's graph API (Graph::sdpa and
// Graph::sdpa_backward), which lowers to cuDNN's fused flash-attention engines.
//
// The problem is coco's attention at the same shapes and on the same inputs as bench/attention.cpp:
//   q, k, v, out, dout, dq, dk, dv: (B, H, T, Dh) bf16 contiguous; scale Dh^-0.5;
//   bias: (1, H, T, T) bf16, shared across the batch; dbias: (1, H, T, T) bf16, summed over the batch;
//   right-padded sequences (odd b padded by max(1, T/8) positions) as cuDNN's padding mask with
//   per-sequence lengths seq_len_q = seq_len_kv: (B, 1, 1, 1) int32;
//   attention dropout p = 0.1 (Philox seed and offset: (1, 1, 1, 1) int64 device tensors);
//   Stats: (B, H, T, 1) f32, the forward's log-sum-exp that the backward reads; f32 compute.
// Where it differs from coco's kernels:
//   - cuDNN's padding mask also drops the padded query rows (their outputs and gradients are not
//     computed); coco's key padding mask masks keys only and computes every query row. The FLOP count
//     is the same 4 B H T^2 Dh as coco's case, so cuDNN's rate is credited for the ~1/16 of the rows it
//     skips at the bench's padding.
//   - cuDNN's dropout mask comes from its own Philox stream, not coco's, so the timed p = 0.1 graphs
//     cannot be compared element by element with the CPU reference. validate() therefore checks a
//     p = 0 graph of the same problem (see validate_forward / validate_backward) and the p = 0.1 graph
//     is what is timed; the shape column says so.
//   - The backward uses cuDNN's default (not necessarily deterministic) algorithm.
//
// If the frontend reports a graph unsupported on the device (validate, heuristics, support check or
// plan build fails), the case's validate() returns "unsupported: <stage and reason>", which the
// driver prints and writes to the JSON report, and the run goes on with the next case.
#if defined(COCO_HAVE_CUDNN_FRONTEND)

#include <cudnn_frontend.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench/bench_util.h"
#include "engine/runtime/check_cudnn.h"
#include "kernels/attention.h"

namespace coco::bench {
namespace {

namespace fe = cudnn_frontend;

// A failed cuDNN frontend call. The frontend reports errors as values (cudnn_frontend::error_t); this
// remembers whether the error says "not supported here", which a case reports and skips, rather than
// a misuse or a failed execution, which it reports as an error.
class CudnnFrontendError : public CudaError {
 public:
  CudnnFrontendError(const std::string& what, fe::error_code_t code)
      : CudaError(what),
        // The codes with which the frontend says a graph cannot run on this device or cuDNN version;
        // a backend call failing with CUDNN_STATUS_NOT_SUPPORTED* arrives as CUDNN_BACKEND_API_FAILED.
        unsupported_(
            code == fe::error_code_t::GRAPH_NOT_SUPPORTED || code == fe::error_code_t::HEURISTIC_QUERY_FAILED ||
            code == fe::error_code_t::GRAPH_EXECUTION_PLAN_CREATION_FAILED ||
            code == fe::error_code_t::UNSUPPORTED_GRAPH_FORMAT || code == fe::error_code_t::INVALID_CUDA_DEVICE ||
            (code == fe::error_code_t::CUDNN_BACKEND_API_FAILED && what.find("NOT_SUPPORTED") != std::string::npos)) {}
  bool unsupported() const { return unsupported_; }

 private:
  bool unsupported_;
};

const char* frontend_code_name(fe::error_code_t code) {
  switch (code) {
    case fe::error_code_t::OK:
      return "OK";
    case fe::error_code_t::ATTRIBUTE_NOT_SET:
      return "ATTRIBUTE_NOT_SET";
    case fe::error_code_t::SHAPE_DEDUCTION_FAILED:
      return "SHAPE_DEDUCTION_FAILED";
    case fe::error_code_t::INVALID_TENSOR_NAME:
      return "INVALID_TENSOR_NAME";
    case fe::error_code_t::INVALID_VARIANT_PACK:
      return "INVALID_VARIANT_PACK";
    case fe::error_code_t::GRAPH_NOT_SUPPORTED:
      return "GRAPH_NOT_SUPPORTED";
    case fe::error_code_t::GRAPH_EXECUTION_PLAN_CREATION_FAILED:
      return "GRAPH_EXECUTION_PLAN_CREATION_FAILED";
    case fe::error_code_t::GRAPH_EXECUTION_FAILED:
      return "GRAPH_EXECUTION_FAILED";
    case fe::error_code_t::HEURISTIC_QUERY_FAILED:
      return "HEURISTIC_QUERY_FAILED";
    case fe::error_code_t::UNSUPPORTED_GRAPH_FORMAT:
      return "UNSUPPORTED_GRAPH_FORMAT";
    case fe::error_code_t::CUDA_API_FAILED:
      return "CUDA_API_FAILED";
    case fe::error_code_t::CUDNN_BACKEND_API_FAILED:
      return "CUDNN_BACKEND_API_FAILED";
    case fe::error_code_t::INVALID_CUDA_DEVICE:
      return "INVALID_CUDA_DEVICE";
    case fe::error_code_t::HANDLE_ERROR:
      return "HANDLE_ERROR";
    case fe::error_code_t::INVALID_VALUE:
      return "INVALID_VALUE";
    case fe::error_code_t::NVRTC_COMPILATION_FAILED:
      return "NVRTC_COMPILATION_FAILED";
  }
  return "unknown error code";
}

void check_cudnn_frontend(fe::error_t status, const char* call, const char* file, int line) {
  if (status.is_good()) return;
  throw CudnnFrontendError("cuDNN frontend error " + std::string(frontend_code_name(status.get_code())) + " (" +
                               status.get_message() + ") in `" + call + "` at " + file + ":" + std::to_string(line),
                           status.get_code());
}

}  // namespace
}  // namespace coco::bench

// Checks a cuDNN frontend call returning cudnn_frontend::error_t: the CudnnFrontendError names the call,
// file, line, the frontend's error code and its message.
#define COCO_CUDNN_FE_CHECK(call) ::coco::bench::check_cudnn_frontend((call), #call, __FILE__, __LINE__)

namespace coco::bench {
namespace {

using Graph = fe::graph::Graph;
using TensorAttributes = fe::graph::Tensor_attributes;

// Tensor uids of the variant packs (forward and backward graphs share the input uids).
enum Uid : int64_t {
  kQ = 1,
  kK,
  kV,
  kBias,
  kSeqLenQ,
  kSeqLenKv,
  kSeed,
  kOffset,
  kOut,
  kStats,
  kDout,
  kDq,
  kDk,
  kDv,
  kDbias,
};

struct CudnnHandle {
  cudnnHandle_t handle = nullptr;
  CudnnHandle() { COCO_CUDNN_CHECK(cudnnCreate(&handle)); }
  ~CudnnHandle() { (void)cudnnDestroy(handle); }  // unchecked: a destructor must not throw
  CudnnHandle(const CudnnHandle&) = delete;
  CudnnHandle& operator=(const CudnnHandle&) = delete;
};

// A built graph, its workspace and the device pointers it runs on.
struct BuiltGraph {
  std::shared_ptr<Graph> graph;
  DeviceArray<uint8_t> workspace;
  std::unordered_map<int64_t, void*> pack;

  void run(cudnnHandle_t handle) {
    COCO_CUDNN_CHECK(cudnnSetStream(handle, current_stream()));
    COCO_CUDNN_FE_CHECK(graph->execute(handle, pack, workspace.get()));
  }
};

// Everything the forward and backward cases of one shape set share. The cuDNN handle and graphs are
// made on first use (in validate), so that building the case list needs no cuDNN call.
struct CudnnAttention {
  int64_t B = 0, H = 0, T = 0, Dh = 0;
  float dropout_p = 0.1f;
  std::vector<int32_t> lengths;  // (B) valid positions of each sequence (right padding)
  DeviceArray<bf16> q, k, v, bias, dout, dout_validation, out, dq, dk, dv, dbias;
  DeviceArray<float> stats;
  DeviceArray<int32_t> seq_len;
  DeviceArray<int64_t> seed, offset;

  std::unique_ptr<CudnnHandle> handle;
  // [0]: the p = 0 graph validate() checks; [1]: the p = 0.1 graph that is timed.
  std::unique_ptr<BuiltGraph> forward[2], backward[2];

  cudnnHandle_t get_handle() {
    if (!handle) handle = std::make_unique<CudnnHandle>();
    return handle->handle;
  }

  std::vector<int64_t> qkv_dims() const { return {B, H, T, Dh}; }
  std::vector<int64_t> qkv_strides() const { return {H * T * Dh, T * Dh, Dh, 1}; }

  std::shared_ptr<Graph> new_graph() const {
    auto graph = std::make_shared<Graph>();
    graph->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    return graph;
  }

  std::shared_ptr<TensorAttributes> qkv_tensor(Graph& graph, const char* name, int64_t uid) const {
    return graph.tensor(TensorAttributes().set_name(name).set_uid(uid).set_dim(qkv_dims()).set_stride(qkv_strides()));
  }

  // The inputs both directions share: q, k, v, bias, the sequence lengths and, with dropout, the
  // Philox seed and offset.
  struct Inputs {
    std::shared_ptr<TensorAttributes> q, k, v, bias, seq_len_q, seq_len_kv, seed, offset;
  };
  Inputs inputs(Graph& graph, bool with_dropout) const {
    Inputs in;
    in.q = qkv_tensor(graph, "q", kQ);
    in.k = qkv_tensor(graph, "k", kK);
    in.v = qkv_tensor(graph, "v", kV);
    in.bias = graph.tensor(TensorAttributes()
                               .set_name("bias")
                               .set_uid(kBias)
                               .set_dim({1, H, T, T})
                               .set_stride({H * T * T, T * T, T, 1})
                               .set_data_type(fe::DataType_t::BFLOAT16));
    auto lengths_tensor = [&](const char* name, int64_t uid) {
      return graph.tensor(TensorAttributes()
                              .set_name(name)
                              .set_uid(uid)
                              .set_dim({B, 1, 1, 1})
                              .set_stride({1, 1, 1, 1})
                              .set_data_type(fe::DataType_t::INT32));
    };
    in.seq_len_q = lengths_tensor("seq_len_q", kSeqLenQ);
    in.seq_len_kv = lengths_tensor("seq_len_kv", kSeqLenKv);
    if (with_dropout) {
      auto scalar = [&](const char* name, int64_t uid) {
        return graph.tensor(TensorAttributes()
                                .set_name(name)
                                .set_uid(uid)
                                .set_dim({1, 1, 1, 1})
                                .set_stride({1, 1, 1, 1})
                                .set_data_type(fe::DataType_t::INT64));
      };
      in.seed = scalar("dropout_seed", kSeed);
      in.offset = scalar("dropout_offset", kOffset);
    }
    return in;
  }

  std::unordered_map<int64_t, void*> input_pack(bool with_dropout) const {
    std::unordered_map<int64_t, void*> pack = {{kQ, q.get()},
                                               {kK, k.get()},
                                               {kV, v.get()},
                                               {kBias, bias.get()},
                                               {kSeqLenQ, seq_len.get()},
                                               {kSeqLenKv, seq_len.get()}};
    if (with_dropout) {
      pack[kSeed] = seed.get();
      pack[kOffset] = offset.get();
    }
    return pack;
  }

  // Validation, heuristics, support check and plan build; then the workspace the chosen plan needs.
  std::unique_ptr<BuiltGraph> build(std::shared_ptr<Graph> graph, std::unordered_map<int64_t, void*> pack) {
    cudnnHandle_t h = get_handle();
    COCO_CUDNN_FE_CHECK(graph->validate());
    COCO_CUDNN_FE_CHECK(graph->build_operation_graph(h));
    COCO_CUDNN_FE_CHECK(graph->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}));
    COCO_CUDNN_FE_CHECK(graph->check_support());
    COCO_CUDNN_FE_CHECK(graph->build_plans());
    int64_t workspace_bytes = 0;
    COCO_CUDNN_FE_CHECK(graph->get_workspace_size(workspace_bytes));
    auto built = std::make_unique<BuiltGraph>();
    built->graph = std::move(graph);
    built->workspace = DeviceArray<uint8_t>(static_cast<size_t>(std::max<int64_t>(workspace_bytes, 0)));
    built->pack = std::move(pack);
    return built;
  }

  // Forward: out = softmax(Dh^-0.5 q k^T + bias, padded keys masked), dropout, times v; Stats for the
  // backward (generate_stats, as a training forward does).
  BuiltGraph& forward_graph(bool with_dropout) {
    std::unique_ptr<BuiltGraph>& slot = forward[with_dropout ? 1 : 0];
    if (slot) return *slot;
    auto graph = new_graph();
    const Inputs in = inputs(*graph, with_dropout);
    auto options = fe::graph::SDPA_attributes()
                       .set_name("coco_sdpa_forward")
                       .set_generate_stats(true)
                       .set_attn_scale(1.0f / std::sqrt(static_cast<float>(Dh)))
                       .set_bias(in.bias)
                       .set_padding_mask(true)
                       .set_seq_len_q(in.seq_len_q)
                       .set_seq_len_kv(in.seq_len_kv);
    if (with_dropout) options.set_dropout(dropout_p, in.seed, in.offset);
    auto [o, lse] = graph->sdpa(in.q, in.k, in.v, options);
    o->set_output(true).set_uid(kOut).set_dim(qkv_dims()).set_stride(qkv_strides());
    lse->set_output(true)
        .set_uid(kStats)
        .set_dim({B, H, T, 1})
        .set_stride({H * T, T, 1, 1})
        .set_data_type(fe::DataType_t::FLOAT);
    auto pack = input_pack(with_dropout);
    pack[kOut] = out.get();
    pack[kStats] = stats.get();
    slot = build(graph, std::move(pack));
    return *slot;
  }

  // Backward from the forward's out and Stats: dq, dk, dv and dbias (reduced over the batch). The p = 0
  // graph reads the validation dO, the timed p = 0.1 graph the full dO.
  BuiltGraph& backward_graph(bool with_dropout) {
    std::unique_ptr<BuiltGraph>& slot = backward[with_dropout ? 1 : 0];
    if (slot) return *slot;
    auto graph = new_graph();
    const Inputs in = inputs(*graph, with_dropout);
    auto o = qkv_tensor(*graph, "out", kOut);
    auto d_o = qkv_tensor(*graph, "dout", kDout);
    auto lse = graph->tensor(TensorAttributes()
                                 .set_name("stats")
                                 .set_uid(kStats)
                                 .set_dim({B, H, T, 1})
                                 .set_stride({H * T, T, 1, 1})
                                 .set_data_type(fe::DataType_t::FLOAT));
    auto d_bias = graph->tensor(TensorAttributes()
                                    .set_name("dbias")
                                    .set_uid(kDbias)
                                    .set_dim({1, H, T, T})
                                    .set_stride({H * T * T, T * T, T, 1})
                                    .set_data_type(fe::DataType_t::BFLOAT16));
    auto options = fe::graph::SDPA_backward_attributes()
                       .set_name("coco_sdpa_backward")
                       .set_attn_scale(1.0f / std::sqrt(static_cast<float>(Dh)))
                       .set_bias(in.bias)
                       .set_dbias(d_bias)
                       .set_padding_mask(true)
                       .set_seq_len_q(in.seq_len_q)
                       .set_seq_len_kv(in.seq_len_kv);
    if (with_dropout) options.set_dropout(dropout_p, in.seed, in.offset);
    auto [d_q, d_k, d_v] = graph->sdpa_backward(in.q, in.k, in.v, o, d_o, lse, options);
    d_q->set_output(true).set_uid(kDq).set_dim(qkv_dims()).set_stride(qkv_strides());
    d_k->set_output(true).set_uid(kDk).set_dim(qkv_dims()).set_stride(qkv_strides());
    d_v->set_output(true).set_uid(kDv).set_dim(qkv_dims()).set_stride(qkv_strides());
    auto pack = input_pack(with_dropout);
    pack[kOut] = out.get();
    pack[kStats] = stats.get();
    pack[kDout] = with_dropout ? dout.get() : dout_validation.get();
    pack[kDq] = dq.get();
    pack[kDk] = dk.get();
    pack[kDv] = dv.get();
    pack[kDbias] = dbias.get();
    slot = build(graph, std::move(pack));
    return *slot;
  }
};

// Rows t < lengths[b] of the first `batches` sequences of a (B, H, T, width) tensor, in order: the
// positions cuDNN's padding mask computes.
std::vector<float> valid_rows(const std::vector<float>& all, const std::vector<int32_t>& lengths, int64_t batches,
                              int64_t H, int64_t T, int64_t width) {
  std::vector<float> rows;
  for (int64_t b = 0; b < batches; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < lengths[b]; ++t) {
        const auto begin = all.begin() + ((b * H + h) * T + t) * width;
        rows.insert(rows.end(), begin, begin + width);
      }
  return rows;
}

// Runs `check` and turns exceptions into validate()'s message: "unsupported: ..." when the frontend
// says the graph cannot run here, the error otherwise. Either way the driver goes on.
template <class Check>
std::string guarded(Check check) {
  try {
    return check();
  } catch (const CudnnFrontendError& e) {
    return e.unsupported() ? std::string("unsupported: ") + e.what() : std::string(e.what());
  } catch (const std::exception& e) {
    return e.what();
  }
}

std::vector<Case> cudnn_attention_cases(const Shapes& s) {
  kernels::AttentionShape shape;
  shape.batch = s.batch;
  shape.heads = s.heads;
  shape.seq_len = s.seq_len;
  shape.head_dim = s.dim_head;
  const int64_t B = shape.batch, H = shape.heads, T = shape.seq_len, Dh = shape.head_dim;
  const int64_t n_qkv = shape.qkv_elements(), n_bias = shape.bias_elements();

  auto state = std::make_shared<CudnnAttention>();
  state->B = B;
  state->H = H;
  state->T = T;
  state->Dh = Dh;
  // Odd sequences are right-padded by T/8 positions (at least one), as in bench/attention.cpp.
  state->lengths.assign(B, static_cast<int32_t>(T));
  for (int64_t b = 1; b < B; b += 2) state->lengths[b] = static_cast<int32_t>(T - std::max<int64_t>(1, T / 8));
  const auto mask_host = std::make_shared<std::vector<uint8_t>>(B * T, 0);
  for (int64_t b = 0; b < B; ++b) std::fill_n(mask_host->begin() + b * T, state->lengths[b], uint8_t{1});

  // The same inputs as coco's attention cases (same seeds).
  const auto q_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n_qkv, 81, -2.0f, 2.0f));
  const auto k_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n_qkv, 82, -2.0f, 2.0f));
  const auto v_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n_qkv, 83));
  const auto dout_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n_qkv, 84));
  const auto bias_host = std::make_shared<std::vector<float>>(random_floats<bf16>(n_bias, 85, -0.5f, 0.5f));

  // The CPU reference runs on the first ref_batch sequences: the whole batch when small, else one
  // full-length and one padded sequence.
  const int64_t ref_batch = std::min<int64_t>(B, static_cast<double>(shape.score_elements()) * Dh <= (1 << 28) ? B : 2);
  kernels::AttentionShape ref_shape = shape;
  ref_shape.batch = ref_batch;
  const size_t ref_qkv = static_cast<size_t>(ref_shape.qkv_elements());
  const size_t ref_scores = static_cast<size_t>(ref_shape.score_elements());

  // The validation dO is zero at padded query rows and in the sequences past ref_batch. cuDNN does not
  // backpropagate through padded query rows (its padding mask drops them), and the CPU reference gives
  // such a row no gradient exactly when its dO is zero (dP = dO v^T = 0, so dS = 0). The batch-summed
  // dbias of the whole batch then equals the reference's over ref_batch sequences.
  const auto dout_validation_host = std::make_shared<std::vector<float>>(n_qkv, 0.0f);
  for (int64_t b = 0; b < ref_batch; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t row = (b * H + h) * T * Dh;
      std::copy_n(dout_host->begin() + row, state->lengths[b] * Dh, dout_validation_host->begin() + row);
    }

  state->q = device_from<bf16>(*q_host);
  state->k = device_from<bf16>(*k_host);
  state->v = device_from<bf16>(*v_host);
  state->bias = device_from<bf16>(*bias_host);
  state->dout = device_from<bf16>(*dout_host);
  state->dout_validation = device_from<bf16>(*dout_validation_host);
  state->out = DeviceArray<bf16>(n_qkv);
  state->dq = DeviceArray<bf16>(n_qkv);
  state->dk = DeviceArray<bf16>(n_qkv);
  state->dv = DeviceArray<bf16>(n_qkv);
  state->dbias = DeviceArray<bf16>(n_bias);
  state->stats = DeviceArray<float>(B * H * T);
  state->seq_len = DeviceArray<int32_t>(state->lengths);
  state->seed = DeviceArray<int64_t>(std::vector<int64_t>{99});
  state->offset = DeviceArray<int64_t>(std::vector<int64_t>{3});

  // CPU reference forward without dropout on the first ref_batch sequences: {out, probs}.
  auto reference_forward = [=] {
    std::pair<std::vector<float>, std::vector<float>> result{std::vector<float>(ref_qkv),
                                                             std::vector<float>(ref_scores)};
    kernels::cpu::attention_forward<float, uint8_t>(q_host->data(), k_host->data(), v_host->data(), mask_host->data(),
                                                    bias_host->data(), ref_shape, kernels::AttentionDropout{},
                                                    result.first.data(), result.second.data());
    return result;
  };
  auto head = [](const std::vector<float>& all, size_t count) {
    return std::vector<float>(all.begin(), all.begin() + count);
  };
  auto valid = [state, ref_batch](const std::vector<float>& all, int64_t width) {
    return valid_rows(all, state->lengths, ref_batch, state->H, state->T, width);
  };

  const std::string shape_text = dims({{"B", B}, {"H", H}, {"T", T}, {"Dh", Dh}}, "bf16");
  const double forward_flops = 4.0 * B * H * T * T * Dh;
  std::vector<Case> cases;
  {
    Case c = make_case("attention.forward", "cudnn", shape_text + " mask+bias p=0.1 timed (p=0 validated)");
    c.flops = forward_flops;
    c.run = [state] { state->forward_graph(true).run(state->get_handle()); };
    // Validation: the p = 0 forward graph against the CPU reference, on the valid query rows of the
    // first ref_batch sequences (cuDNN leaves the padded query rows out of the problem). Building the
    // timed p = 0.1 graph here too makes an unsupported dropout configuration show up before timing.
    c.validate = [=] {
      return guarded([&] {
        state->forward_graph(true);
        state->out.poison();
        state->forward_graph(false).run(state->get_handle());
        const std::vector<float> got = head(download_floats(state->out), ref_qkv);
        return compare("out", valid(reference_forward().first, Dh), valid(got, Dh), kBf16Nmse);
      });
    };
    cases.push_back(c);
  }
  {
    Case c = make_case("attention.backward", "cudnn", shape_text + " mask+bias p=0.1 timed (p=0 validated)");
    c.flops = 2 * forward_flops;
    // The timed backward reads the out and Stats of a p = 0.1 forward with the same seed and offset,
    // as in training; that forward runs once before timing (here, after validation).
    c.run = [state] { state->backward_graph(true).run(state->get_handle()); };
    // Validation: the p = 0 forward then the p = 0 backward (validation dO) against the CPU reference:
    // dq on the valid query rows, dk and dv on the valid key rows of the first ref_batch sequences
    // (cuDNN need not write the padded rows), dbias (1, H, T, T) in full.
    c.validate = [=] {
      return guarded([&] {
        state->forward_graph(true);
        state->backward_graph(true);
        state->dq.poison();
        state->dk.poison();
        state->dv.poison();
        state->dbias.poison();
        state->forward_graph(false).run(state->get_handle());
        state->backward_graph(false).run(state->get_handle());
        const std::vector<float> got_dq = head(download_floats(state->dq), ref_qkv);
        const std::vector<float> got_dk = head(download_floats(state->dk), ref_qkv);
        const std::vector<float> got_dv = head(download_floats(state->dv), ref_qkv);
        const std::vector<float> got_dbias = download_floats(state->dbias);

        const std::vector<float> probs = reference_forward().second;
        std::vector<float> eq(ref_qkv), ek(ref_qkv), ev(ref_qkv), edbias(n_bias);
        kernels::cpu::attention_backward<float>(q_host->data(), k_host->data(), v_host->data(), probs.data(),
                                                dout_validation_host->data(), ref_shape, kernels::AttentionDropout{},
                                                eq.data(), ek.data(), ev.data(), edbias.data(), false);
        const std::string problem = first_problem({compare("dq", valid(eq, Dh), valid(got_dq, Dh), kBf16GradNmse),
                                                   compare("dk", valid(ek, Dh), valid(got_dk, Dh), kBf16GradNmse),
                                                   compare("dv", valid(ev, Dh), valid(got_dv, Dh), kBf16GradNmse),
                                                   compare("dbias", edbias, got_dbias, kBf16GradNmse)});
        if (problem.empty()) state->forward_graph(true).run(state->get_handle());  // out, Stats for timing
        return problem;
      });
    };
    cases.push_back(c);
  }
  return cases;
}

}  // namespace

COCO_BENCH(cudnn_attention, cudnn_attention_cases);

}  // namespace coco::bench

#endif  // COCO_HAVE_CUDNN_FRONTEND
