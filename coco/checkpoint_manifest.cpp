#include "coco/checkpoint_manifest.h"

#include <cinttypes>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "coco/shards.h"
#include "engine/config.h"
#include "engine/io/checked_read.h"

namespace coco::checkpoint {

namespace fs = std::filesystem;

namespace {

std::string hex64(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016" PRIx64, value);
  return text;
}

uint64_t hash_of(const fs::path& path) {
  try {
    return text::xxh64_file(path);
  } catch (const text::ShardError& e) {
    throw CheckpointError(std::string(e.what()) + " (checkpoint file)");
  }
}

}  // namespace

std::string manifest_for(const fs::path& dir, const std::vector<std::string>& files) {
  nlohmann::json listed = nlohmann::json::object();
  for (const auto& name : files) {
    const fs::path path = dir / name;
    listed[name] = {{"bytes", fs::file_size(path)}, {"xxh64", hex64(hash_of(path))}};
  }
  const nlohmann::json manifest = {{"format", "coco-checkpoint-manifest"}, {"version", 1}, {"files", listed}};
  return manifest.dump(2) + "\n";
}

Verified verify_checkpoint(const fs::path& dir) {
  const fs::path manifest_path = dir / kManifestFile;
  std::error_code error;
  if (!fs::exists(fs::symlink_status(manifest_path, error))) return Verified::no_manifest;
  nlohmann::json manifest;
  try {
    manifest = io::read_json_checked(manifest_path, 1 << 20);
  } catch (const ConfigError& e) {
    throw CheckpointError(std::string(e.what()) + " (the checkpoint's integrity record is damaged)");
  }
  const std::string where = manifest_path.string();
  if (!manifest.is_object() || manifest.value("format", std::string()) != "coco-checkpoint-manifest" ||
      !manifest.contains("files") || !manifest["files"].is_object())
    throw CheckpointError(where + ": expected {\"format\": \"coco-checkpoint-manifest\", \"files\": {...}}");
  const nlohmann::json& files = manifest["files"];
  for (const char* required : {"model.safetensors", "trainer_state.json", "config.json"})
    if (!files.contains(required))
      throw CheckpointError(where + ": does not list " + std::string(required) + ": the checkpoint is incomplete");
  for (const auto& [name, entry] : files.items()) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      throw CheckpointError(where + ": \"" + name + "\" is not a plain file name");
    if (!entry.is_object() || !entry.contains("bytes") || !entry["bytes"].is_number_unsigned() ||
        !entry.contains("xxh64") || !entry["xxh64"].is_string())
      throw CheckpointError(where + ": key 'files." + name + "': expected {\"bytes\": N, \"xxh64\": \"hex\"}");
    const fs::path path = dir / name;
    const fs::file_status status = fs::symlink_status(path, error);
    if (!fs::exists(status)) throw CheckpointError(path.string() + ": missing (listed in " + where + ")");
    if (!fs::is_regular_file(status))
      throw CheckpointError(path.string() + ": not a regular file (listed in " + where + ")");
    const uint64_t bytes = fs::file_size(path, error);
    if (error || bytes != entry["bytes"].get<uint64_t>())
      throw CheckpointError(path.string() + ": " + std::to_string(bytes) + " bytes, " + where + " records " +
                            std::to_string(entry["bytes"].get<uint64_t>()) + ": the checkpoint is damaged");
    const std::string actual = hex64(hash_of(path));
    if (actual != entry["xxh64"].get<std::string>())
      throw CheckpointError(path.string() + ": checksum mismatch (xxh64 " + actual + ", " + where + " records " +
                            entry["xxh64"].get<std::string>() + "): the checkpoint is damaged");
  }
  return Verified::checksums;
}

}  // namespace coco::checkpoint
