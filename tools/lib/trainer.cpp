#include "tools/lib/trainer.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "coco/checkpoint.h"
#include "coco/progress.h"
#include "coco/trainer.h"
#include "engine/dist/launch.h"

namespace coco::tools {

namespace fs = std::filesystem;

namespace {

// Signals: the first SIGINT/SIGTERM asks for a clean stop after the current step (the Trainer writes a
// checkpoint); a second one exits.
std::atomic<int> g_stop_signal{0};

extern "C" void on_stop_signal(int signal_number) {
  if (g_stop_signal.exchange(signal_number) != 0) ::_exit(128 + signal_number);
}

class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGINT, &action, &old_int_);
    ::sigaction(SIGTERM, &action, &old_term_);
  }
  ~StopSignals() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  int received() const { return g_stop_signal.load(); }

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

}  // namespace

// `coco train` is the training API (coco/trainer.h) with a progress display and signal handling.
int run_train(const TrainOptions& options) {
  // Under mpirun/srun the Trainer reports on rank 0 only; so do these lines.
  const bool reporting = dist::detect_launch().rank == 0;
  ProgressLine progress(stdout);
  TrainerOptions trainer_options;
  trainer_options.run_dir = options.out_dir;
  trainer_options.overrides = options.overrides;
  trainer_options.on_message = [&](const std::string& line) { progress.line(line); };
  trainer_options.on_step = [&](const StepReport& report) {
    progress.status(progress_bar(static_cast<double>(report.step), static_cast<double>(report.total_steps)) + " " +
                    report.status);
    if (report.logged) progress.line(report.status);
  };
  trainer_options.stop_requested = [] { return g_stop_signal.load() != 0; };
  if (options.resume) {
    fs::create_directories(options.out_dir);
    if (reporting && !checkpoint::find_resume_checkpoint(options.out_dir).dir)
      std::printf("nothing to resume in %s (no checkpoints/latest): starting from step 0\n", options.out_dir.c_str());
  }
  g_stop_signal = 0;
  Trainer trainer = Trainer::from_file(options.config_path, std::move(trainer_options));
  if (trainer.done()) {
    if (reporting)
      std::printf("nothing to do: the run is at step %lld of train.steps = %lld\n",
                  static_cast<long long>(trainer.step()), static_cast<long long>(trainer.total_steps()));
    return 0;
  }
  StopSignals signals;
  trainer.run();
  progress.finish();
  if (!trainer.done()) {
    const auto checkpoint = trainer.last_checkpoint();
    if (reporting)
      std::printf("stopped by %s after step %lld; %s. Continue with: coco train --config %s --out %s --resume\n",
                  signals.received() == SIGINT ? "SIGINT" : "SIGTERM", static_cast<long long>(trainer.step()),
                  checkpoint ? ("checkpoint " + checkpoint->string() + " written").c_str()
                             : "no checkpoint written for this step",
                  options.config_path.c_str(), options.out_dir.c_str());
    return 0;
  }
  const auto checkpoint = trainer.last_checkpoint();
  if (reporting)
    std::printf("done: %lld steps; final checkpoint %s\n", static_cast<long long>(trainer.total_steps()),
                checkpoint ? checkpoint->c_str() : "(none)");
  return 0;
}

int run_eval(const EvalOptions& options) {
  const EvalReport report = evaluate_checkpoint(options);
  for (const auto& warning : report.warnings) std::printf("%s\n", warning.c_str());
  std::printf("%s\n%s\n%s", report.checkpoint_line.c_str(), report.data_line.c_str(), report.table.c_str());
  if (!options.json_path.empty()) checkpoint::replace_file_atomically(options.json_path, report.json + "\n");
  std::printf("%s\n", report.json.c_str());
  return 0;
}

}  // namespace coco::tools
