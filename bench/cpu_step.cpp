// coco-bench --cpu-step: times whole training steps (forward, backward, gradient clipping, the
// non-finite check and AdamW) of a `coco train` config on the CPU backend, on random tokens, and
// prints tokens/s with the CPU, the thread count and the BLAS kernel in use. See bench/README.md.
//
//   coco-bench --cpu-step configs/demo.json [--threads N] [--set key=value]... [--warmup N] [--steps N]
//              [--runs N] [--out FILE.json]
#include "bench/cpu_step.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coco/objective.h"
#include "coco/train_config.h"
#include "engine/config.h"
#include "engine/ops/optim.h"
#include "engine/runtime/cpu_backend.h"
#include "engine/tape.h"

namespace coco::bench {
namespace {

struct CpuStepOptions {
  std::string config;
  std::vector<std::string> overrides;
  int threads = 0;  // 0: every core the process may use
  int warmup = 3, steps = 10, runs = 3;
  uint64_t vocab = 8192;
  std::string out;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "coco-bench: %s\n", message.c_str());
  std::fprintf(stderr,
               "usage: coco-bench --cpu-step CONFIG.json [--threads N>=0] [--set key=value]... [--vocab N] "
               "[--warmup N] [--steps N>=1] [--runs N>=1] [--out FILE.json]\n");
  std::exit(2);
}

int parse_int(const std::string& option, const std::string& v, long lo, long hi) {
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || !end || *end || n < lo || n > hi)
    usage_error(option + " expects an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got '" + v +
                "'");
  return static_cast<int>(n);
}

CpuStepOptions parse(int argc, char** argv) {
  CpuStepOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error("option " + arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--cpu-step")
      o.config = value();
    else if (arg == "--threads")
      o.threads = parse_int(arg, value(), 0, 4096);
    else if (arg == "--set")
      o.overrides.push_back(value());
    else if (arg == "--vocab")
      o.vocab = static_cast<uint64_t>(parse_int(arg, value(), 8, 10000000));
    else if (arg == "--warmup")
      o.warmup = parse_int(arg, value(), 0, 1000);
    else if (arg == "--steps")
      o.steps = parse_int(arg, value(), 1, 100000);
    else if (arg == "--runs")
      o.runs = parse_int(arg, value(), 1, 1000);
    else if (arg == "--out")
      o.out = value();
    else
      usage_error("unknown option '" + arg + "' for --cpu-step");
  }
  return o;
}

// The config with --set applied and the vocabulary the data would give (size --vocab; [PAD] 0,
// [UNK] 1, [CLS] 2, [SEP] 3, [MASK] 4, as `coco prepare` numbers them), on the CPU.
train::TrainConfig load_config(const CpuStepOptions& o) {
  nlohmann::json root = load_json_file(o.config);
  for (const std::string& assignment : o.overrides) apply_override(root, assignment);
  data::PreparedMeta meta;
  meta.vocab_size = o.vocab;
  meta.pad_id = 0, meta.unk_id = 1, meta.cls_id = 2, meta.sep_id = 3, meta.mask_id = 4;
  train::take_vocabulary_from_data(root, meta);
  root["runtime"]["device"] = "cpu";
  if (root.contains("precision") && root["precision"] != "f32")
    usage_error("--cpu-step times the f32 CPU backend; " + o.config + " sets precision " + root["precision"].dump());
  return train::parse_train_config(root, o.config);
}

}  // namespace

int cpu_step_main(int argc, char** argv) {
  const CpuStepOptions o = parse(argc, argv);
  if (o.config.empty()) usage_error("--cpu-step needs a config file");
  train::TrainConfig config;
  try {
    config = load_config(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coco-bench: %s\n", e.what());
    return 2;
  }
  runtime::cpu::set_threads(o.threads);
  runtime::cpu::configure();
  const int64_t batch = config.train.micro_batch, seq = config.data.seq_len;
  std::printf("%s\n", runtime::cpu::report().c_str());

  objective::CocoModel model(config.model, config.objective, config.train.seed, Device::cpu);
  std::vector<NamedParameter> params = model.named_parameters();
  for (auto& p : params)
    for (const auto& pattern : config.optim.no_decay)
      if (p.name.find(pattern) != std::string::npos) p.weight_decay = false;
  optim::AdamW adamw(params, {config.optim.beta1, config.optim.beta2, config.optim.eps, config.optim.weight_decay});
  std::printf("config %s (%s preset): %lld parameters, micro-batch %lld x %lld tokens, vocabulary %llu\n",
              o.config.c_str(), config.objective.preset == objective::Preset::paper ? "paper" : "lucidrains",
              static_cast<long long>(model.parameter_count()), static_cast<long long>(batch),
              static_cast<long long>(seq), static_cast<unsigned long long>(config.model.vocab_size));

  // Random token batches ([CLS] first), a different one per step, the same on every run.
  std::mt19937 generator(static_cast<uint32_t>(config.train.seed));
  std::uniform_int_distribution<int32_t> id(5, static_cast<int32_t>(config.model.vocab_size) - 1);
  constexpr int kBatches = 4;
  std::vector<Tensor> batches;
  for (int b = 0; b < kBatches; ++b) {
    std::vector<int32_t> ids(static_cast<size_t>(batch * seq));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = i % seq == 0 ? 2 : id(generator);
    batches.push_back(Tensor::from_vector(ids, Shape{batch, seq}));
  }

  uint64_t step = 0;
  double last_loss = 0;
  auto train_step = [&] {
    Tape tape;
    objective::Outputs out;
    {
      Tape::Recording recording(tape);
      out = model.forward(batches[step % kBatches], step, true);
    }
    tape.backward(out.loss);
    const std::vector<Tensor> gradients = adamw.gradients();
    const double clip =
        config.optim.clip_norm > 0 ? optim::clip_grad_norm(gradients, config.optim.clip_norm).factor : 1.0;
    if (!optim::has_nonfinite(gradients)) adamw.step(config.optim.lr, clip);
    adamw.zero_grad();
    last_loss = out.loss.to_vector<float>()[0];
    ++step;
  };

  for (int i = 0; i < o.warmup; ++i) train_step();
  std::vector<double> rates;
  for (int r = 0; r < o.runs; ++r) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < o.steps; ++i) train_step();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    rates.push_back(static_cast<double>(batch * seq * o.steps) / seconds);
    std::printf("run %d: %d steps in %.3f s: %.0f tokens/s (%.1f ms/step)\n", r + 1, o.steps, seconds, rates.back(),
                1e3 * seconds / o.steps);
  }
  std::vector<double> sorted = rates;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  // The loss after the last step, exactly: equal across thread counts when the backend is deterministic.
  std::printf("median %.0f tokens/s at %d thread%s; loss after %llu steps %.9g (%a)\n", median, runtime::cpu::threads(),
              runtime::cpu::threads() == 1 ? "" : "s", static_cast<unsigned long long>(step), last_loss, last_loss);

  if (!o.out.empty()) {
    const runtime::cpu::BlasInfo blas = runtime::cpu::blas_info();
    nlohmann::json j = {{"config", o.config},
                        {"overrides", o.overrides},
                        {"cpu", runtime::cpu::cpu_model()},
                        {"cpu_features", runtime::cpu::cpu_features().describe()},
                        {"threads", runtime::cpu::threads()},
                        {"blas", blas.library},
                        {"blas_kernel", blas.kernel},
                        {"tokens_per_step", batch * seq},
                        {"warmup_steps", o.warmup},
                        {"steps_per_run", o.steps},
                        {"tokens_per_s_runs", rates},
                        {"tokens_per_s_median", median},
                        {"final_loss", last_loss}};
    std::ofstream file(o.out);
    file << j.dump(2) << "\n";
    if (!file) {
      std::fprintf(stderr, "coco-bench: cannot write %s\n", o.out.c_str());
      return 1;
    }
  }
  return 0;
}

}  // namespace coco::bench
