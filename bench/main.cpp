// coco-bench driver: see bench.h. Usage:
//   coco-bench [--config paper-base|seed-readme|all] [--filter SUBSTRING] [--repeats N] [--out FILE]
//   coco-bench --cpu-step CONFIG [--threads N] ...   (bench/cpu_step.cpp)
//   coco-bench --step CONFIG [--data DIR] ...        (bench/step_profile.cpp)
// Compiled with COCO_BENCH_KERNELS_ONLY (the emulated build's coco-bench-kernels, which CI's sanitizer
// step runs) it has the kernel cases alone: no --cpu-step / --step, so it links no more than coco_engine.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "bench/reference_rates.h"
#if !defined(COCO_BENCH_KERNELS_ONLY)
#include "bench/cpu_step.h"
#include "bench/step_profile.h"
#endif
#include "engine/device.h"
#include "engine/runtime/check.h"

namespace coco::bench {

std::vector<Family>& families() {
  static std::vector<Family> all;
  return all;
}

int register_family(const char* family, Factory factory) {
  families().push_back({family, std::move(factory)});
  return static_cast<int>(families().size());
}

namespace {

struct Options {
  std::string config = "paper-base";
  std::string filter;
  int repeats = 25;
  std::string out;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "coco-bench: %s\n", message.c_str());
  std::fprintf(stderr,
               "usage: coco-bench [--config paper-base|seed-readme|all] [--filter SUBSTRING] [--repeats N>=20] "
               "[--out FILE.json]\n");
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error("option " + arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--config")
      o.config = value();
    else if (arg == "--filter")
      o.filter = value();
    else if (arg == "--repeats") {
      const std::string v = value();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (!end || *end || n < 20 || n > 100000) usage_error("--repeats expects an integer >= 20, got '" + v + "'");
      o.repeats = static_cast<int>(n);
    } else if (arg == "--out")
      o.out = value();
    else if (arg == "--help" || arg == "-h") {
      std::printf("coco-bench: times every kernel at training shapes (see bench/README.md)\n");
      std::exit(0);
    } else
      usage_error("unknown option '" + arg + "'");
  }
  if (o.config != "paper-base" && o.config != "seed-readme" && o.config != "all")
    usage_error("--config expects paper-base, seed-readme or all, got '" + o.config + "'");
  return o;
}

Shapes paper_base() { return Shapes{}; }

Shapes seed_readme() {
  Shapes s;
  s.config = "seed-readme";
  s.batch = 8;
  s.seq_len = 1024;
  s.d_model = 1024;
  s.heads = 16;
  s.dim_head = 64;
  s.d_ff = 4096;
  s.vocab = 20000;
  s.embed_dim = 128;
  return s;
}

// Small enough for the SIMT emulator: every case is still validated against its reference.
Shapes emulated_small() {
  Shapes s;
  s.config = "emulated-small";
  s.batch = 2;
  s.seq_len = 33;
  s.d_model = 64;
  s.heads = 2;
  s.dim_head = 32;
  s.d_ff = 256;
  s.vocab = 1000;
  s.embed_dim = 64;
  return s;
}

std::string today() {
  std::time_t now = std::time(nullptr);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%d", std::gmtime(&now));
  return buffer;
}

struct Timing {
  double median_ms, min_ms, max_ms;
};

Timing time_case(const Case& c, int repeats, void* flush_buffer, size_t flush_bytes) {
  cudaStream_t stream = current_stream();
  for (int i = 0; i < 3; ++i) c.run();
  COCO_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> ms;
  Event start, stop;
  for (int r = 0; r < repeats; ++r) {
    COCO_CUDA_CHECK(cudaMemsetAsync(flush_buffer, r & 0xFF, flush_bytes, stream));  // evicts L2
    start.record(stream);
    c.run();
    stop.record(stream);
    stop.synchronize();
    ms.push_back(stop.elapsed_ms_since(start));
  }
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front(), ms.back()};
}

}  // namespace

int main(int argc, char** argv) {
#if !defined(COCO_BENCH_KERNELS_ONLY)
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--cpu-step") == 0) return coco::bench::cpu_step_main(argc, argv);
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--step") == 0) return coco::bench::step_profile_main(argc, argv);
#endif
  const Options options = parse(argc, argv);
  if (!cuda_available()) {
    std::fprintf(stderr, "coco-bench: no CUDA device available\n");
    return 1;
  }
  const bool timing = !kCudaEmulated;
  cudaDeviceProp props{};
  COCO_CUDA_CHECK(cudaGetDeviceProperties(&props, 0));
  int driver = 0;
  if (timing) COCO_CUDA_CHECK(cudaDriverGetVersion(&driver));
  std::vector<Shapes> shape_sets;
  if (!timing)
    shape_sets.push_back(emulated_small());
  else {
    if (options.config != "seed-readme") shape_sets.push_back(paper_base());
    if (options.config != "paper-base") shape_sets.push_back(seed_readme());
  }

  nlohmann::json report;
  report["device"] = timing ? props.name : std::string(props.name) + " (SIMT emulator, no timing)";
  report["driver"] = driver;
  report["date"] = today();
  report["repeats"] = options.repeats;
  report["results"] = nlohmann::json::array();

  double copy_gbps = 0, gemm_tflops = 0;
  void* flush = nullptr;
  size_t flush_bytes = 0;
  if (timing) {
    copy_gbps = measure_copy_bandwidth_gbps();
    gemm_tflops = measure_bf16_gemm_tflops();
    report["copy_bandwidth_gbps"] = copy_gbps;
    report["cublas_bf16_gemm_tflops"] = gemm_tflops;
    flush_bytes = std::max<size_t>(2 * static_cast<size_t>(props.l2CacheSize), size_t{64} << 20);
    COCO_CUDA_CHECK(cudaMalloc(&flush, flush_bytes));
    std::printf("device %s, driver %d: copy bandwidth %.0f GB/s, cuBLAS bf16 GEMM %.1f TFLOP/s\n", props.name, driver,
                copy_gbps, gemm_tflops);
  } else {
    std::printf(
        "emulated mode (%s): validating every case through the SIMT emulator at reduced shapes; "
        "NO TIMING is done without a GPU\n",
        props.name);
  }

  int failures = 0, cases = 0, unsupported = 0;
  for (const Shapes& shapes : shape_sets) {
    std::printf("\n== shapes: %s (B*T = %lld, d = %lld, heads = %lld, T = %lld, FF = %lld, V = %lld)\n",
                shapes.config.c_str(), static_cast<long long>(shapes.tokens()), static_cast<long long>(shapes.d_model),
                static_cast<long long>(shapes.heads), static_cast<long long>(shapes.seq_len),
                static_cast<long long>(shapes.d_ff), static_cast<long long>(shapes.vocab));
    std::printf("%-34s %-10s %-34s %10s %10s %10s %9s %7s\n", "op", "variant", "shape", "median ms", "min ms", "max ms",
                "GB/s|TF/s", "% peak");
    for (const Family& family : families()) {
      for (Case& c : family.factory(shapes)) {
        if (!options.filter.empty() && (c.op + " " + c.variant).find(options.filter) == std::string::npos) continue;
        ++cases;
        nlohmann::json row = {{"config", shapes.config},
                              {"family", family.name},
                              {"op", c.op},
                              {"variant", c.variant},
                              {"shape", c.shape}};
        const std::string problem = c.validate ? c.validate() : std::string("no validation defined");
        // A baseline library may decline a configuration on this device (cuDNN's "not supported"): the
        // row says so and the run goes on; the engine's own kernels have no such excuse.
        const std::string unsupported_prefix = "unsupported: ";
        if (c.variant != "coco" && problem.rfind(unsupported_prefix, 0) == 0) {
          ++unsupported;
          row["valid"] = false;
          row["unsupported"] = problem.substr(unsupported_prefix.size());
          std::printf("%-34s %-10s %-34s UNSUPPORTED: %s\n", c.op.c_str(), c.variant.c_str(), c.shape.c_str(),
                      problem.c_str() + unsupported_prefix.size());
          report["results"].push_back(row);
          continue;
        }
        row["valid"] = problem.empty();
        if (!problem.empty()) {
          ++failures;
          row["error"] = problem;
          std::printf("%-34s %-10s %-34s INVALID: %s\n", c.op.c_str(), c.variant.c_str(), c.shape.c_str(),
                      problem.c_str());
          report["results"].push_back(row);
          continue;
        }
        if (!timing) {
          std::printf("%-34s %-10s %-34s validated (no timing)\n", c.op.c_str(), c.variant.c_str(), c.shape.c_str());
          report["results"].push_back(row);
          continue;
        }
        const Timing t = time_case(c, options.repeats, flush, flush_bytes);
        row["median_ms"] = t.median_ms;
        row["min_ms"] = t.min_ms;
        row["max_ms"] = t.max_ms;
        double rate = 0, percent = 0;
        if (c.flops > 0) {
          rate = c.flops / (t.median_ms * 1e-3) / 1e12;
          percent = gemm_tflops > 0 ? 100.0 * rate / gemm_tflops : 0;
          row["tflops"] = rate;
          row["percent_of_cublas_bf16_gemm"] = percent;
        } else if (c.bytes > 0) {
          rate = c.bytes / (t.median_ms * 1e-3) / 1e9;
          percent = copy_gbps > 0 ? 100.0 * rate / copy_gbps : 0;
          row["gbps"] = rate;
          row["percent_of_copy_bandwidth"] = percent;
        }
        std::printf("%-34s %-10s %-34s %10.4f %10.4f %10.4f %9.1f %6.1f%%\n", c.op.c_str(), c.variant.c_str(),
                    c.shape.c_str(), t.median_ms, t.min_ms, t.max_ms, rate, percent);
        report["results"].push_back(row);
      }
    }
  }
  if (flush) COCO_CUDA_CHECK(cudaFree(flush));
  const std::string out =
      !options.out.empty() ? options.out : std::string("coco-bench-") + report["date"].get<std::string>() + ".json";
  std::ofstream(out) << report.dump(2) << "\n";
  std::printf("\n%d cases, %d invalid, %d unsupported by a baseline library; results written to %s\n", cases, failures,
              unsupported, out.c_str());
  return failures ? 1 : 0;
}

}  // namespace coco::bench

int main(int argc, char** argv) {
  try {
    return coco::bench::main(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coco-bench: %s\n", e.what());
    return 1;
  }
}
