// Memory-mapped shards and the mapped TokenDataset: mapping ownership under moves, token access across shard
// boundaries for both token widths, empty splits, packing identical to a reference built from the documents,
// and a split's heap cost independent of its token count.
#include <malloc.h>

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "coco/data_loader.h"
#include "coco/shards.h"
#include "tests/train/train_test_util.h"

namespace coco::data {
namespace {

using testutil::TempDir;
using Documents = std::vector<std::vector<uint32_t>>;
namespace fs = std::filesystem;

constexpr uint64_t kVocabHash = 42;

fs::path write_shard(const fs::path& path, const Documents& documents, size_t vocab) {
  text::ShardWriter writer(path, vocab, kVocabHash);
  for (const auto& d : documents) writer.add_document(d);
  writer.finish();
  return path;
}

// Mappings of `path` in this process (lines of /proc/self/maps naming it).
int mappings_of(const fs::path& path) {
  std::ifstream maps("/proc/self/maps");
  const std::string name = fs::canonical(path).string();
  int count = 0;
  for (std::string line; std::getline(maps, line);) {
    const size_t at = line.find(name);
    count += at != std::string::npos && at + name.size() == line.size();
  }
  return count;
}

std::vector<uint32_t> concatenate(const std::vector<Documents>& shards) {
  std::vector<uint32_t> out;
  for (const auto& docs : shards)
    for (const auto& d : docs) out.insert(out.end(), d.begin(), d.end());
  return out;
}

// Sequence i of the documents packed as documented in data_loader.h, built the obvious way.
std::vector<int32_t> reference_sequence(const std::vector<Documents>& shards, const PackingLayout& layout,
                                        uint64_t index) {
  std::vector<int32_t> stream;
  bool first = true;
  for (const auto& docs : shards)
    for (const auto& d : docs) {
      if (d.empty()) continue;
      if (!first && layout.sep_id >= 0) stream.push_back(layout.sep_id);
      first = false;
      for (uint32_t id : d) stream.push_back(static_cast<int32_t>(id));
    }
  const uint64_t body = static_cast<uint64_t>(layout.seq_len) - (layout.cls_id >= 0 ? 1 : 0);
  std::vector<int32_t> out;
  if (layout.cls_id >= 0) out.push_back(layout.cls_id);
  for (uint64_t p = index * body; p < std::min<uint64_t>((index + 1) * body, stream.size()); ++p)
    out.push_back(stream[p]);
  out.resize(static_cast<size_t>(layout.seq_len), layout.pad_id);
  return out;
}

TEST(MappedShards, MappingErrorsNameTheFileAndTheReason) {
  TempDir dir("mapped");
  try {
    text::MappedFile::open(dir / "missing.bin");
    FAIL() << "expected a ShardError";
  } catch (const text::ShardError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find((dir / "missing.bin").string()), std::string::npos) << m;
    EXPECT_NE(m.find("cannot open token shard: No such file or directory"), std::string::npos) << m;
  }
  try {
    text::TokenShard::read(dir.path());
    FAIL() << "expected a ShardError";
  } catch (const text::ShardError& e) {
    EXPECT_NE(std::string(e.what()).find(dir.path().string() + ": cannot open token shard: not a regular file"),
              std::string::npos)
        << e.what();
  }
  // An empty file maps to nothing and is rejected as a truncated shard.
  testutil::write_text(dir / "empty.bin", "");
  const text::MappedFile empty = text::MappedFile::open(dir / "empty.bin");
  EXPECT_EQ(empty.size(), 0u);
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_THROW(
      {
        try {
          text::TokenShard::read(dir / "empty.bin");
        } catch (const text::ShardError& e) {
          EXPECT_NE(std::string(e.what()).find("empty.bin: truncated: 0 bytes"), std::string::npos) << e.what();
          throw;
        }
      },
      text::ShardError);
}

TEST(MappedShards, MovesTransferTheMappingAndUnmapExactlyOnce) {
  TempDir dir("mapped");
  const fs::path a = write_shard(dir / "a.bin", {{1, 2, 3}, {4}}, 100);
  const fs::path b = write_shard(dir / "b.bin", {{7, 8}}, 100);
  {
    text::TokenShard first = text::TokenShard::read(a);
    EXPECT_EQ(mappings_of(a), 1);
    text::TokenShard second(std::move(first));
    EXPECT_EQ(mappings_of(a), 1);
    // The moved-from shard is empty and owns nothing.
    EXPECT_EQ(first.token_count(), 0u);  // NOLINT(bugprone-use-after-move)
    EXPECT_EQ(first.document_count(), 0u);
    EXPECT_THROW(first.token(0), std::out_of_range);
    EXPECT_THROW(first.document(0), std::out_of_range);
    EXPECT_EQ(second.tokens(), (std::vector<uint32_t>{1, 2, 3, 4}));
    {
      text::TokenShard other = text::TokenShard::read(b);
      EXPECT_EQ(mappings_of(b), 1);
      second = std::move(other);  // releases a's mapping, takes b's
      EXPECT_EQ(mappings_of(a), 0);
      EXPECT_EQ(mappings_of(b), 1);
    }  // the moved-from `other` is destroyed: b stays mapped
    EXPECT_EQ(mappings_of(b), 1);
    EXPECT_EQ(second.tokens(), (std::vector<uint32_t>{7, 8}));
    // Reallocation of a vector moves its shards: still one mapping each, data intact.
    std::vector<text::TokenShard> shards;
    for (int i = 0; i < 9; ++i) shards.push_back(text::TokenShard::read(a));
    EXPECT_EQ(mappings_of(a), 9);
    for (const auto& shard : shards) EXPECT_EQ(shard.document_tokens(0), (std::vector<uint32_t>{1, 2, 3}));
  }
  EXPECT_EQ(mappings_of(a), 0);
  EXPECT_EQ(mappings_of(b), 0);
  // The mapping survives the file's removal (it holds the inode).
  text::TokenShard kept = text::TokenShard::read(a);
  fs::remove(a);
  EXPECT_EQ(kept.tokens(), (std::vector<uint32_t>{1, 2, 3, 4}));
}

// Every range [first, first + count) of the split's stream, and every single token, against the concatenation.
void expect_all_ranges(const TokenDataset& set, const std::vector<uint32_t>& expected) {
  ASSERT_EQ(set.tokens(), expected.size());
  for (uint64_t i = 0; i < expected.size(); ++i) ASSERT_EQ(set.token(i), expected[i]) << "token " << i;
  for (uint64_t first = 0; first <= expected.size(); ++first)
    for (uint64_t count = 0; first + count <= expected.size(); ++count) {
      std::vector<uint32_t> out(count + 1, 0xDEADBEEF);
      set.copy_tokens(first, count, out.data());
      ASSERT_EQ(out.back(), 0xDEADBEEF) << "wrote past " << count << " tokens";
      out.pop_back();
      ASSERT_EQ(out, std::vector<uint32_t>(expected.begin() + first, expected.begin() + first + count))
          << "range [" << first << ", " << first + count << ")";
    }
  std::vector<uint32_t> sink(expected.size() + 1);
  EXPECT_THROW(set.token(expected.size()), std::out_of_range);
  EXPECT_THROW(set.copy_tokens(0, expected.size() + 1, sink.data()), std::out_of_range);
  EXPECT_THROW(set.copy_tokens(expected.size(), 1, sink.data()), std::out_of_range);
  EXPECT_THROW(set.copy_tokens(expected.size() + 1, 0, sink.data()), std::out_of_range);
  EXPECT_THROW(set.copy_tokens(1, UINT64_MAX, sink.data()), std::out_of_range);
}

TEST(MappedShards, CopyTokensAcrossShardBoundariesForBothWidths) {
  for (const size_t vocab : {size_t{100}, size_t{70000}}) {
    SCOPED_TRACE("vocab " + std::to_string(vocab));
    TempDir dir("mapped");
    const uint32_t big = static_cast<uint32_t>(vocab - 1);  // 99 or 69999: needs the full width
    // An empty shard and empty documents in the middle: boundaries the lookup must step over.
    const std::vector<Documents> shards = {
        {{10, 11, 12}, {}, {20, big}}, {}, {{}, {}}, {{30}}, {{40, 41, 42, 43}, {big, 0}}};
    std::vector<fs::path> paths;
    for (size_t s = 0; s < shards.size(); ++s)
      paths.push_back(write_shard(dir / ("s" + std::to_string(s) + ".bin"), shards[s], vocab));
    const TokenDataset set = TokenDataset::from_shards(paths);
    EXPECT_EQ(text::TokenShard::read_header(paths[0]).token_bytes, vocab <= 65536 ? 2u : 4u);
    EXPECT_EQ(set.documents(), 5u);  // non-empty documents only
    EXPECT_EQ(set.document_starts(), (std::vector<uint64_t>{0, 3, 5, 6, 10, 12}));
    expect_all_ranges(set, concatenate(shards));

    auto shared = std::make_shared<const TokenDataset>(TokenDataset::from_shards(paths));
    for (const PackingLayout layout : {PackingLayout{5, 1, 2, 0}, PackingLayout{4, -1, -1, 0},
                                       PackingLayout{3, -1, 2, 0}, PackingLayout{2, 1, -1, 0}}) {
      const PackedSequences packed(shared, layout);
      for (uint64_t i = 0; i < packed.size(); ++i) {
        std::vector<int32_t> row(static_cast<size_t>(layout.seq_len));
        packed.fill(i, row.data());
        EXPECT_EQ(row, reference_sequence(shards, layout, i)) << "sequence " << i << " of T " << layout.seq_len;
      }
    }
  }
}

TEST(MappedShards, EmptySplitsHaveNoSequences) {
  TempDir dir("mapped");
  const fs::path empty = write_shard(dir / "empty.bin", {}, 100);
  const fs::path blank = write_shard(dir / "blank.bin", {{}, {}}, 100);
  for (const auto& paths :
       {std::vector<fs::path>{}, std::vector<fs::path>{empty}, std::vector<fs::path>{empty, blank}}) {
    auto set = std::make_shared<const TokenDataset>(TokenDataset::from_shards(paths));
    EXPECT_EQ(set->documents(), 0u);
    EXPECT_EQ(set->tokens(), 0u);
    set->copy_tokens(0, 0, nullptr);
    EXPECT_THROW(set->token(0), std::out_of_range);
    auto packed = std::make_shared<const PackedSequences>(set, PackingLayout{4, 1, 2, 0});
    EXPECT_EQ(packed->size(), 0u);
    std::vector<int32_t> row(4);
    EXPECT_THROW(packed->fill(0, row.data()), std::out_of_range);
    EXPECT_THROW(DataLoader(packed, LoaderOptions{}), DataError);
  }
}

TEST(MappedShards, DatasetErrorsNameTheShardAndTheProblem) {
  TempDir dir("mapped");
  const fs::path good = write_shard(dir / "good.bin", {{10, 11}, {12}}, 100);
  const std::string bytes = testutil::read_text(good);
  auto expect_error = [&](const std::string& name, const std::string& contents, const std::string& needle) {
    testutil::write_text(dir / name, contents);
    try {
      TokenDataset::from_shards({good, dir / name});
      ADD_FAILURE() << name << ": expected a DataError";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find((dir / name).string() + ": " + needle), std::string::npos) << e.what();
    }
  };
  expect_error("header_only.bin", bytes.substr(0, text::kShardHeaderBytes), "truncated: file has 64 bytes");
  expect_error("trailing.bin", bytes + "x", "trailing bytes: file has");
  std::string flipped = bytes;
  flipped[text::kShardHeaderBytes + 3] ^= 0x10;  // a document offset
  expect_error("flipped.bin", flipped, "payload checksum mismatch");

  // A model vocabulary smaller than the shard's is checked over every token (beyond the first 64Ki chunk too).
  std::vector<uint32_t> long_document(70000, 10);
  long_document[69000] = 95;
  const fs::path long_shard = write_shard(dir / "long.bin", {long_document}, 100);
  EXPECT_NO_THROW(TokenDataset::from_shards({long_shard}, 100));
  try {
    TokenDataset::from_shards({long_shard}, 64);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("long.bin: token id 95 at token 69000 is outside the model's vocabulary"),
              std::string::npos)
        << e.what();
  }
}

// The split's tokens are not copied onto the heap: opening a 4M-token split allocates a small fraction of its
// size (the old loader held 4 bytes per token plus a transient copy of each shard file).
TEST(MappedShards, OpeningASplitDoesNotCopyItsTokens) {
  TempDir dir("mapped");
  constexpr uint64_t kTokens = uint64_t{4} << 20;
  std::vector<uint32_t> document(kTokens / 4);
  for (size_t i = 0; i < document.size(); ++i) document[i] = static_cast<uint32_t>(i % 30000);
  std::vector<fs::path> paths;
  for (int s = 0; s < 4; ++s)
    paths.push_back(write_shard(dir / ("big" + std::to_string(s) + ".bin"), {document}, 30522));
  document = {};
  const auto heap_before = static_cast<int64_t>(mallinfo2().uordblks);
  const TokenDataset set = TokenDataset::from_shards(paths);
  const int64_t heap_growth = static_cast<int64_t>(mallinfo2().uordblks) - heap_before;
  EXPECT_EQ(set.tokens(), kTokens);
  EXPECT_LT(heap_growth, int64_t{1} << 20) << "heap grew by " << heap_growth << " bytes";
  EXPECT_EQ(set.token(kTokens - 1), (kTokens / 4 - 1) % 30000);
}

}  // namespace
}  // namespace coco::data
