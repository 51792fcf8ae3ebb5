// coco-bench-collectives: bandwidth of the communicator's collectives at gradient-bucket sizes, in the
// manner of nccl-tests. Run under the launcher, one process per GPU (or CPU rank):
//   mpirun -np 8 build/coco-bench-collectives --device cuda [--min-bytes 1M] [--max-bytes 256M]
//       [--dtype f32|bf16] [--iters 20] [--out results.json]
// For each size it first checks one run of all-reduce (sum), reduce-scatter and all-gather against the
// values every rank can compute, then times `iters` runs after `warmup` runs (host clock around the
// batch, ended by synchronize(); the time is the slowest rank's) and reports per collective
//   algbw = bytes / time,  busbw = algbw * 2 (n - 1) / n for all-reduce, algbw * (n - 1) / n for
//   reduce-scatter and all-gather (bytes: the full buffer, as nccl-tests counts them).
// In the emulated build the cuda device is the NCCL shim on the CPU: it is validated, not timed.
// Exit codes: 0 ok, 1 a wrong result or a runtime failure, 2 bad arguments.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/runtime/cuda_api.h"
#include "engine/tensor.h"

namespace {

using namespace coco;
using namespace coco::dist;

struct Options {
  Device device = Device::cpu;
  DType dtype = DType::f32;
  int64_t min_bytes = 1 << 20, max_bytes = 64 << 20;
  int iters = 20, warmup = 5;
  std::string out;
};

int64_t parse_bytes(const std::string& text) {
  size_t used = 0;
  const double value = std::stod(text, &used);
  const std::string unit = text.substr(used);
  const double scale = unit.empty()  ? 1
                       : unit == "K" ? 1024.0
                       : unit == "M" ? 1048576.0
                       : unit == "G" ? 1073741824.0
                                     : -1;
  if (scale < 0 || value <= 0) throw std::invalid_argument("bad size '" + text + "' (a number with K, M or G)");
  return static_cast<int64_t>(value * scale);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--device") {
      const std::string v = value();
      if (v != "cpu" && v != "cuda") throw std::invalid_argument("--device: expected cpu or cuda, got '" + v + "'");
      o.device = v == "cpu" ? Device::cpu : Device::cuda;
    } else if (arg == "--dtype") {
      const std::string v = value();
      if (v != "f32" && v != "bf16") throw std::invalid_argument("--dtype: expected f32 or bf16, got '" + v + "'");
      o.dtype = v == "f32" ? DType::f32 : DType::bf16;
    } else if (arg == "--min-bytes") {
      o.min_bytes = parse_bytes(value());
    } else if (arg == "--max-bytes") {
      o.max_bytes = parse_bytes(value());
    } else if (arg == "--iters") {
      o.iters = std::stoi(value());
    } else if (arg == "--warmup") {
      o.warmup = std::stoi(value());
    } else if (arg == "--out") {
      o.out = value();
    } else {
      throw std::invalid_argument("unknown argument '" + arg + "'");
    }
  }
  if (o.min_bytes > o.max_bytes || o.iters < 1 || o.warmup < 0)
    throw std::invalid_argument("need --min-bytes <= --max-bytes, --iters >= 1, --warmup >= 0");
  return o;
}

// Rank r's value at index i: small integers, exact in bf16 and in their sums.
float value(int r, int64_t i) { return static_cast<float>((i % 5) + r); }

Tensor filled(int64_t count, int rank, int64_t first_index, const Options& o) {
  std::vector<float> host(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) host[static_cast<size_t>(i)] = value(rank, first_index + i);
  return Tensor::from_vector(host, {count}, Device::cpu).to(o.dtype).to(o.device);
}

// One run of each collective against the expected values; "" when right.
std::string validate(Communicator& comm, int64_t count, const Options& o) {
  const int n = comm.world_size(), me = comm.rank();
  const int64_t block = count / n;
  Tensor reduced = filled(count, me, 0, o);
  comm.all_reduce(reduced, ReduceOp::sum);
  Tensor scattered = Tensor::zeros({block}, o.dtype, o.device);
  const Tensor send = filled(count, me, 0, o);
  comm.reduce_scatter(send, scattered, ReduceOp::sum);
  Tensor gathered = Tensor::zeros({count}, o.dtype, o.device);
  comm.all_gather(filled(block, me, me * block, o), gathered);
  comm.synchronize();
  const std::vector<double> a = reduced.to(Device::cpu).to_f64(), s = scattered.to(Device::cpu).to_f64(),
                            g = gathered.to(Device::cpu).to_f64();
  const auto sum_over_ranks = [n](int64_t i) {
    double total = 0;
    for (int r = 0; r < n; ++r) total += value(r, i);
    return total;
  };
  for (int64_t i = 0; i < count; ++i)
    if (a[i] != sum_over_ranks(i)) return "all_reduce: element " + std::to_string(i) + " is " + std::to_string(a[i]);
  for (int64_t i = 0; i < block; ++i)
    if (s[i] != sum_over_ranks(me * block + i))
      return "reduce_scatter: element " + std::to_string(i) + " is " + std::to_string(s[i]);
  for (int64_t i = 0; i < count; ++i)
    if (g[i] != value(static_cast<int>(i / block), i))
      return "all_gather: element " + std::to_string(i) + " is " + std::to_string(g[i]);
  return "";
}

// Seconds per run, the slowest rank's.
double time_runs(Communicator& comm, const Options& o, const std::function<void()>& run) {
  for (int i = 0; i < o.warmup; ++i) run();
  comm.barrier();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < o.iters; ++i) run();
  comm.synchronize();
  const double mine = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / o.iters;
  // The slowest rank: every rank contributes only its own time in its slot of a sum.
  std::vector<double> times(static_cast<size_t>(comm.world_size()), 0.0);
  times[static_cast<size_t>(comm.rank())] = mine;
  comm.all_reduce(times.data(), times.size(), DType::f64, ReduceOp::sum);
  comm.synchronize();
  return *std::max_element(times.begin(), times.end());
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coco-bench-collectives: %s\n", e.what());
    return 2;
  }
  std::unique_ptr<Communicator> comm;
  try {
    comm = make_communicator(o.device, detect_launch());
    const int n = comm->world_size();
    const bool timed = !(o.device == Device::cuda && kCudaEmulated);
    const size_t element = dtype_size(o.dtype);
    std::string json = "{\"device\": \"" + std::string(device_name(o.device)) + "\", \"backend\": \"" +
                       comm->backend() + "\", \"world_size\": " + std::to_string(n) + ", \"dtype\": \"" +
                       dtype_name(o.dtype) + "\", \"timed\": " + (timed ? "true" : "false") + ", \"results\": [";
    if (comm->rank() == 0) {
      std::printf("coco-bench-collectives: %d ranks, %s (%s), %s%s\n", n, device_name(o.device), comm->backend(),
                  dtype_name(o.dtype), timed ? "" : "; emulated NCCL: validated, not timed");
      if (timed)
        std::printf("%12s %-15s %10s %10s %10s\n", "bytes", "collective", "time_us", "algbw_GB/s", "busbw_GB/s");
    }
    bool first = true;
    for (int64_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
      const int64_t count = std::max<int64_t>(n, bytes / static_cast<int64_t>(element) / n * n);
      const std::string error = validate(*comm, count, o);
      if (!error.empty()) {
        std::fprintf(stderr, "coco-bench-collectives: rank %d, %lld bytes: wrong result: %s\n", comm->rank(),
                     static_cast<long long>(bytes), error.c_str());
        comm->abort(1);
      }
      if (!timed) continue;
      const int64_t block = count / n;
      Tensor buffer = filled(count, comm->rank(), 0, o), shard = Tensor::zeros({block}, o.dtype, o.device);
      const double real_bytes = static_cast<double>(count * static_cast<int64_t>(element));
      struct Measured {
        const char* name;
        double seconds, bus_factor;
      };
      const Measured results[] = {
          {"all_reduce", time_runs(*comm, o, [&] { comm->all_reduce(buffer, ReduceOp::sum); }), 2.0 * (n - 1) / n},
          {"reduce_scatter", time_runs(*comm, o, [&] { comm->reduce_scatter(buffer, shard, ReduceOp::sum); }),
           static_cast<double>(n - 1) / n},
          {"all_gather", time_runs(*comm, o, [&] { comm->all_gather(shard, buffer); }), static_cast<double>(n - 1) / n},
      };
      for (const Measured& m : results) {
        const double algbw = real_bytes / m.seconds / 1e9;
        if (comm->rank() == 0)
          std::printf("%12.0f %-15s %10.1f %10.3f %10.3f\n", real_bytes, m.name, m.seconds * 1e6, algbw,
                      algbw * m.bus_factor);
        char record[256];
        std::snprintf(record, sizeof record,
                      "%s{\"collective\": \"%s\", \"bytes\": %.0f, \"time_us\": %.3f, \"algbw_gbps\": %.4f, "
                      "\"busbw_gbps\": %.4f}",
                      first ? "" : ", ", m.name, real_bytes, m.seconds * 1e6, algbw, algbw * m.bus_factor);
        json += record;
        first = false;
      }
    }
    json += "]}\n";
    if (comm->rank() == 0) {
      std::printf("coco-bench-collectives: every size validated (all-reduce, reduce-scatter, all-gather)\n");
      if (!o.out.empty()) {
        std::ofstream file(o.out);
        file << json;
        if (!file) throw CommError("cannot write " + o.out);
      }
    }
    comm->barrier();
    return 0;
  } catch (const DistConfigError& e) {
    std::fprintf(stderr, "coco-bench-collectives: %s\n", e.what());
    if (comm) comm->abort(2);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coco-bench-collectives: %s\n", e.what());
    if (comm) comm->abort(1);
    return 1;
  }
}
