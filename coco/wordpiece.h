// BERT WordPiece tokenization, compatible with Hugging Face `tokenizers` (BertNormalizer +
// BertPreTokenizer + WordPiece model). Loads `vocab.txt` or a WordPiece `tokenizer.json`.
//
// Pipeline for one text (ecosystem.md section 3):
//   1. special tokens (the tokenizer's non-normalized added tokens, e.g. "[MASK]") are cut out of the raw text;
//      each remaining piece goes through steps 2-5 on its own
//   2. clean_text: drop U+0000, U+FFFD and control/format chars (not \t \n \r); whitespace -> ' '
//   3. handle_chinese_chars: spaces around CJK ideographs
//   4. strip_accents: NFD, then drop nonspacing marks (Mn); lowercase (char-wise, after stripping)
//   5. split on whitespace, and every punctuation char is a word of its own
//   6. per word: more than max_input_chars_per_word code points -> [UNK]; otherwise greedy longest-match
//      WordPiece with "##" continuations, and a word that cannot be covered is a single [UNK]
// Unicode properties come from coco/unicode_tables.cpp (generated to match `tokenizers`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace coco::text {

class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct NormalizerOptions {
  bool clean_text = true;
  bool handle_chinese_chars = true;
  bool strip_accents = true;  // tokenizer.json's `strip_accents: null` means "same as lowercase"
  bool lowercase = true;

  static NormalizerOptions uncased() { return {}; }
  static NormalizerOptions cased() { return {true, true, false, false}; }
  bool operator==(const NormalizerOptions&) const = default;
};

// 64-bit FNV-1a over every token followed by '\n', in id order: the identity of a vocabulary, whichever
// file format it was read from.
uint64_t vocab_hash(const std::vector<std::string>& tokens);

// Token strings by id with a fast string -> id lookup (open addressing, no allocation per lookup).
class Vocab {
 public:
  Vocab() = default;
  explicit Vocab(std::vector<std::string> tokens);

  // One token per line, id = 0-based line number; trailing whitespace (e.g. '\r') of a line is ignored.
  static Vocab load_txt(const std::filesystem::path& path);
  void save_txt(const std::filesystem::path& path) const;

  size_t size() const { return tokens_.size(); }
  const std::string& token(uint32_t id) const { return tokens_.at(id); }
  const std::vector<std::string>& tokens() const { return tokens_; }
  std::optional<uint32_t> find(std::string_view token) const;
  uint64_t hash() const { return hash_; }

 private:
  friend class WordPieceTokenizer;
  // Open addressing over token ids; a key is a token with its first `skip` bytes removed.
  struct Table {
    // (upper 32 bits of the key's hash) << 32 | (id + 1); 0 = empty; power-of-two size. The stored hash bits
    // reject almost every mismatch without touching the token string.
    std::vector<uint64_t> slots;
    size_t skip = 0;
    size_t max_key_bytes = 0;
    void build(const std::vector<std::string>& tokens, std::string_view required_prefix);
    std::optional<uint32_t> find(std::string_view key, const std::vector<std::string>& tokens) const;
    // `hash` = 64-bit FNV-1a of `key`.
    std::optional<uint32_t> find_hashed(std::string_view key, uint64_t hash,
                                        const std::vector<std::string>& tokens) const;
  };
  void build_tables(std::string_view continuing_prefix);

  std::vector<std::string> tokens_;
  uint64_t hash_ = 0;
  Table whole_;         // every token as written
  Table continuation_;  // tokens that start with the continuing prefix, keyed without it
};

// A token matched in the raw text before normalization (HF "added tokens" with normalized=false).
struct AddedToken {
  std::string content;
  uint32_t id = 0;
  bool lstrip = false;  // the match also swallows whitespace on its left
  bool rstrip = false;  // ... and on its right
};

struct SpecialTokenIds {
  uint32_t pad = 0, unk = 0, cls = 0, sep = 0, mask = 0;
  bool operator==(const SpecialTokenIds&) const = default;
};

struct WordPieceConfig {
  NormalizerOptions normalizer;
  std::string unk_token = "[UNK]";
  std::string continuing_prefix = "##";
  size_t max_input_chars_per_word = 100;
  // Matched in the raw text. vocab.txt gets [PAD] [UNK] [CLS] [SEP] [MASK] (those present), like
  // BertTokenizerFast; tokenizer.json lists its own.
  std::vector<AddedToken> added_tokens;
};

// Normalization + pre-tokenization (steps 2-5), shared by the tokenizer and the vocabulary trainer.
class BertPreTokenizer {
 public:
  explicit BertPreTokenizer(NormalizerOptions options = {}) : options_(options) {}
  const NormalizerOptions& options() const { return options_; }

  // Reusable buffers, so that a caller tokenizing many texts allocates only while they grow.
  struct Scratch {
    std::u32string normalized;
    std::string word;
  };
  // Calls on_word(std::string_view utf8_word, size_t code_points) for each word, in order. Throws
  // Utf8Error (source "text") on invalid UTF-8.
  template <class OnWord>
  void for_each_word(std::string_view text, Scratch& scratch, OnWord&& on_word) const {
    split_words(
        text, scratch,
        [](void* context, std::string_view word, size_t code_points) {
          (*static_cast<std::remove_reference_t<OnWord>*>(context))(word, code_points);
        },
        &on_word);
  }

  // Steps 2-4 only: `out` receives the normalized code points.
  void normalize(std::string_view text, std::u32string& out) const;

 private:
  void split_words(std::string_view text, Scratch& scratch, void (*on_word)(void*, std::string_view, size_t),
                   void* context) const;

  NormalizerOptions options_;
};

class WordPieceTokenizer {
 public:
  WordPieceTokenizer(Vocab vocab, WordPieceConfig config);

  // vocab.txt: normalizer as given (uncased by default); the five BERT specials present become added tokens.
  static WordPieceTokenizer from_vocab_txt(const std::filesystem::path& path,
                                           NormalizerOptions normalizer = NormalizerOptions::uncased());
  // The same for a vocabulary already in memory (e.g. just trained).
  static WordPieceTokenizer from_vocab(Vocab vocab, NormalizerOptions normalizer = NormalizerOptions::uncased());
  // tokenizer.json with a WordPiece model, a BertNormalizer (or none) and a BertPreTokenizer.
  static WordPieceTokenizer from_tokenizer_json(const std::filesystem::path& path);
  // By extension: *.json -> tokenizer.json, anything else -> vocab.txt (with `normalizer`).
  static WordPieceTokenizer from_file(const std::filesystem::path& path,
                                      NormalizerOptions normalizer = NormalizerOptions::uncased());

  using Scratch = BertPreTokenizer::Scratch;
  // Appends the ids of `text` (no [CLS]/[SEP]) to `out`.
  void encode(std::string_view text, std::vector<uint32_t>& out, Scratch& scratch) const;
  void encode(std::string_view text, std::vector<uint32_t>& out) const;
  // The ids, with [CLS] ... [SEP] around them when add_special_tokens (as `tokenizers` encodes by default).
  std::vector<uint32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  std::vector<std::string> tokenize(std::string_view text, bool add_special_tokens = false) const;

  const Vocab& vocab() const { return vocab_; }
  const WordPieceConfig& config() const { return config_; }
  const NormalizerOptions& normalizer() const { return config_.normalizer; }
  uint32_t unk_id() const { return unk_id_; }
  // Ids of [PAD] [UNK] [CLS] [SEP] [MASK]; throws TokenizerError naming the ones the vocabulary lacks.
  SpecialTokenIds special_ids() const;

 private:
  void encode_piece(std::string_view piece, std::vector<uint32_t>& out, Scratch& scratch) const;
  void encode_word(std::string_view word, size_t code_points, std::vector<uint32_t>& out) const;

  Vocab vocab_;
  WordPieceConfig config_;
  BertPreTokenizer pre_tokenizer_;
  uint32_t unk_id_ = 0;
};

}  // namespace coco::text
