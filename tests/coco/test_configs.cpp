// The shipped configs leave the vocabulary to the data, load, validate, build their model, and (at reduced sequence
// length and batch, where the full size would take too long on the CPU) run one training step; the start-up report
// counts the parameters the research notes compute for the seed README configuration.
#include <gtest/gtest.h>

#include "coco/model_report.h"
#include "coco/objective.h"
#include "coco/train_config.h"
#include "engine/config.h"
#include "engine/tape.h"

namespace coco {
namespace {

struct Loaded {
  model::ModelConfig model;
  objective::ObjectiveConfig objective;
};

// The prepared data of a vocabulary: size and the ids of [PAD] [UNK] [CLS] [SEP] [MASK].
data::PreparedMeta vocabulary(uint64_t size, int64_t pad, int64_t unk, int64_t cls, int64_t sep, int64_t mask) {
  data::PreparedMeta meta;
  meta.vocab_size = size;
  meta.pad_id = pad;
  meta.unk_id = unk;
  meta.cls_id = cls;
  meta.sep_id = sep;
  meta.mask_id = mask;
  return meta;
}

// bert-base-uncased's vocabulary, which the paper configs are sized for.
const data::PreparedMeta kBertVocabulary = vocabulary(30522, 0, 100, 101, 102, 103);
// The seed README's example: num_tokens 20000, pad 0, cls 1, mask 2 (its parameter counts are in the notes).
const data::PreparedMeta kSeedVocabulary = vocabulary(20000, 0, 3, 1, 4, 2);
// What `scripts/main.sh` prepares for configs/demo.json: a trained 8192-token vocabulary, specials first.
const data::PreparedMeta kDemoVocabulary = vocabulary(8192, 0, 1, 2, 3, 4);

const data::PreparedMeta& vocabulary_for(const std::string& name) {
  if (name == "seed-readme.json") return kSeedVocabulary;
  if (name == "demo.json") return kDemoVocabulary;
  return kBertVocabulary;
}

nlohmann::json shipped(const std::string& name) {
  return load_json_file(std::string(COCO_SOURCE_DIR) + "/configs/" + name);
}

Loaded load(const std::string& name, const data::PreparedMeta& data) {
  const std::string path = std::string(COCO_SOURCE_DIR) + "/configs/" + name;
  nlohmann::json root = shipped(name);
  train::take_vocabulary_from_data(root, data);
  ConfigObject top(root, path, "");
  Loaded l;
  l.model = model::parse_model_config(top.get_object("model"));
  l.objective = objective::parse_objective_config(top.get_object("objective"));
  model::validate_model_config(l.model, path);
  objective::validate_objective_config(l.objective, l.model, 2, path);
  return l;
}
Loaded load(const std::string& name) { return load(name, vocabulary_for(name)); }

const char* const kShipped[] = {"seed-readme.json", "paper-base.json", "paper-small.json", "demo.json"};

TEST(Configs, AllShippedConfigsParseAndValidate) {
  for (const char* name : kShipped) EXPECT_NO_THROW(load(name)) << name;
}

TEST(Configs, ShippedConfigsLeaveTheVocabularyToTheData) {
  const std::vector<std::string> all = {"model.vocab_size", "objective.pad_id", "objective.unk_id",
                                        "objective.cls_id", "objective.sep_id", "objective.mask_id"};
  for (const char* name : kShipped) {
    EXPECT_EQ(train::keys_left_to_data(shipped(name)), all) << name;
    // Whatever the data's vocabulary, the config takes its size and ids: the presets' spec defaults (lucidrains
    // cls 1 / mask 2, paper 101 / 103) do not override the data.
    for (const data::PreparedMeta* data : {&kBertVocabulary, &kSeedVocabulary, &kDemoVocabulary}) {
      const Loaded l = load(name, *data);
      EXPECT_EQ(l.model.vocab_size, static_cast<int64_t>(data->vocab_size)) << name;
      EXPECT_EQ(l.objective.pad_id, data->pad_id) << name;
      EXPECT_EQ(l.objective.unk_id, data->unk_id) << name;
      EXPECT_EQ(l.objective.cls_id, data->cls_id) << name;
      EXPECT_EQ(l.objective.sep_id, data->sep_id) << name;
      EXPECT_EQ(l.objective.mask_id, data->mask_id) << name;
    }
  }
}

TEST(Configs, ExplicitVocabularyValuesStayAndAutoIsTakenFromTheData) {
  nlohmann::json root = shipped("demo.json");
  root["model"]["vocab_size"] = 8192;
  root["objective"]["mask_id"] = "auto";
  root["objective"]["sep_id"] = -1;  // explicitly unused
  root["objective"]["cls_id"] = 7;   // explicit: kept here, compared with the data by check_data_against_config
  EXPECT_EQ(train::keys_left_to_data(root),
            (std::vector<std::string>{"objective.pad_id", "objective.unk_id", "objective.mask_id"}));
  train::take_vocabulary_from_data(root, kBertVocabulary);
  EXPECT_EQ(root["model"]["vocab_size"], 8192);
  EXPECT_EQ(root["objective"]["mask_id"], 103);
  EXPECT_EQ(root["objective"]["pad_id"], 0);
  EXPECT_EQ(root["objective"]["unk_id"], 100);
  EXPECT_EQ(root["objective"]["sep_id"], -1);
  EXPECT_EQ(root["objective"]["cls_id"], 7);
  EXPECT_TRUE(train::keys_left_to_data(root).empty());
}

TEST(Configs, SeedReadmeParameterCountsMatchTheResearchNotes) {
  Loaded l = load("seed-readme.json");
  objective::CocoModel model(l.model, l.objective, 1, Device::cpu);
  const auto report = objective::describe_model(model, l.model, l.objective, 2, 1024, 4);
  // coco-lm-research.md section 2.3: shared embeddings 2,691,072; discriminator 171,751,968 of which
  // to_logits (unused, not built here) 20,500,000; generator 5,699,872; COCO extras 1,025 + 1.
  EXPECT_EQ(report.discriminator_parameters, 2691072 + 171751968 - 20500000);
  EXPECT_EQ(report.generator_parameters, 5699872);
  EXPECT_EQ(report.head_parameters, 1025 + 1);
  EXPECT_GT(report.activation_bytes, 0.0);
  EXPECT_NE(report.text().find("parameters"), std::string::npos);
}

TEST(Configs, EachConfigRunsOneStepAtReducedSize) {
  for (const char* name : kShipped) {
    Loaded l = load(name);
    // Full widths, fewer layers and a short sequence: one step in seconds on the CPU.
    l.model.generator.depth = 1;
    l.model.discriminator.depth = std::min<int64_t>(l.model.discriminator.depth, 1);
    objective::CocoModel model(l.model, l.objective, 1, Device::cpu);
    std::vector<int32_t> ids(2 * 16);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(200 + i * 37 % 1000);
    if (l.objective.preset == objective::Preset::paper) ids[0] = ids[16] = l.objective.cls_id;
    Tape tape;
    objective::Outputs out;
    {
      Tape::Recording recording(tape);
      out = model.forward(Tensor::from_vector(ids, Shape{2, 16}), 0, true);
    }
    tape.backward(out.loss);
    EXPECT_TRUE(std::isfinite(out.loss.item())) << name;
  }
}

TEST(Configs, ImpossibleCombinationsAreRejectedWithTheKey) {
  auto expect_error = [](const std::string& json, const std::string& fragment) {
    const nlohmann::json root = nlohmann::json::parse(json);
    try {
      ConfigObject top(root, "cfg.json", "");
      auto m = model::parse_model_config(top.get_object("model"));
      auto o = objective::parse_objective_config(top.get_object("objective"));
      model::validate_model_config(m, "cfg.json");
      objective::validate_objective_config(o, m, 1, "cfg.json");
      FAIL() << "expected ConfigError containing " << fragment;
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  const std::string enc =
      R"("generator": {"dim": 8, "depth": 1, "heads": 2}, "discriminator": {"dim": 8, "depth": 1, "heads": 2})";
  expect_error(R"({"model": {"vocab_size": 10, "max_positions": 8, "generator": {"dim": 10, "depth": 1, "heads": 3},
                   "discriminator": {"dim": 8, "depth": 1, "heads": 2}}, "objective": {}})",
               "model.generator.heads");
  expect_error(R"({"model": {"vocab_size": 10, "max_positions": 8, )" + enc + R"(}, "objective": {"cl_weight": 1}})",
               "micro-batch");
  expect_error(R"({"model": {"vocab_size": 10, "max_positions": 8, )" + enc + R"(}, "objective": {"mask_prob": 1.5}})",
               "objective.mask_prob");
  expect_error(R"({"model": {"vocab_size": 10, "max_positions": 8, )" + enc +
                   R"(}, "objective": {"mask_id": 12, "cl_weight": 0}})",
               "objective.mask_id");
  expect_error(R"({"model": {"vocab_size": 10, "max_positions": 8, )" + enc + R"(, "colour": 1}, "objective": {}})",
               "unknown key 'model.colour'");
  expect_error(R"({"model": {"vocab_size": "ten", "max_positions": 8, )" + enc + R"(}, "objective": {}})",
               "model.vocab_size");
  expect_error(
      R"({"model": {"vocab_size": 10, "max_positions": 8, "generator": {"dim": 8, "depth": 1, "heads": 2, "embed_dim": 4},
                   "discriminator": {"dim": 8, "depth": 1, "heads": 2}}, "objective": {"cl_weight": 0}})",
      "embedding widths differ");
  expect_error(R"({"model": {"vocab_size": 10, "max_positions": 8, )" + enc +
                   R"(}, "objective": {"preset": "paper", "clm_form": "mixture"}})",
               "objective.clm_form");
  expect_error(R"({"model": {"vocab_size": 10, "max_positions": 8, )" + enc +
                   R"(}, "objective": {"clm_form": "paper", "cl_weight": 0}})",
               "objective.clm_form");
}

TEST(Configs, ClmFormSelectsTheCorrectiveLoss) {
  for (const char* form : {"code", "paper"}) {
    const nlohmann::json root = {{"preset", "paper"}, {"clm_form", form}};
    const objective::ObjectiveConfig c = objective::parse_objective_config(ConfigObject(root, "cfg.json", "objective"));
    EXPECT_EQ(c.clm_form, form);
    EXPECT_EQ(objective::objective_config_to_json(c)["clm_form"], form);
  }
  const objective::ObjectiveConfig defaults =
      objective::parse_objective_config(ConfigObject(nlohmann::json{{"preset", "paper"}}, "cfg.json", "objective"));
  EXPECT_EQ(defaults.clm_form, "code");  // the released loss code is the spec's default
}

}  // namespace
}  // namespace coco
