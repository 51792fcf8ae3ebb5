// Deterministic WordPiece vocabulary training (the Hugging Face WordPieceTrainer approach): the corpus is
// normalized and pre-tokenized exactly as the tokenizer will see it, words are counted, every word starts as
// characters ("w", "##o", "##r", "##d"), and the most frequent adjacent pair is merged repeatedly (BPE) into a
// new piece ("w" + "##o" -> "wo", "##r" + "##d" -> "##rd") until the vocabulary has the requested size.
//
// Vocabulary layout: special tokens, then the alphabet (every character form seen, sorted by UTF-8 bytes), then
// the merged pieces in merge order. Ties between equally frequent pairs go to the pair whose strings sort first,
// so the result depends only on the word counts: not on thread count, input order or hash-table layout.
// Training text therefore encodes without [UNK] (every word is at worst split into its characters), except words
// longer than max_word_chars and words with a character left out of the alphabet (min_char_frequency,
// max_alphabet).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "coco/wordpiece.h"

namespace coco::text {

enum class SpecialLayout {
  first,  // [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0..4
  bert,   // bert-base layout: [PAD]=0, [unused0..98]=1..99, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103
};

struct VocabTrainerOptions {
  size_t vocab_size = 30522;  // exact size of the result
  NormalizerOptions normalizer = NormalizerOptions::uncased();
  SpecialLayout layout = SpecialLayout::first;
  std::string continuing_prefix = "##";
  uint64_t min_pair_frequency = 2;  // pairs seen fewer times are never merged
  uint64_t min_char_frequency = 1;  // rarer characters stay out of the alphabet (their words become [UNK])
  size_t max_alphabet = 0;          // keep only this many most frequent characters (0 = all)
  size_t max_word_chars = 100;      // longer words are [UNK] for the tokenizer, so they are not counted
  size_t threads = 0;               // word counting; 0 = hardware concurrency
};

// Word -> occurrences, from the same normalization and pre-tokenization as the tokenizer.
class WordCounter {
 public:
  explicit WordCounter(NormalizerOptions normalizer = NormalizerOptions::uncased(), size_t max_word_chars = 100)
      : pre_tokenizer_(normalizer), max_word_chars_(max_word_chars) {}

  void add_text(std::string_view text);  // throws Utf8Error on invalid UTF-8
  void merge(const WordCounter& other);
  const std::unordered_map<std::string, uint64_t>& counts() const { return counts_; }
  uint64_t total_words() const { return total_words_; }

 private:
  BertPreTokenizer pre_tokenizer_;
  BertPreTokenizer::Scratch scratch_;
  size_t max_word_chars_;
  std::unordered_map<std::string, uint64_t> counts_;
  uint64_t total_words_ = 0;
};

// Counts the words of `texts` on options.threads threads (deterministic: counts are sums).
WordCounter count_words(const std::vector<std::string>& texts, const VocabTrainerOptions& options);

// The vocabulary (token by id). Throws std::invalid_argument when vocab_size cannot be reached: smaller than
// the specials plus the alphabet, or larger than the corpus supports (the message says the reachable size).
std::vector<std::string> train_wordpiece_vocab(const std::unordered_map<std::string, uint64_t>& word_counts,
                                               const VocabTrainerOptions& options);
std::vector<std::string> train_wordpiece_vocab(const std::vector<std::string>& texts,
                                               const VocabTrainerOptions& options);

}  // namespace coco::text
