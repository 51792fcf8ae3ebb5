// Export and import without Python: the name mapping covers every parameter, export then import returns
// every tensor bit for bit, bad folders are refused with exit code 2 naming the tensor or key, and the
// tokenizer files travel from `coco prepare` through checkpoints into the export.
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <tuple>

#include "tests/interop/hf_test_util.h"

namespace {

using namespace coco;
using namespace coco::hftest;
using interop::HfFormat;
using interop::HfPart;

train::TrainConfig parse_tiny(const std::string& kind) {
  nlohmann::json config = tiny_config(kind);
  config["data"]["dir"] = "unused";
  return train::parse_train_config(config, "tiny-" + kind);
}

// Every registry tensor is either written (under one Hugging Face name, or three for q/k/v) or listed as not
// exported, with the shape the model has; no Hugging Face name repeats.
TEST(HfNames, LayoutsCoverEveryParameter) {
  nlohmann::json demo = nlohmann::json::parse(testutil::read_text(fs::path(COCO_SOURCE_DIR) / "configs/demo.json"));
  demo["runtime"]["device"] = "cpu";
  data::PreparedMeta demo_vocabulary;  // what scripts/main.sh prepares: 8192 tokens, specials first
  demo_vocabulary.vocab_size = 8192;
  demo_vocabulary.pad_id = 0;
  demo_vocabulary.unk_id = 1;
  demo_vocabulary.cls_id = 2;
  demo_vocabulary.sep_id = 3;
  demo_vocabulary.mask_id = 4;
  train::take_vocabulary_from_data(demo, demo_vocabulary);
  std::vector<train::TrainConfig> configs = {parse_tiny("electra"), parse_tiny("relpos"), parse_tiny("prenorm"),
                                             train::parse_train_config(demo, "configs/demo.json")};
  for (const auto& config : configs) {
    objective::CocoModel model(config.model, config.objective, 1, Device::cpu);
    for (HfFormat format : {HfFormat::cocolm, HfFormat::electra}) {
      std::map<std::string, std::vector<int64_t>> covered;
      std::set<std::string> hf_names;
      std::vector<std::string> skipped;
      bool any = false;
      for (HfPart part : {HfPart::discriminator, HfPart::generator}) {
        if (!interop::format_incompatibility(config.model, config.objective, part, format).empty()) continue;
        any = true;
        const interop::HfLayout layout = interop::hf_layout(config.model, config.objective, part, format);
        for (const auto& t : layout.tensors) {
          covered[t.coco] = t.shape;
          for (const auto& name : t.hf) EXPECT_TRUE(hf_names.insert(interop::part_name(part) + name).second) << name;
        }
        if (!layout.binary_head.empty()) {
          covered[layout.binary_head + ".weight"] = std::vector<int64_t>{1, config.model.discriminator.dim};
          covered[layout.binary_head + ".bias"] = std::vector<int64_t>{1};
        }
        for (const auto& s : layout.not_exported) skipped.push_back(s);
      }
      if (!any) continue;
      for (const auto& p : model.named_parameters()) {
        const auto found = covered.find(p.name);
        if (found == covered.end()) {
          const std::string stem = p.name.substr(0, p.name.find('.'));
          const bool listed =
              std::any_of(skipped.begin(), skipped.end(), [&](const std::string& s) { return s.rfind(stem, 0) == 0; });
          EXPECT_TRUE(format == HfFormat::electra && listed) << p.name << " is neither exported nor listed";
          continue;
        }
        EXPECT_EQ(found->second, p.tensor.shape().vec()) << p.name;
      }
      if (format == HfFormat::cocolm) {
        EXPECT_EQ(covered.size(), model.named_parameters().size());
      }
    }
  }
}

// name -> bytes of every tensor of a safetensors file.
std::map<std::string, std::vector<uint8_t>> tensor_bytes(const fs::path& path) {
  const auto reader = safetensors::Reader::open(path.string());
  std::map<std::string, std::vector<uint8_t>> out;
  for (const auto& t : reader.tensors()) {
    const auto bytes = reader.data(t);
    out[t.name] = std::vector<uint8_t>(bytes.begin(), bytes.end());
  }
  return out;
}

testutil::RunResult run(const TempDir& work, const std::vector<std::string>& args) {
  return testutil::run_coco(args, work.path());
}

// Export both parts in `format`, import them back with the same preset: every tensor the format holds comes
// back with the same bytes; the others (`fresh`) start fresh.
void expect_round_trip(const std::string& kind, HfFormat format, const std::set<std::string>& fresh) {
  TempDir work("hf-roundtrip-" + kind);
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config(kind), data, 2);
  const std::string f = interop::format_name(format);
  for (const std::string part : {"discriminator", "generator"}) {
    const testutil::RunResult r = run(work, {"export", "--checkpoint", checkpoint.string(), "--out",
                                             (work / part).string(), "--model", part, "--format", f});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  }
  const std::string preset = tiny_config(kind)["objective"]["preset"];
  const testutil::RunResult r = run(
      work, {"import", "--from", (work / "discriminator").string(), "--generator", (work / "generator").string(),
             "--out", (work / "imported").string(), "--data", data.string(), "--set", "objective.preset=" + preset});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto original = tensor_bytes(checkpoint / "model.safetensors");
  const auto imported = tensor_bytes(work / "imported" / "checkpoints" / "step-00000000" / "model.safetensors");
  EXPECT_EQ(original.size(), imported.size());
  size_t equal = 0;
  for (const auto& [name, bytes] : original) {
    const auto found = imported.find(name);
    ASSERT_NE(found, imported.end()) << name << " missing after the round trip (" << kind << ", " << f << ")";
    const std::string stem = name.substr(0, name.find('.'));
    if (fresh.count(stem)) continue;
    EXPECT_TRUE(found->second == bytes) << name << " changed in the round trip (" << kind << ", " << f << ")";
    equal += found->second == bytes;
  }
  EXPECT_GT(equal, original.size() / 2);
  // The imported model's architecture is the original's (the initialisation scheme aside: imports use
  // BERT's, which transformers' _init_weights implements).
  auto architecture = [](const fs::path& dir) {
    nlohmann::json j = model::model_config_to_json(interop::read_checkpoint_model(dir).model);
    j["generator"].erase("init");
    j["discriminator"].erase("init");
    return j;
  };
  EXPECT_EQ(architecture(checkpoint), architecture(work / "imported" / "checkpoints" / "step-00000000"));
}

TEST(HfRoundTrip, CocolmFormatReturnsEveryTensorBitForBit) {
  expect_round_trip("electra", HfFormat::cocolm, {});
  expect_round_trip("relpos", HfFormat::cocolm, {});
  expect_round_trip("prenorm", HfFormat::cocolm, {});
}

TEST(HfRoundTrip, ElectraFormatReturnsEveryTensorItHolds) {
  // ElectraForPreTraining has no corrective-LM or sequence-contrastive head: those start fresh.
  expect_round_trip("electra", HfFormat::electra, {"clm_head", "scl_head"});
}

// Rewrites `folder`/model.safetensors through `edit`, which may change or drop tensors (name -> shape, values).
void edit_weights(
    const fs::path& folder,
    const std::function<void(std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>&)>& edit) {
  const auto reader = safetensors::Reader::open((folder / "model.safetensors").string());
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> tensors;
  for (const auto& t : reader.tensors()) {
    std::vector<float> values(t.byte_size() / sizeof(float));
    std::memcpy(values.data(), reader.data(t).data(), t.byte_size());
    tensors[t.name] = {t.shape, values};
  }
  edit(tensors);
  std::vector<safetensors::TensorData> out;
  for (const auto& [name, t] : tensors)
    out.push_back({name, DType::f32, t.first,
                   std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(t.second.data()), t.second.size() * 4)});
  safetensors::write_file((folder / "model.safetensors").string(), out, {{"format", "pt"}});
}

TEST(HfImport, MismatchesExitWithCode2NamingTheTensorOrKey) {
  TempDir work("hf-import-errors");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("electra"), data, 1);
  const fs::path folder = work / "hf";
  auto fresh_export = [&](const std::string& format) {
    fs::remove_all(folder);
    const testutil::RunResult r =
        run(work, {"export", "--checkpoint", checkpoint.string(), "--out", folder.string(), "--format", format});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  };
  int attempt = 0;
  auto expect_refused = [&](const std::string& needle) {
    const fs::path out = work / ("imported-" + std::to_string(attempt++));
    const testutil::RunResult r =
        run(work, {"import", "--from", folder.string(), "--out", out.string(), "--data", data.string()});
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.err;
    EXPECT_FALSE(fs::exists(out / "checkpoints")) << "a refused import wrote a checkpoint";
  };

  // A tensor of another shape.
  fresh_export("electra");
  const std::string query = "electra.encoder.layer.1.attention.self.query.weight";
  edit_weights(folder, [&](auto& t) { t[query] = {{16, 32}, std::vector<float>(16 * 32, 0.5f)}; });
  expect_refused("'" + query + "' has shape [16, 32], expected [32, 32]");

  // A missing tensor.
  fresh_export("cocolm");
  const std::string bias = "cocolm.encoder.layer.0.output.dense.bias";
  edit_weights(folder, [&](auto& t) { t.erase(bias); });
  expect_refused("missing tensor '" + bias + "'");

  // An activation coco does not compute, a position scheme it does not have, an unknown architecture.
  for (const auto& [key, value, needle] : std::vector<std::tuple<std::string, nlohmann::json, std::string>>{
           {"hidden_act", "gelu_new", "key 'hidden_act'"},
           {"position_embedding_type", "relative_key", "key 'position_embedding_type'"},
           {"model_type", "roberta", "key 'model_type'"},
           {"intermediate_size", 48, "key 'intermediate_size'"}}) {
    fresh_export("electra");
    nlohmann::json config = nlohmann::json::parse(testutil::read_text(folder / "config.json"));
    config[key] = value;
    testutil::write_text(folder / "config.json", config.dump(2));
    expect_refused(needle);
  }

  // A vocabulary other than the data's.
  fresh_export("electra");
  std::string vocab = testutil::read_text(folder / "vocab.txt");
  vocab.replace(vocab.rfind('\n', vocab.size() - 2) + 1, std::string::npos, "zzzz\n");
  testutil::write_text(folder / "vocab.txt", vocab);
  fs::remove(folder / "tokenizer.json");
  expect_refused("prepared with another vocabulary");
}

TEST(HfExport, ElectraFormatIsRefusedForArchitecturesItCannotHold) {
  TempDir work("hf-export-refused");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("relpos"), data, 1);
  const testutil::RunResult r = run(
      work, {"export", "--checkpoint", checkpoint.string(), "--out", (work / "hf").string(), "--format", "electra"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("relative_position is set"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--format cocolm"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(work / "hf"));

  // An existing folder that is not an export is never replaced.
  fs::create_directories(work / "precious");
  testutil::write_text(work / "precious" / "notes.txt", "keep me");
  const testutil::RunResult again =
      run(work, {"export", "--checkpoint", checkpoint.string(), "--out", (work / "precious").string()});
  EXPECT_EQ(again.exit_code, 2) << again.out << again.err;
  EXPECT_EQ(testutil::read_text(work / "precious" / "notes.txt"), "keep me");
}

// coco prepare writes the tokenizer files with its casing; checkpoints carry copies; the export takes them from
// the checkpoint even after the data folder is gone.
TEST(HfTokenizerFiles, TravelFromPrepareThroughCheckpointsToTheExport) {
  TempDir work("hf-tokenizer-files");
  const fs::path data = prepare_english(work, "data", /*cased=*/true);
  const nlohmann::json config = nlohmann::json::parse(testutil::read_text(data / "tokenizer_config.json"));
  EXPECT_EQ(config["do_lower_case"], false);
  EXPECT_TRUE(config["strip_accents"].is_null());  // null: as lowercase (transformers' convention)
  EXPECT_EQ(config["tokenizer_class"], "BertTokenizer");
  const nlohmann::json tokenizer = nlohmann::json::parse(testutil::read_text(data / "tokenizer.json"));
  EXPECT_EQ(tokenizer["normalizer"]["lowercase"], false);
  EXPECT_EQ(tokenizer["model"]["vocab"].size(), 400u);
  const nlohmann::json meta = nlohmann::json::parse(testutil::read_text(data / "meta.json"));
  for (const auto& name : interop::tokenizer_file_names())
    EXPECT_EQ(meta["tokenizer_files"][name], fs::file_size(data / name)) << name;
  // The same vocabulary read back through tokenizer.json tokenizes like vocab.txt with the recorded casing.
  const text::WordPieceTokenizer from_json = text::WordPieceTokenizer::from_tokenizer_json(data / "tokenizer.json");
  const text::WordPieceTokenizer from_txt =
      text::WordPieceTokenizer::from_vocab_txt(data / "vocab.txt", text::NormalizerOptions::cased());
  for (const auto& s : probe_sentences()) EXPECT_EQ(from_json.encode(s, true), from_txt.encode(s, true)) << s;

  const fs::path checkpoint = train_run(work, "run", tiny_config("electra"), data, 1);
  for (const auto& name : interop::tokenizer_file_names())
    EXPECT_EQ(testutil::read_text(checkpoint / name), testutil::read_text(data / name)) << name;
  fs::remove_all(data);
  const testutil::RunResult r =
      run(work, {"export", "--checkpoint", (work / "run").string(), "--out", (work / "hf").string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(testutil::read_text(work / "hf" / "vocab.txt"), testutil::read_text(checkpoint / "vocab.txt"));
  const nlohmann::json exported = nlohmann::json::parse(testutil::read_text(work / "hf" / "tokenizer_config.json"));
  EXPECT_EQ(exported["do_lower_case"], false);
  EXPECT_EQ(exported["model_max_length"], 64);
}

// A data folder prepared before prepare wrote the tokenizer files: checkpoints carry files generated from
// vocab.txt + meta.json (equal to what prepare writes now), and re-running prepare adds them.
TEST(HfTokenizerFiles, OldDataFoldersGetGeneratedFiles) {
  TempDir work("hf-tokenizer-old");
  const fs::path data = prepare_english(work, "data");
  std::map<std::string, std::string> current;
  for (const auto& name : interop::tokenizer_file_names()) current[name] = testutil::read_text(data / name);
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    fs::remove(data / name);
  nlohmann::json meta = nlohmann::json::parse(testutil::read_text(data / "meta.json"));
  meta.erase("tokenizer_files");
  testutil::write_text(data / "meta.json", meta.dump(2));

  const fs::path checkpoint = train_run(work, "run", tiny_config("electra"), data, 1);
  for (const auto& [name, contents] : current) EXPECT_EQ(testutil::read_text(checkpoint / name), contents) << name;

  const text::PrepareResult again = [&] {
    text::PrepareOptions options;
    options.inputs = english_texts();
    options.output_dir = data;
    options.vocab_size = 400;
    options.lowercase = true;
    options.threads = 1;
    return text::prepare(options);
  }();
  EXPECT_FALSE(again.up_to_date);
  for (const auto& [name, contents] : current) EXPECT_EQ(testutil::read_text(data / name), contents) << name;
}

TEST(HfExport, CheckpointWithoutTokenizerFilesNeedsTheTokenizerOption) {
  TempDir work("hf-export-no-tokenizer");
  const fs::path data = prepare_english(work, "data");
  const fs::path checkpoint = train_run(work, "run", tiny_config("electra"), data, 1);
  for (const auto& name : interop::tokenizer_file_names()) fs::remove(checkpoint / name);
  fs::remove(checkpoint / "manifest.json");  // checkpoints older than tokenizer files are older than manifests
  const testutil::RunResult r =
      run(work, {"export", "--checkpoint", checkpoint.string(), "--out", (work / "hf").string()});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("--tokenizer DIR"), std::string::npos) << r.err;
  const testutil::RunResult ok = run(work, {"export", "--checkpoint", checkpoint.string(), "--out",
                                            (work / "hf").string(), "--tokenizer", data.string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.out << ok.err;
  EXPECT_TRUE(fs::exists(work / "hf" / "tokenizer.json"));
}

}  // namespace
