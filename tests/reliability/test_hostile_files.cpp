// Issue #11, classes 3, 4, 9, 10, 11, 12: JSON nested 10^5 deep, duplicate keys and overflowing numbers in
// every JSON the engine reads; FIFOs and directories in place of files (a hang is a failure: every run has a
// watchdog); data folders whose meta.json disagrees with its shards; prepare on empty input, duplicate
// vocabulary lines, an --out that is a file, and thread creation failing.
#include <gtest/gtest.h>

#include "engine/io/checked_read.h"
#include "tests/reliability/reliability_util.h"

namespace coco::reliability {
namespace {

using testutil::TempDir;

constexpr int kDeep = 100000;

class HostileFiles : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir("hostile");
    testutil::prepare_corpus(work_->path(), work_->path() / "data");
    config_json_ = testutil::tiny_paper_config(work_->path() / "data");
    config_json_["train"]["steps"] = 4;
    config_json_["train"]["checkpoint_every"] = 2;
    config_json_["train"]["eval_every"] = 2;
    config_json_["train"]["log_every"] = 1;
    config_json_["optim"]["warmup_steps"] = 1;
    config_ = testutil::write_config(work_->path() / "config.json", config_json_);
    const RunResult r = run_coco_bounded(train_args(config_, run_dir()), work_->path());
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  static void TearDownTestSuite() { delete work_; }

  static fs::path run_dir() { return work_->path() / "run"; }
  static fs::path checkpoint() { return run_dir() / "checkpoints" / "step-00000004"; }
  static std::vector<std::string> train_args(const fs::path& config, const fs::path& out,
                                             std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"train", "--config", config.string(), "--out", out.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  static RunResult run(const std::vector<std::string>& args, uint64_t address_space = 0, uint64_t file_size = 0) {
    return run_coco_bounded(args, work_->path(), {}, 120, address_space, file_size);
  }
  fs::path fresh(const std::string& name) { return work_->path() / (name + "-" + std::to_string(counter_++)); }
  fs::path copy_of(const fs::path& source, const std::string& name) {
    const fs::path out = fresh(name);
    fs::copy(source, out, fs::copy_options::recursive);
    return out;
  }
  // A config file training on `data_dir`.
  fs::path config_for(const fs::path& data_dir) {
    nlohmann::json c = config_json_;
    c["data"]["dir"] = data_dir.string();
    return testutil::write_config(fresh("config") += ".json", c);
  }
  static void expect_refused(const RunResult& r, const std::vector<std::string>& parts, const std::string& what) {
    EXPECT_EQ(r.exit_code, 2) << what << "\n" << r.out << r.err;
    EXPECT_EQ(r.signal, 0) << what;
    for (const auto& part : parts)
      EXPECT_TRUE(contains(r.err, part)) << what << ": expected '" << part << "' in\n" << r.err;
  }

  static TempDir* work_;
  static nlohmann::json config_json_;
  static fs::path config_;
  static inline int counter_ = 0;
};

TempDir* HostileFiles::work_ = nullptr;
nlohmann::json HostileFiles::config_json_;
fs::path HostileFiles::config_;

TEST_F(HostileFiles, DeeplyNestedJsonIsRefusedWhereverItIsRead) {
  const std::string nesting = "nesting deeper than " + std::to_string(io::kMaxJsonDepth);
  {
    const fs::path config = fresh("deep") += ".json";
    testutil::write_text(config, deep_json("model", kDeep));
    expect_refused(run(train_args(config, fresh("out"))), {config.string(), nesting}, "config");
    // 60000 deep: one argument may not exceed 128 KiB (MAX_ARG_STRLEN).
    expect_refused(
        run(train_args(config_, fresh("out"), {"--set", "model=" + std::string(60000, '[') + std::string(60000, ']')})),
        {"--set 'model=", nesting}, "--set");
  }
  {
    const fs::path data = copy_of(work_->path() / "data", "deep-meta");
    testutil::write_text(data / "meta.json", deep_json("format", kDeep));
    expect_refused(run(train_args(config_for(data), fresh("out"))), {(data / "meta.json").string(), nesting},
                   "meta.json");
  }
  for (const char* file : {"config.json", "trainer_state.json"}) {
    const fs::path out = copy_of(run_dir(), "deep-checkpoint");
    const fs::path dir = out / "checkpoints" / "step-00000004";
    testutil::write_text(dir / file, deep_json("step", kDeep));
    reseal(dir);
    const auto before = fingerprint(out / "checkpoints");
    expect_refused(run({"eval", "--checkpoint", dir.string()}), {(dir / file).string(), nesting}, file);
    expect_refused(run(train_args(config_, out, {"--resume", "--set", "train.steps=6"})),
                   {(dir / file).string(), nesting}, std::string("resume with ") + file);
    EXPECT_EQ(fingerprint(out / "checkpoints"), before) << file;
  }
  {
    // A safetensors header: the reader, then a checkpoint holding such a file.
    const std::string header = deep_json("__metadata__", kDeep);
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[static_cast<size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    bytes += header;
    try {
      safetensors::Reader::from_bytes(std::vector<uint8_t>(bytes.begin(), bytes.end()), "deep.safetensors");
      ADD_FAILURE() << "expected a refusal";
    } catch (const safetensors::FormatError& e) {
      EXPECT_TRUE(contains(e.what(), "deep.safetensors")) << e.what();
      EXPECT_TRUE(contains(e.what(), "nests deeper than")) << e.what();
    }
    const fs::path out = copy_of(run_dir(), "deep-safetensors");
    const fs::path dir = out / "checkpoints" / "step-00000004";
    testutil::write_text(dir / "model.safetensors", bytes);
    reseal(dir);
    expect_refused(run({"eval", "--checkpoint", dir.string()}), {(dir / "model.safetensors").string(), "nests deeper"},
                   "model.safetensors");
  }
  {
    const fs::path tokenizer = fresh("deep-tokenizer") += ".json";
    testutil::write_text(tokenizer, deep_json("model", kDeep));
    testutil::write_corpus(work_->path() / "small.txt", 20);
    expect_refused(run({"prepare", "--vocab", tokenizer.string(), "--out", fresh("prepared").string(),
                        (work_->path() / "small.txt").string()}),
                   {tokenizer.string(), nesting}, "tokenizer.json");
  }
}

TEST_F(HostileFiles, DuplicateKeysAndOverflowingNumbersNameTheKey) {
  std::string text = config_json_.dump(2);
  const size_t seed = text.find("\"seed\": 3");
  ASSERT_NE(seed, std::string::npos);
  const fs::path duplicate = fresh("duplicate") += ".json";
  testutil::write_text(duplicate, std::string(text).insert(seed, "\"seed\": 1, "));
  expect_refused(run(train_args(duplicate, fresh("out"))), {duplicate.string(), "duplicate key 'train.seed'"}, "dup");

  const size_t lr = text.find("\"lr\": ");
  ASSERT_NE(lr, std::string::npos);
  const fs::path overflow = fresh("overflow") += ".json";
  testutil::write_text(overflow, text.substr(0, lr) + "\"lr\": 1e400" + text.substr(text.find(',', lr)));
  expect_refused(run(train_args(overflow, fresh("out"))), {overflow.string(), "key 'optim.lr'", "out of range"},
                 "overflow");
  expect_refused(run(train_args(config_, fresh("out"), {"--set", "optim.lr=1e400"})),
                 {"--set 'optim.lr=1e400'", "key 'optim.lr'", "out of range"}, "--set overflow");
  expect_refused(run(train_args(config_, fresh("out"), {"--set", "train.steps=1e400"})), {"key 'train.steps'"},
                 "--set steps overflow");
}

TEST_F(HostileFiles, DirectoriesAndFifosInPlaceOfFilesNeverHang) {
  const fs::path directory = fresh("config-dir");
  fs::create_directory(directory);
  expect_refused(run(train_args(directory, fresh("out"))), {directory.string(), "is a directory"}, "config directory");

  const fs::path fifo_config = fresh("fifo") += ".json";
  ASSERT_EQ(::mkfifo(fifo_config.c_str(), 0644), 0);
  expect_refused(run(train_args(fifo_config, fresh("out"))), {fifo_config.string(), "FIFO"}, "config FIFO");

  // In the data folder: a shard, meta.json, the vocabulary.
  const nlohmann::json meta = nlohmann::json::parse(testutil::read_text(work_->path() / "data" / "meta.json"));
  const std::string shard = meta["splits"]["train"]["shards"][0]["file"].get<std::string>();
  for (const std::string& file : {shard, std::string("meta.json"), std::string("vocab.txt")}) {
    const fs::path data = copy_of(work_->path() / "data", "fifo-data");
    fs::remove(data / file);
    ASSERT_EQ(::mkfifo((data / file).c_str(), 0644), 0);
    const RunResult r = run(train_args(config_for(data), fresh("out")));
    if (file == "vocab.txt") {  // read only when the folder has no tokenizer.json to take the files from
      EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 2) << r.err;
      if (r.exit_code == 2) {
        EXPECT_TRUE(contains(r.err, (data / file).string())) << r.err;
      }
      continue;
    }
    expect_refused(r, {(data / file).string()}, "FIFO " + file);
  }

  // In a checkpoint, and as the metrics log.
  {
    const fs::path out = copy_of(run_dir(), "fifo-checkpoint");
    const fs::path model = out / "checkpoints" / "step-00000004" / "model.safetensors";
    fs::remove(model);
    ASSERT_EQ(::mkfifo(model.c_str(), 0644), 0);
    expect_refused(run({"eval", "--checkpoint", model.parent_path().string()}), {model.string(), "not a regular file"},
                   "checkpoint FIFO");
  }
  {
    const fs::path out = copy_of(run_dir(), "fifo-metrics");
    fs::remove(out / "metrics.jsonl");
    ASSERT_EQ(::mkfifo((out / "metrics.jsonl").c_str(), 0644), 0);
    expect_refused(run(train_args(config_, out, {"--resume", "--set", "train.steps=6"})),
                   {(out / "metrics.jsonl").string(), "FIFO"}, "metrics FIFO");
  }
  {
    // checkpoints/latest as a FIFO is an unusable `latest`: the scan finds step-00000004.
    const fs::path out = copy_of(run_dir(), "fifo-latest");
    fs::remove(out / "checkpoints" / "latest");
    ASSERT_EQ(::mkfifo((out / "checkpoints" / "latest").c_str(), 0644), 0);
    const RunResult r = run(train_args(config_, out, {"--resume", "--set", "train.steps=6"}));
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "resuming from step-00000004")) << r.out;
  }
}

TEST_F(HostileFiles, AbsurdModelSizesAreRefusedBeforeAllocating) {
  const RunResult r = run(train_args(config_, fresh("out"),
                                     {"--set", "model.generator.dim=65536", "--set", "model.discriminator.dim=65536",
                                      "--set", "objective.scl_dim=65536", "--set", "train.micro_batch=1048576"}));
  expect_refused(r, {config_.string(), "GiB to train", "train.micro_batch 1048576", "model.*.dim 65536/65536"},
                 "absurd sizes");
}

TEST_F(HostileFiles, MetaJsonMustAgreeWithItsShards) {
  const auto edit_meta = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const fs::path data = copy_of(work_->path() / "data", name);
    nlohmann::json meta = nlohmann::json::parse(testutil::read_text(data / "meta.json"));
    edit(meta);
    testutil::write_text(data / "meta.json", meta.dump(2));
    return data;
  };
  fs::path data = edit_meta(
      "twice", [](nlohmann::json& m) { m["splits"]["train"]["shards"].push_back(m["splits"]["train"]["shards"][0]); });
  expect_refused(run(train_args(config_for(data), fresh("out"))), {(data / "meta.json").string(), "listed twice"},
                 "shard listed twice");
  data =
      edit_meta("overlap", [](nlohmann::json& m) { m["splits"]["valid"]["shards"] = m["splits"]["train"]["shards"]; });
  expect_refused(run(train_args(config_for(data), fresh("out"))),
                 {(data / "meta.json").string(), "in the train split and the valid split"}, "train shard as valid");
  data = edit_meta("counts", [](nlohmann::json& m) {
    m["splits"]["train"]["tokens"] = m["splits"]["train"]["tokens"].get<uint64_t>() + 1;
  });
  expect_refused(run(train_args(config_for(data), fresh("out"))),
                 {(data / "meta.json").string(), "the train split records"}, "token count");
  data = edit_meta("doc-counts", [](nlohmann::json& m) { m["splits"]["valid"]["documents"] = 1; });
  expect_refused(run(train_args(config_for(data), fresh("out"))),
                 {(data / "meta.json").string(), "the valid split records"}, "document count");
}

TEST_F(HostileFiles, PrepareRefusesInputsThatHoldNothing) {
  const fs::path empty = fresh("empty") += ".txt";
  testutil::write_text(empty, "");
  const fs::path blank = fresh("blank") += ".txt";
  testutil::write_text(blank, "\n\n   \n\t\n");
  for (const fs::path& input : {empty, blank}) {
    const fs::path out = fresh("prepared");
    expect_refused(run({"prepare", "--vocab-size", "64", "--out", out.string(), input.string()}),
                   {input.string(), "no document with any token"}, input.filename().string());
    EXPECT_FALSE(fs::exists(out / "meta.json"));
  }

  // A vocabulary with a duplicate line; one lacking special tokens.
  std::string vocab = testutil::read_text(work_->path() / "data" / "vocab.txt");
  const fs::path duplicated = fresh("vocab") += ".txt";
  testutil::write_text(duplicated, vocab + "[PAD]\n");
  const size_t lines = static_cast<size_t>(std::count(vocab.begin(), vocab.end(), '\n'));
  testutil::write_corpus(work_->path() / "small.txt", 20);
  expect_refused(
      run({"prepare", "--vocab", duplicated.string(), "--out", fresh("prepared").string(),
           (work_->path() / "small.txt").string()}),
      {duplicated.string() + ":" + std::to_string(lines + 1) + ": duplicate token '[PAD]' (first on line 1)"},
      "duplicate vocabulary line");
  const fs::path no_specials = fresh("vocab") += ".txt";
  testutil::write_text(no_specials, "[UNK]\nthe\ncat\n");
  expect_refused(run({"prepare", "--vocab", no_specials.string(), "--out", fresh("prepared").string(),
                      (work_->path() / "small.txt").string()}),
                 {no_specials.string() + ": vocabulary lacks special token(s)"}, "no special tokens");

  // --out naming an existing file.
  const fs::path file = fresh("a-file");
  testutil::write_text(file, "keep me\n");
  expect_refused(run({"prepare", "--vocab-size", "64", "--out", file.string(), (work_->path() / "small.txt").string()}),
                 {file.string(), "not a directory"}, "--out file");
  EXPECT_EQ(testutil::read_text(file), "keep me\n");
}

TEST_F(HostileFiles, PrepareWithMoreThreadsThanTheMemoryLimitAllowsFallsBack) {
  // 1024 threads of 8 MiB stacks cannot fit under a 3 GiB address space: prepare continues with fewer.
  testutil::write_corpus(work_->path() / "threads.txt", 200);
  const fs::path out = fresh("threads");
  const RunResult r = run({"prepare", "--vocab", (work_->path() / "data" / "vocab.txt").string(), "--threads", "1024",
                           "--out", out.string(), (work_->path() / "threads.txt").string()},
                          uint64_t{3} << 30);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "of 1024 tokenizer threads")) << r.err;
  EXPECT_TRUE(fs::exists(out / "meta.json"));
}

TEST_F(HostileFiles, PrepareOnAFullDiskIsARuntimeFailureLeavingNoOutput) {
  // RLIMIT_FSIZE with SIGXFSZ ignored: every write past 4 KiB fails with EFBIG, as writes on a full disk fail
  // with ENOSPC. The shards of this corpus are far larger, so a shard write fails part way.
  testutil::write_corpus(work_->path() / "full-disk.txt", 2000);
  const fs::path out = fresh("full-disk");
  const RunResult r = run({"prepare", "--vocab", (work_->path() / "data" / "vocab.txt").string(), "--out", out.string(),
                           (work_->path() / "full-disk.txt").string()},
                          0, 4096);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(r.signal, 0) << r.err;
  EXPECT_TRUE(contains(r.err, out.string())) << "the message names the file being written: " << r.err;
  EXPECT_TRUE(contains(r.err, "write error")) << r.err;
  // No meta.json: the folder is not a prepared data folder (train refuses it). The tokenizer files written
  // before the shards are complete (written to a temp file, then renamed); no temp file or partial shard stays.
  EXPECT_FALSE(fs::exists(out / "meta.json"));
  if (fs::exists(out))
    for (const auto& entry : fs::recursive_directory_iterator(out)) {
      const std::string name = entry.path().filename().string();
      EXPECT_TRUE(name == "vocab.txt" || name.ends_with(".json")) << "half-written output left behind: " << name;
    }
  if (fs::exists(out / "tokenizer.json")) {
    EXPECT_TRUE(nlohmann::json::accept(testutil::read_text(out / "tokenizer.json")));
  }
}

}  // namespace
}  // namespace coco::reliability
