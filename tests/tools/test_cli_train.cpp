// The `coco` binary end to end: help, exit codes, config and data errors, prepare -> train -> eval.
#include <gtest/gtest.h>

#include <set>
#include <sstream>

#include "tests/train/train_test_util.h"

namespace coco {
namespace {

using testutil::run_coco;
using testutil::RunResult;
using testutil::TempDir;
namespace fs = std::filesystem;

class CliTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(testutil::coco_binary())) << testutil::coco_binary();
    testutil::prepare_corpus(dir_.path(), dir_ / "data");
  }
  fs::path config(const nlohmann::json& j, const std::string& name = "config.json") {
    return testutil::write_config(dir_ / name, j);
  }
  RunResult train(const fs::path& config_path, const std::string& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"train", "--config", config_path.string(), "--out", (dir_ / out).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_coco(args, dir_.path());
  }
  TempDir dir_{"cli"};
};

TEST_F(CliTrain, HelpDocumentsEveryCommandAndOption) {
  RunResult r = run_coco({"--help"}, dir_.path());
  EXPECT_EQ(r.exit_code, 0);
  for (const char* word : {"prepare", "train", "eval", "plot"}) EXPECT_NE(r.out.find(word), std::string::npos);
  r = run_coco({"train", "--help"}, dir_.path());
  EXPECT_EQ(r.exit_code, 0);
  for (const char* option : {"--config", "--out", "--set", "--resume"})
    EXPECT_NE(r.out.find(option), std::string::npos) << option;
  r = run_coco({"prepare", "--help"}, dir_.path());
  for (const char* option : {"--vocab", "--vocab-size", "--valid-fraction", "--doc-boundary", "--out"})
    EXPECT_NE(r.out.find(option), std::string::npos) << option;
  r = run_coco({"eval", "--help"}, dir_.path());
  EXPECT_NE(r.out.find("--checkpoint"), std::string::npos);
  EXPECT_NE(r.out.find("--set"), std::string::npos);
}

TEST_F(CliTrain, UsageErrorsExitTwo) {
  EXPECT_EQ(run_coco({}, dir_.path()).exit_code, 2);
  RunResult r = run_coco({"frobnicate"}, dir_.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("frobnicate"), std::string::npos);
  r = run_coco({"train", "--config", "x.json"}, dir_.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--out"), std::string::npos) << r.err;
  r = run_coco({"prepare", "--out", (dir_ / "p").string(), (dir_ / "corpus.txt").string()}, dir_.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--vocab"), std::string::npos) << r.err;
}

TEST_F(CliTrain, ConfigErrorsExitTwoNamingFileAndKey) {
  nlohmann::json c = testutil::tiny_paper_config(dir_ / "data");
  c["optim"]["lr_typo"] = 1;
  RunResult r = train(config(c, "typo.json"), "run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("typo.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("optim.lr_typo"), std::string::npos) << r.err;

  r = train(config(testutil::tiny_paper_config(dir_ / "data")), "run", {"--set", "train.keep_checkpoints=zero"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("train.keep_checkpoints"), std::string::npos) << r.err;

  r = train(dir_ / "no-such-config.json", "run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no-such-config.json"), std::string::npos) << r.err;
}

TEST_F(CliTrain, DataErrorsExitTwo) {
  const fs::path cfg = config(testutil::tiny_paper_config(dir_ / "data"));
  // Vocabulary size mismatch between meta.json and the config.
  RunResult r = train(cfg, "run", {"--set", "model.vocab_size=80"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("meta.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("model.vocab_size"), std::string::npos) << r.err;
  // Special ids that disagree with the vocabulary.
  r = train(cfg, "run", {"--set", "objective.mask_id=7"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("objective.mask_id"), std::string::npos) << r.err;
  // Missing data directory.
  r = train(cfg, "run", {"--set", "data.dir=" + (dir_ / "nowhere").string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("meta.json"), std::string::npos) << r.err;
  // A corrupted shard (one payload byte flipped): checksum error naming the file.
  const fs::path shard = dir_ / "data" / "train_000000.bin";
  std::string bytes = testutil::read_text(shard);
  bytes[bytes.size() / 2] ^= 0x10;
  testutil::write_text(shard, bytes);
  r = train(cfg, "run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("train_000000.bin"), std::string::npos) << r.err;
  // Truncated.
  testutil::write_text(shard, bytes.substr(0, bytes.size() - 5));
  r = train(cfg, "run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("train_000000.bin"), std::string::npos) << r.err;
}

TEST_F(CliTrain, PrepareTrainEvalLossFalls) {
  // prepare through the CLI (plain progress lines: stdout is a file).
  RunResult r = run_coco({"prepare", "--vocab-size", "64", "--valid-fraction", "0.1", "--out",
                          (dir_ / "cli-data").string(), (dir_ / "corpus.txt").string()},
                         dir_.path());
  ASSERT_EQ(r.exit_code, 0) << "signal " << r.signal << ": " << r.err;
  EXPECT_NE(r.out.find("tokenizing"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\r'), std::string::npos);
  ASSERT_TRUE(fs::exists(dir_ / "cli-data" / "meta.json"));

  nlohmann::json c = testutil::tiny_paper_config(dir_ / "cli-data");
  c["train"]["steps"] = 60;
  c["train"]["log_every"] = 10;
  c["train"]["eval_every"] = 30;
  c["train"]["checkpoint_every"] = 30;
  r = train(config(c), "run");
  ASSERT_EQ(r.exit_code, 0) << "signal " << r.signal << ": " << r.err;
  const auto records = testutil::metrics_without_timing(dir_ / "run");
  std::vector<double> train_losses;
  int evals = 0;
  for (const auto& j : records) {
    if (j.contains("split")) {
      EXPECT_EQ(j["split"], "valid");
      ++evals;
      continue;
    }
    for (const char* key : {"step", "loss", "mlm_loss", "rtd_loss", "clm_loss", "cl_loss", "mlm_acc", "rtd_acc",
                            "cl_acc", "clm_acc", "lr", "grad_norm", "loss_scale", "skipped"})
      EXPECT_TRUE(j.contains(key)) << key << " missing in " << j.dump();
    train_losses.push_back(j["loss"].get<double>());
  }
  EXPECT_EQ(evals, 2);
  ASSERT_EQ(train_losses.size(), 6u);
  EXPECT_LT(train_losses.back(), train_losses.front()) << "the loss should fall over 60 steps";

  // The resolved config is complete and itself a valid config.
  const nlohmann::json resolved = nlohmann::json::parse(testutil::read_text(dir_ / "run" / "config.json"));
  EXPECT_EQ(resolved["train"]["steps"], 60);
  EXPECT_TRUE(resolved["objective"].contains("mask_prob"));
  EXPECT_TRUE(fs::exists(dir_ / "run" / "checkpoints" / "step-00000060" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ / "run" / "checkpoints" / "step-00000060" / "optimizer.safetensors"));

  // eval: table + JSON.
  r = run_coco({"eval", "--checkpoint", (dir_ / "run").string(), "--json", (dir_ / "eval.json").string()}, dir_.path());
  ASSERT_EQ(r.exit_code, 0) << "signal " << r.signal << ": " << r.err;
  const nlohmann::json report = nlohmann::json::parse(testutil::read_text(dir_ / "eval.json"));
  // The table names every metric as the JSON and metrics.jsonl do, with what it means.
  for (const char* key :
       {"loss", "mlm_loss", "mlm_acc", "rtd_loss", "rtd_acc", "clm_loss", "clm_acc", "cl_loss", "cl_acc"}) {
    EXPECT_TRUE(report.contains(key)) << key;
    std::string row = "\n";  // appended, not `"\n" + ...`: GCC 12's -Wrestrict false positive
    row.append(key).append(" ");
    EXPECT_NE(r.out.find(row), std::string::npos) << key << " in\n" << r.out;
  }
  EXPECT_NE(r.out.find("label 1 = original token kept"), std::string::npos) << r.out;  // the paper preset's copy loss
  for (const char* old_name : {"binary_accuracy", "contrastive_accuracy", "mlm_accuracy"})
    EXPECT_EQ(r.out.find(old_name), std::string::npos) << old_name;
  EXPECT_EQ(report["step"], 60);
  EXPECT_EQ(report["split"], "valid");
  EXPECT_GE(report["mlm_acc"].get<double>(), 0.0);
  EXPECT_LE(report["mlm_acc"].get<double>(), 1.0);
  // The eval at the final step inside training saw the same batches with the same keys.
  double logged_final_eval = -1;
  for (const auto& j : records)
    if (j.contains("split") && j["step"] == 60) logged_final_eval = j["mlm_loss"].get<double>();
  EXPECT_EQ(report["mlm_loss"].get<double>(), logged_final_eval);

  // The run as a picture (scripts/plot_metrics.py; tests/tools/test_plot.cpp checks the PNG itself).
  r = run_coco({"plot", (dir_ / "run").string()}, dir_.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(testutil::read_text(dir_ / "run" / "metrics.png").substr(1, 3), "PNG");

  // Resuming with a different model shape is refused, naming the difference.
  r = train(config(c), "run", {"--set", "model.discriminator.depth=3", "--set", "train.steps=70"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("model.discriminator.depth: 2 -> 3"), std::string::npos) << r.err;
}

// Every metric name in metrics.jsonl is the one the progress line prints and docs/metrics.md explains.
TEST_F(CliTrain, OneNamePerMetricInTheLogTheProgressLineAndTheDocs) {
  nlohmann::json c = testutil::tiny_paper_config(dir_ / "data");
  c["train"]["steps"] = 10;
  const RunResult r = train(config(c), "run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string docs = testutil::read_text(fs::path(COCO_SOURCE_DIR) / "docs" / "metrics.md");
  const std::string readme = testutil::read_text(fs::path(COCO_SOURCE_DIR) / "README.md");
  EXPECT_NE(readme.find("docs/metrics.md"), std::string::npos);
  std::set<std::string> keys;
  for (const auto& record : testutil::metrics_without_timing(dir_ / "run"))
    for (const auto& [key, value] : record.items()) keys.insert(key);
  keys.insert("tokens_per_s");
  for (const auto& key : keys) EXPECT_NE(docs.find("`" + key + "`"), std::string::npos) << key << " undocumented";
  // The logged progress lines: "step 5/10 loss ... mlm_loss ... rtd_loss ... clm_loss ... cl_loss ... lr ...
  // tokens_per_s ..."; the eval line adds the accuracies.
  std::string step_line, eval_line;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.starts_with("step 10/10 ")) step_line = line;
    if (line.starts_with("eval  10/10 ")) eval_line = line;
  }
  for (const char* key : {" loss ", " mlm_loss ", " rtd_loss ", " clm_loss ", " cl_loss ", " lr ", " tokens_per_s "})
    EXPECT_NE(step_line.find(key), std::string::npos) << key << " in: " << step_line;
  for (const char* key : {" mlm_acc ", " rtd_acc ", " clm_acc ", " cl_acc "})
    EXPECT_NE(eval_line.find(key), std::string::npos) << key << " in: " << eval_line;
}

// configs/demo.json leaves the vocabulary to the data: it trains unchanged on data prepared with bert-base-uncased's
// vocabulary (30522 tokens, [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103), and config.json says so.
TEST_F(CliTrain, DemoConfigTrainsOnDataOfAnyVocabulary) {
  const fs::path bert_vocab = fs::path(COCO_SOURCE_DIR) / "tests" / "data" / "wordpiece" / "vocab.txt";
  RunResult r = run_coco({"prepare", "--vocab", bert_vocab.string(), "--valid-fraction", "0.05", "--out",
                          (dir_ / "bert-data").string(), (dir_ / "corpus.txt").string()},
                         dir_.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Two steps: the schedule's warm-up is shortened to fit, nothing about the vocabulary is set.
  r = train(fs::path(COCO_SOURCE_DIR) / "configs" / "demo.json", "demo",
            {"--set", "data.dir=" + (dir_ / "bert-data").string(), "--set", "train.steps=2", "--set",
             "optim.warmup_steps=1", "--set", "train.eval_batches=1", "--set", "runtime.device=cpu"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json resolved = nlohmann::json::parse(testutil::read_text(dir_ / "demo" / "config.json"));
  EXPECT_EQ(resolved["model"]["vocab_size"], 30522);
  EXPECT_EQ(resolved["objective"]["pad_id"], 0);
  EXPECT_EQ(resolved["objective"]["unk_id"], 100);
  EXPECT_EQ(resolved["objective"]["cls_id"], 101);
  EXPECT_EQ(resolved["objective"]["sep_id"], 102);
  EXPECT_EQ(resolved["objective"]["mask_id"], 103);
  // The checkpoint records the vocabulary it was trained with.
  const nlohmann::json meta = nlohmann::json::parse(testutil::read_text(dir_ / "bert-data" / "meta.json"));
  const nlohmann::json state = nlohmann::json::parse(
      testutil::read_text(dir_ / "demo" / "checkpoints" / "step-00000002" / "trainer_state.json"));
  EXPECT_EQ(state["vocab"], (nlohmann::json{{"hash", meta["vocab_hash"]}, {"size", 30522}}));
}

// Data of another vocabulary of the same size (two tokens swapped) is refused by eval and by resume, naming both
// vocabularies and folders; an eval on the right data still works, with --set overrides.
TEST_F(CliTrain, EvalAndResumeRefuseDataOfAnotherVocabulary) {
  nlohmann::json c = testutil::tiny_paper_config(dir_ / "data");
  c["train"]["steps"] = 10;
  RunResult r = train(config(c), "run");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string vocab = testutil::read_text(dir_ / "data" / "vocab.txt");
  const size_t first = vocab.rfind('\n', vocab.size() - 2);  // swap the last two lines
  const size_t second = vocab.rfind('\n', first - 1);
  const std::string a = vocab.substr(second + 1, first - second - 1), b = vocab.substr(first + 1);
  vocab = vocab.substr(0, second + 1) + b.substr(0, b.size() - 1) + "\n" + a + "\n";
  testutil::write_text(dir_ / "other-vocab.txt", vocab);
  r = run_coco({"prepare", "--vocab", (dir_ / "other-vocab.txt").string(), "--valid-fraction", "0.1", "--out",
                (dir_ / "other").string(), (dir_ / "corpus.txt").string()},
               dir_.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto hash_of = [&](const std::string& folder) {
    return nlohmann::json::parse(testutil::read_text(dir_ / folder / "meta.json"))["vocab_hash"].get<std::string>();
  };
  ASSERT_NE(hash_of("data"), hash_of("other"));

  r = run_coco({"eval", "--checkpoint", (dir_ / "run").string(), "--data", (dir_ / "other").string()}, dir_.path());
  EXPECT_EQ(r.exit_code, 2) << r.out;
  for (const std::string& needle : {hash_of("data"), hash_of("other"), (dir_ / "data").string(),
                                    (dir_ / "other" / "meta.json").string(), std::string("refusing to evaluate")})
    EXPECT_NE(r.err.find(needle), std::string::npos) << needle << " in: " << r.err;

  r = train(config(c), "run", {"--set", "data.dir=" + (dir_ / "other").string(), "--set", "train.steps=20"});
  EXPECT_EQ(r.exit_code, 2) << r.out;
  for (const std::string& needle : {hash_of("data"), hash_of("other"), std::string("refusing to resume")})
    EXPECT_NE(r.err.find(needle), std::string::npos) << needle << " in: " << r.err;

  // Another vocabulary of another size is named as such, not only as a change of the model's shape.
  r = run_coco({"prepare", "--vocab-size", "70", "--out", (dir_ / "bigger").string(), (dir_ / "corpus.txt").string()},
               dir_.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  c["model"]["vocab_size"] = "auto";
  r = train(config(c), "run", {"--set", "data.dir=" + (dir_ / "bigger").string(), "--set", "train.steps=20"});
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.err.find("refusing to resume training from"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(70 tokens)"), std::string::npos) << r.err;

  // eval --set: keys that change how the checkpoint is evaluated are accepted, its model's shape is not.
  r = run_coco(
      {"eval", "--checkpoint", (dir_ / "run").string(), "--set", "train.eval_batches=1", "--set", "data.seq_len=12"},
      dir_.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("in 1 batches"), std::string::npos) << r.out;
  r = run_coco({"eval", "--checkpoint", (dir_ / "run").string(), "--set", "model.discriminator.heads=4"}, dir_.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("model.discriminator.heads: 2 -> 4"), std::string::npos) << r.err;
  r = run_coco({"eval", "--checkpoint", (dir_ / "run").string(), "--set", "train.colour=1"}, dir_.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("train.colour"), std::string::npos) << r.err;
}

// A corpus with one record per line: --doc-boundary line, the documents of each split in the summary, and a split
// that would come out empty refused with advice.
TEST_F(CliTrain, PrepareLinePerRecordCorpus) {
  std::string verses;
  for (int i = 0; i < 120; ++i) verses += "and the dog sat on the mat by the river " + std::to_string(i) + "\n";
  testutil::write_text(dir_ / "verses.txt", verses);
  auto prepare = [&](const std::string& boundary) {
    return run_coco(
        {"prepare", "--vocab", (dir_ / "data" / "vocab.txt").string(), "--valid-fraction", "0.1", "--doc-boundary",
         boundary, "--out", (dir_ / ("verses-" + boundary)).string(), (dir_ / "verses.txt").string()},
        dir_.path());
  };
  RunResult r = prepare("blank");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--doc-boundary line"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "verses-blank" / "meta.json"));
  r = prepare("line");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json meta = nlohmann::json::parse(testutil::read_text(dir_ / "verses-line" / "meta.json"));
  const auto train_docs = meta["splits"]["train"]["documents"].get<uint64_t>();
  const auto valid_docs = meta["splits"]["valid"]["documents"].get<uint64_t>();
  EXPECT_EQ(train_docs + valid_docs, 120u);
  EXPECT_GT(valid_docs, 0u);
  EXPECT_NE(r.out.find("train: " + std::to_string(train_docs) + " documents"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("valid: " + std::to_string(valid_docs) + " documents"), std::string::npos) << r.out;
  r = prepare("paragraph");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--doc-boundary"), std::string::npos) << r.err;
}

// prepare's last progress line (plain output) agrees with its summary, also when the corpus spans several batches
// and some documents are dropped.
TEST_F(CliTrain, PrepareProgressEndsWithTheSummaryCounts) {
  {
    std::ofstream out(dir_ / "big.txt");
    for (int d = 0; d < 30000; ++d) {
      out << "document " << d << " tells of the cat and the dog by the old stone house near the river\n\n";
      if (d % 1000 == 0) out << "\x01\x02\n\n";  // a document without tokens: dropped
    }
  }
  ASSERT_GT(fs::file_size(dir_ / "big.txt"), size_t{2} << 20);  // several 1 MiB batches
  const RunResult r = run_coco({"prepare", "--vocab", (dir_ / "data" / "vocab.txt").string(), "--out",
                                (dir_ / "big").string(), (dir_ / "big.txt").string()},
                               dir_.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::string> progress;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with("tokenizing")) progress.push_back(line);
  ASSERT_GE(progress.size(), 2u) << r.out;  // the phase's first batch and its final state
  // Progress counts the input up to the documents done, not what was read ahead.
  EXPECT_EQ(progress.front().find("100.0%"), std::string::npos) << r.out;
  const std::string& last_progress = progress.back();
  const nlohmann::json meta = nlohmann::json::parse(testutil::read_text(dir_ / "big" / "meta.json"));
  const std::string documents = std::to_string(meta["totals"]["documents"].get<uint64_t>());
  const std::string tokens = std::to_string(meta["totals"]["tokens"].get<uint64_t>());
  EXPECT_EQ(meta["totals"]["dropped_documents"], 30);
  EXPECT_NE(last_progress.find("100.0%"), std::string::npos) << last_progress;
  EXPECT_NE(last_progress.find(" " + documents + " documents, " + tokens + " tokens"), std::string::npos)
      << last_progress << "\n"
      << r.out;
  EXPECT_NE(r.out.find("\n" + documents + " documents, " + tokens + " tokens"), std::string::npos) << r.out;
}

TEST_F(CliTrain, LucidrainsPresetTrains) {
  nlohmann::json c = testutil::tiny_lucidrains_config(dir_ / "data");
  c["train"]["steps"] = 10;
  const RunResult r = train(config(c), "run");
  ASSERT_EQ(r.exit_code, 0) << "signal " << r.signal << ": " << r.err;
  const auto records = testutil::metrics_without_timing(dir_ / "run");
  ASSERT_FALSE(records.empty());
  EXPECT_FALSE(records.front().contains("clm_loss"));
  EXPECT_FALSE(records.front().contains("clm_acc"));
  EXPECT_TRUE(records.front().contains("rtd_loss"));
}

}  // namespace
}  // namespace coco
