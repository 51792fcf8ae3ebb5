#include "coco/interop/tokenizer_files.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "engine/io/checked_read.h"

namespace coco::interop {

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace {

std::string read_text(const fs::path& path) {
  try {
    return io::read_regular_file(path, uint64_t{1} << 32);  // never blocks on a FIFO
  } catch (const ConfigError& e) {
    throw text::TokenizerError(e.what());
  }
}

nlohmann::json read_json(const fs::path& path) { return io::read_json_checked(path); }

// tokenizer.json's strip_accents: null means "same as lowercase" (how `transformers` writes uncased BERT).
ordered_json strip_accents_json(const text::NormalizerOptions& n) {
  return n.strip_accents == n.lowercase ? ordered_json(nullptr) : ordered_json(n.strip_accents);
}

ordered_json special_token_entry(const std::string& token, uint32_t id) {
  return {{"id", token}, {"ids", {id}}, {"tokens", {token}}};
}

ordered_json template_piece(const char* kind, const std::string& id, int type_id) {
  return {{kind, {{"id", id}, {"type_id", type_id}}}};
}

std::string tokenizer_json(const text::WordPieceTokenizer& tokenizer, const text::SpecialTokenIds& ids) {
  const text::WordPieceConfig& config = tokenizer.config();
  const text::Vocab& vocab = tokenizer.vocab();
  ordered_json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  ordered_json added = ordered_json::array();
  std::vector<text::AddedToken> specials = config.added_tokens;
  std::sort(specials.begin(), specials.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  for (const auto& token : specials)
    added.push_back({{"id", token.id},
                     {"content", token.content},
                     {"single_word", false},
                     {"lstrip", token.lstrip},
                     {"rstrip", token.rstrip},
                     {"normalized", false},
                     {"special", true}});
  j["added_tokens"] = added;
  const text::NormalizerOptions& n = config.normalizer;
  j["normalizer"] = {{"type", "BertNormalizer"},
                     {"clean_text", n.clean_text},
                     {"handle_chinese_chars", n.handle_chinese_chars},
                     {"strip_accents", strip_accents_json(n)},
                     {"lowercase", n.lowercase}};
  j["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  const std::string cls = vocab.token(ids.cls), sep = vocab.token(ids.sep);
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {template_piece("SpecialToken", cls, 0), template_piece("Sequence", "A", 0),
        template_piece("SpecialToken", sep, 0)}},
      {"pair",
       {template_piece("SpecialToken", cls, 0), template_piece("Sequence", "A", 0),
        template_piece("SpecialToken", sep, 0), template_piece("Sequence", "B", 1),
        template_piece("SpecialToken", sep, 1)}},
      {"special_tokens", {{cls, special_token_entry(cls, ids.cls)}, {sep, special_token_entry(sep, ids.sep)}}}};
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", config.continuing_prefix}, {"cleanup", true}};
  ordered_json vocab_json = ordered_json::object();
  for (uint32_t id = 0; id < vocab.size(); ++id) vocab_json[vocab.token(id)] = id;
  j["model"] = {{"type", "WordPiece"},
                {"unk_token", config.unk_token},
                {"continuing_subword_prefix", config.continuing_prefix},
                {"max_input_chars_per_word", config.max_input_chars_per_word},
                {"vocab", std::move(vocab_json)}};
  return j.dump(2) + "\n";
}

ordered_json special_tokens(const text::WordPieceTokenizer& tokenizer, const text::SpecialTokenIds& ids) {
  const text::Vocab& vocab = tokenizer.vocab();
  return {{"cls_token", vocab.token(ids.cls)},
          {"mask_token", vocab.token(ids.mask)},
          {"pad_token", vocab.token(ids.pad)},
          {"sep_token", vocab.token(ids.sep)},
          {"unk_token", vocab.token(ids.unk)}};
}

std::string tokenizer_config_json(const text::WordPieceTokenizer& tokenizer, const text::SpecialTokenIds& ids,
                                  int64_t model_max_length) {
  const text::NormalizerOptions& n = tokenizer.normalizer();
  ordered_json j;
  j["tokenizer_class"] = "BertTokenizer";
  j["do_lower_case"] = n.lowercase;
  j["strip_accents"] = strip_accents_json(n);
  j["tokenize_chinese_chars"] = n.handle_chinese_chars;
  j["clean_up_tokenization_spaces"] = true;
  const ordered_json specials = special_tokens(tokenizer, ids);
  for (const auto& [key, value] : specials.items()) j[key] = value;
  if (model_max_length > 0) j["model_max_length"] = model_max_length;
  return j.dump(2) + "\n";
}

std::string vocab_txt(const text::Vocab& vocab) {
  std::string out;
  for (const auto& token : vocab.tokens()) out += token + "\n";
  return out;
}

text::NormalizerOptions casing_beside_vocab(const fs::path& dir) {
  text::NormalizerOptions n = text::NormalizerOptions::uncased();
  if (fs::exists(dir / "meta.json")) {
    const nlohmann::json meta = read_json(dir / "meta.json");
    if (meta.contains("normalizer") && meta["normalizer"].is_object()) {
      const auto& m = meta["normalizer"];
      try {
        n.clean_text = m.value("clean_text", true);
        n.handle_chinese_chars = m.value("handle_chinese_chars", true);
        n.lowercase = m.value("lowercase", true);
        n.strip_accents = m.value("strip_accents", n.lowercase);
      } catch (const nlohmann::json::exception& e) {
        throw text::TokenizerError((dir / "meta.json").string() + ": key 'normalizer': expected booleans (" + e.what() +
                                   ")");
      }
      return n;
    }
  }
  if (fs::exists(dir / "tokenizer_config.json")) {
    const nlohmann::json config = read_json(dir / "tokenizer_config.json");
    try {
      n.lowercase = config.value("do_lower_case", true);
      const nlohmann::json strip = config.value("strip_accents", nlohmann::json());
      n.strip_accents = strip.is_null() ? n.lowercase : strip.get<bool>();
      n.handle_chinese_chars = config.value("tokenize_chinese_chars", true);
    } catch (const nlohmann::json::exception& e) {
      throw text::TokenizerError((dir / "tokenizer_config.json").string() +
                                 ": do_lower_case / strip_accents / tokenize_chinese_chars: expected booleans (" +
                                 e.what() + ")");
    }
  }
  return n;
}

}  // namespace

const std::string* TokenizerFiles::find(const std::string& name) const {
  for (const auto& [file, contents] : files)
    if (file == name) return &contents;
  return nullptr;
}

void TokenizerFiles::write(const fs::path& dir) const {
  for (const auto& [name, contents] : files) {
    std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
    out << contents;
    out.close();
    if (!out) throw std::runtime_error((dir / name).string() + ": write failed");
  }
}

TokenizerFiles make_tokenizer_files(const text::WordPieceTokenizer& tokenizer, int64_t model_max_length) {
  const text::SpecialTokenIds ids = tokenizer.special_ids();
  TokenizerFiles out;
  out.files = {{"vocab.txt", vocab_txt(tokenizer.vocab())},
               {"tokenizer.json", tokenizer_json(tokenizer, ids)},
               {"tokenizer_config.json", tokenizer_config_json(tokenizer, ids, model_max_length)},
               {"special_tokens_map.json", special_tokens(tokenizer, ids).dump(2) + "\n"}};
  return out;
}

bool has_vocabulary(const fs::path& dir) {
  return fs::is_regular_file(dir / "vocab.txt") || fs::is_regular_file(dir / "tokenizer.json");
}

text::WordPieceTokenizer load_tokenizer(const fs::path& dir) {
  if (fs::is_regular_file(dir / "tokenizer.json"))
    return text::WordPieceTokenizer::from_tokenizer_json(dir / "tokenizer.json");
  if (fs::is_regular_file(dir / "vocab.txt"))
    return text::WordPieceTokenizer::from_vocab_txt(dir / "vocab.txt", casing_beside_vocab(dir));
  throw text::TokenizerError(dir.string() +
                             ": no vocabulary (expected vocab.txt or tokenizer.json, as `coco prepare` writes them)");
}

TokenizerFiles read_tokenizer_files(const fs::path& dir) {
  const text::WordPieceTokenizer tokenizer = load_tokenizer(dir);
  const TokenizerFiles generated = make_tokenizer_files(tokenizer);
  TokenizerFiles out;
  for (const auto& [name, contents] : generated.files) {
    if (fs::is_regular_file(dir / name))
      out.files.emplace_back(name, read_text(dir / name));
    else
      out.files.emplace_back(name, contents);
  }
  return out;
}

void set_model_max_length(TokenizerFiles& files, int64_t length) {
  for (auto& [name, contents] : files.files) {
    if (name != "tokenizer_config.json") continue;
    ordered_json j;
    try {
      j = ordered_json::parse(contents);
    } catch (const nlohmann::json::exception& e) {
      throw text::TokenizerError(std::string("tokenizer_config.json: invalid JSON: ") + e.what());
    }
    j["model_max_length"] = length;
    contents = j.dump(2) + "\n";
  }
}

}  // namespace coco::interop
