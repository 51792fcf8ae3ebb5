#include "tools/lib/commands.h"

#include <chrono>
#include <cstdio>
#include <stdexcept>

#include "coco/data_loader.h"
#include "coco/exit_code.h"
#include "coco/prepare.h"
#include "coco/shards.h"
#include "coco/utf8.h"
#include "coco/wordpiece.h"
#include "engine/config.h"
#include "engine/io/safetensors.h"
#include "engine/tensor.h"
#include "tools/lib/args.h"
#include "tools/lib/plot.h"
#include "tools/lib/progress.h"
#include "tools/lib/trainer.h"

namespace coco::tools {

namespace {

const char* kTopHelp =
    "usage: coco <command> [options]\n"
    "\n"
    "COCO-LM pretraining from raw text to checkpoints.\n"
    "\n"
    "commands:\n"
    "  prepare   tokenize UTF-8 text into WordPiece token shards (+ meta.json) for training\n"
    "  train     pretrain a COCO-LM model from a JSON config; checkpoints, metrics.jsonl, exact resume\n"
    "  eval      report a checkpoint's held-out losses and accuracies (the metric names of docs/metrics.md)\n"
    "  plot      draw a run's metrics.jsonl (losses, accuracies, learning rate, throughput) into a PNG\n"
    "  export    write a checkpoint as a Hugging Face transformers folder (model + tokenizer files)\n"
    "  import    start pretraining from a Hugging Face BERT / ELECTRA / COCO-LM folder\n"
    "  encode    turn text lines into vectors with a checkpoint (JSONL: CLS or mean pooling, token states)\n"
    "\n"
    "`coco <command> --help` documents each command's options.\n"
    "exit codes: 0 success, 2 bad usage, configuration or data, 1 runtime failure.\n";

}  // namespace

int command_prepare(const std::vector<std::string>& args) {
  ArgParser p("coco prepare",
              "Tokenizes UTF-8 text files (or directories, searched recursively) into WordPiece token shards and\n"
              "meta.json in --out. A document is a run of non-blank lines (--doc-boundary blank) or a single line\n"
              "(--doc-boundary line). The vocabulary is --vocab (vocab.txt or tokenizer.json) or trained on the\n"
              "train split with --vocab-size tokens; the Hugging Face tokenizer files (vocab.txt, tokenizer.json,\n"
              "tokenizer_config.json, special_tokens_map.json) are written beside it. Re-running with the same\n"
              "inputs and options does nothing.");
  p.option("--out", "DIR", "output directory", true);
  p.option("--vocab", "FILE", "existing vocabulary: vocab.txt or tokenizer.json (excludes --vocab-size)");
  p.option("--vocab-size", "N", "train a WordPiece vocabulary of exactly N tokens (excludes --vocab)");
  p.option("--valid-fraction", "F", "fraction of documents held out as the valid split, in [0, 1)", false, false, "0");
  p.option("--seed", "N", "seed of the train/valid split", false, false, "0");
  p.option("--doc-boundary", "B",
           "what ends a document: blank (a blank line; paragraphs, articles) or line (every line is a document: "
           "one verse, sentence or record per line)",
           false, false, "blank");
  p.option("--special-layout", "L",
           "special-token ids of a trained vocabulary: first ([PAD] [UNK] [CLS] [SEP] "
           "[MASK] = 0..4) or bert (0, 100..103)",
           false, false, "first");
  p.option("--case", "C",
           "normalization: uncased (lowercase + strip accents) or cased; a tokenizer.json decides "
           "itself",
           false, false, "uncased");
  p.option("--shard-tokens", "N", "tokens per shard file", false, false, std::to_string(uint64_t{1} << 26));
  p.option("--threads", "N", "tokenizer threads (0: all cores); never changes the output", false, false, "0");
  p.flag("--force", "rebuild even when meta.json says the output is up to date");
  p.positionals("INPUT", "text files or directories", 1);
  if (!p.parse(args)) return 0;

  text::PrepareOptions options;
  for (const auto& input : p.positional()) options.inputs.emplace_back(input);
  options.output_dir = p.get("--out");
  if (p.has("--vocab") == p.has("--vocab-size"))
    throw UsageError("coco prepare: give exactly one of --vocab FILE or --vocab-size N");
  if (p.has("--vocab"))
    options.vocab_file = std::filesystem::path(p.get("--vocab"));
  else
    options.vocab_size = static_cast<size_t>(p.get_int("--vocab-size", 6, 1 << 24));
  options.valid_fraction = p.get_double("--valid-fraction", 0.0, 0.999999);
  options.seed = static_cast<uint64_t>(p.get_int("--seed", 0, INT64_MAX));
  const std::string boundary = p.get("--doc-boundary");
  if (boundary != "blank" && boundary != "line")
    throw UsageError("coco prepare: option --doc-boundary expects 'blank' or 'line', got '" + boundary + "'");
  options.document_boundary = boundary == "line" ? text::DocumentBoundary::line : text::DocumentBoundary::blank_line;
  const std::string layout = p.get("--special-layout");
  if (layout != "first" && layout != "bert")
    throw UsageError("coco prepare: option --special-layout expects 'first' or 'bert', got '" + layout + "'");
  options.special_layout = layout == "bert" ? text::SpecialLayout::bert : text::SpecialLayout::first;
  const std::string casing = p.get("--case");
  if (casing != "uncased" && casing != "cased")
    throw UsageError("coco prepare: option --case expects 'uncased' or 'cased', got '" + casing + "'");
  if (p.has("--case")) options.lowercase = casing == "uncased";
  options.shard_tokens = static_cast<uint64_t>(p.get_int("--shard-tokens", 1, INT64_MAX));
  options.threads = static_cast<size_t>(p.get_int("--threads", 0, 1024));
  options.force = p.has("--force");

  ProgressLine progress(stdout);
  std::string last_phase, last_text;
  bool last_text_shown = true;
  auto last_plain = std::chrono::steady_clock::now();
  // Plain output (a log file): a line per phase start, at most one every 5 seconds, and the final state of every
  // phase, so that the last progress line agrees with the summary.
  auto show_pending = [&] {
    if (!last_text_shown && !progress.live()) progress.line(last_text);
    last_text_shown = true;
  };
  options.progress = [&](const text::PrepareProgress& s) {
    const double fraction =
        s.bytes_total ? static_cast<double>(s.bytes_done) / static_cast<double>(s.bytes_total) : 1.0;
    const std::string text =
        format("%-15s %5.1f%% %s %.1f/%.1f MB, %llu documents, %llu tokens", s.phase, 100.0 * fraction,
               progress_bar(static_cast<double>(s.bytes_done), static_cast<double>(s.bytes_total)).c_str(),
               static_cast<double>(s.bytes_done) / 1e6, static_cast<double>(s.bytes_total) / 1e6,
               static_cast<unsigned long long>(s.documents), static_cast<unsigned long long>(s.tokens));
    const bool new_phase = last_phase != s.phase;
    if (progress.live()) {
      progress.status(text, new_phase);
    } else {
      const auto now = std::chrono::steady_clock::now();
      if (new_phase) show_pending();
      if (new_phase || now - last_plain >= std::chrono::seconds(5)) {
        progress.line(text);
        last_plain = now;
        last_text_shown = true;
      } else {
        last_text_shown = false;
      }
    }
    last_phase = s.phase;
    last_text = text;
  };
  const text::PrepareResult result = text::prepare(options);
  show_pending();
  progress.finish();
  std::printf("%s\n", result.message.c_str());
  std::printf(
      "vocabulary %s (%zu tokens); train: %llu documents, %llu tokens, %zu shards; valid: %llu documents, "
      "%llu tokens, %zu shards\n",
      result.vocab_path.c_str(), result.vocab_size, static_cast<unsigned long long>(result.train.documents),
      static_cast<unsigned long long>(result.train.tokens), result.train.shards.size(),
      static_cast<unsigned long long>(result.valid.documents), static_cast<unsigned long long>(result.valid.tokens),
      result.valid.shards.size());
  std::printf("special ids: pad %u unk %u cls %u sep %u mask %u\n", result.special_ids.pad, result.special_ids.unk,
              result.special_ids.cls, result.special_ids.sep, result.special_ids.mask);
  return 0;
}

int command_train(const std::vector<std::string>& args) {
  ArgParser p("coco train",
              "Pretrains a COCO-LM model. DIR receives config.json (the resolved configuration), metrics.jsonl and\n"
              "checkpoints/step-NNNNNNNN/ (model.safetensors, optimizer.safetensors, trainer_state.json). An\n"
              "existing DIR/checkpoints/latest is resumed (bit-identical losses on the same backend); a config\n"
              "that changes the model's shape is refused. SIGINT/SIGTERM finish the step, write a checkpoint and\n"
              "exit 0. Config sections: model, objective, data, optim, train, precision, runtime (see configs/).");
  p.option("--config", "FILE", "JSON configuration (configs/demo.json shows every section)", true);
  p.option("--out", "DIR", "run directory", true);
  p.option("--set", "KEY=VALUE",
           "override a config key by its dotted path, e.g. train.steps=200 or runtime.device=cpu "
           "(JSON values: numbers, true/false, [lists], \"strings\"; other text is a string)",
           false, true);
  p.flag("--resume",
         "continue from DIR/checkpoints/latest (also done without this flag when it exists; with the "
         "flag and no checkpoint, training starts from step 0)");
  if (!p.parse(args)) return 0;
  TrainOptions options;
  options.config_path = p.get("--config");
  options.out_dir = p.get("--out");
  options.overrides = p.all("--set");
  options.resume = p.has("--resume");
  return run_train(options);
}

int command_eval(const std::vector<std::string>& args) {
  ArgParser p("coco eval",
              "Evaluates a checkpoint on held-out data: every loss and accuracy of the objective (mlm_loss, mlm_acc,\n"
              "rtd_loss, rtd_acc, clm_loss, clm_acc, cl_loss, cl_acc: the names of metrics.jsonl, explained in\n"
              "docs/metrics.md), printed as a table followed by one JSON line. The data must use the checkpoint's\n"
              "vocabulary.");
  p.option("--checkpoint", "DIR", "a checkpoint directory (checkpoints/step-NNNNNNNN) or a run directory (its latest)",
           true);
  p.option("--data", "DIR", "prepared data directory (default: the run's data.dir)");
  p.option("--split", "NAME", "valid or train", false, false, "valid");
  p.option("--batches", "N", "micro-batches to evaluate, 0 = the whole split (default: the run's train.eval_batches)");
  p.option("--micro-batch", "N", "sequences per batch (default: the run's train.micro_batch)");
  p.option("--device", "D", "cpu, cuda or auto (default: the run's runtime.device)");
  p.option("--json", "FILE", "also write the JSON report to FILE");
  p.option("--set", "KEY=VALUE",
           "override a key of the checkpoint's config.json by its dotted path, e.g. data.seq_len=64 or "
           "objective.mask_prob=0.2 (keys that change the model's shape are refused)",
           false, true);
  if (!p.parse(args)) return 0;
  EvalOptions options;
  options.overrides = p.all("--set");
  options.checkpoint = p.get("--checkpoint");
  options.data_dir = p.get("--data");
  options.split = p.get("--split");
  if (options.split != "valid" && options.split != "train")
    throw UsageError("coco eval: option --split expects 'valid' or 'train', got '" + options.split + "'");
  if (p.has("--batches")) options.batches = p.get_int("--batches", 0, INT64_MAX / 4);
  if (p.has("--micro-batch")) options.micro_batch = p.get_int("--micro-batch", 1, 1 << 20);
  options.device = p.get("--device");
  if (!options.device.empty() && options.device != "cpu" && options.device != "cuda" && options.device != "auto")
    throw UsageError("coco eval: option --device expects cpu, cuda or auto, got '" + options.device + "'");
  options.json_path = p.get("--json");
  return run_eval(options);
}

int command_plot(const std::vector<std::string>& args) {
  ArgParser p("coco plot",
              "Draws a run's metrics.jsonl into a PNG against the step: the weighted total loss, the loss components\n"
              "(mlm_loss, rtd_loss, clm_loss, cl_loss) and accuracies for training and held-out records, the\n"
              "learning rate, the throughput (tokens_per_s) and the gradient norm. Needs python3 with matplotlib\n"
              "(scripts/setup.sh installs it); runs scripts/plot_metrics.py.");
  p.option("--out", "FILE.png", "the PNG to write (default: RUN/metrics.png)");
  p.positionals("RUN", "a run directory written by coco train (or its metrics.jsonl)", 1);
  if (!p.parse(args)) return 0;
  if (p.positional().size() != 1)
    throw UsageError("coco plot: expected one RUN directory, got " + std::to_string(p.positional().size()));
  std::vector<std::string> script_args = {p.positional().front()};
  if (p.has("--out")) script_args.insert(script_args.end(), {"--out", p.get("--out")});
  return run_plot_script(script_args);
}

int run_cli(const std::vector<std::string>& args) {
  try {
    if (args.empty()) {
      std::fputs(kTopHelp, stderr);
      return 2;
    }
    const std::string& command = args.front();
    const std::vector<std::string> rest(args.begin() + 1, args.end());
    if (command == "--help" || command == "-h" || command == "help") {
      std::fputs(kTopHelp, stdout);
      return 0;
    }
    if (command == "prepare") return command_prepare(rest);
    if (command == "train") return command_train(rest);
    if (command == "eval") return command_eval(rest);
    if (command == "plot") return command_plot(rest);
    if (command == "export") return command_export(rest);
    if (command == "import") return command_import(rest);
    if (command == "encode") return command_encode(rest);
    throw UsageError("coco: unknown command '" + command +
                     "' (expected prepare, train, eval, plot, export, import or encode; see coco --help)");
  } catch (const std::exception& error) {
    std::fflush(stdout);
    std::fprintf(stderr, "error: %s\n", error.what());
    return exit_code_for(error);
  }
}

}  // namespace coco::tools
