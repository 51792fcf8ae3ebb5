// prepare(): text files -> shards + meta.json, end to end on small temporary corpora.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

#include <filesystem>
#include <map>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "coco/prepare.h"
#include "coco/shards.h"
#include "coco/utf8.h"

namespace coco::text {
namespace {

namespace fs = std::filesystem;

const fs::path kVocab = fs::path(COCO_SOURCE_DIR) / "tests" / "data" / "wordpiece" / "vocab.txt";
const fs::path kTokenizerJson = fs::path(COCO_SOURCE_DIR) / "tests" / "data" / "wordpiece" / "tokenizer.json";

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("coco_prepare_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code error;
    fs::remove_all(path_, error);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_file(const fs::path& path, const std::string& content) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// A corpus of known documents spread over files in nested directories (file order = sorted path order).
struct Corpus {
  std::vector<std::string> documents;  // expected documents in processing order (lines joined with '\n')
};

Corpus write_corpus(const fs::path& root, size_t files, uint32_t seed) {
  const std::vector<std::string> words = {"the",    "model",  "learns",   "to",        "correct",  "corrupted",
                                          "tokens", "and",    "contrast", "sequences", "Crème",    "brûlée",
                                          "naïve",  "北京",   "😀",        "don't",     "stop",     "3.14",
                                          "[MASK]", "e-mail", "ÜBER",     "straße",    "unaffable"};
  std::mt19937 rng(seed);
  auto random_word = [&] {  // pseudo-words give the vocabulary trainer pairs to merge
    std::string word;
    const size_t n = 2 + rng() % 6;
    for (size_t i = 0; i < n; ++i) word += static_cast<char>('a' + rng() % 12);
    return word;
  };
  std::map<std::string, std::vector<std::string>> documents_by_file;
  for (size_t f = 0; f < files; ++f) {
    char name[64];
    std::snprintf(name, sizeof name, "%s/part_%03zu.txt", f % 2 ? "b/nested" : "a", f);
    std::string content;
    const size_t docs = 1 + rng() % 6;
    for (size_t d = 0; d < docs; ++d) {
      std::string doc;
      const size_t lines = 1 + rng() % 4;
      for (size_t l = 0; l < lines; ++l) {
        std::string line;
        const size_t n = 1 + rng() % 15;
        for (size_t w = 0; w < n; ++w)
          line += (w ? " " : "") + (rng() % 3 ? words[rng() % words.size()] : random_word());
        doc += (l ? "\n" : "") + line;
        content += line + (rng() % 5 == 0 ? "\r\n" : "\n");
      }
      documents_by_file[name].push_back(doc);
      content += (rng() % 3 == 0) ? "\n \t\n\n" : "\n";  // one or more blank lines
    }
    write_file(root / name, content);
  }
  Corpus corpus;  // files are processed in path order
  for (const auto& [name, docs] : documents_by_file)
    corpus.documents.insert(corpus.documents.end(), docs.begin(), docs.end());
  return corpus;
}

// All documents of a split, in order.
std::vector<std::vector<uint32_t>> read_split(const fs::path& dir, const nlohmann::json& meta,
                                              const std::string& split) {
  std::vector<std::vector<uint32_t>> docs;
  const ShardExpectation expect{std::stoull(meta["vocab_hash"].get<std::string>(), nullptr, 16),
                                meta["vocab_size"].get<uint32_t>(), true};
  for (const auto& shard_meta : meta["splits"][split]["shards"]) {
    const auto shard = TokenShard::read(dir / shard_meta["file"].get<std::string>(), expect);
    EXPECT_EQ(shard.document_count(), shard_meta["documents"].get<uint64_t>());
    EXPECT_EQ(shard.token_count(), shard_meta["tokens"].get<uint64_t>());
    for (uint64_t d = 0; d < shard.document_count(); ++d) docs.push_back(shard.document_tokens(d));
  }
  return docs;
}

nlohmann::json read_meta(const fs::path& dir) { return nlohmann::json::parse(read_file(dir / "meta.json")); }

TEST(Prepare, EndToEndWithVocabFileSplitsByDocument) {
  TempDir tmp;
  const Corpus corpus = write_corpus(tmp.path() / "corpus", 12, 1);
  write_file(tmp.path() / "corpus" / ".hidden.txt", "never read\n");
  PrepareOptions options;
  options.inputs = {tmp.path() / "corpus"};
  options.output_dir = tmp.path() / "out";
  options.vocab_file = kVocab;
  options.valid_fraction = 0.3;
  options.seed = 7;
  options.shard_tokens = 150;  // several shards per split
  options.threads = 2;
  options.batch_bytes = 256;  // many batches in flight
  std::vector<PrepareProgress> progress;
  options.progress = [&](const PrepareProgress& p) { progress.push_back(p); };
  const PrepareResult result = prepare(options);

  EXPECT_FALSE(result.up_to_date);
  EXPECT_EQ(result.special_ids, (SpecialTokenIds{0, 100, 101, 102, 103}));
  EXPECT_EQ(result.train.documents + result.valid.documents, corpus.documents.size());
  EXPECT_GT(result.train.shards.size(), 1u);
  EXPECT_GT(result.valid.documents, 0u);
  EXPECT_GT(result.train.documents, result.valid.documents);
  ASSERT_FALSE(progress.empty());
  EXPECT_EQ(progress.back().bytes_done, progress.back().bytes_total);
  EXPECT_EQ(progress.back().documents, corpus.documents.size());
  EXPECT_EQ(progress.back().tokens, result.train.tokens + result.valid.tokens);

  const auto meta = read_meta(options.output_dir);
  EXPECT_EQ(meta["vocab_file"], "vocab.txt");
  EXPECT_EQ(read_file(options.output_dir / "vocab.txt"), read_file(kVocab));
  EXPECT_EQ(meta["vocab_size"], 30522);
  EXPECT_EQ(meta["lowercase"], true);
  EXPECT_EQ(meta["special_ids"], (nlohmann::json{{"pad", 0}, {"unk", 100}, {"cls", 101}, {"sep", 102}, {"mask", 103}}));
  EXPECT_EQ(meta["inputs"].size(), 12u);
  EXPECT_EQ(meta["totals"]["documents"], corpus.documents.size());

  // Every document lands, tokenized exactly as the tokenizer does it, in the split its index selects.
  const auto tokenizer = WordPieceTokenizer::from_vocab_txt(kVocab);
  const auto train = read_split(options.output_dir, meta, "train");
  const auto valid = read_split(options.output_dir, meta, "valid");
  size_t next_train = 0, next_valid = 0;
  for (size_t d = 0; d < corpus.documents.size(); ++d) {
    const auto expected = tokenizer.encode(corpus.documents[d]);
    if (is_valid_document(d, 7, 0.3)) {
      ASSERT_LT(next_valid, valid.size());
      EXPECT_EQ(valid[next_valid++], expected) << "valid document " << d;
    } else {
      ASSERT_LT(next_train, train.size());
      EXPECT_EQ(train[next_train++], expected) << "train document " << d;
    }
  }
  EXPECT_EQ(next_train, train.size());
  EXPECT_EQ(next_valid, valid.size());
}

TEST(Prepare, OutputIsIdenticalForOneAndTwoThreads) {
  TempDir tmp;
  write_corpus(tmp.path() / "corpus", 9, 2);
  std::vector<fs::path> outputs;
  for (size_t threads : {1, 2}) {
    PrepareOptions options;
    options.inputs = {tmp.path() / "corpus"};
    options.output_dir = tmp.path() / ("out" + std::to_string(threads));
    options.vocab_size = 180;  // trained: the vocabulary must not depend on threads either
    options.valid_fraction = 0.2;
    options.shard_tokens = 300;
    options.threads = threads;
    options.batch_bytes = 128;
    prepare(options);
    outputs.push_back(options.output_dir);
  }
  const auto meta1 = read_meta(outputs[0]);
  const auto meta2 = read_meta(outputs[1]);
  EXPECT_EQ(meta1, meta2);
  EXPECT_EQ(read_file(outputs[0] / "vocab.txt"), read_file(outputs[1] / "vocab.txt"));
  size_t shards = 0;
  for (const auto& entry : fs::directory_iterator(outputs[0])) {
    if (entry.path().extension() != ".bin") continue;
    ++shards;
    EXPECT_EQ(read_file(entry.path()), read_file(outputs[1] / entry.path().filename())) << entry.path();
  }
  EXPECT_GE(shards, 2u);
}

TEST(Prepare, TrainedVocabularyHasExactSizeAndNoUnknownOnTrainText) {
  TempDir tmp;
  write_corpus(tmp.path() / "corpus", 6, 3);
  PrepareOptions options;
  options.inputs = {tmp.path() / "corpus"};
  options.output_dir = tmp.path() / "out";
  options.vocab_size = 150;
  options.threads = 2;
  const PrepareResult result = prepare(options);
  EXPECT_EQ(result.vocab_size, 150u);
  EXPECT_EQ(result.special_ids, (SpecialTokenIds{0, 1, 2, 3, 4}));
  const auto vocab = Vocab::load_txt(options.output_dir / "vocab.txt");
  EXPECT_EQ(vocab.size(), 150u);
  const auto meta = read_meta(options.output_dir);
  EXPECT_EQ(meta["vocab_source"], "trained");
  for (const auto& doc : read_split(options.output_dir, meta, "train")) {
    for (uint32_t id : doc) EXPECT_NE(id, result.special_ids.unk);
  }
}

TEST(Prepare, IncrementalRerunDoesNothingUntilInputsOrOptionsChange) {
  TempDir tmp;
  write_corpus(tmp.path() / "corpus", 4, 4);
  PrepareOptions options;
  options.inputs = {tmp.path() / "corpus"};
  options.output_dir = tmp.path() / "out";
  options.vocab_file = kVocab;
  options.valid_fraction = 0.25;
  const PrepareResult first = prepare(options);
  EXPECT_FALSE(first.up_to_date);
  const std::string meta_text = read_file(options.output_dir / "meta.json");

  const PrepareResult second = prepare(options);
  EXPECT_TRUE(second.up_to_date);
  EXPECT_NE(second.message.find("up to date"), std::string::npos) << second.message;
  EXPECT_EQ(second.train.tokens, first.train.tokens);
  EXPECT_EQ(second.valid.documents, first.valid.documents);
  EXPECT_EQ(second.train.shards, first.train.shards);
  EXPECT_EQ(read_file(options.output_dir / "meta.json"), meta_text);

  options.threads = 1;  // throughput knobs do not matter
  options.batch_bytes = 100;
  EXPECT_TRUE(prepare(options).up_to_date);

  options.seed = 99;  // an output-relevant option does
  EXPECT_FALSE(prepare(options).up_to_date);
  EXPECT_TRUE(prepare(options).up_to_date);

  // Changed input (size and mtime): rebuilt.
  const fs::path file = tmp.path() / "corpus" / "a" / "part_000.txt";
  write_file(file, read_file(file) + "\nanother document\n");
  const PrepareResult rebuilt = prepare(options);
  EXPECT_FALSE(rebuilt.up_to_date);
  EXPECT_EQ(rebuilt.train.documents + rebuilt.valid.documents, first.train.documents + first.valid.documents + 1);
  EXPECT_TRUE(prepare(options).up_to_date);

  // A missing shard: rebuilt. An added file: rebuilt.
  fs::remove(options.output_dir / rebuilt.train.shards.front());
  EXPECT_FALSE(prepare(options).up_to_date);
  write_file(tmp.path() / "corpus" / "c.txt", "new file\n");
  EXPECT_FALSE(prepare(options).up_to_date);
  options.force = true;
  EXPECT_FALSE(prepare(options).up_to_date);
}

TEST(Prepare, RebuildRemovesShardsOfThePreviousRun) {
  TempDir tmp;
  write_corpus(tmp.path() / "corpus", 6, 5);
  PrepareOptions options;
  options.inputs = {tmp.path() / "corpus"};
  options.output_dir = tmp.path() / "out";
  options.vocab_file = kVocab;
  options.shard_tokens = 50;
  const size_t many = prepare(options).train.shards.size();
  options.shard_tokens = 1u << 20;
  const auto result = prepare(options);
  EXPECT_EQ(result.train.shards.size(), 1u);
  size_t bins = 0;
  for (const auto& entry : fs::directory_iterator(options.output_dir)) bins += entry.path().extension() == ".bin";
  EXPECT_EQ(bins, 1u) << "left over from " << many << " shards";
}

TEST(Prepare, DocumentRuleLongLinesAndDroppedDocuments) {
  TempDir tmp;
  // Two documents, a whitespace-only "paragraph", a document of control characters only (dropped), a long line.
  std::string long_line;
  for (int i = 0; i < 40; ++i) long_line += "hello world ";
  write_file(tmp.path() / "in.txt", "first doc\r\nsecond line\n\n\n  \t \nsecond doc\n\n\x01\x02\n\n" + long_line);
  write_file(tmp.path() / "empty.txt", "");
  PrepareOptions options;
  options.inputs = {tmp.path() / "in.txt", tmp.path() / "empty.txt"};
  options.output_dir = tmp.path() / "out";
  options.vocab_file = kTokenizerJson;
  options.max_document_bytes = 100;  // the long line becomes several documents, cut at spaces
  options.read_bytes = 7;            // lines cross read chunks
  const auto result = prepare(options);
  EXPECT_EQ(result.dropped_documents, 1u);
  const auto meta = read_meta(options.output_dir);
  EXPECT_EQ(meta["vocab_file"], "tokenizer.json");
  const auto docs = read_split(options.output_dir, meta, "train");
  const auto tokenizer = WordPieceTokenizer::from_tokenizer_json(kTokenizerJson);
  ASSERT_GE(docs.size(), 5u);
  EXPECT_EQ(docs[0], tokenizer.encode("first doc\nsecond line"));
  EXPECT_EQ(docs[1], tokenizer.encode("second doc"));
  std::vector<uint32_t> long_tokens;
  for (size_t d = 2; d < docs.size(); ++d) {
    EXPECT_LE(docs[d].size(), 2u * 100 / 12 + 2);
    long_tokens.insert(long_tokens.end(), docs[d].begin(), docs[d].end());
  }
  EXPECT_EQ(long_tokens, tokenizer.encode(long_line));
}

TEST(Prepare, InvalidUtf8NamesFileAndOffset) {
  TempDir tmp;
  const std::string good = "valid line one\nvalid line two\n\n";
  write_file(tmp.path() / "a.txt", "fine\n");
  write_file(tmp.path() / "b.txt", good + "bad \xC3\x28 here\n");
  for (size_t read_bytes : {size_t{3}, size_t{1} << 20}) {
    PrepareOptions options;
    options.inputs = {tmp.path()};
    options.output_dir = tmp.path() / "out";
    options.vocab_file = kVocab;
    options.read_bytes = read_bytes;
    try {
      prepare(options);
      ADD_FAILURE() << "no error for invalid UTF-8";
    } catch (const Utf8Error& e) {
      EXPECT_EQ(e.offset(), good.size() + 4) << e.what();
      EXPECT_EQ(fs::path(e.source()).filename(), "b.txt") << e.what();
      EXPECT_NE(std::string(e.what()).find("b.txt"), std::string::npos);
    }
    EXPECT_FALSE(fs::exists(options.output_dir / "meta.json"));
  }
}

TEST(Prepare, EmptyCorpusIsRefused) {
  // Blank lines only would write "0 documents, 0 tokens" and fail only at training time (issue #11).
  TempDir tmp;
  write_file(tmp.path() / "blank.txt", "\n\n   \n");
  PrepareOptions options;
  options.inputs = {tmp.path() / "blank.txt"};
  options.output_dir = tmp.path() / "out";
  options.vocab_file = kVocab;
  try {
    prepare(options);
    FAIL() << "expected a refusal";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("blank.txt: no document with any token"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(options.output_dir / "meta.json"));
}

TEST(Prepare, BadOptionsAreClearErrors) {
  TempDir tmp;
  write_file(tmp.path() / "in.txt", "text\n");
  auto expect_invalid = [&](auto&& mutate, const std::string& needle) {
    PrepareOptions options;
    options.inputs = {tmp.path() / "in.txt"};
    options.output_dir = tmp.path() / "out";
    options.vocab_file = kVocab;
    mutate(options);
    try {
      prepare(options);
      ADD_FAILURE() << "no error, expected one mentioning '" << needle << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_invalid([](PrepareOptions& o) { o.vocab_file.reset(); }, "neither a vocabulary file nor vocab_size");
  expect_invalid([](PrepareOptions& o) { o.vocab_size = 100; }, "both a vocabulary file and vocab_size");
  expect_invalid([](PrepareOptions& o) { o.valid_fraction = 1.0; }, "[0, 1)");
  expect_invalid([](PrepareOptions& o) { o.inputs = {"/nonexistent/corpus"}; }, "/nonexistent/corpus does not exist");
  expect_invalid([](PrepareOptions& o) { o.inputs.clear(); }, "no inputs");
  expect_invalid([](PrepareOptions& o) { o.vocab_file = "/nonexistent/vocab.txt"; }, "/nonexistent/vocab.txt");
  expect_invalid(
      [&](PrepareOptions& o) {
        o.vocab_file = kTokenizerJson;
        o.lowercase = false;
      },
      "expected them to agree");
}

TEST(Prepare, ValidSplitFractionIsRespectedOnAverage) {
  size_t valid = 0;
  for (uint64_t d = 0; d < 100000; ++d) valid += is_valid_document(d, 1234, 0.05);
  EXPECT_NEAR(valid / 100000.0, 0.05, 0.005);
  EXPECT_FALSE(is_valid_document(5, 1, 0.0));
  std::set<bool> differs;
  for (uint64_t d = 0; d < 64; ++d) differs.insert(is_valid_document(d, 1, 0.5) != is_valid_document(d, 2, 0.5));
  EXPECT_TRUE(differs.count(true)) << "the seed changes the split";
}

// A line-per-record corpus (one verse per line, no blank lines): `line` makes every line a document.
TEST(Prepare, DocBoundaryLineMakesEveryLineADocument) {
  TempDir tmp;
  std::string text;
  std::vector<std::string> lines;
  for (int i = 0; i < 200; ++i) {
    lines.push_back("verse " + std::to_string(i) + " the model learns to correct tokens");
    text += lines.back() + (i % 7 == 0 ? "\r\n" : "\n");
    if (i == 50) text += "  \t\n";  // a blank line is no document
  }
  write_file(tmp.path() / "verses.txt", text);
  PrepareOptions options;
  options.inputs = {tmp.path() / "verses.txt"};
  options.output_dir = tmp.path() / "out";
  options.vocab_file = kVocab;
  options.valid_fraction = 0.1;
  options.document_boundary = DocumentBoundary::line;
  const PrepareResult result = prepare(options);
  EXPECT_EQ(result.train.documents + result.valid.documents, 200u);
  EXPECT_GT(result.valid.documents, 5u);
  EXPECT_GT(result.train.documents, 150u);
  EXPECT_NE(result.message.find("train " + std::to_string(result.train.documents) + " / valid " +
                                std::to_string(result.valid.documents) + " documents"),
            std::string::npos)
      << result.message;
  EXPECT_NE(result.message.find("--doc-boundary line"), std::string::npos) << result.message;
  const auto meta = read_meta(options.output_dir);
  EXPECT_EQ(meta["doc_boundary"], "line");
  EXPECT_EQ(meta["options"]["doc_boundary"], "line");
  EXPECT_NE(meta["document_rule"].get<std::string>().find("every non-blank line"), std::string::npos);
  // Document d is line d (the blank line is skipped and counts no index).
  const auto tokenizer = WordPieceTokenizer::from_vocab_txt(kVocab);
  std::vector<std::vector<uint32_t>> expected_train;
  for (uint64_t d = 0; d < lines.size(); ++d)
    if (!is_valid_document(d, options.seed, options.valid_fraction))
      expected_train.push_back(tokenizer.encode(lines[d]));
  EXPECT_EQ(read_split(options.output_dir, meta, "train"), expected_train);

  // The boundary is an output-relevant option: changing it rebuilds. As one document, the corpus cannot be split.
  options.document_boundary = DocumentBoundary::blank_line;
  options.valid_fraction = 0.0;
  const PrepareResult blank = prepare(options);
  EXPECT_FALSE(blank.up_to_date);
  EXPECT_EQ(blank.train.documents, 2u);  // the verses before and after the blank line
  EXPECT_EQ(read_meta(options.output_dir)["doc_boundary"], "blank");
}

TEST(Prepare, ASplitAskedForButLeftEmptyIsRefused) {
  TempDir tmp;
  std::string text;
  for (int i = 0; i < 50; ++i) text += "line " + std::to_string(i) + " of a single document\n";
  write_file(tmp.path() / "one.txt", text);
  PrepareOptions options;
  options.inputs = {tmp.path() / "one.txt"};
  options.output_dir = tmp.path() / "out";
  options.vocab_file = kVocab;
  // A seed that sends the single document to valid, and one that keeps it in train.
  uint64_t to_valid = 0, to_train = 0;
  while (!is_valid_document(0, to_valid, 0.5)) ++to_valid;
  while (is_valid_document(0, to_train, 0.5)) ++to_train;
  auto refusal = [&](uint64_t seed) {
    options.seed = seed;
    options.valid_fraction = 0.5;
    try {
      prepare(options);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  for (uint64_t seed : {to_valid, to_train}) {
    const std::string message = refusal(seed);
    EXPECT_NE(message.find("1 document"), std::string::npos) << message;
    EXPECT_NE(message.find(seed == to_valid ? "nothing to train on" : "none went to the valid split"),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("--doc-boundary line"), std::string::npos) << message;
    EXPECT_NE(message.find("--valid-fraction"), std::string::npos) << message;
    // Nothing that looks complete is left behind.
    EXPECT_FALSE(fs::exists(options.output_dir / "meta.json"));
    EXPECT_FALSE(fs::exists(options.output_dir / "train_000000.bin"));
    EXPECT_FALSE(fs::exists(options.output_dir / "valid_000000.bin"));
  }
  // Without a valid split nothing is refused; with one document per line both splits get documents.
  options.valid_fraction = 0.0;
  EXPECT_EQ(prepare(options).train.documents, 1u);
  options.valid_fraction = 0.5;
  options.document_boundary = DocumentBoundary::line;
  const PrepareResult lines = prepare(options);
  EXPECT_GT(lines.train.documents, 0u);
  EXPECT_GT(lines.valid.documents, 0u);
}

TEST(Prepare, InputModificationTimesAreUnixNanoseconds) {
  TempDir tmp;
  write_file(tmp.path() / "in.txt", "some text\n");
  PrepareOptions options;
  options.inputs = {tmp.path() / "in.txt"};
  options.output_dir = tmp.path() / "out";
  options.vocab_file = kVocab;
  prepare(options);
  auto unix_mtime_ns = [](const fs::path& path) {
    struct stat info {};
    EXPECT_EQ(::stat(path.c_str(), &info), 0) << path;
    return int64_t{info.st_mtim.tv_sec} * 1000000000 + info.st_mtim.tv_nsec;
  };
  const int64_t unix_ns = unix_mtime_ns(tmp.path() / "in.txt");
  auto meta = read_meta(options.output_dir);
  EXPECT_EQ(meta["inputs"][0]["mtime_ns"].get<int64_t>(), unix_ns);
  EXPECT_EQ(meta["options"]["vocab_file"]["mtime_ns"].get<int64_t>(), unix_mtime_ns(kVocab));

  // A meta.json written before (the file clock's own epoch, and no doc_boundary option): one rebuild, then up to
  // date again.
  const int64_t file_clock_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                    fs::last_write_time(tmp.path() / "in.txt").time_since_epoch())
                                    .count();
  EXPECT_NE(file_clock_ns, unix_ns);  // libstdc++'s file clock does not count from the Unix epoch
  meta["inputs"][0]["mtime_ns"] = file_clock_ns;
  meta["options"].erase("doc_boundary");
  write_file(options.output_dir / "meta.json", meta.dump(2));
  EXPECT_FALSE(prepare(options).up_to_date);
  EXPECT_TRUE(prepare(options).up_to_date);
}

}  // namespace
}  // namespace coco::text
