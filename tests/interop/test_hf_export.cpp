// `coco export` against Hugging Face transformers (torch + transformers through scripts/hf_interop.py): tiny
// models trained a few steps by `coco train` on English prose load in transformers with zero missing and
// unexpected keys, and their hidden states and head logits equal coco's own forward within 1e-5 (f32), in
// both export formats; the exported tokenizer gives coco prepare's ids; a sequence classifier built from
// the export fine-tunes. Skipped, with the reason, when torch or transformers is missing.
#include "tests/interop/hf_test_util.h"

namespace {

using namespace coco;
using namespace coco::hftest;
using interop::HfPart;

// Exports each (part, format) of `checkpoint` ("auto", "electra", "cocolm"), checks the class it becomes and
// compares coco's forward pass with transformers' (one Python process for all of them).
struct ExportCase {
  std::string part, format, architecture;
};

void expect_forward_parity(const TempDir& work, const fs::path& checkpoint, const std::vector<ExportCase>& cases) {
  std::vector<std::string> args = {"forward"};
  for (const auto& c : cases) {
    const fs::path out = work / ("hf-" + c.part + "-" + c.format);
    const testutil::RunResult r = testutil::run_coco(
        {"export", "--checkpoint", checkpoint.string(), "--out", out.string(), "--model", c.part, "--format", c.format},
        work.path());
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.out.find(c.architecture), std::string::npos) << r.out;
    const fs::path dump = work / ("dump-" + c.part + "-" + c.format + ".safetensors");
    write_forward_dump(checkpoint, c.part == "generator" ? HfPart::generator : HfPart::discriminator, dump);
    args.push_back(out.string());
    args.push_back(dump.string());
  }
  const CommandResult check = run_script(args);
  std::printf("%s", check.output.c_str());  // the measured differences, for the log
  EXPECT_EQ(check.status, 0) << check.output;
  for (const auto& c : cases)
    EXPECT_NE(check.output.find(c.architecture + ": hidden states"), std::string::npos) << check.output;
}

TEST(HfExport, PostNormModelMatchesCocoForwardInBothFormats) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-post-norm");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("electra"), data);
  expect_forward_parity(work, checkpoint,
                        {{"discriminator", "auto", "ElectraForPreTraining"},
                         {"generator", "electra", "ElectraForMaskedLM"},
                         {"discriminator", "cocolm", "COCOLMForPreTraining"},
                         {"generator", "cocolm", "COCOLMForMaskedLM"}});
}

// configs/demo.json (paper preset: post-norm with the relative-position bias, d 128, 4 + 2 layers) on the
// prose's 400-token vocabulary: the COCO-LM format, both parts.
TEST(HfExport, DemoModelExportsAsCocolmAndMatches) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-demo");
  const fs::path data = prepare_english(work, "data");
  nlohmann::json demo = nlohmann::json::parse(testutil::read_text(fs::path(COCO_SOURCE_DIR) / "configs/demo.json"));
  demo["model"]["vocab_size"] = 400;
  demo["train"] = {{"micro_batch", 4}, {"seed", 1}, {"log_every", 1}, {"eval_every", 0}, {"checkpoint_every", 0}};
  demo["optim"]["warmup_steps"] = 1;
  demo["runtime"]["device"] = "cpu";
  const fs::path checkpoint = train_run(work, "run", demo, data, 2);
  expect_forward_parity(
      work, checkpoint,
      {{"discriminator", "auto", "COCOLMForPreTraining"}, {"generator", "auto", "COCOLMForMaskedLM"}});
}

TEST(HfExport, PreNormProjectedModelExportsAsCocolmAndMatches) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-cocolm-prenorm");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("prenorm"), data);
  expect_forward_parity(
      work, checkpoint,
      {{"discriminator", "auto", "COCOLMForPreTraining"}, {"generator", "auto", "COCOLMForMaskedLM"}});
}

// The documents of the English prose as coco prepare reads them: blank-line separated, lines joined by '\n'.
std::vector<std::string> english_documents() {
  std::vector<std::string> documents;
  for (const auto& file : english_texts()) {
    std::istringstream in(testutil::read_text(file));
    std::string line, document;
    while (std::getline(in, line)) {
      if (line.find_first_not_of(" \t\r\f\v") == std::string::npos) {
        if (!document.empty()) documents.push_back(document);
        document.clear();
      } else {
        if (!document.empty()) document += '\n';
        document += line;
      }
    }
    if (!document.empty()) documents.push_back(document);
  }
  return documents;
}

// The ids transformers' tokenizer gives from the exported folder equal the ids coco prepare wrote for every
// document, for an uncased and a cased vocabulary.
TEST(HfExport, TokenizerIdsEqualCocoPrepareUncasedAndCased) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-tokenizer");
  const std::vector<std::string> documents = english_documents();
  std::vector<std::string> args = {"tokenizer"};
  for (bool cased : {false, true}) {
    const std::string tag = cased ? "cased" : "uncased";
    const fs::path data = prepare_english(work, "data-" + tag, cased);
    const fs::path checkpoint = train_run(work, "run-" + tag, tiny_config("electra"), data, 1);
    const fs::path out = work / ("hf-" + tag);
    const testutil::RunResult r =
        testutil::run_coco({"export", "--checkpoint", checkpoint.string(), "--out", out.string()}, work.path());
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

    nlohmann::json expected = {
        {"documents", nlohmann::json::array()}, {"ids", nlohmann::json::array()}, {"lowercase", !cased}};
    const data::TokenDataset dataset = data::TokenDataset::open(data::PreparedMeta::read(data), "train");
    ASSERT_EQ(dataset.documents(), documents.size());
    for (uint64_t d = 0; d < dataset.documents(); ++d) {
      const uint64_t begin = dataset.document_starts()[d], end = dataset.document_starts()[d + 1];
      std::vector<uint32_t> ids(end - begin);
      dataset.copy_tokens(begin, end - begin, ids.data());
      expected["documents"].push_back(documents[d]);
      expected["ids"].push_back(ids);
    }
    const fs::path expected_path = work / ("expected-" + tag + ".json");
    testutil::write_text(expected_path, expected.dump());
    args.push_back(out.string());
    args.push_back(expected_path.string());
  }
  const CommandResult check = run_script(args);
  std::printf("%s", check.output.c_str());
  EXPECT_EQ(check.status, 0) << check.output;
}

// A transformers sequence classifier built from the export trains with falling loss, in each format, and the
// token classifier loads and trains.
TEST(HfExport, SequenceClassifierFromTheExportFineTunes) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-finetune");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("electra"), data);
  std::vector<std::string> args = {"finetune"};
  for (const auto& text : english_texts()) args.push_back(text.string());
  for (const std::string format : {"electra", "cocolm"}) {
    const fs::path out = work / ("hf-" + format);
    const testutil::RunResult r = testutil::run_coco(
        {"export", "--checkpoint", checkpoint.string(), "--out", out.string(), "--format", format}, work.path());
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    args.push_back(out.string());
  }
  const CommandResult check = run_script(args);
  std::printf("%s", check.output.c_str());
  EXPECT_EQ(check.status, 0) << check.output;
  EXPECT_NE(check.output.find("ElectraForSequenceClassification: loss"), std::string::npos) << check.output;
  EXPECT_NE(check.output.find("COCOLMForSequenceClassification: loss"), std::string::npos) << check.output;
}

}  // namespace
