// Training checkpoints.
//
//   RUN/checkpoints/step-NNNNNNNN/model.safetensors       f32 master weights, dotted parameter names
//                                /optimizer.safetensors   "<name>.exp_avg", "<name>.exp_avg_sq" (f32);
//                                                         metadata "step_counts": {"<name>": n, ...}
//                                /trainer_state.json      step, data position, RNG, loss scale, config hash
//                                /config.json             the resolved configuration of the run
//                                /vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json
//                                                         the vocabulary the run trains on (coco export reads them)
//   RUN/checkpoints/latest                                 "step-NNNNNNNN\n": the last committed checkpoint
//
// Commit protocol: everything is written into checkpoints/.tmp-step-NNNNNNNN (each file fsync'd), the
// directory is fsync'd and renamed to step-NNNNNNNN, then `latest` is replaced by rename of a fsync'd
// temporary file. A crash at any moment leaves `latest` naming a complete checkpoint: the previous one
// until the final rename, the new one after it. Directories that `latest` never named (left by a crash)
// are removed when the next checkpoint commits.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/module.h"
#include "engine/ops/optim.h"

namespace coco::tools {

std::string checkpoint_name(int64_t step);  // "step-00000042"

// Test hook for the reliability tests: when the environment variable COCO_FAULT_INJECT equals `point`,
// the process kills itself with SIGKILL right here (an unannounced crash at a chosen moment); with
// "sigint@<point>" / "sigterm@<point>" it sends itself that signal instead. Points: "after-step:N" and
// "checkpoint:{after-model,before-rename,before-latest,after-latest}:N" (N = the step).
void fault_point(const std::string& point);

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

// Commits checkpoint `step` under run_dir/checkpoints and keeps the newest `keep` committed ones.
// Returns the checkpoint directory.
std::filesystem::path write_checkpoint(const std::filesystem::path& run_dir, int64_t step, const CheckpointData& data,
                                       int64_t keep);

// The directory `run_dir/checkpoints/latest` names, if any (a missing or dangling `latest` is an error
// only when the file exists but names nothing valid).
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& run_dir);

// `path` is a checkpoint directory (has trainer_state.json) or a run directory (its latest checkpoint).
std::filesystem::path resolve_checkpoint_dir(const std::filesystem::path& path);

// Copies the saved weights into `parameters` (same names, shapes; f32). Throws std::runtime_error naming
// the file and the first missing / extra / mismatched tensor.
void load_weights(const std::filesystem::path& checkpoint_dir, const std::vector<NamedParameter>& parameters);
void load_optimizer(const std::filesystem::path& checkpoint_dir, optim::AdamW& optimizer);

}  // namespace coco::tools
