// The integrity record of a checkpoint directory: manifest.json, written last into the directory before it is
// committed, lists every file with its size and XXH64 (the checksum the token shards use):
//
//   {"format": "coco-checkpoint-manifest", "version": 1,
//    "files": {"model.safetensors": {"bytes": 123, "xxh64": "0123456789abcdef"}, ...}}
//
// verify_checkpoint is what every reader of a checkpoint calls first (train --resume, eval, export): a byte
// flipped anywhere in a listed file, a truncated or missing file is refused with a CheckpointError (exit 2)
// naming the file, instead of training on or exporting damaged weights.
#pragma once
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

namespace coco::checkpoint {

// A damaged or inconsistent checkpoint: the user's data, not an engine failure (exit 2).
class CheckpointError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

inline constexpr const char* kManifestFile = "manifest.json";

// The manifest.json text for `files` (names inside `dir`), hashing each.
std::string manifest_for(const std::filesystem::path& dir, const std::vector<std::string>& files);

enum class Verified { checksums, no_manifest };

// Checks every file the manifest lists (regular file, size, XXH64) and that model.safetensors,
// trainer_state.json and config.json are among them. A directory written before checkpoints carried a
// manifest (no manifest.json at all) returns Verified::no_manifest; callers say so.
Verified verify_checkpoint(const std::filesystem::path& dir);

}  // namespace coco::checkpoint
