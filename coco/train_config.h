// The `coco train` configuration: one JSON file with the sections
//   "model"      (model/config.h), "objective" (coco/objective.h),
//   "data"       {"dir": prepared directory, "seq_len": T, "shuffle": true, "prefetch": 4},
//   "optim"      {"lr", "betas": [b1, b2], "eps", "weight_decay", "no_decay": [name substrings],
//                 "warmup_steps", "schedule": "linear" | "cosine", "clip_norm", "zero": 0 | 1},
//   "train"      {"steps", "micro_batch", "grad_accum" | "global_batch", "seed", "log_every", "eval_every",
//                 "eval_batches", "checkpoint_every", "keep_checkpoints", "max_consecutive_skips"}; global_batch (rows
//                 per optimizer step over all ranks) replaces grad_accum, which is then derived per launch as
//                 global_batch / (ranks x micro_batch) (apply_world_size),
//   "precision"  "f32" | "bf16" | "f16",
//   "runtime"    {"device": "cuda" | "cpu" | "auto", "threads": N (CPU backend; 0 or absent: every core the
//                 process may use), "cuda_graph": true | false (capture the training step once as a CUDA graph
//                 and replay it every step; absent: on for the cuda device, off on the cpu; true on the cpu
//                 device is a ConfigError)},
//   "dist"       {"bucket_mb": gradient bucket size in MiB (default 25), "reduce_dtype": "f32" | "bf16" (default
//                 "f32"), "timeout_s": seconds a collective may take before the job is declared stuck (a dead or
//                 hanging rank) and aborted on every rank (default 300)}: data parallelism under mpirun/srun
//                 (engine/dist/grad_sync.h); optional.
// Read strictly (engine/config.h): unknown keys, wrong types and out-of-range values are ConfigErrors
// naming the file and the dotted key. `--set key.path=value` overrides are applied to the JSON first.
//
// The vocabulary belongs to the data: model.vocab_size and objective.{pad,unk,cls,sep,mask}_id, when absent or
// "auto", take their values from the prepared data's meta.json (data.dir), so one config trains on data prepared
// with any vocabulary. An explicit value must agree with the data (check_data_against_config); objective.sep_id /
// unk_id = -1 explicitly means "not used" (documents packed without [SEP]).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coco/data_loader.h"
#include "coco/objective.h"
#include "engine/device.h"
#include "model/config.h"

namespace coco::train {

struct DataConfig {
  std::string dir;  // prepared directory (coco prepare --out), made absolute when loaded
  int64_t seq_len = 128;
  bool shuffle = true;   // a new order of the packed sequences every epoch, from train.seed
  int64_t prefetch = 4;  // micro-batches prepared ahead by the loader thread
};

struct OptimConfig {
  double lr = 1e-3;  // peak
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
  // Parameters whose dotted name contains one of these get no weight decay, in addition to the ones
  // their module registers without it (biases, LayerNorm parameters).
  std::vector<std::string> no_decay;
  int64_t warmup_steps = 0;
  std::string schedule = "linear";  // decay after warmup: "linear" (to 0 at train.steps) | "cosine"
  // optim.zero: 1 shards the AdamW state and f32 masters over the data-parallel ranks (ZeRO stage 1,
  // engine/dist/zero.h); 0 (default) keeps a whole copy on every rank. f32 precision only.
  int64_t zero = 0;
  double clip_norm = 1.0;  // 0 disables clipping
};

struct LoopConfig {
  int64_t steps = 100;
  int64_t micro_batch = 8;
  int64_t grad_accum = 1;
  // train.global_batch; 0 when the config sets grad_accum instead. The same run (data order, randomness,
  // gradients up to reduction order) on any number of ranks that divides it.
  int64_t global_batch = 0;
  uint64_t seed = 1;
  int64_t log_every = 10;
  int64_t eval_every = 0;        // 0: only at the end (when a valid split exists)
  int64_t eval_batches = 20;     // micro-batches of the valid split per evaluation; 0 = all of it
  int64_t checkpoint_every = 0;  // 0: only at the end
  int64_t keep_checkpoints = 2;
  int64_t max_consecutive_skips = 10;
};

struct TrainConfig {
  model::ModelConfig model;
  objective::ObjectiveConfig objective;
  DataConfig data;
  OptimConfig optim;
  LoopConfig train;
  std::string precision = "f32";
  std::string device_setting = "auto";
  int64_t threads = 0;  // runtime.threads: CPU backend threads (kernels and BLAS); 0 = the cores the process may use
  // runtime.cuda_graph as written: absent (the default for the device and launch), true or false. The Trainer
  // resolves it (coco/step_graph.h); true on the cpu device is refused here.
  std::optional<bool> cuda_graph;
  Device device = Device::cpu;            // `device_setting` resolved
  double dist_bucket_mb = 25;             // dist.bucket_mb
  std::string dist_reduce_dtype = "f32";  // dist.reduce_dtype
  double dist_timeout_s = 300;            // dist.timeout_s: a collective that takes longer ends the job
};

// Reads `path`, applies `overrides` ("train.steps=200"), takes the keys it leaves to the data from data.dir's
// meta.json, parses and validates everything. Throws ConfigError (file, dotted key, expected value) for any problem
// of the config, DataError when the data it leaves the vocabulary to cannot be read.
TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same for a configuration already in memory; `source` names it in messages.
TrainConfig load_train_config_json(nlohmann::json root, const std::string& source,
                                   const std::vector<std::string>& overrides = {});
// Parses an already-merged JSON document in which nothing is left to the data; `source` names it in messages.
TrainConfig parse_train_config(const nlohmann::json& root, const std::string& source);

// With train.global_batch set: train.grad_accum = global_batch / (world_size x micro_batch). ConfigError naming
// the keys and values when that does not divide (every rank computes the same and refuses alike).
void apply_world_size(TrainConfig& config, int world_size, const std::string& source);

// The dotted keys of the vocabulary (model.vocab_size, objective.*_id) that `root` leaves to the data: absent or
// "auto". A section that is not an object is left for the parser to report.
std::vector<std::string> keys_left_to_data(const nlohmann::json& root);
// Sets every key left to the data from `meta`.
void take_vocabulary_from_data(nlohmann::json& root, const data::PreparedMeta& meta);

// Who set the values check_data_against_config compares: the user's config (train) or a checkpoint (eval, whose
// vocabulary is fixed by its weights). It only changes the advice in the message.
enum class ConfigOrigin { user, checkpoint };
// The prepared data must have the config's vocabulary size and special ids (ids < 0 are unused and not compared).
// DataError naming the key, both values and what to do otherwise.
void check_data_against_config(const data::PreparedMeta& meta, const TrainConfig& config, const std::string& source,
                               ConfigOrigin origin);

// The complete configuration with every default filled in; parse_train_config(to_json(c)) == c.
nlohmann::json train_config_to_json(const TrainConfig& config);

// "auto": cuda when this is a gpu build and a device is usable, else cpu.
Device resolve_device(const std::string& setting);

// The learning rate of optimizer step `step` (0-based): linear warmup to the peak over warmup_steps
// (step s gets peak * (s + 1) / warmup), then linear or cosine decay to 0 at train.steps.
double learning_rate(const OptimConfig& optim, int64_t total_steps, int64_t step);

// Differences between the shape-determining parts of two configs (model section except dropout,
// objective preset and SCL width), as "model.discriminator.depth: 2 -> 3" lines; empty when equal.
std::vector<std::string> model_shape_differences(const TrainConfig& before, const TrainConfig& after);

// 64-bit FNV-1a of the canonical JSON of the configuration, as "0x%016x".
std::string config_hash(const TrainConfig& config);

}  // namespace coco::train
