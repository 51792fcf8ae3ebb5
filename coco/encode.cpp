#include "coco/encode.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <mutex>
#include <numeric>
#include <optional>

#include <nlohmann/json.hpp>

#include "coco/checkpoint.h"
#include "coco/checkpoint_manifest.h"
#include "coco/interop/hf_export.h"
#include "coco/interop/tokenizer_files.h"
#include "coco/objective.h"
#include "coco/train_config.h"
#include "coco/vocab_identity.h"
#include "coco/wordpiece.h"
#include "engine/io/safetensors.h"
#include "engine/tape.h"
#include "engine/tensor.h"

namespace coco {

namespace fs = std::filesystem;

Pooling parse_pooling(const std::string& text, const std::string& what) {
  if (text == "cls") return Pooling::cls;
  if (text == "mean") return Pooling::mean;
  throw EncodeError(what + " expects 'cls' or 'mean', got '" + text + "'");
}

const char* pooling_name(Pooling pooling) { return pooling == Pooling::cls ? "cls" : "mean"; }

std::span<const float> Encoding::token_state(size_t i) const {
  if (hidden.empty())
    throw EncodeError("Encoding::token_state: hidden states were not requested (hidden_states=false)");
  if (i >= ids.size())
    throw EncodeError("Encoding::token_state: position " + std::to_string(i) + " is outside the text's " +
                      std::to_string(ids.size()) + " positions");
  return std::span<const float>(hidden).subspan(i * static_cast<size_t>(dim), static_cast<size_t>(dim));
}

double cosine_similarity(std::span<const float> a, std::span<const float> b) {
  if (a.size() != b.size())
    throw EncodeError("cosine_similarity: vectors of " + std::to_string(a.size()) + " and " + std::to_string(b.size()) +
                      " elements; expected equal lengths");
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    dot += static_cast<double>(a[i]) * b[i];
    na += static_cast<double>(a[i]) * a[i];
    nb += static_cast<double>(b[i]) * b[i];
  }
  return na > 0 && nb > 0 ? dot / std::sqrt(na * nb) : 0.0;
}

namespace {

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw EncodeError(path.string() + ": cannot read (expected a checkpoint's JSON file)");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw EncodeError(path.string() + ": not valid JSON: " + e.what());
  }
}

// A checkpoint directory (model.safetensors + config.json), or a run directory: its checkpoints/latest, else its
// newest valid checkpoint (coco/checkpoint.h). Files are checked against the checkpoint's manifest. Nothing is
// printed: `coco encode` writes its vectors to stdout.
fs::path checkpoint_directory(const fs::path& path) {
  std::error_code error;
  if (!fs::is_directory(path, error))
    throw EncodeError("checkpoint " + path.string() + ": no such directory (expected a checkpoint or run directory)");
  try {
    fs::path dir = path;
    if (!fs::exists(path / "model.safetensors", error) || !fs::exists(path / "config.json", error)) {
      const checkpoint::ResumePoint point = checkpoint::find_resume_checkpoint(path);
      if (!point.dir)
        throw EncodeError("checkpoint " + path.string() +
                          ": not a checkpoint directory (no model.safetensors + config.json) nor a run directory with "
                          "checkpoints");
      dir = *point.dir;
    }
    checkpoint::verify_checkpoint(dir);  // a damaged file is an error naming it; older checkpoints have no manifest
    return dir;
  } catch (const EncodeError&) {
    throw;
  } catch (const std::invalid_argument& e) {
    throw EncodeError(e.what());
  }
}

// Copies the f32 tensors of model.safetensors into the model's parameters; every parameter must be there with
// its shape.
void load_parameters(const fs::path& file, const std::vector<NamedParameter>& parameters) {
  const auto reader = safetensors::Reader::open(file.string());
  for (const auto& p : parameters) {
    const safetensors::TensorInfo* info = reader.find(p.name);
    if (!info)
      throw EncodeError(file.string() + ": missing tensor '" + p.name + "' (expected by the checkpoint's config.json)");
    const std::vector<int64_t> want = p.tensor.shape().vec();
    if (info->dtype != DType::f32 || info->shape != want)
      throw EncodeError(file.string() + ": tensor '" + p.name + "' is " + dtype_name(info->dtype) + " " +
                        Shape(std::span<const int64_t>(info->shape)).str() + ", the model expects f32 " +
                        p.tensor.shape().str());
    const auto bytes = reader.data(*info);
    const Tensor host = Tensor::from_host(bytes.data(), p.tensor.shape(), DType::f32, Device::cpu);
    Tensor destination = p.tensor.detach();
    destination.copy_from(p.tensor.dtype() == DType::f32 ? host : host.to(p.tensor.dtype()));
  }
}

}  // namespace

struct TextEncoder::Impl {
  fs::path checkpoint;
  text::WordPieceTokenizer tokenizer;
  std::unique_ptr<objective::CocoModel> model;
  int64_t vocab_size = 0, dim = 0, max_length = 0, batch_size = 0;
  int32_t pad_id = 0, cls_id = 0, sep_id = -1;
  Device device = Device::cpu;
  // The cuda device runs one batch at a time (one stream, one cuBLASLt workspace).
  mutable std::mutex device_mutex;

  Impl(fs::path dir, text::WordPieceTokenizer tok) : checkpoint(std::move(dir)), tokenizer(std::move(tok)) {}

  std::vector<uint32_t> frame(std::string_view text, bool* truncated) const {
    std::vector<uint32_t> ids{static_cast<uint32_t>(cls_id)};
    tokenizer.encode(text, ids);
    return close(std::move(ids), truncated);
  }
  // [CLS] + ids (already in `ids`) + [SEP], cut to max_length.
  std::vector<uint32_t> close(std::vector<uint32_t> ids, bool* truncated) const {
    const size_t room = static_cast<size_t>(max_length) - (sep_id >= 0 ? 1 : 0);
    const bool cut = ids.size() > room;
    if (cut) ids.resize(room);
    if (sep_id >= 0) ids.push_back(static_cast<uint32_t>(sep_id));
    if (truncated) *truncated = cut;
    return ids;
  }

  std::vector<Encoding> run(std::vector<Encoding> items, bool hidden_states) const;
};

TextEncoder::TextEncoder() = default;

const TextEncoder::Impl& TextEncoder::impl(const char* call) const {
  if (!impl_)
    throw std::logic_error(std::string("TextEncoder::") + call +
                           ": the encoder holds no checkpoint (create it with TextEncoder::load(DIR))");
  return *impl_;
}

TextEncoder TextEncoder::load(const fs::path& path, const EncoderOptions& options) {
  if (options.batch_size < 1)
    throw EncodeError("EncoderOptions::batch_size must be at least 1, got " + std::to_string(options.batch_size));
  if (options.max_length < 0)
    throw EncodeError("EncoderOptions::max_length must be 0 (the model's) or positive, got " +
                      std::to_string(options.max_length));
  if (options.device != "cpu" && options.device != "cuda" && options.device != "auto")
    throw EncodeError("EncoderOptions::device expects cpu, cuda or auto, got '" + options.device + "'");
  const fs::path dir = checkpoint_directory(path);
  interop::CheckpointModel config;
  try {
    config = interop::read_checkpoint_model(dir);
  } catch (const std::exception& e) {
    throw EncodeError(e.what());
  }

  // The vocabulary: the checkpoint's own files, or the caller's directory when it holds the same vocabulary.
  const fs::path tokenizer_dir = options.tokenizer_dir.empty() ? dir : options.tokenizer_dir;
  if (!interop::has_vocabulary(tokenizer_dir))
    throw EncodeError(tokenizer_dir.string() +
                      (options.tokenizer_dir.empty()
                           ? ": the checkpoint carries no vocabulary (vocab.txt or tokenizer.json; checkpoints written "
                             "before they did); pass EncoderOptions::tokenizer_dir (coco encode --tokenizer DIR) with "
                             "the prepared data folder it was trained on"
                           : ": holds no vocabulary (expected vocab.txt or tokenizer.json)"));
  text::WordPieceTokenizer tokenizer = interop::load_tokenizer(tokenizer_dir);
  const int64_t vocab_size = static_cast<int64_t>(tokenizer.vocab().size());
  if (vocab_size != config.model.vocab_size)
    throw EncodeError(tokenizer_dir.string() + ": the vocabulary has " + std::to_string(vocab_size) +
                      " tokens, the checkpoint's model.vocab_size is " + std::to_string(config.model.vocab_size) +
                      " (expected the vocabulary the checkpoint was trained with)");
  const fs::path state_path = dir / "trainer_state.json";
  std::error_code error;
  if (fs::exists(state_path, error)) {
    const nlohmann::json state = read_json(state_path);
    std::optional<data::CheckpointVocabulary> recorded;
    try {
      recorded = data::checkpoint_vocabulary(dir, state);
    } catch (const std::exception& e) {
      throw EncodeError(e.what());
    }
    if (recorded && recorded->identity.hash != tokenizer.vocab().hash())
      throw EncodeError(tokenizer_dir.string() + ": vocabulary " + data::format_vocab_hash(tokenizer.vocab().hash()) +
                        " is not the one the checkpoint was trained with (" +
                        data::format_vocab_hash(recorded->identity.hash) + ", " + recorded->source +
                        "); expected the checkpoint's own tokenizer files");
  }
  const text::SpecialTokenIds special = tokenizer.special_ids();
  const objective::ObjectiveConfig& objective = config.objective;
  auto check_special = [&](const char* key, int32_t configured, uint32_t actual) {
    if (configured >= 0 && static_cast<uint32_t>(configured) != actual)
      throw EncodeError(tokenizer_dir.string() + ": the vocabulary's " + key + " token has id " +
                        std::to_string(actual) + ", the checkpoint's objective." + key + "_id is " +
                        std::to_string(configured) + " (expected the vocabulary the checkpoint was trained with)");
  };
  check_special("cls", objective.cls_id, special.cls);
  check_special("sep", objective.sep_id, special.sep);
  check_special("pad", objective.pad_id, special.pad);
  if (objective.cls_id < 0 || objective.pad_id < 0)
    throw EncodeError((dir / "config.json").string() + ": objective.cls_id and objective.pad_id must be set to encode");

  const int64_t max_positions = config.model.max_positions;
  const int64_t min_length = objective.sep_id >= 0 ? 2 : 1;
  if (options.max_length != 0 && (options.max_length < min_length || options.max_length > max_positions))
    throw EncodeError("EncoderOptions::max_length must be in [" + std::to_string(min_length) + ", " +
                      std::to_string(max_positions) + "] (model.max_positions of " + dir.string() + "), got " +
                      std::to_string(options.max_length));

  auto impl = std::make_shared<Impl>(dir, std::move(tokenizer));
  impl->device = train::resolve_device(options.device);
  impl->model = std::make_unique<objective::CocoModel>(config.model, objective, /*seed=*/0, impl->device);
  load_parameters(dir / "model.safetensors", impl->model->named_parameters());
  impl->vocab_size = vocab_size;
  impl->dim = config.model.discriminator.dim;
  impl->max_length = options.max_length ? options.max_length : max_positions;
  impl->batch_size = options.batch_size;
  impl->pad_id = objective.pad_id;
  impl->cls_id = objective.cls_id;
  impl->sep_id = objective.sep_id;
  TextEncoder encoder;
  encoder.impl_ = std::move(impl);
  return encoder;
}

std::vector<uint32_t> TextEncoder::tokenize(std::string_view text) const {
  return impl("tokenize").frame(text, nullptr);
}

std::vector<Encoding> TextEncoder::encode(const std::vector<std::string>& texts, bool hidden_states) const {
  const Impl& self = impl("encode");
  std::vector<Encoding> items(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) items[i].ids = self.frame(texts[i], &items[i].truncated);
  return self.run(std::move(items), hidden_states);
}

Encoding TextEncoder::encode(std::string_view text, bool hidden_states) const {
  return encode(std::vector<std::string>{std::string(text)}, hidden_states).front();
}

std::vector<Encoding> TextEncoder::encode_ids(const std::vector<std::vector<uint32_t>>& sequences,
                                              bool hidden_states) const {
  const Impl& self = impl("encode_ids");
  std::vector<Encoding> items(sequences.size());
  for (size_t i = 0; i < sequences.size(); ++i) {
    for (size_t t = 0; t < sequences[i].size(); ++t)
      if (sequences[i][t] >= static_cast<uint64_t>(self.vocab_size))
        throw EncodeError("TextEncoder::encode_ids: sequence " + std::to_string(i) + ", position " + std::to_string(t) +
                          ": id " + std::to_string(sequences[i][t]) + " is outside the vocabulary [0, " +
                          std::to_string(self.vocab_size) + ")");
    if (static_cast<int64_t>(sequences[i].size()) > self.max_length)
      throw EncodeError("TextEncoder::encode_ids: sequence " + std::to_string(i) + " has " +
                        std::to_string(sequences[i].size()) + " ids, more than max_length " +
                        std::to_string(self.max_length));
    if (sequences[i].empty())
      throw EncodeError("TextEncoder::encode_ids: sequence " + std::to_string(i) +
                        " is empty (expected at least one id)");
    items[i].ids = sequences[i];
  }
  return self.run(std::move(items), hidden_states);
}

std::vector<Encoding> TextEncoder::Impl::run(std::vector<Encoding> items, bool hidden_states) const {
  // Batches of similar lengths waste less on padding: texts go to the model in order of length (stable), the
  // results come back in the caller's order.
  std::vector<size_t> order(items.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return items[a].ids.size() < items[b].ids.size(); });
  const size_t d = static_cast<size_t>(dim);
  for (size_t start = 0; start < order.size(); start += static_cast<size_t>(batch_size)) {
    const size_t rows = std::min(order.size() - start, static_cast<size_t>(batch_size));
    size_t width = 0;
    for (size_t r = 0; r < rows; ++r) width = std::max(width, items[order[start + r]].ids.size());
    std::vector<int32_t> ids(rows * width, pad_id);
    std::vector<uint8_t> mask(rows * width, 0);
    for (size_t r = 0; r < rows; ++r) {
      const auto& seq = items[order[start + r]].ids;
      for (size_t t = 0; t < seq.size(); ++t) {
        ids[r * width + t] = static_cast<int32_t>(seq[t]);
        mask[r * width + t] = 1;
      }
    }
    const Shape shape{static_cast<int64_t>(rows), static_cast<int64_t>(width)};
    std::vector<float> hidden;
    {
      std::unique_lock<std::mutex> lock(device_mutex, std::defer_lock);
      if (device == Device::cuda) lock.lock();
      NoGrad no_grad;
      const Tensor tokens = Tensor::from_vector(ids, shape, device);
      const Tensor key_mask = Tensor::from_vector(mask, shape, device);
      const model::ForwardOptions forward{/*training=*/false, model->seed(), /*step=*/0, /*instance=*/0,
                                          /*first_row=*/0};
      Tensor states = model->discriminator().forward(tokens, key_mask, forward);
      if (states.dtype() != DType::f32) states = states.to(DType::f32);
      hidden = states.to(Device::cpu).to_vector<float>();
    }
    for (size_t r = 0; r < rows; ++r) {
      Encoding& e = items[order[start + r]];
      const size_t n = e.ids.size();
      const float* rows_begin = hidden.data() + r * width * d;
      e.dim = dim;
      e.cls.assign(rows_begin, rows_begin + d);
      std::vector<double> sum(d, 0.0);
      for (size_t t = 0; t < n; ++t)
        for (size_t k = 0; k < d; ++k) sum[k] += rows_begin[t * d + k];
      e.mean.resize(d);
      for (size_t k = 0; k < d; ++k) e.mean[k] = static_cast<float>(sum[k] / static_cast<double>(n));
      if (hidden_states) e.hidden.assign(rows_begin, rows_begin + n * d);
      e.tokens.reserve(n);
      for (uint32_t id : e.ids) e.tokens.push_back(tokenizer.vocab().token(id));
    }
  }
  return items;
}

int64_t TextEncoder::dim() const { return impl("dim").dim; }
int64_t TextEncoder::vocab_size() const { return impl("vocab_size").vocab_size; }
int64_t TextEncoder::max_length() const { return impl("max_length").max_length; }
std::string TextEncoder::device() const { return device_name(impl("device").device); }
fs::path TextEncoder::checkpoint() const { return impl("checkpoint").checkpoint; }
std::string TextEncoder::vocab_hash() const {
  return data::format_vocab_hash(impl("vocab_hash").tokenizer.vocab().hash());
}

}  // namespace coco
