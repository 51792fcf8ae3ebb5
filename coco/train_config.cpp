#include "coco/train_config.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "engine/config.h"

namespace coco::train {

namespace {

DataConfig parse_data(ConfigObject r) {
  DataConfig d;
  d.dir = r.get_string("dir", "");
  if (d.dir.empty()) r.fail("dir", "the path of a directory written by `coco prepare` (data.dir)");
  d.seq_len = r.get_int("seq_len", d.seq_len, 2, 1 << 20);
  d.shuffle = r.get_bool("shuffle", d.shuffle);
  d.prefetch = r.get_int("prefetch", d.prefetch, 1, 1024);
  r.finish();
  return d;
}

// `betas` (two numbers) and `no_decay` (strings) have no typed getter: they are read from the raw JSON
// and the remaining keys go through a ConfigObject, so unknown keys are still rejected.
OptimConfig parse_optim(const nlohmann::json& raw, const std::string& source) {
  OptimConfig o;
  auto fail = [&](const std::string& key, const std::string& expected) {
    throw ConfigError(source + ": key 'optim." + key + "': expected " + expected + ", got " + raw.at(key).dump());
  };
  if (raw.contains("betas")) {
    const nlohmann::json& betas = raw.at("betas");
    if (!betas.is_array() || betas.size() != 2 || !betas[0].is_number() || !betas[1].is_number())
      fail("betas", "a list of two numbers in [0, 1), e.g. [0.9, 0.98]");
    o.beta1 = betas[0].get<double>();
    o.beta2 = betas[1].get<double>();
    if (!(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1))
      fail("betas", "a list of two numbers in [0, 1), e.g. [0.9, 0.98]");
  }
  if (raw.contains("no_decay")) {
    const nlohmann::json& list = raw.at("no_decay");
    if (!list.is_array()) fail("no_decay", "a list of parameter-name substrings");
    for (const auto& e : list) {
      if (!e.is_string() || e.get<std::string>().empty()) fail("no_decay", "a list of non-empty strings");
      o.no_decay.push_back(e.get<std::string>());
    }
  }
  nlohmann::json rest = raw;
  rest.erase("betas");
  rest.erase("no_decay");
  ConfigObject r(rest, source, "optim");
  o.lr = r.get_double("lr", o.lr, 0.0, 10.0);
  o.eps = r.get_double("eps", o.eps, 0.0, 1.0);
  // AdamW divides by sqrt(v) + eps: with eps = 0, an element whose gradient has always been zero (an unused
  // vocabulary row) gets 0 / 0 and the update writes NaN into the weights.
  if (o.eps <= 0) r.fail("eps", "a number in (0, 1] (0 turns the update of never-used weights into 0/0 = NaN)");
  o.weight_decay = r.get_double("weight_decay", o.weight_decay, 0.0, 10.0);
  // Decoupled weight decay multiplies every weight by 1 - lr * weight_decay per step: at 1 or more the
  // weights flip sign and grow geometrically until they overflow, whatever the gradients are.
  if (o.lr * o.weight_decay >= 1.0) {
    std::ostringstream product;
    product << o.lr * o.weight_decay;
    r.fail("weight_decay", "a value with lr * weight_decay < 1 (got lr * weight_decay = " + product.str() +
                               ": the decay would make the weights diverge)");
  }
  o.warmup_steps = r.get_int("warmup_steps", o.warmup_steps, 0, INT64_MAX / 4);
  o.schedule = r.get_choice("schedule", o.schedule, {"linear", "cosine"});
  o.clip_norm = r.get_double("clip_norm", o.clip_norm, 0.0, 1e9);
  o.zero = r.get_int("zero", o.zero, 0, 1);
  r.finish();
  return o;
}

LoopConfig parse_loop(ConfigObject r) {
  LoopConfig t;
  t.steps = r.get_int("steps", t.steps, 1, INT64_MAX / 4);
  t.micro_batch = r.get_int("micro_batch", t.micro_batch, 1, 1 << 20);
  t.grad_accum = r.get_int("grad_accum", t.grad_accum, 1, 1 << 20);
  t.global_batch = r.get_int("global_batch", 0, 1, int64_t{1} << 30);
  if (r.has("global_batch") && r.has("grad_accum"))
    r.fail("grad_accum",
           "absent when train.global_batch is set (grad_accum is derived: global_batch / (ranks x micro_batch))");
  if (t.global_batch > 0 && t.global_batch % t.micro_batch != 0)
    r.fail("global_batch", "a multiple of train.micro_batch (" + std::to_string(t.micro_batch) + ")");
  t.seed = static_cast<uint64_t>(r.get_int("seed", static_cast<int64_t>(t.seed), 0, INT64_MAX));
  t.log_every = r.get_int("log_every", t.log_every, 1, INT64_MAX / 4);
  t.eval_every = r.get_int("eval_every", t.eval_every, 0, INT64_MAX / 4);
  t.eval_batches = r.get_int("eval_batches", t.eval_batches, 0, INT64_MAX / 4);
  t.checkpoint_every = r.get_int("checkpoint_every", t.checkpoint_every, 0, INT64_MAX / 4);
  t.keep_checkpoints = r.get_int("keep_checkpoints", t.keep_checkpoints, 1, 1 << 20);
  t.max_consecutive_skips = r.get_int("max_consecutive_skips", t.max_consecutive_skips, 0, 1 << 30);
  r.finish();
  return t;
}

constexpr const char* kSpecialIdKeys[] = {"pad_id", "unk_id", "cls_id", "sep_id", "mask_id"};

uint64_t fnv1a(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

void collect_differences(const nlohmann::json& a, const nlohmann::json& b, const std::string& path,
                         std::vector<std::string>& out) {
  if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      const std::string key = path + "." + it.key();
      if (!b.contains(it.key()))
        out.push_back(key + ": " + it.value().dump() + " -> (absent)");
      else
        collect_differences(it.value(), b.at(it.key()), key, out);
    }
    for (auto it = b.begin(); it != b.end(); ++it)
      if (!a.contains(it.key())) out.push_back(path + "." + it.key() + ": (absent) -> " + it.value().dump());
    return;
  }
  if (a != b) out.push_back(path + ": " + a.dump() + " -> " + b.dump());
}

nlohmann::json shape_view(const TrainConfig& c) {
  nlohmann::json model = model::model_config_to_json(c.model);
  for (const char* encoder : {"generator", "discriminator"}) model[encoder].erase("dropout");
  return {{"model", model},
          {"objective",
           {{"preset", c.objective.preset == objective::Preset::paper ? "paper" : "lucidrains"},
            {"scl_dim", c.objective.scl_dim}}}};
}

}  // namespace

Device resolve_device(const std::string& setting) {
  if (setting == "cpu") return Device::cpu;
  if (setting == "cuda") return Device::cuda;
#if defined(COCO_CUDA_GPU)
  return cuda_available() ? Device::cuda : Device::cpu;
#else
  return Device::cpu;  // emulated build: the emulator is for tests, the CPU backend is faster
#endif
}

std::vector<std::string> keys_left_to_data(const nlohmann::json& root) {
  std::vector<std::string> keys;
  if (!root.is_object()) return keys;
  auto left = [](const nlohmann::json& section, const char* key) {
    return !section.contains(key) || section.at(key) == "auto";
  };
  const nlohmann::json empty = nlohmann::json::object();
  const nlohmann::json& model = root.contains("model") ? root.at("model") : empty;
  const nlohmann::json& objective = root.contains("objective") ? root.at("objective") : empty;
  if (model.is_object() && left(model, "vocab_size")) keys.push_back("model.vocab_size");
  if (objective.is_object())
    for (const char* id : kSpecialIdKeys)
      if (left(objective, id)) keys.push_back(std::string("objective.") + id);
  return keys;
}

void take_vocabulary_from_data(nlohmann::json& root, const data::PreparedMeta& meta) {
  for (const std::string& key : keys_left_to_data(root)) {
    const std::string section = key.substr(0, key.find('.')), name = key.substr(key.find('.') + 1);
    nlohmann::json value;
    if (name == "vocab_size") value = meta.vocab_size;
    if (name == "pad_id") value = meta.pad_id;
    if (name == "unk_id") value = meta.unk_id;
    if (name == "cls_id") value = meta.cls_id;
    if (name == "sep_id") value = meta.sep_id;
    if (name == "mask_id") value = meta.mask_id;
    root[section][name] = value;
  }
}

void check_data_against_config(const data::PreparedMeta& meta, const TrainConfig& config, const std::string& source,
                               ConfigOrigin origin) {
  const std::string meta_path = (meta.dir / "meta.json").string();
  const std::string checkpoint_advice =
      "; the checkpoint's weights fix its vocabulary: use data prepared with the checkpoint's vocabulary";
  if (meta.vocab_size != static_cast<uint64_t>(config.model.vocab_size))
    throw data::DataError(
        meta_path + ": the prepared data uses a vocabulary of " + std::to_string(meta.vocab_size) + " tokens, but " +
        source + " sets model.vocab_size = " + std::to_string(config.model.vocab_size) +
        (origin == ConfigOrigin::user
             ? " (expected them to be equal: leave model.vocab_size to the data by removing it or setting it to "
               "\"auto\", e.g. --set model.vocab_size=auto)"
             : checkpoint_advice));
  const auto& o = config.objective;
  struct Check {
    const char* key;
    int64_t configured, prepared;
  };
  for (const Check& c : {Check{"pad_id", o.pad_id, meta.pad_id}, Check{"cls_id", o.cls_id, meta.cls_id},
                         Check{"mask_id", o.mask_id, meta.mask_id}, Check{"sep_id", o.sep_id, meta.sep_id},
                         Check{"unk_id", o.unk_id, meta.unk_id}}) {
    if (c.configured < 0) continue;  // optional id not used by this config
    if (c.configured != c.prepared)
      throw data::DataError(source + ": key 'objective." + c.key + "' is " + std::to_string(c.configured) +
                            ", but the vocabulary of " + meta_path + " has it at " + std::to_string(c.prepared) +
                            (origin == ConfigOrigin::user
                                 ? std::string(" (expected equal ids: leave it to the data by removing it or setting "
                                               "it to \"auto\", e.g. --set objective.") +
                                       c.key + "=auto)"
                                 : checkpoint_advice));
  }
}

TrainConfig parse_train_config(const nlohmann::json& root, const std::string& source) {
  if (const auto left = keys_left_to_data(root); !left.empty())
    throw ConfigError(source + ": key '" + left.front() +
                      "': left to the prepared data (absent or \"auto\"), but no prepared data was read for it: "
                      "expected data.dir to name a directory written by `coco prepare`, or an explicit value");
  ConfigObject r(root, source, "");
  TrainConfig c;
  if (!r.has("model")) r.fail("model", "an object describing the model (see configs/demo.json)");
  c.model = model::parse_model_config(r.get_object("model"));
  model::validate_model_config(c.model, source);
  c.objective = objective::parse_objective_config(r.get_object("objective"));
  if (!r.has("data")) r.fail("data", "an object with at least \"dir\" (a directory written by `coco prepare`)");
  c.data = parse_data(r.get_object("data"));
  {
    (void)r.get_object("optim");  // type check and mark consumed; the keys are read below
    static const nlohmann::json kEmpty = nlohmann::json::object();
    c.optim = parse_optim(root.contains("optim") ? root.at("optim") : kEmpty, source);
  }
  c.train = parse_loop(r.get_object("train"));
  c.precision = r.get_choice("precision", c.precision, {"f32", "bf16", "f16"});
  {
    ConfigObject runtime = r.get_object("runtime");
    c.device_setting = runtime.get_choice("device", c.device_setting, {"auto", "cuda", "cpu"});
    c.threads = runtime.get_int("threads", c.threads, 0, 4096);
    if (runtime.has("cuda_graph")) c.cuda_graph = runtime.get_bool("cuda_graph", false);
    runtime.finish();
  }
  if (r.has("dist")) {
    ConfigObject dist = r.get_object("dist");
    c.dist_bucket_mb = dist.get_double("bucket_mb", c.dist_bucket_mb, 1.0 / 1024, 4096);
    c.dist_reduce_dtype = dist.get_choice("reduce_dtype", c.dist_reduce_dtype, {"f32", "bf16"});
    c.dist_timeout_s = dist.get_double("timeout_s", c.dist_timeout_s, 0.1, 86400);
    dist.finish();
  }
  r.finish();
  c.device = resolve_device(c.device_setting);
  if (c.precision != "f32" && c.device != Device::cuda)
    throw ConfigError(source + ": key 'precision': \"" + c.precision +
                      "\" (16-bit weights and activations) needs runtime.device = cuda; the CPU backend computes in "
                      "f32: expected \"f32\" on the cpu device");
  if (c.cuda_graph.value_or(false) && c.device != Device::cuda)
    throw ConfigError(source +
                      ": key 'runtime.cuda_graph': true captures the training step as a CUDA graph, which needs "
                      "runtime.device = cuda (the device resolved to cpu); expected false or no key on the cpu device");

  if (c.data.seq_len > c.model.max_positions)
    throw ConfigError(source + ": key 'data.seq_len': expected at most model.max_positions (" +
                      std::to_string(c.model.max_positions) + "), got " + std::to_string(c.data.seq_len));
  if (c.optim.warmup_steps > c.train.steps)
    throw ConfigError(source + ": key 'optim.warmup_steps': expected at most train.steps (" +
                      std::to_string(c.train.steps) + "), got " + std::to_string(c.optim.warmup_steps));
  if (c.objective.preset == objective::Preset::paper && c.objective.sep_id < 0)
    throw ConfigError(source +
                      ": key 'objective.sep_id': the paper preset packs documents with [SEP]; expected a token id");
  objective::validate_objective_config(c.objective, c.model, c.train.micro_batch, source);
  return c;
}

TrainConfig load_train_config(const std::string& path, const std::vector<std::string>& overrides) {
  return load_train_config_json(load_json_file(path), path, overrides);
}

TrainConfig load_train_config_json(nlohmann::json root, const std::string& path,
                                   const std::vector<std::string>& overrides) {
  if (!root.is_object()) throw ConfigError(path + ": the top level: expected a JSON object");
  for (const auto& assignment : overrides) apply_override(root, assignment);
  const std::string source = overrides.empty() ? path : path + " (with --set overrides)";
  if (const auto left = keys_left_to_data(root); !left.empty()) {
    const nlohmann::json* dir = nullptr;
    if (root.contains("data") && root["data"].is_object() && root["data"].contains("dir")) dir = &root["data"]["dir"];
    if (!dir || !dir->is_string() || dir->get<std::string>().empty())
      throw ConfigError(source + ": key 'data.dir': expected the path of a directory written by `coco prepare` (" +
                        left.front() + " and the other vocabulary keys left to the data come from its meta.json)");
    std::string keys;
    for (const auto& key : left) keys += (keys.empty() ? "" : ", ") + key;
    try {
      take_vocabulary_from_data(root, data::PreparedMeta::read(dir->get<std::string>()));
    } catch (const data::DataError& e) {
      throw data::DataError(source + ": " + keys + " left to the prepared data (absent or \"auto\"), but " + e.what() +
                            "; run `coco prepare --out " + dir->get<std::string>() +
                            " ...` first, or set them in the config");
    }
  }
  TrainConfig c = parse_train_config(root, source);
  c.data.dir = std::filesystem::absolute(c.data.dir).lexically_normal().string();
  return c;
}

nlohmann::json train_config_to_json(const TrainConfig& c) {
  nlohmann::json j;
  j["model"] = model::model_config_to_json(c.model);
  j["objective"] = objective::objective_config_to_json(c.objective);
  j["data"] = {
      {"dir", c.data.dir}, {"seq_len", c.data.seq_len}, {"shuffle", c.data.shuffle}, {"prefetch", c.data.prefetch}};
  j["optim"] = {{"lr", c.optim.lr},
                {"betas", {c.optim.beta1, c.optim.beta2}},
                {"eps", c.optim.eps},
                {"weight_decay", c.optim.weight_decay},
                {"no_decay", c.optim.no_decay},
                {"warmup_steps", c.optim.warmup_steps},
                {"schedule", c.optim.schedule},
                {"clip_norm", c.optim.clip_norm}};
  if (c.optim.zero != 0) j["optim"]["zero"] = c.optim.zero;  // only when set: older configs keep their hash
  j["train"] = {{"steps", c.train.steps},
                {"micro_batch", c.train.micro_batch},
                {"seed", c.train.seed},
                {"log_every", c.train.log_every},
                {"eval_every", c.train.eval_every},
                {"eval_batches", c.train.eval_batches},
                {"checkpoint_every", c.train.checkpoint_every},
                {"keep_checkpoints", c.train.keep_checkpoints},
                {"max_consecutive_skips", c.train.max_consecutive_skips}};
  // global_batch stays as set (grad_accum then depends on the launch's world size and is not part of the run).
  if (c.train.global_batch > 0)
    j["train"]["global_batch"] = c.train.global_batch;
  else
    j["train"]["grad_accum"] = c.train.grad_accum;
  j["precision"] = c.precision;
  j["runtime"] = {{"device", c.device_setting}};
  // Only when set, so configs (and their hashes) from before the key existed stay as they were.
  if (c.threads != 0) j["runtime"]["threads"] = c.threads;
  if (c.cuda_graph) j["runtime"]["cuda_graph"] = *c.cuda_graph;
  if (c.dist_bucket_mb != TrainConfig{}.dist_bucket_mb) j["dist"]["bucket_mb"] = c.dist_bucket_mb;
  if (c.dist_reduce_dtype != TrainConfig{}.dist_reduce_dtype) j["dist"]["reduce_dtype"] = c.dist_reduce_dtype;
  if (c.dist_timeout_s != TrainConfig{}.dist_timeout_s) j["dist"]["timeout_s"] = c.dist_timeout_s;
  return j;
}

double learning_rate(const OptimConfig& o, int64_t total_steps, int64_t step) {
  if (step < o.warmup_steps) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  const int64_t decay_steps = total_steps - o.warmup_steps;
  if (decay_steps <= 0) return o.lr;
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / static_cast<double>(decay_steps));
  if (o.schedule == "cosine") return o.lr * 0.5 * (1.0 + std::cos(M_PI * progress));
  return o.lr * (1.0 - progress);
}

std::vector<std::string> model_shape_differences(const TrainConfig& before, const TrainConfig& after) {
  std::vector<std::string> out;
  const nlohmann::json a = shape_view(before), b = shape_view(after);
  for (const char* section : {"model", "objective"}) collect_differences(a.at(section), b.at(section), section, out);
  return out;
}

void apply_world_size(TrainConfig& config, int world_size, const std::string& source) {
  LoopConfig& t = config.train;
  if (t.global_batch <= 0) return;
  const int64_t per_pass = static_cast<int64_t>(world_size) * t.micro_batch;
  if (world_size < 1 || t.global_batch % per_pass != 0)
    throw ConfigError(source + ": key 'train.global_batch': " + std::to_string(t.global_batch) +
                      " rows are not divisible by " + std::to_string(world_size) + " ranks x train.micro_batch " +
                      std::to_string(t.micro_batch) + " = " + std::to_string(per_pass) + "; expected a multiple of " +
                      std::to_string(per_pass) + " (or another number of ranks or train.micro_batch)");
  t.grad_accum = t.global_batch / per_pass;
}

std::string config_hash(const TrainConfig& config) {
  char text[19];
  std::snprintf(text, sizeof text, "0x%016llx",
                static_cast<unsigned long long>(fnv1a(train_config_to_json(config).dump())));
  return text;
}

}  // namespace coco::train
