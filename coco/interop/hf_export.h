// `coco export`: a checkpoint as a Hugging Face `transformers` folder that AutoModel / AutoTokenizer load:
//
//   config.json                 the architecture (hf_layout.h), float32
//   model.safetensors           the part's tensors under Hugging Face names, f32
//   vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json
//                               the checkpoint's tokenizer files (tokenizer_files.h), model_max_length set
//   configuration_cocolm.py, modeling_cocolm.py
//                               the COCO-LM architecture (cocolm format only; trust_remote_code=True)
//
// The folder is written beside the target and renamed into place, so a failed export leaves no half folder.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "coco/interop/hf_layout.h"

namespace coco::interop {

struct ExportOptions {
  std::filesystem::path checkpoint;  // a checkpoint directory (model.safetensors, config.json)
  std::filesystem::path out;         // the folder to write; an existing one is replaced only if it holds an export
  HfPart part = HfPart::discriminator;
  std::optional<HfFormat> format;  // unset: electra when the architecture allows it, else cocolm
  // Where to take the tokenizer files from when the checkpoint has none (checkpoints written before they
  // carried them): a `coco prepare` directory or any folder with vocab.txt / tokenizer.json.
  std::optional<std::filesystem::path> tokenizer_dir;
};

struct ExportReport {
  HfLayout layout;
  size_t tensors = 0;              // tensors in model.safetensors
  std::vector<std::string> notes;  // one line each: choices made, heads without a counterpart
};

// Throws InteropError (bad checkpoint, incompatible format, missing tokenizer files) or std::runtime_error (I/O).
ExportReport export_hugging_face(const ExportOptions& options);

// The model and objective sections of a checkpoint's config.json (the rest is not needed to read weights).
struct CheckpointModel {
  model::ModelConfig model;
  objective::ObjectiveConfig objective;
};
CheckpointModel read_checkpoint_model(const std::filesystem::path& checkpoint);

}  // namespace coco::interop
