// Token shards: round trip for both token widths, and every kind of corruption caught with a clear error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "coco/shards.h"

namespace coco::text {
namespace {

namespace fs = std::filesystem;

const fs::path& temp_root() {
  static const fs::path dir = fs::temp_directory_path() / ("coco_shards_test_" + std::to_string(::getpid()));
  return dir;
}

fs::path temp_dir() {
  fs::create_directories(temp_root());
  return temp_root();
}

class RemoveTempDir : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code error;
    fs::remove_all(temp_root(), error);
  }
};
[[maybe_unused]] ::testing::Environment* const remove_temp_dir = ::testing::AddGlobalTestEnvironment(new RemoveTempDir);

std::vector<std::vector<uint32_t>> make_documents(size_t count, uint32_t vocab_size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<uint32_t>> docs(count);
  for (auto& doc : docs) {
    doc.resize(rng() % 50);  // includes empty documents
    for (auto& id : doc) id = rng() % vocab_size;
  }
  return docs;
}

fs::path write_shard(const std::string& name, const std::vector<std::vector<uint32_t>>& docs, uint32_t vocab_size,
                     uint64_t vocab_hash = 0x1234) {
  const fs::path path = temp_dir() / name;
  ShardWriter writer(path, vocab_size, vocab_hash);
  for (const auto& doc : docs) writer.add_document(doc);
  writer.finish();
  return path;
}

std::vector<unsigned char> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, const std::vector<unsigned char>& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

void put64(std::vector<unsigned char>& bytes, size_t at, uint64_t v) {
  for (int i = 0; i < 8; ++i) bytes[at + i] = static_cast<unsigned char>(v >> (8 * i));
}

// Recomputes both checksums, so that a deliberately inconsistent file reaches the deeper checks.
void reseal(std::vector<unsigned char>& bytes) {
  put64(bytes, 48, xxh64(bytes.data() + kShardHeaderBytes, bytes.size() - kShardHeaderBytes));
  put64(bytes, 56, xxh64(bytes.data(), 56));
}

void expect_shard_error(const fs::path& path, const std::string& needle, const ShardExpectation& expect = {}) {
  try {
    TokenShard::read(path, expect);
    ADD_FAILURE() << "no error reading " << path << ", expected one mentioning '" << needle << "'";
  } catch (const ShardError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(needle), std::string::npos) << message;
    EXPECT_NE(message.find(path.string()), std::string::npos) << "error does not name the file: " << message;
  }
}

TEST(Shards, Xxh64MatchesReferenceVectors) {
  EXPECT_EQ(xxh64("", 0), 0xEF46DB3751D8E999ull);
  EXPECT_EQ(xxh64("a", 1), 0xD24EC4F1A98C6E5Bull);
  EXPECT_EQ(xxh64("abc", 3), 0x44BC2CF5AD770999ull);
  const char* text = "Nobody inspects the spammish repetition";
  EXPECT_EQ(xxh64(text, std::strlen(text)), 0xFBCEA83C8A378BF1ull);
  std::vector<unsigned char> bytes(768);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(i);
  EXPECT_EQ(xxh64(bytes.data(), bytes.size()), 0x8E03C838C596036Full);
}

TEST(Shards, RoundTripUint16AndUint32) {
  for (uint32_t vocab_size : {30522u, 65536u, 65537u, 250000u}) {
    const auto docs = make_documents(200, vocab_size, vocab_size);
    const auto path = write_shard("round_trip_" + std::to_string(vocab_size) + ".bin", docs, vocab_size, 0xABCDEF);
    const auto shard = TokenShard::read(path, {0xABCDEF, vocab_size, true});
    EXPECT_EQ(shard.header().token_bytes, vocab_size <= 65536 ? 2u : 4u);
    ASSERT_EQ(shard.document_count(), docs.size());
    uint64_t total = 0;
    for (size_t d = 0; d < docs.size(); ++d) {
      EXPECT_EQ(shard.document_tokens(d), docs[d]) << "document " << d;
      total += docs[d].size();
    }
    EXPECT_EQ(shard.token_count(), total);
    EXPECT_EQ(fs::file_size(path), kShardHeaderBytes + (docs.size() + 1) * 8 + total * shard.header().token_bytes);
    EXPECT_EQ(TokenShard::read_header(path).payload_checksum, shard.header().payload_checksum);
    EXPECT_THROW(shard.token(total), std::out_of_range);
  }
  // An empty shard is valid too.
  const auto empty = write_shard("empty.bin", {}, 100);
  EXPECT_EQ(TokenShard::read(empty).document_count(), 0u);
}

TEST(Shards, WriterRejectsIdsOutsideTheVocabulary) {
  ShardWriter writer(temp_dir() / "bad_ids.bin", 100, 0);
  std::vector<uint32_t> ok{1, 2, 99};
  std::vector<uint32_t> bad{1, 100};
  writer.add_document(ok);
  EXPECT_THROW(writer.add_document(bad), ShardError);
  EXPECT_EQ(writer.token_count(), 3u);
  EXPECT_EQ(writer.document_count(), 1u);
}

class ShardCorruption : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = write_shard("good.bin", make_documents(20, 1000, 7), 1000, 0x5555);
    good_ = read_bytes(path_);
    ASSERT_NO_THROW(TokenShard::read(path_, {0x5555, 1000, true}));
  }
  fs::path corrupt(const std::string& name, const std::vector<unsigned char>& bytes) {
    const fs::path path = temp_dir() / name;
    write_bytes(path, bytes);
    return path;
  }
  fs::path path_;
  std::vector<unsigned char> good_;
};

TEST_F(ShardCorruption, BadMagic) {
  auto bytes = good_;
  std::memcpy(bytes.data(), "GPT2TOKS", 8);
  expect_shard_error(corrupt("magic.bin", bytes), "bad magic 'GPT2TOKS', expected 'COCOTOK1'");
}

TEST_F(ShardCorruption, UnsupportedVersion) {
  auto bytes = good_;
  bytes[8] = 2;
  expect_shard_error(corrupt("version.bin", bytes), "unsupported shard version 2, expected 1");
}

TEST_F(ShardCorruption, TruncatedHeaderAndPayload) {
  expect_shard_error(corrupt("tiny.bin", {good_.begin(), good_.begin() + 10}), "truncated: 10 bytes");
  expect_shard_error(corrupt("short.bin", {good_.begin(), good_.end() - 3}), "truncated: file has");
  auto longer = good_;
  longer.push_back(0);
  expect_shard_error(corrupt("long.bin", longer), "trailing bytes");
}

TEST_F(ShardCorruption, HeaderChecksumMismatch) {
  auto bytes = good_;
  bytes[16] ^= 1;  // token_count
  expect_shard_error(corrupt("header.bin", bytes), "header checksum mismatch");
}

TEST_F(ShardCorruption, PayloadChecksumMismatch) {
  auto bytes = good_;
  bytes[bytes.size() - 2] ^= 1;  // low byte of the last token: still a valid id
  expect_shard_error(corrupt("payload.bin", bytes), "payload checksum mismatch");
  // Skipping the payload checksum is allowed, the structural checks remain.
  EXPECT_NO_THROW(TokenShard::read(temp_dir() / "payload.bin", {std::nullopt, std::nullopt, false}));
}

TEST_F(ShardCorruption, TokenIdNotBelowVocabSize) {
  auto bytes = good_;
  bytes[bytes.size() - 2] = 0xE8;  // last token = 1000 (little-endian 0x03E8)
  bytes[bytes.size() - 1] = 0x03;
  reseal(bytes);
  expect_shard_error(corrupt("token_id.bin", bytes), "has id 1000, expected ids below vocab_size 1000");
}

TEST_F(ShardCorruption, VocabularyHashAndSizeMismatch) {
  expect_shard_error(path_, "differs from the expected 0x0000000000006666", {0x6666, std::nullopt, true});
  expect_shard_error(path_, "vocab_size 1000, expected 30522", {0x5555, 30522u, true});
}

TEST_F(ShardCorruption, DocumentOffsetsOutOfOrder) {
  auto bytes = good_;
  put64(bytes, kShardHeaderBytes + 8 * 2, 1u << 20);  // offsets[2] beyond the tokens, then a decrease
  reseal(bytes);
  expect_shard_error(corrupt("offsets.bin", bytes), "never decrease");
  auto last = good_;
  put64(last, kShardHeaderBytes, 1);  // offsets[0] must be 0
  reseal(last);
  expect_shard_error(corrupt("offsets0.bin", last), "start at 0");
}

TEST_F(ShardCorruption, TokenWidthInconsistentWithVocabulary) {
  auto bytes = good_;
  bytes[12] = 4;
  reseal(bytes);
  expect_shard_error(corrupt("width.bin", bytes), "does not match vocab_size 1000");
  bytes[12] = 3;
  reseal(bytes);
  expect_shard_error(corrupt("width3.bin", bytes), "expected 2 or 4");
}

TEST_F(ShardCorruption, MissingFile) { expect_shard_error(temp_dir() / "does_not_exist.bin", "cannot open"); }

}  // namespace
}  // namespace coco::text
