#include "coco/vocab_identity.h"

#include <cstdio>

#include "coco/wordpiece.h"

namespace coco::data {

namespace fs = std::filesystem;

std::string format_vocab_hash(uint64_t hash) {
  char text[19];
  std::snprintf(text, sizeof text, "0x%016llx", static_cast<unsigned long long>(hash));
  return text;
}

uint64_t parse_vocab_hash(const std::string& text, const std::string& where) {
  const std::string digits = text.starts_with("0x") || text.starts_with("0X") ? text.substr(2) : text;
  const bool hex =
      !digits.empty() && digits.size() <= 16 && digits.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
  if (!hex)
    throw DataError(where + ": expected a hexadecimal vocabulary hash like \"0x0123456789abcdef\", got \"" + text +
                    "\"");
  return std::stoull(digits, nullptr, 16);
}

VocabIdentity vocab_identity_of_file(const fs::path& vocab_file) {
  try {
    if (vocab_file.extension() == ".json") {
      const text::WordPieceTokenizer tokenizer = text::WordPieceTokenizer::from_tokenizer_json(vocab_file);
      return {tokenizer.vocab().hash(), tokenizer.vocab().size()};
    }
    const text::Vocab vocab = text::Vocab::load_txt(vocab_file);
    return {vocab.hash(), vocab.size()};
  } catch (const std::exception& e) {
    throw DataError(vocab_file.string() + ": cannot read the vocabulary to compute its hash: " + e.what());
  }
}

nlohmann::json vocab_identity_to_json(const VocabIdentity& identity) {
  return {{"hash", format_vocab_hash(identity.hash)}, {"size", identity.size}};
}

std::optional<CheckpointVocabulary> checkpoint_vocabulary(const fs::path& checkpoint_dir,
                                                          const nlohmann::json& trainer_state) {
  const std::string state_path = (checkpoint_dir / "trainer_state.json").string();
  CheckpointVocabulary result;
  if (trainer_state.contains("data") && trainer_state["data"].is_object() && trainer_state["data"].contains("dir") &&
      trainer_state["data"]["dir"].is_string())
    result.data_dir = trainer_state["data"]["dir"].get<std::string>();
  if (trainer_state.contains("vocab")) {
    const nlohmann::json& vocab = trainer_state["vocab"];
    if (!vocab.is_object() || !vocab.contains("hash") || !vocab["hash"].is_string() || !vocab.contains("size") ||
        !vocab["size"].is_number_unsigned())
      throw DataError(state_path + ": key 'vocab': expected {\"hash\": \"0x...\", \"size\": N}, got " + vocab.dump());
    result.identity = {parse_vocab_hash(vocab["hash"].get<std::string>(), state_path + ": key 'vocab.hash'"),
                       vocab["size"].get<uint64_t>()};
    result.source = state_path;
    return result;
  }
  // A checkpoint written before trainer_state.json recorded the vocabulary: its data folder still says.
  std::error_code error;
  if (result.data_dir.empty() || !fs::exists(fs::path(result.data_dir) / "meta.json", error)) return std::nullopt;
  try {
    const PreparedMeta old = PreparedMeta::read(result.data_dir);
    result.identity = {old.vocab_hash, old.vocab_size};
    result.source = (fs::path(result.data_dir) / "meta.json").string();
    return result;
  } catch (const DataError&) {
    return std::nullopt;
  }
}

std::string require_checkpoint_vocabulary(const fs::path& checkpoint_dir, const nlohmann::json& trainer_state,
                                          const PreparedMeta& data, const std::string& action) {
  const std::optional<CheckpointVocabulary> saved = checkpoint_vocabulary(checkpoint_dir, trainer_state);
  if (!saved)
    return "warning: " + checkpoint_dir.string() +
           " records no vocabulary (written before trainer_state.json had \"vocab\", and its data folder is gone): "
           "cannot check that " +
           data.dir.string() + " uses the same vocabulary";
  const VocabIdentity current{data.vocab_hash, data.vocab_size};
  if (saved->identity == current) return "";

  auto describe = [](const VocabIdentity& v) {
    return format_vocab_hash(v.hash) + " (" + std::to_string(v.size) + " tokens)";
  };
  // The vocabulary file to prepare matching data with: the checkpoint's own copy, else its data folder's.
  std::string vocab_file;
  std::error_code error;
  for (const char* name : {"vocab.txt", "tokenizer.json"}) {
    if (vocab_file.empty() && fs::exists(checkpoint_dir / name, error)) vocab_file = (checkpoint_dir / name).string();
  }
  if (vocab_file.empty() && !saved->data_dir.empty()) {
    for (const char* name : {"vocab.txt", "tokenizer.json"}) {
      const fs::path candidate = fs::path(saved->data_dir) / name;
      if (vocab_file.empty() && fs::exists(candidate, error)) vocab_file = candidate.string();
    }
  }
  std::string message = "refusing to " + action + " " + checkpoint_dir.string() +
                        " with data of another vocabulary (token ids would stand for other words):\n  checkpoint: "
                        "vocabulary " +
                        describe(saved->identity) + ", trained on " +
                        (saved->data_dir.empty() ? std::string("(unknown folder)") : saved->data_dir) +
                        " (recorded in " + saved->source + ")\n  data:       vocabulary " + describe(current) + " in " +
                        (data.dir / "meta.json").string() + "\n";
  message += vocab_file.empty() ? "Use data prepared with the checkpoint's vocabulary."
                                : "Use data prepared with the checkpoint's vocabulary: coco prepare --vocab " +
                                      vocab_file + " --out DIR TEXT...";
  throw DataError(message);
}

}  // namespace coco::data
