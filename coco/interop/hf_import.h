// `coco import`: start COCO-LM pretraining from a Hugging Face BERT, ELECTRA or COCO-LM (coco export) folder
// in safetensors (config.json + model.safetensors + vocab.txt / tokenizer.json).
//
// The folder's encoder becomes the discriminator (the main model): post-norm, absolute positions, an
// embedding LayerNorm, q/k/v fused into one projection (rows [q | k | v]). The token-type table has no
// counterpart (COCO-LM has no segments): its row 0, which every single-segment input adds, is folded into
// the position table, so the encoder computes the same function for token_type_ids = 0; the other rows are
// dropped. BERT's pooler is dropped. ElectraForPreTraining's head maps onto coco's binary head only when it
// has the form `coco export` writes (hf_layout.h); otherwise the binary head starts fresh.
//
// The generator comes from a second folder (`generator`: an ElectraForMaskedLM, a BertForMaskedLM, or a
// COCOLMForMaskedLM export) or starts fresh: same width and heads as the discriminator, a third of its
// depth (at least 1), embeddings tied to it. Embedding tables of an imported generator are tied to the
// discriminator's when their values are identical (as in ELECTRA's releases), else kept separate.
//
// Anything that does not fit, a tensor missing or of another shape, an activation or position scheme coco
// does not compute, is an InteropError naming the tensor or key (exit code 2).
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "coco/interop/hf_layout.h"
#include "coco/interop/tokenizer_files.h"
#include "engine/module.h"

namespace coco::interop {

struct ImportOptions {
  std::filesystem::path from;
  std::optional<std::filesystem::path> generator;
  int64_t generator_depth = 0;  // fresh generator: layers (0: a third of the discriminator's, at least 1)
  // The objective the weights are arranged for; unset: "paper" when the sizes allow it (generator and
  // discriminator of one width, E = d), else "lucidrains".
  std::optional<objective::Preset> preset;
};

struct ImportedTensor {
  std::string name;  // registry name, e.g. "discriminator.layers.0.attn.qkv.weight"
  std::vector<int64_t> shape;
  std::vector<float> values;
};

struct ImportResult {
  nlohmann::json model;                 // the "model" section of the run configuration
  nlohmann::json objective;             // the "objective" section: preset, special ids, SCL width
  std::vector<ImportedTensor> tensors;  // every registry tensor the folders provide; the rest starts fresh
  std::vector<std::string> notes;       // one line each: what was folded, dropped, tied or started fresh
  TokenizerFiles tokenizer;             // the folder's tokenizer files (missing ones generated)
};

// Throws InteropError / text::TokenizerError (bad or mismatched input).
ImportResult import_hugging_face(const ImportOptions& options);

// The run configuration of an imported model: `base` (a run configuration; its "model" section is
// replaced) with the import's model section and objective preset / special ids / SCL width, and for
// sections `base` lacks, defaults for continued pretraining (AdamW lr 1e-4, betas 0.9 / 0.98, 1000 warmup
// steps of 10000, sequences of min(128, max_positions) tokens, f32).
nlohmann::json imported_run_config(const ImportResult& result, nlohmann::json base);

// Copies the imported tensors into the model's parameters. Throws InteropError naming a tensor the model
// lacks or has in another shape (a configuration that changed the imported architecture).
void load_imported(Module& model, const std::vector<ImportedTensor>& tensors);

}  // namespace coco::interop
