// coco/data_loader: packing, seeded order, resume by cursor, rank sharding, shard validation.
#include "coco/data_loader.h"

#include <gtest/gtest.h>

#include <set>

#include "coco/shards.h"
#include "tests/train/train_test_util.h"

namespace coco::data {
namespace {

using testutil::TempDir;
namespace fs = std::filesystem;

// A shard of the given documents (vocab of 100 ids, hash 42).
fs::path write_shard(const fs::path& path, const std::vector<std::vector<uint32_t>>& documents, size_t vocab = 100) {
  text::ShardWriter writer(path, vocab, 42);
  for (const auto& d : documents) writer.add_document(d);
  writer.finish();
  return path;
}

std::vector<int32_t> sequence(const PackedSequences& s, uint64_t i) {
  std::vector<int32_t> out(static_cast<size_t>(s.layout().seq_len));
  s.fill(i, out.data());
  return out;
}

TEST(DataLoader, PaperPackingPutsClsFirstAndSepBetweenDocuments) {
  TempDir dir("data");
  // Stream: 10 11 12 SEP 20 21 SEP 30 31 32 33 34 (12 tokens); body 4 (T 5 with CLS).
  auto set = std::make_shared<const TokenDataset>(TokenDataset::from_shards(
      {write_shard(dir / "a.bin", {{10, 11, 12}, {20, 21}}), write_shard(dir / "b.bin", {{30, 31, 32, 33, 34}})}));
  EXPECT_EQ(set->documents(), 3u);
  EXPECT_EQ(set->tokens(), 10u);
  const PackedSequences packed(set, PackingLayout{5, /*cls*/ 1, /*sep*/ 2, /*pad*/ 0});
  ASSERT_EQ(packed.size(), 3u);
  EXPECT_EQ(sequence(packed, 0), (std::vector<int32_t>{1, 10, 11, 12, 2}));
  EXPECT_EQ(sequence(packed, 1), (std::vector<int32_t>{1, 20, 21, 2, 30}));
  EXPECT_EQ(sequence(packed, 2), (std::vector<int32_t>{1, 31, 32, 33, 34}));
  EXPECT_THROW(sequence(packed, 3), std::out_of_range);

  // Lucidrains layout: no CLS, no SEP, T tokens per sequence; only the last is padded.
  const PackedSequences plain(set, PackingLayout{4, -1, -1, 0});
  ASSERT_EQ(plain.size(), 3u);
  EXPECT_EQ(sequence(plain, 0), (std::vector<int32_t>{10, 11, 12, 20}));
  EXPECT_EQ(sequence(plain, 1), (std::vector<int32_t>{21, 30, 31, 32}));
  EXPECT_EQ(sequence(plain, 2), (std::vector<int32_t>{33, 34, 0, 0}));
}

TEST(DataLoader, EveryTokenAppearsOnceInAnEpoch) {
  TempDir dir("data");
  std::vector<std::vector<uint32_t>> docs;
  uint32_t next = 5;
  for (int d = 0; d < 37; ++d) {
    docs.emplace_back();
    for (int t = 0; t < 1 + d % 7; ++t) docs.back().push_back(next++ % 90 + 5);
  }
  auto set = std::make_shared<const TokenDataset>(TokenDataset::from_shards({write_shard(dir / "a.bin", docs)}));
  auto packed = std::make_shared<const PackedSequences>(set, PackingLayout{8, 1, 2, 0});
  std::multiset<int32_t> seen, expected;
  for (const auto& d : docs)
    for (uint32_t id : d) expected.insert(static_cast<int32_t>(id));
  LoaderOptions options;
  options.micro_batch = 1;
  options.seed = 9;
  DataLoader loader(packed, options);
  for (uint64_t i = 0; i < packed->size(); ++i) {
    const Batch b = loader.next();
    EXPECT_EQ(b.epoch, 0u);
    for (int32_t id : b.tokens)
      if (id >= 5) seen.insert(id);
  }
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(loader.next().epoch, 1u);
}

TEST(DataLoader, OrderIsSeededAndResumableFromTheCursor) {
  TempDir dir("data");
  std::vector<std::vector<uint32_t>> docs;
  for (uint32_t d = 0; d < 50; ++d) docs.push_back({d + 10, d + 11, d + 12});
  auto set = std::make_shared<const TokenDataset>(TokenDataset::from_shards({write_shard(dir / "a.bin", docs)}));
  auto packed = std::make_shared<const PackedSequences>(set, PackingLayout{6, 1, 2, 0});
  LoaderOptions options;
  options.micro_batch = 3;
  options.seed = 7;
  std::vector<Batch> reference;
  {
    DataLoader loader(packed, options);
    for (int i = 0; i < 40; ++i) reference.push_back(loader.next());  // crosses several epochs
  }
  options.start_cursor = reference[17].cursor_before;
  DataLoader resumed(packed, options);
  for (int i = 17; i < 40; ++i) EXPECT_EQ(resumed.next().tokens, reference[i].tokens) << "batch " << i;

  options.start_cursor = 0;
  options.prefetch = 0;  // synchronous path gives the same batches
  DataLoader sync(packed, options);
  EXPECT_EQ(sync.next().tokens, reference[0].tokens);

  options.seed = 8;
  DataLoader other(packed, options);
  EXPECT_NE(other.next().tokens, reference[0].tokens);
  EXPECT_NE(epoch_order(packed->size(), 7, 0), epoch_order(packed->size(), 7, 1));
}

TEST(DataLoader, RanksTakeDisjointRowsOfTheGlobalBatch) {
  TempDir dir("data");
  std::vector<std::vector<uint32_t>> docs;
  for (uint32_t d = 0; d < 64; ++d) docs.push_back({d + 10});
  auto set = std::make_shared<const TokenDataset>(TokenDataset::from_shards({write_shard(dir / "a.bin", docs)}));
  auto packed = std::make_shared<const PackedSequences>(set, PackingLayout{2, 1, -1, 0});  // one token per sequence
  LoaderOptions single;
  single.micro_batch = 4;
  single.seed = 3;
  DataLoader whole(packed, single);
  const Batch global = whole.next();  // rows 0..3 of the order
  const Batch global_next = whole.next();
  std::vector<int32_t> combined;
  for (int64_t rank = 0; rank < 2; ++rank) {
    LoaderOptions o = single;
    o.micro_batch = 2;
    o.world_size = 2;
    o.rank = rank;
    DataLoader loader(packed, o);
    const Batch b = loader.next();
    EXPECT_EQ(b.cursor_after, 4u);
    combined.insert(combined.end(), b.tokens.begin(), b.tokens.end());
  }
  EXPECT_EQ(combined, global.tokens);
  EXPECT_EQ(global_next.cursor_before, 4u);
  LoaderOptions bad = single;
  bad.rank = 2;
  bad.world_size = 2;
  EXPECT_THROW(DataLoader(packed, bad), DataError);
}

TEST(DataLoader, CorruptAndTruncatedShardsAreDataErrors) {
  TempDir dir("data");
  const fs::path path = write_shard(dir / "a.bin", {{10, 11, 12, 13}, {20, 21}});
  std::string bytes = testutil::read_text(path);
  std::string flipped = bytes;
  flipped[flipped.size() - 1] ^= 0x01;  // payload byte: checksum mismatch
  testutil::write_text(dir / "flipped.bin", flipped);
  try {
    TokenDataset::from_shards({dir / "flipped.bin"});
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("flipped.bin"), std::string::npos) << e.what();
  }
  testutil::write_text(dir / "short.bin", bytes.substr(0, bytes.size() - 3));
  EXPECT_THROW(TokenDataset::from_shards({dir / "short.bin"}), DataError);
  testutil::write_text(dir / "header.bin", bytes.substr(0, 20));
  EXPECT_THROW(TokenDataset::from_shards({dir / "header.bin"}), DataError);
}

TEST(DataLoader, IdsOutsideTheModelVocabularyAreDataErrors) {
  TempDir dir("data");
  const fs::path path = write_shard(dir / "a.bin", {{10, 11, 95}});
  EXPECT_NO_THROW(TokenDataset::from_shards({path}, 100));
  try {
    TokenDataset::from_shards({path}, 64);
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("token id 95"), std::string::npos) << m;
    EXPECT_NE(m.find("model.vocab_size = 64"), std::string::npos) << m;
  }
}

TEST(DataLoader, PackingCoversAPreparedCorpusInBothLayouts) {
  TempDir dir("data");
  testutil::prepare_corpus(dir.path(), dir / "prepared", 120, 0.0);
  auto set =
      std::make_shared<const TokenDataset>(TokenDataset::open(PreparedMeta::read(dir / "prepared"), "train", 64));
  for (const PackingLayout layout :
       {PackingLayout{16, 2, 3, 0}, PackingLayout{16, -1, -1, 0}, PackingLayout{7, -1, 3, 0}}) {
    const PackedSequences packed(set, layout);
    uint64_t content = 0, separators = 0;
    for (uint64_t i = 0; i < packed.size(); ++i) {
      for (int32_t id : sequence(packed, i)) {
        ASSERT_GE(id, 0);
        ASSERT_LT(id, 64);
        if (id == 3 && layout.sep_id == 3)
          ++separators;
        else if (id > 4)
          ++content;
      }
    }
    EXPECT_EQ(separators, layout.sep_id >= 0 ? set->documents() - 1 : 0);
    uint64_t expected_content = 0;
    std::vector<uint32_t> ids(set->tokens());
    set->copy_tokens(0, ids.size(), ids.data());
    for (uint32_t id : ids) expected_content += id > 4;
    EXPECT_EQ(content, expected_content);
  }
}

TEST(DataLoader, PreparedDirectoryMetaAndVocabularyHash) {
  TempDir dir("data");
  const auto result = testutil::prepare_corpus(dir.path(), dir / "prepared", 60, 0.2);
  const PreparedMeta meta = PreparedMeta::read(dir / "prepared");
  EXPECT_EQ(meta.vocab_size, 64u);
  EXPECT_EQ(meta.cls_id, 2);
  EXPECT_EQ(meta.sep_id, 3);
  const TokenDataset train = TokenDataset::open(meta, "train", 64);
  EXPECT_EQ(train.tokens(), result.train.tokens);
  EXPECT_EQ(train.documents(), result.train.documents);

  // A shard from another vocabulary (same size, other hash) is refused.
  PreparedMeta other = meta;
  other.vocab_hash ^= 1;
  EXPECT_THROW(TokenDataset::open(other, "train"), DataError);
  EXPECT_THROW(PreparedMeta::read(dir / "missing"), DataError);
}

}  // namespace
}  // namespace coco::data
