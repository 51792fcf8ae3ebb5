// The Hugging Face tokenizer files of a WordPiece vocabulary, so that `AutoTokenizer.from_pretrained(DIR)`
// tokenizes exactly as coco does (same ids, same casing):
//
//   vocab.txt                one token per line, id = line number
//   tokenizer.json           the `tokenizers` pipeline: BertNormalizer with coco's casing (lowercase,
//                            strip_accents, clean_text, handle_chinese_chars), BertPreTokenizer, WordPiece
//                            ("##", max_input_chars_per_word), the special tokens as non-normalized added
//                            tokens, [CLS] A [SEP] (B [SEP]) templates, WordPiece decoder
//   tokenizer_config.json    BertTokenizer with do_lower_case / strip_accents / tokenize_chinese_chars set
//                            explicitly (without them `transformers` lowercases a cased vocabulary), the
//                            special tokens, model_max_length when known
//   special_tokens_map.json  the five special tokens
//
// `coco prepare` writes them beside its vocabulary; checkpoints carry copies, so `coco export` never needs
// the data folder.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "coco/wordpiece.h"

namespace coco::interop {

// File names in the order they are written.
inline const std::vector<std::string>& tokenizer_file_names() {
  static const std::vector<std::string> names = {"vocab.txt", "tokenizer.json", "tokenizer_config.json",
                                                 "special_tokens_map.json"};
  return names;
}

struct TokenizerFiles {
  std::vector<std::pair<std::string, std::string>> files;  // (file name, contents)

  // nullptr when absent.
  const std::string* find(const std::string& name) const;
  // Writes every file into `dir` (which must exist), replacing files of the same names.
  void write(const std::filesystem::path& dir) const;
};

// The four files for `tokenizer`. model_max_length <= 0 leaves it out of tokenizer_config.json.
TokenizerFiles make_tokenizer_files(const text::WordPieceTokenizer& tokenizer, int64_t model_max_length = 0);

// The tokenizer files of a directory holding a vocabulary: a `coco prepare` output, a checkpoint, or a
// Hugging Face model folder. Files present are taken as they are; missing ones are generated from the
// vocabulary (vocab.txt, else tokenizer.json) and the casing recorded beside it: tokenizer.json's
// normalizer, else meta.json's "normalizer" (coco prepare), else tokenizer_config.json's do_lower_case /
// strip_accents, else uncased (the BERT default). Throws text::TokenizerError naming the directory when it
// holds no vocabulary or the vocabulary lacks a special token.
TokenizerFiles read_tokenizer_files(const std::filesystem::path& dir);

// True when `dir` holds a vocabulary (vocab.txt or tokenizer.json).
bool has_vocabulary(const std::filesystem::path& dir);

// The tokenizer of such a directory, with the casing rules of read_tokenizer_files().
text::WordPieceTokenizer load_tokenizer(const std::filesystem::path& dir);

// tokenizer_config.json's model_max_length set to `length`; the other keys kept as they are.
void set_model_max_length(TokenizerFiles& files, int64_t length);

}  // namespace coco::interop
