// Vocabulary identity: which vocabulary a prepared data folder and a checkpoint were made with, so that a model is
// never trained on, resumed on or evaluated against token ids that mean other words.
//
// The identity is the 64-bit FNV-1a of the vocabulary's tokens in id order (coco::text::vocab_hash): the value every
// token shard carries in its header and that meta.json records as "vocab_hash" ("0x" + 16 lower-case hex digits). It
// is the same whether the vocabulary was read from vocab.txt or tokenizer.json (a vocab.txt with '\r\n' line ends is
// the same vocabulary too). Checkpoints record it in trainer_state.json as "vocab": {"hash": "0x...", "size": N}.
//
// Older files: a meta.json without "vocab_hash" gets it computed from its vocabulary file (PreparedMeta::read); a
// checkpoint without "vocab" gets it from the meta.json of the folder it was trained on (trainer_state.json's
// data.dir) while that folder still exists, and is otherwise accepted with a warning.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "coco/data_loader.h"

namespace coco::data {

struct VocabIdentity {
  uint64_t hash = 0;
  uint64_t size = 0;
  bool operator==(const VocabIdentity&) const = default;
};

// "0x0123456789abcdef".
std::string format_vocab_hash(uint64_t hash);
// Accepts "0x" + hex digits or bare hex digits; DataError naming `where` otherwise.
uint64_t parse_vocab_hash(const std::string& text, const std::string& where);

// The identity of a vocabulary file: vocab.txt, or tokenizer.json by its .json extension. Errors name the file.
VocabIdentity vocab_identity_of_file(const std::filesystem::path& vocab_file);

// {"hash": "0x...", "size": N}: trainer_state.json's "vocab".
nlohmann::json vocab_identity_to_json(const VocabIdentity& identity);

// What a checkpoint knows about its vocabulary.
struct CheckpointVocabulary {
  VocabIdentity identity;
  std::string data_dir;  // the data folder the checkpoint was trained on ("" when unknown)
  std::string source;    // where the identity came from: trainer_state.json, or the old data folder's meta.json
};

// From trainer_state.json's "vocab", else from the meta.json of its data.dir; nullopt when neither exists.
// A malformed "vocab" record is a DataError naming the file.
std::optional<CheckpointVocabulary> checkpoint_vocabulary(const std::filesystem::path& checkpoint_dir,
                                                          const nlohmann::json& trainer_state);

// Refuses (DataError, exit 2) data whose vocabulary is not the checkpoint's, naming both hashes, sizes and folders
// and how to prepare matching data. `action` completes "refusing to <action> <checkpoint>": "resume training from",
// "evaluate". Returns a warning line when the checkpoint records no vocabulary to compare with ("" after a check).
std::string require_checkpoint_vocabulary(const std::filesystem::path& checkpoint_dir,
                                          const nlohmann::json& trainer_state, const PreparedMeta& data,
                                          const std::string& action);

}  // namespace coco::data
