#include "coco/interop/hf_export.h"

#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "coco/checkpoint_manifest.h"
#include "coco/interop/python_sources.h"
#include "coco/interop/tokenizer_files.h"
#include "engine/io/checked_read.h"
#include "engine/io/safetensors.h"

namespace coco::interop {

namespace fs = std::filesystem;

namespace {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

nlohmann::json read_json(const fs::path& path) { return io::read_json_checked(path); }

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) throw std::runtime_error(path.string() + ": write failed");
}

std::span<const uint8_t> as_bytes(const std::vector<float>& values) {
  return {reinterpret_cast<const uint8_t*>(values.data()), values.size() * sizeof(float)};
}

// The f32 registry tensor `name` of the checkpoint, checked against the shape the config implies.
std::span<const uint8_t> checkpoint_tensor(const safetensors::Reader& reader, const std::string& name,
                                           const std::vector<int64_t>& shape) {
  const safetensors::TensorInfo* info = reader.find(name);
  if (!info)
    throw InteropError(reader.label() + ": missing tensor '" + name + "' (expected by the checkpoint's config.json)");
  if (info->dtype != DType::f32 || info->shape != shape)
    throw InteropError(reader.label() + ": tensor '" + name + "' is " + dtype_name(info->dtype) + " " +
                       shape_text(info->shape) + ", the checkpoint's config.json implies F32 " + shape_text(shape));
  return reader.data(*info);
}

size_t vocab_lines(const std::string& vocab_txt) {
  size_t lines = 0;
  for (char c : vocab_txt) lines += c == '\n';
  if (!vocab_txt.empty() && vocab_txt.back() != '\n') ++lines;
  return lines;
}

// `out` may be replaced only when it is absent, empty, or an earlier export (config.json plus
// model.safetensors and nothing that is not a file).
void check_replaceable(const fs::path& out) {
  if (!fs::exists(out)) return;
  if (!fs::is_directory(out)) throw InteropError(out.string() + ": exists and is not a directory");
  if (fs::is_empty(out)) return;
  if (fs::exists(out / "config.json") && fs::exists(out / "model.safetensors")) {
    for (const auto& entry : fs::directory_iterator(out))
      if (!entry.is_regular_file())
        throw InteropError(out.string() + ": holds " + entry.path().filename().string() +
                           ", which no export writes; refusing to replace the folder");
    return;
  }
  throw InteropError(out.string() +
                     ": exists and is not an earlier export (no config.json + model.safetensors); expected a new or "
                     "empty folder");
}

}  // namespace

CheckpointModel read_checkpoint_model(const fs::path& checkpoint) {
  const fs::path path = checkpoint / "config.json";
  const nlohmann::json root = read_json(path);
  if (!root.is_object() || !root.contains("model") || !root.contains("objective"))
    throw InteropError(path.string() + ": expected a coco run configuration with \"model\" and \"objective\"");
  CheckpointModel out;
  ConfigObject model_reader(root.at("model"), path.string(), "model");
  out.model = model::parse_model_config(model_reader);
  ConfigObject objective_reader(root.at("objective"), path.string(), "objective");
  out.objective = objective::parse_objective_config(objective_reader);
  model::validate_model_config(out.model, path.string());
  return out;
}

ExportReport export_hugging_face(const ExportOptions& options) {
  const fs::path& checkpoint = options.checkpoint;
  if (!fs::exists(checkpoint / "model.safetensors"))
    throw InteropError(checkpoint.string() + ": not a checkpoint directory (no model.safetensors)");
  // The checksums resume verifies too: a damaged checkpoint is never exported (CheckpointError, exit 2).
  checkpoint::verify_checkpoint(checkpoint);
  const CheckpointModel cm = read_checkpoint_model(checkpoint);
  ExportReport report;

  HfFormat format = HfFormat::electra;
  if (options.format) {
    format = *options.format;
  } else {
    const std::string why = format_incompatibility(cm.model, cm.objective, options.part, HfFormat::electra);
    if (!why.empty()) {
      format = HfFormat::cocolm;
      report.notes.push_back("format cocolm (COCO-LM architecture, trust_remote_code=True): not ELECTRA because " +
                             why);
    } else {
      report.notes.push_back("format electra: the architecture is one transformers has");
    }
  }
  report.layout = hf_layout(cm.model, cm.objective, options.part, format);
  const HfLayout& layout = report.layout;
  for (const auto& line : layout.not_exported) report.notes.push_back("not exported: " + line);

  // Tokenizer files: the checkpoint's own, never the data folder's unless asked for.
  TokenizerFiles tokenizer;
  if (has_vocabulary(checkpoint)) {
    tokenizer = read_tokenizer_files(checkpoint);
  } else if (options.tokenizer_dir) {
    tokenizer = read_tokenizer_files(*options.tokenizer_dir);
    report.notes.push_back("tokenizer files from " + options.tokenizer_dir->string() +
                           " (the checkpoint carries none)");
  } else {
    throw InteropError(checkpoint.string() +
                       ": the checkpoint carries no tokenizer files (vocab.txt, tokenizer.json; checkpoints written "
                       "before they did); pass --tokenizer DIR with the prepared data folder it was trained on");
  }
  const size_t vocab_size = vocab_lines(*tokenizer.find("vocab.txt"));
  if (vocab_size != static_cast<size_t>(cm.model.vocab_size))
    throw InteropError("the vocabulary has " + std::to_string(vocab_size) + " tokens but model.vocab_size is " +
                       std::to_string(cm.model.vocab_size) +
                       " (expected the tokenizer files the model was trained with)");
  set_model_max_length(tokenizer, cm.model.max_positions);

  // Tensors: views into the checkpoint (q/k/v splits are row ranges, contiguous in row-major order) plus the
  // ELECTRA-only tensors built here.
  const auto reader = safetensors::Reader::open((checkpoint / "model.safetensors").string());
  std::vector<safetensors::TensorData> tensors;
  std::vector<std::vector<float>> built;  // storage of constructed tensors (reserved: spans must stay valid)
  built.reserve(8);
  for (const auto& t : layout.tensors) {
    const std::span<const uint8_t> bytes = checkpoint_tensor(reader, t.coco, t.shape);
    if (!t.split_qkv()) {
      tensors.push_back({t.hf[0], DType::f32, t.shape, bytes});
      continue;
    }
    std::vector<int64_t> part_shape = t.shape;
    part_shape[0] /= 3;
    const size_t part_bytes = bytes.size() / 3;
    for (size_t i = 0; i < 3; ++i)
      tensors.push_back({t.hf[i], DType::f32, part_shape, bytes.subspan(i * part_bytes, part_bytes)});
  }
  const model::EncoderConfig& e = part_encoder(cm.model, options.part);
  if (layout.token_type_table) {
    built.emplace_back(static_cast<size_t>(2 * e.embed_dim), 0.0f);
    tensors.push_back({layout.prefix + "embeddings.token_type_embeddings.weight",
                       DType::f32,
                       {2, e.embed_dim},
                       as_bytes(built.back())});
    report.notes.push_back("token_type_embeddings: zeros (COCO-LM has no segment embedding)");
  }
  if (!layout.binary_head.empty()) {
    const int64_t d = e.dim;
    std::vector<float> w(static_cast<size_t>(d)), b(1);
    std::memcpy(w.data(), checkpoint_tensor(reader, layout.binary_head + ".weight", {1, d}).data(), d * sizeof(float));
    std::memcpy(b.data(), checkpoint_tensor(reader, layout.binary_head + ".bias", {1}).data(), sizeof(float));
    const float s = layout.binary_head_is_original ? -1.0f : 1.0f;  // ELECTRA's logit means "replaced"
    std::vector<float> dense(static_cast<size_t>(d * d), 0.0f);
    for (int64_t k = 0; k < d; ++k) {
      dense[k] = s * w[k];
      dense[d + k] = -s * w[k];
    }
    std::vector<float> prediction(static_cast<size_t>(d), 0.0f);
    prediction[0] = 1.0f;
    prediction[1] = -1.0f;
    built.push_back(std::move(dense));
    tensors.push_back({"discriminator_predictions.dense.weight", DType::f32, {d, d}, as_bytes(built.back())});
    built.emplace_back(static_cast<size_t>(d), 0.0f);
    tensors.push_back({"discriminator_predictions.dense.bias", DType::f32, {d}, as_bytes(built.back())});
    built.push_back(std::move(prediction));
    tensors.push_back(
        {"discriminator_predictions.dense_prediction.weight", DType::f32, {1, d}, as_bytes(built.back())});
    built.push_back({s * b[0]});
    tensors.push_back({"discriminator_predictions.dense_prediction.bias", DType::f32, {1}, as_bytes(built.back())});
    report.notes.push_back("discriminator_predictions: built from " + layout.binary_head +
                           " so that its logits equal coco's replaced-token logits exactly (GELU(z) - GELU(-z) = z)");
  }
  report.tensors = tensors.size();

  // Write beside the target, then swap it in.
  check_replaceable(options.out);
  const fs::path out = fs::absolute(options.out).lexically_normal();
  fs::create_directories(out.parent_path());
  const fs::path staging = out.parent_path() / (".tmp-" + out.filename().string() + "-" + std::to_string(::getpid()));
  fs::remove_all(staging);
  fs::create_directories(staging);
  try {
    safetensors::write_file((staging / "model.safetensors").string(), tensors, {{"format", "pt"}});
    write_text(staging / "config.json", hf_config(layout, cm.model, cm.objective).dump(2) + "\n");
    tokenizer.write(staging);
    if (format == HfFormat::cocolm)
      for (const EmbeddedFile& file : cocolm_python_files())
        write_text(staging / std::string(file.name), std::string(file.contents));
    fs::remove_all(out);
    fs::rename(staging, out);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(staging, ignored);
    throw;
  }
  return report;
}

}  // namespace coco::interop
