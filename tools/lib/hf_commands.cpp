// `coco export` and `coco import`: thin wrappers around coco/interop (hf_export.h, hf_import.h).
#include <cstdio>
#include <filesystem>

#include "coco/data_loader.h"
#include "coco/interop/hf_export.h"
#include "coco/interop/hf_import.h"
#include "coco/train_config.h"
#include "coco/vocab_identity.h"
#include "engine/config.h"
#include "engine/ops/optim.h"
#include "tools/lib/args.h"
#include "tools/lib/checkpoint.h"
#include "tools/lib/commands.h"

namespace coco::tools {

namespace fs = std::filesystem;

int command_export(const std::vector<std::string>& args) {
  ArgParser p("coco export",
              "Writes a checkpoint as a Hugging Face transformers folder: config.json, model.safetensors and the\n"
              "tokenizer files (vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json), which\n"
              "AutoTokenizer.from_pretrained and AutoModel.from_pretrained load. Format electra: transformers'\n"
              "ElectraForPreTraining (discriminator) / ElectraForMaskedLM (generator), for post-norm models with\n"
              "absolute positions. Format cocolm: the COCO-LM architecture, with configuration_cocolm.py and\n"
              "modeling_cocolm.py in the folder (from_pretrained(..., trust_remote_code=True)), for any model;\n"
              "it has ...ForSequenceClassification and ...ForTokenClassification heads for fine-tuning.");
  p.option("--checkpoint", "DIR", "a checkpoint directory (checkpoints/step-NNNNNNNN) or a run directory (its latest)",
           true);
  p.option("--out", "DIR", "the folder to write (replaced if it holds an earlier export)", true);
  p.option("--model", "PART", "discriminator (the main model) or generator", false, false, "discriminator");
  p.option("--format", "F", "auto (electra when the architecture allows it, else cocolm), electra or cocolm", false,
           false, "auto");
  p.option("--tokenizer", "DIR",
           "take the tokenizer files from DIR (the prepared data folder) when the checkpoint carries none");
  if (!p.parse(args)) return 0;
  interop::ExportOptions options;
  options.checkpoint = resolve_checkpoint_dir(p.get("--checkpoint"));
  options.out = p.get("--out");
  const std::string part = p.get("--model");
  if (part != "discriminator" && part != "generator")
    throw UsageError("coco export: option --model expects 'discriminator' or 'generator', got '" + part + "'");
  options.part = part == "generator" ? interop::HfPart::generator : interop::HfPart::discriminator;
  const std::string format = p.get("--format");
  if (format == "electra")
    options.format = interop::HfFormat::electra;
  else if (format == "cocolm")
    options.format = interop::HfFormat::cocolm;
  else if (format != "auto")
    throw UsageError("coco export: option --format expects auto, electra or cocolm, got '" + format + "'");
  if (p.has("--tokenizer")) options.tokenizer_dir = fs::path(p.get("--tokenizer"));

  const interop::ExportReport report = interop::export_hugging_face(options);
  for (const auto& note : report.notes) std::printf("%s\n", note.c_str());
  std::printf("exported %s (%s) as %s: %zu tensors to %s\n", options.checkpoint.c_str(), part.c_str(),
              report.layout.architecture.c_str(), report.tensors, options.out.c_str());
  std::printf("load with: AutoModel.from_pretrained(\"%s\"%s)\n", options.out.c_str(),
              report.layout.format == interop::HfFormat::cocolm ? ", trust_remote_code=True" : "");
  return 0;
}

int command_import(const std::vector<std::string>& args) {
  ArgParser p(
      "coco import",
      "Starts COCO-LM pretraining from a Hugging Face BERT, ELECTRA or COCO-LM folder (config.json,\n"
      "model.safetensors, vocab.txt or tokenizer.json): writes OUT/checkpoints/step-00000000 and\n"
      "OUT/config.json, which `coco train --config OUT/config.json --out OUT --resume` continues. The folder's\n"
      "encoder becomes the discriminator; the generator comes from --generator or starts fresh. A tensor\n"
      "of the wrong shape or an architecture coco does not compute is refused (exit 2) with its name.");
  p.option("--from", "DIR", "the Hugging Face folder of the main model (BERT / ELECTRA discriminator / COCO-LM)", true);
  p.option("--out", "DIR", "the run directory to create", true);
  p.option("--data", "DIR", "prepared data (coco prepare --vocab FOLDER/vocab.txt) to train on (sets data.dir)");
  p.option("--generator", "DIR", "a Hugging Face folder for the generator (ELECTRA generator, BERT, COCO-LM)");
  p.option("--generator-depth", "N", "layers of a fresh generator (default: a third of the main model's)");
  p.option("--config", "FILE", "a run configuration for everything but the model (objective, data, optim, train, ...)");
  p.option("--set", "KEY=VALUE", "override a config key by its dotted path, as in coco train", false, true);
  if (!p.parse(args)) return 0;
  const fs::path run_dir = p.get("--out");
  if (latest_checkpoint(run_dir))
    throw UsageError("coco import: " + run_dir.string() + " already has checkpoints; expected a new run directory");

  nlohmann::json base = p.has("--config") ? load_json_file(p.get("--config")) : nlohmann::json::object();
  if (!base.is_object()) throw ConfigError(p.get("--config") + ": the top level: expected a JSON object");
  if (p.has("--data")) base["data"]["dir"] = fs::absolute(p.get("--data")).lexically_normal().string();
  // Overrides apply to the base first (an objective.preset decides how the heads are imported) and again to
  // the composed configuration.
  for (const auto& assignment : p.all("--set")) apply_override(base, assignment);
  interop::ImportOptions options;
  options.from = p.get("--from");
  if (p.has("--generator")) options.generator = fs::path(p.get("--generator"));
  if (p.has("--generator-depth")) options.generator_depth = p.get_int("--generator-depth", 1, 64);
  if (base.contains("objective") && base["objective"].contains("preset"))
    options.preset = base["objective"]["preset"] == "paper" ? objective::Preset::paper : objective::Preset::lucidrains;
  const interop::ImportResult result = interop::import_hugging_face(options);

  nlohmann::json config_json = interop::imported_run_config(result, base);
  for (const auto& assignment : p.all("--set")) apply_override(config_json, assignment);
  const std::string source = "the imported configuration";
  if (!config_json.contains("data") || !config_json["data"].contains("dir"))
    throw UsageError("coco import: no data directory; pass --data DIR (a coco prepare output with this vocabulary)");
  config_json["data"]["dir"] = fs::absolute(config_json["data"]["dir"].get<std::string>()).lexically_normal().string();
  const train::TrainConfig config = train::parse_train_config(config_json, source);
  const fs::path data_dir = config.data.dir;
  if (interop::has_vocabulary(data_dir) &&
      interop::load_tokenizer(data_dir).vocab().tokens() != interop::load_tokenizer(options.from).vocab().tokens())
    throw data::DataError(data_dir.string() + ": prepared with another vocabulary than " + options.from.string() +
                          "; expected `coco prepare --vocab " + (options.from / "vocab.txt").string() + "`");

  objective::CocoModel model(config.model, config.objective, config.train.seed, Device::cpu);
  interop::load_imported(model, result.tensors);
  const optim::AdamW optimizer(model.named_parameters());  // fresh state: step counts 0, zero moments
  const nlohmann::json resolved = train::train_config_to_json(config);
  nlohmann::json state;
  state["format"] = "coco-trainer-state";
  state["version"] = 1;
  state["step"] = 0;
  state["data"] = {{"cursor", 0}, {"epoch", 0}, {"sequences", 0}, {"dir", config.data.dir}};
  state["rng"] = {{"seed", config.train.seed},
                  {"generator", "philox4x32-10 keyed by (seed, step, purpose, global row); stateless"},
                  {"next_step_key", 0}};
  state["loss_scale"] = 1.0;
  state["skipped_steps"] = 0;
  state["consecutive_skips"] = 0;
  state["tokens_seen"] = 0;
  state["config_hash"] = train::config_hash(config);
  state["imported_from"] = fs::absolute(options.from).lexically_normal().string();
  // The imported model's vocabulary: resume and eval refuse data of another one (coco/vocab_identity.h).
  const text::WordPieceTokenizer imported_tokenizer = interop::load_tokenizer(options.from);
  state["vocab"] = data::vocab_identity_to_json({imported_tokenizer.vocab().hash(), imported_tokenizer.vocab().size()});
  fs::create_directories(run_dir);
  CheckpointData data{model.named_parameters(), &optimizer, state, resolved, result.tokenizer.files};
  const fs::path checkpoint = write_checkpoint(run_dir, 0, data, config.train.keep_checkpoints);
  replace_file_atomically(run_dir / "config.json", resolved.dump(2) + "\n");

  for (const auto& note : result.notes) std::printf("%s\n", note.c_str());
  std::printf("imported %s into %s (%zu tensors imported, %zu parameters in all)\n", options.from.c_str(),
              checkpoint.c_str(), result.tensors.size(), model.parameter_count());
  std::printf("continue with: coco train --config %s --out %s --resume\n", (run_dir / "config.json").c_str(),
              run_dir.c_str());
  return 0;
}

}  // namespace coco::tools
