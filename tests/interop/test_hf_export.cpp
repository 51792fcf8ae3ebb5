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

// Exports `part` of `checkpoint` with `format` ("auto", "electra", "cocolm") and checks the forward pass.
void expect_forward_parity(const TempDir& work, const fs::path& checkpoint, const std::string& part,
                           const std::string& format, const std::string& expect_architecture) {
  const fs::path out = work / ("hf-" + part + "-" + format);
  const testutil::RunResult r = testutil::run_coco(
      {"export", "--checkpoint", checkpoint.string(), "--out", out.string(), "--model", part, "--format", format},
      work.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find(expect_architecture), std::string::npos) << r.out;
  const fs::path dump = work / ("dump-" + part + "-" + format + ".safetensors");
  write_forward_dump(checkpoint, part == "generator" ? HfPart::generator : HfPart::discriminator, dump);
  const CommandResult check = run_script({"forward", out.string(), dump.string()});
  std::printf("%s", check.output.c_str());  // the measured differences, for the log
  EXPECT_EQ(check.status, 0) << check.output;
  EXPECT_NE(check.output.find(expect_architecture + ": hidden states"), std::string::npos) << check.output;
}

TEST(HfExport, ElectraFormatMatchesCocoForward) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-electra");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("electra"), data);
  expect_forward_parity(work, checkpoint, "discriminator", "auto", "ElectraForPreTraining");
  expect_forward_parity(work, checkpoint, "generator", "electra", "ElectraForMaskedLM");
}

TEST(HfExport, CocolmFormatMatchesCocoForwardOfThePostNormModel) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-cocolm-post");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("electra"), data);
  expect_forward_parity(work, checkpoint, "discriminator", "cocolm", "COCOLMForPreTraining");
  expect_forward_parity(work, checkpoint, "generator", "cocolm", "COCOLMForMaskedLM");
}

TEST(HfExport, RelativePositionModelExportsAsCocolmAndMatches) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-cocolm-relpos");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("relpos"), data);
  expect_forward_parity(work, checkpoint, "discriminator", "auto", "COCOLMForPreTraining");
  expect_forward_parity(work, checkpoint, "generator", "auto", "COCOLMForMaskedLM");
}

TEST(HfExport, PreNormProjectedModelExportsAsCocolmAndMatches) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-cocolm-prenorm");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("prenorm"), data);
  expect_forward_parity(work, checkpoint, "discriminator", "auto", "COCOLMForPreTraining");
  expect_forward_parity(work, checkpoint, "generator", "auto", "COCOLMForMaskedLM");
}

// The ids transformers' tokenizer gives from the exported folder equal the ids coco prepare wrote for every
// document, for an uncased and a cased vocabulary.
void expect_tokenizer_ids(bool cased) {
  TempDir work(cased ? "hf-tok-cased" : "hf-tok-uncased");
  const fs::path data = prepare_english(work, "data", cased);
  nlohmann::json config = tiny_config("electra");
  const fs::path checkpoint = train_run(work, "run", config, data, 1);
  const fs::path out = work / "hf";
  const testutil::RunResult r =
      testutil::run_coco({"export", "--checkpoint", checkpoint.string(), "--out", out.string()}, work.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;

  // The documents as coco prepare reads them (blank-line separated, lines joined by '\n') and their ids.
  nlohmann::json expected = {{"documents", nlohmann::json::array()}, {"ids", nlohmann::json::array()},
                             {"lowercase", !cased}};
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
  const data::PreparedMeta meta = data::PreparedMeta::read(data);
  const data::TokenDataset dataset = data::TokenDataset::open(meta, "train");
  ASSERT_EQ(dataset.documents(), documents.size());
  for (uint64_t d = 0; d < dataset.documents(); ++d) {
    const uint64_t begin = dataset.document_starts()[d], end = dataset.document_starts()[d + 1];
    std::vector<uint32_t> ids(end - begin);
    dataset.copy_tokens(begin, end - begin, ids.data());
    expected["documents"].push_back(documents[d]);
    expected["ids"].push_back(ids);
  }
  const fs::path expected_path = work / "expected.json";
  testutil::write_text(expected_path, expected.dump());
  const CommandResult check = run_script({"tokenizer", out.string(), expected_path.string()});
  EXPECT_EQ(check.status, 0) << check.output;
}

TEST(HfExport, TokenizerIdsEqualCocoPrepareUncased) {
  REQUIRE_HF_PYTHON();
  expect_tokenizer_ids(false);
}

TEST(HfExport, TokenizerIdsEqualCocoPrepareCased) {
  REQUIRE_HF_PYTHON();
  expect_tokenizer_ids(true);
}

// A transformers sequence classifier built from the export trains with falling loss (each format), and the
// token classifier loads and trains.
TEST(HfExport, SequenceClassifierFromTheExportFineTunes) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-finetune");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("relpos"), data);
  const fs::path out = work / "hf";
  const testutil::RunResult r =
      testutil::run_coco({"export", "--checkpoint", checkpoint.string(), "--out", out.string()}, work.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::vector<std::string> args = {"finetune", out.string()};
  for (const auto& text : english_texts()) args.push_back(text.string());
  const CommandResult check = run_script(args);
  EXPECT_EQ(check.status, 0) << check.output;
  EXPECT_NE(check.output.find("COCOLMForSequenceClassification: loss"), std::string::npos) << check.output;
}

TEST(HfExport, ElectraSequenceClassifierFromTheExportFineTunes) {
  REQUIRE_HF_PYTHON();
  TempDir work("hf-finetune-electra");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("electra"), data);
  const fs::path out = work / "hf";
  const testutil::RunResult r =
      testutil::run_coco({"export", "--checkpoint", checkpoint.string(), "--out", out.string()}, work.path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  std::vector<std::string> args = {"finetune", out.string()};
  for (const auto& text : english_texts()) args.push_back(text.string());
  const CommandResult check = run_script(args);
  EXPECT_EQ(check.status, 0) << check.output;
  EXPECT_NE(check.output.find("ElectraForSequenceClassification: loss"), std::string::npos) << check.output;
}

}  // namespace
