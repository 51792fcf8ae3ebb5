// WordPiece tokenizer: exact agreement with Hugging Face `tokenizers` (golden files written by
// scripts/make_wordpiece_golden.py), edge cases, loader errors, and throughput.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "coco/utf8.h"
#include "coco/wordpiece.h"

namespace coco::text {
namespace {

const std::filesystem::path kData = std::filesystem::path(COCO_SOURCE_DIR) / "tests" / "data" / "wordpiece";

std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << "cannot open " << path;
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

std::string show(const WordPieceTokenizer& tokenizer, const std::vector<uint32_t>& ids) {
  std::string out;
  for (uint32_t id : ids) out += (id < tokenizer.vocab().size() ? tokenizer.vocab().token(id) : "<bad id>") + " ";
  return out;
}

void expect_matches_golden(const WordPieceTokenizer& tokenizer, const char* field) {
  const auto rows = read_jsonl(kData / "expected.jsonl");
  ASSERT_GE(rows.size(), 300u);
  size_t mismatches = 0;
  for (const auto& row : rows) {
    const std::string text = row.at("text");
    const auto expected = row.at(field).get<std::vector<uint32_t>>();
    const auto actual = tokenizer.encode(text, /*add_special_tokens=*/true);
    if (actual != expected && ++mismatches <= 10) {
      ADD_FAILURE() << "text " << nlohmann::json(text).dump() << "\n  expected " << show(tokenizer, expected)
                    << "\n  actual   " << show(tokenizer, actual);
    }
  }
  EXPECT_EQ(mismatches, 0u) << "of " << rows.size() << " golden lines";
}

const WordPieceTokenizer& uncased_json() {
  static const WordPieceTokenizer tokenizer = WordPieceTokenizer::from_tokenizer_json(kData / "tokenizer.json");
  return tokenizer;
}

TEST(WordPiece, MatchesHuggingFaceGoldenFromTokenizerJson) { expect_matches_golden(uncased_json(), "ids"); }

TEST(WordPiece, MatchesHuggingFaceGoldenFromVocabTxt) {
  expect_matches_golden(WordPieceTokenizer::from_vocab_txt(kData / "vocab.txt"), "ids");
}

// Normalized, pre-tokenized words of every golden text (canonical reordering, dropped marks, lowercase maps).
TEST(WordPiece, NormalizedWordsMatchHuggingFace) {
  BertPreTokenizer pre_tokenizer(NormalizerOptions::uncased());
  BertPreTokenizer::Scratch scratch;
  size_t mismatches = 0;
  for (const auto& row : read_jsonl(kData / "expected.jsonl")) {
    const std::string text = row.at("text");
    std::vector<std::string> words;
    pre_tokenizer.for_each_word(text, scratch, [&](std::string_view word, size_t code_points) {
      words.emplace_back(word);
      EXPECT_EQ(code_points, count_code_points(word));
    });
    if (words != row.at("words").get<std::vector<std::string>>() && ++mismatches <= 10) {
      ADD_FAILURE() << "text " << nlohmann::json(text).dump() << "\n  expected " << row.at("words").dump()
                    << "\n  actual   " << nlohmann::json(words).dump();
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST(WordPiece, MatchesHuggingFaceGoldenCased) {
  expect_matches_golden(WordPieceTokenizer::from_vocab_txt(kData / "vocab.txt", NormalizerOptions::cased()),
                        "cased_ids");
}

uint64_t fnv1a_bytes(std::string_view bytes, uint64_t h = 0xcbf29ce484222325ull) {
  for (unsigned char c : bytes) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Every code point, in blocks: ids and normalized words agree with `tokenizers` (pins the Unicode tables).
TEST(WordPiece, EveryCodePointMatchesHuggingFace) {
  const auto& tokenizer = uncased_json();
  BertPreTokenizer pre_tokenizer(tokenizer.normalizer());
  BertPreTokenizer::Scratch scratch;
  const auto rows = read_jsonl(kData / "codepoints.jsonl");
  ASSERT_EQ(rows.size(), 0x110000u / 4096);
  for (const auto& row : rows) {
    const char32_t first = row.at("first"), last = row.at("last");
    std::string text;
    for (char32_t cp = first; cp <= last; ++cp) {
      if (cp >= 0xD800 && cp <= 0xDFFF) continue;
      append_utf8(text, cp);
      text += 'a';
      append_utf8(text, cp);
      append_utf8(text, cp);
      text += ' ';
    }
    std::vector<uint32_t> ids;
    tokenizer.encode(text, ids);
    uint64_t ids_hash = 0xcbf29ce484222325ull;
    for (uint32_t id : ids) {
      const unsigned char le[4] = {static_cast<unsigned char>(id), static_cast<unsigned char>(id >> 8),
                                   static_cast<unsigned char>(id >> 16), static_cast<unsigned char>(id >> 24)};
      ids_hash = fnv1a_bytes(std::string_view(reinterpret_cast<const char*>(le), 4), ids_hash);
    }
    size_t words = 0;
    uint64_t words_hash = 0xcbf29ce484222325ull;
    pre_tokenizer.for_each_word(text, scratch, [&](std::string_view word, size_t) {
      ++words;
      words_hash = fnv1a_bytes("\n", fnv1a_bytes(word, words_hash));
    });
    char hex[2][17];
    std::snprintf(hex[0], sizeof hex[0], "%016llx", static_cast<unsigned long long>(ids_hash));
    std::snprintf(hex[1], sizeof hex[1], "%016llx", static_cast<unsigned long long>(words_hash));
    const std::string block = "code points U+" + std::to_string(first) + "..U+" + std::to_string(last) + " (decimal)";
    EXPECT_EQ(words, row.at("words").get<size_t>()) << block;
    EXPECT_EQ(std::string(hex[1]), row.at("words_fnv").get<std::string>()) << block;
    EXPECT_EQ(ids.size(), row.at("count").get<size_t>()) << block;
    EXPECT_EQ(std::string(hex[0]), row.at("fnv").get<std::string>()) << block;
  }
}

// The project's reference file. Its "aaaa…" record shows an abbreviated text: the ids ([CLS] [UNK] [SEP]) are
// those of a single word longer than 100 characters, so that record is checked with such a word.
TEST(WordPiece, MatchesSharedReferenceGolden) {
  const std::filesystem::path golden = std::filesystem::path(COCO_SHARED_DIR) / "reference" / "golden";
  if (!std::filesystem::exists(golden / "wordpiece_golden.jsonl")) GTEST_SKIP() << "no " << golden;
  const auto tokenizer = WordPieceTokenizer::from_tokenizer_json(golden / "tokenizer.json");
  const auto rows = read_jsonl(golden / "wordpiece_golden.jsonl");
  ASSERT_FALSE(rows.empty());
  const std::string ellipsis = "\u2026";
  for (const auto& row : rows) {
    std::string text = row.at("text");
    if (text.size() > ellipsis.size() && text.ends_with(ellipsis)) {
      text.resize(text.size() - ellipsis.size());
      text.resize(150, text.back());
    }
    EXPECT_EQ(tokenizer.encode(text, true), row.at("ids").get<std::vector<uint32_t>>()) << text;
    EXPECT_EQ(tokenizer.tokenize(text, true), row.at("tokens").get<std::vector<std::string>>()) << text;
  }
}

TEST(WordPiece, VocabTxtAndTokenizerJsonAreTheSameVocabulary) {
  const auto from_txt = WordPieceTokenizer::from_vocab_txt(kData / "vocab.txt");
  EXPECT_EQ(from_txt.vocab().size(), 30522u);
  EXPECT_EQ(from_txt.vocab().hash(), uncased_json().vocab().hash());
  EXPECT_EQ(from_txt.vocab().tokens(), uncased_json().vocab().tokens());
  EXPECT_EQ(from_txt.special_ids(), (SpecialTokenIds{0, 100, 101, 102, 103}));
  EXPECT_EQ(from_txt.vocab().find("hello"), 7592u);
  EXPECT_EQ(from_txt.vocab().find("##s"), 2015u);
  EXPECT_FALSE(from_txt.vocab().find("definitelynotatoken").has_value());
  EXPECT_EQ(uncased_json().normalizer(), NormalizerOptions::uncased());
}

TEST(WordPiece, EdgeCases) {
  const auto& tokenizer = uncased_json();
  EXPECT_TRUE(tokenizer.encode("").empty());
  EXPECT_TRUE(tokenizer.encode(" \t\n\r\u3000\u00a0").empty());
  EXPECT_TRUE(tokenizer.encode(std::string("\0\x01\x7f", 3)).empty());
  EXPECT_EQ(tokenizer.encode("", true), (std::vector<uint32_t>{101, 102}));
  // 100 code points still go through WordPiece, 101 are one [UNK] (also for multi-byte characters).
  const auto hundred = tokenizer.encode(std::string(100, 'a'));
  EXPECT_GT(hundred.size(), 1u);
  EXPECT_EQ(std::count(hundred.begin(), hundred.end(), tokenizer.unk_id()), 0);
  EXPECT_EQ(tokenizer.encode(std::string(101, 'a')), (std::vector<uint32_t>{100}));
  std::string accented;
  for (int i = 0; i < 101; ++i) accented += "\u00e9";
  EXPECT_EQ(tokenizer.encode(accented), (std::vector<uint32_t>{100}));
  // A character missing from the vocabulary makes its whole word one [UNK]; neighbours are unaffected.
  EXPECT_EQ(tokenizer.tokenize("hello\u2603world ok"), (std::vector<std::string>{"[UNK]", "ok"}));
  EXPECT_EQ(tokenizer.tokenize("x[MASK]y"), (std::vector<std::string>{"x", "[MASK]", "y"}));
}

TEST(WordPiece, InvalidUtf8IsAnErrorWithOffset) {
  const auto& tokenizer = uncased_json();
  for (const auto& [bytes, offset] : std::vector<std::pair<std::string, uint64_t>>{{"ok \xff tail", 3},
                                                                                   {"abc\xc3", 3},
                                                                                   {"ab\xe2\x82", 2},
                                                                                   {"\xc0\x80", 0},
                                                                                   {"ab\xed\xa0\x80", 2},
                                                                                   {"abcd\xf4\x90\x80\x80", 4},
                                                                                   {"a[MASK]b\x80", 8}}) {
    try {
      tokenizer.encode(bytes);
      ADD_FAILURE() << "no error for " << nlohmann::json::binary({bytes.begin(), bytes.end()}).dump();
    } catch (const Utf8Error& e) {
      EXPECT_EQ(e.offset(), offset) << e.what();
      EXPECT_NE(std::string(e.what()).find("byte offset " + std::to_string(offset)), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(find_invalid_utf8("plain ascii and \u00e9\u4e2d\U0001F600"), kUtf8Valid);
  EXPECT_EQ(find_invalid_utf8("0123456789abcdef\x80"), 16u);
  EXPECT_THROW(validate_utf8("a\xfe", "some.txt", 100), Utf8Error);
  try {
    validate_utf8("a\xfe", "some.txt", 100);
  } catch (const Utf8Error& e) {
    EXPECT_EQ(e.source(), "some.txt");
    EXPECT_EQ(e.offset(), 101u);
    EXPECT_NE(std::string(e.what()).find("some.txt"), std::string::npos);
  }
}

const std::filesystem::path& temp_root() {
  static const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("coco_wordpiece_test_" + std::to_string(::getpid()));
  return dir;
}

class RemoveTempDir : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code error;
    std::filesystem::remove_all(temp_root(), error);
  }
};
[[maybe_unused]] ::testing::Environment* const remove_temp_dir = ::testing::AddGlobalTestEnvironment(new RemoveTempDir);

std::filesystem::path temp_file(const std::string& name, const std::string& content) {
  const auto& dir = temp_root();
  std::filesystem::create_directories(dir);
  const auto path = dir / name;
  std::ofstream(path, std::ios::binary) << content;
  return path;
}

TEST(WordPiece, LoaderErrorsNameTheFileAndTheExpectation) {
  auto expect_error = [](auto&& load, const std::string& needle) {
    try {
      load();
      ADD_FAILURE() << "no error, expected one mentioning '" << needle << "'";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const auto no_unk = temp_file("no_unk.txt", "[PAD]\nhello\n");
  expect_error([&] { WordPieceTokenizer::from_vocab_txt(no_unk); }, "[UNK]");
  expect_error([&] { WordPieceTokenizer::from_vocab_txt("/nonexistent/vocab.txt"); }, "/nonexistent/vocab.txt");
  const auto bad_json = temp_file("bad.json", "{not json");
  expect_error([&] { WordPieceTokenizer::from_tokenizer_json(bad_json); }, "bad.json");
  const auto bpe =
      temp_file("bpe.json", R"({"model":{"type":"BPE","vocab":{}},"normalizer":null,"pre_tokenizer":null})");
  expect_error([&] { WordPieceTokenizer::from_tokenizer_json(bpe); }, "expected 'WordPiece'");
  const auto gap = temp_file(
      "gap.json",
      R"({"model":{"type":"WordPiece","vocab":{"[UNK]":0,"a":5}},"normalizer":null,"pre_tokenizer":{"type":"BertPreTokenizer"}})");
  expect_error([&] { WordPieceTokenizer::from_tokenizer_json(gap); }, "out of range");
  const auto bad_utf8 = temp_file("bad_utf8.txt", "[UNK]\nok\n\xff\n");
  expect_error([&] { Vocab::load_txt(bad_utf8); }, "byte offset 9");
  const auto minimal = temp_file("minimal.txt", "[UNK]\r\nab\r\n##c\r\n");
  const auto tokenizer = WordPieceTokenizer::from_vocab_txt(minimal);
  EXPECT_EQ(tokenizer.tokenize("abc AB abcc x"),
            (std::vector<std::string>{"ab", "##c", "ab", "ab", "##c", "##c", "[UNK]"}));
  expect_error([&] { tokenizer.special_ids(); }, "[PAD], [CLS], [SEP], [MASK]");
}

TEST(WordPiece, ThroughputOnAsciiText) {
  const auto& tokenizer = uncased_json();
  std::string text;
  const char* sentences[] = {"The quick brown fox jumps over the lazy dog. ",
                             "In 1905, Einstein published four groundbreaking papers on physics; ",
                             "tokenization speed matters when preparing gigabytes of pretraining text, ",
                             "so the tokenizer avoids allocations per character and per word.\n"};
  for (size_t i = 0; text.size() < (8u << 20); ++i) text += sentences[i % 4];
  std::vector<uint32_t> ids;
  ids.reserve(text.size() / 3);
  WordPieceTokenizer::Scratch scratch;
  auto cpu_seconds = [] {  // this thread's CPU time: meaningful even when other jobs share the cores
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
  };
  const double cpu_start = cpu_seconds();
  const auto start = std::chrono::steady_clock::now();
  // Encode line by line, the way documents reach the tokenizer in `prepare`.
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = std::min(text.size(), pos + 4096);
    tokenizer.encode(std::string_view(text).substr(pos, end - pos), ids, scratch);
    pos = end;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double cpu = std::max(cpu_seconds() - cpu_start, 1e-9);
  const double mb_per_s = text.size() / cpu / 1e6;
  std::printf(
      "[ throughput ] %.1f MB of ASCII text: %.1f MB/s and %.1f M tokens/s per CPU second (one thread; "
      "wall clock %.3f s)\n",
      text.size() / 1e6, mb_per_s, ids.size() / cpu / 1e6, seconds);
  EXPECT_GT(ids.size(), text.size() / 8);
#if defined(NDEBUG) && !defined(__SANITIZE_ADDRESS__)
  EXPECT_GT(mb_per_s, 5.0) << "tokenizer far slower than expected";
#endif
}

}  // namespace
}  // namespace coco::text
