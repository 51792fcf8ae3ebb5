// The training API: COCO-LM pretraining from a config and a prepared data directory, with the files and
// semantics of `coco train` (which is a thin client of it) and `coco eval`.
//
//   coco::TrainerOptions options;
//   options.run_dir = "runs/mine";
//   options.on_metrics = [](const nlohmann::json& record) { ... };    // every metrics.jsonl record
//   coco::Trainer trainer = coco::Trainer::from_file("configs/demo.json", options);
//   while (!trainer.done()) trainer.train_step();                       // or trainer.run()
//
// One optimizer step: for each of train.grad_accum micro-batches, a forward pass recorded on a fresh tape
// (Philox keyed by the step and each row's index in the step's global batch) and backward of loss / grad_accum; then
// non-finite gradients skip the step (counted; more than train.max_consecutive_skips in a row stop the run with a
// std::runtime_error naming the last good checkpoint), else the global norm is clipped and AdamW applies the scheduled
// LR. The schedule of the config applies inside train_step(): a metrics record every train.log_every steps (and for
// every skipped step), an evaluation on the valid split every train.eval_every steps and at the end, a checkpoint every
// train.checkpoint_every steps and at the end.
//
// On CUDA (issue #14) the skip, the clipping, the AdamW scalars and the f16 loss scale are decided on the device
// and a step's losses, norm and skip flag come off the device only at the logging cadence: a step between
// records reports NaN for its loss and grad_norm and an empty summary, and a skipped step is seen at the next
// record (which then stops the run if the skips in a row exceed train.max_consecutive_skips). On the CPU every
// step is read, as before. Data-parallel runs (plain and ZeRO-1) decide on the device too, every rank alike.
//
// RUN_DIR/config.json is the resolved configuration; RUN_DIR/metrics.jsonl gets one JSON object per logged step
//   {"step", "loss", "mlm_loss", "rtd_loss", ["clm_loss",] "cl_loss", "mlm_acc", "rtd_acc", "cl_acc", ["clm_acc",]
//    "lr", "grad_norm", "tokens_per_s", "loss_scale", "skipped", "epoch"}
// and per evaluation {"step", "split": "valid", "loss", ... "sequences"} (floats as %.9g, non-finite as null; names
// explained in docs/metrics.md); RUN_DIR/checkpoints/step-NNNNNNNN/ the checkpoints (coco/checkpoint.h).
// Construction resumes from the run directory's latest checkpoint when there is one (bit-identical losses on the
// same backend; a config that changes the model's shape or data of another vocabulary is refused), and cuts
// metrics.jsonl back to the records of steps up to it. The run directory is locked while the Trainer lives.
//
// Errors: ConfigError / DataError (std::invalid_argument; `coco` exits 2) name the file, key and expected value;
// std::runtime_error (exit 1) for failures while training. Under a data-parallel launch (mpirun, srun) a failure on
// one rank inside train_step() or save() does not come back as an exception: the other ranks are in, or on their
// way to, a collective this rank will not join, so the Trainer prints "error: rank R of N: ...; aborting the job on
// every rank" and ends the whole job at once (MPI_Abort) with the exit code of coco/exit_code.h.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace coco {

// What one optimizer step did (Trainer::train_step()).
struct StepReport {
  int64_t step = 0;         // optimizer steps completed, this one included
  int64_t total_steps = 0;  // train.steps
  bool skipped = false;     // non-finite loss or gradients: the weights were left as they were
  bool logged = false;      // a metrics record was written for this step
  double loss = 0, lr = 0, grad_norm = 0, tokens_per_s = 0, seconds = 0;
  double eta_seconds = 0;  // to train.steps at the pace since construction
  std::string summary;     // "loss 41.9161 mlm_loss 8.8490 rtd_loss 0.5242 clm_loss 3.4294 cl_loss 3.4277"
  std::string status;      // coco train's progress line: "step 10/250 loss ... lr 4e-04 tokens_per_s 2327 | ETA 1m52s"
  std::optional<std::filesystem::path> checkpoint;  // written after this step
  bool stopped = false;                             // stop_requested() said so (a checkpoint was written)
};

struct TrainerOptions {
  std::filesystem::path run_dir;       // created when missing
  std::vector<std::string> overrides;  // "train.steps=200": dotted config keys, applied before parsing
  // Called with every record appended to metrics.jsonl, after it is written.
  std::function<void(const nlohmann::json& record)> on_metrics;
  // Lines for a human (the model report, "resuming from ...", "eval ...", "checkpoint: DIR", warnings); default:
  // dropped.
  std::function<void(const std::string& line)> on_message;
  // After every step's metrics record, before its evaluation and checkpoint (a progress display).
  std::function<void(const StepReport& report)> on_step;
  // Asked after every step: true makes that step write a checkpoint and run() return (coco train's SIGINT).
  std::function<bool()> stop_requested;
};

class Trainer {
 public:
  // `config_path`: a JSON config (configs/demo.json); `config`: the same as a JSON object, `source` naming it in
  // error messages. data.dir is the prepared data directory (`coco prepare --out`).
  static Trainer from_file(const std::filesystem::path& config_path, TrainerOptions options);
  static Trainer from_json(const nlohmann::json& config, const std::string& source, TrainerOptions options);
  Trainer(Trainer&&) noexcept;
  Trainer& operator=(Trainer&&) noexcept;
  ~Trainer();

  int64_t step() const;         // optimizer steps completed (a resumed run starts at its checkpoint's)
  int64_t total_steps() const;  // train.steps
  bool done() const { return step() >= total_steps(); }
  std::optional<std::filesystem::path> resumed_from() const;
  std::optional<std::filesystem::path> last_checkpoint() const;
  const nlohmann::json& config() const;  // the resolved configuration (RUN_DIR/config.json)
  std::filesystem::path run_dir() const;

  // One optimizer step with the config's logging, evaluation and checkpoint schedule. std::logic_error when
  // done().
  StepReport train_step();
  // Held-out metrics now (loss, mlm_loss, ..., mlm_acc, ..., "sequences"): `batches` micro-batches of the valid
  // split (-1: train.eval_batches, 0: all of it). Writes nothing. DataError when the data has no valid split.
  nlohmann::json evaluate(int64_t batches = -1);
  // Commits a checkpoint of the current step now; returns its directory.
  std::filesystem::path save();
  // Steps until done() or until options.stop_requested() returns true. Returns the steps taken.
  int64_t run();

 private:
  struct Impl;
  explicit Trainer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `coco eval`: a checkpoint's held-out losses and accuracies.
struct EvalOptions {
  std::string checkpoint;  // checkpoint directory or run directory (its latest)
  std::string data_dir;    // empty: the run's data.dir
  std::string split = "valid";
  int64_t batches = -1;     // -1: the run's train.eval_batches; 0: the whole split
  int64_t micro_batch = 0;  // 0: the run's train.micro_batch
  std::string device;       // empty: the run's runtime.device
  // key=value on the checkpoint's config.json (data.*, train.eval_batches, runtime.device, ...); a change of the
  // model's shape is refused.
  std::vector<std::string> overrides;
};

struct EvalReport {
  nlohmann::json record;        // {"checkpoint", "step", "split", "loss", ..., "sequences", "masked_tokens"}
  std::string json;             // the record as coco eval prints it (floats as %.9g)
  std::string checkpoint_line;  // "checkpoint  DIR (step N)"
  std::string data_line;        // "data        DIR, split valid: N sequences in M batches"
  std::string table;            // metric, value and meaning, one per line
  std::vector<std::string> warnings;
};

EvalReport evaluate_checkpoint(const EvalOptions& options);

}  // namespace coco
