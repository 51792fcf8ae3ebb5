// coco-bench --step: the step profile (coco/step_profile.h) of a `coco train` config: a Trainer in a
// temporary run directory takes 5 steps on the config's data -- 2 of warm-up, the measured steady step (the
// third, or with runtime.cuda_graph the fourth: the first replay after the capture), and the step that writes
// the record -- and the figures are printed, one `key value` per line.
// The profile counts CUDA runtime calls, so a config that runs on the CPU is refused (exit 1).
//
//   coco-bench --step configs/demo.json [--data DIR] [--set key=value]...
#include "bench/step_profile.h"

#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coco/train_config.h"
#include "coco/trainer.h"
#include "engine/config.h"

namespace coco::bench {
namespace {

namespace fs = std::filesystem;

constexpr int kSteps = 5;

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "coco-bench: %s\n", message.c_str());
  std::fprintf(stderr, "usage: coco-bench --step CONFIG.json [--data DIR] [--set key=value]...\n");
  std::exit(2);
}

struct StepOptions {
  std::string config, data;
  std::vector<std::string> overrides;
};

StepOptions parse(int argc, char** argv) {
  StepOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage_error("option " + arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--step")
      o.config = value();
    else if (arg == "--data")
      o.data = value();
    else if (arg == "--set")
      o.overrides.push_back(value());
    else
      usage_error("unknown option '" + arg + "' for --step");
  }
  if (o.config.empty()) usage_error("--step needs a config file");
  return o;
}

// The device the config asks for, resolved as `coco train` does; empty when the config does not say
// it in a form the Trainer would accept (the Trainer then reports the error).
std::string requested_device(const StepOptions& o) {
  nlohmann::json root = load_json_file(o.config);
  for (const std::string& assignment : o.overrides) apply_override(root, assignment);
  std::string setting = "auto";
  if (root.contains("runtime") && root["runtime"].is_object() && root["runtime"].contains("device")) {
    if (!root["runtime"]["device"].is_string()) return {};
    setting = root["runtime"]["device"].get<std::string>();
  }
  try {
    return train::resolve_device(setting) == Device::cuda ? "cuda" : "cpu";
  } catch (const std::exception&) {
    return {};
  }
}

struct TempRunDir {
  fs::path path;
  TempRunDir() {
    std::string pattern = (fs::temp_directory_path() / "coco-bench-step-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("cannot create a temporary run directory");
    path = pattern;
  }
  ~TempRunDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

}  // namespace

int step_profile_main(int argc, char** argv) {
  const StepOptions o = parse(argc, argv);
  try {
    if (requested_device(o) == "cpu") {
      std::fprintf(stderr,
                   "coco-bench: --step %s: the config runs on the CPU (runtime.device resolves to cpu); the step "
                   "profile counts CUDA runtime calls, so it needs a CUDA device (runtime.device \"cuda\", or "
                   "\"auto\" with a device present)\n",
                   o.config.c_str());
      return 1;
    }
    TempRunDir run_dir;
    TrainerOptions options;
    options.run_dir = run_dir.path / "run";
    options.overrides = o.overrides;
    if (!o.data.empty()) options.overrides.push_back("data.dir=" + o.data);
    // 2 warm-up steps, the measured step (the 3rd, or the 4th after a capture) and the last, whose record
    // carries the figures.
    options.overrides.push_back("train.steps=" + std::to_string(kSteps));
    // The learning-rate warm-up is shortened to fit (the counts do not depend on the rate).
    for (const char* key :
         {"train.log_every=1000000", "train.eval_every=0", "train.checkpoint_every=0", "optim.warmup_steps=1"})
      options.overrides.push_back(key);
    nlohmann::json figures;
    std::string line;
    options.on_metrics = [&](const nlohmann::json& record) {
      if (record.contains("launches_per_step")) figures = record;
    };
    options.on_message = [&](const std::string& message) {
      if (message.rfind("step profile", 0) == 0) line = message;
    };
    Trainer trainer = Trainer::from_file(o.config, options);
    trainer.run();
    if (figures.is_null()) {
      std::fprintf(stderr, "coco-bench: --step %s: no steady step was measured in %d steps (a skipped step?)\n",
                   o.config.c_str(), kSteps);
      return 1;
    }
    std::printf("%s\n", line.c_str());
    for (const char* key :
         {"launches_per_step", "syncs_per_step", "d2h_copies_per_step", "h2d_bytes_per_step", "cuda_mallocs_per_step",
          "kernels_per_step", "graph_launches_per_step", "gemms_per_step", "collectives_per_step", "profile_step"})
      std::printf("%s %s\n", key, figures.at(key).dump().c_str());
    return 0;
  } catch (const std::invalid_argument& e) {  // ConfigError, DataError
    std::fprintf(stderr, "coco-bench: --step %s: %s\n", o.config.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "coco-bench: --step %s: %s\n", o.config.c_str(), e.what());
    return 1;
  }
}

}  // namespace coco::bench
