// coco/vocab_identity: the vocabulary hash of prepared data and checkpoints, its fallbacks for older files, and the
// refusal of data whose vocabulary is not the checkpoint's.
#include "coco/vocab_identity.h"

#include <gtest/gtest.h>

#include "coco/wordpiece.h"
#include "tests/train/train_test_util.h"

namespace coco::data {
namespace {

using testutil::TempDir;
namespace fs = std::filesystem;

TEST(VocabIdentity, MetaRecordsTheHashOfTheVocabularyTokens) {
  TempDir dir("vocab");
  testutil::prepare_corpus(dir.path(), dir / "data");
  const PreparedMeta meta = PreparedMeta::read(dir / "data");
  EXPECT_EQ(meta.vocab_file, "vocab.txt");
  const text::Vocab vocab = text::Vocab::load_txt(dir / "data" / "vocab.txt");
  EXPECT_EQ(meta.vocab_hash, vocab.hash());
  EXPECT_EQ(meta.vocab_hash, text::vocab_hash(vocab.tokens()));
  EXPECT_EQ(vocab_identity_of_file(dir / "data" / "vocab.txt"), (VocabIdentity{vocab.hash(), 64}));
  // The shards carry the same identity in their headers.
  EXPECT_EQ(text::TokenShard::read_header(dir / "data" / "train_000000.bin").vocab_hash, meta.vocab_hash);

  // tokenizer.json and vocab.txt of one vocabulary are one identity.
  const fs::path wordpiece = fs::path(COCO_SOURCE_DIR) / "tests" / "data" / "wordpiece";
  EXPECT_EQ(vocab_identity_of_file(wordpiece / "vocab.txt"), vocab_identity_of_file(wordpiece / "tokenizer.json"));
  EXPECT_EQ(vocab_identity_of_file(wordpiece / "vocab.txt").size, 30522u);
  EXPECT_THROW(vocab_identity_of_file(dir / "missing.txt"), DataError);
}

TEST(VocabIdentity, HashTextRoundTripsAndBadTextIsRefused) {
  EXPECT_EQ(format_vocab_hash(0x1a8955ef43215668ull), "0x1a8955ef43215668");
  EXPECT_EQ(format_vocab_hash(5), "0x0000000000000005");
  EXPECT_EQ(parse_vocab_hash("0x1a8955ef43215668", "x"), 0x1a8955ef43215668ull);
  EXPECT_EQ(parse_vocab_hash("1A8955EF43215668", "x"), 0x1a8955ef43215668ull);
  for (const char* bad : {"", "0x", "0xg0", "12345678901234567", "-1", "0x 12"}) {
    try {
      parse_vocab_hash(bad, "meta.json: key 'vocab_hash'");
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const DataError& e) {
      EXPECT_NE(std::string(e.what()).find("key 'vocab_hash'"), std::string::npos) << e.what();
    }
  }
}

TEST(VocabIdentity, MetaWithoutAHashGetsItFromItsVocabularyFile) {
  TempDir dir("vocab");
  testutil::prepare_corpus(dir.path(), dir / "data");
  const uint64_t recorded = PreparedMeta::read(dir / "data").vocab_hash;
  nlohmann::json meta = nlohmann::json::parse(testutil::read_text(dir / "data" / "meta.json"));
  meta.erase("vocab_hash");  // as written before meta.json recorded it
  testutil::write_text(dir / "data" / "meta.json", meta.dump(2));
  const PreparedMeta old = PreparedMeta::read(dir / "data");
  EXPECT_EQ(old.vocab_hash, recorded);
  EXPECT_EQ(TokenDataset::open(old, "train", 64).vocab_size(), 64u);  // the shards agree with the computed hash

  // A vocabulary file that does not match the recorded size is refused, naming both.
  meta["vocab_size"] = 65;
  testutil::write_text(dir / "data" / "meta.json", meta.dump(2));
  try {
    PreparedMeta::read(dir / "data");
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("vocab.txt holds 64 tokens"), std::string::npos) << e.what();
  }
}

TEST(VocabIdentity, CheckpointVocabularyFromTrainerStateOrItsOldDataFolder) {
  TempDir dir("vocab");
  testutil::prepare_corpus(dir.path(), dir / "data");
  const PreparedMeta meta = PreparedMeta::read(dir / "data");
  const fs::path checkpoint = dir / "step-00000010";

  nlohmann::json state = {{"step", 10}, {"data", {{"dir", (dir / "data").string()}}}};
  state["vocab"] = vocab_identity_to_json({0x1234, 64});
  EXPECT_EQ(state["vocab"], (nlohmann::json{{"hash", "0x0000000000001234"}, {"size", 64}}));
  auto saved = checkpoint_vocabulary(checkpoint, state);
  ASSERT_TRUE(saved.has_value());
  EXPECT_EQ(saved->identity, (VocabIdentity{0x1234, 64}));
  EXPECT_EQ(saved->data_dir, (dir / "data").string());
  EXPECT_NE(saved->source.find("trainer_state.json"), std::string::npos);

  // Written before trainer_state.json recorded the vocabulary: the data folder it names still says.
  state.erase("vocab");
  saved = checkpoint_vocabulary(checkpoint, state);
  ASSERT_TRUE(saved.has_value());
  EXPECT_EQ(saved->identity, (VocabIdentity{meta.vocab_hash, 64}));
  EXPECT_NE(saved->source.find("meta.json"), std::string::npos);
  // ... and nothing is known once that folder is gone.
  state["data"]["dir"] = (dir / "gone").string();
  EXPECT_FALSE(checkpoint_vocabulary(checkpoint, state).has_value());
  EXPECT_NE(require_checkpoint_vocabulary(checkpoint, state, meta, "evaluate").find("warning"), std::string::npos);

  state["vocab"] = {{"hash", 12}, {"size", 64}};
  EXPECT_THROW(checkpoint_vocabulary(checkpoint, state), DataError);
}

TEST(VocabIdentity, DataOfAnotherVocabularyIsRefusedNamingBothHashesAndFolders) {
  TempDir dir("vocab");
  testutil::prepare_corpus(dir.path(), dir / "data");
  const PreparedMeta meta = PreparedMeta::read(dir / "data");
  const fs::path checkpoint = dir / "run" / "step-00000010";
  nlohmann::json state = {{"data", {{"dir", "/old/data"}}}};
  state["vocab"] = vocab_identity_to_json({meta.vocab_hash, meta.vocab_size});
  EXPECT_EQ(require_checkpoint_vocabulary(checkpoint, state, meta, "evaluate"), "");

  // Same size, other tokens.
  state["vocab"] = vocab_identity_to_json({meta.vocab_hash ^ 1, meta.vocab_size});
  try {
    require_checkpoint_vocabulary(checkpoint, state, meta, "resume training from");
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("refusing to resume training from " + checkpoint.string()), std::string::npos) << message;
    EXPECT_NE(message.find(format_vocab_hash(meta.vocab_hash ^ 1)), std::string::npos) << message;
    EXPECT_NE(message.find(format_vocab_hash(meta.vocab_hash)), std::string::npos) << message;
    EXPECT_NE(message.find("/old/data"), std::string::npos) << message;
    EXPECT_NE(message.find((dir / "data" / "meta.json").string()), std::string::npos) << message;
  }
  // The advice names the checkpoint's copy of its vocabulary when it has one.
  fs::create_directories(checkpoint);
  testutil::write_text(checkpoint / "vocab.txt", "[PAD]\n");
  try {
    require_checkpoint_vocabulary(checkpoint, state, meta, "evaluate");
    FAIL() << "expected a DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("coco prepare --vocab " + (checkpoint / "vocab.txt").string()),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace coco::data
