// `coco import` of checkpoints that transformers makes at test time (tiny, random: BertForMaskedLM, and an
// ELECTRA discriminator + generator pair): the imported encoders compute what transformers computes (hidden
// states and masked-LM logits within 1e-5), and `coco train --resume` continues from the step-0 checkpoint.
// Skipped, with the reason, when torch or transformers is missing.
#include "tests/interop/hf_test_util.h"

namespace {

using namespace coco;
using namespace coco::hftest;
using interop::HfPart;

// Imports `from` (and `generator`) into `run` on `data` with a short, CPU-sized training setup.
testutil::RunResult import_run(const TempDir& work, const fs::path& from, const fs::path& run, const fs::path& data,
                               const std::string& generator = "") {
  std::vector<std::string> args = {"import", "--from", from.string(), "--out", run.string(), "--data", data.string()};
  if (!generator.empty()) {
    args.push_back("--generator");
    args.push_back(generator);
  }
  for (const char* set : {"train.steps=2", "optim.warmup_steps=1", "train.micro_batch=4", "data.seq_len=32",
                          "train.log_every=1", "runtime.device=cpu"}) {
    args.push_back("--set");
    args.push_back(set);
  }
  return testutil::run_coco(args, work.path());
}

// The imported discriminator and generator against the transformers models they came from.
void expect_same_functions(const TempDir& work, const fs::path& checkpoint, const fs::path& discriminator,
                           const fs::path& generator) {
  std::vector<std::string> args = {"forward"};
  for (HfPart part : {HfPart::discriminator, HfPart::generator}) {
    const fs::path dump = work / (std::string("dump-") + interop::part_name(part) + ".safetensors");
    write_forward_dump(checkpoint, part, dump, /*replaced_logits=*/false);
    args.push_back((part == HfPart::discriminator ? discriminator : generator).string());
    args.push_back(dump.string());
  }
  const CommandResult check = run_script(args);
  std::printf("%s", check.output.c_str());
  EXPECT_EQ(check.status, 0) << check.output;
}

void expect_training_resumes(const TempDir& work, const fs::path& run) {
  const testutil::RunResult r = testutil::run_coco(
      {"train", "--config", (run / "config.json").string(), "--out", run.string(), "--resume"}, work.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("resuming from"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(step 0)"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("warning"), std::string::npos) << r.out;
  EXPECT_TRUE(fs::exists(run / "checkpoints" / "step-00000002" / "model.safetensors"));
  EXPECT_EQ(testutil::metrics_without_timing(run).size(), 2u);
}

TEST(HfImport, BertImportsComputesTheSameAndContinuesTraining) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-import-bert");
  const fs::path data = prepare_english(work, "data");
  const fs::path bert = work / "bert";
  const CommandResult make = run_script({"make-bert", bert.string(), data.string()});
  ASSERT_EQ(make.status, 0) << make.output;

  // The BERT as the main model and, head included, as the generator.
  const fs::path run = work / "run";
  const testutil::RunResult r = import_run(work, bert, run, data, bert.string());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("token_type_embeddings row 0 added into the position embeddings"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("objective preset paper"), std::string::npos) << r.out;
  const fs::path step0 = run / "checkpoints" / "step-00000000";
  for (const auto& name : interop::tokenizer_file_names()) EXPECT_TRUE(fs::exists(step0 / name)) << name;
  // The checkpoint records the imported vocabulary, which is the data's (coco/vocab_identity.h).
  const nlohmann::json state = nlohmann::json::parse(testutil::read_text(step0 / "trainer_state.json"));
  const nlohmann::json meta = nlohmann::json::parse(testutil::read_text(data / "meta.json"));
  EXPECT_EQ(state["vocab"]["hash"], meta["vocab_hash"]);
  EXPECT_EQ(state["vocab"]["size"], meta["vocab_size"]);
  expect_same_functions(work, step0, bert, bert);
  expect_training_resumes(work, run);
}

TEST(HfImport, ElectraPairImportsTiesEmbeddingsAndContinuesTraining) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-import-electra");
  const fs::path data = prepare_english(work, "data");
  const fs::path electra = work / "electra";
  const CommandResult make = run_script({"make-electra", electra.string(), data.string()});
  ASSERT_EQ(make.status, 0) << make.output;

  const fs::path run = work / "run";
  const testutil::RunResult r =
      import_run(work, electra / "discriminator", run, data, (electra / "generator").string());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // ELECTRA shares the embeddings between its two models; a transformers-made two-layer head does not map.
  EXPECT_NE(r.out.find("tied / tied / tied"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("the binary head starts fresh"), std::string::npos) << r.out;
  const nlohmann::json config = nlohmann::json::parse(testutil::read_text(run / "config.json"));
  EXPECT_EQ(config["model"]["generator"]["depth"], 1);
  EXPECT_EQ(config["model"]["discriminator"]["depth"], 2);
  const fs::path step0 = run / "checkpoints" / "step-00000000";
  expect_same_functions(work, step0, electra / "discriminator", electra / "generator");
  expect_training_resumes(work, run);
}

}  // namespace
