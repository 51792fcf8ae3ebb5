// Pretraining from your own program, built against the installed package: a coco::Trainer on a prepared data
// directory (`coco prepare --out DATA ...`) with a metrics callback; a few steps one by one, an evaluation, then a
// second Trainer on the same run directory that resumes from the checkpoint and continues.
//
//   train_steps CONFIG.json DATA_DIR RUN_DIR
//
// Exits non-zero unless every metrics record reached the callback with finite losses, the callback saw what
// metrics.jsonl holds, the run wrote its checkpoint, and the second Trainer resumed at the first one's last step.
#include <cocolm/cocolm.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s CONFIG.json DATA_DIR RUN_DIR\n", argv[0]);
    return 2;
  }
  const std::string config = argv[1], data = argv[2], run = argv[3];
  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    std::printf("%s: %s\n", ok ? "ok" : "FAILED", what.c_str());
    failures += ok ? 0 : 1;
  };
  try {
    std::vector<nlohmann::json> records;
    coco::TrainerOptions options;
    options.run_dir = run;
    options.overrides = {"data.dir=" + data, "train.steps=4", "train.log_every=1", "train.eval_every=0"};
    options.on_metrics = [&](const nlohmann::json& record) {
      records.push_back(record);
      std::printf("  metrics: %s\n", record.dump().c_str());
    };
    options.on_message = [](const std::string& line) { std::printf("  | %s\n", line.c_str()); };
    {
      coco::Trainer trainer = coco::Trainer::from_file(config, options);
      check(!trainer.resumed_from(), "a fresh run starts at step 0");
      while (!trainer.done()) {
        const coco::StepReport step = trainer.train_step();
        std::printf("step %lld/%lld loss %.4f lr %.3g\n", static_cast<long long>(step.step),
                    static_cast<long long>(step.total_steps), step.loss, step.lr);
      }
      const nlohmann::json held_out = trainer.evaluate(2);
      std::printf("held-out: %s\n", held_out.dump().c_str());
      check(held_out.contains("mlm_acc") && std::isfinite(held_out["loss"].get<double>()), "evaluate() reports losses");
      check(trainer.last_checkpoint().has_value(), "the last step wrote a checkpoint");
    }
    size_t training_records = 0;
    bool finite = true;
    for (const auto& r : records) {
      if (!r.contains("split")) ++training_records;
      finite = finite && r["loss"].is_number() && std::isfinite(r["loss"].get<double>());
    }
    check(training_records == 4, "one training record per step reached the callback");
    check(finite, "every loss is finite");
    std::ifstream log(run + "/metrics.jsonl");
    size_t lines = 0;
    for (std::string line; std::getline(log, line);) lines += line.empty() ? 0 : 1;
    check(lines == records.size(), "the callback saw every record of metrics.jsonl");

    // The same run directory, two more steps: resumes from step 4.
    options.overrides = {"data.dir=" + data, "train.steps=6", "train.log_every=1", "train.eval_every=0"};
    coco::Trainer resumed = coco::Trainer::from_file(config, options);
    check(resumed.resumed_from().has_value() && resumed.step() == 4, "a second Trainer resumes at step 4");
    check(resumed.run() == 2 && resumed.done(), "run() takes the remaining 2 steps");

    // The checkpoint is ready for encoding.
    const coco::TextEncoder encoder = coco::TextEncoder::load(run);
    check(encoder.encode("Alice ran after the rabbit.").mean.size() == static_cast<size_t>(encoder.dim()),
          "the trained checkpoint encodes text");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  std::printf("%s\n", failures ? "FAILED" : "OK");
  return failures ? 1 : 0;
}
