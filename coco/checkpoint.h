// Training checkpoints (the training API, coco/trainer.h, writes and resumes them).
//
//   RUN/checkpoints/step-NNNNNNNN/model.safetensors       f32 master weights, dotted parameter names
//                                /optimizer.safetensors   "<name>.exp_avg", "<name>.exp_avg_sq" (f32);
//                                                         metadata "step_counts": {"<name>": n, ...}
//                                /trainer_state.json      step, data position, RNG, loss scale, config hash
//                                /config.json             the resolved configuration of the run
//                                /manifest.json           size and XXH64 of every file (coco/checkpoint_manifest.h)
//                                /vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json
//                                                         the vocabulary the run trains on (coco export reads them)
//   RUN/checkpoints/latest                                 "step-NNNNNNNN\n": the last committed checkpoint
//
// Commit protocol: everything is written (manifest.json last) into checkpoints/.tmp-step-NNNNNNNN (each file fsync'd),
// the directory is fsync'd and renamed to step-NNNNNNNN, then `latest` is replaced by rename of a fsync'd temporary
// file. A crash at any moment leaves `latest` naming a complete checkpoint: the previous one until the final rename,
// the new one after it. Directories that `latest` never named (left by a crash) are removed when the next checkpoint
// commits.
#pragma once
#include <cstdint>
#include <climits>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "coco/checkpoint_manifest.h"
#include "engine/module.h"
#include "engine/ops/optim.h"

namespace coco::checkpoint {

std::string checkpoint_name(int64_t step);  // "step-00000042"

// Test hook for the reliability tests: when the environment variable COCO_FAULT_INJECT equals `point`,
// the process kills itself with SIGKILL right here (an unannounced crash at a chosen moment); with
// "sigint@<point>" / "sigterm@<point>" it sends itself that signal instead, and with "hang@<point>" it stops
// there for ever (a rank that stops responding: the data-parallel tests); with "throw@<point>" it throws a
// std::runtime_error there (a failure on one rank). Points: "after-step:N",
// "checkpoint:{after-model,before-rename,before-latest,after-latest}:N" (N = the step), "trainer:start" and
// "step-graph:capture" (inside the captured step, runtime.cuda_graph).
void fault_point(const std::string& point);

// An exclusive lock on a run directory: flock(2) on RUN/.lock, which the kernel releases when the process
// ends however it ends (no stale lock after a SIGKILL). The file holds the holder's pid for the message a
// second process gets: std::invalid_argument (exit 2) "RUN is in use by another coco process (pid N)".
class RunDirectoryLock {
 public:
  explicit RunDirectoryLock(const std::filesystem::path& run_dir);
  ~RunDirectoryLock();
  RunDirectoryLock(const RunDirectoryLock&) = delete;
  RunDirectoryLock& operator=(const RunDirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

// Writes a file and fsyncs it (and its directory) before returning.
void write_file_synced(const std::filesystem::path& path, const std::string& contents);
// Writes to a temporary sibling, fsyncs, renames over `path`, fsyncs the directory.
void replace_file_atomically(const std::filesystem::path& path, const std::string& contents);
nlohmann::json read_json_file(const std::filesystem::path& path);

struct CheckpointData {
  std::vector<NamedParameter> parameters;
  const optim::AdamW* optimizer = nullptr;  // optional
  nlohmann::json trainer_state;
  nlohmann::json config;
  // Further files of the directory, (name, contents): the tokenizer files (coco/interop/tokenizer_files.h).
  std::vector<std::pair<std::string, std::string>> files = {};
};

// Commits checkpoint `step` under run_dir/checkpoints and keeps the newest `keep` committed ones of this run.
// Returns the checkpoint directory. Refuses (std::runtime_error naming the tensor, nothing committed) to
// write non-finite weights or optimizer moments. manifest.json (coco/checkpoint_manifest.h) is written last.
//
// Retention never deletes a checkpoint with a higher step than `step` (it may be the only copy of a later
// run's work), nor one whose trainer_state.json "run_id" differs from data.trainer_state's "run_id" (a run
// this one did not resume). Without a "run_id" in data.trainer_state, every older checkpoint counts as this
// run's.
std::filesystem::path write_checkpoint(const std::filesystem::path& run_dir, int64_t step, const CheckpointData& data,
                                       int64_t keep);

// A fresh run identity for trainer_state.json "run_id" (random, 16 hex digits).
std::string new_run_id();

// The directory `run_dir/checkpoints/latest` names, if any (a missing or dangling `latest` is an error
// only when the file exists but names nothing valid).
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& run_dir);

// Where a run directory continues from. `latest` when it names a checkpoint (whose manifest must verify:
// a damaged one is a CheckpointError naming the file, never silently skipped); when `latest` is missing,
// dangling, a symlink loop or names no checkpoint, the newest checkpoints/step-* whose manifest verifies,
// with `note` saying so (and which candidates were skipped). No checkpoint at all: dir empty. Checkpoint
// directories exist but none is valid: CheckpointError (a fresh start there would bury them).
struct ResumePoint {
  std::optional<std::filesystem::path> dir;
  std::string note;  // empty when `latest` was used as is
};
ResumePoint find_resume_checkpoint(const std::filesystem::path& run_dir);

// `path` is a checkpoint directory (has trainer_state.json) or a run directory (find_resume_checkpoint);
// the checkpoint is verified against its manifest (coco/checkpoint_manifest.h) before it is returned.
std::filesystem::path resolve_checkpoint_dir(const std::filesystem::path& path);

// trainer_state.json, fully validated: types, ranges and agreement between fields and with the directory
// name (step-NNNNNNNN). Errors are CheckpointError naming the file and the key.
struct TrainerState {
  nlohmann::json json;
  int64_t step = 0, skipped_steps = 0, consecutive_skips = 0, tokens_seen = 0;
  uint64_t cursor = 0, sequences = 0;
  std::string run_id;  // empty in checkpoints written before runs had one
  std::optional<optim::GradScaler::State> grad_scaler;
};
TrainerState read_trainer_state(const std::filesystem::path& checkpoint_dir);

// Copies the saved weights into `parameters` (same names, shapes; f32, finite). Throws CheckpointError naming
// the file and the first missing / extra / mismatched / non-finite tensor.
void load_weights(const std::filesystem::path& checkpoint_dir, const std::vector<NamedParameter>& parameters);
// Also checks each step count is in [0, max_step_count] (the checkpoint's step less its skipped steps).
void load_optimizer(const std::filesystem::path& checkpoint_dir, optim::AdamW& optimizer,
                    int64_t max_step_count = INT64_MAX);
// The same checks and reads, one parameter at a time, without an optimizer to load into: for each of
// `parameters` (name and shape of the master) in order, `load(i, step_count, exp_avg, exp_avg_sq)` receives
// its state as f32 CPU tensors (only one parameter's state is held at a time: ZeRO-1 keeps its shard of it).
void load_optimizer_state(
    const std::filesystem::path& checkpoint_dir, const std::vector<std::pair<std::string, Shape>>& parameters,
    int64_t max_step_count,
    const std::function<void(size_t, int64_t, const Tensor& exp_avg, const Tensor& exp_avg_sq)>& load);

}  // namespace coco::checkpoint
