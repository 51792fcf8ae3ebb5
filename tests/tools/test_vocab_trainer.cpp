// WordPiece vocabulary trainer: exact size, specials and alphabet, no [UNK] on its own corpus, determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <set>

#include "coco/utf8.h"
#include "coco/vocab_trainer.h"
#include "coco/wordpiece.h"

namespace coco::text {
namespace {

// A small corpus with a Zipf-like word distribution, inflections, accents, CJK, emoji and punctuation.
std::vector<std::string> make_corpus(size_t documents, uint32_t seed) {
  const std::vector<std::string> stems = {
      "the",      "of",       "and",      "to",      "in",      "is",       "that",    "for",     "it",
      "as",       "was",      "with",     "be",      "by",      "on",       "not",     "he",      "this",
      "are",      "or",       "his",      "from",    "at",      "which",    "but",     "have",    "an",
      "had",      "they",     "you",      "were",    "their",   "one",      "all",     "we",      "can",
      "her",      "has",      "there",    "been",    "if",      "more",     "when",    "will",    "would",
      "who",      "so",       "no",       "model",   "token",   "train",    "learn",   "correct", "contrast",
      "sequence", "language", "generate", "replace", "predict", "pretrain", "encoder", "electra", "mask",
      "corrupt",  "original", "Café",     "naïve",   "Zürich",  "Ångström", "façade",  "Straße",  "İstanbul",
      "北京",     "東京",     "😀",        "Ωmega"};
  const std::vector<std::string> suffixes = {"", "", "", "s", "ed", "ing", "er", "ly", "ness", "ation"};
  const std::vector<std::string> punctuation = {"", "", "", ",", ".", ";", "!", "?", "'s", " —"};
  std::mt19937 rng(seed);
  std::vector<std::string> corpus;
  for (size_t d = 0; d < documents; ++d) {
    std::string doc;
    const size_t words = 20 + rng() % 60;
    for (size_t w = 0; w < words; ++w) {
      const double u = std::uniform_real_distribution<double>(0, 1)(rng);
      const size_t stem = std::min(stems.size() - 1, static_cast<size_t>(std::pow(u, 2.5) * stems.size()));
      doc += stems[stem] + suffixes[rng() % suffixes.size()] + punctuation[rng() % punctuation.size()] + " ";
    }
    corpus.push_back(doc);
  }
  return corpus;
}

TEST(VocabTrainer, ExactSizeSpecialsFirstAndEveryCharacter) {
  const auto corpus = make_corpus(400, 1);
  VocabTrainerOptions options;
  options.vocab_size = 300;
  options.threads = 2;
  const auto vocab = train_wordpiece_vocab(corpus, options);
  ASSERT_EQ(vocab.size(), 300u);
  EXPECT_EQ(std::vector<std::string>(vocab.begin(), vocab.begin() + 5),
            (std::vector<std::string>{"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}));
  EXPECT_EQ(std::set<std::string>(vocab.begin(), vocab.end()).size(), vocab.size()) << "duplicate tokens";
  // Every character of the normalized corpus is in the vocabulary, as a word start or a continuation.
  const std::set<std::string> tokens(vocab.begin(), vocab.end());
  BertPreTokenizer pre_tokenizer;
  BertPreTokenizer::Scratch scratch;
  for (const auto& text : corpus) {
    pre_tokenizer.for_each_word(text, scratch, [&](std::string_view word, size_t) {
      size_t pos = 0;
      char32_t cp;
      while (pos < word.size()) {
        const size_t start = pos;
        ASSERT_TRUE(decode_utf8(word, pos, cp));
        const std::string piece(word.substr(start, pos - start));
        EXPECT_TRUE(tokens.count(start == 0 ? piece : "##" + piece)) << piece;
      }
    });
  }
  // Frequent words became single pieces; merged continuations carry the prefix.
  EXPECT_TRUE(tokens.count("the"));
  EXPECT_TRUE(tokens.count("model"));
  EXPECT_TRUE(std::any_of(vocab.begin(), vocab.end(),
                          [](const std::string& t) { return t.rfind("##", 0) == 0 && t.size() > 3; }));
}

TEST(VocabTrainer, TrainingTextEncodesWithoutUnknown) {
  const auto corpus = make_corpus(300, 2);
  for (size_t size : {120, 500}) {
    VocabTrainerOptions options;
    options.vocab_size = size;
    const auto tokenizer = WordPieceTokenizer::from_vocab(Vocab(train_wordpiece_vocab(corpus, options)));
    EXPECT_EQ(tokenizer.special_ids(), (SpecialTokenIds{0, 1, 2, 3, 4}));
    size_t tokens = 0;
    for (const auto& text : corpus) {
      const auto ids = tokenizer.encode(text);
      tokens += ids.size();
      EXPECT_EQ(std::count(ids.begin(), ids.end(), tokenizer.unk_id()), 0) << text;
    }
    EXPECT_GT(tokens, 0u);
  }
}

TEST(VocabTrainer, LargerVocabularyGivesFewerTokens) {
  const auto corpus = make_corpus(300, 3);
  size_t previous = SIZE_MAX;
  for (size_t size : {100, 200, 400}) {
    VocabTrainerOptions options;
    options.vocab_size = size;
    const auto tokenizer = WordPieceTokenizer::from_vocab(Vocab(train_wordpiece_vocab(corpus, options)));
    size_t tokens = 0;
    for (const auto& text : corpus) tokens += tokenizer.encode(text).size();
    EXPECT_LT(tokens, previous) << "vocab_size " << size;
    previous = tokens;
  }
}

TEST(VocabTrainer, DeterministicAcrossRunsThreadsAndInputOrder) {
  auto corpus = make_corpus(500, 4);
  VocabTrainerOptions options;
  options.vocab_size = 400;
  options.threads = 1;
  const auto reference = train_wordpiece_vocab(corpus, options);
  EXPECT_EQ(train_wordpiece_vocab(corpus, options), reference);
  options.threads = 2;
  EXPECT_EQ(train_wordpiece_vocab(corpus, options), reference);
  options.threads = 7;
  EXPECT_EQ(train_wordpiece_vocab(corpus, options), reference);
  std::reverse(corpus.begin(), corpus.end());
  EXPECT_EQ(train_wordpiece_vocab(corpus, options), reference);
  EXPECT_EQ(vocab_hash(train_wordpiece_vocab(corpus, options)), vocab_hash(reference));
}

TEST(VocabTrainer, BertLayoutAndCasedNormalizer) {
  const auto corpus = make_corpus(200, 5);
  VocabTrainerOptions options;
  options.vocab_size = 400;
  options.layout = SpecialLayout::bert;
  options.normalizer = NormalizerOptions::cased();
  const auto vocab = train_wordpiece_vocab(corpus, options);
  ASSERT_EQ(vocab.size(), 400u);
  const auto tokenizer = WordPieceTokenizer::from_vocab(Vocab(vocab), NormalizerOptions::cased());
  EXPECT_EQ(tokenizer.special_ids(), (SpecialTokenIds{0, 100, 101, 102, 103}));
  EXPECT_EQ(vocab[1], "[unused0]");
  EXPECT_EQ(vocab[99], "[unused98]");
  const std::set<std::string> tokens(vocab.begin(), vocab.end());
  EXPECT_TRUE(tokens.count("C")) << "cased vocabulary keeps upper case";
  EXPECT_TRUE(tokens.count("##\u00e9")) << "cased vocabulary keeps accents";
}

TEST(VocabTrainer, MergesFollowPairFrequency) {
  // "low" (x5), "lower" (x2), "newest" (x6), "widest" (x3): classic BPE example, WordPiece flavour.
  const std::unordered_map<std::string, uint64_t> counts = {{"low", 5}, {"lower", 2}, {"newest", 6}, {"widest", 3}};
  VocabTrainerOptions options;
  options.vocab_size = 5 + 11 + 3;
  const auto vocab = train_wordpiece_vocab(counts, options);
  // Alphabet (11): l n w ##o ##w ##e ##r ##s ##t ##i ##d. Pair counts: (##e,##s) = (##s,##t) = 9, ties go to
  // the smaller strings: "##es"; then (##es,##t) = 9: "##est"; (##w,##e) dropped to 2 when "newest" merged, so
  // next are (l,##o) = (##o,##w) = 7, and "##o" < "l": "##ow".
  EXPECT_EQ(std::vector<std::string>(vocab.begin() + 5, vocab.begin() + 16),
            (std::vector<std::string>{"##d", "##e", "##i", "##o", "##r", "##s", "##t", "##w", "l", "n", "w"}));
  EXPECT_EQ(std::vector<std::string>(vocab.end() - 3, vocab.end()),
            (std::vector<std::string>{"##es", "##est", "##ow"}));
}

TEST(VocabTrainer, AlphabetLimitsLeaveRareCharactersOut) {
  const std::unordered_map<std::string, uint64_t> counts = {{"aab", 10}, {"abc", 5}, {"x", 1}, {"zz", 1}};
  VocabTrainerOptions options;
  options.vocab_size = 5 + 4;
  // a (25) and b (15) stay; c (5), x (1), z (2) and their words go, so only "aab" is left: (a,##a) and
  // (##a,##b) both have 10, and "##a" sorts before "a".
  options.max_alphabet = 2;
  auto vocab = train_wordpiece_vocab(counts, options);
  EXPECT_EQ(std::vector<std::string>(vocab.begin() + 5, vocab.end()),
            (std::vector<std::string>{"##a", "##b", "a", "##ab"}));
  options.max_alphabet = 0;
  options.min_char_frequency = 2;  // only x is left out
  options.vocab_size = 5 + 8;
  vocab = train_wordpiece_vocab(counts, options);
  const std::set<std::string> tokens(vocab.begin(), vocab.end());
  EXPECT_TRUE(tokens.count("z") && tokens.count("##z") && tokens.count("##c"));
  EXPECT_FALSE(tokens.count("x"));
}

TEST(VocabTrainer, ImpossibleSizesAreClearErrors) {
  const auto corpus = make_corpus(50, 6);
  VocabTrainerOptions options;
  options.vocab_size = 10;
  try {
    train_wordpiece_vocab(corpus, options);
    ADD_FAILURE() << "no error for a vocabulary smaller than the alphabet";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("expected at least"), std::string::npos) << e.what();
  }
  options.vocab_size = 1000000;
  try {
    train_wordpiece_vocab(corpus, options);
    ADD_FAILURE() << "no error for a vocabulary the corpus cannot fill";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("supports a vocabulary of only"), std::string::npos) << e.what();
  }
  options.vocab_size = 5;
  EXPECT_THROW(train_wordpiece_vocab(corpus, options), std::invalid_argument);
  options.vocab_size = 200;
  EXPECT_THROW(train_wordpiece_vocab(std::vector<std::string>{"ok", "bad \xff utf8"}, options), Utf8Error);
}

}  // namespace
}  // namespace coco::text
