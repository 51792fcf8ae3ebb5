// coco-bench: kernel microbenchmarks at training shapes.
//
// Each op family registers a factory (COCO_BENCH) that builds cases for the requested shapes. A case
// enqueues its work on the current stream; the driver validates every case against its reference
// before timing it, then times it with CUDA events (warm-up, L2 flushed between repeats, median of at
// least 20 repeats) and reports GB/s or TFLOP/s next to the device's measured copy bandwidth and
// bf16 GEMM rate. Without a GPU (emulated mode) the driver validates at reduced shapes through the
// SIMT emulator and does no timing.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace coco::bench {

// Training shapes of one configuration.
struct Shapes {
  std::string config;     // "paper-base", "seed-readme", or "emulated-small"
  int64_t batch = 32;     // sequences per micro-batch
  int64_t seq_len = 512;  // T
  int64_t d_model = 768;
  int64_t heads = 12;
  int64_t dim_head = 64;
  int64_t d_ff = 3072;
  int64_t vocab = 30522;
  int64_t embed_dim = 768;  // E (token embedding width)
  double mask_fraction = 0.15;
  int64_t tokens() const { return batch * seq_len; }
  int64_t masked_rows() const { return static_cast<int64_t>(tokens() * mask_fraction); }
};

struct Case {
  std::string op;                         // "layernorm.forward"
  std::string variant;                    // "coco", "naive", "cublaslt", "cudnn"
  std::string shape;                      // human-readable shape, e.g. "N=16384 C=768 bf16"
  double bytes = 0;                       // bytes moved by one run (memory-bound ops), 0 if not meaningful
  double flops = 0;                       // floating-point operations of one run (GEMM, attention), 0 otherwise
  std::function<void()> run;              // enqueues one run on the current stream
  std::function<std::string()> validate;  // runs the case and compares with a reference: "" when correct
};

using Factory = std::function<std::vector<Case>(const Shapes&)>;

int register_family(const char* family, Factory factory);

struct Family {
  std::string name;
  Factory factory;
};
std::vector<Family>& families();

}  // namespace coco::bench

#define COCO_BENCH(family, factory) \
  static const int coco_bench_registered_##family = ::coco::bench::register_family(#family, factory)
