// Helpers for the Hugging Face interop tests: tiny trained runs on English prose (tests/data/english),
// coco's own forward pass written as a safetensors dump, and scripts/hf_interop.py (torch + transformers).
#pragma once
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "coco/data_loader.h"
#include "coco/interop/hf_export.h"
#include "coco/interop/tokenizer_files.h"
#include "coco/objective.h"
#include "coco/train_config.h"
#include "engine/io/safetensors.h"
#include "engine/ops/activation.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/layernorm.h"
#include "engine/ops/linear.h"
#include "engine/tape.h"
#include "tests/train/train_test_util.h"
#include "tools/lib/checkpoint.h"

namespace coco::hftest {

namespace fs = std::filesystem;
using testutil::TempDir;

inline const fs::path kEnglish = fs::path(COCO_SOURCE_DIR) / "tests" / "data" / "english";
inline const std::string kScript = std::string(COCO_SOURCE_DIR) + "/scripts/hf_interop.py";

inline std::vector<fs::path> english_texts() { return {kEnglish / "alice.txt", kEnglish / "pride.txt"}; }

struct CommandResult {
  int status = -1;  // exit status, -1 when the command could not run or was killed
  std::string output;
};

inline std::string quoted(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  if (status != -1 && WIFEXITED(status)) result.status = WEXITSTATUS(status);
  return result;
}

// scripts/hf_interop.py with arguments (each quoted).
inline CommandResult run_script(const std::vector<std::string>& args) {
  std::string command = "python3 " + quoted(kScript);
  for (const auto& a : args) {
    command += ' ';
    command += quoted(a);
  }
  return run_command(command);
}

// Skips the calling test unless python3 with torch and transformers is available (scripts/setup.sh installs them).
#define REQUIRE_HF_PYTHON()                                                                                  \
  do {                                                                                                       \
    static const ::coco::hftest::CommandResult probe = ::coco::hftest::run_script({"probe"});                \
    if (probe.status == 3 || probe.status == 127 || probe.status == -1)                                      \
      GTEST_SKIP() << "torch / transformers unavailable (scripts/setup.sh installs them): " << probe.output; \
    ASSERT_EQ(probe.status, 0) << probe.output;                                                              \
  } while (0)

// A run trained for `steps` steps by the `coco` binary on `data_dir` with `config` (data.dir is set here).
inline fs::path train_run(const TempDir& work, const std::string& name, nlohmann::json config, const fs::path& data_dir,
                          int steps = 3) {
  config["data"]["dir"] = data_dir.string();
  config["train"]["steps"] = steps;
  const fs::path config_path = testutil::write_config(work / (name + ".json"), config);
  const fs::path run = work / name;
  const testutil::RunResult r =
      testutil::run_coco({"train", "--config", config_path.string(), "--out", run.string()}, work.path());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return tools::resolve_checkpoint_dir(run);
}

// Prepared English prose with a trained vocabulary of `vocab_size` tokens.
inline fs::path prepare_english(const TempDir& work, const std::string& name, bool cased = false,
                                size_t vocab_size = 400) {
  text::PrepareOptions options;
  options.inputs = english_texts();
  options.output_dir = work / name;
  options.vocab_size = vocab_size;
  options.lowercase = !cased;
  options.threads = 1;
  text::prepare(options);
  return options.output_dir;
}

// The tiny configurations of tests/train (d 32, heads 2, generator 1 layer, discriminator 2) on the prose's
// 400-token vocabulary with T 32 (data.dir is set by train_run):
// "electra": paper preset, post-norm, absolute positions (exportable as ELECTRA);
// "relpos": paper preset with the relative-position bias (the demo's architecture);
// "prenorm": lucidrains preset, pre-norm with a final LayerNorm, relative positions, E = 24 != d, linear
// generator head, no q/k/v bias, untied embedding LayerNorms.
inline nlohmann::json tiny_config(const std::string& kind) {
  nlohmann::json c = kind == "prenorm" ? testutil::tiny_lucidrains_config("") : testutil::tiny_paper_config("");
  c["model"]["vocab_size"] = 400;
  c["model"]["max_positions"] = 64;
  c["data"]["seq_len"] = 32;
  c["train"] = {{"micro_batch", 4}, {"seed", 5}, {"log_every", 1}};
  c["optim"]["warmup_steps"] = 1;
  for (const char* part : {"generator", "discriminator"}) {
    nlohmann::json& e = c["model"][part];
    if (kind == "electra") e["relative_position"] = nullptr;
    if (kind == "prenorm") {
      e["embed_dim"] = 24;
      e["embedding_norm"] = true;
      e["qkv_bias"] = false;
      e["relative_position"] = {{"buckets", 8}, {"max_distance", 16}};
    }
  }
  return c;
}

// A few sentences of the prose, for forward passes (different lengths, so the batch is padded).
inline std::vector<std::string> probe_sentences() {
  return {"Alice was beginning to get very tired of sitting by her sister on the bank.",
          "\"What is his name?\" \"Bingley.\"",
          "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
          "want of a wife.",
          "The NAÏVE guest at the Café Royal ordered a crème brûlée."};
}

// coco's forward pass over `sentences` ([CLS] ids [SEP], right-padded), written for `hf_interop.py forward`:
// input_ids, attention_mask, hidden (the part's final hidden states) and the head's logits: replaced-token
// logits of the discriminator's binary head (when `replaced_logits`), the generator's MLM logits.
inline void write_forward_dump(const fs::path& checkpoint, interop::HfPart part, const fs::path& path,
                               bool replaced_logits = true) {
  const interop::CheckpointModel cm = interop::read_checkpoint_model(checkpoint);
  objective::CocoModel model(cm.model, cm.objective, 1, Device::cpu);
  tools::load_weights(checkpoint, model.named_parameters());
  const text::WordPieceTokenizer tokenizer = interop::load_tokenizer(checkpoint);
  std::vector<std::vector<uint32_t>> rows;
  size_t width = 0;
  for (const auto& s : probe_sentences()) {
    rows.push_back(tokenizer.encode(s, /*add_special_tokens=*/true));
    width = std::max(width, rows.back().size());
  }
  const int64_t batch = static_cast<int64_t>(rows.size()), seq = static_cast<int64_t>(width);
  std::vector<int32_t> ids(static_cast<size_t>(batch * seq), cm.objective.pad_id);
  std::vector<uint8_t> mask(ids.size(), 0);
  for (int64_t b = 0; b < batch; ++b)
    for (size_t t = 0; t < rows[b].size(); ++t) {
      ids[b * seq + t] = static_cast<int32_t>(rows[b][t]);
      mask[b * seq + t] = 1;
    }
  NoGrad no_grad;
  const Tensor ids_t = Tensor::from_vector(ids, Shape{batch, seq});
  const Tensor mask_t = Tensor::from_vector(mask, Shape{batch, seq});
  const bool discriminator = part == interop::HfPart::discriminator;
  const model::Encoder& encoder = discriminator ? model.discriminator() : model.generator();
  const Tensor hidden = encoder.forward(ids_t, mask_t, model::ForwardOptions{});  // (B, T, d)
  Tensor logits;
  if (discriminator && replaced_logits) {
    const bool paper = cm.objective.preset == objective::Preset::paper;
    const std::string head = paper ? "copy_head" : "rtd_head";
    // The copy head's positive class is "original": replaced-token logits are its negation.
    const double sign = paper ? -1.0 : 1.0;
    logits = ops::linear(hidden, ops::scale(model.parameter(head + ".weight"), sign),
                         ops::scale(model.parameter(head + ".bias"), sign));
  } else if (!discriminator) {
    if (cm.model.generator_head == "bert") {
      Tensor h = ops::linear(hidden, model.parameter("generator_head.dense.weight"),
                             model.parameter("generator_head.dense.bias"), ops::Activation::gelu_erf);
      h = ops::layernorm(h, model.parameter("generator_head.norm.weight"), model.parameter("generator_head.norm.bias"),
                         cm.model.generator.layer_norm_eps);
      logits = ops::linear(h, encoder.embeddings().token, model.parameter("generator_head.bias"));
    } else {
      logits =
          ops::linear(hidden, model.parameter("generator_head.out.weight"), model.parameter("generator_head.out.bias"));
    }
  }
  std::vector<std::vector<float>> storage;
  storage.reserve(2);
  std::vector<safetensors::TensorData> tensors;
  auto add_host = [&](const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data,
                      size_t bytes) {
    tensors.push_back(
        {name, dtype, std::move(shape), std::span<const uint8_t>(static_cast<const uint8_t*>(data), bytes)});
  };
  add_host("input_ids", DType::i32, {batch, seq}, ids.data(), ids.size() * sizeof(int32_t));
  add_host("attention_mask", DType::u8, {batch, seq}, mask.data(), mask.size());
  storage.push_back(hidden.to_vector<float>());
  add_host("hidden", DType::f32, hidden.shape().vec(), storage.back().data(), storage.back().size() * sizeof(float));
  if (logits.defined()) {
    std::vector<int64_t> shape = logits.shape().vec();
    if (discriminator) shape = {batch, seq};  // (B, T, 1) -> (B, T), as transformers returns them
    storage.push_back(logits.to_vector<float>());
    add_host(discriminator ? "replaced_logits" : "mlm_logits", DType::f32, shape, storage.back().data(),
             storage.back().size() * sizeof(float));
  }
  safetensors::write_file(path.string(), tensors, {});
}

}  // namespace coco::hftest
