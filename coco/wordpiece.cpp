#include "coco/wordpiece.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "coco/unicode_tables.h"
#include "coco/utf8.h"
#include "engine/config.h"
#include "engine/io/checked_read.h"

namespace coco::text {

namespace {

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
constexpr uint64_t kFnvPrime = 0x100000001b3ull;

uint64_t fnv1a(std::string_view bytes, uint64_t h = kFnvOffset) {
  for (unsigned char c : bytes) h = (h ^ c) * kFnvPrime;
  return h;
}

constexpr char32_t kHangulFirst = 0xAC00, kHangulLast = 0xD7A3;

const unicode::CodepointMapping* find_mapping(const unicode::CodepointMapping* table, size_t count, char32_t cp) {
  const auto* end = table + count;
  const auto* it =
      std::lower_bound(table, end, cp, [](const unicode::CodepointMapping& m, char32_t c) { return m.code_point < c; });
  return it != end && it->code_point == cp ? it : nullptr;
}

uint8_t combining_class(char32_t cp) {
  const auto* begin = unicode::kCombiningClasses;
  const auto* end = begin + unicode::kCombiningClassCount;
  const auto* it =
      std::lower_bound(begin, end, cp, [](const unicode::CombiningClass& c, char32_t v) { return c.code_point < v; });
  return it != end && it->code_point == cp ? it->value : 0;
}

// Appends `cp` (room already reserved) to NFD output data[0..n), keeping the trailing run of non-starters sorted
// by combining class (stable): the canonical ordering step of NFD.
void append_canonical(char32_t* data, size_t& n, size_t& run_start, char32_t cp) {
  if (!(unicode::flags(cp) & unicode::kCombiningNonzero)) {
    data[n++] = cp;
    run_start = n;
    return;
  }
  const uint8_t ccc = combining_class(cp);
  size_t j = n++;
  while (j > run_start && combining_class(data[j - 1]) > ccc) {
    data[j] = data[j - 1];
    --j;
  }
  data[j] = cp;
}

bool is_utf8_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

std::string read_file(const std::filesystem::path& path, const char* what) {
  try {
    return io::read_regular_file(path, uint64_t{1} << 32, what);  // never blocks on a FIFO
  } catch (const ConfigError& e) {
    throw TokenizerError(e.what());
  }
}

bool is_whitespace_before(std::string_view text, size_t pos, size_t floor, size_t& start) {
  // The code point ending at `pos` (exclusive), when it is whitespace; `start` receives its first byte.
  if (pos <= floor) return false;
  size_t begin = pos - 1;
  while (begin > floor && is_utf8_continuation(text[begin])) --begin;
  size_t cursor = begin;
  char32_t cp;
  if (!decode_utf8(text, cursor, cp) || cursor != pos) return false;
  if (!(unicode::flags(cp) & unicode::kWhitespace)) return false;
  start = begin;
  return true;
}

}  // namespace

uint64_t vocab_hash(const std::vector<std::string>& tokens) {
  uint64_t h = kFnvOffset;
  for (const auto& token : tokens) {
    h = fnv1a(token, h);
    h = (h ^ static_cast<unsigned char>('\n')) * kFnvPrime;
  }
  return h;
}

// ---------------------------------------------------------------------------------------------------
// Vocab

void Vocab::Table::build(const std::vector<std::string>& tokens, std::string_view required_prefix) {
  skip = required_prefix.size();
  max_key_bytes = 0;
  size_t capacity = 16;
  while (capacity < tokens.size() * 2) capacity *= 2;
  slots.assign(capacity, 0);
  const size_t mask = capacity - 1;
  for (uint32_t id = 0; id < tokens.size(); ++id) {
    const std::string& token = tokens[id];
    if (token.size() <= skip || token.compare(0, skip, required_prefix) != 0) continue;
    const std::string_view key = std::string_view(token).substr(skip);
    max_key_bytes = std::max(max_key_bytes, key.size());
    const uint64_t hash = fnv1a(key);
    const uint64_t entry = (hash & 0xFFFFFFFF00000000ull) | (id + 1);
    for (size_t slot = hash & mask;; slot = (slot + 1) & mask) {
      if (slots[slot] == 0) {
        slots[slot] = entry;
        break;
      }
      // A duplicate token keeps the later id, as HF's vocab loaders do.
      const uint32_t other = static_cast<uint32_t>(slots[slot]) - 1;
      if (std::string_view(tokens[other]).substr(skip) == key) {
        slots[slot] = entry;
        break;
      }
    }
  }
}

std::optional<uint32_t> Vocab::Table::find(std::string_view key, const std::vector<std::string>& tokens) const {
  return find_hashed(key, fnv1a(key), tokens);
}

std::optional<uint32_t> Vocab::Table::find_hashed(std::string_view key, uint64_t hash,
                                                  const std::vector<std::string>& tokens) const {
  if (key.size() > max_key_bytes || slots.empty()) return std::nullopt;
  const size_t mask = slots.size() - 1;
  const uint64_t tag = hash & 0xFFFFFFFF00000000ull;
  for (size_t slot = hash & mask;; slot = (slot + 1) & mask) {
    const uint64_t entry = slots[slot];
    if (entry == 0) return std::nullopt;
    if ((entry & 0xFFFFFFFF00000000ull) != tag) continue;
    const uint32_t id = static_cast<uint32_t>(entry) - 1;
    const std::string& token = tokens[id];
    if (token.size() == key.size() + skip && std::memcmp(token.data() + skip, key.data(), key.size()) == 0) return id;
  }
}

Vocab::Vocab(std::vector<std::string> tokens) : tokens_(std::move(tokens)) {
  if (tokens_.empty()) throw TokenizerError("vocabulary is empty; expected at least one token");
  if (tokens_.size() > (1ull << 31)) throw TokenizerError("vocabulary has more than 2^31 tokens");
  hash_ = vocab_hash(tokens_);
  build_tables("##");
}

void Vocab::build_tables(std::string_view continuing_prefix) {
  whole_.build(tokens_, "");
  continuation_.build(tokens_, continuing_prefix);
}

std::optional<uint32_t> Vocab::find(std::string_view token) const { return whole_.find(token, tokens_); }

Vocab Vocab::load_txt(const std::filesystem::path& path) {
  const std::string content = read_file(path, "vocabulary file (vocab.txt)");
  std::string reason;
  if (size_t bad = find_invalid_utf8(content, &reason); bad != kUtf8Valid) throw Utf8Error(path.string(), bad, reason);
  std::vector<std::string> tokens;
  // A token listed twice would silently take the later id ([PAD] at 30523): refused, with both lines.
  std::unordered_map<std::string_view, size_t> first_line;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t end = content.find('\n', pos);
    if (end == std::string::npos) end = content.size();
    std::string_view line(content.data() + pos, end - pos);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.remove_suffix(1);
    const auto [seen, inserted] = first_line.emplace(line, tokens.size() + 1);
    if (!inserted)
      throw TokenizerError(path.string() + ":" + std::to_string(tokens.size() + 1) + ": duplicate token '" +
                           std::string(line.substr(0, 80)) + "' (first on line " + std::to_string(seen->second) +
                           "); expected each token once");
    tokens.emplace_back(line);
    pos = end + 1;
  }
  if (tokens.empty()) throw TokenizerError(path.string() + ": vocabulary file is empty; expected one token per line");
  return Vocab(std::move(tokens));
}

void Vocab::save_txt(const std::filesystem::path& path) const {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw TokenizerError(path.string() + ": cannot create vocabulary file");
  for (const auto& token : tokens_) {
    if (token.find('\n') != std::string::npos) {
      throw TokenizerError(path.string() + ": token contains a newline and cannot be written to vocab.txt");
    }
    out << token << '\n';
  }
  out.close();
  if (!out) throw TokenizerError(path.string() + ": write error");
}

// ---------------------------------------------------------------------------------------------------
// Normalization and pre-tokenization

void BertPreTokenizer::normalize(std::string_view text, std::u32string& out) const {
  // One pass: clean, CJK spacing, NFD + drop Mn (with canonical ordering) and lowercase per code point. tokenizers
  // strips accents over the whole text and lowercases afterwards; doing both per code point is the same because
  // lowercasing never changes a combining class (checked by scripts/gen_unicode_tables.py).
  out.resize(text.size() + 16);  // grows below when decompositions or CJK spacing expand the text
  char32_t* data = out.data();
  size_t n = 0;
  size_t run_start = 0;  // first index of the trailing run of non-starters
  auto reserve = [&](size_t more) {
    if (n + more > out.size()) {
      out.resize(2 * (n + more));
      data = out.data();
    }
  };
  auto emit_lowered = [&](char32_t cp) {  // NFD output code point -> lowercase -> canonical position
    if (options_.lowercase && (unicode::flags(cp) & unicode::kLowerMaps)) {
      const auto* m = find_mapping(unicode::kLowerMappings, unicode::kLowerMappingCount, cp);
      reserve(m ? m->length : 0);
      for (size_t k = 0; m && k < m->length; ++k) {
        const char32_t lowered = unicode::kMappingPool[m->offset + k];
        if (options_.strip_accents) {
          append_canonical(data, n, run_start, lowered);
        } else {
          data[n++] = lowered;
        }
      }
      return;
    }
    reserve(1);
    if (options_.strip_accents) {
      append_canonical(data, n, run_start, cp);
    } else {
      data[n++] = cp;
    }
  };
  auto push = [&](char32_t cp) {
    if (!options_.strip_accents) {
      emit_lowered(cp);
      return;
    }
    const uint8_t f = unicode::flags(cp);
    if (f & unicode::kStripDrops) {
      // A dropped starter still ends the run that canonical ordering may permute.
      if (!(f & unicode::kCombiningNonzero)) run_start = n;
      return;
    }
    if (!(f & unicode::kStripMaps)) {
      emit_lowered(cp);
    } else if (cp >= kHangulFirst && cp <= kHangulLast) {
      const char32_t index = cp - kHangulFirst;
      emit_lowered(0x1100 + index / 588);
      emit_lowered(0x1161 + (index % 588) / 28);
      if (index % 28 != 0) emit_lowered(0x11A7 + index % 28);
    } else {
      const auto* m = find_mapping(unicode::kStripMappings, unicode::kStripMappingCount, cp);
      for (size_t k = 0; m && k < m->length; ++k) emit_lowered(unicode::kMappingPool[m->offset + k]);
    }
  };

  size_t pos = 0;
  const size_t size = text.size();
  while (pos < size) {
    const unsigned char byte = static_cast<unsigned char>(text[pos]);
    if (byte < 0x80) {
      // ASCII: a starter without decomposition, so only cleaning and lowercasing apply.
      ++pos;
      const uint8_t f = unicode::flags(byte);
      if (options_.clean_text && (f & unicode::kDropped)) continue;
      char32_t cp = (options_.clean_text && (f & unicode::kWhitespace)) ? U' ' : byte;
      if (options_.lowercase && cp >= 'A' && cp <= 'Z') cp += 32;
      reserve(1);
      data[n++] = cp;
      run_start = n;
      continue;
    }
    char32_t cp;
    if (!decode_utf8(text, pos, cp)) {
      std::string reason;
      find_invalid_utf8(text.substr(pos), &reason);
      out.resize(n);
      throw Utf8Error("text", pos, reason);
    }
    const uint8_t f = unicode::flags(cp);
    if (options_.clean_text) {
      if (f & unicode::kDropped) continue;
      if (f & unicode::kWhitespace) {
        push(U' ');
        continue;
      }
    }
    if (options_.handle_chinese_chars && (f & unicode::kChinese)) {
      push(U' ');
      push(cp);
      push(U' ');
      continue;
    }
    push(cp);
  }
  out.resize(n);
}

void BertPreTokenizer::split_words(std::string_view text, Scratch& scratch,
                                   void (*on_word)(void*, std::string_view, size_t), void* context) const {
  normalize(text, scratch.normalized);
  std::string& word = scratch.word;
  const std::u32string& normalized = scratch.normalized;
  word.resize(64);
  size_t bytes = 0, code_points = 0;
  auto flush = [&] {
    if (code_points == 0) return;
    on_word(context, std::string_view(word.data(), bytes), code_points);
    bytes = 0;
    code_points = 0;
  };
  auto append = [&](char32_t cp) {
    if (bytes + 4 > word.size()) word.resize(2 * word.size());
    if (cp < 0x80) {
      word[bytes++] = static_cast<char>(cp);
    } else {
      bytes += encode_utf8(cp, word.data() + bytes);
    }
    ++code_points;
  };
  for (char32_t cp : normalized) {
    const uint8_t f = unicode::flags(cp);
    if (f & unicode::kWhitespace) {
      flush();
    } else if (f & unicode::kPunctuation) {
      flush();
      append(cp);
      flush();
    } else {
      append(cp);
    }
  }
  flush();
}

// ---------------------------------------------------------------------------------------------------
// WordPiece

WordPieceTokenizer::WordPieceTokenizer(Vocab vocab, WordPieceConfig config)
    : vocab_(std::move(vocab)), config_(std::move(config)), pre_tokenizer_(config_.normalizer) {
  vocab_.build_tables(config_.continuing_prefix);
  const auto unk = vocab_.find(config_.unk_token);
  if (!unk) {
    throw TokenizerError("vocabulary lacks the unknown token '" + config_.unk_token +
                         "'; expected it in the vocabulary");
  }
  unk_id_ = *unk;
  if (config_.max_input_chars_per_word == 0) throw TokenizerError("max_input_chars_per_word must be positive");
  for (const auto& added : config_.added_tokens) {
    if (added.content.empty()) throw TokenizerError("added token with empty content");
    if (added.id >= vocab_.size() || vocab_.token(added.id) != added.content) {
      throw TokenizerError("added token '" + added.content + "' has id " + std::to_string(added.id) +
                           ", expected the id of that token in the vocabulary");
    }
  }
}

WordPieceTokenizer WordPieceTokenizer::from_vocab(Vocab vocab, NormalizerOptions normalizer) {
  WordPieceConfig config;
  config.normalizer = normalizer;
  for (const char* special : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) {
    if (auto id = vocab.find(special)) config.added_tokens.push_back({special, *id, false, false});
  }
  return WordPieceTokenizer(std::move(vocab), std::move(config));
}

WordPieceTokenizer WordPieceTokenizer::from_vocab_txt(const std::filesystem::path& path, NormalizerOptions normalizer) {
  Vocab vocab = Vocab::load_txt(path);
  if (!vocab.find("[UNK]")) {
    throw TokenizerError(path.string() + ": vocabulary lacks the unknown token '[UNK]'; expected a BERT vocab.txt");
  }
  return from_vocab(std::move(vocab), normalizer);
}

WordPieceTokenizer WordPieceTokenizer::from_tokenizer_json(const std::filesystem::path& path) {
  const std::string name = path.string();
  nlohmann::json root;
  try {
    root = io::parse_json_checked(read_file(path, "tokenizer.json"), "");
  } catch (const ConfigError& e) {
    throw TokenizerError(name + ": not valid JSON (" + e.what() + ")");
  }
  auto fail = [&](const std::string& what) -> TokenizerError { return TokenizerError(name + ": " + what); };
  try {
    const auto& model = root.at("model");
    if (model.value("type", std::string()) != "WordPiece") {
      throw fail("model.type is '" + model.value("type", std::string()) + "', expected 'WordPiece'");
    }
    const auto& vocab_json = model.at("vocab");
    if (!vocab_json.is_object() || vocab_json.empty()) throw fail("model.vocab must be a non-empty object");
    std::vector<std::string> tokens(vocab_json.size());
    std::vector<bool> seen(vocab_json.size(), false);
    for (const auto& [token, id_json] : vocab_json.items()) {
      const auto id = id_json.get<int64_t>();
      if (id < 0 || static_cast<size_t>(id) >= tokens.size() || seen[id]) {
        throw fail("model.vocab id " + std::to_string(id) + " of '" + token +
                   "' is out of range or repeated; expected ids 0.." + std::to_string(tokens.size() - 1) +
                   " each once");
      }
      seen[id] = true;
      tokens[id] = token;
    }
    WordPieceConfig config;
    config.unk_token = model.value("unk_token", std::string("[UNK]"));
    config.continuing_prefix = model.value("continuing_subword_prefix", std::string("##"));
    config.max_input_chars_per_word = model.value("max_input_chars_per_word", size_t{100});

    const auto& normalizer = root.at("normalizer");
    if (normalizer.is_null()) {
      config.normalizer = {false, false, false, false};
    } else {
      if (normalizer.value("type", std::string()) != "BertNormalizer") {
        throw fail("normalizer.type is '" + normalizer.value("type", std::string()) +
                   "', expected 'BertNormalizer' or null");
      }
      config.normalizer.clean_text = normalizer.value("clean_text", true);
      config.normalizer.handle_chinese_chars = normalizer.value("handle_chinese_chars", true);
      config.normalizer.lowercase = normalizer.value("lowercase", true);
      const auto& strip = normalizer.contains("strip_accents") ? normalizer.at("strip_accents") : nlohmann::json();
      config.normalizer.strip_accents = strip.is_null() ? config.normalizer.lowercase : strip.get<bool>();
    }
    const auto& pre = root.at("pre_tokenizer");
    if (pre.is_null() || pre.value("type", std::string()) != "BertPreTokenizer") {
      throw fail("pre_tokenizer must be {\"type\": \"BertPreTokenizer\"}");
    }
    if (root.contains("added_tokens")) {
      for (const auto& added : root.at("added_tokens")) {
        const std::string content = added.at("content").get<std::string>();
        if (added.value("normalized", false)) {
          throw fail("added token '" + content + "' has normalized=true, which is not supported; expected false");
        }
        if (added.value("single_word", false)) {
          throw fail("added token '" + content + "' has single_word=true, which is not supported; expected false");
        }
        config.added_tokens.push_back(
            {content, added.at("id").get<uint32_t>(), added.value("lstrip", false), added.value("rstrip", false)});
      }
    }
    return WordPieceTokenizer(Vocab(std::move(tokens)), std::move(config));
  } catch (const nlohmann::json::exception& e) {
    throw fail(std::string("unexpected tokenizer.json layout (") + e.what() + ")");
  } catch (const TokenizerError& e) {
    const std::string message = e.what();
    if (message.rfind(name, 0) == 0) throw;
    throw fail(message);
  }
}

WordPieceTokenizer WordPieceTokenizer::from_file(const std::filesystem::path& path, NormalizerOptions normalizer) {
  if (path.extension() == ".json") return from_tokenizer_json(path);
  return from_vocab_txt(path, normalizer);
}

SpecialTokenIds WordPieceTokenizer::special_ids() const {
  SpecialTokenIds ids;
  std::string missing;
  auto lookup = [&](const char* token, uint32_t& id) {
    if (auto found = vocab_.find(token)) {
      id = *found;
    } else {
      missing += missing.empty() ? token : std::string(", ") + token;
    }
  };
  lookup("[PAD]", ids.pad);
  lookup(config_.unk_token.c_str(), ids.unk);
  lookup("[CLS]", ids.cls);
  lookup("[SEP]", ids.sep);
  lookup("[MASK]", ids.mask);
  if (!missing.empty()) {
    throw TokenizerError("vocabulary lacks special token(s) " + missing + "; expected [PAD] [UNK] [CLS] [SEP] [MASK]");
  }
  return ids;
}

void WordPieceTokenizer::encode_word(std::string_view word, size_t code_points, std::vector<uint32_t>& out) const {
  if (code_points > config_.max_input_chars_per_word) {
    out.push_back(unk_id_);
    return;
  }
  const size_t first = out.size();
  const auto& tokens = vocab_.tokens_;
  // FNV-1a extends byte by byte, so the hashes of all candidate pieces word[start, end) come from one pass.
  constexpr size_t kMaxHashed = 128;
  uint64_t prefix_hash[kMaxHashed + 1];
  size_t start = 0;
  while (start < word.size()) {
    const Vocab::Table& table = start == 0 ? vocab_.whole_ : vocab_.continuation_;
    const size_t limit = std::min(word.size() - start, table.max_key_bytes);
    const bool hashed = limit <= kMaxHashed;
    if (hashed) {
      prefix_hash[0] = kFnvOffset;
      for (size_t k = 0; k < limit; ++k) {
        prefix_hash[k + 1] = (prefix_hash[k] ^ static_cast<unsigned char>(word[start + k])) * kFnvPrime;
      }
    }
    size_t end = start + limit;
    while (end > start && end < word.size() && is_utf8_continuation(word[end])) --end;
    std::optional<uint32_t> found;
    while (end > start) {
      const std::string_view piece = word.substr(start, end - start);
      found = hashed ? table.find_hashed(piece, prefix_hash[end - start], tokens) : table.find(piece, tokens);
      if (found) break;
      do --end;
      while (end > start && is_utf8_continuation(word[end]));
    }
    if (!found) {
      out.resize(first);
      out.push_back(unk_id_);
      return;
    }
    out.push_back(*found);
    start = end;
  }
}

void WordPieceTokenizer::encode_piece(std::string_view piece, std::vector<uint32_t>& out, Scratch& scratch) const {
  pre_tokenizer_.for_each_word(piece, scratch,
                               [&](std::string_view word, size_t code_points) { encode_word(word, code_points, out); });
}

void WordPieceTokenizer::encode(std::string_view text, std::vector<uint32_t>& out, Scratch& scratch) const {
  const auto& added = config_.added_tokens;
  if (added.empty()) {
    encode_piece(text, out, scratch);
    return;
  }
  // Leftmost match first, the longest among those starting there (aho-corasick LeftmostLongest in HF).
  std::vector<size_t> next(added.size());
  for (size_t i = 0; i < added.size(); ++i) next[i] = text.find(added[i].content);
  size_t pos = 0;
  for (;;) {
    size_t best = added.size();
    for (size_t i = 0; i < added.size(); ++i) {
      if (next[i] == std::string_view::npos) continue;
      if (best == added.size() || next[i] < next[best] ||
          (next[i] == next[best] && added[i].content.size() > added[best].content.size())) {
        best = i;
      }
    }
    if (best == added.size()) break;
    size_t match_start = next[best];
    size_t match_end = match_start + added[best].content.size();
    if (added[best].lstrip) {
      size_t before;
      while (is_whitespace_before(text, match_start, pos, before)) match_start = before;
    }
    if (added[best].rstrip) {
      for (;;) {
        size_t cursor = match_end;
        char32_t cp;
        if (cursor >= text.size() || !decode_utf8(text, cursor, cp) || !(unicode::flags(cp) & unicode::kWhitespace))
          break;
        match_end = cursor;
      }
    }
    try {
      encode_piece(text.substr(pos, match_start - pos), out, scratch);
    } catch (const Utf8Error& e) {
      throw Utf8Error("text", pos + e.offset(), e.reason());
    }
    out.push_back(added[best].id);
    pos = match_end;
    for (size_t i = 0; i < added.size(); ++i) {
      if (next[i] != std::string_view::npos && next[i] < pos) next[i] = text.find(added[i].content, pos);
    }
  }
  try {
    encode_piece(text.substr(pos), out, scratch);
  } catch (const Utf8Error& e) {
    throw Utf8Error("text", pos + e.offset(), e.reason());
  }
}

void WordPieceTokenizer::encode(std::string_view text, std::vector<uint32_t>& out) const {
  Scratch scratch;
  encode(text, out, scratch);
}

std::vector<uint32_t> WordPieceTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<uint32_t> ids;
  const SpecialTokenIds specials = add_special_tokens ? special_ids() : SpecialTokenIds{};
  if (add_special_tokens) ids.push_back(specials.cls);
  encode(text, ids);
  if (add_special_tokens) ids.push_back(specials.sep);
  return ids;
}

std::vector<std::string> WordPieceTokenizer::tokenize(std::string_view text, bool add_special_tokens) const {
  std::vector<std::string> tokens;
  for (uint32_t id : encode(text, add_special_tokens)) tokens.push_back(vocab_.token(id));
  return tokens;
}

}  // namespace coco::text
