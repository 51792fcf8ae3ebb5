// `coco encode`: text lines to JSONL vectors with coco::TextEncoder (coco/encode.h), the library's encoding API.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coco/encode.h"
#include "tools/lib/args.h"
#include "tools/lib/commands.h"

namespace coco::tools {

namespace {

// %.9g round-trips a float.
void append_vector(std::string& out, std::span<const float> values) {
  out += '[';
  char buffer[32];
  for (size_t i = 0; i < values.size(); ++i) {
    std::snprintf(buffer, sizeof buffer, "%s%.9g", i ? "," : "", static_cast<double>(values[i]));
    out += buffer;
  }
  out += ']';
}

}  // namespace

int command_encode(const std::vector<std::string>& args) {
  ArgParser p(
      "coco encode",
      "Encodes text with a checkpoint's discriminator (inference mode) and writes one JSON line per input\n"
      "line: {\"input\", \"line\", \"tokens\", \"truncated\", \"pool\", \"vector\"} (+ \"hidden\": one vector per\n"
      "token with --hidden). A line becomes [CLS] wordpieces [SEP], cut to --max-length; the vector is the\n"
      "hidden state of [CLS] (--pool cls) or the mean over the line's positions (--pool mean). The\n"
      "vocabulary is the checkpoint's own (its vocab.txt / tokenizer.json). The same code is the library's\n"
      "coco::TextEncoder (docs/library.md).");
  p.option("--checkpoint", "DIR", "a checkpoint directory (checkpoints/step-NNNNNNNN) or a run directory (its latest)",
           true);
  p.option("--pool", "P", "cls or mean", false, false, "cls");
  p.option("--device", "D", "cpu, cuda or auto", false, false, "cpu");
  p.option("--batch", "N", "lines per forward pass", false, false, "16");
  p.option("--max-length", "N", "tokens per line including [CLS]/[SEP] (0: the model's max_positions)", false, false,
           "0");
  p.option("--tokenizer", "DIR", "vocabulary for checkpoints that carry none (must be the checkpoint's vocabulary)");
  p.option("--out", "FILE", "write the JSONL there instead of stdout");
  p.flag("--hidden", "also write every token's hidden state and the tokens");
  p.positionals("INPUT", "UTF-8 text files, one text per line ('-': standard input)", 1);
  if (!p.parse(args)) return 0;

  const Pooling pooling = parse_pooling(p.get("--pool"), "coco encode: option --pool");
  EncoderOptions options;
  options.device = p.get("--device");
  if (options.device != "cpu" && options.device != "cuda" && options.device != "auto")
    throw UsageError("coco encode: option --device expects cpu, cuda or auto, got '" + options.device + "'");
  options.batch_size = p.get_int("--batch", 1, 1 << 16);
  options.max_length = p.get_int("--max-length", 0, 1 << 20);
  if (p.has("--tokenizer")) options.tokenizer_dir = p.get("--tokenizer");
  const bool hidden = p.has("--hidden");

  // Inputs are checked before the model is loaded, so that a typo fails fast.
  std::vector<std::ifstream> files;
  for (const auto& input : p.positional()) {
    if (input == "-") continue;
    files.emplace_back(input, std::ios::binary);
    if (!files.back()) throw UsageError("coco encode: cannot read input file '" + input + "'");
  }
  const TextEncoder encoder = TextEncoder::load(p.get("--checkpoint"), options);

  std::FILE* out = stdout;
  std::string out_path;
  if (p.has("--out")) {
    out_path = p.get("--out");
    out = std::fopen(out_path.c_str(), "wb");
    if (!out) throw std::runtime_error("coco encode: cannot open '" + out_path + "' for writing");
  }
  auto finish_output = [&] {
    if (out != stdout && std::fclose(out) != 0) throw std::runtime_error(out_path + ": write failed");
    out = stdout;
  };

  // Lines are encoded in chunks, so that a large input never sits in memory as vectors.
  constexpr size_t kChunkLines = 1024;
  uint64_t written = 0;
  size_t file_index = 0;
  try {
    for (const auto& input : p.positional()) {
      std::istream& in = input == "-" ? std::cin : files[file_index++];
      std::vector<std::string> lines;
      uint64_t first_line = 1;
      auto flush = [&] {
        if (lines.empty()) return;
        const std::vector<Encoding> encodings = encoder.encode(lines, hidden);
        for (size_t i = 0; i < encodings.size(); ++i) {
          const Encoding& e = encodings[i];
          std::string record =
              "{\"input\":" + nlohmann::json(input).dump() + ",\"line\":" + std::to_string(first_line + i) +
              ",\"tokens\":" + std::to_string(e.ids.size()) + ",\"truncated\":" + (e.truncated ? "true" : "false") +
              ",\"pool\":\"" + pooling_name(pooling) + "\",\"vector\":";
          append_vector(record, e.pooled(pooling));
          if (hidden) {
            record += ",\"token_strings\":" + nlohmann::json(e.tokens).dump() + ",\"hidden\":[";
            for (size_t t = 0; t < e.ids.size(); ++t) {
              if (t) record += ',';
              append_vector(record, e.token_state(t));
            }
            record += ']';
          }
          record += "}\n";
          if (std::fwrite(record.data(), 1, record.size(), out) != record.size())
            throw std::runtime_error("coco encode: write to " + (out_path.empty() ? "stdout" : out_path) + " failed");
          ++written;
        }
        first_line += lines.size();
        lines.clear();
      };
      std::string line;
      while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(std::move(line));
        if (lines.size() == kChunkLines) flush();
      }
      if (in.bad()) throw std::runtime_error("coco encode: reading '" + input + "' failed");
      flush();
    }
    std::fflush(out);
    finish_output();
  } catch (...) {
    if (out != stdout) std::fclose(out);
    throw;
  }
  std::fprintf(stderr, "coco encode: %llu lines -> %s vectors of %lld (%s pooling, %s, checkpoint %s)\n",
               static_cast<unsigned long long>(written), out_path.empty() ? "stdout" : out_path.c_str(),
               static_cast<long long>(encoder.dim()), pooling_name(pooling), encoder.device().c_str(),
               encoder.checkpoint().c_str());
  return 0;
}

}  // namespace coco::tools
