// Global gradient norm over many tensors, deterministic, and the clipping factor.
//
// Two stages with a fixed reduction order, so the result has the same bits on every run and every
// schedule: (1) one block per chunk of kGradNormChunk elements of one tensor sums squares in f32
// (each thread a strided f32 sum, then a fixed shared-memory tree) into partials[chunk]; (2) one
// block adds the partials in f64 (each thread a strided f64 sum, then a fixed tree) into the total.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "engine/dtype.h"
#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

// One gradient tensor. Device pointer for the CUDA path.
struct NormTensorDesc {
  const void* data = nullptr;  // (numel) of dtype (f32, bf16 or f16)
  int64_t numel = 0;
  int64_t first_chunk = 0;  // set by plan_norm_chunks
  DType dtype = DType::f32;
};

inline constexpr int64_t kGradNormChunk = 4096;

// Fills first_chunk (tensors back to back) and returns the number of chunks. Throws
// std::invalid_argument on a negative numel, a null pointer in a non-empty tensor or a dtype other
// than f32/bf16/f16, naming the descriptor index.
int64_t plan_norm_chunks(std::vector<NormTensorDesc>& descs);

// min(1, max_norm / (norm + 1e-6)), the factor torch.nn.utils.clip_grad_norm_ scales gradients by.
// A non-finite norm gives a non-finite factor (NaN), so a step using it can be detected and skipped.
double clip_factor(double norm, double max_norm);

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// Sum of squares of all elements of all tensors (host pointers; f32, bf16, f16 or f64), accumulated
// in f64 in element order. Any NaN/Inf element makes the result NaN/Inf.
double sum_of_squares(const std::vector<NormTensorDesc>& descs);

// Calls visit(value) with every element of every tensor widened to f64, in order; stops early when
// visit returns false. Throws std::invalid_argument naming `op` for a negative numel or another dtype.
void for_each_value(const char* op, const std::vector<NormTensorDesc>& descs, const std::function<bool(double)>& visit);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// device_descs: (num_tensors) planned by plan_norm_chunks; partials: (total_chunks) f32 scratch;
// sum_sq: (1) f64 result on the device. Asynchronous on `stream`. With total_chunks == 0 the result
// is 0.
void sum_of_squares(const NormTensorDesc* device_descs, int num_tensors, int64_t total_chunks, float* partials,
                    double* sum_sq, cudaStream_t stream);

}  // namespace coco::kernels::cuda
